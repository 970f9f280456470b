import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../controller/util/exec.js';
import { ipBatch } from '../controller/netlink/ip.js';
import { formatChoiceLine } from '../controller/dataplane/dataplane-choice.js';
import { formatIpv4, parseCidr } from '../controller/net/ipv4.js';
import { repoRoot } from '../test/support/build.js';
import { parseVxlan, readPcapFrames } from '../test/support/pcap.js';
import { startInNetns, stopAll } from '../test/support/proc.js';
import { Guest, GUEST_SHARE } from './qemu.js';

/*
 * The namespace lab's cross-node assertions on real VMs, each with its own kernel: etcd on tvm1,
 * twill's BPF datapath (`--dataplane auto`) on tvm1 and tvm2, flannel's kernel VXLAN setup
 * (`--dataplane kernel`) on tvm3, one pod per VM through the CNI plugin. Run once per kernel of
 * the image, one cluster after the other (2 cores): Debian's 6.12 from bookworm-backports, and
 * bookworm's stock 6.1, which has no tcx. What auto picks differs; the checks do not.
 */
const NETNS = 'tvm-net';
const BRIDGE = 'tvm-br0';
const RUN_DIR = '/run/twill-vm-tests';
const PIN_DIR = '/sys/fs/bpf/twill';
const nodes = [
  { name: 'tvm1', ip: '192.168.79.1', dataplane: 'auto' },
  { name: 'tvm2', ip: '192.168.79.2', dataplane: 'auto' },
  { name: 'tvm3', ip: '192.168.79.3', dataplane: 'kernel' },
] as const;
type NodeName = (typeof nodes)[number]['name'];
const ETCD = `http://${nodes[0].ip}:2379`;

/**
 * Each kernel series the image holds, and what auto must pick there: how tc programs attach,
 * where decap runs (XDP in driver mode: virtio_net has native XDP), the fast path, and every
 * capability the probe reports. docs/kernels.md's kernel table is the line printed from these, after
 * they are asserted (scripts/vm-report.mjs puts it there).
 */
const allYes = { btf: true, tcx: true, redirectPeer: true, redirectNeigh: true, checkMtu: true, conntrackKfuncs: true, ringbuf: true, xdpNative: true };
const kernels = [
  { series: '6.12', attach: 'tcx', decap: 'xdp', path: 'fast', capabilities: allYes },
  { series: '6.1', attach: 'clsact', decap: 'xdp', path: 'fast', capabilities: { ...allYes, tcx: false } },
] as const;
type Kernel = (typeof kernels)[number];

const guests = new Map<NodeName, Guest>();
const podIp = new Map<NodeName, string>();
const subnetOf = new Map<NodeName, string>();
const guest = (name: NodeName) => guests.get(name)!;
const nodeSh = (name: NodeName, args: string) => guest(name).sh(`${GUEST_SHARE}/vm-tests/node.sh ${args}`, 600_000);
const pairs = nodes.flatMap((a) => nodes.filter((b) => b !== a).map((b) => [a, b] as const));

async function removeNetwork(): Promise<void> {
  await run(['ip', 'netns', 'del', NETNS], { allowFailure: true });
}

/** The image's kernel of one series (6.1 must not match 6.12). */
function kernelOf(image: string, series: string): string {
  const all = readFileSync(path.join(image, 'kernel-versions'), 'utf8').split('\n').filter(Boolean);
  const kver = all.find((k) => k.startsWith(`${series}.`));
  if (!kver) throw new Error(`the image ${image} has no ${series} kernel (it has ${all.join(', ')}): rebuild it with vm-tests/image.sh`);
  return kver;
}

async function bootCluster(kernel: Kernel): Promise<void> {
  const image = execFileSync(path.join(repoRoot, 'vm-tests/image.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const kver = kernelOf(image, kernel.series);
  guests.clear();
  podIp.clear();
  subnetOf.clear();
  Guest.killLeftovers(RUN_DIR);
  await removeNetwork();
  rmSync(RUN_DIR, { recursive: true, force: true });
  mkdirSync(RUN_DIR, { recursive: true });
  await run(['ip', 'netns', 'add', NETNS]);
  await ipBatch(['link set lo up', `link add ${BRIDGE} type bridge`, `link set ${BRIDGE} up`], { netns: NETNS });
  const booted = await Promise.allSettled(
    nodes.map(async (n, i) => {
      const tap = `tvm-tap${i + 1}`;
      await ipBatch([`tuntap add ${tap} mode tap`, `link set ${tap} master ${BRIDGE} up`], { netns: NETNS });
      const mac = `52:54:00:79:00:0${i + 1}`;
      guests.set(
        n.name,
        await Guest.boot({ name: n.name, address: `${n.ip}/24`, mac, tap, netns: NETNS, image, kernel: kver, share: repoRoot, runDir: RUN_DIR }, 600_000),
      );
    }),
  );
  const failed = booted.filter((b): b is PromiseRejectedResult => b.status === 'rejected');
  if (failed.length) throw new Error(failed.map((f) => String(f.reason)).join('\n'));

  await nodeSh(nodes[0].name, `etcd ${nodes[0].ip}`);
  // Agents one after the other: under TCG each start is CPU-bound, and in parallel they only slow each other.
  for (const n of nodes) subnetOf.set(n.name, (await nodeSh(n.name, `agent ${ETCD} ${n.dataplane} eth0`)).match(/FLANNEL_SUBNET=(\S+)/)![1]);
  for (const n of nodes) podIp.set(n.name, (await nodeSh(n.name, 'pod pod1')).trim());
}

async function stopCluster(): Promise<void> {
  await stopAll();
  await Promise.all([...guests.values()].map((g) => g.stop()));
  await removeNetwork();
}

/** A twill command's JSON: stderr (warnings) kept apart, shown only if the command fails. */
const cliJson = async (name: NodeName, args: string) =>
  JSON.parse(await guest(name).sh(`${GUEST_SHARE}/bin/twill ${args} 2>/run/twill-cli.err || { cat /run/twill-cli.err; exit 1; }`));
const statusOf = (name: NodeName) => cliJson(name, `status --pin-dir ${PIN_DIR} --subnet-file /run/flannel/subnet.env --json`);

describe.each(kernels)('3 QEMU VMs on Linux $series: twill BPF (auto) on tvm1 and tvm2, flannel kernel VXLAN on tvm3', (kernel) => {
  beforeAll(() => bootCluster(kernel), 1_800_000);
  afterAll(stopCluster, 120_000);

  it(`each VM runs its own ${kernel.series} kernel and the datapath auto picked (${kernel.attach})`, async () => {
    for (const n of nodes) {
      expect(await guest(n.name).sh('uname -r')).toMatch(new RegExp(`^${kernel.series.replace('.', '\\.')}\\.`));
      // Filtered here: bookworm's iproute2 prints an empty object per other link for `-j link show type vxlan`.
      const allVxlan = (JSON.parse(await guest(n.name).sh('ip -d -j link show')) as { master?: string; linkinfo?: { info_kind?: string } }[]).filter(
        (l) => l.linkinfo?.info_kind === 'vxlan',
      );
      // The tunnels; a bridge's port is the fast path's headroom port (controller/dataplane/headroom.ts), never up.
      const vxlan = allVxlan.filter((l) => !l.master);
      const links = await guest(n.name).exec(`ls ${PIN_DIR}/links`);
      if (n.dataplane === 'auto') {
        // Only twill's receive-only tunnel device: flow-based, no FDB, no routes. If auto fell
        // back to kernel VXLAN instead, the failure carries the agent's reason.
        const fallback = vxlan.some((l) => (l as { ifname?: string }).ifname === 'flannel.1')
          ? await guest(n.name).sh('grep -m3 -iE "unavailable|error" /run/twill-vm/agent.log || true')
          : '';
        expect(vxlan, fallback).toEqual([
          expect.objectContaining({ ifname: 'twill-rx', linkinfo: expect.objectContaining({ info_data: expect.objectContaining({ external: true }) }) }),
        ]);
        expect(allVxlan.filter((l) => l.master)).toEqual([expect.objectContaining({ ifname: 'twill-hr', master: 'cni0', operstate: 'DOWN' })]);
        const status = await statusOf(n.name);
        expect(status.dataplaneChoice).toMatchObject({ requested: 'auto', dataplane: 'bpf', attach: kernel.attach });
        expect(status.probe.capabilities.tcx.present).toBe(kernel.attach === 'tcx');
        expect(status.attach.encap.mode).toBe(kernel.attach);
        if (kernel.attach === 'tcx') expect(links.output.split(/\s+/)).toEqual(expect.arrayContaining(['decap', 'encap', 'pods']));
        else {
          // clsact filters live in the qdisc: nothing to pin, tc lists them.
          expect(await guest(n.name).sh('tc filter show dev twill0 egress')).toMatch(/twill_encap/);
          expect(await guest(n.name).sh('tc filter show dev eth0 ingress')).toMatch(/twill_decap_tc/);
        }
      } else {
        expect(vxlan[0]).toMatchObject({
          ifname: 'flannel.1',
          linkinfo: { info_kind: 'vxlan', info_data: { id: 1, port: 8472, learning: false, local: n.ip } },
        });
        expect(links.code).not.toBe(0);
      }
    }
    expect(new Set(subnetOf.values()).size).toBe(nodes.length);
  });

  it('pods on every VM reach pods on every other VM', async () => {
    const failures: string[] = [];
    for (const [a, b] of pairs) {
      const r = await guest(a.name).exec(`ip netns exec pod1 ping -c 3 -W 5 ${podIp.get(b.name)}`, 60_000);
      if (r.code !== 0) failures.push(`${a.name} pod -> ${b.name} pod (${a.dataplane} -> ${b.dataplane}): ${r.output.trim()}`);
    }
    expect(failures).toEqual([]);
  });

  it('carries pod traffic between the VMs as VXLAN on the underlay bridge', async () => {
    const pcap = path.join(RUN_DIR, 'underlay.pcap');
    const capture = startInNetns(NETNS, ['tcpdump', '-U', '-n', '-i', BRIDGE, '-w', pcap, 'udp', 'port', '8472']);
    await capture.waitFor(/listening on/, 30_000);
    const pings: Awaited<ReturnType<ReturnType<typeof guest>['exec']>>[] = [];
    for (const [a, b] of pairs) pings.push(await guest(a.name).exec(`ip netns exec pod1 ping -c 2 -W 5 ${podIp.get(b.name)}`, 60_000));
    capture.kill('SIGINT');
    await capture.exited;
    const frames = readPcapFrames(pcap)
      .map(parseVxlan)
      .filter((f) => f !== undefined);
    pairs.forEach(([a, b], i) => {
      const request = frames.find((f) => f.innerSrc === podIp.get(a.name) && f.innerDst === podIp.get(b.name) && f.innerProto === 1);
      expect(request, `${a.name} -> ${b.name}, ping: ${pings[i].output}`).toMatchObject({
        outerSrc: a.ip,
        outerDst: b.ip,
        udpDstPort: 8472,
        vni: 1,
        vxlanFlags: 0x08,
      });
    });
  });

  it('shows the twill maps with bpftool inside a BPF VM', async () => {
    type Entry = { key: unknown; value: unknown; formatted?: { key: Record<string, number[]>; value: Record<string, number[]> } };
    const dump = async (map: string) => JSON.parse(await guest('tvm1').sh(`bpftool -j map dump pinned ${PIN_DIR}/${map}`)) as Entry[];
    const dotted = (bytes: number[]) => bytes.join('.');
    const subnets = (await dump('twill_subnets')).map((e) => ({ subnet: dotted(e.formatted!.key.subnet), publicIp: dotted(e.formatted!.value.public_ip) }));
    const peers = (await dump('twill_peers')).map((e) => ({ publicIp: dotted(e.formatted!.key.public_ip), subnet: dotted(e.formatted!.value.subnet) }));
    const remote = nodes.filter((n) => n.name !== 'tvm1').map((n) => ({ subnet: formatIpv4(parseCidr(subnetOf.get(n.name)!)!.ip), publicIp: n.ip }));
    expect(subnets).toEqual(expect.arrayContaining(remote));
    expect(subnets).toHaveLength(remote.length);
    expect(peers).toEqual(expect.arrayContaining(remote));
    // Per-CPU counters: after the pings above, both programs have counted packets on tvm1.
    type StatsEntry = { formatted: { values: { cpu: number; value: Record<string, number> }[] } };
    const stats = JSON.parse(await guest('tvm1').sh(`bpftool -j map dump pinned ${PIN_DIR}/twill_stats`)) as StatsEntry[];
    const total = (field: string) => stats.flatMap((e) => e.formatted.values).reduce((sum, v) => sum + v.value[field], 0);
    expect(total('encap_packets')).toBeGreaterThan(0);
    expect(total('decap_packets')).toBeGreaterThan(0);
  });

  it(`carries the pods' traffic on the fast path, with conntrack checks, decap in ${kernel.decap} (native on virtio_net), and says why`, async () => {
    type PathEntry = { formatted: { key: number; values: { cpu: number; value: Record<string, number> }[] } };
    const paths = JSON.parse(await guest('tvm1').sh(`bpftool -j map dump pinned ${PIN_DIR}/twill_path_stats`)) as PathEntry[];
    const fast = (dir: number) =>
      paths
        .filter((e) => e.formatted.key === dir)
        .flatMap((e) => e.formatted.values)
        .reduce((sum, v) => sum + v.value.fast, 0);
    expect({ send: fast(0) > 0, receive: fast(1) > 0 }).toEqual({ send: true, receive: true });
    const status = await statusOf('tvm1');
    expect(status.fastPath).toMatchObject({ enabled: true, conntrack: true });
    expect(status.attach.decap).toMatchObject({ requested: 'auto', hook: kernel.decap, reason: expect.any(String) });
    console.log(`VM tier: decap on virtio_net under QEMU: ${status.attach.decap.hook} (${status.attach.decap.reason})`);
    if (kernel.decap === 'xdp') {
      // Native (driver-mode) XDP, as the kernel reports it, not a generic-mode fallback.
      expect(status.attach.decap.mode).toMatch(/^xdp-(link|native)$/);
      for (const n of nodes.filter((x) => x.dataplane === 'auto')) {
        const net = await guest(n.name).sh('bpftool -j net show dev eth0');
        const xdp = (JSON.parse(net) as { xdp?: { mode: string }[] }[]).flatMap((d) => d.xdp ?? []);
        expect(
          xdp.map((x) => x.mode),
          `${n.name}: ${net}`,
        ).toEqual(['driver']);
      }
    }
    // Native XDP probed on tvm3, whose eth0 runs no XDP.
    const probe = await cliJson('tvm3', 'probe --iface eth0 --json');
    const capabilities = { ...status.probe.capabilities, xdpNative: probe.capabilities.xdpNative };
    const present = Object.fromEntries(Object.entries(capabilities as Record<string, { present?: boolean }>).map(([k, c]) => [k, c.present]));
    expect(present).toEqual(kernel.capabilities);
    const actual = { attach: status.attach.encap.mode, decap: status.attach.decap.hook, fastPath: status.fastPath.enabled };
    expect(actual).toEqual({ attach: kernel.attach, decap: kernel.decap, fastPath: kernel.path === 'fast' });
    // Printed only once every field of it is asserted above: docs/kernels.md's kernel table is this line.
    console.log(`VM tier kernel matrix: ${formatChoiceLine({ ...status.probe, capabilities }, status.dataplaneChoice, actual)}`);
    // The agent says why, in its log as in its status.
    expect(await guest('tvm1').sh('grep -c "kernel probed: dataplane chosen" /run/twill-vm/agent.log')).toMatch(/^1\s*$/);
    console.log(`VM tier kernel ${status.probe.kernel}: auto's reasons: ${JSON.stringify(status.dataplaneChoice.reasons)}`);
  });
});
