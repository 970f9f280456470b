import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { flanneld } from '../lab/peers.js';
import { repoRoot } from '../util/paths.js';
import os from 'node:os';
import { otherCpuOver } from './cpu.js';
import {
  addKubeProxy,
  measure,
  profile,
  profileWorkloads,
  type ProfileWorkload,
  regime,
  setUnderlayMode,
  setUp,
  tearDown,
  type Endpoints,
  type NodeProfile,
  type Sample,
  type UnderlayMode,
  type Variant,
} from './bench.js';
import { cniCostBench, cniCostSection } from './cni-cost.js';
import { controlPlaneBench, controlPlaneSection } from './control-plane.js';
import { kubeScaleBench, kubeScaleSection } from './kube-scale.js';
import { baselinePairs, profileSection, renderBaselineReport, renderReport, variants, type ModeResult, type Regime, type VariantProfile } from './report.js';

interface BenchOptions {
  reps: number;
  seconds: number;
  modes: UnderlayMode[];
  out?: string;
  command: string;
  maxBackground: number;
  /** leases for the control-plane scale run (0: skip it), and timed single puts */
  leases: number;
  puts: number;
  /** Nodes for the Kubernetes-mode control-plane run (0: skip it), and timed single annotations */
  kubeNodes: number;
  kubeAnnotations: number;
  /** pods timed through twill's CNI plugin and through its delegates alone (0: skip it) */
  cniPods: number;
  /** the lab that run uses (default: cni-cost.ts's) */
  cniLab?: { name: string; underlayCidr: string };
  /** perf profiles of every variant under UDP and TCP load and one-CPU TCP latency, per mode */
  profile: boolean;
  /** measured in turn: the nodes as the lab makes them, then with kube-proxy's rules added */
  nodeProfiles: NodeProfile[];
  /**
   * Another build's BPF objects: the run then measures only `baselineSubjects`, each beside itself
   * on these objects, and reports new / baseline per repetition instead of the comparison with
   * flannel (which stays in BENCHMARKS.md, never replaced by such a run).
   */
  baselineObjects?: string;
  baselineSubjects?: (keyof typeof baselinePairs)[];
}

/** The least new / baseline any repetition may show on UDP pps and TCP: no datapath regression beyond noise. */
const BASELINE_BOUND = 0.97;

/** The commit a baseline directory was built from, where scripts/bpf-objects-at.sh wrote it down. */
function baselineCommit(dir: string): string | undefined {
  const file = `${dir}/COMMIT`;
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
}

/** Waits for a quiet machine; refuses to measure on a busy one. */
async function quiet(max: number, say: (m: string) => void): Promise<void> {
  for (let i = 0; i < 10; i++) {
    const { share, top } = await otherCpuOver(1000);
    if (share <= max) return;
    say(`  other processes use ${(share * 100).toFixed(0)}% of the CPUs (most: ${top}); waiting`);
    await new Promise((r) => setTimeout(r, 3000));
  }
  throw new Error(`refusing to measure: other processes kept more than ${(max * 100).toFixed(0)}% of the CPUs busy`);
}

/** One sample in which no other program took a significant share of the CPUs, or an error saying which did; `discards` counts the ones thrown away. */
async function cleanSample(e: Endpoints, o: BenchOptions, label: string, say: (m: string) => void, discards: { count: number }): Promise<Sample> {
  for (let attempt = 1; attempt <= 3; attempt++) {
    await quiet(o.maxBackground, say);
    const s = await measure(e, o.seconds);
    if (s.otherCpuShare <= o.maxBackground) return s;
    discards.count++;
    say(`  ${label}: discarded, other processes took ${(s.otherCpuShare * 100).toFixed(0)}% of the CPUs during it (most: ${s.otherCpuTop})`);
  }
  throw new Error(`refusing to report ${label}: other processes took more than ${(o.maxBackground * 100).toFixed(0)}% of the CPUs in 3 attempts`);
}

/**
 * The wire mode is only what it claims if frames crossed at MTU size, and if the receiving node
 * aggregated a plain TCP flow (host-gw, raw veth, node to node) with GRO. Tunnelled flows may legitimately
 * not be aggregated (GRO knows VXLAN only through the kernel's own tunnel socket).
 */
function checkRegime(mode: UnderlayMode, v: Variant, r: Regime): void {
  if (mode !== 'wire') return;
  if (r.wireMax > 1518) throw new Error(`wire mode not in effect for ${v}: a ${r.wireMax}-byte frame crossed the underlay (segmentation offload still on)`);
  if ((v === 'host-gw' || v === 'raw-veth' || v === 'node-to-node') && r.receiverMax <= 1518)
    throw new Error(`wire mode not in effect for ${v}: the receiver took in nothing larger than ${r.receiverMax} bytes (GRO not aggregating)`);
}

/** Hand-written analysis below this marker survives a new run; the numbers above it are replaced. */
export const ANALYSIS_MARKER = '<!-- analysis: written by hand, kept when twill bench rewrites this file -->';

/**
 * The hand-written analysis of the file being replaced. It must name the commit it quotes; when it
 * does not name this run's, a warning goes above it (and to the console): its numbers are another
 * run's until someone rewrites it.
 */
export function keptAnalysis(previous: string, commit: string): { text: string; stale: boolean } {
  const at = previous.indexOf(ANALYSIS_MARKER);
  if (at < 0) return { text: '', stale: false };
  const analysis = previous.slice(at);
  const stale = !analysis.includes(commit);
  const warning = `> **Stale analysis:** the text below does not name this run's commit (${commit}); its numbers are from another run and may not match the tables above.\n\n`;
  return { text: '\n' + (stale ? analysis.replace(ANALYSIS_MARKER, `${ANALYSIS_MARKER}\n${warning}`) : analysis), stale };
}

/** The commit being measured, marked when the working tree differs from it (the report itself aside). */
function measuredCommit(): string {
  const git = (args: string[]) => spawnSync('git', args, { cwd: repoRoot(), encoding: 'utf8' });
  const head = git(['rev-parse', '--short', 'HEAD']);
  if (head.status !== 0) return 'unknown (not a git checkout)';
  const dirty = git(['diff', '--quiet', 'HEAD', '--', '.', ':!BENCHMARKS.md']).status !== 0;
  return `${head.stdout.trim()}${dirty ? ' with uncommitted changes' : ''}`;
}

export async function runBench(o: BenchOptions, say: (m: string) => void): Promise<string> {
  const started = new Date();
  const commit = measuredCommit();
  const discards = { count: 0 };
  const endpoints = new Map<Variant, Endpoints>();
  const results: ModeResult[] = [];
  const sections: string[] = [];
  const subjects = o.baselineSubjects ?? ['twill'];
  const measured: Variant[] = o.baselineObjects ? subjects.flatMap((v) => [v, baselinePairs[v]]) : variants;
  const loadBefore = os.loadavg()[0];
  try {
    if (o.modes.length > 0) for (const v of measured) endpoints.set(v, await setUp(v, (m) => say(`setup ${m}`), o.baselineObjects));
    for (const nodes of o.modes.length > 0 ? o.nodeProfiles : []) {
      if (nodes === 'kube-proxy') {
        for (const v of measured) await addKubeProxy(endpoints.get(v)!);
        say("kube-proxy's rules installed on every node");
      }
      for (const mode of o.modes) {
        const tag = `[${mode}, ${nodes}]`;
        for (const v of measured) await setUnderlayMode(endpoints.get(v)!, mode);
        const reg = new Map<Variant, Regime>();
        for (const v of measured) {
          reg.set(v, await regime(endpoints.get(v)!, 1));
          checkRegime(mode, v, reg.get(v)!);
        }
        say(
          `${tag} frame sizes (largest on the underlay / largest taken in by the receiver): ${measured.map((v) => `${v} ${reg.get(v)!.wireMax}/${reg.get(v)!.receiverMax}`).join(', ')}`,
        );
        const byVariant = new Map<Variant, Sample[]>(measured.map((v) => [v, []]));
        for (let rep = 1; rep <= o.reps; rep++) {
          // Against a baseline, each pair runs in alternating order: neither side always goes first.
          const order = o.baselineObjects && rep % 2 === 0 ? [...measured].reverse() : measured;
          for (const v of order) {
            const s = await cleanSample(endpoints.get(v)!, o, `${mode} ${nodes} rep ${rep} ${v}`, say, discards);
            byVariant.get(v)!.push(s);
            say(
              `${tag} rep ${rep}/${o.reps} ${v.padEnd(12)} tcp1 ${s.tcp1Gbps.toFixed(2)} Gbit/s, udp ${s.udpKpps.toFixed(0)} kpps, ${s.cpuUsPerPkt.toFixed(1)} us/pkt, tcp_lat ${s.tcpLatSameCpuUs.toFixed(1)} us`,
            );
          }
        }
        results.push({ mode, nodes, samples: byVariant, regimes: reg });
        if (o.profile) {
          const profiles: VariantProfile[] = [];
          for (const workload of Object.keys(profileWorkloads) as ProfileWorkload[]) {
            for (const v of measured) {
              await quiet(o.maxBackground, say);
              profiles.push({ variant: v, ...(await profile(endpoints.get(v)!, workload, o.seconds)) });
            }
          }
          say(`${tag} profiled ${measured.length} variants under UDP and TCP load and one-CPU TCP latency`);
          sections.push(profileSection(mode, nodes, profiles));
        }
      }
    }
  } finally {
    // Without a datapath mode no variant's lab was made: labs of those names are someone else's.
    if (o.modes.length > 0) await tearDown();
  }
  if (o.cniPods > 0) {
    await quiet(o.maxBackground, say);
    sections.push(cniCostSection(await cniCostBench(o.cniPods, say, o.cniLab)));
  }
  if (o.leases > 0) sections.push(controlPlaneSection(await controlPlaneBench(o.leases, o.puts, say)));
  if (o.kubeNodes > 0) sections.push(kubeScaleSection(await kubeScaleBench(o.kubeNodes, o.kubeAnnotations, say)));
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const machine = `${os.cpus().length} x ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}`;
  if (o.baselineObjects) {
    const doc = renderBaselineReport(
      {
        command: o.command,
        started,
        commit,
        machine,
        reps: o.reps,
        seconds: o.seconds,
        discarded: discards.count,
        baselineObjects: o.baselineObjects,
        baselineCommit: baselineCommit(o.baselineObjects),
        load: [loadBefore, os.loadavg()[0]],
        bound: BASELINE_BOUND,
      },
      results,
      subjects,
    );
    if (o.out) writeFileSync(o.out, doc);
    return doc + sections.join('\n');
  }
  const doc = renderReport(
    {
      command: o.command,
      started,
      commit,
      flanneldVersion: flanneld().version,
      discarded: discards.count,
      reps: o.reps,
      seconds: o.seconds,
      machine,
      sections,
    },
    results,
  );
  if (o.out) {
    const kept = keptAnalysis(existsSync(o.out) ? readFileSync(o.out, 'utf8') : '', commit.split(' ')[0]);
    if (kept.stale) say(`warning: the hand-written analysis in ${o.out} does not name commit ${commit}: its numbers are another run's; rewrite it`);
    writeFileSync(o.out, doc + kept.text);
  }
  return doc;
}
