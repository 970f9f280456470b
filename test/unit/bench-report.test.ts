import { describe, expect, it } from 'vitest';
import type { Sample, Variant } from '../../controller/bench/bench.js';
import { profileCost, profileShares } from '../../controller/bench/bench.js';
import { ANALYSIS_MARKER, keptAnalysis } from '../../controller/bench/run.js';
import {
  costDifference,
  evaluateBackendTargets,
  evaluateIpv6Targets,
  evaluateNodeTargets,
  evaluateTargets,
  median,
  profileSection,
  ratioTarget,
  renderReport,
  variants,
} from '../../controller/bench/report.js';

const sample = (over: Partial<Sample>): Sample => ({
  tcp1Gbps: 10,
  tcp4Gbps: 10,
  udpKpps: 100,
  cpuUsPerPkt: 10,
  tcpLatSameCpuUs: 10,
  udpLatSameCpuUs: 10,
  tcpLatTwoCpuUs: 10,
  udpLatTwoCpuUs: 10,
  otherCpuShare: 0,
  otherCpuTop: 'none',
  ...over,
});
const world = (twill: Partial<Sample>, hostGw: Partial<Sample> = {}) =>
  new Map<Variant, Sample[]>(variants.map((v) => [v, [sample(v === 'twill' ? twill : v === 'host-gw' ? hostGw : {})]]));

describe('bench report', () => {
  it('calls no target met without data: a variant with no samples, a zero sample, or unequal repetitions', () => {
    const ok = [sample({ udpKpps: 200 }), sample({ udpKpps: 200 })];
    const ref = [sample({}), sample({})];
    expect(
      ratioTarget(
        new Map<Variant, Sample[]>([
          ['twill', ok],
          ['kernel-vxlan', ref],
        ]),
        'twill',
        'udpKpps',
        1.5,
      ),
    ).toMatchObject({ met: true, measured: '2.00x (2.00-2.00)' });
    const cases: [string, Map<Variant, Sample[]>, string][] = [
      ['no samples at all', new Map(), 'twill has no samples; kernel-vxlan has no samples'],
      [
        'an empty subject',
        new Map<Variant, Sample[]>([
          ['twill', []],
          ['kernel-vxlan', ref],
        ]),
        'twill has no samples',
      ],
      [
        'an empty reference',
        new Map<Variant, Sample[]>([
          ['twill', ok],
          ['kernel-vxlan', []],
        ]),
        'kernel-vxlan has no samples',
      ],
      [
        'a zero sample',
        new Map<Variant, Sample[]>([
          ['twill', [ok[0], sample({ udpKpps: 0, cpuUsPerPkt: 0 })]],
          ['kernel-vxlan', ref],
        ]),
        'twill has a zero or missing sample',
      ],
      [
        'a zero reference (an infinite ratio)',
        new Map<Variant, Sample[]>([
          ['twill', ok],
          ['kernel-vxlan', [ref[0], sample({ udpKpps: 0, cpuUsPerPkt: 0 })]],
        ]),
        'kernel-vxlan has a zero or missing sample',
      ],
      [
        'unequal repetitions',
        new Map<Variant, Sample[]>([
          ['twill', ok],
          ['kernel-vxlan', [ref[0]]],
        ]),
        '2 repetitions against 1',
      ],
    ];
    for (const [what, samples, why] of cases) {
      // Lower-is-better too: an empty maximum would have been -Infinity, "met".
      for (const [metric, bound] of [
        ['udpKpps', 1.5],
        ['cpuUsPerPkt', 0.7],
      ] as const)
        expect(ratioTarget(samples, 'twill', metric, bound), what).toMatchObject({ met: false, measured: 'no data', shortBy: `not measured: ${why}` });
    }
  });

  it('takes the median of an odd and an even number of samples', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });

  it('checks the veth targets as ratios to kernel VXLAN and to host-gw, saying by how much one is missed', () => {
    const t = evaluateTargets(
      'veth',
      world({ udpKpps: 160, cpuUsPerPkt: 6, tcpLatSameCpuUs: 8, tcp1Gbps: 12, tcp4Gbps: 9 }, { udpKpps: 150, tcpLatSameCpuUs: 7 }),
    );
    const byName = new Map(t.map((r) => [r.target, r]));
    expect(byName.get('UDP 64 B received (kpps): twill / kernel VXLAN >= 1.50x')).toMatchObject({ measured: '1.60x', met: true });
    expect(byName.get('UDP 64 B received (kpps): twill / host-gw >= 1.10x')).toMatchObject({ measured: '1.07x', met: false, shortBy: '3% below the bound' });
    expect(byName.get('CPU per received 64 B datagram (us): twill / kernel VXLAN <= 0.70x')).toMatchObject({ measured: '0.60x', met: true });
    expect(byName.get('TCP latency, one CPU (us): twill / kernel VXLAN <= 0.80x')).toMatchObject({ measured: '0.80x', met: true });
    expect(byName.get('TCP latency, one CPU (us): twill / host-gw <= 1.00x')).toMatchObject({ measured: '1.14x', met: false });
    expect(byName.get('TCP 1 stream (Gbit/s): twill / kernel VXLAN >= 1.00x')).toMatchObject({ measured: '1.20x', met: true });
    expect(byName.get('TCP 4 streams (Gbit/s): twill / kernel VXLAN >= 1.00x')).toMatchObject({
      measured: '0.90x',
      met: false,
      shortBy: '10% below the bound',
    });
    expect(t).toHaveLength(7);
  });

  it('in wire mode wants TCP 1 and 4 streams no worse than kernel VXLAN and 1.3x its datagrams', () => {
    const t = evaluateTargets('wire', world({ tcp1Gbps: 13, udpKpps: 120 }));
    expect(t.map((r) => [r.target, r.met])).toEqual([
      ['TCP 1 stream (Gbit/s): twill / kernel VXLAN >= 1.00x', true],
      ['TCP 4 streams (Gbit/s): twill / kernel VXLAN >= 1.00x', true],
      ['UDP 64 B received (kpps): twill / kernel VXLAN >= 1.30x', false],
    ]);
  });

  it("checks twill's host-gw against flannel's host-gw routes: 1.3x the datagrams, 0.85x the latency, no less TCP", () => {
    const samples = new Map<Variant, Sample[]>(
      variants.map((v) => [v, [sample(v === 'twill-host-gw' ? { udpKpps: 140, tcpLatSameCpuUs: 8, tcp1Gbps: 9.5 } : {})]]),
    );
    expect(evaluateBackendTargets(samples).map((r) => [r.target, r.measured, r.met])).toEqual([
      ['UDP 64 B received (kpps): twill-host-gw / host-gw >= 1.30x', '1.40x', true],
      ['TCP latency, one CPU (us): twill-host-gw / host-gw <= 0.85x', '0.80x', true],
      ['TCP 1 stream (Gbit/s): twill-host-gw / host-gw >= 1.00x', '0.95x', false],
      ['TCP 4 streams (Gbit/s): twill-host-gw / host-gw >= 1.00x', '1.00x', true],
    ]);
  });

  it('holds twill, pod to pod, to the nodes themselves: 0.9x their datagrams, 1.1x their CPU per packet, 1.05x their latency, their TCP', () => {
    const samples = new Map<Variant, Sample[]>(
      variants.map((v) => [v, [sample(v === 'twill' ? { udpKpps: 67, cpuUsPerPkt: 13.2, tcpLatSameCpuUs: 10.5, tcp1Gbps: 10 } : {})]]),
    );
    expect(evaluateNodeTargets(samples).map((r) => [r.target, r.measured, r.met])).toEqual([
      ['UDP 64 B received (kpps): twill / node-to-node >= 0.90x', '0.67x', false],
      ['CPU per received 64 B datagram (us): twill / node-to-node <= 1.10x', '1.32x', false],
      ['TCP latency, one CPU (us): twill / node-to-node <= 1.05x', '1.05x', true],
      ['TCP 1 stream (Gbit/s): twill / node-to-node >= 1.00x', '1.00x', true],
    ]);
  });

  it("holds twill's IPv6 to the fast path's kernel-VXLAN targets against flanneld's IPv6 device, and to nothing against host-gw", () => {
    const samples = new Map<Variant, Sample[]>(
      variants.map((v) => [v, [sample(v === 'twill-v6' ? { udpKpps: 160, tcpLatSameCpuUs: 9 } : v === 'twill' ? { udpKpps: 1 } : {})]]),
    );
    expect(evaluateIpv6Targets('veth', samples).map((r) => [r.target, r.measured, r.met])).toEqual([
      ['UDP 64 B received (kpps): twill-v6 / kernel VXLAN over IPv6 >= 1.50x', '1.60x', true],
      ['CPU per received 64 B datagram (us): twill-v6 / kernel VXLAN over IPv6 <= 0.70x', '1.00x', false],
      ['TCP latency, one CPU (us): twill-v6 / kernel VXLAN over IPv6 <= 0.80x', '0.90x', false],
      ['TCP 1 stream (Gbit/s): twill-v6 / kernel VXLAN over IPv6 >= 1.00x', '1.00x', true],
      ['TCP 4 streams (Gbit/s): twill-v6 / kernel VXLAN over IPv6 >= 1.00x', '1.00x', true],
    ]);
    expect(evaluateIpv6Targets('wire', samples).map((r) => r.target)).toEqual([
      'TCP 1 stream (Gbit/s): twill-v6 / kernel VXLAN over IPv6 >= 1.00x',
      'TCP 4 streams (Gbit/s): twill-v6 / kernel VXLAN over IPv6 >= 1.00x',
      'UDP 64 B received (kpps): twill-v6 / kernel VXLAN over IPv6 >= 1.30x',
    ]);
  });

  it('renders every variant, the ratios, the regime and the targets', () => {
    const doc = renderReport(
      {
        command: 'twill bench --reps 1',
        started: new Date('2026-11-23T00:00:00Z'),
        commit: 'abc1234',
        flanneldVersion: 'v0.28.10',
        discarded: 0,
        machine: 'test machine',
        reps: 1,
        seconds: 1,
        sections: ['## extra'],
      },
      [
        {
          mode: 'wire',
          nodes: 'kube-proxy',
          samples: world({ tcp1Gbps: 5 }),
          regimes: new Map(variants.map((v) => [v, { wireMax: 1514, receiverMax: 64000 }])),
        },
      ],
    );
    expect(doc).toContain('Command: `twill bench --reps 1`');
    expect(doc).toContain('## Underlay mode: wire; nodes: kube-proxy');
    // Only what was run: this report measured the kube-proxy profile alone.
    expect(doc).toContain('One node profile in this run (`--nodes kube-proxy`)');
    expect(doc).not.toContain('Two node profiles');
    expect(doc).toContain(`| metric | ${variants.join(' | ')} |`);
    expect(doc).toContain('| TCP 1 stream (Gbit/s) | 5.00 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 0.50x |');
    expect(doc).toContain('| twill-host-gw / host-gw | twill-direct / host-gw | twill / node-to-node | twill-v6 / kernel-v6 |');
    expect(doc).toContain('| TCP 1 stream (Gbit/s): twill / node-to-node >= 1.00x | 0.50x | no, 50% below the bound |');
    expect(doc).toContain('| TCP 1 stream (Gbit/s): twill-v6 / kernel VXLAN over IPv6 >= 1.00x | 1.00x | yes |');
    expect(doc).toContain('| TCP latency, one CPU (us): twill-host-gw / host-gw <= 0.85x | 1.00x | no, 18% above the bound |');
    expect(doc).toContain('| TCP 1 stream (Gbit/s): twill / kernel VXLAN >= 1.00x | 0.50x | no, 50% below the bound |');
    expect(doc).toContain('twill 1514 / 64000');
    expect(doc.trimEnd().endsWith('## extra')).toBe(true);
  });

  it('prints each median with the spread of its repetitions, and meets a target only when every repetition does', () => {
    // kernel VXLAN 100 kpps each time; twill 160, 170 and 140: the median is 1.6x, one repetition 1.4x.
    const samples = new Map<Variant, Sample[]>(
      variants.map((v) => [v, [100, 100, 100].map((u, i) => sample({ udpKpps: v === 'twill' ? [160, 170, 140][i] : u }))]),
    );
    const udp = evaluateTargets('veth', samples).find((t) => t.target.startsWith('UDP 64 B received (kpps): twill / kernel VXLAN'))!;
    expect(udp).toMatchObject({ measured: '1.60x (1.40-1.70)', met: false, shortBy: 'the median meets it, 1 of 3 repetitions do not' });
    const doc = renderReport(
      { command: 'twill bench', started: new Date(0), commit: 'abc1234', flanneldVersion: 'v0.28.10', discarded: 2, machine: 'm', reps: 3, seconds: 1 },
      [{ mode: 'veth', nodes: 'bare', samples, regimes: new Map(variants.map((v) => [v, { wireMax: 1, receiverMax: 1 }])) }],
    );
    expect(doc).toContain('| UDP 64 B received (kpps) | 160.0<br>140.0-170.0 | 100.0 |');
    expect(doc).toContain('2 samples were discarded because other programs took');
    expect(doc).toContain('Commit: abc1234.');
  });

  it('says that no sample was discarded when none was', () => {
    const doc = renderReport(
      { command: 'twill bench', started: new Date(0), commit: 'abc1234', flanneldVersion: 'v0.28.10', discarded: 0, machine: 'm', reps: 1, seconds: 1 },
      [],
    );
    expect(doc).toContain("No sample was discarded for other programs' CPU use.");
    expect(doc).not.toContain('were discarded');
  });

  it('keeps the hand-written analysis, marked stale when it does not name the commit measured', () => {
    const previous = `# old tables\n${ANALYSIS_MARKER}\n## Reading these numbers\nAt commit abc1234, twill ...\n`;
    expect(keptAnalysis(previous, 'abc1234')).toEqual({ text: `\n${ANALYSIS_MARKER}\n## Reading these numbers\nAt commit abc1234, twill ...\n`, stale: false });
    const stale = keptAnalysis(previous, 'def5678');
    expect(stale.stale).toBe(true);
    expect(stale.text).toContain("**Stale analysis:** the text below does not name this run's commit (def5678)");
    expect(keptAnalysis('# no analysis', 'abc1234')).toEqual({ text: '', stale: false });
  });

  it('gives profile shares of all non-idle samples, the unlisted small symbols included', () => {
    // 50% idle; the listed kernel symbols 20% and 10%; the rest (20%) below perf's listing limit.
    const report = ['    50.00%  [k] pv_native_safe_halt', '    20.00%  [k] fib_table_lookup', '    10.00%  [.] iperf3_loop', '    10.00%  [k] veth_xmit'].join(
      '\n',
    );
    expect(profileShares(report)).toEqual([
      { percent: 40, symbol: 'fib_table_lookup' },
      { percent: 20, symbol: 'veth_xmit' },
    ]);
  });
});

describe('profile costs per unit of work', () => {
  // 2 s of both CPUs sampled (4e9 ns), half of it idle, over 1,000 packets.
  const report = (lines: string[]) => ["# Samples: 12K of event 'cpu-clock'", '# Event count (approx.): 4000000000', '#', ...lines].join('\n');
  const listing = report([
    '    50.00%  [k] pv_native_safe_halt',
    '    20.00%  [k] veth_xmit',
    '    10.00%  [.] iperf3_loop',
    '     5.00%  [k] fib_table_lookup',
  ]);

  it("turns perf's shares into busy CPU microseconds per unit, user space as one symbol, the unlisted in the total only", () => {
    expect(profileCost(listing, { unit: 'packet', count: 1000 })).toEqual({
      unit: 'packet',
      busyUs: 2000,
      symbols: [
        { symbol: 'veth_xmit', us: 800 },
        { symbol: '(user space)', us: 400 },
        { symbol: 'fib_table_lookup', us: 200 },
      ],
    });
    // Without an event count, or without work done, there is no cost to give.
    expect(profileCost(listing.replace(/^# Event count.*$/m, ''), { unit: 'packet', count: 1000 })).toBeUndefined();
    expect(profileCost(listing, { unit: 'packet', count: 0 })).toBeUndefined();
  });

  it('puts the symbols where the subject spends most more first, and the remainder last, so the rows add up to the totals', () => {
    const subject = {
      unit: 'packet' as const,
      busyUs: 12,
      symbols: [
        { symbol: 'veth_xmit', us: 3 },
        { symbol: 'twill_from_pod', us: 1 },
        { symbol: 'ip_rcv', us: 2 },
      ],
    };
    const reference = {
      unit: 'packet' as const,
      busyUs: 9,
      symbols: [
        { symbol: 'veth_xmit', us: 1 },
        { symbol: 'ip_rcv', us: 2.5 },
      ],
    };
    const d = costDifference(subject, reference, 3);
    expect(d.total).toEqual({ subject: 12, reference: 9, difference: 3 });
    expect(d.rows.map((r) => [r.symbol, r.difference])).toEqual([
      ['veth_xmit', 2],
      ['twill_from_pod', 1],
      ['ip_rcv', -0.5],
      ['every other symbol, and what perf did not list', 0.5],
    ]);
    expect(d.rows.reduce((a, r) => a + r.difference, 0)).toBeCloseTo(d.total.difference);
  });

  it("renders the difference under the workload's table, for the pairs a target holds to each other only", () => {
    const cost = (busyUs: number) => ({ unit: 'packet' as const, busyUs, symbols: [{ symbol: 'veth_xmit', us: busyUs / 2 }] });
    const p = (variant: Variant, busyUs: number) => ({
      variant,
      workload: 'UDP 64 B datagrams',
      top: [{ percent: 50, symbol: 'veth_xmit' }],
      cost: cost(busyUs),
    });
    const doc = profileSection('veth', 'bare', [p('twill', 10), p('kernel-vxlan', 20), p('node-to-node', 8)]);
    expect(doc).toContain('Busy CPU per packet, twill against node-to-node: 10.00 against 8.00 us (+2.00 us).');
    expect(doc).toContain('| veth_xmit | 5.00 | 4.00 | +1.00 |');
    expect(doc).not.toContain('against kernel-vxlan');
  });
});

describe('CNI plugin cost report', () => {
  it("reports p50, p90 and the range per operation, and holds twill's ADD to 30 ms over the delegates' at the median", async () => {
    const { cniCostSection } = await import('../../controller/bench/cni-cost.js');
    const doc = cniCostSection({ n: 4, twill: { add: [50, 60, 70, 80], del: [40, 40, 40, 40] }, delegates: { add: [20, 30, 30, 40], del: [10, 10, 10, 10] } });
    expect(doc).toContain("| ADD, twill's plugin | 65.0 | 80.0 | 50.0-80.0 |");
    expect(doc).toContain('| ADD, delegates alone | 30.0 | 40.0 | 20.0-40.0 |');
    expect(doc).toContain('| twill adds at most 30 ms to an ADD (p50) | 35.0 ms | no, 5.0 ms over |');
    const within = cniCostSection({ n: 1, twill: { add: [45], del: [1] }, delegates: { add: [20], del: [1] } });
    expect(within).toContain('| twill adds at most 30 ms to an ADD (p50) | 25.0 ms | yes |');
  });

  it("sets each operation's p50 against the delegates', and shows the unbundled entry and Node's bare start-up from the same rounds", async () => {
    const { cniCostSection } = await import('../../controller/bench/cni-cost.js');
    const doc = cniCostSection({
      n: 2,
      twill: { add: [60, 80], del: [90, 110] },
      unbundled: { add: [140, 160], del: [190, 210] },
      delegates: { add: [20, 20], del: [40, 40] },
      nodeStart: [35, 45],
    });
    expect(doc).toContain("| ADD, twill's plugin | 70.0 | 80.0 | 60.0-80.0 | 3.50 |");
    expect(doc).toContain("| ADD, twill's plugin unbundled (ES modules) | 150.0 | 160.0 | 140.0-160.0 | 7.50 |");
    expect(doc).toContain('| ADD, delegates alone | 20.0 | 20.0 | 20.0-20.0 | 1.00 |');
    expect(doc).toContain("| DEL, twill's plugin | 100.0 | 110.0 | 90.0-110.0 | 2.50 |");
    expect(doc).toContain('| Node start-up alone (`node -e 0`) | 40.0 | 45.0 | 35.0-45.0 | 2.00 |');
    expect(doc).toContain("| of which Node's start-up (`node -e 0`, p50) | 40.0 ms | alone exceeds the budget |");
    expect(doc).toContain("| the bundle's ADD over the unbundled entry's (p50) | 0.47 x | |");
  });
});

describe('comparison with a baseline build (--baseline-objects)', () => {
  const ctx = {
    command: 'twill bench --baseline-objects /tmp/b',
    started: new Date(0),
    machine: 'm',
    commit: 'abc',
    reps: 2,
    seconds: 1,
    discarded: 0,
    baselineObjects: '/tmp/b',
    baselineCommit: 'def',
    load: [1, 2] as [number, number],
    bound: 0.97,
  };
  const pair = (twill: Partial<Sample>[], baseline: Partial<Sample>[]) =>
    new Map<Variant, Sample[]>([
      ['twill', twill.map(sample)],
      ['twill-baseline', baseline.map(sample)],
    ]);

  it('is met only when every repetition of UDP pps and TCP (1 and 4 streams) is at least the bound, repetition against repetition', async () => {
    const { baselineComparison } = await import('../../controller/bench/report.js');
    const ok = baselineComparison(pair([{ udpKpps: 98 }, { udpKpps: 120, tcp1Gbps: 9.8 }], [{}, {}]), 'twill', 'twill-baseline', 0.97);
    expect(ok).toMatchObject({ met: true, worst: 0.98 });
    for (const [metric, ratio] of Object.entries({ udpKpps: 1.2, tcp1Gbps: 0.98, tcp4Gbps: 1 })) expect(ok.ratios[1][metric]).toBeCloseTo(ratio, 9);
    // The median (1.10x) would pass; the one repetition at 0.96x of TCP with 4 streams does not.
    const one = baselineComparison(pair([{ udpKpps: 120 }, { tcp4Gbps: 9.6 }], [{}, {}]), 'twill', 'twill-baseline', 0.97);
    expect(one).toMatchObject({ met: false, worst: 0.96 });
    // Latency and CPU are not what is judged here.
    expect(baselineComparison(pair([{ tcpLatSameCpuUs: 100, cpuUsPerPkt: 100 }], [{}]), 'twill', 'twill-baseline', 0.97).met).toBe(true);
    for (const broken of [pair([{}], []), pair([], []), pair([{ udpKpps: 0 }], [{ udpKpps: 0 }])])
      expect(baselineComparison(broken, 'twill', 'twill-baseline', 0.97).met).toBe(false);
  });

  it('prints each repetition’s ratios, the worst, the verdict, the baseline and the load average', async () => {
    const { renderBaselineReport } = await import('../../controller/bench/report.js');
    const doc = renderBaselineReport(
      ctx,
      [{ mode: 'wire', nodes: 'bare', samples: pair([{ udpKpps: 101 }, { tcp1Gbps: 9.5 }], [{}, {}]), regimes: new Map() }],
      ['twill'],
    );
    const wanted = [
      'Baseline: the BPF objects in /tmp/b, built at def.',
      'Load average (1 min) 1.00 before, 2.00 after.',
      '| twill / twill-baseline | 1 | 1.010x | 1.000x | 1.000x |',
      '| twill / twill-baseline | 2 | 1.000x | 0.950x | 1.000x |',
      '| twill: every repetition >= 0.97x | | no (worst 0.950x) | | |',
      'Verdict: not every repetition is >= 0.97x on UDP pps and TCP.',
    ];
    for (const line of wanted) expect(doc).toContain(line);
    const good = renderBaselineReport(ctx, [{ mode: 'veth', nodes: 'bare', samples: pair([{}], [{}]), regimes: new Map() }], ['twill']);
    expect(good).toContain('Verdict: every repetition is >= 0.97x on UDP pps and TCP.');
  });
});
