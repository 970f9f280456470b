import { describe, expect, it } from 'vitest';
import { ConfigError, configChangeReport, parseNetworkConfig, UnsupportedConfigError, waitLogDue } from '../../controller/config/network-config.js';
import { formatCidr } from '../../controller/net/ipv4.js';

const summary = (text: string) => {
  const c = parseNetworkConfig(text);
  return { network: formatCidr(c.network), subnetLen: c.subnetLen, min: formatCidr(c.subnetMin), max: formatCidr(c.subnetMax), vni: c.backend.vni, port: c.backend.port, mtu: c.backend.mtu };
};

describe('flannel network config', () => {
  it.each([
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', { network: '10.244.0.0/16', subnetLen: 24, min: '10.244.1.0/24', max: '10.244.255.0/24', vni: 1, port: 8472, mtu: undefined }],
    ['{"network":"10.0.0.0/24","backend":{"type":"vxlan","vni":7,"port":4789,"mtu":9000}}', { network: '10.0.0.0/24', subnetLen: 26, min: '10.0.0.64/26', max: '10.0.0.192/26', vni: 7, port: 4789, mtu: 9000 }],
    ['{"Network":"10.1.0.0/22","SubnetLen":0,"Backend":{"Type":"VXLAN","VNI":0,"Port":0}}', { network: '10.1.0.0/22', subnetLen: 24, min: '10.1.1.0/24', max: '10.1.3.0/24', vni: 1, port: 8472, mtu: undefined }],
    ['{"Network":"172.16.0.0/12","SubnetLen":20,"SubnetMin":"172.16.32.0","SubnetMax":"172.16.64.0","Backend":{"Type":"vxlan"},"Unknown":1}', { network: '172.16.0.0/12', subnetLen: 20, min: '172.16.32.0/20', max: '172.16.64.0/20', vni: 1, port: 8472, mtu: undefined }],
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
    ['{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}', /EnableIPv6: IPv6 overlays are not supported/],
  ])('refuses an unsupported option: %s', (text, message) => {
    expect(() => parseNetworkConfig(text)).toThrow(UnsupportedConfigError);
    expect(() => parseNetworkConfig(text)).toThrow(message);
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

describe('a config edited after start', () => {
  const running = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';
  it('is not reported when it means the same', () => {
    expect(configChangeReport(running, running)).toBeUndefined();
    expect(configChangeReport(running, '{"network":"10.244.0.0/16", "Backend":{"Type":"vxlan","VNI":1}}')).toBeUndefined();
  });
  it('is reported as needing a restart when twill could run it', () => {
    expect(configChangeReport(running, '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}')).toMatch(/reads it only at start.*until the agent restarts/);
  });
  it('is reported with the reason when twill could not run it', () => {
    expect(configChangeReport(running, '{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}')).toMatch(/cannot run \(unsupported config: Backend.Type "wireguard".*the running datapath is unchanged/);
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
