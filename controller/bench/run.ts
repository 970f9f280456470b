import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { background, measure, regime, setUnderlayMode, setUp, tearDown, variants, type Endpoints, type Sample, type UnderlayMode, type Variant } from './bench.js';

const metrics: { key: keyof Sample; label: string; better: 'higher' | 'lower' }[] = [
  { key: 'tcp1Gbps', label: 'TCP 1 stream (Gbit/s)', better: 'higher' },
  { key: 'tcp4Gbps', label: 'TCP 4 streams (Gbit/s)', better: 'higher' },
  { key: 'udpKpps', label: 'UDP 64 B received (kpps)', better: 'higher' },
  { key: 'cpuUsPerPkt', label: 'CPU per received 64 B datagram (us)', better: 'lower' },
  { key: 'tcpLatSameCpuUs', label: 'TCP latency, one CPU (us)', better: 'lower' },
  { key: 'udpLatSameCpuUs', label: 'UDP latency, one CPU (us)', better: 'lower' },
  { key: 'tcpLatTwoCpuUs', label: 'TCP latency, two CPUs (us)', better: 'lower' },
  { key: 'udpLatTwoCpuUs', label: 'UDP latency, two CPUs (us)', better: 'lower' },
];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export interface BenchOptions {
  reps: number;
  seconds: number;
  modes: UnderlayMode[];
  out?: string;
  command: string;
  maxBackground: number;
}

/** Waits for a quiet machine; refuses to measure on a busy one. */
async function quiet(max: number, say: (m: string) => void): Promise<void> {
  for (let i = 0; i < 6; i++) {
    const busy = await background(500);
    if (busy <= max) return;
    say(`  other processes use ${(busy * 100).toFixed(0)}% of the CPUs; waiting`);
    await new Promise((r) => setTimeout(r, 2000));
  }
  throw new Error(`refusing to report: other processes kept more than ${(max * 100).toFixed(0)}% of the CPUs busy`);
}

export async function runBench(o: BenchOptions, say: (m: string) => void): Promise<string> {
  const started = new Date();
  await quiet(o.maxBackground, say);
  const endpoints = new Map<Variant, Endpoints>();
  const results = new Map<UnderlayMode, Map<Variant, Sample[]>>();
  const regimes = new Map<UnderlayMode, Map<Variant, { wireMax: number; receiverMax: number }>>();
  try {
    for (const v of variants) endpoints.set(v, await setUp(v, (m) => say(`setup ${m}`)));
    for (const mode of o.modes) {
      for (const v of variants) await setUnderlayMode(endpoints.get(v)!, mode);
      const reg = new Map<Variant, { wireMax: number; receiverMax: number }>();
      for (const v of variants) reg.set(v, await regime(endpoints.get(v)!, 1));
      regimes.set(mode, reg);
      say(`[${mode}] frame sizes (largest on the underlay / largest taken in by the receiver): ${variants.map((v) => `${v} ${reg.get(v)!.wireMax}/${reg.get(v)!.receiverMax}`).join(', ')}`);
      const byVariant = new Map<Variant, Sample[]>(variants.map((v) => [v, []]));
      for (let rep = 1; rep <= o.reps; rep++) {
        for (const v of variants) {
          await quiet(o.maxBackground, say);
          const s = await measure(endpoints.get(v)!, o.seconds);
          byVariant.get(v)!.push(s);
          say(`[${mode}] rep ${rep}/${o.reps} ${v.padEnd(12)} tcp1 ${s.tcp1Gbps.toFixed(2)} Gbit/s, udp ${s.udpKpps.toFixed(0)} kpps, ${s.cpuUsPerPkt.toFixed(1)} us/pkt, tcp_lat ${s.tcpLatSameCpuUs.toFixed(1)} us`);
        }
      }
      results.set(mode, byVariant);
    }
  } finally {
    await tearDown();
  }
  const doc = report(o, started, results, regimes);
  if (o.out) writeFileSync(o.out, doc);
  return doc;
}

function report(o: BenchOptions, started: Date, results: Map<UnderlayMode, Map<Variant, Sample[]>>, regimes: Map<UnderlayMode, Map<Variant, { wireMax: number; receiverMax: number }>>): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const lines = [
    '# Benchmarks',
    '',
    `Command: \`${o.command}\``,
    `Date: ${started.toISOString()}; machine: ${os.cpus().length} x ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}`,
    `Median of ${o.reps} interleaved repetitions, ${o.seconds} s per measurement. Ratio = variant / kernel VXLAN (flannel's exact setup), measured in the same run.`,
    'CPU per packet counts the whole machine (both pods, both nodes, iperf3 itself) during the UDP run.',
    '',
  ];
  for (const [mode, byVariant] of results) {
    const reg = regimes.get(mode)!;
    lines.push(`## Underlay mode: ${mode}`, '');
    lines.push(
      mode === 'wire'
        ? 'TSO, GSO and UDP-tunnel segmentation off, GRO on, at both ends of every underlay link: frames cross at MTU size and the receiver aggregates them.'
        : 'veth defaults: GSO super-packets cross the underlay whole (no real NIC does this; it flatters every variant).',
    );
    lines.push('', `Largest frame on the underlay / largest packet taken in by the receiving node (bytes): ${variants.map((v) => `${v} ${reg.get(v)!.wireMax} / ${reg.get(v)!.receiverMax}`).join('; ')}.`, '');
    lines.push(`| metric | ${variants.join(' | ')} | twill / kernel VXLAN |`, `|---|${variants.map(() => '---').join('|')}|---|`);
    for (const m of metrics) {
      const med = new Map(variants.map((v) => [v, median(byVariant.get(v)!.map((s) => s[m.key]))]));
      const ratio = med.get('twill')! / med.get('kernel-vxlan')!;
      lines.push(`| ${m.label} | ${variants.map((v) => med.get(v)!.toFixed(m.key.includes('Gbps') ? 2 : 1)).join(' | ')} | ${ratio.toFixed(2)}x |`);
    }
    lines.push('');
  }
  return lines.join('\n');
}
