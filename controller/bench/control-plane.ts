import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AgentProcess } from '../lab/agents.js';
import { labDown, labUp } from '../lab/lab.js';
import { restartAgent, stopNodeDaemon } from '../lab/node-daemons.js';
import type { LabNode, LabState } from '../lab/state.js';
import { BpfMap } from '../bpf/libbpf.js';
import { run } from '../util/exec.js';
import { cliEntry, runtimeNode } from '../util/paths.js';
import { median, percentile } from './report.js';
import { waitFor } from './wait.js';

/*
 * Control-plane scale: etcd holding 10,000 leases, one agent (re)started against it from an
 * empty datapath, and single lease puts timed until they reach that agent's map.
 */

interface ControlPlaneResult {
  leases: number;
  startToProgrammedMs: number;
  putToMapMs: Spread;
  agentRssMb: number;
  agentPeakRssMb: number;
}

/** Timings in ms, as the tables report them. */
export type Spread = { p50: number; p99: number; max: number; n: number };
export const spread = (ms: number[]): Spread => ({ p50: median(ms), p99: percentile(ms, 99), max: Math.max(...ms), n: ms.length });

const LAB = { name: 'bc', underlayCidr: '192.168.94.0/24' };

/** One run of a probe script of this directory (lease-probe.js, node-probe.js) in `netns`; its stdout is JSON. */
export async function runProbe(script: string, netns: string | undefined, mode: 'fill' | 'latency', args: object): Promise<unknown> {
  const res = await run([runtimeNode(), path.join(path.dirname(fileURLToPath(import.meta.url)), script), mode, JSON.stringify(args)], { netns });
  return JSON.parse(res.stdout);
}

const probeRun = (state: LabState, mode: 'fill' | 'latency', args: object) =>
  runProbe('lease-probe.js', state.etcd!.netns, mode, { endpoint: state.etcd!.endpoint, prefix: state.etcd!.prefix, ...args });

/**
 * `node`'s agent stopped, everything it pinned removed, and started again: timed from its start
 * until its subnets map holds `expected` entries, with its memory then. Both control-plane runs
 * time an agent that takes in the whole set at once this way.
 */
export async function startFromEmpty(
  state: LabState,
  node: LabNode,
  expected: number,
): Promise<{ agent: AgentProcess; startToProgrammedMs: number; mem: { rss: number; peak: number } }> {
  await stopNodeDaemon(node);
  await run([runtimeNode(), cliEntry(), 'dataplane', 'detach', '--pin-dir', node.pinDir], { netns: node.netns });
  const t0 = process.hrtime.bigint();
  const agent = restartAgent(state, node);
  await waitFor(`node ${node.name} programming ${expected} subnets at start`, () => subnetCount(node.pinDir) >= expected, 60_000, 10);
  const startToProgrammedMs = Number(process.hrtime.bigint() - t0) / 1e6;
  return { agent, startToProgrammedMs, mem: rssMb(agent.pid) };
}

/** Entries in a node's subnets map, or -1 while the agent has not pinned it yet. */
export function subnetCount(pinDir: string): number {
  if (!existsSync(`${pinDir}/twill_subnets`)) return -1;
  const map = BpfMap.fromPin(`${pinDir}/twill_subnets`);
  try {
    return map.entries().length;
  } finally {
    map.close();
  }
}

/** The process's resident memory now and its peak (VmHWM), in MB. */
export function rssMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

export async function controlPlaneBench(leases: number, puts: number, say: (m: string) => void): Promise<ControlPlaneResult> {
  await labDown(LAB.name);
  try {
    const state = await labUp({ ...LAB, nodes: 2, podsPerNode: 0, network: '10.0.0.0/8', subnetLen: 24 }, () => undefined);
    const [a, b] = state.nodes;
    say(`control plane: lab ${LAB.name} up (2 agents, network 10.0.0.0/8); putting ${leases} leases`);
    await probeRun(state, 'fill', { count: leases });
    const expected = leases + 1; // every fake lease and the other node
    await waitFor(`node ${a.name} programming ${expected} subnets from the watch`, () => subnetCount(a.pinDir) >= expected, 120_000, 200);

    say(`control plane: ${leases} leases in etcd; starting ${b.name}'s agent on an empty datapath`);
    const { agent, startToProgrammedMs, mem } = await startFromEmpty(state, b, expected);
    say(`control plane: all ${expected} subnets programmed ${startToProgrammedMs.toFixed(0)} ms after start; agent RSS ${mem.rss.toFixed(0)} MB`);

    const { ms } = (await probeRun(state, 'latency', { pinDir: b.pinDir, puts })) as { ms: number[] };
    const after = rssMb(agent.pid);
    const result = {
      leases,
      startToProgrammedMs,
      putToMapMs: spread(ms),
      agentRssMb: Math.max(mem.rss, after.rss),
      agentPeakRssMb: after.peak,
    };
    say(`control plane: lease put -> map p50 ${result.putToMapMs.p50.toFixed(1)} ms, p99 ${result.putToMapMs.p99.toFixed(1)} ms over ${ms.length} puts`);
    return result;
  } finally {
    await labDown(LAB.name);
  }
}

/** A row of a control-plane table; `met` undefined: a number reported without a target. */
export const resultRow = (what: string, value: string, target: string, met?: boolean) =>
  `| ${what} | ${value} | ${target} | ${met === undefined ? '' : met ? 'yes' : 'no'} |`;
export const RESULT_HEAD = ['| measure | value | target | met |', '|---|--:|--:|---|'];

export function controlPlaneSection(r: ControlPlaneResult): string {
  const row = resultRow;
  return [
    `## Control plane at ${r.leases.toLocaleString('en')} leases`,
    '',
    `etcd holds ${r.leases.toLocaleString('en')} leases of other nodes (plus the lab's two). One agent is started on an empty datapath (no pins) and timed from process start until its subnets map holds every lease; then ${r.putToMapMs.n} leases are put one at a time and each is timed from the put until it is in that agent's map (one process does both, on one clock).`,
    '',
    ...RESULT_HEAD,
    row('agent start -> all leases in the maps', `${(r.startToProgrammedMs / 1000).toFixed(2)} s`, '<= 2 s', r.startToProgrammedMs <= 2000),
    row('lease put -> map entry, p50', `${r.putToMapMs.p50.toFixed(1)} ms`, ''),
    row('lease put -> map entry, p99', `${r.putToMapMs.p99.toFixed(1)} ms`, '< 100 ms', r.putToMapMs.p99 < 100),
    row(
      'agent peak resident memory (VmHWM), all leases loaded',
      `${r.agentPeakRssMb.toFixed(0)} MB (resident at the end: ${r.agentRssMb.toFixed(0)} MB)`,
      '< 120 MB',
      r.agentPeakRssMb < 120,
    ),
  ].join('\n');
}
