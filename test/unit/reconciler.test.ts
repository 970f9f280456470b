import { describe, expect, it } from 'vitest';
import { isDirect, type DesiredMaps, type MapChanges } from '../../controller/reconcile/desired.js';
import { Reconciler, type Datapath, type SyncResult } from '../../controller/reconcile/reconciler.js';
import type { UnderlayRoute } from '../../controller/reconcile/underlay.js';
import { encodeLeaseValue, leaseKey, parseLeaseKV, type Lease } from '../../controller/subnet/lease.js';
import { logger, type Logger } from '../../controller/util/log.js';

/** A datapath that keeps its state in memory and records whether each write was a full sync or an apply. */
class MemoryDatapath implements Datapath {
  state = new Map<string, string>();
  calls: ('sync' | 'apply')[] = [];
  failNext = false;
  private fail(): void {
    if (this.failNext) {
      this.failNext = false;
      throw new Error('map update failed');
    }
  }
  sync(desired: DesiredMaps): SyncResult {
    this.calls.push('sync');
    this.fail();
    const before = this.state;
    this.state = new Map([...desired.subnets].map(([k, v]) => [k, v.public_ip]));
    const added = [...this.state.keys()].filter((k) => before.get(k) !== this.state.get(k)).length;
    const removed = [...before.keys()].filter((k) => !this.state.has(k)).length;
    return { subnetsAdded: added, subnetsRemoved: removed, peersAdded: added, peersRemoved: removed };
  }
  apply(changes: MapChanges): SyncResult {
    this.calls.push('apply');
    this.fail();
    for (const [k, v] of changes.subnets.upsert) this.state.set(k, v.public_ip);
    for (const k of changes.subnets.remove) this.state.delete(k);
    return {
      subnetsAdded: changes.subnets.upsert.length,
      subnetsRemoved: changes.subnets.remove.length,
      peersAdded: changes.peers.upsert.length,
      peersRemoved: changes.peers.remove.length,
    };
  }
}

function lease(n: number): Lease {
  const r = parseLeaseKV(
    `/coreos.com/network/subnets/10.244.${n}.0-24`,
    encodeLeaseValue({ backendType: 'vxlan', publicIp: `192.168.0.${n}`, vni: 1, vtepMac: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` }),
  );
  if (!r.ok) throw new Error(r.reason);
  return r.lease;
}
/** A dual-stack vxlan lease of node n. */
function dual(n: number): Lease {
  const r = parseLeaseKV(
    `/coreos.com/network/subnets/10.244.${n}.0-24&fd00:0:0:${n}::-64`,
    encodeLeaseValue({
      backendType: 'vxlan',
      publicIp: `192.168.0.${n}`,
      publicIpv6: `fd01::${n}`,
      vni: 1,
      vtepMac: `02:00:00:00:00:0${n}`,
      vtepMac6: `02:00:00:00:06:0${n}`,
    }),
  );
  if (!r.ok) throw new Error(r.reason);
  return r.lease;
}
const leaseSet = (...ns: number[]) => new Map(ns.map((n) => [`10.244.${n}.0/24`, lease(n)]));

describe('Reconciler', () => {
  const make = (dp: Datapath) =>
    new Reconciler({
      self: { subnet: '10.244.1.0/24', publicIp: '192.168.0.1' },
      policy: { backend: 'vxlan', vni: 1, directRouting: false },
      log: logger('test'),
      datapaths: { ipv4: dp },
    });

  it('syncs in full first, then writes only what each change touches', async () => {
    const dp = new MemoryDatapath();
    const r = make(dp);
    r.update(leaseSet(1, 2, 3));
    await r.settled();
    r.update(leaseSet(1, 2, 3, 4));
    await r.settled();
    expect(dp.calls).toEqual(['sync', 'apply']);
    expect([...dp.state.keys()].sort()).toEqual(['10.244.2.0', '10.244.3.0', '10.244.4.0']);
    expect(r.lastResult).toEqual({ subnetsAdded: 1, subnetsRemoved: 0, peersAdded: 1, peersRemoved: 0 });
  });

  it('goes back to a full sync after a failed one or a new datapath, then to entry-level writes', async () => {
    const dp = new MemoryDatapath();
    const r = make(dp);
    r.update(leaseSet(2));
    await r.settled();
    dp.failNext = true;
    r.update(leaseSet(2, 3));
    await r.settled();
    expect(r.errors).toBe(1);
    r.update(leaseSet(2, 3));
    await r.settled();
    r.setDatapaths({ ipv4: dp });
    r.update(leaseSet(2, 3, 4));
    await r.settled();
    r.update(leaseSet(2, 4));
    await r.settled();
    expect(dp.calls).toEqual(['sync', 'apply', 'sync', 'sync', 'apply']);
    expect([...dp.state.keys()].sort()).toEqual(['10.244.2.0', '10.244.4.0']);
  });

  it('routes IPv6 peers as flannel does: host-gw only to PublicIPv6s on our segment, DirectRouting directly there and in VXLAN elsewhere', async () => {
    const lease6 = (n: number, backendType: 'vxlan' | 'host-gw'): Lease => {
      const attrs = backendType === 'vxlan' ? { backendType, vni: 1, vtepMac: `02:00:00:00:00:0${n}`, vtepMac6: `02:00:00:00:06:0${n}` } : { backendType };
      const r = parseLeaseKV(
        `/coreos.com/network/subnets/10.244.${n}.0-24&fd00:0:0:${n}::-64`,
        encodeLeaseValue({ publicIp: `192.168.0.${n}`, publicIpv6: `fd01::${n}`, ...attrs }),
      );
      if (!r.ok) throw new Error(r.reason);
      return r.lease;
    };
    // fd01::2 answers `ip route get` without a gateway (our segment); fd01::3 through one.
    const underlay = async (ips: string[]) =>
      new Map(
        ips.map((ip): [string, UnderlayRoute] => [ip, ip.endsWith('::3') || ip.endsWith('.3') ? { kind: 'routed', gateway: 'fe80::1' } : { kind: 'direct' }]),
      );
    const run6 = async (backend: 'vxlan' | 'host-gw', directRouting: boolean) => {
      const seen6: DesiredMaps[] = [];
      const dp6: Datapath = { sync: (d) => (seen6.push(d), { subnetsAdded: 0, subnetsRemoved: 0, peersAdded: 0, peersRemoved: 0 }) };
      const self = { subnet: '10.244.1.0/24', publicIp: '192.168.0.1', subnet6: 'fd00:0:0:1::/64', publicIpv6: 'fd01::1' };
      const r = new Reconciler({ self, policy: { backend, vni: 1, directRouting, underlay, families: { ipv4: true, ipv6: true } }, log: logger('test') });
      r.setDatapaths({ ipv4: new MemoryDatapath(), ipv6: dp6 });
      r.update(new Map([1, 2, 3].map((n) => [`10.244.${n}.0/24`, lease6(n, backend)])));
      await r.settled();
      return new Map(
        [...seen6.at(-1)!.subnets].map(([base, remote]) => [base, isDirect(remote) ? `direct via ${remote.public_ip}` : `vxlan to ${remote.public_ip}`]),
      );
    };
    expect(await run6('host-gw', false)).toEqual(new Map([['fd00:0:0:2::', 'direct via fd01::2']]));
    expect(await run6('vxlan', true)).toEqual(
      new Map([
        ['fd00:0:0:2::', 'direct via fd01::2'],
        ['fd00:0:0:3::', 'vxlan to fd01::3'],
      ]),
    );
    expect(await run6('vxlan', false)).toEqual(
      new Map([
        ['fd00:0:0:2::', 'vxlan to fd01::2'],
        ['fd00:0:0:3::', 'vxlan to fd01::3'],
      ]),
    );
  });

  it("hands the IPv6 datapath each peer's IPv4 PublicIP beside its IPv6 entries, so both families count in one per-peer row", async () => {
    const seen6: DesiredMaps[] = [];
    const dp6: Datapath = { sync: (d) => (seen6.push(d), { subnetsAdded: d.subnets.size, subnetsRemoved: 0, peersAdded: d.peers.size, peersRemoved: 0 }) };
    const r = new Reconciler({
      self: { subnet: '10.244.1.0/24', publicIp: '192.168.0.1', subnet6: 'fd00:0:0:1::/64', publicIpv6: 'fd01::1' },
      policy: { backend: 'vxlan', vni: 1, directRouting: false, families: { ipv4: true, ipv6: true } },
      log: logger('test'),
    });
    r.setDatapaths({ ipv4: new MemoryDatapath(), ipv6: dp6 });
    r.update(new Map([1, 2, 3].map((n) => [`10.244.${n}.0/24`, dual(n)])));
    await r.settled();
    expect([...seen6.at(-1)!.peers.keys()].sort()).toEqual(['fd01::2', 'fd01::3']);
    expect(seen6.at(-1)!.counterPeers).toEqual(
      new Map([
        ['fd01::2', '192.168.0.2'],
        ['fd01::3', '192.168.0.3'],
      ]),
    );
  });

  it('writes IPv6 as it writes IPv4: a full sync first, then only the entries a lease change touches, each with its IPv4 counter peer', async () => {
    const dp4 = new MemoryDatapath();
    const dp6 = new MemoryDatapath();
    const applied6: MapChanges[] = [];
    const apply6 = dp6.apply.bind(dp6);
    dp6.apply = (c) => (applied6.push(c), apply6(c));
    const self = { subnet: '10.244.1.0/24', publicIp: '192.168.0.1', subnet6: 'fd00:0:0:1::/64', publicIpv6: 'fd01::1' };
    const r = new Reconciler({
      self,
      policy: { backend: 'vxlan', vni: 1, directRouting: false, families: { ipv4: true, ipv6: true } },
      log: logger('test'),
      datapaths: { ipv4: dp4, ipv6: dp6 },
    });
    const leases = new Map([1, 2, 3].map((n) => [leaseKey(dual(n)), dual(n)]));
    r.update(leases);
    await r.settled();
    const added = new Map([...leases, [leaseKey(dual(4)), dual(4)]]);
    r.update(added, { added: [dual(4)], changed: [], removed: [] });
    await r.settled();
    expect(dp4.calls).toEqual(['sync', 'apply']);
    expect(dp6.calls).toEqual(['sync', 'apply']);
    expect([...dp4.state.keys()].sort()).toEqual(['10.244.2.0', '10.244.3.0', '10.244.4.0']);
    expect([...dp6.state.keys()].sort()).toEqual(['fd00:0:0:2::', 'fd00:0:0:3::', 'fd00:0:0:4::']);
    expect(applied6.at(-1)!.subnets.upsert.map(([base]) => base)).toEqual(['fd00:0:0:4::']);
    expect(applied6.at(-1)!.counterPeers?.get('fd01::4')).toBe('192.168.0.4');
  });

  it('says at info which peers came, changed and went; a start with many peers is one summary', async () => {
    const lines: string[] = [];
    const capture: Logger = {
      debug: () => undefined,
      warn: () => undefined,
      error: () => undefined,
      info: (m, f) => void lines.push(`${m} ${JSON.stringify(f)}`),
      child: () => capture,
    };
    const r = new Reconciler({
      self: { subnet: '10.244.1.0/24', publicIp: '192.168.0.1' },
      policy: { backend: 'vxlan', vni: 1, directRouting: false },
      log: capture,
      datapaths: { ipv4: new MemoryDatapath() },
    });
    const many = Array.from({ length: 20 }, (_, i) => i + 1);
    r.update(leaseSet(...many));
    await r.settled();
    expect(lines.filter((l) => l.startsWith('peer'))).toEqual(['peers changed {"added":19,"changed":0,"removed":0}']);
    lines.length = 0;
    const moved = leaseSet(...many.filter((n) => n !== 3));
    moved.set('10.244.4.0/24', { ...lease(4), publicIp: '192.168.9.4' });
    r.update(moved);
    await r.settled();
    expect(lines.filter((l) => l.startsWith('peer')).sort()).toEqual([
      'peer changed {"subnet":"10.244.4.0/24","publicIp":"192.168.9.4"}',
      'peer removed {"subnet":"10.244.3.0/24","publicIp":"192.168.0.3"}',
    ]);
    r.update(new Map([...moved, ['10.244.30.0/24', lease(30)]]));
    await r.settled();
    expect(lines.at(-2)).toBe('peer added {"subnet":"10.244.30.0/24","publicIp":"192.168.0.30"}');
  });
});
