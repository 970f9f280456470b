import { describe, expect, it } from 'vitest';
import { directRoutesIn, underlayRoute } from '../../controller/dataplane/direct-routes.js';
import { desiredMaps, isDirect, type DesiredMaps, type DesiredRemote } from '../../controller/reconcile/desired.js';
import { Reconciler, type LeasePolicy, type SyncResult } from '../../controller/reconcile/reconciler.js';
import { hostGwRefusal, type UnderlayRoute } from '../../controller/reconcile/underlay.js';
import { encodeLeaseValue, parseLeaseKV, type Lease, type LeaseAttrs } from '../../controller/subnet/lease.js';
import { logger } from '../../controller/util/log.js';
import { REMOTE_DIRECT } from '../../maps/layout.js';

describe("flannel's lease records per backend", () => {
  it('writes host-gw leases as flanneld does: no BackendData', () => {
    expect(encodeLeaseValue({ backendType: 'host-gw', publicIp: '192.168.64.3' })).toBe(
      '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"host-gw"}',
    );
  });
  it('reads a host-gw lease back, without a VTEP', () => {
    const r = parseLeaseKV('/coreos.com/network/subnets/10.244.7.0-24', '{"PublicIP":"192.168.64.7","PublicIPv6":null,"BackendType":"host-gw"}');
    expect(r.ok && r.lease).toMatchObject({ publicIp: '192.168.64.7', backendType: 'host-gw' });
    expect(r.ok && r.lease.vtepMac).toBeUndefined();
  });
});

describe("flannel's judgement of the underlay route to a peer (ip.DirectRouting)", () => {
  it('is direct for an on-link answer, routed for one through a gateway, unreachable otherwise', () => {
    expect(underlayRoute({ dst: '192.168.1.2', dev: 'eth0' })).toEqual({ kind: 'direct', dev: 'eth0' });
    expect(underlayRoute({ dst: '192.168.2.2', gateway: '192.168.1.254', dev: 'eth0' })).toEqual({ kind: 'routed', gateway: '192.168.1.254', dev: 'eth0' });
    expect(underlayRoute({ dst: '192.168.2.2', type: 'unreachable' })).toMatchObject({ kind: 'unreachable' });
    expect(underlayRoute(undefined)).toMatchObject({ kind: 'unreachable' });
  });
  it("refuses host-gw peers off our segment with flannel's route error, naming subnet, PublicIP and gateway", () => {
    expect(hostGwRefusal('10.244.3.0/24', '192.168.2.2', { kind: 'direct' })).toBeUndefined();
    expect(hostGwRefusal('10.244.3.0/24', '192.168.2.2', { kind: 'routed', gateway: '192.168.1.254' })).toBe(
      'Error adding route to 10.244.3.0/24 via 192.168.2.2: not on our L2 segment (the route to it goes via gateway 192.168.1.254); host-gw needs direct layer 2 connectivity between nodes',
    );
  });
  it("finds the direct routes to peer subnets in a listing, and not flannel.1's onlink ones nor other routes", () => {
    const routes = [
      { dst: 'default', gateway: '192.168.1.254' },
      { dst: '10.244.2.0/24', gateway: '192.168.1.2', dev: 'eth0' },
      { dst: '10.244.3.0/24', gateway: '10.244.3.0', dev: 'flannel.1', flags: ['onlink'] },
      { dst: '10.244.0.0/16', dev: 'twill0' },
      { dst: '10.9.0.0/24', gateway: '192.168.1.9' },
      { dst: '10.244.1.0/24', dev: 'cni0' },
    ];
    expect(directRoutesIn(routes, '10.244.0.0/16', 24)).toEqual(new Map([['10.244.2.0', '192.168.1.2']]));
  });
  it("finds IPv6 direct routes (flannel's GetV6Route) among IPv6 routes, not flannel-v6.1's onlink ones nor others", () => {
    const routes = [
      { dst: 'default', gateway: 'fe80::1' },
      { dst: 'fd10:244:0:2::/64', gateway: 'fd00:1::2', dev: 'eth0' },
      { dst: 'fd10:244:0:3::/64', gateway: 'fd10:244:0:3::', dev: 'flannel-v6.1', flags: ['onlink'] },
      { dst: 'fd10:244::/48', dev: 'twill0' },
      { dst: 'fd10:999:0:4::/64', gateway: 'fd00:1::4' },
      { dst: 'fd10:244:0:5::/80', gateway: 'fd00:1::5' },
    ];
    expect(directRoutesIn(routes, 'fd10:244::/48', 64, 6)).toEqual(new Map([['fd10:244:0:2::', 'fd00:1::2']]));
  });
});

describe('desired state with direct peers', () => {
  it('flags direct remotes and gives host-gw ones no VTEP', () => {
    const d = desiredMaps({ subnet: '10.244.1.0/24', publicIp: '192.168.1.1' }, [
      { subnet: '10.244.2.0/24', publicIp: '192.168.1.2', direct: true },
      { subnet: '10.244.3.0/24', publicIp: '192.168.2.3', vtepMac: '02:00:00:00:00:03' },
    ]);
    expect(d.subnets.get('10.244.2.0')).toEqual({ public_ip: '192.168.1.2', vtep_mac: '00:00:00:00:00:00', flags: REMOTE_DIRECT });
    expect(d.subnets.get('10.244.3.0')).toEqual({ public_ip: '192.168.2.3', vtep_mac: '02:00:00:00:00:03', flags: 0 });
    expect(d.peers.get('192.168.1.2')).toMatchObject({ subnet: '10.244.2.0', subnet_len: 24 });
  });
});

/** Keeps the last desired subnets; every write is a full sync here. */
class RecordingDatapath {
  subnets = new Map<string, DesiredRemote>();
  sync(desired: DesiredMaps): SyncResult {
    this.subnets = new Map(desired.subnets);
    return { subnetsAdded: 0, subnetsRemoved: 0, peersAdded: 0, peersRemoved: 0 };
  }
}

function lease(n: number, attrs: LeaseAttrs): Lease {
  const r = parseLeaseKV(`/coreos.com/network/subnets/10.244.${n}.0-24`, encodeLeaseValue(attrs));
  if (!r.ok) throw new Error(r.reason);
  return r.lease;
}
const vxlan = (n: number, ip: string): LeaseAttrs => ({ backendType: 'vxlan', publicIp: ip, vni: 1, vtepMac: `02:00:00:00:00:0${n}` });

describe('Reconciler per backend', () => {
  // Node 1 sits on 192.168.1.0/24; 192.168.2.0/24 is behind a router.
  let segmentB: UnderlayRoute = { kind: 'routed', gateway: '192.168.1.254' };
  const lookups: string[][] = [];
  const underlay = async (ips: string[]) => {
    lookups.push(ips);
    return new Map(ips.map((ip): [string, UnderlayRoute] => [ip, ip.startsWith('192.168.1.') ? { kind: 'direct' } : segmentB]));
  };
  const make = (policy: Omit<LeasePolicy, 'underlay' | 'vni'>) => {
    const dp = new RecordingDatapath();
    const r = new Reconciler({
      self: { subnet: '10.244.1.0/24', publicIp: '192.168.1.1' },
      policy: { ...policy, vni: 1, underlay },
      log: logger('test'),
      datapaths: { ipv4: dp },
    });
    return { dp, r };
  };
  const direct = (dp: RecordingDatapath) => Object.fromEntries([...dp.subnets].map(([s, r]) => [s, isDirect(r)]));

  it('DirectRouting: direct to peers on our segment, VXLAN to the rest, as flannel decides', async () => {
    segmentB = { kind: 'routed', gateway: '192.168.1.254' };
    const { dp, r } = make({ backend: 'vxlan', directRouting: true });
    r.update(
      new Map([
        ['a', lease(2, vxlan(2, '192.168.1.2'))],
        ['b', lease(3, vxlan(3, '192.168.2.3'))],
      ]),
    );
    await r.settled();
    expect(direct(dp)).toEqual({ '10.244.2.0': true, '10.244.3.0': false });
  });

  it('without DirectRouting every vxlan peer is VXLAN, and no route is looked up', async () => {
    lookups.length = 0;
    const { dp, r } = make({ backend: 'vxlan', directRouting: false });
    r.update(new Map([['a', lease(2, vxlan(2, '192.168.1.2'))]]));
    await r.settled();
    expect(direct(dp)).toEqual({ '10.244.2.0': false });
    expect(lookups).toEqual([]);
  });

  it('host-gw: peers on our segment are routed directly; one behind a router, and vxlan leases, are left out', async () => {
    segmentB = { kind: 'routed', gateway: '192.168.1.254' };
    const { dp, r } = make({ backend: 'host-gw', directRouting: false });
    r.update(
      new Map([
        ['a', lease(2, { backendType: 'host-gw', publicIp: '192.168.1.2' })],
        ['b', lease(3, { backendType: 'host-gw', publicIp: '192.168.2.3' })],
        ['c', lease(4, vxlan(4, '192.168.1.4'))],
      ]),
    );
    await r.settled();
    expect(direct(dp)).toEqual({ '10.244.2.0': true });
  });

  it('a peer whose route changes is judged again at the next full sync', async () => {
    segmentB = { kind: 'routed', gateway: '192.168.1.254' };
    const { dp, r } = make({ backend: 'vxlan', directRouting: true });
    const leases = new Map([['b', lease(3, vxlan(3, '192.168.2.3'))]]);
    r.update(leases);
    await r.settled();
    expect(direct(dp)).toEqual({ '10.244.3.0': false });
    segmentB = { kind: 'direct' }; // the peer moved onto our segment
    r.update(leases); // no `change`: a full sync, as the periodic one is
    await r.settled();
    expect(direct(dp)).toEqual({ '10.244.3.0': true });
  });
});
