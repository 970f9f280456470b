import { describe, expect, it } from 'vitest';
import type { DesiredMaps, MapChanges } from '../../controller/reconcile/desired.js';
import { Reconciler, type Datapath, type SyncResult } from '../../controller/reconcile/reconciler.js';
import { parseLeaseKV, encodeLeaseValue, type Lease } from '../../controller/subnet/lease.js';
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
    return { subnetsAdded: changes.subnets.upsert.length, subnetsRemoved: changes.subnets.remove.length, peersAdded: changes.peers.upsert.length, peersRemoved: changes.peers.remove.length };
  }
}

function lease(n: number): Lease {
  const r = parseLeaseKV(`/coreos.com/network/subnets/10.244.${n}.0-24`, encodeLeaseValue({ backendType: 'vxlan', publicIp: `192.168.0.${n}`, vni: 1, vtepMac: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` }));
  if (!r.ok) throw new Error(r.reason);
  return r.lease;
}
const leaseSet = (...ns: number[]) => new Map(ns.map((n) => [`10.244.${n}.0/24`, lease(n)]));

describe('Reconciler', () => {
  const make = (dp: Datapath) => new Reconciler(dp, { subnet: '10.244.1.0/24', publicIp: '192.168.0.1' }, { backend: 'vxlan', vni: 1, directRouting: false }, logger('test'));

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
    r.setDatapath(dp);
    r.update(leaseSet(2, 3, 4));
    await r.settled();
    r.update(leaseSet(2, 4));
    await r.settled();
    expect(dp.calls).toEqual(['sync', 'apply', 'sync', 'sync', 'apply']);
    expect([...dp.state.keys()].sort()).toEqual(['10.244.2.0', '10.244.4.0']);
  });

  it('says at info which peers came, changed and went; a start with many peers is one summary', async () => {
    const lines: string[] = [];
    const capture: Logger = { debug: () => undefined, warn: () => undefined, error: () => undefined, info: (m, f) => void lines.push(`${m} ${JSON.stringify(f)}`), child: () => capture };
    const r = new Reconciler(new MemoryDatapath(), { subnet: '10.244.1.0/24', publicIp: '192.168.0.1' }, { backend: 'vxlan', vni: 1, directRouting: false }, capture);
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
