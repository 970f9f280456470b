import { existsSync, readFileSync } from 'node:fs';
import { run } from '../util/exec.js';
import { LabError } from './errors.js';
import type { LabNode } from './state.js';

/*
 * Nodes whose agent runs from the container image (--image-nodes): podman runs the image's
 * agent privileged in the node's network namespace with the host paths the DaemonSet of
 * deploy/kubernetes/twill-kube.yaml mounts, so what is tested is the image as a cluster runs it.
 * The image is built by scripts/image/build.sh; the lab never builds or pulls one.
 */

/** A lab node's container, named so that `lab down` finds it even when its podman client is gone. */
export const imageContainerName = (node: Pick<LabNode, 'netns'>) => `twill-lab-${node.netns}`;

/** The hard limit of `name` in /proc/self/limits ('unlimited' as Infinity). */
function hardLimit(name: string): number {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(name));
  const hard = line?.slice(name.length).trim().split(/\s+/)[1];
  if (!hard) throw new LabError(`/proc/self/limits has no '${name}' line`);
  return hard === 'unlimited' ? Infinity : Number(hard);
}

/**
 * The flags scripts/image/build.sh gives podman too, for the same two reasons: runc, as crun
 * refuses hosts with cgroup v1 and v2 mixed (this CI's machine); and the caller's own limits, as
 * podman's defaults are above what a host without CAP_SYS_RESOURCE can grant, and podman caps its
 * own process limit at 32768 before starting the runtime.
 */
export function podmanRunFlags(): string[] {
  const nofile = hardLimit('Max open files');
  const nproc = Math.min(hardLimit('Max processes'), 32768);
  return ['--runtime', 'runc', '--ulimit', `nofile=${nofile}:${nofile}`, '--ulimit', `nproc=${nproc}:${nproc}`];
}

/** Fails before the lab is made, naming what is missing, when podman or the image is not there. */
export async function checkImage(image: string): Promise<void> {
  const res = await run(['podman', 'image', 'exists', image], { allowFailure: true }).catch((err: Error) => {
    throw new LabError(`--image ${image}: podman cannot be run (${err.message}); scripts/setup.sh installs it`);
  });
  if (res.code !== 0)
    throw new LabError(
      `--image ${image}: not in podman's image storage${res.stderr.trim() ? ` (${res.stderr.trim()})` : ''}; build it with scripts/image/build.sh`,
    );
}

/**
 * `podman run` of the image's agent on `node`: in its network namespace, with the DaemonSet's
 * host paths (bpffs for the pins, /run/twill where the lab also keeps the subnet file, kubeconfig
 * and net-conf.json, /run/netns to find the pods, /lib/modules) at the same paths, and the env.
 */
export function imageAgentCommand(image: string, node: Pick<LabNode, 'netns'>, env: Record<string, string> = {}): string[] {
  return [
    'podman',
    'run',
    '--rm',
    '--replace',
    `--name=${imageContainerName(node)}`,
    '--privileged',
    ...podmanRunFlags(),
    `--network=ns:/run/netns/${node.netns}`,
    '--volume=/sys/fs/bpf:/sys/fs/bpf:rslave',
    '--volume=/run/twill:/run/twill',
    '--volume=/run/netns:/run/netns:ro,rslave',
    // Where the host has it: a kernel with everything built in (this CI's) has no /lib/modules.
    ...(existsSync('/lib/modules') ? ['--volume=/lib/modules:/lib/modules:ro'] : []),
    ...Object.entries(env).map(([k, v]) => `--env=${k}=${v}`),
    image,
    'agent',
  ];
}

/** Removes the node's container if it is still there (its podman client was killed, say). */
export async function removeImageContainer(node: Pick<LabNode, 'netns'>): Promise<void> {
  await run(['podman', 'rm', '--force', '--ignore', '--time=5', imageContainerName(node)], { allowFailure: true });
}
