import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../util/exec.js';
import { repoRoot } from '../util/paths.js';
import { hostIn } from './addressing.js';
import { LabError } from './errors.js';
import { networkConfigOf } from './etcd-cluster.js';
import { restartKubeProcess, startKubeControlPlane, stopProcess, type KubeControlPlaneOptions, type KubeProcess } from './kube-control-plane.js';
import { attachToUnderlay } from './namespaces.js';
import type { LabOptions } from './options.js';
import { kubectl } from './peers.js';
import { labStateDir, saveState, type LabKube, type LabNode, type LabState } from './state.js';

/*
 * The lab in Kubernetes mode (--kube): a real kube-apiserver and kube-controller-manager in their
 * own namespace on the underlay, on the lab's etcd (under /registry, beside flannel's prefix).
 * The lab registers a Node per lab node as kubelet would, the controller manager gives each a
 * podCIDR, and the node daemons run with --kube-subnet-mgr and a kubeconfig holding a
 * ServiceAccount token bound to deploy/kubernetes/twill-kube.yaml's ClusterRole, and nothing more.
 */

const APISERVER_PORT = 6443;
/** The cluster's Services: clear of the lab's pod networks and underlays. */
const SERVICE_CIDR = '10.96.0.0/16';
const SERVICE_CIDR6 = 'fd96::/108';
/** twill-kube.yaml's ServiceAccount, which the agents' token is for. */
const AGENT_ACCOUNT = { namespace: 'kube-flannel', name: 'flannel' };
const RBAC_KINDS = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'ServiceAccount']);

export const kubeManifestPath = () => path.join(repoRoot(), 'deploy/kubernetes/twill-kube.yaml');

/** The documents of the kube-mode manifest that make its RBAC: what the lab's agents are granted. */
export function rbacDocuments(manifest: string): string {
  return manifest
    .split(/^---$/m)
    .filter((doc) => RBAC_KINDS.has(/^kind:\s*(\S+)/m.exec(doc)?.[1] ?? ''))
    .join('---\n');
}

/** kubectl as the lab's admin, from the control plane's namespace. */
export function labKubectl(state: LabState, args: string[], input?: string) {
  const kube = state.kube!;
  return run([kubectl().bin, `--kubeconfig=${kube.adminKubeconfig}`, ...args], { netns: kube.netns, input });
}

/** A kubeconfig that authenticates with a bearer token, against the lab's API server. */
export function tokenKubeconfig(server: string, caCert: string, user: string, token: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '  - name: lab',
    '    cluster:',
    `      server: ${server}`,
    `      certificate-authority: ${caCert}`,
    'users:',
    `  - name: ${user}`,
    '    user:',
    `      token: ${token}`,
    'contexts:',
    '  - name: lab',
    '    context:',
    '      cluster: lab',
    `      user: ${user}`,
    'current-context: lab',
    '',
  ].join('\n');
}

/** Starts the control plane, grants the agents' ServiceAccount its RBAC, writes their kubeconfig and net-conf.json. */
export async function startLabKube(state: LabState, o: LabOptions): Promise<string> {
  if (o.ipFamily === 'ipv6') throw new LabError('--kube: an IPv6-only cluster is not supported by the lab (flanneld cannot run IPv6-only either)');
  const netns = `${o.name}-kube`;
  const address = hostIn(o.underlayCidr, 240);
  await attachToUnderlay(state, netns, 'kube', address, o.mtu);
  const dir = `${labStateDir(o.name)}/kube`;
  const dual = o.ipFamily === 'dual';
  const options: KubeControlPlaneOptions = {
    stateDir: dir,
    etcdEndpoint: state.etcd!.endpoint,
    etcdPrefix: '/registry',
    clusterCidr: o.network,
    nodeCidrMaskSize: o.subnetLen,
    ...(dual ? { clusterCidr6: o.ipv6Network, nodeCidrMaskSize6: 64, serviceCidr6: SERVICE_CIDR6 } : {}),
    serviceCidr: SERVICE_CIDR,
    listen: { address, port: APISERVER_PORT },
    netns,
  };
  const cp = await startKubeControlPlane(options);
  const netConf = `${dir}/net-conf.json`;
  writeFileSync(netConf, JSON.stringify(networkConfigOf(o), null, 2) + '\n');
  state.kube = {
    netns,
    apiserver: cp.server,
    adminKubeconfig: cp.adminKubeconfig,
    kubeconfig: `${dir}/agent.kubeconfig`,
    netConf,
    caCert: cp.caCert,
    processes: [cp.apiserver, cp.controllerManager].map((p) => ({ program: p.program, pid: p.pid, logFile: p.logFile })),
    options,
  };
  saveState(state);
  await labKubectl(state, ['apply', '-f', '-'], rbacDocuments(readFileSync(kubeManifestPath(), 'utf8')));
  const token = (await labKubectl(state, ['create', 'token', AGENT_ACCOUNT.name, '-n', AGENT_ACCOUNT.namespace, '--duration=24h'])).stdout.trim();
  writeFileSync(state.kube.kubeconfig, tokenKubeconfig(cp.server, cp.caCert, `system:serviceaccount:${AGENT_ACCOUNT.namespace}:${AGENT_ACCOUNT.name}`, token), {
    mode: 0o600,
  });
  return `Kubernetes ${cp.server} in ${netns} (kube-apiserver and kube-controller-manager, podCIDRs from ${[o.network, dual && o.ipv6Network].filter(Boolean).join(' and ')})`;
}

/** Registers the node's Node object as kubelet would: its name and its InternalIP(s). */
export async function registerLabNode(state: LabState, node: Pick<LabNode, 'name' | 'underlayIp' | 'underlayIp6'>): Promise<void> {
  const addresses = [{ type: 'InternalIP', address: node.underlayIp }, ...(node.underlayIp6 ? [{ type: 'InternalIP', address: node.underlayIp6 }] : [])];
  const manifest = {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: node.name, labels: { 'kubernetes.io/os': 'linux', 'kubernetes.io/hostname': node.name } },
  };
  await labKubectl(state, ['apply', '-f', '-'], JSON.stringify(manifest));
  await labKubectl(state, ['patch', 'node', node.name, '--subresource=status', '--type=merge', '-p', JSON.stringify({ status: { addresses } })]);
}

/** Deletes a node's Node object (tests: a node leaves the cluster). */
export async function deleteLabNode(state: LabState, name: string): Promise<void> {
  await labKubectl(state, ['delete', 'node', name, '--wait=true']);
}

/** The flags that point a node daemon at the lab's API server in place of its etcd. */
export function kubeFlags(state: LabState): string[] {
  const kube = state.kube!;
  return ['--kube-subnet-mgr', `--kubeconfig-file=${kube.kubeconfig}`, `--net-config-path=${kube.netConf}`];
}

/** Stops the controller manager, then the API server (labDown); each is stopped only while it is still that program. */
export async function stopLabKube(state: LabState): Promise<void> {
  for (const p of [...(state.kube?.processes ?? [])].reverse()) await stopKubeProcess(state, p);
}

/** The recorded process, stopped by the control plane's own stop (which checks the pid is still that program of this lab). */
const stopKubeProcess = (state: LabState, p: LabKube['processes'][number]) =>
  stopProcess(p.pid, p.program, (state.kube!.options as KubeControlPlaneOptions).stateDir);

/** Stops one program of the control plane, the other stays: an outage of the API server, or of the podCIDR allocator, for tests. */
export async function stopLabKubeProcess(state: LabState, program: KubeProcess['program']): Promise<void> {
  await stopKubeProcess(
    state,
    state.kube!.processes.find((p) => p.program === program)!,
  );
}

/** Starts that program again after stopLabKubeProcess, and records its new pid. */
export async function startLabKubeProcess(state: LabState, program: KubeProcess['program']): Promise<void> {
  const kube = state.kube!;
  const started = await restartKubeProcess(program, kube.options as KubeControlPlaneOptions);
  kube.processes = kube.processes.map((p) => (p.program === program ? { program, pid: started.pid, logFile: started.logFile } : p));
  saveState(state);
}
