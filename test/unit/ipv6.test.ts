import { describe, expect, it } from 'vitest';
import {
  cidr6Contains,
  cidr6Overlaps,
  cidr6Size,
  formatCidr6,
  formatIpv6,
  hostAddress6,
  maskOf6,
  nthSubnet6,
  parseCidr6,
  parseIpv6,
  sameCidr6,
} from '../../controller/net/ipv6.js';

const round = (s: string) => formatIpv6(parseIpv6(s)!);

describe('parseIpv6 / formatIpv6', () => {
  it('prints RFC 5952 text as Go net.IP does', () => {
    expect(round('fc00:0:0:1:0:0:0:0')).toBe('fc00:0:0:1::');
    expect(round('FC00:0000:0000:0000:0000:0000:0000:0001')).toBe('fc00::1');
    expect(round('::')).toBe('::');
    expect(round('::1')).toBe('::1');
    expect(round('1:0:0:2:0:0:0:3')).toBe('1:0:0:2::3'); // the longest run
    expect(round('1:0:0:2:0:0:3:4')).toBe('1::2:0:0:3:4'); // the first of equal runs
    expect(round('1:0:2:3:4:5:6:7')).toBe('1:0:2:3:4:5:6:7'); // one zero group stays
    expect(round('2001:db8::a:b:c:d:e')).toBe('2001:db8:0:a:b:c:d:e');
  });

  it('takes a dotted IPv4 tail, and prints IPv4-mapped addresses dotted as Go does', () => {
    expect(parseIpv6('::ffff:10.0.0.1')).toBe(0xffff0a000001n);
    expect(formatIpv6(0xffff0a000001n)).toBe('10.0.0.1');
    expect(round('64:ff9b::192.0.2.1')).toBe('64:ff9b::c000:201');
  });

  it('refuses what Go refuses', () => {
    for (const bad of [
      '',
      '10.0.0.1',
      '1:2:3:4:5:6:7',
      '1:2:3:4:5:6:7:8:9',
      '1::2::3',
      '1:2:3:4::5:6:7:8',
      '12345::',
      'g::',
      ':1::',
      '1:2:3:4:5:6:7:',
      'fe80::1%eth0',
      '::10.0.0.256',
      '::1.2.3.4:5',
    ])
      expect(parseIpv6(bad), bad).toBeUndefined();
    expect(parseIpv6('1:2:3:4:5:6:7::')).toBe(0x00010002000300040005000600070000n);
  });
});

describe('Cidr6', () => {
  it('parses, masks, and refuses host bits when strict', () => {
    expect(parseCidr6('fc00::1/64')).toEqual({ ip: 0xfc00n << 112n, len: 64 });
    expect(parseCidr6('fc00::1/64', true)).toBeUndefined();
    expect(parseCidr6('fc00::/129')).toBeUndefined();
    expect(parseCidr6('10.0.0.0/8')).toBeUndefined();
    expect(formatCidr6(parseCidr6('fc00:0:0:1::/64')!)).toBe('fc00:0:0:1::/64');
    expect(maskOf6(0)).toBe(0n);
    expect(maskOf6(128)).toBe((1n << 128n) - 1n);
  });

  it('contains, overlaps, sizes', () => {
    const net = parseCidr6('fc00::/48')!;
    const sub = parseCidr6('fc00:0:0:5::/64')!;
    expect(cidr6Contains(net, sub)).toBe(true);
    expect(cidr6Contains(sub, net)).toBe(false);
    expect(cidr6Contains(net, parseCidr6('fc01::/64')!)).toBe(false);
    expect(cidr6Overlaps(sub, net)).toBe(true);
    expect(cidr6Overlaps(sub, parseCidr6('fc00:0:0:6::/64')!)).toBe(false);
    expect(cidr6Size(sub)).toBe(1n << 64n);
    expect(sameCidr6(sub, parseCidr6('fc00:0:0:5::/64'))).toBe(true);
    expect(sameCidr6(undefined, undefined)).toBe(true);
    expect(sameCidr6(sub, undefined)).toBe(false);
  });

  it('steps through subnets and host addresses', () => {
    const net = parseCidr6('fc00::/48')!;
    expect(formatCidr6(nthSubnet6(net, 1n, 64))).toBe('fc00:0:0:1::/64');
    expect(formatCidr6(nthSubnet6(parseCidr6('fc00:0:0:1::/64')!, 1n))).toBe('fc00:0:0:2::/64');
    expect(formatCidr6(nthSubnet6(parseCidr6('fc00:0:0:1::/64')!, -1n))).toBe('fc00::/64');
    expect(hostAddress6(parseCidr6('fc00:0:0:1::/64')!, 1)).toBe('fc00:0:0:1::1');
  });
});
