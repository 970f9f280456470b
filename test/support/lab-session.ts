import { readFileSync } from 'node:fs';
import { labStatus, restartAgent, stopNodeDaemon, type LabNode, type LabPod, type LabState } from '../../controller/lab/lab.js';
import { pidAlive } from '../../controller/lab/agents.js';
import { DatapathMaps } from '../../controller/dataplane/datapath-maps.js';
import { run } from '../../controller/util/exec.js';
import { cliPath } from './build.js';
import { startInNetns, type Background } from './proc.js';

/*
 * Driving a lab from a test: bring it up through the CLI, read a node's maps through its pins,
 * talk to the lab's etcd with etcdctl from its namespace, restart agents and wait for them, and
 * measure packet loss with pings between every cross-node pod pair.
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
export const fakeLease = (ip: string, mac: string) => JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });

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
      subnets: [...maps.readSubnets()].map(([s, r]) => ({ subnet: `${s}/${config?.subnet_len ?? 0}`, publicIp: r.public_ip, vtepMac: r.vtep_mac })),
      peers: [...maps.readPeers()].map(([ip, p]) => ({ publicIp: ip, subnet: `${p.subnet}/${p.subnet_len}`, vtepMac: p.vtep_mac })),
      stats: numbers(maps.stats()),
      path: ((p) => p && { send: numbers(p.send), receive: numbers(p.receive) })(maps.pathStats()),
      endpoints: new Map([...maps.readEndpoints()].map(([ip, e]) => [ip, e.ifindex])),
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
export async function bounceAgent(lab: LabState, n: LabNode, signal: NodeJS.Signals, extraArgs: string[] = [], whileStopped?: () => Promise<void>): Promise<string> {
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

/** A ping flow from one pod to another (their nodes' names). */
export type PingFlow = Background & { from: string; to: string };

/** Pings between every ordered pair of pods on different nodes (to the address `addrOf` picks), every 20 ms, until stopped. */
export function startPingFlows(lab: LabState, addrOf: (p: LabPod) => string = (p) => p.ip): PingFlow[] {
  return lab.pods.flatMap((a) => lab.pods.filter((b) => b.node !== a.node).map((b) => Object.assign(startInNetns(a.netns, ['ping', '-i', '0.02', '-W', '1', addrOf(b)]), { from: a.node, to: b.node })));
}

/** Pings sent in the last second before a flow stops (-i 0.02, -W 1): still waiting for their reply, not yet lost. */
const IN_FLIGHT_AT_STOP = 50;

/**
 * Stops the flows; what each sent and lost. ping stops at once on SIGINT and counts what was
 * still in flight as lost: on a loaded machine a reply or two is. So a packet is lost when it
 * was never answered and a later one was, or when more than a second's worth at the end went
 * unanswered (then all of the unanswered tail counts).
 */
export async function stopPingFlowsPerFlow(flows: PingFlow[]): Promise<{ from: string; to: string; sent: number; lost: number }[]> {
  for (const f of flows) f.kill('SIGINT');
  await Promise.all(flows.map((f) => f.exited));
  return flows.map((f) => {
    const m = /(\d+) packets transmitted, (\d+) received/.exec(f.output());
    if (!m) throw new Error(`no ping summary from ${f.from} to ${f.to}: ${f.output().slice(-200)}`);
    return { from: f.from, to: f.to, sent: Number(m[1]), lost: pingLoss(f.output(), Number(m[1])) };
  });
}

/** Pure: packets lost in a ping run's output, `sent` in all (see stopPingFlowsPerFlow). */
export function pingLoss(output: string, sent: number): number {
  const answered = new Set([...output.matchAll(/bytes from .*?icmp_seq=(\d+)/g)].map((x) => Number(x[1])));
  const last = Math.max(0, ...answered);
  let gaps = 0;
  for (let seq = 1; seq <= last; seq++) if (!answered.has(seq)) gaps++;
  const tail = sent - last;
  return gaps + (tail > IN_FLIGHT_AT_STOP ? tail : 0);
}

export async function stopPingFlows(flows: PingFlow[]): Promise<{ sent: number; lost: number }> {
  const each = await stopPingFlowsPerFlow(flows);
  return { sent: each.reduce((a, f) => a + f.sent, 0), lost: each.reduce((a, f) => a + f.lost, 0) };
}

/** Starts the flows and waits until each has had its first reply. */
export async function pingFlowsRunning(lab: LabState, addrOf?: (p: LabPod) => string): Promise<PingFlow[]> {
  const flows = startPingFlows(lab, addrOf);
  await Promise.all(flows.map((f) => f.waitFor(/bytes from/)));
  return flows;
}

/**
 * The vxlan devices in a node's namespace, with whether each is flow-based ("external") and how
 * many FDB entries it has: a BPF node has exactly twill-rx, external, with none.
 */
export async function vxlanDevices(netns: string): Promise<{ ifname: string; external: boolean; fdbEntries: number }[]> {
  const links = JSON.parse((await run(['ip', '-n', netns, '-d', '-j', 'link', 'show', 'type', 'vxlan'])).stdout || '[]') as { ifname: string; linkinfo: { info_data: { external?: boolean } } }[];
  return Promise.all(
    links.map(async (l) => ({
      ifname: l.ifname,
      external: l.linkinfo.info_data.external === true,
      fdbEntries: (await run(['bridge', '-n', netns, 'fdb', 'show', 'dev', l.ifname])).stdout.trim().split('\n').filter(Boolean).length,
    })),
  );
}
