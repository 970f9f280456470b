import { describe, expect, it } from 'vitest';
import { formatCidr } from '../../controller/net/ipv4.js';
import { formatCidr6, parseCidr6 } from '../../controller/net/ipv6.js';
import { parseCidr } from '../../controller/net/ipv4.js';
import { encodeLeaseValue, leaseKey, NO_SUBNET, parseLeaseKV, parseSubnetKeyParts, sameLease, subnetKey, type Lease } from '../../controller/subnet/lease.js';

const P = '/coreos.com/network/subnets/';
const mac = '02:00:00:00:00:01';
const mac6 = '02:00:00:00:00:61';

describe('IPv6 lease keys (flannel MakeSubnetKey/ParseSubnetKey)', () => {
  it('makes the dual-stack and IPv6-only keys flanneld makes', () => {
    expect(subnetKey(parseCidr('10.244.1.0/24')!, parseCidr6('fc00:0:0:1::/64'))).toBe('10.244.1.0-24&fc00:0:0:1::-64');
    expect(subnetKey(NO_SUBNET, parseCidr6('fc00:0:0:1::/64'))).toBe('0.0.0.0-0&fc00:0:0:1::-64');
    expect(subnetKey(parseCidr('10.244.1.0/24')!)).toBe('10.244.1.0-24');
  });

  it('parses them back', () => {
    const d = parseSubnetKeyParts('10.244.1.0-24&fc00:0:0:1::-64')!;
    expect([formatCidr(d.subnet), formatCidr6(d.subnet6!)]).toEqual(['10.244.1.0/24', 'fc00:0:0:1::/64']);
    const o = parseSubnetKeyParts('0.0.0.0-0&fc00:0:0:1::-64')!;
    expect(o.subnet).toEqual(NO_SUBNET);
    expect(parseSubnetKeyParts('10.244.1.0-24')).toEqual({ subnet: parseCidr('10.244.1.0/24') });
  });

  it.each([
    '10.244.1.0-24&',
    '10.244.1.0-24&fc00::1-64',
    '10.244.1.0-24&FC00::-64',
    '10.244.1.0-24&fc00::-129',
    '10.244.1.0-24&zz::-64',
    '10.244.1.0-24&fc00::',
  ])('refuses %s', (key) => {
    expect(parseSubnetKeyParts(key)).toBeUndefined();
  });
});

describe('IPv6 lease values (flannel LeaseAttrs)', () => {
  it('writes a dual-stack vxlan record byte for byte as flanneld', () => {
    const v = encodeLeaseValue({ backendType: 'vxlan', publicIp: '192.168.64.3', publicIpv6: 'fd00::3', vni: 1, vtepMac: mac, vtepMac6: mac6 });
    expect(v).toBe(
      `{"PublicIP":"192.168.64.3","PublicIPv6":"fd00::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"},"BackendV6Data":{"VNI":1,"VtepMAC":"${mac6}"}}`,
    );
  });

  it('writes an IPv6-only vxlan record as flanneld: PublicIP 0.0.0.0, no BackendData', () => {
    const v = encodeLeaseValue({ backendType: 'vxlan', publicIp: '0.0.0.0', publicIpv6: 'fd00::3', vni: 4, vtepMac6: mac6 });
    expect(v).toBe(`{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::3","BackendType":"vxlan","BackendV6Data":{"VNI":4,"VtepMAC":"${mac6}"}}`);
  });

  it('writes PublicIPv6 and VtepMACs as Go prints them', () => {
    expect(
      encodeLeaseValue({
        backendType: 'vxlan',
        publicIp: '10.0.0.1',
        publicIpv6: 'FD00:0:0::0003',
        vni: 1,
        vtepMac: '02:AA:00:00:00:01',
        vtepMac6: '02:BB:00:00:00:01',
      }),
    ).toBe(
      '{"PublicIP":"10.0.0.1","PublicIPv6":"fd00::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:aa:00:00:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:bb:00:00:00:01"}}',
    );
  });

  it('writes host-gw records with PublicIPv6 and no backend data', () => {
    expect(encodeLeaseValue({ backendType: 'host-gw', publicIp: '10.0.0.1', publicIpv6: 'fd00::1' })).toBe(
      '{"PublicIP":"10.0.0.1","PublicIPv6":"fd00::1","BackendType":"host-gw"}',
    );
    expect(encodeLeaseValue({ backendType: 'host-gw', publicIp: '0.0.0.0', publicIpv6: 'fd00::1' })).toBe(
      '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::1","BackendType":"host-gw"}',
    );
  });

  it('round-trips dual-stack and IPv6-only records', () => {
    const dual = parseLeaseKV(
      `${P}10.244.1.0-24&fc00:0:0:1::-64`,
      encodeLeaseValue({ backendType: 'vxlan', publicIp: '10.0.0.1', publicIpv6: 'FD00:0::1', vni: 1, vtepMac: mac, vtepMac6: '02:00:00:00:00:AB' }),
    );
    expect(dual.ok && dual.lease).toMatchObject({ publicIp: '10.0.0.1', publicIpv6: 'fd00::1', vtepMac: mac, vtepMac6: '02:00:00:00:00:ab', vni: 1 });
    expect(dual.ok && formatCidr6(dual.lease.subnet6!)).toBe('fc00:0:0:1::/64');
    const only = parseLeaseKV(
      `${P}0.0.0.0-0&fc00:0:0:2::-64`,
      `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2","BackendType":"vxlan","BackendV6Data":{"VNI":7,"VtepMAC":"${mac6}"}}`,
    );
    expect(only.ok && only.lease).toMatchObject({ subnet: NO_SUBNET, publicIp: '0.0.0.0', publicIpv6: 'fd00::2', vtepMac6: mac6, vni: 7 });
    expect(only.ok && only.lease.vtepMac).toBeUndefined();
  });

  it.each([
    [`${P}10.244.1.0-24&fc00::-64`, '{"PublicIP":"10.0.0.1","PublicIPv6":"10.0.0.1","BackendType":"host-gw"}', /PublicIPv6 "10.0.0.1" is not an IPv6 address/],
    [`${P}10.244.1.0-24&fc00::-64`, '{"PublicIP":"10.0.0.1","PublicIPv6":6,"BackendType":"host-gw"}', /PublicIPv6 must be a string or null/],
    [`${P}0.0.0.0-0&fc00::-64`, '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::1","BackendType":"vxlan"}', /BackendV6Data missing in an IPv6-only lease/],
    [
      `${P}10.244.1.0-24&fc00::-64`,
      `{"PublicIP":"10.0.0.1","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"},"BackendV6Data":{"VNI":1,"VtepMAC":"zz"}}`,
      /BackendV6Data.VtepMAC "zz" is not a MAC address/,
    ],
    [
      `${P}10.244.1.0-24&fc00::-64`,
      `{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"},"BackendV6Data":7}`,
      /BackendV6Data must be an object/,
    ],
    [`${P}10.244.1.0-24`, '{"PublicIP":"10.0.0.1","BackendType":"vxlan"}', /BackendData missing/],
  ])('reports %s = %s as unusable', (key, value, reason) => {
    const r = parseLeaseKV(key, value);
    expect(!r.ok && r.reason).toMatch(reason);
  });
});

describe('lease identity in memory', () => {
  const v6only = (s6: string, publicIpv6: string): Lease => ({
    subnet: NO_SUBNET,
    subnet6: parseCidr6(s6)!,
    publicIp: '0.0.0.0',
    publicIpv6,
    backendType: 'vxlan',
    vni: 1,
    vtepMac6: mac6,
    etcdLease: '1',
    modRevision: '1',
    createRevision: '1',
  });

  it('keeps two IPv6-only leases apart though their IPv4 parts are the same', () => {
    const a = v6only('fc00:0:0:1::/64', 'fd00::1');
    const b = v6only('fc00:0:0:2::/64', 'fd00::2');
    expect(leaseKey(a)).not.toBe(leaseKey(b));
    expect(new Map([a, b].map((l) => [leaseKey(l), l])).size).toBe(2);
    expect(sameLease(a, b)).toBe(false);
  });

  it('keeps an IPv4-only and a dual-stack record of one subnet apart, and sees IPv6 attribute changes', () => {
    const v4 = { ...v6only('fc00:0:0:1::/64', 'fd00::1'), subnet: parseCidr('10.244.1.0/24')!, subnet6: undefined };
    expect(leaseKey(v4)).toBe(`${parseCidr('10.244.1.0/24')!.ip}/24`);
    expect(leaseKey(v4)).not.toBe(leaseKey({ ...v4, subnet6: parseCidr6('fc00:0:0:1::/64') }));
    const a = v6only('fc00:0:0:1::/64', 'fd00::1');
    expect(sameLease(a, { ...a })).toBe(true);
    expect(sameLease(a, { ...a, publicIpv6: 'fd00::9' })).toBe(false);
    expect(sameLease(a, { ...a, vtepMac6: mac })).toBe(false);
  });
});
