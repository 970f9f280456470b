import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { labKubectl } from '../../controller/lab/kube.js';
import { restartAgent, stopNodeDaemon } from '../../controller/lab/node-daemons.js';
import { labStatus, type LabNode, type LabPod, type LabState } from '../../controller/lab/state.js';
import { pidAlive } from '../../controller/lab/agents.js';
import { DatapathMaps } from '../../controller/dataplane/datapath-maps.js';
import { run } from '../../controller/util/exec.js';
import { cliPath, repoRoot } from './build.js';
import { startInNetns, type Background } from './proc.js';
import { ping, tcpTransfer, udpProbe } from './traffic.js';

/*
 * Driving a lab from a test: bring it up through the CLI, read a node's maps through its pins,
 * talk to the lab's etcd with etcdctl from its namespace, restart agents and wait for them, and
 * measure packet loss with echo flows between every cross-node pod pair.
 */

export const PREFIX = '/coreos.com/network';
export const twill = (args: string[], netns?: string) => run([process.execPath, cliPath, ...args], { netns, allowFailure: true });

export async function labUpFresh(name: string, args: string[]): Promise<LabState> {
  await twill(['lab', 'down', '--name', name]);
  const up = await twill(['lab', 'up', '--name', name, ...args]);
  if (up.code !== 0) throw new Error(`lab up ${name} failed: ${up.stderr}`);
  return (await labStatus(name))!;
}

export const etcdctl = (lab: LabState, ...args: string[]) =>
  run(['etcdctl', '--endpoints', lab.etcd!.endpoint, '--command-timeout=5s', ...args], { netns: lab.etcd!.netns, env: { ...process.env, ETCDCTL_API: '3' } });
export const leaseKey = (subnet: string) => `${PREFIX}/subnets/${subnet.replace('/', '-')}`;
export const fakeLease = (ip: string, mac: string) =>
  JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });

export interface MapsDoc {
  config: unknown;
  subnets: { subnet: string; publicIp: string; vtepMac: string }[];
  peers: { publicIp: string; subnet: string; vtepMac: string }[];
  stats: Record<string, number>;
  /** twill_path_stats summed over CPUs */
  path?: { send: Record<string, number>; receive: Record<string, number> };
  /** twill_endpoints: pod address -> host veth ifindex */
  endpoints: Map<string, number>;
}
/**
 * Read in this process through the pins, as `twill maps --json` shows them: dist/ may be in
 * the middle of a rebuild by another suite, the sources under test never are.
 */
export async function readMaps(n: LabNode): Promise<MapsDoc> {
  const maps = DatapathMaps.open(n.pinDir);
  try {
    const config = maps.readConfig();
    return {
      config,
      subnets: [...maps.ipv4.readSubnets()].map(([s, r]) => ({ subnet: `${s}/${config?.subnet_len ?? 0}`, publicIp: r.public_ip, vtepMac: r.vtep_mac })),
      peers: [...maps.ipv4.readPeers()].map(([ip, p]) => ({ publicIp: ip, subnet: `${p.subnet}/${p.subnet_len}`, vtepMac: p.vtep_mac })),
      stats: numbers(maps.stats()),
      path: ((p) => p && { send: numbers(p.send), receive: numbers(p.receive) })(maps.pathStats()),
      endpoints: new Map([...maps.ipv4.readEndpoints()].map(([ip, e]) => [ip, e.ifindex])),
    };
  } finally {
    maps.close();
  }
}
const numbers = (o: object): Record<string, number> => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Number(v)]));

/** The entries only: counters move with traffic, entries must not. */
export async function mapEntries(n: LabNode): Promise<Pick<MapsDoc, 'config' | 'subnets' | 'peers'> & { endpoints: [string, number][] }> {
  const { config, subnets, peers, endpoints } = await readMaps(n);
  return { config, subnets, peers, endpoints: [...endpoints].sort() };
}
export const routes = async (n: LabNode, subnet: string) => (await readMaps(n)).subnets.some((s) => s.subnet === subnet);

export async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export const agentLog = (n: LabNode) => readFileSync(n.agent!.log, 'utf8');

/**
 * Restarts a node's daemon (after `signal`), twill agent or flanneld, and waits until it is
 * ready (twill: it says so; flanneld: it wrote its subnet file); returns what it logged.
 * `whileStopped` runs between the two (a test edits etcd while the node is down).
 */
export async function bounceAgent(
  lab: LabState,
  n: LabNode,
  signal: NodeJS.Signals,
  extraArgs: string[] = [],
  whileStopped?: () => Promise<void>,
): Promise<string> {
  await stopNodeDaemon(n, signal);
  await whileStopped?.();
  const from = agentLog(n).length;
  const agent = restartAgent(lab, n, extraArgs);
  const readyLine = n.dataplane === 'flanneld' ? 'Wrote subnet file' : '"msg":"ready"';
  await until(
    `the ${n.dataplane === 'flanneld' ? 'flanneld' : 'agent'} on ${n.name} to be ready`,
    async () => {
      const since = agentLog(n).slice(from);
      if (!pidAlive(agent.pid)) throw new Error(`${n.dataplane === 'flanneld' ? 'flanneld' : 'agent'} on ${n.name} exited: ${since.slice(-1500)}`);
      return since.includes(readyLine);
    },
    60_000,
  );
  return agentLog(n).slice(from);
}

/** A ping flow from one pod to another (their nodes' names): test/support/pinger.py in the first pod's namespace. */
export type PingFlow = Background & { from: string; to: string };

const PINGER = path.join(repoRoot, 'test/support/pinger.py');

/** One flow from `from` to `addr`, an echo every 20 ms, until stopped. */
export function startPingFlow(from: LabPod, addr: string, to: string): PingFlow {
  return Object.assign(startInNetns(from.netns, ['/usr/bin/python3', PINGER, addr, '20', String(REPLY_GRACE_MS)]), { from: from.node, to });
}

/** Flows between every ordered pair of pods on different nodes (to the address `addrOf` picks), every 20 ms, until stopped. */
export function startPingFlows(lab: LabState, addrOf: (p: LabPod) => string = (p) => p.ip): PingFlow[] {
  return lab.pods.flatMap((a) => lab.pods.filter((b) => b.node !== a.node).map((b) => startPingFlow(a, addrOf(b), b.node)));
}

/** Starts the flows and waits until each has had its first reply. */
export async function pingFlowsRunning(lab: LabState, addrOf?: (p: LabPod) => string): Promise<PingFlow[]> {
  const flows = startPingFlows(lab, addrOf);
  await Promise.all(flows.map((f) => f.waitFor(/^first reply$/m)));
  return flows;
}

/** How long a stopped flow waits for the replies to what it sent (the pinger's grace): later, a packet is lost. */
const REPLY_GRACE_MS = 1500;
/** How long the flows go on after the last fault, at least, before they stop: that window is asserted on its own. */
export const AFTER_LAST_FAULT_MS = 2000;

/** What pinger.py prints when it stops: per sequence number, when it was sent and when answered (epoch ms). */
export interface PingerResult {
  target: string;
  intervalMs: number;
  graceMs: number;
  packets: [seq: number, sentAt: number, answeredAt: number | null][];
}

export interface FlowLoss {
  sent: number;
  lost: number;
  /** the packets sent at or after the last fault, and those of them lost */
  sentAfterLastFault: number;
  lostAfterLastFault: number;
  /** when each lost packet was sent (epoch ms) */
  lostSentAt: number[];
}

/**
 * Pure: the loss of one flow, counted by sequence number. The pinger waited for the reply to
 * every packet it sent before it stopped, so a packet without one is lost, wherever it is in
 * the run: the last ones too.
 */
export function countLoss(r: PingerResult, lastFault: number): FlowLoss {
  const lost = r.packets.filter((p) => p[2] === null);
  return {
    sent: r.packets.length,
    lost: lost.length,
    sentAfterLastFault: r.packets.filter((p) => p[1] >= lastFault).length,
    lostAfterLastFault: lost.filter((p) => p[1] >= lastFault).length,
    lostSentAt: lost.map((p) => p[1]),
  };
}

/** Pure: the result line of a pinger's output. */
export function pingerResult(output: string): PingerResult | undefined {
  const line = output.split('\n').find((l) => l.startsWith('{"target"'));
  return line ? (JSON.parse(line) as PingerResult) : undefined;
}

export interface StopOptions {
  /** when the test's last fault ended (Date.now() right after it) */
  lastFault: number;
  /** the flows go on until this long after it (AFTER_LAST_FAULT_MS); 0 stops them at once */
  afterMs?: number;
}

/**
 * Stops the flows AFTER_LAST_FAULT_MS or more after the last fault; what each sent and lost, in
 * all and from the last fault on. Each pinger stops sending, waits for the replies still due,
 * then reports: nothing is in flight when it is counted.
 */
export async function stopPingFlowsPerFlow(
  flows: PingFlow[],
  { lastFault, afterMs = AFTER_LAST_FAULT_MS }: StopOptions,
): Promise<({ from: string; to: string } & FlowLoss)[]> {
  const wait = lastFault + afterMs - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  for (const f of flows) f.kill('SIGINT');
  await Promise.all(flows.map((f) => f.exited));
  return flows.map((f) => {
    const r = pingerResult(f.output());
    if (!r) throw new Error(`no result from the flow ${f.from} -> ${f.to}: ${f.output().slice(-300)}`);
    return { from: f.from, to: f.to, ...countLoss(r, lastFault) };
  });
}

/** stopPingFlowsPerFlow summed over the flows, with each flow's own counts in `perFlow`. */
export async function stopPingFlows(
  flows: PingFlow[],
  opts: StopOptions,
): Promise<Omit<FlowLoss, 'lostSentAt'> & { perFlow: ({ from: string; to: string } & FlowLoss)[] }> {
  const perFlow = await stopPingFlowsPerFlow(flows, opts);
  const sum = (k: 'sent' | 'lost' | 'sentAfterLastFault' | 'lostAfterLastFault') => perFlow.reduce((a, f) => a + f[k], 0);
  return { sent: sum('sent'), lost: sum('lost'), sentAfterLastFault: sum('sentAfterLastFault'), lostAfterLastFault: sum('lostAfterLastFault'), perFlow };
}

/**
 * What a zero-loss test asserts of its flows: none lost in all, none lost after the last fault,
 * and every flow sent after it (so the window after it was measured, flow by flow).
 */
export function expectNoLoss(loss: Awaited<ReturnType<typeof stopPingFlows>>, lab?: LabState): void {
  const lossy = loss.perFlow
    .filter((f) => f.lost > 0 || f.lostAfterLastFault > 0)
    .map((f) => ({ ...f, lostSentAt: [f.lostSentAt[0], f.lostSentAt[f.lostSentAt.length - 1]].map((t) => new Date(t).toISOString()) }));
  // With a loss, what the agents warned of says why (a lease lost, a map rewritten): it goes into
  // the failure's value, the one thing a CI log keeps of it.
  const context = lossy.length > 0 && lab ? { agentWarnings: agentWarnings(lab) } : {};
  expect({ ...context, lossy }).toEqual({ ...context, lossy: [] });
  expect(loss.perFlow.filter((f) => f.sentAfterLastFault === 0).map((f) => `${f.from} -> ${f.to}`)).toEqual([]);
  expect(loss.lost).toBe(0);
}

/** Per node, its agent's last warnings and errors (time and message), from its log. */
export function agentWarnings(lab: LabState, last = 4): Record<string, string[]> {
  return Object.fromEntries(
    lab.nodes.map((n) => {
      let text: string;
      try {
        text = agentLog(n);
      } catch {
        return [n.name, ['(no agent log)']];
      }
      const lines = text.split('\n').filter((l) => /"level":"(warn|error)"/.test(l));
      return [n.name, lines.slice(-last).map((l) => `${/"ts":"[^"]*T([^"]*)"/.exec(l)?.[1] ?? ''} ${/"msg":"([^"]*)"/.exec(l)?.[1] ?? l.slice(0, 120)}`)];
    }),
  );
}

/** How the tests print a loss: "L of S packets lost (l of s after the last fault)". */
export const lossLine = (loss: { sent: number; lost: number; sentAfterLastFault: number; lostAfterLastFault: number }, after = 'the last fault') =>
  `${loss.lost} of ${loss.sent} packets lost (${loss.lostAfterLastFault} of ${loss.sentAfterLastFault} after ${after})`;

/**
 * The vxlan devices in a node's namespace, with whether each is flow-based ("external") and how
 * many FDB entries it has: a BPF node has exactly twill-rx, external, with none.
 */
export async function vxlanDevices(netns: string): Promise<{ ifname: string; external: boolean; fdbEntries: number }[]> {
  const links = JSON.parse((await run(['ip', '-n', netns, '-d', '-j', 'link', 'show', 'type', 'vxlan'])).stdout || '[]') as {
    ifname: string;
    master?: string;
    linkinfo: { info_data: { external?: boolean } };
  }[];
  // A bridge's port is no tunnel: the fast path's headroom port (dataplane/headroom.ts) never comes up.
  return Promise.all(
    links
      .filter((l) => !l.master)
      .map(async (l) => ({
        ifname: l.ifname,
        external: l.linkinfo.info_data.external === true,
        fdbEntries: (await run(['bridge', '-n', netns, 'fdb', 'show', 'dev', l.ifname])).stdout.trim().split('\n').filter(Boolean).length,
      })),
  );
}

const nodeOf = (l: LabState, p: LabPod) => l.nodes.find((n) => n.name === p.node)!;

/** Every ordered pair of pods on different nodes, to every address of the target: ping, TCP and UDP; what failed, named with the node kinds. */
export async function allPodPairs(l: LabState, opts: { tcp?: boolean } = {}): Promise<string[]> {
  const failed: string[] = [];
  let port = 5400;
  for (const a of l.pods)
    for (const b of l.pods) {
      if (a.node === b.node) continue;
      for (const addr of b.ips ?? [b.ip]) {
        const what = `${a.name} (${nodeOf(l, a).dataplane}) -> ${addr} on ${b.name} (${nodeOf(l, b).dataplane})`;
        if ((await ping(a.netns, addr, 2)).code !== 0) failed.push(`ping ${what}`);
        if (opts.tcp === false) continue;
        const t = await tcpTransfer(a, b, 256 * 1024, port++, addr);
        if (t.received !== t.sent || t.sent === '') failed.push(`tcp ${what}: sent ${t.sent}, received ${t.received}`);
        if (!(await udpProbe(a, b, port++, addr))) failed.push(`udp ${what}`);
      }
    }
  return failed;
}

const TRANSFER = path.join(repoRoot, 'test/support/tcp-transfer.py');

interface Stream {
  sink: Background;
  source: Background;
  what: string;
}
let streamPort = 5600;
/** A paced TCP stream from one pod to another (16 KiB every 10 ms), checked end to end when stopped. */
async function startStream(from: LabPod, to: LabPod): Promise<Stream> {
  const p = streamPort++;
  const sink = startInNetns(to.netns, ['/usr/bin/python3', TRANSFER, 'sink', String(p)]);
  await sink.waitFor(/listening/);
  const source = startInNetns(from.netns, ['/usr/bin/python3', TRANSFER, 'stream', to.ip, String(p)]);
  await source.waitFor(/streaming/);
  return { sink, source, what: `${from.name} -> ${to.name}` };
}
async function stopStream(s: Stream): Promise<{ sent: string; received: string }> {
  s.source.kill('SIGTERM');
  await Promise.all([s.source.exited, s.sink.exited]);
  const last = (b: Background) => b.output().trim().split('\n').pop() ?? '';
  return { sent: last(s.source), received: last(s.sink) };
}

/** Runs `step` under ping flows between every pod pair and TCP streams both ways through `n` (a node moving between daemons); what was lost. */
export async function underTraffic(lab: LabState, n: LabNode, what: string, step: () => Promise<void>): Promise<string> {
  const podOf = (x: LabNode) => lab.pods.find((p) => p.node === x.name)!;
  const nextNode = lab.nodes[(lab.nodes.indexOf(n) + 1) % lab.nodes.length];
  const flows = await pingFlowsRunning(lab);
  const streams = [await startStream(podOf(n), podOf(nextNode)), await startStream(podOf(nextNode), podOf(n))];
  await step();
  // The flows go on for 2 s after the step, through the moved node, and count that window apart.
  const loss = await stopPingFlows(flows, { lastFault: Date.now() });
  for (const s of streams) {
    const r = await stopStream(s);
    expect(r.received, `TCP stream ${s.what} during ${what}`).toBe(r.sent);
    expect(r.sent, `TCP stream ${s.what}`).toMatch(/^[1-9]\d* [0-9a-f]{64}$/);
  }
  expectNoLoss(loss, lab);
  return `${what}: ${lossLine(loss, 'the switch')} on ${loss.perFlow.length} flows, 2 TCP streams intact`;
}

/** What an agent's /readyz says ({} when nothing answers: the agent is gone or not listening yet). */
export interface Readyz {
  ready?: boolean;
  subnetManager?: { kind: string; connected: boolean };
  fastPath?: { enabled?: boolean; reason?: string; forwardRules?: string[] };
}
export const readyz = async (n: LabNode): Promise<Readyz> =>
  JSON.parse(
    (await run(['curl', '-s', '--max-time', '5', `http://${n.agent!.healthz}/readyz`], { netns: n.netns, allowFailure: true })).stdout || '{}',
  ) as Readyz;

/** flannel's annotation prefix (the default of --kube-annotation-prefix). */
export const FLANNEL_ANNOTATIONS = 'flannel.alpha.coreos.com/';

/** What the Kubernetes-mode tests read of a Node. */
export interface KubeNodeObject {
  metadata: { annotations?: Record<string, string> };
  spec: { podCIDR?: string; podCIDRs?: string[] };
  status: { conditions?: { type: string; status: string; reason?: string }[] };
}

/** A kube lab's Node as the API server has it now. */
export const kubeNode = async (lab: LabState, name: string) =>
  JSON.parse((await labKubectl(lab, ['get', 'node', name, '-o', 'json'])).stdout) as KubeNodeObject;

/**
 * craft.py's (craft6.py's) environment for VXLAN claiming to come from `outerSrc`: an inner
 * source inside that node's subnet when it is a lab node, as a peer may only speak for its own
 * pods (its packets from elsewhere are dropped as drop_peer_source); their default otherwise.
 */
export function craftEnv(lab: LabState, outerSrc: string): NodeJS.ProcessEnv {
  const n = lab.nodes.find((x) => x.underlayIp === outerSrc || x.underlayIp6 === outerSrc);
  if (!n) return process.env;
  const inner = outerSrc.includes(':') ? `${n.subnet6!.split('/')[0]}77` : n.subnet.replace(/\.0\/\d+$/, '.77');
  return { ...process.env, INNER_SRC: inner };
}
