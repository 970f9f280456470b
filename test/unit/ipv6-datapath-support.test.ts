import { describe, expect, it } from 'vitest';
import { ipv6DatapathSupport } from '../../controller/agent/agent.js';
import { parseNetworkConfig } from '../../controller/config/network-config.js';

describe('ipv6DatapathSupport: the one place the agent refuses IPv6', () => {
  it('refuses dual-stack and IPv6-only networks by name, and nothing else', () => {
    expect(ipv6DatapathSupport(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'))).toBeUndefined();
    expect(ipv6DatapathSupport(parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}'))).toMatch(/^EnableIPv6: twill's datapath does not carry IPv6 yet/);
    expect(ipv6DatapathSupport(parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"host-gw"}}'))).toMatch(/^EnableIPv6/);
  });
});
