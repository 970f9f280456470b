import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  configChangeReport,
  FatalConfigError,
  ipv4Networks,
  ipv6Networks,
  parseNetworkConfig,
  UnsupportedConfigError,
  waitLogDue,
} from '../../controller/config/network-config.js';
import { formatCidr } from '../../controller/net/ipv4.js';
import { formatCidr6 } from '../../controller/net/ipv6.js';

const summary = (text: string) => {
  const c = parseNetworkConfig(text);
  return {
    network: formatCidr(c.network!),
    subnetLen: c.subnetLen,
    min: formatCidr(c.subnetMin!),
    max: formatCidr(c.subnetMax!),
    vni: c.backend.vni,
    port: c.backend.port,
    mtu: c.backend.mtu,
  };
};

describe('flannel network config', () => {
  it.each([
    [
      '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}',
      { network: '10.244.0.0/16', subnetLen: 24, min: '10.244.1.0/24', max: '10.244.255.0/24', vni: 1, port: 8472, mtu: undefined },
    ],
    [
      '{"network":"10.0.0.0/24","backend":{"type":"vxlan","vni":7,"port":4789,"mtu":9000}}',
      { network: '10.0.0.0/24', subnetLen: 26, min: '10.0.0.64/26', max: '10.0.0.192/26', vni: 7, port: 4789, mtu: 9000 },
    ],
    [
      '{"Network":"10.1.0.0/22","SubnetLen":0,"Backend":{"Type":"VXLAN","VNI":0,"Port":0}}',
      { network: '10.1.0.0/22', subnetLen: 24, min: '10.1.1.0/24', max: '10.1.3.0/24', vni: 0, port: 8472, mtu: undefined },
    ],
    [
      '{"Network":"172.16.0.0/12","SubnetLen":20,"SubnetMin":"172.16.32.0","SubnetMax":"172.16.64.0","Backend":{"Type":"vxlan"},"Unknown":1}',
      { network: '172.16.0.0/12', subnetLen: 20, min: '172.16.32.0/20', max: '172.16.64.0/20', vni: 1, port: 8472, mtu: undefined },
    ],
  ])('accepts %s with flannel defaults', (text, expected) => {
    expect(summary(text)).toEqual(expected);
  });

  it.each([
    ['not json', /config: not valid JSON/],
    ['[1,2]', /config: must be a JSON object/],
    ['{"Backend":{"Type":"vxlan"}}', /Network: missing/],
    ['{"Network":"10.244.0.0","Backend":{"Type":"vxlan"}}', /Network "10.244.0.0": not an IPv4 CIDR/],
    ['{"Network":"10.244.0.0/29","Backend":{"Type":"vxlan"}}', /Network 10.244.0.0\/29: prefix \/29 is too small, must be \/28 or larger/],
    ['{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}', /SubnetLen 31: must be <= 30/],
    ['{"Network":"10.244.0.0/16","SubnetLen":17,"Backend":{"Type":"vxlan"}}', /SubnetLen 17: must be >= 18/],
    ['{"Network":"10.244.0.0/16","SubnetLen":"24","Backend":{"Type":"vxlan"}}', /SubnetLen: must be a number/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0","Backend":{"Type":"vxlan"}}', /SubnetMin 10.245.0.0: outside Network 10.244.0.0\/16/],
    ['{"Network":"10.244.0.0/16","SubnetMax":"10.244.3.7","Backend":{"Type":"vxlan"}}', /SubnetMax 10.244.3.7: not aligned to SubnetLen \/24/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0","Backend":{"Type":"vxlan"}}', /SubnetMin 10.244.9.0\/24 is above SubnetMax/],
    ['{"Network":"10.244.0.0/16"}', /Backend.Type missing: flannel's default is the udp backend/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}', /Backend.VNI: must be <= 16777215/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":-1}}', /Backend.Port: must not be negative/],
    ['{"Network":"10.244.0.0/16","Backend":"vxlan"}', /Backend: must be an object/],
    ['{"Network":"10.244.0.0/16","EnableIPv4":false}', /both false/],
  ])('rejects %s', (text, message) => {
    expect(() => parseNetworkConfig(text)).toThrow(message);
  });

  it('reports every problem at once', () => {
    expect(() => parseNetworkConfig('{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"udp"}}')).toThrow(/Backend.Type "udp".*; SubnetLen 31/);
  });

  it('takes host-gw (ignoring vxlan options, as flannel does) and vxlan with DirectRouting', () => {
    const hostGw = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","MTU":1400,"DirectRouting":true}}');
    expect(hostGw.backend).toMatchObject({ type: 'host-gw', mtu: undefined, directRouting: false });
    const dr = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"type":"VXLAN","directrouting":true}}');
    expect(dr.backend).toMatchObject({ type: 'vxlan', directRouting: true });
  });

  it.each([
    ['udp', /flannel's udp backend is not supported \(twill implements vxlan and host-gw\)/],
    ['wireguard', /flannel's wireguard backend is not supported/],
    ['ipip', /flannel's ipip backend is not supported/],
    ['ipsec', /flannel's ipsec backend is not supported/],
    ['alloc', /flannel's alloc backend is not supported/],
    ['vxlna', /Backend.Type "vxlna": no such flannel backend/],
  ])('refuses the %s backend as unsupported, not invalid', (type, message) => {
    const attempt = () => parseNetworkConfig(JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: type } }));
    expect(attempt).toThrow(UnsupportedConfigError);
    expect(attempt).toThrow(message);
  });

  it.each([
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","GBP":true}}', /Backend.GBP true/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Learning":true}}', /Backend.Learning true/],
    ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","GBP":true}}', /Backend.GBP true/],
    ['{"EnableIPv6":true,"IPv6Network":"fc00::/48","Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}', /flannel's wireguard backend is not supported/],
  ])('refuses an unsupported option: %s', (text, message) => {
    expect(() => parseNetworkConfig(text)).toThrow(UnsupportedConfigError);
    expect(() => parseNetworkConfig(text)).toThrow(message);
  });

  // flanneld retries a config that fails its check (getConfig) and exits on what it finds wrong
  // after it (test/integration/flanneld-parity.test.ts runs both against each of these).
  it.each([
    ['{"Network":"10.244.0.0/16","EnableIPv4":false,"Backend":{"Type":"vxlan"}}', true, /EnableIPv4 and EnableIPv6 are both false/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0","Backend":{"Type":"vxlan"}}', true, /no subnet is left to lease/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":-1}}', true, /Backend.VNI: must not be negative/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}', true, /Backend.VNI: must be a number/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":1}}', false, /Backend.Type: must be a string/],
    ['{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"udp"}}', false, /SubnetLen 31/],
    ['{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan","VNI":-1}}', false, /SubnetLen 31/],
  ])('%s: fatal %s', (text, fatal, message) => {
    let err: unknown;
    try {
      parseNetworkConfig(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err instanceof FatalConfigError).toBe(fatal);
    expect((err as Error).message).toMatch(message);
  });

  it('takes a field given twice in two cases from the later key, as Go does, whichever is the exact name', () => {
    expect(summary('{"Network":"10.244.0.0/16","network":"10.50.0.0/16","Backend":{"Type":"vxlan"}}').network).toBe('10.50.0.0/16');
    expect(summary('{"network":"10.50.0.0/16","Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}').network).toBe('10.244.0.0/16');
    expect(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","type":"host-gw"}}').backend.type).toBe('host-gw');
  });

  it('reads no options of host-gw, as flannel does: whatever Backend holds besides Type', () => {
    expect(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","VNI":-1,"Port":"x"}}').backend).toMatchObject({
      type: 'host-gw',
      vni: 1,
    });
  });

  it('keeps an invalid config apart from an unsupported one (the agent waits for the first, exits on the second)', () => {
    let err: unknown;
    try {
      parseNetworkConfig('{"Network":"10.244.0.0/33","Backend":{"Type":"vxlan"}}');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).not.toBeInstanceOf(UnsupportedConfigError);
  });
});

describe('IPv6 in the network config', () => {
  const summary6 = (text: string) => {
    const c = parseNetworkConfig(text);
    return {
      v4: c.network && formatCidr(c.network),
      net: c.ipv6Network && formatCidr6(c.ipv6Network),
      len: c.ipv6SubnetLen,
      min: c.ipv6SubnetMin && formatCidr6(c.ipv6SubnetMin),
      max: c.ipv6SubnetMax && formatCidr6(c.ipv6SubnetMax),
    };
  };

  it.each([
    // flannel's defaults (pkg/subnet/config.go): a /64 per node when the network is /62 or larger, else the network plus 2; the first and last subnet left out
    [
      '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}',
      { v4: '10.244.0.0/16', net: 'fc00::/48', len: 64, min: 'fc00:0:0:1::/64', max: 'fc00:0:0:ffff::/64' },
    ],
    [
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}',
      { v4: undefined, net: 'fc00::/48', len: 64, min: 'fc00:0:0:1::/64', max: 'fc00:0:0:ffff::/64' },
    ],
    [
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/120","Backend":{"Type":"host-gw"}}',
      { v4: undefined, net: 'fc00::/120', len: 122, min: 'fc00::40/122', max: 'fc00::c0/122' },
    ],
    [
      '{"EnableIPv4":false,"enableipv6":true,"ipv6network":"FC00:0:0:0::/63","IPv6SubnetLen":0,"Backend":{"Type":"vxlan"}}',
      { v4: undefined, net: 'fc00::/63', len: 65, min: 'fc00::8000:0:0:0/65', max: 'fc00:0:0:1:8000::/65' },
    ],
    [
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"2001:db8::/32","IPv6SubnetLen":56,"IPv6SubnetMin":"2001:db8:0:100::","IPv6SubnetMax":"2001:db8:ffff:ff00::","Backend":{"Type":"vxlan"}}',
      { v4: undefined, net: '2001:db8::/32', len: 56, min: '2001:db8:0:100::/56', max: '2001:db8:ffff:ff00::/56' },
    ],
    // host bits of the network are dropped, as Go's net.ParseCIDR does
    [
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::1/48","Backend":{"Type":"vxlan"}}',
      { v4: undefined, net: 'fc00::/48', len: 64, min: 'fc00:0:0:1::/64', max: 'fc00:0:0:ffff::/64' },
    ],
    // IPv6 fields are ignored while EnableIPv6 is false, as flannel ignores them
    [
      '{"Network":"10.244.0.0/16","IPv6Network":"nonsense","Backend":{"Type":"vxlan"}}',
      { v4: '10.244.0.0/16', net: undefined, len: 0, min: undefined, max: undefined },
    ],
  ])('accepts %s', (text, expected) => {
    expect(summary6(text)).toEqual(expected);
  });

  it('types an IPv6-only config so that its IPv4 part cannot be used', () => {
    const c = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
    expect(c.enableIPv4).toBe(false);
    expect(ipv4Networks(c)).toBeUndefined();
    expect(ipv6Networks(c)?.ipv6SubnetLen).toBe(64);
    expect(c).not.toHaveProperty('network');
  });

  it.each([
    ['{"Network":"10.244.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"}}', /IPv6Network: missing \(required when EnableIPv6 is true\)/],
    ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}', /IPv6Network "10.0.0.0\/8": not an IPv6 CIDR/],
    ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::","Backend":{"Type":"vxlan"}}', /IPv6Network "fc00::": not an IPv6 CIDR/],
    [
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/125","Backend":{"Type":"vxlan"}}',
      /IPv6Network fc00::\/125: prefix \/125 is too small, must be \/124 or larger/,
    ],
    ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127,"Backend":{"Type":"vxlan"}}', /IPv6SubnetLen 127: must be <= 126/],
    [
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":49,"Backend":{"Type":"vxlan"}}',
      /IPv6SubnetLen 49: must be >= 50 \(IPv6Network \/48 plus 2\)/,
    ],
    ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":129,"Backend":{"Type":"vxlan"}}', /IPv6SubnetLen: must be <= 128/],
    [
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc01::","Backend":{"Type":"vxlan"}}',
      /IPv6SubnetMin fc01::: outside IPv6Network fc00::\/48/,
    ],
    [
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc00:0:0:5::1","Backend":{"Type":"vxlan"}}',
      /IPv6SubnetMax fc00:0:0:5::1: not aligned to IPv6SubnetLen \/64/,
    ],
    [
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"10.0.0.1","Backend":{"Type":"vxlan"}}',
      /IPv6SubnetMin "10.0.0.1": not an IPv6 address/,
    ],
    [
      '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:9::","IPv6SubnetMax":"fc00:0:0:3::","Backend":{"Type":"vxlan"}}',
      /IPv6SubnetMin fc00:0:0:9::\/64 is above IPv6SubnetMax fc00:0:0:3::\/64/,
    ],
    ['{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":48,"Backend":{"Type":"vxlan"}}', /IPv6Network: must be a string/],
    ['{"EnableIPv6":"yes","Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', /EnableIPv6: must be true or false/],
  ])('rejects %s', (text, message) => {
    expect(() => parseNetworkConfig(text)).toThrow(ConfigError);
    expect(() => parseNetworkConfig(text)).not.toThrow(UnsupportedConfigError);
    expect(() => parseNetworkConfig(text)).toThrow(message);
  });

  it("reports both families' problems at once", () => {
    expect(() =>
      parseNetworkConfig(
        '{"Network":"10.244.0.0/16","SubnetLen":31,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127,"Backend":{"Type":"vxlan"}}',
      ),
    ).toThrow(/SubnetLen 31: must be <= 30; IPv6SubnetLen 127: must be <= 126/);
  });

  it('compares an edited IPv6 config by meaning', () => {
    const running = '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}';
    expect(
      configChangeReport(running, '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00:0::/48","IPv6SubnetLen":64,"Backend":{"Type":"vxlan"}}'),
    ).toBeUndefined();
    expect(configChangeReport(running, '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc01::/48","Backend":{"Type":"vxlan"}}')).toMatch(
      /reads it only at start/,
    );
  });
});

describe('a config edited after start', () => {
  const running = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';
  it('is not reported when it means the same', () => {
    expect(configChangeReport(running, running)).toBeUndefined();
    expect(configChangeReport(running, '{"network":"10.244.0.0/16", "Backend":{"Type":"vxlan","VNI":1}}')).toBeUndefined();
  });
  it('is reported as needing a restart when twill could run it', () => {
    expect(configChangeReport(running, '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}')).toMatch(
      /reads it only at start.*until the agent restarts/,
    );
  });
  it('is reported with the reason when twill could not run it', () => {
    expect(configChangeReport(running, '{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}')).toMatch(
      /cannot run \(unsupported config: Backend.Type "wireguard".*the running datapath is unchanged/,
    );
    expect(configChangeReport(running, undefined)).toMatch(/deleted/);
  });
});

describe('waiting for a usable config', () => {
  it('logs a new problem at once, and the same one again only every 30 s', () => {
    expect(waitLogDue('no network config at /x/config yet', undefined, 1000)).toBe(true);
    const last = { problem: 'no network config at /x/config yet', at: 1000 };
    expect(waitLogDue(last.problem, last, 30_999)).toBe(false);
    expect(waitLogDue(last.problem, last, 31_000)).toBe(true);
    expect(waitLogDue('/x/config: invalid config: Network: missing', last, 2000)).toBe(true);
  });
});
