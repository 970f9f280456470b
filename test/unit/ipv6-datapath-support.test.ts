import { describe, expect, it } from 'vitest';
import { ipv6DatapathSupport } from '../../controller/agent/agent.js';
import { parseNetworkConfig } from '../../controller/config/network-config.js';

describe('ipv6DatapathSupport: the one place the agent refuses what it does not carry of IPv6', () => {
  const dual = (backend: string) => parseNetworkConfig(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":${backend}}`);
  const v6only = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');

  it('runs IPv4, dual stack with vxlan (DirectRouting or not) and host-gw on any dataplane, and IPv6-only VXLAN on the kernel dataplane or auto', () => {
    expect(ipv6DatapathSupport(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}'))).toBeUndefined();
    for (const dp of ['auto', 'bpf', 'kernel'] as const)
      for (const backend of ['{"Type":"vxlan"}', '{"Type":"vxlan","DirectRouting":true}', '{"Type":"host-gw"}']) expect(ipv6DatapathSupport(dual(backend), dp)).toBeUndefined();
    expect(ipv6DatapathSupport(v6only, 'auto')).toBeUndefined();
    expect(ipv6DatapathSupport(v6only, 'kernel')).toBeUndefined();
  });

  it('refuses, by name, an IPv6-only network on --dataplane bpf', () => {
    expect(ipv6DatapathSupport(v6only, 'bpf')).toMatch(/^EnableIPv4 false with --dataplane bpf/);
  });
});
