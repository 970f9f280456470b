import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flanneld, kubeApiserver } from '../../controller/lab/peers.js';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs } from '../support/build.js';
import { stopAll } from '../support/proc.js';
import { allPodPairs, FLANNEL_ANNOTATIONS, kubeNode, labUpFresh, readyz, twill } from '../support/lab-session.js';

/*
 * Kubernetes mode, dual stack: kube-controller-manager gives every Node an IPv4 and an IPv6
 * podCIDR (--cluster-cidr with both), and twill agents and the real flanneld, both with
 * --kube-subnet-mgr and net-conf.json's EnableIPv6, lease both and publish flannel's IPv6
 * annotations (backend-v6-data, public-ipv6) beside the IPv4 ones. Lab tkd on 192.168.153.0/24.
 */

const LAB = 'tkd';
let lab: LabState;

beforeAll(async () => {
  buildBpf();
  buildTs();
  // Fail here, naming module and version, where a program could not be built: never skipped.
  flanneld();
  kubeApiserver();
  lab = await labUpFresh(LAB, [
    '--kube',
    '--ip-family',
    'dual',
    '--nodes',
    '3',
    '--flanneld-nodes',
    '1',
    '--pods-per-node',
    '1',
    '--underlay',
    '192.168.153.0/24',
  ]);
}, 300_000);
afterAll(async () => {
  await twill(['lab', 'down', '--name', LAB]);
  await stopAll();
}, 120_000);

const P = FLANNEL_ANNOTATIONS;
const nodeObject = (name: string) => kubeNode(lab, name);
/** The IPv6 subnets in a twill node's maps, as `twill maps --json` lists them. */
const subnets6Of = async (n: LabNode) => {
  const res = await twill(['maps', '--pin-dir', n.pinDir, '--json']);
  expect(res.code, res.stderr).toBe(0);
  const doc = JSON.parse(res.stdout) as { ipv6?: { subnets: { subnet: string }[] } };
  return (doc.ipv6?.subnets ?? []).map((s) => s.subnet).sort();
};

describe('a dual-stack Kubernetes-mode cluster of twill and flanneld nodes', () => {
  it("leases both podCIDRs of each Node and publishes flannel's IPv6 annotations beside the IPv4 ones", async () => {
    for (const n of lab.nodes) {
      const obj = await nodeObject(n.name);
      expect(n.subnet6, n.name).toMatch(/^fd10:244:/);
      expect(obj.spec.podCIDRs, n.name).toEqual([n.subnet, n.subnet6]);
      expect(obj.metadata.annotations, n.name).toMatchObject({
        [`${P}kube-subnet-manager`]: 'true',
        [`${P}public-ip`]: n.underlayIp,
        [`${P}public-ipv6`]: n.underlayIp6,
        [`${P}backend-data`]: JSON.stringify({ VNI: 1, VtepMAC: n.vtepMac }),
        [`${P}backend-v6-data`]: JSON.stringify({ VNI: 1, VtepMAC: n.vtepMac6 }),
      });
    }
  });

  it("puts every other node's IPv6 subnet in each twill node's maps, and says its watch is up", async () => {
    for (const n of lab.nodes.filter((x) => x.dataplane !== 'flanneld')) {
      const others = lab.nodes.filter((x) => x !== n).map((x) => x.subnet6!);
      expect(await subnets6Of(n), n.name).toEqual(expect.arrayContaining(others));
      expect(await readyz(n), n.name).toMatchObject({ ready: true, subnetManager: { kind: 'kube', connected: true } });
    }
  });

  it('every pod pair talks both ways, over IPv4 and over IPv6, between twill and flanneld nodes: ping, TCP and UDP', async () => {
    expect(lab.pods.every((p) => p.ips?.length === 2)).toBe(true);
    expect(await allPodPairs(lab)).toEqual([]);
  });

  it("the flanneld node routes the twill nodes' IPv6 subnets through its flannel-v6.1 device", async () => {
    const fl = lab.nodes.find((n) => n.dataplane === 'flanneld')!;
    const routes = (await run(['ip', '-6', 'route', 'show'], { netns: fl.netns })).stdout;
    for (const n of lab.nodes.filter((x) => x !== fl))
      expect(routes, n.name).toMatch(new RegExp(`^${n.subnet6!.replace(/\//, '\\/')} .*dev flannel-v6\\.1`, 'm'));
  });
});
