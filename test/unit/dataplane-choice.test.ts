import { describe, expect, it } from 'vitest';
import {
  chooseDataplane,
  chooseDecapHook,
  formatChoiceLine,
  formatProbe,
  type Capability,
  type CapabilityName,
  type ChoiceRequest,
  type FeatureProbe,
} from '../../controller/dataplane/dataplane-choice.js';

const yes: Capability = { present: true, detail: 'probed: yes' };
const no: Capability = { present: false, detail: 'probed: no' };
const unknown: Capability = { present: undefined, detail: 'probe failed' };

/** A kernel with everything (6.6+), minus what `without` names. */
function kernel(release: string, without: CapabilityName[] = [], extra: Partial<Record<CapabilityName, Capability>> = {}): FeatureProbe {
  const all = { btf: yes, tcx: yes, redirectPeer: yes, redirectNeigh: yes, checkMtu: yes, conntrackKfuncs: yes, ringbuf: yes };
  const capabilities = { ...all, ...Object.fromEntries(without.map((c) => [c, no])), ...extra } as FeatureProbe['capabilities'];
  return { kernel: release, capabilities, probedAt: '2026-01-01T00:00:00.000Z' };
}
const auto: ChoiceRequest = { dataplane: 'auto', decapHook: 'auto', fastPath: true, backend: 'vxlan' };

describe('chooseDataplane: what auto picks on each kernel', () => {
  it('6.6+ with a native-XDP NIC: tcx, XDP decap, fast path', () => {
    const c = chooseDataplane(kernel('6.12.48+deb12-amd64'), auto);
    expect(c).toMatchObject({ dataplane: 'bpf', attach: 'tcx', decap: 'xdp', fastPath: true });
    expect(c.reasons.attach).toMatch(/tcx links/);
  });

  it('6.1 (Debian 12 stock): no tcx, so clsact; still XDP decap and the fast path', () => {
    const c = chooseDataplane(kernel('6.1.0-40-amd64', ['tcx']), auto);
    expect(c).toMatchObject({ dataplane: 'bpf', attach: 'clsact', decap: 'xdp', fastPath: true });
    expect(c.reasons.attach).toBe('no tcx on kernel 6.1.0-40-amd64 (tcx (Linux 6.6+)): legacy tc clsact filters');
  });

  it('5.15 (Ubuntu 22.04): no tcx and no conntrack kfuncs: clsact and the stack path', () => {
    const c = chooseDataplane(kernel('5.15.0-100-generic', ['tcx', 'conntrackKfuncs']), auto);
    expect(c).toMatchObject({ dataplane: 'bpf', attach: 'clsact', fastPath: false });
    expect(c.reasons.fastPath).toMatch(/^no conntrack kfuncs \(Linux 5\.19\+\)/);
  });

  it('5.10: no bpf_check_mtu, which every program calls: kernel VXLAN, naming what is missing', () => {
    const c = chooseDataplane(kernel('5.10.0-30-amd64', ['tcx', 'checkMtu', 'conntrackKfuncs']), auto);
    expect(c).toEqual({
      requested: 'auto',
      dataplane: 'kernel',
      reasons: { dataplane: 'auto: kernel 5.10.0-30-amd64 lacks bpf_check_mtu (Linux 5.12+), which every twill program calls: kernel VXLAN as flannel does' },
    });
  });

  it('an explicit request is honoured: kernel always, bpf even where a helper is missing (attach then fails loudly)', () => {
    expect(chooseDataplane(kernel('6.12.1'), { ...auto, dataplane: 'kernel' })).toMatchObject({
      dataplane: 'kernel',
      reasons: { dataplane: expect.stringMatching(/^requested/) },
    });
    expect(chooseDataplane(kernel('5.4.0', ['checkMtu']), { ...auto, dataplane: 'bpf' })).toMatchObject({
      dataplane: 'bpf',
      reasons: { dataplane: 'requested (--dataplane bpf)' },
    });
  });

  it('an inconclusive probe is not taken for absence: tcx is tried, the helpers assumed', () => {
    const c = chooseDataplane(kernel('6.8.0', [], { tcx: unknown, checkMtu: unknown }), auto);
    expect(c).toMatchObject({ dataplane: 'bpf', attach: 'tcx' });
    expect(c.reasons.attach).toMatch(/^tcx not probed \(probe failed\)/);
  });

  it('--fast-path=false wins over a kernel that could', () => {
    expect(chooseDataplane(kernel('6.12.1'), { ...auto, fastPath: false })).toMatchObject({
      fastPath: false,
      reasons: { fastPath: 'turned off (--fast-path=false)' },
    });
  });
});

describe('chooseDecapHook', () => {
  it('auto: tc on a veth, tc where the driver has no native XDP, else native XDP only', () => {
    expect(chooseDecapHook('auto', 'veth')).toMatchObject({ hook: 'tc' });
    expect(chooseDecapHook('auto', undefined, { present: false, detail: 'virtio_net: EOPNOTSUPP' })).toMatchObject({
      hook: 'tc',
      reason: "auto: the underlay's driver has no native XDP (virtio_net: EOPNOTSUPP): decap in tc",
    });
    expect(chooseDecapHook('auto', undefined, yes)).toEqual({ hook: 'xdp', nativeOnly: true, reason: 'auto: native XDP, ahead of GRO' });
    expect(chooseDecapHook('auto')).toMatchObject({ hook: 'xdp', nativeOnly: true });
  });

  it('requests and host-gw are not second-guessed', () => {
    expect(chooseDecapHook('xdp', 'veth')).toMatchObject({ hook: 'xdp', nativeOnly: false });
    expect(chooseDecapHook('tc')).toMatchObject({ hook: 'tc' });
    expect(chooseDecapHook('host-gw')).toMatchObject({ hook: 'tc', reason: expect.stringMatching(/^host-gw/) });
  });

  it('host-gw backend: decap in tc whatever the driver', () => {
    expect(chooseDataplane(kernel('6.12.1'), { ...auto, backend: 'host-gw' })).toMatchObject({ decap: 'tc' });
  });
});

describe('the probe as printed', () => {
  it('one line per capability probed, ? for an inconclusive one; the matrix line says what held', () => {
    const p = kernel('6.1.0-40-amd64', ['tcx'], { ringbuf: unknown });
    expect(formatProbe(p)).toHaveLength(7);
    expect(formatProbe(p)[1]).toBe('tcx                  no   probed: no');
    expect(formatProbe(p)[6]).toMatch(/^ring buffer +\? +probe failed$/);
    const c = chooseDataplane(p, auto);
    expect(formatChoiceLine(p, c, { attach: 'clsact', decap: 'tc', fastPath: true })).toBe(
      'kernel 6.1.0-40-amd64: bpf attach=clsact decap=tc path=fast | btf=yes tcx=no redirectPeer=yes redirectNeigh=yes checkMtu=yes conntrackKfuncs=yes ringbuf=?',
    );
    expect(formatChoiceLine(kernel('5.10.0', ['checkMtu']), chooseDataplane(kernel('5.10.0', ['checkMtu']), auto))).toMatch(
      /^kernel 5\.10\.0: kernel-vxlan \| /,
    );
  });
});
