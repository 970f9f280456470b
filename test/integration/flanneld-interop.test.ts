import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabNode, LabPod, LabState } from '../../controller/lab/state.js';
import { flanneld } from '../../controller/lab/peers.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs } from '../support/build.js';
import { stopAll } from '../support/proc.js';
import {
  agentLog,
  allPodPairs,
  bounceAgent,
  etcdctl,
  expectNoLoss,
  labUpFresh,
  leaseKey,
  lossLine,
  pingFlowsRunning,
  readMaps,
  stopPingFlows,
  twill,
  until,
} from '../support/lab-session.js';

/*
 * twill nodes in one cluster with the real flanneld (scripts/peers/versions.env), its pods made
 * by flannel's own CNI plugin: every pod pair both ways for each backend and family, the kernel
 * entries flanneld made for twill's nodes asserted exactly, restarts of either side under ping
 * flows, and reservations and lease renewals written by one side and honoured by the other.
 * Labs, one after the other: tfv (vxlan), tfh (host-gw), tfd (DirectRouting, one segment routed),
 * tfs (dual stack), tf6 (IPv6 only), on 192.168.141.0/24 - 192.168.145.0/24.
 */

beforeAll(() => {
  buildBpf();
  buildTs();
  // Fails here, naming module and version, where flanneld could not be built: never skipped.
  flanneld();
}, 300_000);
afterAll(async () => {
  await stopAll();
});

/** A lab for one describe block: up before its tests, down after them. */
function useLab(name: string, args: string[], got: (l: LabState) => void): void {
  beforeAll(async () => got(await labUpFresh(name, args)), 180_000);
  afterAll(async () => {
    await twill(['lab', 'down', '--name', name]);
  }, 60_000);
}

const node = (l: LabState, name: string) => l.nodes.find((n) => n.name === name)!;
const json = async (n: LabNode, args: string[]) => JSON.parse((await run(args, { netns: n.netns })).stdout || '[]') as Record<string, unknown>[];
const base = (cidr: string) => cidr.split('/')[0];
const byKey = <T extends Record<string, unknown>>(xs: T[]) => xs.map((x) => JSON.stringify(x)).sort();

/** The VXLAN device's routes, neighbours and FDB entries on a flanneld node, in the shape flanneld writes them. */
async function vxlanEntries(n: LabNode, dev: string, family: '-4' | '-6') {
  return {
    // The device's own address and link-local routes are not per-peer entries.
    routes: byKey(
      (await json(n, ['ip', family, '-j', 'route', 'show', 'dev', dev]))
        .filter((r) => r.gateway)
        .map((r) => ({ dst: r.dst, gateway: r.gateway, onlink: ((r.flags as string[]) ?? []).includes('onlink') })),
    ),
    neighs: byKey((await json(n, ['ip', family, '-j', 'neigh', 'show', 'dev', dev])).map((r) => ({ dst: r.dst, lladdr: r.lladdr, state: r.state }))),
    fdb: byKey((await json(n, ['bridge', '-j', 'fdb', 'show', 'dev', dev])).filter((f) => f.dst).map((f) => ({ mac: f.mac, dst: f.dst, state: f.state }))),
  };
}

/** What flanneld's vxlan backend writes for each peer: a route via the subnet's base onlink, a permanent neighbour, an FDB entry to its public address. */
function expectedVxlanEntries(peers: LabNode[], v6: boolean) {
  const sub = (p: LabNode) => (v6 ? p.subnet6! : p.subnet);
  const mac = (p: LabNode) => (v6 ? p.vtepMac6! : p.vtepMac);
  return {
    routes: byKey(peers.map((p) => ({ dst: sub(p), gateway: base(sub(p)), onlink: true }))),
    neighs: byKey(peers.map((p) => ({ dst: base(sub(p)), lladdr: mac(p), state: ['PERMANENT'] }))),
    fdb: byKey(peers.map((p) => ({ mac: mac(p), dst: v6 ? p.underlayIp6! : p.underlayIp, state: 'permanent' }))),
  };
}

/** Stops the flows at least 2 s after the last fault (`lastFault`) and asserts none lost, in all and after it. */
async function noLossSince(flows: Awaited<ReturnType<typeof pingFlowsRunning>>, lastFault: number, what: string): Promise<void> {
  const loss = await stopPingFlows(flows, { lastFault });
  console.log(`RELIABILITY flanneld interop (${flanneld().version}): ${what}: ${lossLine(loss)}`);
  expectNoLoss(loss);
}

/**
 * The lease record of a subnet: its value, and the id of the etcd lease it is bound to ('0' for a
 * reservation), kept as text: ids are 64-bit and lose their low digits as JSON numbers.
 */
async function leaseOf(l: LabState, subnet: string): Promise<{ value: Record<string, unknown>; leaseId: string } | undefined> {
  const out = (await etcdctl(l, 'get', leaseKey(subnet), '-w', 'json')).stdout;
  const kv = (JSON.parse(out) as { kvs?: { value: string }[] }).kvs?.[0];
  return kv && { value: JSON.parse(Buffer.from(kv.value, 'base64').toString()) as Record<string, unknown>, leaseId: /"lease":(\d+)/.exec(out)?.[1] ?? '0' };
}

describe('vxlan: two twill BPF nodes and the real flanneld', () => {
  const LAB = 'tfv';
  let lab: LabState;
  useLab(LAB, ['--nodes', '3', '--flanneld-nodes', '1', '--pods-per-node', '1', '--underlay', '192.168.141.0/24'], (l) => (lab = l));

  it('runs flanneld of the pinned release on n3, and twill BPF on n1 and n2', async () => {
    expect(lab.nodes.map((n) => [n.dataplane, n.flanneldVersion])).toEqual([
      ['bpf', undefined],
      ['bpf', undefined],
      ['flanneld', flanneld().version],
    ]);
    const status = JSON.parse((await twill(['lab', 'status', '--name', LAB, '--json'])).stdout) as { nodes: { dataplane: string; flanneldVersion?: string }[] };
    expect(status.nodes[2]).toMatchObject({ dataplane: 'flanneld', flanneldVersion: flanneld().version });
    expect(agentLog(node(lab, 'n3'))).toContain(`Wrote subnet file to ${node(lab, 'n3').subnetFile}`);
  });

  it("flanneld's flannel.1 holds exactly one route, one neighbour and one FDB entry per twill node, as its vxlan backend writes them", async () => {
    const n3 = node(lab, 'n3');
    expect(await vxlanEntries(n3, 'flannel.1', '-4')).toEqual(expectedVxlanEntries([node(lab, 'n1'), node(lab, 'n2')], false));
  });

  it("twill's maps route flanneld's subnet to its PublicIP and VtepMAC, as its lease says", async () => {
    const n3 = node(lab, 'n3');
    const lease = await leaseOf(lab, n3.subnet);
    expect(lease?.value).toMatchObject({ PublicIP: n3.underlayIp, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: n3.vtepMac } });
    for (const n of [node(lab, 'n1'), node(lab, 'n2')])
      expect((await readMaps(n)).subnets).toContainEqual({ subnet: n3.subnet, publicIp: n3.underlayIp, vtepMac: n3.vtepMac });
  });

  it('every pod pair talks both ways between twill and flanneld nodes: ping, TCP and UDP', async () => {
    expect(await allPodPairs(lab)).toEqual([]);
  });

  it('flanneld restarted under ping flows: nothing lost, its entries for the twill nodes unchanged', async () => {
    const n3 = node(lab, 'n3');
    const before = await vxlanEntries(n3, 'flannel.1', '-4');
    const flows = await pingFlowsRunning(lab);
    await bounceAgent(lab, n3, 'SIGTERM');
    await noLossSince(flows, Date.now(), 'flanneld restarted');
    expect(await vxlanEntries(n3, 'flannel.1', '-4')).toEqual(before);
  }, 120_000);

  it('twill restarted under ping flows: nothing lost, flanneld keeps its entries', async () => {
    const n3 = node(lab, 'n3');
    const before = await vxlanEntries(n3, 'flannel.1', '-4');
    const flows = await pingFlowsRunning(lab);
    await bounceAgent(lab, node(lab, 'n1'), 'SIGTERM');
    await bounceAgent(lab, node(lab, 'n2'), 'SIGKILL');
    await noLossSince(flows, Date.now(), 'twill restarted (SIGTERM on n1, SIGKILL on n2)');
    expect(await vxlanEntries(n3, 'flannel.1', '-4')).toEqual(before);
  }, 120_000);

  it("lease renewals: flanneld's renewal (a new etcd lease) and twill's (every 5 s) change nothing on the other side, under ping flows", async () => {
    const [n1, n3] = [node(lab, 'n1'), node(lab, 'n3')];
    // flanneld renews at expiry (24 h) minus the margin: 1439 minutes makes that one minute from now.
    await bounceAgent(lab, n3, 'SIGTERM', ['--subnet-lease-renew-margin=1439']);
    await bounceAgent(lab, n1, 'SIGTERM', ['--subnet-lease-ttl=10']);
    const flanneldLease = (await leaseOf(lab, n3.subnet))!.leaseId;
    const twillLease = (await leaseOf(lab, n1.subnet))!.leaseId;
    const entries = await vxlanEntries(n3, 'flannel.1', '-4');
    const maps = (await readMaps(n1)).subnets;
    const from = agentLog(n3).length;
    const fromN1 = agentLog(n1).length;
    const flows = await pingFlowsRunning(lab);
    await until('flanneld to renew its lease', async () => agentLog(n3).slice(from).includes('Lease renewed, new expiration'), 90_000);
    await noLossSince(flows, Date.now(), 'lease renewals on both sides');
    const renewed = (await leaseOf(lab, n3.subnet))!;
    expect(renewed.leaseId).not.toBe(flanneldLease);
    expect(renewed.value).toMatchObject({ PublicIP: n3.underlayIp, BackendData: { VtepMAC: n3.vtepMac } });
    // twill renews by keeping its etcd lease alive: same lease, and flanneld never saw it go.
    expect((await leaseOf(lab, n1.subnet))!.leaseId).toBe(twillLease);
    expect(agentLog(n1).slice(fromN1)).toContain('"msg":"lease renewed"');
    expect(await vxlanEntries(n3, 'flannel.1', '-4')).toEqual(entries);
    expect((await readMaps(n1)).subnets).toEqual(maps);
    expect(agentLog(n3).slice(from)).not.toMatch(/removed|Subnet removed/i);
  }, 150_000);

  it('a reservation for the flanneld node is taken by flanneld and routed by twill; one for a twill node is taken by twill, stays a reservation and is routed by flanneld', async () => {
    const [n2, n3] = [node(lab, 'n2'), node(lab, 'n3')];
    const used = new Set(lab.nodes.map((n) => n.subnet));
    const free = ['10.244.201.0/24', '10.244.202.0/24', '10.244.203.0/24'].filter((s) => !used.has(s));
    const [r3, r2] = free;
    const reserve = async (n: LabNode, subnet: string) => {
      await etcdctl(lab, 'del', leaseKey(n.subnet));
      await etcdctl(
        lab,
        'put',
        leaseKey(subnet),
        JSON.stringify({ PublicIP: n.underlayIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: n.vtepMac } }),
      );
    };
    // flanneld's node: stopped, its lease replaced by a reservation elsewhere, started again.
    await bounceAgent(lab, n3, 'SIGTERM', [], async () => reserve(n3, r3));
    expect(readFileSync(n3.subnetFile, 'utf8')).toContain(`FLANNEL_SUBNET=${base(r3).replace(/\.0$/, '.1')}/24`);
    for (const n of [node(lab, 'n1'), n2])
      await until(`${n.name} to route the reserved ${r3}`, async () =>
        (await readMaps(n)).subnets.some((s) => s.subnet === r3 && s.publicIp === n3.underlayIp),
      );
    // A twill node, the same way.
    await bounceAgent(lab, n2, 'SIGTERM', [], async () => reserve(n2, r2));
    expect(readFileSync(n2.subnetFile, 'utf8')).toContain(`FLANNEL_SUBNET=${base(r2).replace(/\.0$/, '.1')}/24`);
    await until(`flanneld to route the reserved ${r2}`, async () =>
      (await run(['ip', 'route', 'show', r2], { netns: n3.netns })).stdout.includes(`${r2} via ${base(r2)} dev flannel.1 onlink`),
    );
    expect((await leaseOf(lab, r2))!.leaseId, `twill's reserved ${r2} bound to an etcd lease`).toBe('0');
    // flanneld rewrites a reservation it reuses with an etcd lease (its registry's updateSubnet
    // grants one even for a TTL of 0), so the key now expires unless renewed: flannel's own
    // known gap with etcd v3, which twill does not share.
    expect((await leaseOf(lab, r3))!.leaseId, `flanneld's reserved ${r3}`).not.toBe('0');
    for (const n of [node(lab, 'n1'), n2])
      expect(
        (await readMaps(n)).subnets.some((s) => s.subnet === r3 && s.publicIp === n3.underlayIp),
        n.name,
      ).toBe(true);
  }, 150_000);
});

describe('host-gw: a twill BPF node and the real flanneld', () => {
  const LAB = 'tfh';
  let lab: LabState;
  useLab(LAB, ['--nodes', '2', '--flanneld-nodes', '1', '--backend', 'host-gw', '--pods-per-node', '1', '--underlay', '192.168.142.0/24'], (l) => (lab = l));

  it("flanneld routes the twill node's subnet via its PublicIP and nothing else; twill routes flanneld's directly", async () => {
    const [n1, n2] = [node(lab, 'n1'), node(lab, 'n2')];
    const routes = (await json(n2, ['ip', '-4', '-j', 'route', 'show', 'dev', 'eth0'])).filter((r) => r.gateway && r.dst !== 'default');
    expect(routes.map((r) => ({ dst: r.dst, gateway: r.gateway }))).toEqual([{ dst: n1.subnet, gateway: n1.underlayIp }]);
    expect((await readMaps(n1)).subnets).toContainEqual(expect.objectContaining({ subnet: n2.subnet, publicIp: n2.underlayIp }));
  });

  it('every pod pair talks both ways: ping, TCP and UDP', async () => {
    expect(await allPodPairs(lab)).toEqual([]);
  });
});

describe('vxlan DirectRouting: twill BPF n1, n2 and flanneld n3 on one segment, flanneld n4 behind a router', () => {
  const LAB = 'tfd';
  let lab: LabState;
  useLab(
    LAB,
    ['--nodes', '4', '--flanneld-nodes', '2', '--routed-nodes', '1', '--direct-routing', '--pods-per-node', '1', '--underlay', '192.168.143.0/24'],
    (l) => (lab = l),
  );

  it('flanneld on the shared segment routes twill nodes directly and the routed node by VXLAN; the routed flanneld reaches every twill node by VXLAN', async () => {
    const [n1, n2, n3, n4] = ['n1', 'n2', 'n3', 'n4'].map((x) => node(lab, x));
    const direct = async (n: LabNode) =>
      (await json(n, ['ip', '-4', '-j', 'route', 'show', 'dev', 'eth0']))
        .filter((r) => r.gateway && r.dst !== 'default')
        .map((r) => `${String(r.dst)} via ${String(r.gateway)}`)
        .sort();
    expect(await direct(n3)).toEqual([`${n1.subnet} via ${n1.underlayIp}`, `${n2.subnet} via ${n2.underlayIp}`].sort());
    expect(await vxlanEntries(n3, 'flannel.1', '-4')).toEqual(expectedVxlanEntries([n4], false));
    expect(await vxlanEntries(n4, 'flannel.1', '-4')).toEqual(expectedVxlanEntries([n1, n2, n3], false));
  });

  it('every pod pair talks both ways: ping, TCP and UDP', async () => {
    expect(await allPodPairs(lab)).toEqual([]);
  });
});

describe('dual stack: a twill BPF node and the real flanneld', () => {
  const LAB = 'tfs';
  let lab: LabState;
  useLab(LAB, ['--nodes', '2', '--flanneld-nodes', '1', '--ip-family', 'dual', '--pods-per-node', '1', '--underlay', '192.168.144.0/24'], (l) => (lab = l));

  it("flanneld's flannel.1 and flannel-v6.1 each hold exactly the twill node's entries", async () => {
    const [n1, n2] = [node(lab, 'n1'), node(lab, 'n2')];
    expect(await vxlanEntries(n2, 'flannel.1', '-4')).toEqual(expectedVxlanEntries([n1], false));
    expect(await vxlanEntries(n2, 'flannel-v6.1', '-6')).toEqual(expectedVxlanEntries([n1], true));
  });

  it('every pod pair talks both ways in both families: ping, TCP and UDP', async () => {
    expect(await allPodPairs(lab)).toEqual([]);
  });

  it('flanneld and twill restarted under ping flows on both families: nothing lost', async () => {
    const v6 = (p: LabPod) => p.ips!.find((a) => a.includes(':'))!;
    const flows = [...(await pingFlowsRunning(lab)), ...(await pingFlowsRunning(lab, v6))];
    await bounceAgent(lab, node(lab, 'n2'), 'SIGTERM');
    await bounceAgent(lab, node(lab, 'n1'), 'SIGTERM');
    await noLossSince(flows, Date.now(), 'dual stack, flanneld then twill restarted');
  }, 120_000);
});

/*
 * flanneld v0.28.10 in etcd mode cannot run an IPv6-only network, whoever its peers are: its
 * registry reads every lease key as having IPv4 (kvToIPLease sets EnableIPv4: true), so its vxlan
 * backend takes the IPv4 branch, which has no device in an IPv6-only network, and never programs
 * the peer's IPv6 entries; and it finds its own lease by PublicIP, 0.0.0.0 on every IPv6-only
 * node, so two such flanneld nodes can end up on one subnet (seen in this lab). So what is
 * asserted here is twill's half and flanneld's failure, not pod traffic.
 */
describe('IPv6 only: twill routes to the real flanneld, which programs no IPv6-only peer', () => {
  const LAB = 'tf6';
  let lab: LabState;
  useLab(LAB, ['--nodes', '2', '--flanneld-nodes', '1', '--ip-family', 'ipv6', '--pods-per-node', '1', '--underlay', '192.168.145.0/24'], (l) => (lab = l));

  it("twill's IPv6 maps hold flanneld's lease: its subnet, PublicIPv6 and VtepMAC", async () => {
    const [n1, n2] = [node(lab, 'n1'), node(lab, 'n2')];
    const doc = JSON.parse((await twill(['maps', '--pin-dir', n1.pinDir, '--json'])).stdout) as { ipv6: { subnets: Record<string, unknown>[] } };
    expect(doc.ipv6.subnets).toEqual([expect.objectContaining({ subnet: n2.subnet6, publicIp: n2.underlayIp6, vtepMac: n2.vtepMac6 })]);
  });

  it("flanneld received twill's lease and wrote no entry for it: no route, neighbour or FDB entry on flannel-v6.1", async () => {
    const [n1, n2] = [node(lab, 'n1'), node(lab, 'n2')];
    await until("flanneld to receive twill's lease", async () => agentLog(n2).includes(`PublicIPv6: ${n1.underlayIp6}`));
    await new Promise((r) => setTimeout(r, 1000));
    expect(await vxlanEntries(n2, 'flannel-v6.1', '-6')).toEqual({ routes: [], neighs: [], fdb: [] });
    expect((await run(['ip', 'link', 'show', 'flannel.1'], { netns: n2.netns, allowFailure: true })).code).not.toBe(0);
  });
});
