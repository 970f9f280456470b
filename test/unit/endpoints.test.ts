import { describe, expect, it } from 'vitest';
import { planEndpoints, type BridgePort } from '../../controller/endpoints/desired.js';
import { recordFromCniResult, type EndpointRecord } from '../../controller/endpoints/records.js';

// What the bridge plugin (containernetworking-plugins 1.1.1) returns for a pod, cniVersion 0.4.0.
const bridgeResult = {
  cniVersion: '0.4.0',
  interfaces: [
    { name: 'cni0', mac: 'f6:09:28:3b:cd:e9' },
    { name: 'veth7438f870', mac: '76:a7:19:c6:07:d6' },
    { name: 'eth0', mac: '5A:11:22:33:44:55', sandbox: '/run/netns/p1' },
  ],
  ips: [{ version: '4', interface: 2, address: '10.244.1.2/24', gateway: '10.244.1.1' }],
  routes: [{ dst: '10.244.0.0/16' }],
};
const ctx = { containerId: 'c1', ifname: 'eth0', netns: '/run/netns/p1', bridge: 'cni0', now: new Date('2026-11-30T00:00:00Z') };

describe("the CNI plugin's endpoint record", () => {
  it('takes the pod address and MAC, the host veth and the bridge from the delegate result', () => {
    expect(recordFromCniResult(bridgeResult, ctx)).toEqual({
      containerId: 'c1',
      ifname: 'eth0',
      netns: '/run/netns/p1',
      ip: '10.244.1.2',
      mac: '5a:11:22:33:44:55',
      hostVeth: 'veth7438f870',
      bridge: 'cni0',
      addedAt: '2026-11-30T00:00:00.000Z',
    });
  });

  it('reads a CNI 1.0 result (no version field)', () => {
    const v1 = { ...bridgeResult, cniVersion: '1.0.0', ips: [{ interface: 2, address: '10.244.1.2/24' }] };
    expect(recordFromCniResult(v1, ctx)?.ip).toBe('10.244.1.2');
  });

  it('an IPv6-only pod (IPv6-only network) gets a record with its IPv6 address and no IPv4 one', () => {
    const rec6 = recordFromCniResult({ ...bridgeResult, ips: [{ interface: 2, address: 'fd00::2/64' }] }, ctx);
    expect(rec6).toMatchObject({ ip6: 'fd00::2', hostVeth: 'veth7438f870', mac: '5a:11:22:33:44:55' });
    expect(rec6).not.toHaveProperty('ip');
  });

  it.each([
    ['no address', { ...bridgeResult, ips: [] }],
    ['an address on no interface', { ...bridgeResult, ips: [{ address: '10.244.1.2/24' }] }],
    ['no bridge (another delegate)', { ...bridgeResult, interfaces: bridgeResult.interfaces.filter((i) => i.name !== 'cni0') }],
    [
      'the pod interface has no MAC',
      { ...bridgeResult, interfaces: [bridgeResult.interfaces[0], bridgeResult.interfaces[1], { name: 'eth0', sandbox: '/run/netns/p1' }] },
    ],
    ['not a result at all', 'garbage'],
  ])('gives no record for %s: the pod stays on the stack path', (_what, result) => {
    expect(recordFromCniResult(result, ctx)).toBeUndefined();
  });
});

describe('which pods the fast path serves', () => {
  const rec = (ip: string, hostVeth: string, addedAt = '2026-11-30T00:00:00Z', containerId = hostVeth): EndpointRecord => ({
    containerId,
    ifname: 'eth0',
    ip,
    mac: '0a:00:00:00:00:01',
    hostVeth,
    bridge: 'cni0',
    addedAt,
  });
  const port = (ifname: string, ifindex: number): BridgePort => ({ bridge: 'cni0', ifname, ifindex, mtu: 1450 });
  const bridgeMacs = new Map([['cni0', 'f6:09:28:3b:cd:e9']]);
  const plan = (records: EndpointRecord[], ports: BridgePort[], discovered = []) =>
    planEndpoints({ subnet: '10.244.1.0/24', encapMtu: 1450, records, ports, bridgeMacs, discovered });

  it('an entry per recorded pod whose veth is a bridge port, with the bridge as gateway', () => {
    const p = plan([rec('10.244.1.2', 'vethA')], [port('vethA', 5)]);
    expect([...p.endpoints]).toEqual([
      ['10.244.1.2', { ifindex: 5, mac: '0a:00:00:00:00:01', gateway_mac: 'f6:09:28:3b:cd:e9', mtu: 1450, encap_mtu: 1450, flags: 0 }],
    ]);
    expect(p.veths).toEqual([{ ifname: 'vethA', ifindex: 5 }]);
    expect(p.problems).toEqual([]);
  });

  it('a pod deleted while the agent was down (record left, veth gone) is stale, not served', () => {
    const p = plan([rec('10.244.1.2', 'vethGone')], [port('vethB', 7)]);
    expect(p.endpoints.size).toBe(0);
    expect(p.stale.map((r) => r.hostVeth)).toEqual(['vethGone']);
  });

  it('a pod re-created with the same address on a new veth: the live veth wins', () => {
    const p = plan([rec('10.244.1.2', 'vethOld', '2026-11-30T00:00:00Z'), rec('10.244.1.2', 'vethNew', '2026-11-30T00:01:00Z')], [port('vethNew', 9)]);
    expect(p.endpoints.get('10.244.1.2')?.ifindex).toBe(9);
    expect(p.problems).toEqual([]);
  });

  it('two live veths claiming one address: the newest record wins, and it is reported', () => {
    const p = plan(
      [rec('10.244.1.2', 'vethA', '2026-11-30T00:00:00Z'), rec('10.244.1.2', 'vethB', '2026-11-30T00:05:00Z')],
      [port('vethA', 5), port('vethB', 6)],
    );
    expect(p.endpoints.get('10.244.1.2')?.ifindex).toBe(6);
    expect(p.problems).toEqual([expect.stringMatching(/10\.244\.1\.2 is claimed by container vethB on vethB and container vethA on vethA: using vethB/)]);
  });

  it('an address outside the node subnet is left to the stack and reported', () => {
    const p = plan([rec('10.244.9.2', 'vethA')], [port('vethA', 5)]);
    expect(p.endpoints.size).toBe(0);
    expect(p.problems[0]).toMatch(/outside this node's subnet/);
  });

  it('an IPv6-only pod is planned into the IPv6 endpoints by its IPv6 address, and nothing IPv4', () => {
    const p = planEndpoints({
      subnet: '0.0.0.0/0',
      encapMtu: 1450,
      subnet6: 'fd00:0:0:1::/64',
      encapMtu6: 1430,
      records: [{ ...rec('10.244.1.2', 'vethA'), ip: undefined, ip6: 'fd00:0:0:1::2' }],
      ports: [port('vethA', 5)],
      bridgeMacs,
    });
    expect(p.endpoints.size).toBe(0);
    expect([...p.endpoints6]).toEqual([['fd00:0:0:1::2', expect.objectContaining({ ifindex: 5, encap_mtu: 1430 })]]);
    const outside = planEndpoints({
      subnet: '0.0.0.0/0',
      encapMtu: 1450,
      subnet6: 'fd00:0:0:1::/64',
      encapMtu6: 1430,
      records: [{ ...rec('10.244.1.2', 'vethA'), ip: undefined, ip6: 'fd00:0:0:9::2' }],
      ports: [port('vethA', 5)],
      bridgeMacs,
    });
    expect(outside.endpoints6.size).toBe(0);
    expect(outside.problems[0]).toMatch(/outside this node's IPv6 subnet/);
  });

  it('a port without a record is served from what the scan found in its namespace; a record beats the scan', () => {
    const p = planEndpoints({
      subnet: '10.244.1.0/24',
      encapMtu: 1450,
      records: [rec('10.244.1.2', 'vethA')],
      ports: [port('vethA', 5), port('vethF', 8)],
      bridgeMacs,
      discovered: [
        { hostVeth: 'vethF', ip: '10.244.1.9', mac: '0a:00:00:00:00:09' },
        { hostVeth: 'vethA', ip: '10.244.1.77', mac: '0a:00:00:00:00:77' },
      ],
    });
    expect([...p.endpoints.keys()].sort()).toEqual(['10.244.1.2', '10.244.1.9']);
    expect(p.endpoints.get('10.244.1.9')).toMatchObject({ ifindex: 8, mac: '0a:00:00:00:00:09' });
  });
});
