import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MapsDoc } from '../../controller/cli/maps.js';
import type { LabNode, LabPod, LabState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs } from '../support/build.js';
import { bounceAgent, etcdctl, expectNoLoss, labUpFresh, pingFlowsRunning, PREFIX, stopPingFlows, twill } from '../support/lab-session.js';
import { stopAll } from '../support/proc.js';
import { tcpTransfer, udpProbe } from '../support/traffic.js';
import { underlayCapture } from '../support/stack-watch.js';
import { desiredRules } from '../../controller/masq/rules.js';
import { parseCidr6 } from '../../controller/net/ipv6.js';

/*
 * IPv6 pod networks in flannel's layout, driven by the agents: a dual-stack lab ("t6d": two twill
 * BPF nodes and one node set up exactly as flanneld sets it up, --dataplane kernel) and an
 * IPv6-only one ("t6s": a BPF node with no IPv4 identity and a flanneld-style node), and dual-stack
 * labs with host-gw ("t6h") and DirectRouting ("t6r"), with real
 * pods made by the CNI plugins, real leases in etcd and real traffic in both families. The BPF
 * programs' handling of IPv6 packets (checksums, Packet Too Big, hostile VXLAN) is proven packet
 * by packet in dataplane-v6.test.ts; this file proves the agent programs them from etcd.
 */

let lab: LabState;
const node = (l: LabState, name: string) => l.nodes.find((n) => n.name === name)!;
const podOf = (l: LabState, n: string) => l.pods.find((p) => p.node === n)!;
const v6Of = (p: LabPod) => (p.ips ?? []).find((a) => a.includes(':'))!;
const v4Of = (p: LabPod) => (p.ips ?? []).find((a) => !a.includes(':'))!;
const pingOk = async (from: LabPod, addr: string) =>
  (await run(['ping', '-c', '2', '-i', '0.05', '-W', '1', addr], { netns: from.netns, allowFailure: true })).stdout.includes('2 received');

/** The lease record of a node, as stored in etcd: its key's last part and its value. */
async function leaseRecord(l: LabState, n: LabNode): Promise<{ key: string; value: Record<string, unknown> }> {
  const out = (await etcdctl(l, 'get', '--prefix', `${PREFIX}/subnets/`)).stdout.trim().split('\n');
  for (let i = 0; i + 1 < out.length; i += 2) {
    const value = JSON.parse(out[i + 1]) as Record<string, unknown>;
    if (value.PublicIPv6 === n.underlayIp6) return { key: out[i].slice(`${PREFIX}/subnets/`.length), value };
  }
  throw new Error(`no lease record with PublicIPv6 ${n.underlayIp6}: ${out.join('\n')}`);
}

/** flannel-v6.1's state on a node: route, neighbour and FDB entry per remote lease, as flanneld programs them. */
async function v6DeviceState(n: LabNode) {
  const j = async (args: string[]) => JSON.parse((await run(args, { netns: n.netns })).stdout || '[]') as Record<string, unknown>[];
  return {
    routes: (await j(['ip', '-6', '-j', 'route', 'show', 'dev', 'flannel-v6.1'])).map((r) => ({
      dst: r.dst,
      gateway: r.gateway,
      onlink: (r.flags as string[] | undefined)?.includes('onlink') ?? false,
    })),
    neighs: (await j(['ip', '-6', '-j', 'neigh', 'show', 'dev', 'flannel-v6.1'])).map((r) => ({ dst: r.dst, lladdr: r.lladdr, state: r.state })),
    fdb: (await j(['bridge', '-j', 'fdb', 'show', 'dev', 'flannel-v6.1'])).filter((f) => f.dst).map((f) => ({ mac: f.mac, dst: f.dst })),
  };
}

type MapsDocV6 = MapsDoc & { ipv6: NonNullable<MapsDoc['ipv6']> };
const mapsDoc = async (n: LabNode) => JSON.parse((await twill(['maps', '--pin-dir', n.pinDir, '--json'])).stdout) as MapsDocV6;

describe('a dual-stack lab: two BPF nodes and a flanneld-style node', () => {
  beforeAll(async () => {
    buildBpf();
    buildTs();
    lab = await labUpFresh('t6d', ['--nodes', '3', '--kernel-nodes', '1', '--pods-per-node', '1', '--ip-family', 'dual', '--underlay', '192.168.101.0/24']);
  }, 240_000);

  afterAll(async () => {
    await stopAll();
    await twill(['lab', 'down', '--name', 't6d']);
  });

  it('every pod has an IPv4 and an IPv6 address, and lab status --json keeps ip and adds ips', async () => {
    const doc = JSON.parse((await twill(['lab', 'status', '--name', 't6d', '--json'])).stdout) as {
      ipFamily: string;
      pods: { ip: string; ips: string[] }[];
      nodes: { subnet6: string }[];
    };
    expect(doc.ipFamily).toBe('dual');
    expect(doc.pods).toHaveLength(3);
    for (const p of doc.pods) {
      expect(p.ips).toHaveLength(2);
      expect(p.ip).toBe(p.ips[0]);
      expect(p.ips[0]).toMatch(/^10\.244\./);
      expect(p.ips[1]).toMatch(/^fd10:244:/);
    }
    expect(new Set(doc.nodes.map((n) => n.subnet6)).size).toBe(3);
  });

  it('each lease is stored as flanneld stores a dual-stack one: both subnets in the key, PublicIPv6 and BackendV6Data in the value', async () => {
    for (const n of lab.nodes) {
      const { key, value } = await leaseRecord(lab, n);
      expect(key).toBe(`${n.subnet.replace('/', '-')}&${n.subnet6!.replace('/', '-')}`);
      expect(value).toMatchObject({
        PublicIP: n.underlayIp,
        PublicIPv6: n.underlayIp6,
        BackendType: 'vxlan',
        BackendData: { VNI: 1, VtepMAC: n.vtepMac },
        BackendV6Data: { VNI: 1, VtepMAC: n.vtepMac6 },
      });
    }
  });

  it("the subnet file carries flannel's IPv6 variables next to the IPv4 ones", () => {
    for (const n of lab.nodes) {
      const text = readFileSync(n.subnetFile, 'utf8');
      expect(text).toContain('FLANNEL_NETWORK=10.244.0.0/16\n');
      expect(text).toContain('FLANNEL_IPV6_NETWORK=fd10:244::/56\n');
      const v6 = /^FLANNEL_IPV6_SUBNET=(\S+)$/m.exec(text)?.[1];
      expect(v6?.split('/')[1]).toBe('64');
      expect(v6!.startsWith(n.subnet6!.split('::/')[0])).toBe(true);
    }
  });

  it("the BPF nodes' IPv6 maps hold every other node's IPv6 subnet, PublicIPv6 and IPv6 VtepMAC, and their pods' IPv6 endpoints; IPv6 is on", async () => {
    for (const n of lab.nodes.filter((x) => x.dataplane === 'bpf')) {
      const doc = await mapsDoc(n);
      const others = lab.nodes.filter((o) => o !== n);
      expect(doc.ipv6.enabled).toBe(true);
      expect(doc.ipv6.config).toMatchObject({ public_ip6: n.underlayIp6, subnet6: n.subnet6!.split('/')[0] });
      // Each peer's IPv6 entries count in the slot of its IPv4 entries: one row of counters per node.
      const slotOf = (o: LabNode) => doc.peers.find((p) => p.publicIp === o.underlayIp)!.statsSlot;
      for (const o of others) expect(slotOf(o)).toBeGreaterThan(0);
      expect(doc.ipv6.subnets).toEqual(
        expect.arrayContaining(others.map((o) => ({ subnet: o.subnet6, publicIp: o.underlayIp6, vtepMac: o.vtepMac6, statsSlot: slotOf(o) }))),
      );
      expect(doc.ipv6.subnets).toHaveLength(others.length);
      expect(doc.ipv6.peers).toEqual(
        expect.arrayContaining(others.map((o) => ({ publicIp: o.underlayIp6, subnet: o.subnet6, vtepMac: o.vtepMac6, statsSlot: slotOf(o) }))),
      );
      expect(doc.ipv6.endpoints).toEqual([expect.objectContaining({ ip: v6Of(podOf(lab, n.name)), encapMtu: 1430 })]);
      // No flannel-v6.1 on a BPF node: twill-rx carries IPv6's VXLAN port.
      expect((await run(['ip', '-j', 'link', 'show', 'type', 'vxlan'], { netns: n.netns })).stdout).not.toContain('flannel');
    }
  });

  it("IPv6 pod traffic counts in the peer's row of per-peer counters, both ways, not as unattributed", async () => {
    const [n1, n2] = ['n1', 'n2'].map((n) => node(lab, n));
    const row = (doc: MapsDocV6) => doc.traffic.find((t) => t.publicIp === n2.underlayIp)!;
    const before = await mapsDoc(n1);
    const pings = await run(['ping', '-c', '20', '-i', '0.02', '-W', '1', v6Of(podOf(lab, 'n2'))], { netns: podOf(lab, 'n1').netns, allowFailure: true });
    expect(pings.stdout).toContain('20 received');
    const after = await mapsDoc(n1);
    expect(row(after).encap_packets - row(before).encap_packets).toBeGreaterThanOrEqual(20);
    expect(row(after).decap_packets - row(before).decap_packets).toBeGreaterThanOrEqual(20);
    expect(after.unattributed).toEqual(before.unattributed);
  });

  it("the kernel node's flannel-v6.1 holds exactly flanneld's entries for each other node: route via the subnet's base onlink, a permanent neighbour, an FDB entry to its PublicIPv6; MTU underlay - 70", async () => {
    for (const n of lab.nodes.filter((x) => x.dataplane === 'kernel')) {
      const link = JSON.parse((await run(['ip', '-d', '-j', 'link', 'show', 'flannel-v6.1'], { netns: n.netns })).stdout)[0] as {
        mtu: number;
        address: string;
        linkinfo: { info_data: { id: number; local6: string; port: number; learning: boolean } };
      };
      expect(link).toMatchObject({ mtu: 1430, address: n.vtepMac6, linkinfo: { info_data: { id: 1, local6: n.underlayIp6, port: 8472, learning: false } } });
      const others = lab.nodes.filter((o) => o !== n);
      const state = await v6DeviceState(n);
      const base = (o: LabNode) => o.subnet6!.split('/')[0];
      expect(state.routes.filter((r) => r.gateway).sort((a, b) => String(a.dst).localeCompare(String(b.dst)))).toEqual(
        others.map((o) => ({ dst: o.subnet6, gateway: base(o), onlink: true })).sort((a, b) => a.dst!.localeCompare(b.dst!)),
      );
      for (const o of others) {
        expect(state.neighs).toContainEqual({ dst: base(o), lladdr: o.vtepMac6, state: ['PERMANENT'] });
        expect(state.fdb).toContainEqual({ mac: o.vtepMac6, dst: o.underlayIp6 });
      }
      expect(state.fdb).toHaveLength(others.length);
    }
  });

  it('pods on every pair of nodes reach each other in both families: ping, TCP and UDP, BPF and kernel nodes alike', async () => {
    const failed: string[] = [];
    for (const a of lab.pods) for (const b of lab.pods) if (a !== b) for (const addr of b.ips!) if (!(await pingOk(a, addr))) failed.push(`${a.name}->${addr}`);
    expect(failed).toEqual([]);
    const [p1, p2, p3] = ['n1', 'n2', 'n3'].map((n) => podOf(lab, n));
    for (const [client, server] of [
      [p1, p2],
      [p3, p1],
    ]) {
      const t = await tcpTransfer(client, server, 2_000_000, 5311, v6Of(server));
      expect(t.received).toBe(t.sent);
      expect(t.sent).toMatch(/^2000000 /);
      expect(await udpProbe(client, server, 9911, v6Of(server))).toBe(true);
    }
  });

  it("IPv6 pod traffic crosses the underlay in VXLAN over IPv6, between the nodes' IPv6 addresses, on port 8472", async () => {
    const [p1, p2] = ['n1', 'n2'].map((n) => podOf(lab, n));
    const seen = (await underlayCapture(lab.underlay.netns, 'n1', async () => expect(await pingOk(p1, v6Of(p2))).toBe(true), 6)).lines;
    const n1 = node(lab, 'n1');
    const n2 = node(lab, 'n2');
    expect(seen.some((l) => l.includes(`${n1.underlayIp6}.`) && l.includes(`${n2.underlayIp6}.8472`))).toBe(true);
    expect(seen.some((l) => l.includes(`${n2.underlayIp6}.`) && l.includes(`${n1.underlayIp6}.8472`))).toBe(true);
    // IPv4 pod traffic still goes in VXLAN over IPv4.
    const seen4 = await underlayCapture(lab.underlay.netns, 'n1', async () => expect(await pingOk(p1, v4Of(p2))).toBe(true));
    expect(seen4.lines.some((l) => l.includes(`${n1.underlayIp}.`) && l.includes(`${n2.underlayIp}.8472`))).toBe(true);
  });

  it('agents restarted under IPv6 ping flows (a BPF node, then the kernel node) lose no packet', async () => {
    const flows = await pingFlowsRunning(lab, v6Of);
    await bounceAgent(lab, node(lab, 'n1'), 'SIGTERM');
    await bounceAgent(lab, node(lab, 'n3'), 'SIGTERM');
    expectNoLoss(await stopPingFlows(flows, { lastFault: Date.now() }));
  });
  it("router advertisements on the underlay still reach the BPF nodes' stacks past the decap program", async () => {
    const received = async (n: LabNode) =>
      Number(/^Icmp6InRouterAdvertisements\s+(\d+)$/m.exec((await run(['cat', '/proc/net/snmp6'], { netns: n.netns })).stdout)?.[1]);
    const bpfNodes = lab.nodes.filter((n) => n.dataplane === 'bpf');
    const before = await Promise.all(bpfNodes.map(received));
    const ra =
      "from scapy.all import *; sendp(Ether(dst='33:33:00:00:00:01')/IPv6(src='fe80::77', dst='ff02::1', hlim=255)/ICMPv6ND_RA()/ICMPv6NDOptPrefixInfo(prefix='fd77::', prefixlen=64), iface='br0', count=3, verbose=0)";
    await run(['/usr/bin/python3', '-c', ra], { netns: lab.underlay.netns });
    const after = await Promise.all(bpfNodes.map(received));
    expect(after.map((a, i) => a - before[i])).toEqual(bpfNodes.map(() => 3));
  });

  it("with --ip-masq a pod reaches a host outside the cluster network over IPv6, through flannel's ip6tables masquerade", async () => {
    const n1 = node(lab, 'n1');
    const outside = lab.underlay6!.gateway; // the underlay namespace: no route back to the pods' IPv6 network
    const pod = podOf(lab, 'n1');
    expect(await pingOk(pod, outside)).toBe(false);
    await bounceAgent(lab, n1, 'SIGTERM', ['--ip-masq']);
    const saved = (await run(['ip6tables-save', '-t', 'nat'], { netns: n1.netns })).stdout;
    const [masq] = desiredRules({
      family: 6,
      network: parseCidr6(lab.ipv6Network!)!,
      subnet: parseCidr6(n1.subnet6!)!,
      ipMasq: true,
      randomFully: true,
      forwardRules: false,
    }).present;
    expect(
      saved
        .split('\n')
        .filter((l) => l.startsWith('-A FLANNEL-POSTRTG '))
        .map((l) => l.slice('-A FLANNEL-POSTRTG '.length)),
    ).toEqual(masq.rules);
    expect(saved).toContain('-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG');
    expect(await pingOk(pod, outside)).toBe(true);
    // Pod to pod keeps its source: the other pods still answer the pod's own address.
    expect(await pingOk(podOf(lab, 'n2'), v6Of(pod))).toBe(true);
  });
});

/** The node's IPv6 routes to other nodes' IPv6 subnets that go straight to a PublicIPv6 (flannel's v6 direct and host-gw routes). */
async function directRoutes6(l: LabState, n: LabNode) {
  const routes = JSON.parse((await run(['ip', '-6', '-j', 'route', 'show', 'table', 'main'], { netns: n.netns })).stdout) as {
    dst: string;
    gateway?: string;
    dev: string;
  }[];
  const others = l.nodes.filter((o) => o !== n);
  return routes
    .filter((r) => others.some((o) => o.subnet6 === r.dst && o.underlayIp6 === r.gateway))
    .map((r) => ({ dst: r.dst, gateway: r.gateway, dev: r.dev }));
}

/** What an IPv6 ping between two pods looks like on the underlay: VXLAN between the nodes, or the pods' own packets. */
async function v6OnTheWire(l: LabState, from: LabPod, to: LabPod) {
  const { lines } = await underlayCapture(l.underlay.netns, from.node, async () => expect(await pingOk(from, v6Of(to))).toBe(true), 6);
  return { vxlan: lines.some((line) => line.includes('.8472')), plain: lines.some((line) => line.includes(`${v6Of(from)} > ${v6Of(to)}`)) };
}

describe.each([
  { backend: 'host-gw', name: 't6h', underlay: '192.168.108.0/24', args: ['--backend', 'host-gw'] },
  { backend: 'vxlan with DirectRouting', name: 't6r', underlay: '192.168.109.0/24', args: ['--direct-routing'] },
])('a dual-stack lab with $backend: one BPF node and a flanneld-style node on one segment', ({ backend, name, underlay, args }) => {
  let l: LabState;
  beforeAll(async () => {
    buildBpf();
    buildTs();
    l = await labUpFresh(name, ['--nodes', '2', '--kernel-nodes', '1', '--pods-per-node', '1', '--ip-family', 'dual', '--underlay', underlay, ...args]);
  }, 240_000);

  afterAll(async () => {
    await stopAll();
    await twill(['lab', 'down', '--name', name]);
  });

  it(`each node routes the other's IPv6 subnet via its PublicIPv6, as flanneld does for ${backend}`, async () => {
    for (const n of l.nodes) {
      const other = l.nodes.find((o) => o !== n)!;
      const want = { dst: other.subnet6, gateway: other.underlayIp6, dev: n.iface };
      expect(await directRoutes6(l, n)).toEqual([want]);
    }
  });

  it("a directly routed peer gets no IPv6 VXLAN entry: the BPF node's twill_subnets6 is empty (with DirectRouting twill_peers6 keeps the peer, so VXLAN from it is still accepted), the kernel node has no IPv6 FDB entry", async () => {
    const bpf = l.nodes.find((n) => n.dataplane === 'bpf')!;
    const kernel = l.nodes.find((n) => n.dataplane === 'kernel')!;
    const doc = await mapsDoc(bpf);
    expect(doc.ipv6.subnets).toEqual([]);
    if (backend === 'host-gw') expect(doc.ipv6.peers).toEqual([]);
    else expect(doc.ipv6.peers.map((p) => p.publicIp)).toEqual([kernel.underlayIp6]);
    // host-gw makes no VXLAN device at all; DirectRouting keeps flannel-v6.1 for off-segment peers, with no entry for this one.
    const fdb = await run(['bridge', '-j', 'fdb', 'show', 'dev', 'flannel-v6.1'], { netns: kernel.netns, allowFailure: true });
    expect(fdb.code === 0, 'flannel-v6.1 exists').toBe(backend !== 'host-gw');
    if (fdb.code === 0) expect((JSON.parse(fdb.stdout || '[]') as { dst?: string }[]).filter((f) => f.dst)).toEqual([]);
  });

  it('pods reach each other in both families, and IPv6 crosses the underlay unencapsulated', async () => {
    const [a, b] = l.pods;
    for (const [from, to] of [
      [a, b],
      [b, a],
    ]) {
      for (const addr of to.ips!) expect(await pingOk(from, addr)).toBe(true);
      expect(await v6OnTheWire(l, from, to)).toEqual({ vxlan: false, plain: true });
    }
    const t = await tcpTransfer(a, b, 1_000_000, 5313, v6Of(b));
    expect(t.received).toBe(t.sent);
  });
});

describe('an IPv6-only lab', () => {
  let l6: LabState;
  beforeAll(async () => {
    buildBpf();
    buildTs();
    l6 = await labUpFresh('t6s', ['--nodes', '2', '--kernel-nodes', '1', '--pods-per-node', '1', '--ip-family', 'ipv6', '--underlay', '192.168.102.0/24']);
  }, 240_000);

  afterAll(async () => {
    await stopAll();
    await twill(['lab', 'down', '--name', 't6s']);
  });

  it('pods get only IPv6 addresses, leases carry no IPv4 subnet, and the pods reach each other', async () => {
    for (const p of l6.pods) {
      expect(p.ips).toHaveLength(1);
      expect(p.ip).toBe(p.ips![0]);
      expect(p.ip).toMatch(/^fd10:244:/);
    }
    for (const n of l6.nodes) {
      const { key, value } = await leaseRecord(l6, n);
      expect(key).toBe(`0.0.0.0-0&${n.subnet6!.replace('/', '-')}`);
      expect(value).toMatchObject({ PublicIPv6: n.underlayIp6, BackendType: 'vxlan', BackendV6Data: { VNI: 1, VtepMAC: n.vtepMac6 } });
      expect(readFileSync(n.subnetFile, 'utf8')).not.toMatch(/^FLANNEL_SUBNET=/m);
    }
    const [a, b] = l6.pods;
    expect(await pingOk(a, b.ip)).toBe(true);
    expect(await pingOk(b, a.ip)).toBe(true);
    const t = await tcpTransfer(a, b, 1_000_000, 5312);
    expect(t.received).toBe(t.sent);
  });

  it('the BPF node runs with no IPv4 identity: twill_config6 is who it is, its pod is on the IPv6 fast path, and IPv6 goes in VXLAN over IPv6', async () => {
    const bpf = l6.nodes.find((n) => n.dataplane === 'bpf')!;
    const kernel = l6.nodes.find((n) => n.dataplane === 'kernel')!;
    const [pod, other] = [podOf(l6, bpf.name), podOf(l6, kernel.name)];
    const before = await mapsDoc(bpf);
    expect(before.config).toMatchObject({ public_ip: '0.0.0.0', subnet: '0.0.0.0', subnet_len: 0 });
    expect(before.subnets).toEqual([]);
    expect(before.ipv6).toMatchObject({ enabled: true, config: { public_ip6: bpf.underlayIp6, subnet6: bpf.subnet6!.split('/')[0] } });
    expect(before.ipv6.subnets).toEqual([expect.objectContaining({ subnet: kernel.subnet6, publicIp: kernel.underlayIp6, vtepMac: kernel.vtepMac6 })]);
    expect(before.ipv6.endpoints).toEqual([expect.objectContaining({ ip: pod.ip, encapMtu: 1430 })]);
    // No IPv4 on twill0 or twill-rx, and no IPv4 route to them.
    for (const dev of ['twill0', 'twill-rx']) expect((await run(['ip', '-4', 'addr', 'show', 'dev', dev], { netns: bpf.netns })).stdout.trim()).toBe('');
    const seen = await underlayCapture(l6.underlay.netns, bpf.name, async () => expect(await pingOk(pod, other.ip)).toBe(true), 6);
    expect(seen.lines.some((l) => l.includes(`${bpf.underlayIp6}.`) && l.includes(`${kernel.underlayIp6}.8472`))).toBe(true);
    const after = await mapsDoc(bpf);
    expect(after.path!.send.fast).toBeGreaterThan(before.path!.send.fast);
    expect(after.path!.receive.fast).toBeGreaterThan(before.path!.receive.fast);
    // The peer has a counter slot of its own, listed by its PublicIPv6: the ping counts there, not as unattributed.
    const slot = after.ipv6.peers.find((p) => p.publicIp === kernel.underlayIp6)!.statsSlot;
    expect(slot).toBeGreaterThan(0);
    expect(after.ipv6.subnets[0].statsSlot).toBe(slot);
    const row = (d: MapsDocV6) => d.traffic.find((t) => t.publicIp === kernel.underlayIp6);
    expect(row(after)).toMatchObject({ subnet: kernel.subnet6, statsSlot: slot });
    expect(row(after)!.encap_packets - (row(before)?.encap_packets ?? 0)).toBeGreaterThanOrEqual(2);
    expect(row(after)!.decap_packets - (row(before)?.decap_packets ?? 0)).toBeGreaterThanOrEqual(2);
    expect(after.unattributed).toEqual(before.unattributed);
  });

  it('the IPv6-only BPF node restarted under ping flows loses no packet', async () => {
    const flows = await pingFlowsRunning(l6, v6Of);
    await bounceAgent(
      l6,
      l6.nodes.find((n) => n.dataplane === 'bpf')!,
      'SIGTERM',
    );
    expectNoLoss(await stopPingFlows(flows, { lastFault: Date.now() }));
  });
});
