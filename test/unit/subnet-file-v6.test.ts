import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseNetworkConfig } from '../../controller/config/network-config.js';
import { formatCidr, parseCidr } from '../../controller/net/ipv4.js';
import { formatCidr6, parseCidr6 } from '../../controller/net/ipv6.js';
import { NO_SUBNET } from '../../controller/subnet/lease.js';
import { formatSubnetFile, parseSubnetFile, readSubnetHints, subnetFileFor } from '../../controller/subnet/subnet-file.js';

const o = { mtu: 1430, ipMasq: true };

describe('subnet file with IPv6 (flannel WriteSubnetFile)', () => {
  it('writes the IPv4 pair, then the IPv6 pair, then MTU and IPMASQ', () => {
    const config = parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
    const text = formatSubnetFile(subnetFileFor(config, { subnet: parseCidr('10.244.1.0/24')!, subnet6: parseCidr6('fc00:0:0:1::/64') }, o));
    expect(text).toBe(
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n',
    );
  });

  it('leaves out the IPv4 lines in an IPv6-only network', () => {
    const config = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
    const text = formatSubnetFile(subnetFileFor(config, { subnet: NO_SUBNET, subnet6: parseCidr6('fc00:0:0:1::/64') }, o));
    expect(text).toBe('FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n');
    expect(() => subnetFileFor(config, { subnet: NO_SUBNET }, o)).toThrow(/without an IPv6 subnet/);
  });

  it('writes no IPv6 lines while IPv6 is disabled', () => {
    const config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
    expect(formatSubnetFile(subnetFileFor(config, { subnet: parseCidr('10.244.1.0/24')!, subnet6: parseCidr6('fc00:0:0:1::/64') }, o))).not.toMatch(/IPV6/);
  });

  it('reads the IPv6 lines back, as networks', () => {
    const f = parseSubnetFile('FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n');
    expect([formatCidr6(f.ipv6Network!), formatCidr6(f.ipv6Subnet!), f.network, f.subnet]).toEqual(['fc00::/48', 'fc00:0:0:1::/64', undefined, undefined]);
    expect(parseSubnetFile('FLANNEL_IPV6_SUBNET=nonsense\n').ipv6Subnet).toBeUndefined();
  });

  it('gives both previous subnets as hints, and none for a missing file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'twill-subnet-'));
    const file = path.join(dir, 'subnet.env');
    writeFileSync(
      file,
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n',
    );
    const h = readSubnetHints(file);
    expect([formatCidr(h.hint!), formatCidr6(h.hint6!)]).toEqual(['10.244.3.0/24', 'fc00:0:0:3::/64']);
    expect(readSubnetHints(path.join(dir, 'absent'))).toEqual({});
  });
});
