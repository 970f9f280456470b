import { describe, expect, it } from 'vitest';
import { foreignForwardRules, foreignNftForwardChains } from '../../controller/dataplane/forward-policy.js';

describe('FORWARD rules the fast path would bypass', () => {
  it("leaves flannel's and kube-proxy's jumps out and names everything else", () => {
    const save = [
      '*filter',
      ':FORWARD DROP [0:0]',
      '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
      '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      '-A FORWARD -m comment --comment "kube-router netpol" -j KUBE-ROUTER-FORWARD',
      '-A FORWARD -s 10.244.1.5/32 -j DROP',
      '-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT',
      'COMMIT',
    ].join('\n');
    expect(foreignForwardRules(save)).toEqual([
      'iptables: -A FORWARD -m comment --comment "kube-router netpol" -j KUBE-ROUTER-FORWARD',
      'iptables: -A FORWARD -s 10.244.1.5/32 -j DROP',
    ]);
    expect(foreignForwardRules('*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n', 'ip6tables')).toEqual([]);
  });

  it("finds nftables tables of their own hooked on forward, with rules; not iptables-nft's or kube-proxy's", () => {
    const chain = (family: string, table: string, name: string, hook?: string) => ({ chain: { family, table, name, ...(hook && { hook }) } });
    const rule = (family: string, table: string, c: string) => ({ rule: { family, table, chain: c } });
    const json = JSON.stringify({
      nftables: [
        { metainfo: {} },
        chain('ip', 'filter', 'FORWARD', 'forward'),
        rule('ip', 'filter', 'FORWARD'),
        chain('ip', 'kube-proxy', 'forward', 'forward'),
        rule('ip', 'kube-proxy', 'forward'),
        chain('inet', 'kube-network-policies', 'forward', 'forward'),
        rule('inet', 'kube-network-policies', 'forward'),
        rule('inet', 'kube-network-policies', 'forward'),
        chain('inet', 'empty', 'forward', 'forward'),
        chain('inet', 'other', 'input', 'input'),
        rule('inet', 'other', 'input'),
      ],
    });
    expect(foreignNftForwardChains(json)).toEqual(['nft: table inet kube-network-policies chain forward (2 rules)']);
  });
});
