import { spawn } from 'node:child_process';
import { stopLabEtcd } from '../lab/etcd-cluster.js';
import { labDown, labUp } from '../lab/lab.js';
import { stopNodeDaemon } from '../lab/node-daemons.js';
import type { LabOptions } from '../lab/options.js';
import type { LabNode, LabPod, LabState } from '../lab/state.js';
import { flanneld } from '../lab/peers.js';
import { applyServices } from '../lab/services.js';
import { ip, ipBatch } from '../netlink/ip.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { run } from '../util/exec.js';
import { machineJiffies, watchOtherCpu } from './cpu.js';
import { waitFor } from './wait.js';

/*
 * Side-by-side datapath benchmark: the same 2-node topology (a pod behind cni0 on each node,
 * nodes on a shared underlay bridge) for twill, the real flanneld's kernel VXLAN and host-gw
 * routes, and a raw veth between two pods, measured interleaved (each repetition runs every
 * variant in turn).
 */

/**
 * twill as shipped (the fast path, decap hook auto: tc on this veth underlay), twill with the fast
 * path off (--fast-path=false: every packet through both nodes' stacks, as before the fast path),
 * twill's fast path with decap in XDP (--decap-hook xdp), twill with the host-gw backend, twill
 * with vxlan DirectRouting (both nodes on one segment, so routed directly), and the references:
 * kernel VXLAN and host-gw, set up by the real flanneld (scripts/peers/versions.env) on both
 * nodes; and IPv6 pod traffic in dual-stack labs, twill as shipped against flanneld's
 * flannel-v6.<VNI> (VXLAN over IPv6). No node masquerades (flanneld runs without --ip-masq, as
 * twill does here), so conntrack is idle on every variant's nodes until the kube-proxy profile.
 * node-to-node is the floor an overlay is measured against (Cilium's "node-to-node baseline"):
 * two nodes made as twill's, talking over their underlay addresses, no pod and no overlay in
 * the way.
 */
export type Variant =
  | 'twill'
  | 'twill-stack'
  | 'twill-xdp'
  | 'twill-host-gw'
  | 'twill-direct'
  | 'kernel-vxlan'
  | 'host-gw'
  | 'raw-veth'
  | 'node-to-node'
  | 'twill-v6'
  | 'kernel-vxlan-v6'
  | BaselineVariant;
/**
 * twill as shipped, over IPv4 and IPv6, loading its BPF objects from another directory
 * (--baseline-objects: another commit's build): measured only beside twill and twill-v6, in the
 * same run, to tell a datapath change from the machine's noise.
 */
export type BaselineVariant = 'twill-baseline' | 'twill-v6-baseline';
/** The variants measured with IPv6 pod traffic (between the pods' IPv6 addresses, over an IPv6 underlay). */
export const ipv6Variants: readonly Variant[] = ['twill-v6', 'kernel-vxlan-v6', 'twill-v6-baseline'];
export type UnderlayMode = 'veth' | 'wire';
/** the nodes as the lab makes them, or with kube-proxy's rules as on a Kubernetes node */
export type NodeProfile = 'bare' | 'kube-proxy';

export interface Endpoints {
  client: Pick<LabPod, 'netns' | 'ip'>;
  server: Pick<LabPod, 'netns' | 'ip'>;
  /** underlay links as [netns, dev] pairs, both ends (for the wire mode's offload settings) */
  links: [string, string][];
  /** where the sender's frames cross the underlay, and where the receiver takes them in */
  wireTap?: [string, string];
  receiverTap?: [string, string];
  /** the variant's lab (none for the raw veth, which has no nodes) */
  lab?: LabState;
}

type LabArgs = Pick<LabOptions, 'fastPath' | 'decapHook' | 'backend' | 'directRouting' | 'ipFamily'>;
const labNames: Record<Exclude<Variant, 'raw-veth'>, { name: string; underlay: string; args?: Partial<LabArgs> }> = {
  twill: { name: 'bt', underlay: '192.168.91.0/24' },
  'twill-stack': { name: 'bts', underlay: '192.168.95.0/24', args: { fastPath: false } },
  'twill-xdp': { name: 'btx', underlay: '192.168.96.0/24', args: { decapHook: 'xdp' } },
  'twill-host-gw': { name: 'bg', underlay: '192.168.97.0/24', args: { backend: 'host-gw' } },
  'twill-direct': { name: 'bd', underlay: '192.168.98.0/24', args: { directRouting: true } },
  'kernel-vxlan': { name: 'bk', underlay: '192.168.92.0/24' },
  'host-gw': { name: 'bh', underlay: '192.168.93.0/24', args: { backend: 'host-gw' } },
  'twill-v6': { name: 'bt6', underlay: '192.168.104.0/24', args: { ipFamily: 'dual' } },
  'kernel-vxlan-v6': { name: 'bk6', underlay: '192.168.105.0/24', args: { ipFamily: 'dual' } },
  'twill-baseline': { name: 'btb', underlay: '192.168.103.0/24' },
  'twill-v6-baseline': { name: 'bt6b', underlay: '192.168.107.0/24', args: { ipFamily: 'dual' } },
  'node-to-node': { name: 'bn', underlay: '192.168.159.0/24' },
};
/** The variants whose nodes run the real flanneld; the others run twill's agent. */
const flanneldVariants: readonly Variant[] = ['kernel-vxlan', 'host-gw', 'kernel-vxlan-v6'];
const isBaseline = (v: Variant): v is BaselineVariant => v === 'twill-baseline' || v === 'twill-v6-baseline';

/**
 * Runs `f` with TWILL_BPF_DIR naming `dir`, which the lab's agents inherit and load their BPF
 * objects from (controller/dataplane/attach.ts); no `dir`: the checkout's build, as always.
 */
async function withObjectDir<T>(dir: string | undefined, f: () => Promise<T>): Promise<T> {
  if (!dir) return f();
  const before = process.env.TWILL_BPF_DIR;
  process.env.TWILL_BPF_DIR = dir;
  try {
    return await f();
  } finally {
    if (before === undefined) delete process.env.TWILL_BPF_DIR;
    else process.env.TWILL_BPF_DIR = before;
  }
}
const RAW = { a: 'bv-a', b: 'bv-b' };

/**
 * Every twill node's twill_next_hops (and twill_next_hops6 in a dual-stack lab) holds every other
 * node, as a running agent keeps them while the peers talk (controller/dataplane/next-hops.ts):
 * a lab fresh from `lab up` has sent nothing on its underlay, so no neighbour is resolved and,
 * once the agents stop, the programs would take bpf_redirect_neigh() for every packet of the
 * run. One ping each way, per family, resolves them.
 */
async function warmNextHops(state: LabState): Promise<void> {
  // Both families' underlay addresses in a dual-stack lab: IPv6 VXLAN has next hops of its own.
  const addresses = (n: LabNode) => [n.underlayIp, ...(n.underlayIp6 ? [n.underlayIp6] : [])];
  for (const n of state.nodes)
    for (const peer of state.nodes.filter((p) => p !== n))
      for (const a of addresses(peer)) await run(['ping', '-c', '1', '-W', '1', a], { netns: n.netns, allowFailure: true });
  const missing = () =>
    state.nodes.flatMap((n) => {
      const maps = DatapathMaps.open(n.pinDir);
      try {
        const hops = maps.readNextHops();
        return state.nodes
          .filter((p) => p !== n)
          .flatMap((p) =>
            addresses(p)
              .filter((a) => !hops.has(a))
              .map((a) => `${n.name} -> ${a}`),
          );
      } finally {
        maps.close();
      }
    });
  let left: string[] = [];
  await waitFor(`lab ${state.name}: an entry in twill_next_hops(6) for every peer`, () => (left = missing()).length === 0, 10_000, 100).catch((err: Error) => {
    throw new Error(`${err.message} (missing: ${left.join(', ')})`);
  });
}

async function quietLab(state: LabState): Promise<void> {
  // The datapath needs neither the agents nor etcd once programmed; stopping them keeps the
  // measurement free of their (small) CPU use.
  for (const n of state.nodes) await stopNodeDaemon(n);
  await stopLabEtcd(state);
}

/**
 * The two pods, addressed by their IPv4 addresses, or (`ipv6`) by their IPv6 ones; or (`nodes`)
 * the two nodes themselves, by their underlay addresses.
 */
function labEndpoints(state: LabState, o: { ipv6?: boolean; nodes?: boolean } = {}): Endpoints {
  const [n1, n2] = state.nodes;
  const pod = (node: string) => {
    const p = state.pods.find((x) => x.node === node)!;
    return o.ipv6 ? { netns: p.netns, ip: (p.ips ?? []).find((a) => a.includes(':'))! } : p;
  };
  const end = (n: typeof n1) => (o.nodes ? { netns: n.netns, ip: n.underlayIp } : pod(n.name));
  return {
    lab: state,
    client: end(n1),
    server: end(n2),
    links: state.nodes.flatMap((n) => [[n.netns, 'eth0'] as [string, string], [state.underlay.netns, n.name] as [string, string]]),
    wireTap: [state.underlay.netns, n2.name],
    receiverTap: [n2.netns, 'eth0'],
  };
}

/**
 * kube-proxy's iptables rules for one ClusterIP Service (the server pod its endpoint) on every
 * node, as on any Kubernetes node: conntrack is then active in the nodes' namespaces and every
 * packet the stack forwards is tracked. The measured traffic is pod to pod, not to the Service.
 */
export async function addKubeProxy(e: Endpoints): Promise<void> {
  if (!e.lab) return;
  const server = e.lab.pods.find((p) => p.node === e.lab!.nodes[1].name)!;
  await applyServices(e.lab, [{ name: 'bench/echo', clusterIp: '10.96.0.10', port: 80, targetPort: 8080, endpoints: [server.ip] }]);
}

/** `baselineObjects`: the directory a baseline variant's agents load their BPF objects from. */
export async function setUp(variant: Variant, progress: (m: string) => void, baselineObjects?: string): Promise<Endpoints> {
  if (variant === 'raw-veth') {
    await tearDownRaw();
    await ip(['netns', 'add', RAW.a]);
    await ip(['netns', 'add', RAW.b]);
    await ip(['link', 'add', 'eth0', 'netns', RAW.a, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', RAW.b]);
    await ipBatch(['link set lo up', 'addr add 10.99.0.1/24 dev eth0', 'link set eth0 up'], { netns: RAW.a });
    await ipBatch(['link set lo up', 'addr add 10.99.0.2/24 dev eth0', 'link set eth0 up'], { netns: RAW.b });
    progress('raw-veth: two pod namespaces joined by one veth pair');
    return {
      client: { netns: RAW.a, ip: '10.99.0.1' },
      server: { netns: RAW.b, ip: '10.99.0.2' },
      links: [
        [RAW.a, 'eth0'],
        [RAW.b, 'eth0'],
      ],
      wireTap: [RAW.a, 'eth0'],
      receiverTap: [RAW.b, 'eth0'],
    };
  }
  const { name, underlay, args } = labNames[variant];
  const reference = flanneldVariants.includes(variant);
  if (isBaseline(variant) && !baselineObjects) throw new Error(`${variant} needs the directory of the baseline's BPF objects (--baseline-objects)`);
  const objects = isBaseline(variant) ? baselineObjects : undefined;
  const state = await withObjectDir(objects, () =>
    labUp({ name, nodes: 2, podsPerNode: 1, flanneldNodes: reference ? 2 : 0, ipMasq: 'none', underlayCidr: underlay, ...args }, () => undefined),
  );
  if (!reference) await warmNextHops(state);
  await quietLab(state);
  const ipv6 = ipv6Variants.includes(variant);
  progress(
    `${variant}: lab ${name} (2 nodes${reference ? ` running flanneld ${flanneld().version}` : ''}, 1 pod each${args?.backend === 'host-gw' ? ', host-gw: pod MTU 1500' : ''}${ipv6 ? ', dual-stack, measured over IPv6' : ''}${variant === 'node-to-node' ? ', measured node to node over the underlay' : ''}${objects ? `, BPF objects from ${objects}` : ''}) ready, ${reference ? 'flanneld' : 'agents'} and etcd stopped`,
  );
  return labEndpoints(state, { ipv6, nodes: variant === 'node-to-node' });
}

async function tearDownRaw(): Promise<void> {
  for (const ns of [RAW.a, RAW.b]) await ip(['netns', 'del', ns]).catch(() => undefined);
}

export async function tearDown(): Promise<void> {
  for (const { name } of Object.values(labNames)) await labDown(name);
  await tearDownRaw();
}

/** The wire regime: frames cross the underlay at MTU size and the receiver aggregates them with GRO. */
export async function setUnderlayMode(e: Endpoints, mode: UnderlayMode): Promise<void> {
  const on = mode === 'veth' ? 'on' : 'off';
  for (const [netns, dev] of e.links) {
    await run(['ethtool', '-K', dev, 'tso', on, 'gso', on, 'tx-udp_tnl-segmentation', on, 'tx-udp_tnl-csum-segmentation', on, 'gro', 'on'], {
      netns,
      allowFailure: true,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// measurements

function startServer(netns: string, argv: string[], ready: RegExp): Promise<{ stop(): Promise<void> }> {
  const child = spawn('nsenter', [`--net=/run/netns/${netns}`, '--', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      if (ready.test(out))
        resolve({ stop: () => new Promise<void>((r) => (child.exitCode !== null ? r() : (child.once('close', () => r()), child.kill('SIGKILL')))) });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('close', () => reject(new Error(`${argv.join(' ')} exited: ${out.trim()}`)));
  });
}

export interface Sample {
  tcp1Gbps: number;
  tcp4Gbps: number;
  udpKpps: number;
  cpuUsPerPkt: number;
  tcpLatSameCpuUs: number;
  udpLatSameCpuUs: number;
  tcpLatTwoCpuUs: number;
  udpLatTwoCpuUs: number;
  /** share of all CPUs other programs used during the measurement, and the biggest of them */
  otherCpuShare: number;
  otherCpuTop: string;
}

/*
 * The client on CPU 0 and every server on CPU 1: on a veth underlay the softirq work of the whole
 * path runs on the sending CPU, so an unpinned client moves the bottleneck from run to run.
 */
const CLIENT_CPU = '0';
const SERVER_CPU = '1';

/** The fields of iperf3's -J report that measure() reads (TCP runs fill sum_received, UDP runs sum). */
interface IperfReport {
  end: { sum: { packets: number; lost_packets: number; seconds: number }; sum_received: { bits_per_second: number; bytes: number } };
}

async function iperf(e: Endpoints, args: string[]): Promise<IperfReport> {
  const srv = await startServer(e.server.netns, ['taskset', '-c', SERVER_CPU, 'iperf3', '-s', '-1', '--forceflush', '-p', '5401'], /Server listening/);
  try {
    const res = await run(['taskset', '-c', CLIENT_CPU, 'iperf3', '-c', e.server.ip, '-p', '5401', '-J', ...args], { netns: e.client.netns });
    return JSON.parse(res.stdout) as IperfReport;
  } finally {
    await srv.stop();
  }
}

type QperfTest = 'tcp_lat' | 'udp_lat';

/** The latency of each test, in microseconds, in the order asked. */
async function qperfLat(e: Endpoints, serverCpu: number, clientCpu: number, seconds: number, tests: readonly QperfTest[]): Promise<number[]> {
  const srv = spawn('nsenter', [`--net=/run/netns/${e.server.netns}`, '--', 'taskset', '-c', String(serverCpu), 'qperf', '-lp', '19766'], { stdio: 'ignore' });
  try {
    // qperf prints nothing once it listens: the client retries until the server is there.
    for (let attempt = 1; ; attempt++) {
      await new Promise((r) => setTimeout(r, 200));
      const res = await run(['taskset', '-c', String(clientCpu), 'qperf', '-lp', '19766', '-t', String(seconds), e.server.ip, ...tests], {
        netns: e.client.netns,
        allowFailure: true,
      });
      const lat = [...res.stdout.matchAll(/latency\s*=\s*([\d.]+)\s*(us|ms|ns)/g)].map(
        (m) => Number(m[1]) * (m[2] === 'ms' ? 1000 : m[2] === 'ns' ? 0.001 : 1),
      );
      if (lat.length === tests.length) return lat;
      if (attempt === 10) throw new Error(`qperf to ${e.server.ip} failed: ${(res.stdout + res.stderr).trim()}`);
    }
  } finally {
    srv.kill('SIGKILL');
  }
}

export async function measure(e: Endpoints, seconds: number): Promise<Sample> {
  const others = watchOtherCpu();
  const tcp1 = await iperf(e, ['-t', String(seconds)]);
  const tcp4 = await iperf(e, ['-t', String(seconds), '-P', '4']);
  const before = machineJiffies();
  const udp = await iperf(e, ['-u', '-l', '64', '-b', '0', '-t', String(seconds)]);
  const after = machineJiffies();
  const sum = udp.end.sum;
  const received = sum.packets - sum.lost_packets;
  const [sameTcp, sameUdp] = await qperfLat(e, 0, 0, seconds, ['tcp_lat', 'udp_lat']);
  const [twoTcp, twoUdp] = await qperfLat(e, Number(SERVER_CPU), Number(CLIENT_CPU), seconds, ['tcp_lat', 'udp_lat']);
  const other = others.stop();
  return {
    tcp1Gbps: tcp1.end.sum_received.bits_per_second / 1e9,
    tcp4Gbps: tcp4.end.sum_received.bits_per_second / 1e9,
    udpKpps: received / sum.seconds / 1e3,
    // jiffies are 1/100 s (USER_HZ): CPU of the whole machine (both pods, both nodes) per datagram received
    cpuUsPerPkt: ((after.busy - before.busy) * 10_000) / Math.max(1, received),
    tcpLatSameCpuUs: sameTcp,
    udpLatSameCpuUs: sameUdp,
    tcpLatTwoCpuUs: twoTcp,
    udpLatTwoCpuUs: twoUdp,
    otherCpuShare: other.share,
    otherCpuTop: other.top,
  };
}

/** Max frame sizes seen on the underlay (sender side) and on the receiver after GRO, during a TCP stream. */
export async function regime(e: Endpoints, seconds: number): Promise<{ wireMax: number; receiverMax: number }> {
  const cap = (tap: [string, string], dir: 'in' | 'out') =>
    new Promise<number>((resolve) => {
      const child = spawn('nsenter', [`--net=/run/netns/${tap[0]}`, '--', 'tcpdump', '-i', tap[1], '-nn', '-e', '-c', '400', '-Q', dir], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const t = setTimeout(() => child.kill('SIGINT'), (seconds + 2) * 1000);
      child.on('close', () => {
        clearTimeout(t);
        resolve(Math.max(0, ...[...out.matchAll(/length (\d+):/g)].map((m) => Number(m[1]))));
      });
    });
  // Frames the underlay hands to the receiving node, and what that node's stack takes in after GRO.
  const wire = cap(e.wireTap!, 'out');
  const recv = cap(e.receiverTap!, 'in');
  await new Promise((r) => setTimeout(r, 500));
  await iperf(e, ['-t', String(seconds)]);
  return { wireMax: await wire, receiverMax: await recv };
}

/** What a profile's costs are per: the work the workload did while perf recorded. */
export interface WorkDone {
  unit: 'packet' | 'MB' | 'round trip';
  count: number;
}

export interface Profile {
  workload: string;
  /** kernel symbols with their share of all non-idle CPU samples, largest first */
  top: { percent: number; symbol: string }[];
  /**
   * Busy CPU time per unit of work, in all (busyUs) and by symbol: every kernel symbol perf listed,
   * and user space as one. Two variants' costs compare where their shares cannot (they did
   * different amounts of work). Absent when perf's report has no event count.
   */
  cost?: { unit: WorkDone['unit']; busyUs: number; symbols: { symbol: string; us: number }[] };
}

export const profileWorkloads = {
  udp64: 'UDP 64 B datagrams',
  tcp1: 'TCP 1 stream',
  // One round trip at a time on one CPU, as the one-CPU latency is measured: where a round trip's time goes.
  'tcp-lat': 'TCP latency, one CPU',
} as const;
export type ProfileWorkload = keyof typeof profileWorkloads;

/**
 * Where the CPUs go while one workload runs: `perf record` system-wide (cpu-clock samples,
 * which work where hardware counters do not), summed by symbol.
 */
export async function profile(e: Endpoints, workload: ProfileWorkload, seconds: number, topN = 12): Promise<Profile> {
  const file = `/tmp/twill-bench-${process.pid}.perf`;
  const rec = spawn('perf', ['record', '-a', '-F', '2999', '-o', file, '--', 'sleep', String(seconds + 1)], { stdio: 'ignore' });
  const recorded = new Promise<void>((r) => rec.once('close', () => r()));
  await new Promise((r) => setTimeout(r, 300));
  const work = await profiledWorkload(e, workload, seconds);
  await recorded;
  // A low listing limit: a symbol left out on one side would read as a cost only the other side pays.
  const rep = await run(['perf', 'report', '-i', file, '--stdio', '--no-children', '--sort', 'sym', '--percent-limit', '0.02'], { allowFailure: true });
  await run(['rm', '-f', file, `${file}.old`]);
  return { workload: profileWorkloads[workload], top: profileShares(rep.stdout).slice(0, topN), cost: profileCost(rep.stdout, work) };
}

async function profiledWorkload(e: Endpoints, workload: ProfileWorkload, seconds: number): Promise<WorkDone> {
  if (workload === 'tcp-lat') {
    // One round trip at a time: as many as fit in the run at the latency measured.
    const [us] = await qperfLat(e, 0, 0, seconds, ['tcp_lat']);
    return { unit: 'round trip', count: (seconds * 1e6) / us };
  }
  if (workload === 'udp64') {
    const sum = (await iperf(e, ['-u', '-l', '64', '-b', '0', '-t', String(seconds)])).end.sum;
    return { unit: 'packet', count: sum.packets - sum.lost_packets };
  }
  return { unit: 'MB', count: (await iperf(e, ['-t', String(seconds)])).end.sum_received.bytes / 1e6 };
}

/**
 * Pure: a `perf report --stdio --sort sym` listing turned into busy CPU microseconds per unit of
 * work. cpu-clock's event count is the nanoseconds sampled on all CPUs; idle's symbols are taken
 * out. What perf left unlisted (symbols under its limit) counts in busyUs, in no symbol.
 */
export function profileCost(report: string, work: WorkDone): Profile['cost'] {
  const events = /^# Event count \(approx\.\): (\d+)/m.exec(report);
  if (!events || work.count <= 0) return undefined;
  const { rows, busyPercent } = perfListing(report);
  const usPerPercent = Number(events[1]) / 1e3 / 100 / work.count;
  const user = rows.filter((r) => !r.kernel).reduce((a, r) => a + r.percent, 0);
  const symbols = busyKernelRows(rows).map((r) => ({ symbol: r.symbol, us: r.percent * usPerPercent }));
  if (user > 0) symbols.push({ symbol: '(user space)', us: user * usPerPercent });
  return { unit: work.unit, busyUs: busyPercent * usPerPercent, symbols: symbols.sort((a, b) => b.us - a.us) };
}

/**
 * Pure: the kernel symbols of a `perf report --stdio --sort sym` listing, each as a share of all
 * non-idle samples. perf's percentages are of all samples; idle's symbols (listed, since they are
 * large) are taken out of the total, and the symbols below perf's listing limit stay in it.
 */
export function profileShares(report: string): { percent: number; symbol: string }[] {
  const { rows, busyPercent } = perfListing(report);
  const busy = busyPercent || 1;
  return busyKernelRows(rows).map((r) => ({ percent: (r.percent / busy) * 100, symbol: r.symbol }));
}

const IDLE_SYMBOL = /halt|idle|mwait/;

/** The rows of a `perf report --stdio --sort sym` listing, and the percentage of samples not idle. */
function perfListing(report: string): { rows: { percent: number; kernel: boolean; symbol: string }[]; busyPercent: number } {
  const rows = [...report.matchAll(/^\s+([\d.]+)%\s+\[([k.])\]\s+(\S+)/gm)].map((m) => ({ percent: Number(m[1]), kernel: m[2] === 'k', symbol: m[3] }));
  return { rows, busyPercent: 100 - rows.filter((r) => IDLE_SYMBOL.test(r.symbol)).reduce((a, r) => a + r.percent, 0) };
}

const busyKernelRows = <R extends { kernel: boolean; symbol: string }>(rows: R[]) => rows.filter((r) => r.kernel && !IDLE_SYMBOL.test(r.symbol));
