import { describe, expect, it } from 'vitest';
import type { Sample, Variant } from '../../controller/bench/bench.js';
import { evaluateTargets, median, medians, renderReport, variants } from '../../controller/bench/report.js';

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
  it('takes the median of an odd and an even number of samples', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });

  it('checks the veth targets as ratios to kernel VXLAN and to host-gw, saying by how much one is missed', () => {
    const t = evaluateTargets('veth', medians(world({ udpKpps: 250, cpuUsPerPkt: 5, tcpLatSameCpuUs: 6, tcp1Gbps: 12, tcp4Gbps: 14 })));
    const byName = new Map(t.map((r) => [r.target, r]));
    expect(byName.get('UDP 64 B received (kpps): twill / kernel VXLAN >= 2.00x')).toMatchObject({ measured: '2.50x', met: true });
    expect(byName.get('CPU per received 64 B datagram (us): twill / kernel VXLAN <= 0.55x')).toMatchObject({ measured: '0.50x', met: true });
    expect(byName.get('TCP 1 stream (Gbit/s): twill / kernel VXLAN >= 1.60x')).toMatchObject({ measured: '1.20x', met: false, shortBy: '25% below the bound' });
    expect(byName.get('TCP latency, one CPU (us): twill / host-gw <= 1.00x')).toMatchObject({ measured: '0.60x', met: true });
    expect(byName.get('UDP latency, two CPUs (us): twill / host-gw <= 1.00x')).toMatchObject({ measured: '1.00x', met: true });
  });

  it('in wire mode wants TCP 1.3x and nothing worse than kernel VXLAN', () => {
    const t = evaluateTargets('wire', medians(world({ tcp1Gbps: 13, udpLatTwoCpuUs: 11 })));
    expect(t.filter((r) => !r.met).map((r) => r.target)).toEqual(['UDP latency, two CPUs (us): twill / kernel VXLAN <= 1.00x']);
    expect(t[0]).toMatchObject({ measured: '1.30x', met: true });
  });

  it('renders every variant, the ratios, the regime and the targets', () => {
    const doc = renderReport(
      { command: 'twill bench --reps 1', started: new Date('2026-11-23T00:00:00Z'), machine: 'test machine', reps: 1, seconds: 1, sections: ['## extra'] },
      [{ mode: 'wire', samples: world({ tcp1Gbps: 5 }), regimes: new Map(variants.map((v) => [v, { wireMax: 1514, receiverMax: 64000 }])) }],
    );
    expect(doc).toContain('Command: `twill bench --reps 1`');
    expect(doc).toContain(`| metric | ${variants.join(' | ')} |`);
    expect(doc).toContain('| TCP 1 stream (Gbit/s) | 5.00 | 10.00 | 10.00 | 10.00 | 10.00 | 0.50x |');
    expect(doc).toContain('| TCP 1 stream (Gbit/s): twill / kernel VXLAN >= 1.30x | 0.50x | no, 62% below the bound |');
    expect(doc).toContain('twill 1514 / 64000');
    expect(doc.trimEnd().endsWith('## extra')).toBe(true);
  });
});
