import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LabError } from '../../controller/lab/errors.js';
import { imageContainerName } from '../../controller/lab/image.js';
import { labUp } from '../../controller/lab/lab.js';
import { kubeApiserver } from '../../controller/lab/peers.js';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs, repoRoot } from '../support/build.js';
import { stopAll } from '../support/proc.js';
import { allPodPairs, bounceAgent, kubeNode, labUpFresh, readyz, twill, type Readyz } from '../support/lab-session.js';

/*
 * The container image of deploy/kubernetes/Containerfile, built here with podman on a base made
 * by mmdebstrap (scripts/image/build.sh: no registry is reachable), runs as a lab node's agent:
 * in the node's namespace, privileged, with the DaemonSet's host paths and a ServiceAccount
 * token, beside a node whose agent is this checkout's. Lab tki on 192.168.148.0/24.
 */

const LAB = 'tki';
const IMAGE = 'localhost/twill:dev';
let lab: LabState;

beforeAll(async () => {
  buildBpf();
  buildTs();
  // Fail here, naming module and version, where Kubernetes could not be built: never skipped.
  kubeApiserver();
  // Skips the build when the image's inputs are unchanged; a cold build fetches a Debian base,
  // the stages' packages and npm modules.
  execFileSync(path.join(repoRoot, 'scripts/image/build.sh'), ['--tag', IMAGE], { stdio: 'inherit' });
  lab = await labUpFresh(LAB, [
    '--kube',
    '--nodes',
    '2',
    '--image-nodes',
    '1',
    '--image',
    IMAGE,
    '--pods-per-node',
    '1',
    '--underlay',
    '192.168.148.0/24',
    '--network',
    '10.248.0.0/16',
  ]);
}, 1_800_000);
afterAll(async () => {
  await twill(['lab', 'down', '--name', LAB]);
  await stopAll();
}, 120_000);

const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
interface ContainerState {
  ImageName: string;
  State: { Running: boolean };
  Config: { Entrypoint: string | string[] };
}
const container = async (n: LabNode) => {
  const res = await run(['podman', 'container', 'inspect', imageContainerName(n)], { allowFailure: true });
  return res.code === 0 ? (JSON.parse(res.stdout) as ContainerState[])[0] : undefined;
};

describe("a node running the image's agent, beside one running the checkout's", () => {
  it("n1's agent runs in the image's container, reports the kube subnet manager connected, and lab status names the image", async () => {
    const c = await container(node('n1'));
    expect(c).toMatchObject({ ImageName: IMAGE, State: { Running: true } });
    expect([c!.Config.Entrypoint].flat().join(' ')).toContain('/usr/lib/twill/dist/controller/cli.js');
    expect(await container(node('n2'))).toBeUndefined();
    for (const n of lab.nodes) expect(await readyz(n), n.name).toMatchObject({ ready: true, subnetManager: { kind: 'kube', connected: true } });
    const status = JSON.parse((await twill(['lab', 'status', '--name', LAB, '--json'])).stdout) as { nodes: { name: string; image?: string }[] };
    expect(status.nodes.map((n) => [n.name, n.image])).toEqual([
      ['n1', IMAGE],
      ['n2', undefined],
    ]);
  });

  it("publishes the image node's lease on its Node as the checkout's agent does", async () => {
    const obj = await kubeNode(lab, 'n1');
    expect(obj.spec.podCIDR).toBe(node('n1').subnet);
    expect(obj.metadata.annotations).toMatchObject({
      'flannel.alpha.coreos.com/kube-subnet-manager': 'true',
      'flannel.alpha.coreos.com/public-ip': node('n1').underlayIp,
      'flannel.alpha.coreos.com/backend-data': JSON.stringify({ VNI: 1, VtepMAC: node('n1').vtepMac }),
    });
  });

  it('pods on the image node and on the plain node reach each other both ways: ping, TCP and UDP', async () => {
    expect(await allPodPairs(lab)).toEqual([]);
  });

  it("negative control: with the image's agent stopped and its datapath detached the same checks fail; started from the image again, they pass", async () => {
    const n1 = node('n1');
    let whileStopped: { readyz: Readyz; container: ContainerState | undefined; failed: string[] } | undefined;
    await bounceAgent(lab, n1, 'SIGTERM', [], async () => {
      // The agent leaves its datapath in place on SIGTERM (pods keep talking): taken away here,
      // nothing but the image's agent puts it back.
      await twill(['dataplane', 'detach', '--pin-dir', n1.pinDir], n1.netns);
      whileStopped = { readyz: await readyz(n1), container: await container(n1), failed: await allPodPairs(lab, { tcp: false }) };
    });
    expect(whileStopped!.readyz).toEqual({});
    expect(whileStopped!.container).toBeUndefined();
    expect(whileStopped!.failed).toContain(`ping n2-p1 (bpf) -> ${lab.pods.find((p) => p.node === 'n1')!.ip} on n1-p1 (bpf)`);
    expect((await container(n1))?.State.Running).toBe(true);
    expect(await readyz(n1)).toMatchObject({ ready: true, subnetManager: { kind: 'kube', connected: true } });
    expect(await allPodPairs(lab)).toEqual([]);
  }, 180_000);
});

describe('bad --image-nodes and --image', () => {
  it.each([
    [{ nodes: 2, imageNodes: 2, flanneldNodes: 1 }, '--image-nodes 2 and --flanneld-nodes 1: together more than --nodes 2'],
    [{ nodes: 2, imageNodes: 1, image: 'Twill Dev' }, '--image: an image name like localhost/twill:dev'],
    [
      { nodes: 2, imageNodes: 1, image: 'localhost/twill:not-built' },
      "--image localhost/twill:not-built: not in podman's image storage; build it with scripts/image/build.sh",
    ],
  ])('rejects %j naming the option, and leaves the running lab alone', async (bad, message) => {
    const up = labUp({ name: LAB, kube: true, underlayCidr: '192.168.148.0/24', network: '10.248.0.0/16', ...bad });
    await expect(up).rejects.toThrow(message);
    await expect(up).rejects.toBeInstanceOf(LabError);
    expect((await container(node('n1')))?.State.Running).toBe(true);
  });
});
