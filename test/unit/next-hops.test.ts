import { describe, expect, it } from 'vitest';
import { planNextHops, type NeighbourRow } from '../../controller/dataplane/next-hops.js';
import type { UnderlayRoute } from '../../controller/reconcile/underlay.js';

const direct = (dev = 'eth0'): UnderlayRoute => ({ kind: 'direct', dev });
const neigh = (dst: string, lladdr: string | undefined, state: string): NeighbourRow => ({ dst, dev: 'eth0', lladdr, state: [state] });

describe('planNextHops', () => {
  it("takes an on-link peer's own MAC and a routed peer's gateway MAC", () => {
    const routes = new Map<string, UnderlayRoute>([
      ['192.168.1.2', direct()],
      ['10.9.0.7', { kind: 'routed', gateway: '192.168.1.1', dev: 'eth0' }],
    ]);
    const neighbours = [neigh('192.168.1.2', '0A:00:00:00:00:02', 'REACHABLE'), neigh('192.168.1.1', '0a:00:00:00:00:01', 'PERMANENT')];
    expect(planNextHops(['192.168.1.2', '10.9.0.7'], routes, neighbours, 'eth0')).toEqual(
      new Map([
        ['192.168.1.2', '0a:00:00:00:00:02'],
        ['10.9.0.7', '0a:00:00:00:00:01'],
      ]),
    );
  });

  it("does the same for IPv6: an on-link peer's own MAC, a routed peer's link-local gateway's", () => {
    const routes = new Map<string, UnderlayRoute>([
      ['fd00:1::2', direct()],
      ['fd00:9::7', { kind: 'routed', gateway: 'fe80::1', dev: 'eth0' }],
      ['fd00:9::8', { kind: 'routed', gateway: 'fe80::2', dev: 'eth0' }],
    ]);
    const neighbours = [
      neigh('fd00:1::2', '0a:00:00:00:00:02', 'REACHABLE'),
      neigh('fe80::1', '0a:00:00:00:00:01', 'DELAY'),
      neigh('fe80::2', '0a:00:00:00:00:03', 'STALE'),
    ];
    expect(planNextHops(['fd00:1::2', 'fd00:9::7', 'fd00:9::8'], routes, neighbours, 'eth0')).toEqual(
      new Map([
        ['fd00:1::2', '0a:00:00:00:00:02'],
        ['fd00:9::7', '0a:00:00:00:00:01'],
      ]),
    );
  });

  it('uses an entry the kernel confirmed or is verifying; leaves STALE, FAILED and INCOMPLETE ones to the kernel', () => {
    const peers = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6'];
    const routes = new Map(peers.map((p) => [p, direct()]));
    const states = ['REACHABLE', 'DELAY', 'PROBE', 'STALE', 'FAILED', 'INCOMPLETE'];
    const neighbours = peers.map((p, i) => neigh(p, states[i] === 'FAILED' || states[i] === 'INCOMPLETE' ? undefined : `0a:00:00:00:00:0${i + 1}`, states[i]));
    expect([...planNextHops(peers, routes, neighbours, 'eth0').keys()]).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
  });

  it('leaves out a peer routed through another device, an unreachable one and one without a neighbour entry', () => {
    const routes = new Map<string, UnderlayRoute>([
      ['10.0.0.1', direct('eth1')],
      ['10.0.0.2', { kind: 'unreachable', error: 'no route' }],
      ['10.0.0.3', direct()],
    ]);
    const neighbours = [neigh('10.0.0.1', '0a:00:00:00:00:01', 'REACHABLE'), neigh('10.0.0.2', '0a:00:00:00:00:02', 'REACHABLE')];
    expect(planNextHops(['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'], routes, neighbours, 'eth0')).toEqual(new Map());
  });
});
