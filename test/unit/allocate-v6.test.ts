import { describe, expect, it } from 'vitest';
import { parseNetworkConfig } from '../../controller/config/network-config.js';
import { formatCidr, parseCidr } from '../../controller/net/ipv4.js';
import { formatCidr6, parseCidr6 } from '../../controller/net/ipv6.js';
import { decideAcquire, describeSubnets, fitsConfig, freeSubnets6, unroutableReason } from '../../controller/subnet/allocate.js';
import { NO_SUBNET, type Lease } from '../../controller/subnet/lease.js';

const dual = parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
const v6only = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
const v4only = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');

const lease = (subnet: string | undefined, subnet6: string | undefined, publicIp: string, publicIpv6?: string, etcdLease = '7'): Lease => ({
  subnet: subnet ? parseCidr(subnet)! : NO_SUBNET,
  subnet6: subnet6 ? parseCidr6(subnet6) : undefined,
  publicIp,
  publicIpv6,
  backendType: 'vxlan',
  vni: 1,
  etcdLease,
  modRevision: '1',
  createRevision: '1',
});
const described = (d: ReturnType<typeof decideAcquire>) =>
  d.action === 'allocate' ? describeSubnets(d) : d.action === 'reuse' ? describeSubnets(d.lease) : d.action;

describe('acquire decision, dual stack', () => {
  it('allocates an IPv4 and an IPv6 subnet together, each at random among its free ones', () => {
    const d = decideAcquire({
      config: dual,
      publicIp: '10.0.0.2',
      publicIpv6: 'fd00::2',
      leases: [lease('10.244.1.0/24', 'fc00:0:0:1::/64', '10.0.0.1', 'fd00::1')],
      random: () => 0,
    });
    expect(d).toMatchObject({ action: 'allocate', via: 'random' });
    expect(described(d)).toBe('10.244.2.0/24 fc00:0:0:2::/64');
  });

  it('reuses our lease by PublicIP, as flannel does, when both parts fit', () => {
    const mine = lease('10.244.9.0/24', 'fc00:0:0:9::/64', '10.0.0.2', 'fd00::2');
    expect(decideAcquire({ config: dual, publicIp: '10.0.0.2', leases: [lease('10.244.1.0/24', 'fc00:0:0:1::/64', '10.0.0.1'), mine] })).toMatchObject({
      action: 'reuse',
      lease: mine,
    });
  });

  it('drops our IPv4-only lease once IPv6 is enabled (flannel isIPv6SubnetConfigCompat), and the reverse', () => {
    const old = lease('10.244.9.0/24', undefined, '10.0.0.2');
    const d = decideAcquire({ config: dual, publicIp: '10.0.0.2', leases: [old], random: () => 0 });
    expect(d).toMatchObject({ action: 'allocate', stale: [old] });
    const dualOld = lease('10.244.9.0/24', 'fc00:0:0:9::/64', '10.0.0.2');
    expect(decideAcquire({ config: v4only, publicIp: '10.0.0.2', leases: [dualOld], random: () => 0 })).toMatchObject({ action: 'allocate', stale: [dualOld] });
  });

  it('takes both hints from the subnet file when nobody holds either part', () => {
    const hint = parseCidr('10.244.7.0/24');
    const hint6 = parseCidr6('fc00:0:0:7::/64');
    expect(described(decideAcquire({ config: dual, publicIp: '10.0.0.2', leases: [], hint, hint6 }))).toBe('10.244.7.0/24 fc00:0:0:7::/64');
    const taken6 = [lease('10.244.1.0/24', 'fc00:0:0:7::/64', '10.0.0.1')];
    expect(decideAcquire({ config: dual, publicIp: '10.0.0.2', leases: taken6, hint, hint6, random: () => 0 })).toMatchObject({ via: 'random' });
    // without FLANNEL_IPV6_SUBNET the hint does not fit a dual-stack config
    expect(decideAcquire({ config: dual, publicIp: '10.0.0.2', leases: [], hint, random: () => 0 })).toMatchObject({ via: 'random' });
  });

  it('says which family is exhausted', () => {
    // /126s: ::4 ::8 ::c
    const small = parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/124","Backend":{"Type":"vxlan"}}');
    const leases = ['fc00::4/126', 'fc00::8/126', 'fc00::c/126'].map((s, i) => lease(`10.244.${i + 1}.0/24`, s, `10.1.0.${i}`));
    expect(freeSubnets6(small, leases)).toEqual([]);
    expect(decideAcquire({ config: small, publicIp: '10.9.9.9', leases })).toMatchObject({ action: 'exhausted', family: 'IPv6' });
  });
});

describe('acquire decision, IPv6 only', () => {
  it("writes flannel's empty IPv4 part and an IPv6 subnet", () => {
    const d = decideAcquire({
      config: v6only,
      publicIp: '0.0.0.0',
      publicIpv6: 'fd00::2',
      leases: [lease(undefined, 'fc00:0:0:1::/64', '0.0.0.0', 'fd00::1')],
      random: () => 0,
    });
    expect(d.action === 'allocate' && [d.subnet, formatCidr6(d.subnet6!)]).toEqual([NO_SUBNET, 'fc00:0:0:2::/64']);
  });

  it('finds our lease by PublicIPv6: every IPv6-only lease has PublicIP 0.0.0.0', () => {
    const other = lease(undefined, 'fc00:0:0:1::/64', '0.0.0.0', 'fd00::1');
    const mine = lease(undefined, 'fc00:0:0:5::/64', '0.0.0.0', 'fd00::2');
    expect(decideAcquire({ config: v6only, publicIp: '0.0.0.0', publicIpv6: 'fd00::2', leases: [other, mine] })).toMatchObject({
      action: 'reuse',
      lease: mine,
    });
    expect(decideAcquire({ config: v6only, publicIp: '0.0.0.0', publicIpv6: 'fd00::3', leases: [other, mine], random: () => 0 })).toMatchObject({
      action: 'allocate',
      stale: [],
    });
  });

  it('prefers our reservation and takes the FLANNEL_IPV6_SUBNET hint', () => {
    const lease1 = lease(undefined, 'fc00:0:0:5::/64', '0.0.0.0', 'fd00::2');
    const reserved = lease(undefined, 'fc00:0:0:6::/64', '0.0.0.0', 'fd00::2', '0');
    expect(decideAcquire({ config: v6only, publicIp: '0.0.0.0', publicIpv6: 'fd00::2', leases: [lease1, reserved] })).toMatchObject({
      action: 'reuse',
      reservation: true,
      lease: reserved,
    });
    const d = decideAcquire({ config: v6only, publicIp: '0.0.0.0', publicIpv6: 'fd00::9', leases: [lease1], hint6: parseCidr6('fc00:0:0:8::/64') });
    expect(d).toMatchObject({ action: 'allocate', via: 'hint' });
    expect(described(d)).toBe('fc00:0:0:8::/64');
  });
});

describe('which leases fit and which the datapath can carry', () => {
  it('needs an empty IPv4 part in an IPv6-only network, and an IPv6 part in range', () => {
    expect(fitsConfig(v6only, lease(undefined, 'fc00:0:0:1::/64', '0.0.0.0'))).toBe(true);
    expect(fitsConfig(v6only, lease('10.244.1.0/24', 'fc00:0:0:1::/64', '0.0.0.0'))).toBe(false);
    expect(fitsConfig(v6only, lease(undefined, 'fc00::/64', '0.0.0.0'))).toBe(false); // below IPv6SubnetMin
    expect(fitsConfig(v6only, lease(undefined, undefined, '0.0.0.0'))).toBe(false);
  });

  it.each([
    [v6only, lease(undefined, 'fc00:0:0:1::/64', '0.0.0.0'), undefined],
    [v6only, lease(undefined, 'fc01:0:0:1::/64', '0.0.0.0'), 'fc01:0:0:1::/64 is outside the IPv6 network fc00::/48'],
    [v6only, lease(undefined, 'fc00:0:0:1::/80', '0.0.0.0'), 'fc00:0:0:1::/80 is not a /64 as the network config says'],
    [v6only, lease(undefined, undefined, '0.0.0.0'), 'no IPv6 subnet in an IPv6-only network'],
    [dual, lease('10.244.1.0/24', 'fc01::/64', '10.0.0.1'), 'fc01::/64 is outside the IPv6 network fc00::/48'],
    [dual, lease('10.245.1.0/24', 'fc00:0:0:1::/64', '10.0.0.1'), '10.245.1.0/24 is outside the network 10.244.0.0/16'],
    [dual, lease('10.244.1.0/24', undefined, '10.0.0.1'), undefined],
    [v4only, lease('10.244.1.0/24', 'fc01::/64', '10.0.0.1'), undefined],
  ])('%#: %s', (config, l, reason) => {
    expect(unroutableReason(config, l)).toBe(reason);
  });

  it('describes each family a lease has', () => {
    expect(describeSubnets(lease('10.244.1.0/24', undefined, ''))).toBe('10.244.1.0/24');
    expect(describeSubnets(lease(undefined, 'fc00:0:0:1::/64', ''))).toBe('fc00:0:0:1::/64');
    expect(formatCidr(lease(undefined, 'fc00:0:0:1::/64', '').subnet)).toBe('0.0.0.0/0');
  });
});
