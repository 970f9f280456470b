import { describe, expect, it } from 'vitest';
import { chooseIface, type IfaceAddrs } from '../../controller/agent/iface.js';

type Addr = IfaceAddrs['addr_info'][number];
const v4 = (local: string): Addr => ({ family: 'inet', local, prefixlen: 24, scope: 'global' });
const v6 = (local: string, extra: Partial<Addr> = {}): Addr => ({ family: 'inet6', local, prefixlen: 64, scope: 'global', ...extra });
const link = (ifindex: number, ifname: string, ...addr_info: Addr[]): IfaceAddrs => ({
  ifindex,
  ifname,
  mtu: 1500,
  address: `02:00:00:00:00:0${ifindex}`,
  addr_info,
});

const links = [
  link(1, 'lo', { family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }, { family: 'inet6', local: '::1', prefixlen: 128, scope: 'host' }),
  link(2, 'eth0', v4('192.168.1.10'), v6('fe80::1', { scope: 'link' }), v6('2001:db8::10', { deprecated: true }), v6('2001:DB8:0:0::11')),
  link(3, 'eth1', v4('10.0.0.5'), v6('fd00::5'), v6('fd00::6')),
  link(4, 'eth2', v4('10.1.0.5'), v6('fe80::4', { scope: 'link' })),
];
const dual = { ipv4: true, ipv6: true };
const only6 = { ipv4: false, ipv6: true };

describe('chooseIface with IPv6 (flannel LookupExtIface)', () => {
  it('takes the first global, usable IPv6 address of the default route interface, canonical', () => {
    expect(chooseIface(links, { families: dual }, { defaultDev: 'eth0', defaultDev6: 'eth0' })).toMatchObject({
      name: 'eth0',
      address: '192.168.1.10',
      publicIp: '192.168.1.10',
      address6: '2001:db8::11',
      publicIpv6: '2001:db8::11',
    });
    const c = chooseIface(links, { families: only6 }, { defaultDev6: 'eth1' });
    expect(c).toMatchObject({ name: 'eth1', address6: 'fd00::5', publicIpv6: 'fd00::5' });
    expect(c.address).toBeUndefined();
    expect(c.publicIp).toBeUndefined();
  });

  it('wants both default routes on one interface in dual stack', () => {
    expect(() => chooseIface(links, { families: dual }, { defaultDev: 'eth0', defaultDev6: 'eth1' })).toThrow(
      /IPv6 default route's interface eth1 must be the IPv4 default route's eth0/,
    );
    expect(() => chooseIface(links, { families: dual }, { defaultDev: 'eth0' })).toThrow(/no IPv6 default route/);
    expect(() => chooseIface(links, { families: only6 }, {})).toThrow(/no IPv6 default route/);
  });

  it('says so when the interface has no global IPv6 address', () => {
    expect(() => chooseIface(links, { families: dual }, { defaultDev: 'eth2', defaultDev6: 'eth2' })).toThrow(
      /interface eth2 \(default route\) has no global IPv6 address/,
    );
    expect(() => chooseIface(links, { iface: ['eth2'], families: only6 }, {})).toThrow(/has no global IPv6 address/);
  });

  it('lets --public-ipv6 override the lease address only', () => {
    expect(chooseIface(links, { families: only6, publicIpv6: '2001:DB8::FF' }, { defaultDev6: 'eth1' })).toMatchObject({
      address6: 'fd00::5',
      publicIpv6: '2001:db8::ff',
    });
  });

  it('takes --iface by name or by IPv6 address', () => {
    expect(chooseIface(links, { iface: ['eth1'], families: dual }, {})).toMatchObject({ address: '10.0.0.5', address6: 'fd00::5' });
    expect(chooseIface(links, { iface: ['fd00:0::6'], families: dual }, {})).toMatchObject({ name: 'eth1', address: '10.0.0.5', address6: 'fd00::6' });
    expect(chooseIface(links, { iface: ['10.0.0.5'], families: only6 }, {})).toMatchObject({ name: 'eth1', address6: 'fd00::5' });
    expect(() => chooseIface(links, { iface: ['fe80::1'], families: only6 }, {})).toThrow(/--iface fe80::1: no interface/);
  });

  it('matches --iface-regex against the addresses of each enabled family, then names', () => {
    expect(chooseIface(links, { ifaceRegex: ['^fd00::6$'], families: only6 }, {})).toMatchObject({ name: 'eth1', address6: 'fd00::6' });
    // dual stack wants both families' addresses to match on one interface, else falls back to names
    expect(chooseIface(links, { ifaceRegex: ['^(10\\.0\\.0\\.5|fd00::6)$'], families: dual }, {})).toMatchObject({
      name: 'eth1',
      address: '10.0.0.5',
      address6: 'fd00::6',
    });
    expect(chooseIface(links, { ifaceRegex: ['^eth1$'], families: dual }, {})).toMatchObject({ address: '10.0.0.5', address6: 'fd00::5' });
    expect(() => chooseIface(links, { ifaceRegex: ['^eth2$'], families: only6 }, {})).toThrow(/no interface name or address matches/);
  });

  it('uses the IPv6 route to --iface-can-reach', () => {
    expect(chooseIface(links, { ifaceCanReach: '2001:db8:1::1', families: dual }, { canReachDev: 'eth1', canReachSrc: 'fd00::6' })).toMatchObject({
      name: 'eth1',
      address: '10.0.0.5',
      address6: 'fd00::6',
    });
    expect(() => chooseIface(links, { ifaceCanReach: '2001:db8:1::1', families: only6 }, {})).toThrow(/--iface-can-reach 2001:db8:1::1: no route/);
  });

  it('stays IPv4-only without families, as before', () => {
    const c = chooseIface(links, {}, { defaultDev: 'eth2' });
    expect(c).toMatchObject({ address: '10.1.0.5' });
    expect(c.address6).toBeUndefined();
  });
});
