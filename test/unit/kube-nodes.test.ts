import { describe, expect, it } from 'vitest';
import {
  AnnotationPrefixError,
  kubeAnnotations,
  nodeCidrs,
  nodeToLease,
  ownNodeAnnotations,
  storedVtepMacs,
  type NodeView,
} from '../../controller/subnet/kube-nodes.js';

const names = kubeAnnotations('flannel.alpha.coreos.com');
const P = 'flannel.alpha.coreos.com/';
const both = { ipv4: true, ipv6: true };
const v4 = { ipv4: true, ipv6: false };

/** A Node as flanneld leaves it after its start (vxlan, dual-stack). */
function flannelNode(overrides: Partial<NodeView> = {}, annotations: Record<string, string> = {}): NodeView {
  return {
    name: 'n2',
    podCIDR: '10.244.2.0/24',
    podCIDRs: ['10.244.2.0/24', 'fd00:0:0:2::/64'],
    annotations: {
      [`${P}kube-subnet-manager`]: 'true',
      [`${P}backend-type`]: 'vxlan',
      [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"0A:00:00:00:00:02"}',
      [`${P}backend-v6-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:06:02"}',
      [`${P}public-ip`]: '192.168.1.2',
      [`${P}public-ipv6`]: 'fd01::2',
      ...annotations,
    },
    ...overrides,
  };
}

describe("flannel's annotation names", () => {
  it('are built from the prefix as flannel builds them', () => {
    expect(names.backendData).toBe('flannel.alpha.coreos.com/backend-data');
    expect(kubeAnnotations('example.com/twill').publicIpOverwrite).toBe('example.com/twill-public-ip-overwrite');
    expect(kubeAnnotations('example.com/twill-').subnetKubeManaged).toBe('example.com/twill-kube-subnet-manager');
  });

  it('refuse a prefix flannel refuses, naming it', () => {
    expect(() => kubeAnnotations('a/b/c')).toThrow(AnnotationPrefixError);
    expect(() => kubeAnnotations('Not_An_FQDN')).toThrow(/--kube-annotation-prefix "Not_An_FQDN": a prefix must be in the format fqdn/);
  });
});

describe('a Node as a lease', () => {
  it('carries its pod CIDRs by family, its PublicIPs and both VtepMACs', () => {
    const r = nodeToLease(flannelNode(), names, both);
    expect(r).toMatchObject({
      ok: true,
      lease: { publicIp: '192.168.1.2', publicIpv6: 'fd01::2', backendType: 'vxlan', vni: 1, vtepMac: '0a:00:00:00:00:02', vtepMac6: '0a:00:00:00:06:02' },
    });
  });

  it('is not a peer until its agent marked it, and a podCIDR of neither family or three CIDRs are refused', () => {
    expect(nodeToLease(flannelNode({}, { [`${P}kube-subnet-manager`]: 'false' }), names, both)).toBeUndefined();
    expect(nodeCidrs({ name: 'n', podCIDRs: ['10.0.0.0/24', 'fd00::/64', '10.1.0.0/24'] })).toMatchObject({ ok: false });
    expect(nodeCidrs({ name: 'n', podCIDR: 'bogus' })).toEqual({ ok: false, reason: 'node n: pod CIDR "bogus" is not an IPv4 or IPv6 CIDR' });
  });

  it('is refused with the reason when an annotation is malformed, never half-used', () => {
    const bad = nodeToLease(flannelNode({}, { [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"not-a-mac"}' }), names, both);
    expect(bad).toMatchObject({ ok: false });
    expect((bad as { reason: string }).reason).toMatch(/^node n2: .*VtepMAC/);
    expect(nodeToLease(flannelNode({}, { [`${P}public-ip`]: '300.1.1.1' }), names, v4)).toMatchObject({ ok: false });
    expect(nodeToLease(flannelNode({ podCIDR: undefined, podCIDRs: ['fd00:0:0:2::/64'] }), names, v4)).toEqual({
      ok: false,
      reason: 'node n2: no IPv4 pod CIDR',
    });
  });
});

describe('our own Node', () => {
  const attrs = {
    backendType: 'vxlan' as const,
    publicIp: '192.168.1.2',
    publicIpv6: 'fd01::2',
    vni: 1,
    vtepMac: '0a:00:00:00:00:02',
    vtepMac6: '0a:00:00:00:06:02',
  };

  it("gets flannel's annotations, then none again once they are right", () => {
    const want = ownNodeAnnotations({}, attrs, names)!;
    expect(want).toEqual({
      [`${P}backend-type`]: 'vxlan',
      [`${P}kube-subnet-manager`]: 'true',
      [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}',
      [`${P}public-ip`]: '192.168.1.2',
      [`${P}backend-v6-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:06:02"}',
      [`${P}public-ipv6`]: 'fd01::2',
    });
    expect(ownNodeAnnotations(want, attrs, names)).toBeUndefined();
    // What it wrote reads back as the same lease a peer sees.
    expect(nodeToLease({ name: 'n2', podCIDRs: ['10.244.2.0/24', 'fd00:0:0:2::/64'], annotations: want }, names, both)).toMatchObject({
      ok: true,
      lease: { vtepMac: attrs.vtepMac, vtepMac6: attrs.vtepMac6 },
    });
  });

  it("publishes an operator's public-ip-overwrite in place of the address found", () => {
    const want = ownNodeAnnotations({ [`${P}public-ip-overwrite`]: '203.0.113.9' }, attrs, names)!;
    expect(want[`${P}public-ip`]).toBe('203.0.113.9');
  });

  it('keeps its VtepMACs across restarts, read back from its annotations', () => {
    expect(storedVtepMacs(flannelNode().annotations, names)).toEqual({ vtepMac: '0a:00:00:00:00:02', vtepMac6: '0a:00:00:00:06:02' });
    expect(storedVtepMacs({ [`${P}backend-data`]: 'garbage' }, names)).toEqual({ vtepMac: undefined, vtepMac6: undefined });
  });
});
