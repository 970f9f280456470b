import { describe, expect, it } from 'vitest';
import type { Sample, Variant } from '../../controller/bench/bench.js';
import { evaluateBackendTargets, evaluateTargets, median, medians, renderReport, variants } from '../../controller/bench/report.js';

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
    const t = evaluateTargets('veth', medians(world({ udpKpps: 160, cpuUsPerPkt: 6, tcpLatSameCpuUs: 8, tcp1Gbps: 12, tcp4Gbps: 9 }, { udpKpps: 150, tcpLatSameCpuUs: 7 })));
    const byName = new Map(t.map((r) => [r.target, r]));
    expect(byName.get('UDP 64 B received (kpps): twill / kernel VXLAN >= 1.50x')).toMatchObject({ measured: '1.60x', met: true });
    expect(byName.get('UDP 64 B received (kpps): twill / host-gw >= 1.10x')).toMatchObject({ measured: '1.07x', met: false, shortBy: '3% below the bound' });
    expect(byName.get('CPU per received 64 B datagram (us): twill / kernel VXLAN <= 0.70x')).toMatchObject({ measured: '0.60x', met: true });
    expect(byName.get('TCP latency, one CPU (us): twill / kernel VXLAN <= 0.80x')).toMatchObject({ measured: '0.80x', met: true });
    expect(byName.get('TCP latency, one CPU (us): twill / host-gw <= 1.00x')).toMatchObject({ measured: '1.14x', met: false });
    expect(byName.get('TCP 1 stream (Gbit/s): twill / kernel VXLAN >= 1.00x')).toMatchObject({ measured: '1.20x', met: true });
    expect(byName.get('TCP 4 streams (Gbit/s): twill / kernel VXLAN >= 1.00x')).toMatchObject({ measured: '0.90x', met: false, shortBy: '10% below the bound' });
    expect(t).toHaveLength(7);
  });

  it('in wire mode wants TCP 1 and 4 streams no worse than kernel VXLAN and 1.3x its datagrams', () => {
    const t = evaluateTargets('wire', medians(world({ tcp1Gbps: 13, udpKpps: 120 })));
    expect(t.map((r) => [r.target, r.met])).toEqual([
      ['TCP 1 stream (Gbit/s): twill / kernel VXLAN >= 1.00x', true],
      ['TCP 4 streams (Gbit/s): twill / kernel VXLAN >= 1.00x', true],
      ['UDP 64 B received (kpps): twill / kernel VXLAN >= 1.30x', false],
    ]);
  });

  it("checks twill's host-gw against flannel's host-gw routes: 1.3x the datagrams, 0.85x the latency, no less TCP", () => {
    const samples = new Map<Variant, Sample[]>(variants.map((v) => [v, [sample(v === 'twill-host-gw' ? { udpKpps: 140, tcpLatSameCpuUs: 8, tcp1Gbps: 9.5 } : {})]]));
    expect(evaluateBackendTargets(medians(samples)).map((r) => [r.target, r.measured, r.met])).toEqual([
      ['UDP 64 B received (kpps): twill-host-gw / host-gw >= 1.30x', '1.40x', true],
      ['TCP latency, one CPU (us): twill-host-gw / host-gw <= 0.85x', '0.80x', true],
      ['TCP 1 stream (Gbit/s): twill-host-gw / host-gw >= 1.00x', '0.95x', false],
      ['TCP 4 streams (Gbit/s): twill-host-gw / host-gw >= 1.00x', '1.00x', true],
    ]);
  });

  it('renders every variant, the ratios, the regime and the targets', () => {
    const doc = renderReport(
      { command: 'twill bench --reps 1', started: new Date('2026-11-23T00:00:00Z'), machine: 'test machine', reps: 1, seconds: 1, sections: ['## extra'] },
      [{ mode: 'wire', nodes: 'kube-proxy', samples: world({ tcp1Gbps: 5 }), regimes: new Map(variants.map((v) => [v, { wireMax: 1514, receiverMax: 64000 }])) }],
    );
    expect(doc).toContain('Command: `twill bench --reps 1`');
    expect(doc).toContain('## Underlay mode: wire; nodes: kube-proxy');
    expect(doc).toContain(`| metric | ${variants.join(' | ')} |`);
    expect(doc).toContain('| TCP 1 stream (Gbit/s) | 5.00 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 0.50x |');
    expect(doc).toContain('| twill-host-gw / host-gw | twill-direct / host-gw |');
    expect(doc).toContain('| TCP latency, one CPU (us): twill-host-gw / host-gw <= 0.85x | 1.00x | no, 18% above the bound |');
    expect(doc).toContain('| TCP 1 stream (Gbit/s): twill / kernel VXLAN >= 1.00x | 0.50x | no, 50% below the bound |');
    expect(doc).toContain('twill 1514 / 64000');
    expect(doc.trimEnd().endsWith('## extra')).toBe(true);
  });
});
