import { describe, expect, it } from 'vitest';
import { parseNetworkConfig } from '../../controller/config/network-config.js';
import { formatCidr, parseCidr } from '../../controller/net/ipv4.js';
import { decideAcquire, freeSubnets } from '../../controller/subnet/allocate.js';
import { encodeLeaseValue, parseLeaseKV, subnetKey, type Lease } from '../../controller/subnet/lease.js';
import { formatSubnetFile, parseSubnetFile } from '../../controller/subnet/subnet-file.js';

const config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
const lease = (subnet: string, publicIp: string, etcdLease = '7'): Lease => ({
  subnet: parseCidr(subnet)!,
  publicIp,
  backendType: 'vxlan',
  vni: 1,
  vtepMac: '0a:00:00:00:00:01',
  etcdLease,
  modRevision: '1',
  createRevision: '1',
});

describe('lease records', () => {
  it("round-trips flannel's key and value format", () => {
    const value = encodeLeaseValue({ backendType: 'vxlan', publicIp: '192.168.64.3', vni: 1, vtepMac: 'c6:d2:32:6f:8f:44' });
    expect(value).toBe('{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}');
    const parsed = parseLeaseKV('/coreos.com/network/subnets/10.244.1.0-24', value, '694d8a', '12');
    expect(
      parsed.ok && { subnet: formatCidr(parsed.lease.subnet), ip: parsed.lease.publicIp, mac: parsed.lease.vtepMac, etcdLease: parsed.lease.etcdLease },
    ).toEqual({ subnet: '10.244.1.0/24', ip: '192.168.64.3', mac: 'c6:d2:32:6f:8f:44', etcdLease: '694d8a' });
    expect(subnetKey(parseCidr('10.244.1.0/24')!)).toBe('10.244.1.0-24');
  });

  it('reads the IPv4 part of a dual-stack key', () => {
    const r = parseLeaseKV(
      'p/subnets/10.244.1.0-24&fc00:0:0:1::-64',
      '{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}',
    );
    expect(r.ok).toBe(true);
  });

  it.each([
    ['p/subnets/10.244.1.5-24', '{}', /not a subnet key/],
    ['p/subnets/garbage', '{}', /not a subnet key/],
    ['p/subnets/10.244.1.0-24', 'nope', /value is not JSON/],
    ['p/subnets/10.244.1.0-24', '{"PublicIP":"10.0.0.300","BackendType":"vxlan"}', /PublicIP "10.0.0.300" is not an IPv4 address/],
    ['p/subnets/10.244.1.0-24', '{"PublicIP":5}', /PublicIP must be a string/],
    ['p/subnets/10.244.1.0-24', '{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz"}}', /VtepMAC "zz" is not a MAC address/],
    [
      'p/subnets/10.244.1.0-24',
      '{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":"1","VtepMAC":"02:00:00:00:00:01"}}',
      /VNI must be a number/,
    ],
  ])('reports %s = %s as unusable', (key, value, reason) => {
    const r = parseLeaseKV(key, value);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(reason);
  });
});

describe('acquire decision', () => {
  it('reuses our lease by PublicIP when it still fits', () => {
    const d = decideAcquire({ config, publicIp: '10.0.0.2', leases: [lease('10.244.5.0/24', '10.0.0.1'), lease('10.244.9.0/24', '10.0.0.2')] });
    expect(d.action === 'reuse' && formatCidr(d.lease.subnet)).toBe('10.244.9.0/24');
  });

  it('prefers a reservation for us and never schedules it for deletion', () => {
    const d = decideAcquire({ config, publicIp: '10.0.0.2', leases: [lease('10.244.9.0/24', '10.0.0.2'), lease('10.244.3.0/24', '10.0.0.2', '0')] });
    expect(d).toMatchObject({ action: 'reuse', reservation: true });
    expect(d.action === 'reuse' && formatCidr(d.lease.subnet)).toBe('10.244.3.0/24');
  });

  it('drops our lease that no longer fits the config, then takes the hint if free', () => {
    const old = lease('10.99.0.0/24', '10.0.0.2');
    const d = decideAcquire({ config, publicIp: '10.0.0.2', leases: [old], hint: parseCidr('10.244.7.0/24') });
    expect(d).toMatchObject({ action: 'allocate', via: 'hint', stale: [old] });
  });

  it('ignores a taken hint and picks at random among the first 100 free subnets', () => {
    const leases = [lease('10.244.1.0/24', '10.0.0.1'), lease('10.244.2.0/24', '10.0.0.3')];
    const first = decideAcquire({ config, publicIp: '10.0.0.2', leases, hint: parseCidr('10.244.2.0/24'), random: () => 0 });
    const last = decideAcquire({ config, publicIp: '10.0.0.2', leases, random: () => 0.9999 });
    expect(first.action === 'allocate' && formatCidr(first.subnet)).toBe('10.244.3.0/24');
    expect(last.action === 'allocate' && formatCidr(last.subnet)).toBe('10.244.102.0/24'); // 100th free
  });

  it('says exhausted when every subnet is taken', () => {
    const small = parseNetworkConfig('{"Network":"10.0.0.0/26","Backend":{"Type":"vxlan"}}'); // /28s: .16 .32 .48
    const leases = ['10.0.0.16/28', '10.0.0.32/28', '10.0.0.48/28'].map((s, i) => lease(s, `10.1.0.${i}`));
    expect(freeSubnets(small, leases)).toEqual([]);
    expect(decideAcquire({ config: small, publicIp: '10.9.9.9', leases }).action).toBe('exhausted');
  });
});

describe('subnet file', () => {
  it("writes flannel's format with the first usable address", () => {
    const text = formatSubnetFile({ network: parseCidr('10.244.0.0/16')!, subnet: parseCidr('10.244.1.0/24')!, mtu: 1450, ipMasq: false });
    expect(text).toBe('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
    const back = parseSubnetFile(text);
    expect(formatCidr(back.subnet!)).toBe('10.244.1.0/24');
    expect(back.mtu).toBe(1450);
  });
});
