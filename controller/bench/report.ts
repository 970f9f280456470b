import { ipv6Variants, type BaselineVariant, type NodeProfile, type Profile, type Sample, type UnderlayMode, type Variant } from './bench.js';

/*
 * Pure part of the benchmark: medians, ratios to kernel VXLAN, the issue's targets and the
 * Markdown report. Kept apart from the measuring so it can be unit-tested.
 */

export const variants: Variant[] = [
  'twill',
  'twill-stack',
  'twill-xdp',
  'twill-host-gw',
  'twill-direct',
  'kernel-vxlan',
  'host-gw',
  'raw-veth',
  'node-to-node',
  'twill-v6',
  'kernel-vxlan-v6',
];
/** The IPv4 variants, each compared with kernel VXLAN over IPv4; the IPv6 ones are compared with each other. */
const ipv4Variants = variants.filter((v) => !ipv6Variants.includes(v));
/** The variants that route pods directly, compared with flannel's host-gw as well as with kernel VXLAN. */
const directVariants: Variant[] = ['twill-host-gw', 'twill-direct'];
type Metric = Exclude<keyof Sample, 'otherCpuShare' | 'otherCpuTop'>;
type Medians = Map<Variant, Record<Metric, number>>;
export type Regime = { wireMax: number; receiverMax: number };

const metrics: { key: Metric; label: string; better: 'higher' | 'lower' }[] = [
  { key: 'tcp1Gbps', label: 'TCP 1 stream (Gbit/s)', better: 'higher' },
  { key: 'tcp4Gbps', label: 'TCP 4 streams (Gbit/s)', better: 'higher' },
  { key: 'udpKpps', label: 'UDP 64 B received (kpps)', better: 'higher' },
  { key: 'cpuUsPerPkt', label: 'CPU per received 64 B datagram (us)', better: 'lower' },
  { key: 'tcpLatSameCpuUs', label: 'TCP latency, one CPU (us)', better: 'lower' },
  { key: 'udpLatSameCpuUs', label: 'UDP latency, one CPU (us)', better: 'lower' },
  { key: 'tcpLatTwoCpuUs', label: 'TCP latency, two CPUs (us)', better: 'lower' },
  { key: 'udpLatTwoCpuUs', label: 'UDP latency, two CPUs (us)', better: 'lower' },
];
const byKey = new Map(metrics.map((m) => [m.key, m]));

/** The nearest-rank p-th percentile. */
export const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)];

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The smallest and largest repetition of each metric, per variant: printed next to the median. */
type Spreads = Map<Variant, Record<Metric, { min: number; max: number }>>;

function spreads(samples: Map<Variant, Sample[]>): Spreads {
  return new Map(
    [...samples].map(([v, ss]) => [
      v,
      Object.fromEntries(metrics.map((m) => [m.key, { min: Math.min(...ss.map((s) => s[m.key])), max: Math.max(...ss.map((s) => s[m.key])) }])) as Record<
        Metric,
        { min: number; max: number }
      >,
    ]),
  );
}

function medians(samples: Map<Variant, Sample[]>): Medians {
  return new Map(
    [...samples].map(([v, ss]) => [v, Object.fromEntries(metrics.map((m) => [m.key, median(ss.map((s) => s[m.key]))])) as Record<Metric, number>]),
  );
}

interface TargetResult {
  target: string;
  measured: string;
  met: boolean;
  /** how far from the target, in the direction that matters ("" when met) */
  shortBy: string;
}

/**
 * A ratio subject/reference that must be at least (higher-is-better) or at most (lower) `bound`.
 * Repetitions are interleaved, so repetition i of the subject is compared with repetition i of
 * the reference: the target is met only when every repetition's ratio meets it, not the median
 * alone. `measured` is the ratio of the medians, with the range of the per-repetition ratios.
 */
export function ratioTarget(samples: Map<Variant, Sample[]>, subject: Variant, metric: Metric, bound: number, against: Variant = 'kernel-vxlan'): TargetResult {
  const m = byKey.get(metric)!;
  const a = samples.get(subject) ?? [];
  const b = samples.get(against) ?? [];
  const name = against === 'kernel-vxlan' ? 'kernel VXLAN' : against === 'kernel-vxlan-v6' ? 'kernel VXLAN over IPv6' : against;
  const target = `${m.label}: ${subject} / ${name} ${m.better === 'higher' ? '>=' : '<='} ${bound.toFixed(2)}x`;
  // No target is met without data: a missing variant, no repetitions, or a zero or non-finite
  // sample (a failed measurement) would otherwise give an empty minimum or an infinite ratio.
  const usable = (xs: Sample[]) => xs.length > 0 && xs.every((s) => Number.isFinite(s[metric]) && s[metric] > 0);
  if (!usable(a) || !usable(b) || a.length !== b.length) {
    const why = [
      !usable(a) && `${subject} has ${a.length ? 'a zero or missing sample' : 'no samples'}`,
      !usable(b) && `${against} has ${b.length ? 'a zero or missing sample' : 'no samples'}`,
      usable(a) && usable(b) && `${a.length} repetitions against ${b.length}`,
    ]
      .filter(Boolean)
      .join('; ');
    return { target, measured: 'no data', met: false, shortBy: `not measured: ${why}` };
  }
  const ratio = median(a.map((s) => s[metric])) / median(b.map((s) => s[metric]));
  const perRep = a.map((s, i) => s[metric] / b[i][metric]);
  const worst = m.better === 'higher' ? Math.min(...perRep) : Math.max(...perRep);
  const meets = (r: number) => (m.better === 'higher' ? r >= bound : r <= bound);
  const met = meets(worst);
  const range = perRep.length > 1 ? ` (${Math.min(...perRep).toFixed(2)}-${Math.max(...perRep).toFixed(2)})` : '';
  return {
    target,
    measured: `${ratio.toFixed(2)}x${range}`,
    met,
    shortBy: met
      ? ''
      : meets(ratio)
        ? `the median meets it, ${perRep.filter((r) => !meets(r)).length} of ${perRep.length} repetitions do not`
        : `${((Math.abs(ratio - bound) / bound) * 100).toFixed(0)}% ${m.better === 'higher' ? 'below' : 'above'} the bound`,
  };
}

/**
 * The fast path's targets (issue 11), for twill as shipped. veth mode: UDP 64 B pps >= 1.5x
 * kernel VXLAN and >= 1.1x host-gw; CPU per packet <= 0.7x; TCP latency on one CPU <= 0.8x and
 * no worse than host-gw; TCP 1 and 4 streams >= 1.0x. Wire mode: TCP 1 and 4 streams >= 1.0x,
 * UDP pps >= 1.3x.
 */
export function evaluateTargets(mode: UnderlayMode, samples: Map<Variant, Sample[]>, subject: Variant = 'twill'): TargetResult[] {
  const t = (metric: Metric, bound: number, against?: Variant) => ratioTarget(samples, subject, metric, bound, against);
  if (mode === 'veth') {
    return [
      t('udpKpps', 1.5),
      t('udpKpps', 1.1, 'host-gw'),
      t('cpuUsPerPkt', 0.7),
      t('tcpLatSameCpuUs', 0.8),
      t('tcpLatSameCpuUs', 1.0, 'host-gw'),
      t('tcp1Gbps', 1.0),
      t('tcp4Gbps', 1.0),
    ];
  }
  return [t('tcp1Gbps', 1.0), t('tcp4Gbps', 1.0), t('udpKpps', 1.3)];
}

/**
 * Against the nodes themselves (issue 26): twill as shipped, pod to pod, against the same kind of
 * nodes talking over their underlay addresses: UDP 64 B pps >= 0.9x, CPU per packet <= 1.1x, TCP
 * latency on one CPU <= 1.05x, TCP 1 stream >= 1.0x.
 */
export function evaluateNodeTargets(samples: Map<Variant, Sample[]>): TargetResult[] {
  const t = (metric: Metric, bound: number) => ratioTarget(samples, 'twill', metric, bound, 'node-to-node');
  return [t('udpKpps', 0.9), t('cpuUsPerPkt', 1.1), t('tcpLatSameCpuUs', 1.05), t('tcp1Gbps', 1.0)];
}

/**
 * The IPv6 rows (issue 13): the fast path's targets against kernel VXLAN, for twill's IPv6 against
 * flannel-v6.<VNI>. There is no IPv6 host-gw to hold twill to, so the host-gw targets are not
 * repeated.
 */
export function evaluateIpv6Targets(mode: UnderlayMode, samples: Map<Variant, Sample[]>): TargetResult[] {
  const t = (metric: Metric, bound: number) => ratioTarget(samples, 'twill-v6', metric, bound, 'kernel-vxlan-v6');
  if (mode === 'veth') return [t('udpKpps', 1.5), t('cpuUsPerPkt', 0.7), t('tcpLatSameCpuUs', 0.8), t('tcp1Gbps', 1.0), t('tcp4Gbps', 1.0)];
  return [t('tcp1Gbps', 1.0), t('tcp4Gbps', 1.0), t('udpKpps', 1.3)];
}

/**
 * The backends' targets (issue 12), in every mode: twill's host-gw against flannel's host-gw
 * routes, UDP 64 B pps >= 1.3x, TCP latency on one CPU <= 0.85x, TCP 1 and 4 streams >= 1.0x.
 */
export function evaluateBackendTargets(samples: Map<Variant, Sample[]>): TargetResult[] {
  const t = (metric: Metric, bound: number) => ratioTarget(samples, 'twill-host-gw', metric, bound, 'host-gw');
  return [t('udpKpps', 1.3), t('tcpLatSameCpuUs', 0.85), t('tcp1Gbps', 1.0), t('tcp4Gbps', 1.0)];
}

export interface ModeResult {
  mode: UnderlayMode;
  nodes: NodeProfile;
  samples: Map<Variant, Sample[]>;
  regimes: Map<Variant, Regime>;
}

interface ReportContext {
  command: string;
  started: Date;
  machine: string;
  reps: number;
  seconds: number;
  /** samples thrown away because other programs took the CPUs during them (each was measured again) */
  discarded: number;
  /** the commit measured (`git rev-parse --short HEAD`), which the hand-written analysis must name */
  commit: string;
  /** the release of the real flanneld the reference variants ran */
  flanneldVersion: string;
  /** extra sections (control-plane scale, profiles), already Markdown */
  sections?: string[];
}

const modeText: Record<UnderlayMode, string> = {
  wire: 'TSO, GSO and UDP-tunnel segmentation off and GRO on at both ends of every underlay link: frames cross at MTU size and the receiving node aggregates them, as behind a real NIC.',
  veth: "veth defaults: GSO super-packets cross the underlay whole, which no real NIC does; it flatters every variant, and any XDP program on a veth takes that away from its peer's transmit side (the kernel drops the peer's GSO features), which is what twill-xdp pays here.",
};

const nodesText: Record<NodeProfile, string> = {
  bare: 'Nodes: bare (no NAT rules; conntrack tracks nothing).',
  'kube-proxy': "Nodes: with kube-proxy's rules (conntrack active, as on a Kubernetes node).",
};

const profileText: Record<NodeProfile, string> = {
  bare: "**bare**, the nodes as the lab makes them (flannel's FORWARD accepts, no NAT rules, so conntrack tracks nothing)",
  'kube-proxy':
    "**kube-proxy**, with kube-proxy's iptables rules for one ClusterIP Service added on every node of every variant, so that conntrack is active in the nodes' namespaces as on any Kubernetes node",
};

/** What the run measured of the node profiles: the report says only what was run. */
function profilesText(measured: Set<NodeProfile>): string {
  const run = (['bare', 'kube-proxy'] as const).filter((p) => measured.has(p));
  if (run.length === 2)
    return `Two node profiles, measured in turn on the same labs: ${profileText.bare}, then ${profileText['kube-proxy']}. The measured traffic is pod to pod in both.`;
  if (run.length === 1) return `One node profile in this run (\`--nodes ${run[0]}\`): ${profileText[run[0]]}. The measured traffic is pod to pod.`;
  return 'No datapath mode was measured in this run.';
}

export function renderReport(ctx: ReportContext, modes: ModeResult[]): string {
  const lines = [
    '# Benchmarks',
    '',
    `Command: \`${ctx.command}\``,
    '',
    `Date: ${ctx.started.toISOString()}. Commit: ${ctx.commit}. Machine: ${ctx.machine}.`,
    '',
    `Each number is the median of ${ctx.reps} interleaved repetitions (every variant in turn, per repetition), ${ctx.seconds} s per measurement, on the same 2-node topology: a pod behind cni0 on each node, nodes on a shared underlay bridge. The agents (and flanneld) and etcd are stopped while the measurements run; before that, one ping each way between twill's nodes, over each family's underlay address, puts each peer in twill_next_hops (and twill_next_hops6 in the dual-stack labs), as a running agent keeps them while its peers talk. Variants: twill as shipped (the fast path; decap hook auto, which is tc on this veth underlay), twill-stack (--fast-path=false: every packet crosses both nodes' stacks), twill-xdp (the fast path with decap in XDP), twill-host-gw (twill with flannel's host-gw backend: no encapsulation, pod MTU 1500), twill-direct (twill with vxlan DirectRouting; the two nodes share a segment, so pods are routed directly at pod MTU 1450), kernel VXLAN and host-gw each set up by the real flanneld ${ctx.flanneldVersion} on both nodes, run without --ip-masq as twill's nodes are (host-gw: pod MTU 1500), a raw veth between the two pods (this machine's limit), and node-to-node (two nodes made as twill's, talking over their underlay addresses: no pod, no overlay; what an overlay is held to); then IPv6 pod traffic in dual-stack labs, twill-v6 (twill as shipped, between the pods' IPv6 addresses: IPv6 VXLAN written by the programs, GSO packets left to twill-rx's vxlan driver) against kernel-vxlan-v6 (flanneld's flannel-v6.<VNI>), compared with each other (pod MTU 1450 in both; IPv6 VXLAN adds 70 bytes, so the IPv6 route's MTU is 1430). Clients run on CPU 0 and servers on CPU 1 (qperf's one-CPU latency: both on CPU 0). A ratio is variant / kernel VXLAN in the same run, or, for the directly routed variants, also variant / host-gw, and twill / node-to-node. CPU per packet is the whole machine's busy time (both nodes, both pods, iperf3) during the UDP run divided by the datagrams received. Each cell is the median, with the smallest and largest repetition below it; a target is met only when the ratio of every repetition (repetition i of one variant against repetition i of the other) meets it. ${ctx.discarded ? `${ctx.discarded} sample${ctx.discarded > 1 ? 's were' : ' was'} discarded because other programs took a noticeable share of the CPUs during ${ctx.discarded > 1 ? 'them' : 'it'}, and measured again.` : "No sample was discarded for other programs' CPU use."}`,
    '',
    profilesText(new Set(modes.map((m) => m.nodes))),
    '',
  ];
  for (const { mode, nodes, samples, regimes } of modes) {
    const med = medians(samples);
    const spread = spreads(samples);
    const kv = med.get('kernel-vxlan')!;
    lines.push(`## Underlay mode: ${mode}; nodes: ${nodes}`, '', modeText[mode], nodesText[nodes], '');
    lines.push(
      `Frames seen (largest on the underlay / largest the receiving node took in after GRO, bytes): ${variants.map((v) => `${v} ${regimes.get(v)!.wireMax} / ${regimes.get(v)!.receiverMax}`).join('; ')}.`,
      '',
    );
    const hg = med.get('host-gw')!;
    const kv6 = med.get('kernel-vxlan-v6')!;
    const nn = med.get('node-to-node')!;
    const ratioHeads = [
      ...ipv4Variants.filter((v) => v !== 'kernel-vxlan').map((v) => `${v} / kernel`),
      ...directVariants.map((v) => `${v} / host-gw`),
      'twill / node-to-node',
      'twill-v6 / kernel-v6',
    ];
    lines.push(`| metric | ${variants.join(' | ')} | ${ratioHeads.join(' | ')} |`);
    lines.push(`|---|${variants.map(() => '--:').join('|')}|${ratioHeads.map(() => '--:').join('|')}|`);
    for (const m of metrics) {
      const digits = m.key.endsWith('Gbps') ? 2 : 1;
      const cells = variants.map((v) => {
        const r = spread.get(v)![m.key];
        return `${med.get(v)![m.key].toFixed(digits)}${r.min === r.max ? '' : `<br>${r.min.toFixed(digits)}-${r.max.toFixed(digits)}`}`;
      });
      const ratios = [
        ...ipv4Variants.filter((v) => v !== 'kernel-vxlan').map((v) => `${(med.get(v)![m.key] / kv[m.key]).toFixed(2)}x`),
        ...directVariants.map((v) => `${(med.get(v)![m.key] / hg[m.key]).toFixed(2)}x`),
        `${(med.get('twill')![m.key] / nn[m.key]).toFixed(2)}x`,
        `${(med.get('twill-v6')![m.key] / kv6[m.key]).toFixed(2)}x`,
      ];
      lines.push(`| ${m.label} | ${cells.join(' | ')} | ${ratios.join(' | ')} |`);
    }
    lines.push('', '| target | measured | met |', '|---|--:|---|');
    for (const t of [
      ...evaluateTargets(mode, samples),
      ...evaluateBackendTargets(samples),
      ...evaluateNodeTargets(samples),
      ...evaluateIpv6Targets(mode, samples),
    ])
      lines.push(`| ${t.target} | ${t.measured} | ${t.met ? 'yes' : `no, ${t.shortBy}`} |`);
    lines.push('');
  }
  for (const s of ctx.sections ?? []) lines.push(s, '');
  return lines.join('\n');
}

export interface VariantProfile extends Profile {
  variant: Variant;
}

/** The gaps a profile has to explain: a subject against what it is held to, where both were profiled. */
const costPairs: [Variant, Variant][] = [
  ['twill', 'node-to-node'],
  ['twill-v6', 'kernel-vxlan-v6'],
  ['twill', 'twill-baseline'],
  ['twill-v6', 'twill-v6-baseline'],
];

/**
 * Pure: where one variant spends more CPU than another per unit of the same work, symbol by
 * symbol, largest difference first; what the listed symbols do not cover is the last row.
 */
export function costDifference(subject: NonNullable<Profile['cost']>, reference: NonNullable<Profile['cost']>, rows = 10) {
  const ref = new Map(reference.symbols.map((s) => [s.symbol, s.us]));
  const sub = new Map(subject.symbols.map((s) => [s.symbol, s.us]));
  const diffs = [...new Set([...sub.keys(), ...ref.keys()])]
    .map((symbol) => ({ symbol, subject: sub.get(symbol) ?? 0, reference: ref.get(symbol) ?? 0 }))
    .map((d) => ({ ...d, difference: d.subject - d.reference }))
    .sort((a, b) => b.difference - a.difference);
  const shown = diffs.slice(0, rows);
  const rest = {
    symbol: 'every other symbol, and what perf did not list',
    subject: subject.busyUs - shown.reduce((a, d) => a + d.subject, 0),
    reference: reference.busyUs - shown.reduce((a, d) => a + d.reference, 0),
  };
  return {
    total: { subject: subject.busyUs, reference: reference.busyUs, difference: subject.busyUs - reference.busyUs },
    rows: [...shown, { ...rest, difference: rest.subject - rest.reference }],
  };
}

function costSection(rows: VariantProfile[]): string[] {
  const lines: string[] = [];
  for (const [subject, reference] of costPairs) {
    const a = rows.find((r) => r.variant === subject)?.cost;
    const b = rows.find((r) => r.variant === reference)?.cost;
    if (!a || !b || a.unit !== b.unit) continue;
    const d = costDifference(a, b);
    const us = (v: number) => v.toFixed(a.unit === 'MB' ? 1 : 2);
    lines.push(
      `Busy CPU per ${a.unit}, ${subject} against ${reference}: ${us(d.total.subject)} against ${us(d.total.reference)} us (${d.total.difference >= 0 ? '+' : ''}${us(d.total.difference)} us). The symbols that make the difference, largest first:`,
      '',
      `| symbol | ${subject} (us per ${a.unit}) | ${reference} | difference |`,
      '|---|--:|--:|--:|',
      ...d.rows.map((r) => `| ${r.symbol} | ${us(r.subject)} | ${us(r.reference)} | ${r.difference >= 0 ? '+' : ''}${us(r.difference)} |`),
      '',
    );
  }
  return lines;
}

/** perf's view of each variant under the same load: the evidence for where a gap comes from. */
export function profileSection(mode: UnderlayMode, nodes: NodeProfile, profiles: VariantProfile[]): string {
  const lines = [
    `### Profiles, ${mode} mode, ${nodes} nodes`,
    '',
    'System-wide `perf record` (cpu-clock) during one run of each workload: the busiest kernel symbols, each as a share of all non-idle samples (user space included in the total). Below each table, where a target holds one variant to another, the same samples as CPU time per unit of work (a datagram received, a megabyte received, a round trip), which compares across variants where shares cannot: the symbols where the subject spends the most more.',
    '',
  ];
  for (const workload of [...new Set(profiles.map((p) => p.workload))]) {
    const rows = profiles.filter((p) => p.workload === workload);
    const depth = Math.max(...rows.map((r) => r.top.length));
    lines.push(`${workload}:`, '', `| # | ${rows.map((r) => r.variant).join(' | ')} |`, `|--:|${rows.map(() => '---').join('|')}|`);
    for (let i = 0; i < depth; i++)
      lines.push(`| ${i + 1} | ${rows.map((r) => (r.top[i] ? `${r.top[i].symbol} ${r.top[i].percent.toFixed(1)}%` : '')).join(' | ')} |`);
    lines.push('', ...costSection(rows));
  }
  return lines.join('\n');
}

/** What a --baseline-objects run compares: each twill variant measured beside itself on the baseline's objects. */
export const baselinePairs: Record<'twill' | 'twill-v6', BaselineVariant> = { twill: 'twill-baseline', 'twill-v6': 'twill-v6-baseline' };

/** The metrics a datapath change must not regress, new / baseline per repetition. */
const baselineMetrics: Metric[] = ['udpKpps', 'tcp1Gbps', 'tcp4Gbps'];

export interface BaselineComparison {
  subject: Variant;
  baseline: Variant;
  /** per repetition i: subject's repetition i / baseline's repetition i, per metric */
  ratios: Record<string, number>[];
  /** the smallest ratio of any repetition and metric */
  worst: number;
  /** every ratio >= the bound (no data: false) */
  met: boolean;
}

/**
 * Repetition i of the subject against repetition i of the baseline (they ran back to back), for
 * UDP pps and TCP with 1 and 4 streams: no regression only if every one of those ratios is at
 * least `bound`, not the median alone.
 */
export function baselineComparison(samples: Map<Variant, Sample[]>, subject: Variant, baseline: Variant, bound: number): BaselineComparison {
  const a = samples.get(subject) ?? [];
  const b = samples.get(baseline) ?? [];
  const ratios = a.length === b.length ? a.map((s, i) => Object.fromEntries(baselineMetrics.map((m) => [m, s[m] / b[i][m]]))) : [];
  const all = ratios.flatMap((r) => Object.values(r));
  const worst = all.length ? Math.min(...all) : NaN;
  return { subject, baseline, ratios, worst, met: all.length > 0 && all.every((r) => Number.isFinite(r) && r >= bound) };
}

interface BaselineContext {
  command: string;
  started: Date;
  machine: string;
  commit: string;
  reps: number;
  seconds: number;
  discarded: number;
  /** the baseline's objects, and the commit they were built from where the directory says */
  baselineObjects: string;
  baselineCommit?: string;
  /** the 1-minute load average before and after the measurements: the noise every ratio carries */
  load: [number, number];
  bound: number;
}

/** The report of a --baseline-objects run: per mode and repetition, new / baseline, and the verdict. */
export function renderBaselineReport(ctx: BaselineContext, modes: ModeResult[], subjects: (keyof typeof baselinePairs)[]): string {
  const lines = [
    '# Datapath against a baseline',
    '',
    `Command: \`${ctx.command}\``,
    '',
    `Date: ${ctx.started.toISOString()}. Commit: ${ctx.commit}. Baseline: the BPF objects in ${ctx.baselineObjects}${ctx.baselineCommit ? `, built at ${ctx.baselineCommit}` : ''}. Machine: ${ctx.machine}. Load average (1 min) ${ctx.load[0].toFixed(2)} before, ${ctx.load[1].toFixed(2)} after.`,
    '',
    `${ctx.reps} interleaved repetitions, ${ctx.seconds} s per measurement; the agent, the labs and everything but the BPF objects are the same for both. A ratio is this commit / the baseline, repetition i against repetition i. ${ctx.discarded ? `${ctx.discarded} sample(s) discarded for other programs' CPU use and measured again.` : "No sample was discarded for other programs' CPU use."}`,
    '',
  ];
  const verdicts: boolean[] = [];
  for (const { mode, nodes, samples } of modes) {
    lines.push(`## ${mode} mode, ${nodes} nodes`, '', '| variant | rep | UDP 64 B pps | TCP 1 stream | TCP 4 streams |', '|---|--:|--:|--:|--:|');
    for (const s of subjects) {
      const c = baselineComparison(samples, s, baselinePairs[s], ctx.bound);
      verdicts.push(c.met);
      if (c.ratios.length === 0) lines.push(`| ${s} / ${c.baseline} | - | no data | no data | no data |`);
      c.ratios.forEach((r, i) => lines.push(`| ${s} / ${c.baseline} | ${i + 1} | ${baselineMetrics.map((m) => `${r[m].toFixed(3)}x`).join(' | ')} |`));
      lines.push(`| ${s}: every repetition >= ${ctx.bound}x | | ${c.met ? 'yes' : 'no'} (worst ${Number.isFinite(c.worst) ? c.worst.toFixed(3) : '-'}x) | | |`);
    }
    lines.push('');
  }
  const met = verdicts.length > 0 && verdicts.every(Boolean);
  lines.push(
    `Verdict: ${met ? `every repetition is >= ${ctx.bound}x on UDP pps and TCP` : `not every repetition is >= ${ctx.bound}x on UDP pps and TCP`}.`,
    '',
  );
  return lines.join('\n');
}
