import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BpfMap } from '../../controller/bpf/libbpf.js';
import { attachDataplane, detachDataplane } from '../../controller/dataplane/attach.js';
import { config6For, ensureOverlay6, VXLAN6_OVERHEAD } from '../../controller/dataplane/ipv6.js';
import { syncPodLinks } from '../../controller/dataplane/pod-links.js';
import { parseDataplaneSpec } from '../../controller/dataplane/spec.js';
import { run } from '../../controller/util/exec.js';
import { formatIpv6, struct } from '../../maps/codec.js';
import { mapSpecs, PATH_RECEIVE, PATH_SEND, type PathStatsFields, type StatsFields } from '../../maps/layout.js';
import { PerCpuArray, TypedMap } from '../../maps/typed-map.js';
import { buildBpf, repoRoot } from '../support/build.js';
import { readPcapFrames } from '../support/pcap.js';
import { startInNetns, stopAll } from '../support/proc.js';
import { enterNetns } from '../support/setns.js';
import { tcpTransfer } from '../support/traffic.js';

/*
 * IPv6 through twill: two nodes (t6b-n1, t6b-n2) on a veth underlay with IPv6 addresses, one pod
 * each behind a veth, the real programs attached by attachDataplane, the IPv6 maps written with
 * the typed map API as the agent would. Then node 2 is turned into a flannel node (a kernel
 * flannel-v6.1 device programmed as flanneld programs it) to prove the two interoperate.
 * Names t6b-*, addresses in fd76:b6::/32 only. The IPv4 identity the attach requires is never
 * on the wire.
 */
const VNI = 1;
const PORT = 8472;
const NETWORK6 = 'fd76:b6:1::/48';
// Node 1's PublicIPv6 is on its loopback, not the underlay (flanneld --public-ipv6 may name any
// address): the outer source must be the lease's address, not the route's preferred source.
const nodes = [1, 2].map((i) => ({
  netns: `t6b-n${i}`,
  pinDir: `/sys/fs/bpf/t6b-n${i}`,
  underlayIp6: i === 1 ? 'fd76:b6::101' : `fd76:b6::${i}`,
  linkIp6: `fd76:b6::${i}`,
  subnet6: `fd76:b6:1:${i}::/64`,
  vtepMac6: `0a:76:b6:00:00:0${i}`,
  pod: { netns: `t6b-p${i}`, ip: `fd76:b6:1:${i}::10`, gateway: `fd76:b6:1:${i}::1` },
  v4: { publicIp: `198.18.76.${i}`, vtepMac: `0a:76:b6:04:00:0${i}`, subnet: `10.76.${i}.0/24` },
}));
const [n1, n2] = nodes;
const namespaces = [...nodes.map((n) => n.netns), ...nodes.map((n) => n.pod.netns)];
const craft = path.join(repoRoot, 'test/support/craft6.py');
let tmp: string;

const sh = (netns: string, argv: string[]) => run(argv, { netns });
async function inNetns<T>(netns: string, fn: () => Promise<T>): Promise<T> {
  const leave = enterNetns(`/run/netns/${netns}`);
  try {
    return await fn();
  } finally {
    leave();
  }
}

function openMaps(pinDir: string) {
  const pin = (name: keyof typeof mapSpecs) => BpfMap.fromPin(`${pinDir}/${name}`);
  return {
    config6: new TypedMap(pin('twill_config6'), mapSpecs.twill_config6.key, mapSpecs.twill_config6.value),
    subnets6: new TypedMap(pin('twill_subnets6'), mapSpecs.twill_subnets6.key, mapSpecs.twill_subnets6.value),
    peers6: new TypedMap(pin('twill_peers6'), mapSpecs.twill_peers6.key, mapSpecs.twill_peers6.value),
    endpoints6: new TypedMap(pin('twill_endpoints6'), mapSpecs.twill_endpoints6.key, mapSpecs.twill_endpoints6.value),
    stats: new PerCpuArray(pin('twill_stats'), mapSpecs.twill_stats.value),
    pathStats: new PerCpuArray(pin('twill_path_stats'), mapSpecs.twill_path_stats.value),
  };
}
type Maps = ReturnType<typeof openMaps>;
const opened: Maps[] = [];
function closeMaps(m: Maps): void {
  for (const t of [m.config6, m.subnets6, m.peers6, m.endpoints6, m.stats, m.pathStats]) t.map.close();
}
const stats = (n: (typeof nodes)[number]): StatsFields => {
  const m = openMaps(n.pinDir);
  try {
    return m.stats.sum();
  } finally {
    closeMaps(m);
  }
};
const pathStats = (n: (typeof nodes)[number], direction: number): PathStatsFields => {
  const m = openMaps(n.pinDir);
  try {
    return m.pathStats.sum(direction);
  } finally {
    closeMaps(m);
  }
};
const delta = <T extends Record<string, bigint>>(before: T, after: T) =>
  Object.fromEntries(
    Object.keys(after)
      .map((k) => [k, Number(after[k] - before[k])])
      .filter(([, v]) => v !== 0),
  );

/** The fast path for the node's pod (its veth's program and its twill_endpoints6 entry), or not. */
async function podFastPath(n: (typeof nodes)[number], on: boolean): Promise<void> {
  const link = (ns: string, dev: string) =>
    sh(ns, ['ip', '-j', 'link', 'show', dev]).then((r) => JSON.parse(r.stdout)[0] as { ifindex: number; address: string });
  const veth = await link(n.netns, 'pod0');
  const pod = await link(n.pod.netns, 'eth0');
  const m = openMaps(n.pinDir);
  try {
    if (on)
      m.endpoints6.put(
        { ip6: n.pod.ip },
        { ifindex: veth.ifindex, mac: pod.address, gateway_mac: veth.address, mtu: 1500, encap_mtu: 1500 - VXLAN6_OVERHEAD, flags: 0 },
      );
    else m.endpoints6.delete({ ip6: n.pod.ip });
  } finally {
    closeMaps(m);
  }
  await inNetns(n.netns, async () => syncPodLinks(n.pinDir, on ? [{ ifname: 'pod0', ifindex: veth.ifindex }] : []));
}

async function attachNode(n: (typeof nodes)[number]): Promise<void> {
  await inNetns(n.netns, async () => {
    const spec = parseDataplaneSpec({
      pinDir: n.pinDir,
      underlayIface: 'und0',
      publicIp: n.v4.publicIp,
      vtepMac: n.v4.vtepMac,
      subnet: n.v4.subnet,
      network: '10.76.0.0/16',
      vni: VNI,
      port: PORT,
      decapHook: 'tc',
    });
    await attachDataplane({ spec });
    await ensureOverlay6({ overlayDevice: 'twill0', tunnelDevice: 'twill-rx', subnet6: n.subnet6, network6: NETWORK6, underlayMtu: 1500 });
    const maps = openMaps(n.pinDir);
    opened.push(maps);
    maps.config6.put(
      { index: 0 },
      config6For({ publicIp6: n.underlayIp6, vtepMac6: n.vtepMac6, subnet6: n.subnet6, network6: NETWORK6, tunnelDevice: 'twill-rx' }),
    );
    for (const peer of nodes.filter((p) => p !== n)) {
      const [base, len] = peer.subnet6.split('/');
      maps.subnets6.put({ subnet6: base }, { public_ip6: peer.underlayIp6, vtep_mac6: peer.vtepMac6, flags: 0, stats_slot: 0 });
      maps.peers6.put({ public_ip6: peer.underlayIp6 }, { subnet6: base, vtep_mac6: peer.vtepMac6, subnet6_len: Number(len), flags: 0, stats_slot: 0 });
    }
  });
}

async function cleanup(): Promise<void> {
  for (const m of opened.splice(0)) closeMaps(m);
  for (const n of nodes) {
    if (existsSync(`/run/netns/${n.netns}`)) await inNetns(n.netns, () => detachDataplane(n.pinDir)).catch(() => undefined);
    rmSync(n.pinDir, { recursive: true, force: true });
  }
  for (const ns of namespaces) await run(['ip', 'netns', 'del', ns], { allowFailure: true });
}

beforeAll(async () => {
  buildBpf();
  await cleanup(); // what a killed run left
  tmp = mkdtempSync(path.join(os.tmpdir(), 't6b-'));
  for (const ns of namespaces) {
    await run(['ip', 'netns', 'add', ns]);
    // No duplicate address detection: addresses are usable at once, and the test knows they are unique.
    await run(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
    await sh(ns, ['ip', 'link', 'set', 'lo', 'up']);
  }
  await run(['ip', 'link', 'add', 'und0', 'netns', n1.netns, 'type', 'veth', 'peer', 'name', 'und0', 'netns', n2.netns]);
  for (const n of nodes) {
    await sh(n.netns, ['ip', 'addr', 'add', `${n.linkIp6}/64`, 'dev', 'und0', 'nodad']);
    await sh(n.netns, ['ip', 'link', 'set', 'und0', 'up']);
    // Outer checksums computed in software before the veth, as for a NIC without tunnel offloads,
    // so that the capture shows every segment as the wire carries it.
    await sh(n.netns, ['ethtool', '-K', 'und0', 'tx', 'off']);
    await run(['ip', 'link', 'add', 'eth0', 'netns', n.pod.netns, 'type', 'veth', 'peer', 'name', 'pod0', 'netns', n.netns]);
    await sh(n.netns, ['ip', 'addr', 'add', `${n.pod.gateway}/64`, 'dev', 'pod0', 'nodad']);
    await sh(n.netns, ['ip', 'link', 'set', 'pod0', 'up']);
    await sh(n.pod.netns, ['ip', 'addr', 'add', `${n.pod.ip}/64`, 'dev', 'eth0', 'nodad']);
    await sh(n.pod.netns, ['ip', 'link', 'set', 'eth0', 'up']);
    await sh(n.pod.netns, ['ip', '-6', 'route', 'add', 'default', 'via', n.pod.gateway]);
  }
  for (const n of nodes.filter((x) => x.underlayIp6 !== x.linkIp6)) {
    await sh(n.netns, ['ip', 'addr', 'add', `${n.underlayIp6}/128`, 'dev', 'lo']);
    for (const o of nodes.filter((x) => x !== n)) await sh(o.netns, ['ip', '-6', 'route', 'add', `${n.underlayIp6}/128`, 'via', n.linkIp6]);
  }
  for (const n of nodes) await attachNode(n);
}, 120_000);

afterAll(async () => {
  await stopAll();
  await cleanup();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** twill-rx's packet counters on node `n`: what the vxlan driver sent (tx) and what its socket decapped (rx). */
const twillRx = async (n: (typeof nodes)[number]) =>
  JSON.parse((await sh(n.netns, ['ip', '-j', '-s', 'link', 'show', 'twill-rx'])).stdout)[0].stats64 as { tx: { packets: number }; rx: { packets: number } };

const ping6 = (from: string, to: string, extra: string[] = []) =>
  run(['ping', '-6', '-c', '3', '-i', '0.2', '-W', '2', ...extra, to], { netns: from, allowFailure: true });

/** Captures on `netns`'s `iface` (by default IPv6 VXLAN on the underlay) while `during` runs; returns the frames. */
async function capture(netns: string, during: () => Promise<void>, iface = 'und0', filter = 'ip6 and udp port 8472'): Promise<Buffer[]> {
  const file = path.join(tmp, `${netns}-${iface}-${Date.now()}.pcap`);
  // Immediate mode: a few packets would otherwise wait in a capture block that the stop discards.
  const dump = startInNetns(netns, ['tcpdump', '-i', iface, '--immediate-mode', '-U', '-s', '0', '-w', file, filter]);
  await dump.waitFor(/listening on/);
  try {
    await during();
  } finally {
    await new Promise((r) => setTimeout(r, 200));
    dump.kill('SIGINT');
    await dump.exited;
  }
  return readPcapFrames(file);
}

interface Vxlan6 {
  src: string;
  dst: string;
  dport: number;
  checksum: number;
  checksumValid: boolean;
  vni: number;
  innerDstMac: string;
  innerSrcMac: string;
}

const addr6 = struct('addr6', { a: 'ipv6' });
const canon = (a: string) => addr6.decode(addr6.encode({ a })).a;
const mac = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** Outer IPv6 + UDP + VXLAN, with the UDP checksum verified over the IPv6 pseudo-header (RFC 8200 8.1). */
function parseVxlan6(f: Buffer): Vxlan6 | undefined {
  if (f.length < 14 + 40 + 8 + 8 + 14 || f.readUInt16BE(12) !== 0x86dd || f[14 + 6] !== 17) return undefined;
  const ip6 = f.subarray(14);
  const udp = ip6.subarray(40, 40 + ip6.readUInt16BE(4));
  let sum = 0;
  const add = (b: Buffer) => {
    for (let i = 0; i < b.length; i += 2) sum += (b[i] << 8) | (b[i + 1] ?? 0);
  };
  add(ip6.subarray(8, 40));
  sum += udp.length + 17;
  add(udp);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const vx = udp.subarray(8);
  return {
    src: formatIpv6(ip6.subarray(8, 24)),
    dst: formatIpv6(ip6.subarray(24, 40)),
    dport: udp.readUInt16BE(2),
    checksum: udp.readUInt16BE(6),
    checksumValid: sum === 0xffff,
    vni: vx.readUInt32BE(4) >>> 8,
    innerDstMac: mac(vx.subarray(8, 14)),
    innerSrcMac: mac(vx.subarray(14, 20)),
  };
}

describe('IPv6 through twill0 and twill-rx (the stack path)', () => {
  it('leaves neighbour discovery alone: the nodes reach each other and the pods their gateways', async () => {
    expect((await ping6(n1.netns, n2.underlayIp6)).stdout).toMatch(/3 received/);
    for (const n of nodes) expect((await ping6(n.pod.netns, n.pod.gateway)).stdout).toMatch(/3 received/);
  });

  it('carries ping and TCP between the pods as IPv6 VXLAN with our VNI and valid, non-zero UDP checksums', async () => {
    const before = [stats(n1), stats(n2)];
    let transfer = { sent: '', received: '' };
    let handedToVxlan: Buffer[] = [];
    const frames = await capture(n2.netns, async () => {
      // What twill_encap hands the vxlan driver, seen as it enters twill-rx.
      handedToVxlan = await capture(
        n1.netns,
        async () => {
          expect((await ping6(n1.pod.netns, n2.pod.ip)).stdout).toMatch(/3 received/);
          transfer = await tcpTransfer(n1.pod, n2.pod, 1 << 20);
        },
        'twill-rx',
        'ip6 and tcp',
      );
    });
    expect(transfer.sent).toMatch(/^1048576 [0-9a-f]{64}$/);
    expect(transfer.received).toBe(transfer.sent);
    // GSO packets went through the encap whole (larger than any frame the wire can carry), so the
    // checksums below are those of segments the kernel cut after encapsulation.
    expect(handedToVxlan.some((f) => f.length > 1500)).toBe(true);

    const toN2 = frames.map(parseVxlan6).filter((v): v is Vxlan6 => !!v && v.dst === canon(n2.underlayIp6));
    expect(toN2.length).toBeGreaterThan(100); // 1 MiB of TCP: many segments, from GSO packets
    for (const v of toN2) {
      expect(v).toMatchObject({ src: canon(n1.underlayIp6), dport: PORT, vni: VNI, innerDstMac: n2.vtepMac6, innerSrcMac: n1.vtepMac6, checksumValid: true });
      expect(v.checksum).not.toBe(0);
    }
    const d1 = delta(before[0], stats(n1));
    const d2 = delta(before[1], stats(n2));
    expect(d1.encap_packets).toBeGreaterThanOrEqual(toN2.length);
    expect(d2.decap_packets).toBeGreaterThan(0);
    for (const d of [d1, d2]) expect(Object.keys(d).filter((k) => k.startsWith('drop_'))).toEqual([]);
  });

  it('answers a packet too big for the IPv6 underlay with ICMPv6 Packet Too Big', async () => {
    // 1500 bytes fit the pod's link but not the route to twill0 (1500 less 70 of IPv6 VXLAN). The
    // TCP transfer above taught the pod that path MTU already: it forgets it first.
    const big = () => run(['ping', '-6', '-c', '1', '-W', '2', '-M', 'do', '-s', '1452', n2.pod.ip], { netns: n1.pod.netns, allowFailure: true });
    await sh(n1.pod.netns, ['ip', '-6', 'route', 'flush', 'cache']);
    const first = await big();
    expect(first.stdout + first.stderr).toMatch(/From fd76:b6:1:1::1 .*[Pp]acket too big.*mtu\s*=\s*1430/);
    const second = await big();
    expect(second.stdout + second.stderr).toMatch(/message too long, mtu:? ?1430/);
  });

  it('drops and counts IPv6 VXLAN for us that is not from a peer, for another VNI, malformed, or not for our subnet', async () => {
    const und0Mac = JSON.parse((await sh(n1.netns, ['ip', '-j', 'link', 'show', 'und0'])).stdout)[0].address as string;
    const send = (kind: string) =>
      sh(n2.netns, ['/usr/bin/python3', craft, kind, 'und0', und0Mac, n2.underlayIp6, n1.underlayIp6, n1.pod.ip, String(VNI), String(PORT), n1.vtepMac6]);
    const before = stats(n1);
    for (const kind of ['unknown-source', 'bad-vni', 'inner-dst-elsewhere', 'truncated', 'inner-ipv4']) await send(kind);
    expect(delta(before, stats(n1))).toEqual({ drop_unknown_source: 1, drop_bad_vni: 1, drop_inner_dst: 1, drop_malformed: 1, drop_inner_not_ipv6: 1 });
    // The control case: well-formed, from the peer, for our pod, is decapped.
    const mid = stats(n1);
    await send('good');
    await new Promise((r) => setTimeout(r, 200));
    expect(delta(mid, stats(n1))).toMatchObject({ decap_packets: 1 });
  });

  it('judges fragmented IPv6 VXLAN once the stack has reassembled it: from the peer decapped, from anyone else dropped and counted', async () => {
    const und0Mac = JSON.parse((await sh(n1.netns, ['ip', '-j', 'link', 'show', 'und0'])).stdout)[0].address as string;
    const send = (kind: string) =>
      sh(n2.netns, ['/usr/bin/python3', craft, kind, 'und0', und0Mac, n2.underlayIp6, n1.underlayIp6, n1.pod.ip, String(VNI), String(PORT), n1.vtepMac6]);
    const before = stats(n1);
    const receivedBefore = (await twillRx(n1)).rx.packets;
    await send('fragment');
    await send('fragment-unknown-source');
    await new Promise((r) => setTimeout(r, 200));
    expect(delta(before, stats(n1))).toMatchObject({ decap_packets: 1, drop_unknown_source: 1 });
    // Reassembled, they came through twill-rx's socket, which twill_decap_tc leaves fragments to.
    expect((await twillRx(n1)).rx.packets - receivedBefore).toBeGreaterThanOrEqual(1);
  });
});

describe('the IPv6 fast path (pod veth to IPv6 VXLAN, twill-rx into the pod)', () => {
  beforeAll(async () => {
    for (const n of nodes) await podFastPath(n, true);
  });

  it("carries ping and TCP between the pods past both nodes' stacks, with valid checksums on the wire", async () => {
    const before = nodes.map((n) => [pathStats(n, PATH_SEND), pathStats(n, PATH_RECEIVE), stats(n)] as const);
    let transfer = { sent: '', received: '' };
    const frames = await capture(n2.netns, async () => {
      expect((await ping6(n1.pod.netns, n2.pod.ip)).stdout).toMatch(/3 received/);
      transfer = await tcpTransfer(n1.pod, n2.pod, 1 << 20);
    });
    expect(transfer.received).toBe(transfer.sent);
    for (const [i, n] of nodes.entries()) {
      const [send, receive, st] = before[i];
      expect(delta(send, pathStats(n, PATH_SEND)).fast, `${n.netns} send`).toBeGreaterThan(0);
      expect(delta(receive, pathStats(n, PATH_RECEIVE)).fast, `${n.netns} receive`).toBeGreaterThan(0);
      expect(Object.keys(delta(st, stats(n))).filter((k) => k.startsWith('drop_'))).toEqual([]);
    }
    const toN2 = frames.map(parseVxlan6).filter((v): v is Vxlan6 => !!v && v.dst === canon(n2.underlayIp6));
    expect(toN2.length).toBeGreaterThan(100);
    for (const v of toN2)
      expect(v).toMatchObject({ src: canon(n1.underlayIp6), vni: VNI, innerDstMac: n2.vtepMac6, innerSrcMac: n1.vtepMac6, checksumValid: true });
  });

  it('writes single packets itself (ping, UDP) with a valid outer UDP checksum, leaves only GSO packets to twill-rx, and decaps all of it itself', async () => {
    const twillRxSent = async () => (await twillRx(n1)).tx.packets;
    const sentBefore = await twillRxSent();
    const receivedBefore = (await twillRx(n2)).rx.packets;
    const frames = await capture(n2.netns, async () => {
      expect((await ping6(n1.pod.netns, n2.pod.ip)).stdout).toMatch(/3 received/);
      const send = `import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\nfor i in range(5): s.sendto(b"small-%d" % i, ("${n2.pod.ip}", 9997))`;
      await sh(n1.pod.netns, ['/usr/bin/python3', '-c', send]);
    });
    // Nothing of the pings and datagrams went through the vxlan driver: the program wrote them.
    expect((await twillRxSent()) - sentBefore).toBe(0);
    const toN2 = frames.filter((f) => parseVxlan6(f)?.dst === canon(n2.underlayIp6));
    // The inner transport, after outer IPv6 + UDP + VXLAN + inner Ethernet and the inner IPv6 header's first 6 bytes.
    const innerNext = (f: Buffer) => f[14 + 40 + 8 + 8 + 14 + 6];
    expect(toN2.filter((f) => innerNext(f) === 17).length).toBe(5);
    expect(toN2.filter((f) => innerNext(f) === 58).length).toBeGreaterThanOrEqual(3);
    for (const f of toN2) {
      const v = parseVxlan6(f)!;
      expect(v).toMatchObject({ src: canon(n1.underlayIp6), dport: PORT, vni: VNI, innerDstMac: n2.vtepMac6, innerSrcMac: n1.vtepMac6, checksumValid: true });
      expect(v.checksum).not.toBe(0);
    }
    // The check above can fail: one payload bit flipped, and the same frame's checksum is wrong.
    const flipped = Buffer.from(toN2[0]);
    flipped[flipped.length - 1] ^= 1;
    expect(parseVxlan6(flipped)?.checksumValid).toBe(false);
    // A TCP transfer's GSO packets are what still goes through twill-rx.
    const transfer = await tcpTransfer(n1.pod, n2.pod, 1 << 20);
    expect(transfer.received).toBe(transfer.sent);
    expect((await twillRxSent()) - sentBefore).toBeGreaterThan(0);
    // n2 decapped all of it in twill_decap_tc: nothing came out of twill-rx's socket.
    expect((await twillRx(n2)).rx.packets - receivedBefore).toBe(0);
  });

  it("leaves the pods' neighbour discovery to the stack", async () => {
    for (const n of nodes) {
      await sh(n.pod.netns, ['ip', '-6', 'neigh', 'flush', 'dev', 'eth0']);
      expect((await ping6(n.pod.netns, n.pod.gateway)).stdout).toMatch(/3 received/);
    }
  });
});

describe('with a flannel node (kernel flannel-v6.1) on the other side', () => {
  beforeAll(async () => {
    await inNetns(n2.netns, () => detachDataplane(n2.pinDir));
    const ns = n2.netns;
    const [peerBase] = n1.subnet6.split('/');
    const [ownBase] = n2.subnet6.split('/');
    // As flanneld's vxlan backend programs its IPv6 device and one remote lease.
    await sh(ns, [
      'ip',
      'link',
      'add',
      'flannel-v6.1',
      'type',
      'vxlan',
      'id',
      String(VNI),
      'local',
      n2.underlayIp6,
      'dev',
      'und0',
      'nolearning',
      'dstport',
      String(PORT),
    ]);
    await sh(ns, ['ip', 'link', 'set', 'flannel-v6.1', 'address', n2.vtepMac6]);
    await sh(ns, ['ip', '-6', 'addr', 'add', `${ownBase}/128`, 'dev', 'flannel-v6.1', 'nodad']);
    await sh(ns, ['ip', 'link', 'set', 'flannel-v6.1', 'up']);
    await sh(ns, ['ip', '-6', 'neigh', 'replace', peerBase, 'lladdr', n1.vtepMac6, 'dev', 'flannel-v6.1', 'nud', 'permanent']);
    await sh(ns, ['bridge', 'fdb', 'append', n1.vtepMac6, 'dev', 'flannel-v6.1', 'dst', n1.underlayIp6]);
    await sh(ns, ['ip', '-6', 'route', 'replace', n1.subnet6, 'via', peerBase, 'dev', 'flannel-v6.1', 'onlink']);
    await run(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
  });

  it.each([
    ['the fast path', true],
    ['the stack path', false],
  ])('interoperates in both directions through %s: ping and TCP between the pods', async (_, fast) => {
    await podFastPath(n1, fast);
    const before = stats(n1);
    const beforePath = [pathStats(n1, PATH_SEND), pathStats(n1, PATH_RECEIVE)];
    let transfers: { sent: string; received: string }[] = [];
    const frames = await capture(n2.netns, async () => {
      expect((await ping6(n1.pod.netns, n2.pod.ip)).stdout).toMatch(/3 received/);
      expect((await ping6(n2.pod.netns, n1.pod.ip)).stdout).toMatch(/3 received/);
      transfers = [await tcpTransfer(n1.pod, n2.pod, 1 << 20), await tcpTransfer(n2.pod, n1.pod, 1 << 20, 5302)];
    });
    for (const t of transfers) {
      expect(t.sent).toMatch(/^1048576 /);
      expect(t.received).toBe(t.sent);
    }
    const fastCounted = [delta(beforePath[0], pathStats(n1, PATH_SEND)).fast ?? 0, delta(beforePath[1], pathStats(n1, PATH_RECEIVE)).fast ?? 0];
    expect(fastCounted.map((c) => c > 0)).toEqual([fast, fast]);
    const d = delta(before, stats(n1));
    expect(d.encap_packets).toBeGreaterThan(0);
    expect(d.decap_packets).toBeGreaterThan(0);
    expect(Object.keys(d).filter((k) => k.startsWith('drop_'))).toEqual([]);
    // What the kernel sent twill is what twill sends the kernel: IPv6 VXLAN, VNI 1, checksummed.
    const fromN2 = frames.map(parseVxlan6).filter((v): v is Vxlan6 => !!v && v.src === canon(n2.underlayIp6));
    expect(fromN2.length).toBeGreaterThan(0);
    for (const v of fromN2)
      expect(v).toMatchObject({ dst: canon(n1.underlayIp6), vni: VNI, innerDstMac: n1.vtepMac6, innerSrcMac: n2.vtepMac6, checksumValid: true });
  });
});
