import { describe, expect, it } from 'vitest';
import { chooseIface, type IfaceAddrs } from '../../controller/agent/iface.js';

const link = (ifindex: number, ifname: string, ...addrs: string[]): IfaceAddrs => ({
  ifindex,
  ifname,
  mtu: 1500,
  address: `02:00:00:00:00:0${ifindex}`,
  addr_info: addrs.map((a) => ({ family: 'inet', local: a, prefixlen: 24, scope: 'global' })),
});
const links = [
  { ...link(1, 'lo'), addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }] },
  link(2, 'eth0', '192.168.1.10'),
  link(3, 'eth1', '10.0.0.5', '10.0.0.6'),
];

describe('chooseIface', () => {
  it('defaults to the interface of the default route', () => {
    const c = chooseIface(links, {}, { defaultDev: 'eth1' });
    expect(c).toMatchObject({ name: 'eth1', address: '10.0.0.5', publicIp: '10.0.0.5', reason: 'default route' });
  });

  it('takes --iface by name or by address, first match in the order given', () => {
    expect(chooseIface(links, { iface: ['nope', 'eth0'] }, {}).name).toBe('eth0');
    expect(chooseIface(links, { iface: ['10.0.0.6'] }, {})).toMatchObject({ name: 'eth1', address: '10.0.0.6' });
  });

  it('matches --iface-regex against addresses and names', () => {
    expect(chooseIface(links, { ifaceRegex: ['^10\\.0\\.0\\.6$'] }, {}).address).toBe('10.0.0.6');
    expect(chooseIface(links, { ifaceRegex: ['^eth0$'] }, {}).address).toBe('192.168.1.10');
  });

  it('uses the route to --iface-can-reach', () => {
    const c = chooseIface(links, { ifaceCanReach: '10.9.9.9' }, { canReachDev: 'eth1', canReachSrc: '10.0.0.6' });
    expect(c).toMatchObject({ name: 'eth1', address: '10.0.0.6' });
  });

  it('lets --public-ip override the lease address only', () => {
    expect(chooseIface(links, { publicIp: '203.0.113.7' }, { defaultDev: 'eth0' })).toMatchObject({ address: '192.168.1.10', publicIp: '203.0.113.7' });
  });

  it('names the flag when nothing matches', () => {
    expect(() => chooseIface(links, { iface: ['wlan0'] }, {})).toThrow(/--iface wlan0: no interface/);
    expect(() => chooseIface(links, { ifaceRegex: ['('] }, {})).toThrow(/--iface-regex \(:/);
    expect(() => chooseIface(links, { ifaceCanReach: '1.2.3.4' }, {})).toThrow(/--iface-can-reach 1.2.3.4: no route/);
    expect(() => chooseIface(links, {}, {})).toThrow(/no default route/);
  });
});
