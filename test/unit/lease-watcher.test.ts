import { afterEach, describe, expect, it } from 'vitest';
import { parseNetworkConfig } from '../../controller/config/network-config.js';
import { formatCidr, parseCidr } from '../../controller/net/ipv4.js';
import { encodeLeaseValue, leaseKey, type Lease } from '../../controller/subnet/lease.js';
import type { WatchEvent } from '../../controller/subnet/lease-store.js';
import { SubnetManager } from '../../controller/subnet/manager.js';
import { LeaseWatcher, type LeaseChange } from '../../controller/subnet/watcher.js';
import type { Logger } from '../../controller/util/log.js';
import { MemoryLeaseStore } from '../support/memory-lease-store.js';

/*
 * LeaseWatcher's logic against an in-memory LeaseStore: the first listing, events in order, and
 * the re-list and diff after a lost connection or a watch that etcd ended (compaction), so that
 * nothing missed meanwhile is lost. test/integration/reliability-etcd.test.ts does the same to a
 * real etcd.
 */

const config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
const value = (n: number, mac = `02:00:00:00:00:0${n}`) => encodeLeaseValue({ backendType: 'vxlan', publicIp: `192.168.0.${n}`, vni: 1, vtepMac: mac });
const subnets = (ls: Lease[]) => ls.map((l) => formatCidr(l.subnet)).sort();
const summary = (c: LeaseChange) => ({ added: subnets(c.added), removed: subnets(c.removed), changed: subnets(c.changed) });

/** A watcher whose changes, events and log lines the test can wait for, in the order they came. */
function watched(store: MemoryLeaseStore) {
  const changes: ReturnType<typeof summary>[] = [];
  const events: WatchEvent[] = [];
  const lines: string[] = [];
  const log: Logger = {
    debug: (m) => void lines.push(`debug ${m}`),
    info: (m) => void lines.push(`info ${m}`),
    warn: (m) => void lines.push(`warn ${m}`),
    error: (m) => void lines.push(`error ${m}`),
    child: () => log,
  };
  const watcher = new LeaseWatcher({ store, onChange: (c) => void changes.push(summary(c)), log, onEvent: (e) => void events.push(e), routableIn: config });
  /** Resolves once `done` holds (the test's timeout fails it otherwise). */
  const until = async (done: () => boolean): Promise<void> => {
    while (!done()) await new Promise((r) => setTimeout(r, 5));
  };
  return { watcher, changes, events, lines, until };
}

let stopping: LeaseWatcher[] = [];
afterEach(async () => {
  await Promise.all(stopping.map((w) => w.stop()));
  stopping = [];
});

async function started(store: MemoryLeaseStore) {
  const w = watched(store);
  await w.watcher.start();
  stopping.push(w.watcher);
  await w.until(() => store.watchCount === 1 && w.watcher.state === 'watching');
  return w;
}

describe('LeaseWatcher', () => {
  it('applies the first listing as one change, leaving out records it cannot use or route', async () => {
    const store = new MemoryLeaseStore();
    store.putRecord('10.244.1.0-24', value(1));
    store.putRecord('10.244.2.0-24', value(2), store.grant(60));
    store.putRecord('10.244.3.0-24', 'not json');
    store.putRecord('10.244.0.0-16', value(4));
    const { watcher, changes, lines } = await started(store);
    expect(changes).toEqual([{ added: ['10.244.1.0/24', '10.244.2.0/24'], removed: [], changed: [] }]);
    expect(subnets([...watcher.leases.values()])).toEqual(['10.244.1.0/24', '10.244.2.0/24']);
    expect(lines.filter((l) => l.startsWith('warn'))).toEqual(['warn ignoring unusable lease record', 'warn ignoring unusable lease record']);
    expect(watcher.resyncs).toBe(1);
  });

  it('applies watch events in order: added, changed, removed; an unusable one changes nothing', async () => {
    const store = new MemoryLeaseStore();
    store.putRecord('10.244.1.0-24', value(1));
    const { watcher, changes, events, until } = await started(store);
    store.putRecord('10.244.2.0-24', value(2));
    store.putRecord('10.244.1.0-24', value(1, '02:00:00:00:00:aa'));
    store.putRecord('10.244.9.0-24', '{"PublicIP":7}');
    store.deleteRecord('10.244.2.0-24');
    await until(() => events.length === 4);
    expect(changes.slice(1)).toEqual([
      { added: ['10.244.2.0/24'], removed: [], changed: [] },
      { added: [], removed: [], changed: ['10.244.1.0/24'] },
      { added: [], removed: ['10.244.2.0/24'], changed: [] },
    ]);
    expect(events.map((e) => [e.type, e.record.key.split('/').pop()])).toEqual([
      ['put', '10.244.2.0-24'],
      ['put', '10.244.1.0-24'],
      ['put', '10.244.9.0-24'],
      ['delete', '10.244.2.0-24'],
    ]);
    expect(watcher.leases.get(leaseKey({ subnet: parseCidr('10.244.1.0/24')! }))?.vtepMac).toBe('02:00:00:00:00:aa');
    expect(watcher.resyncs).toBe(1);
  });

  it('after a lost connection, re-lists and reports what the watch never delivered as one diff', async () => {
    const store = new MemoryLeaseStore();
    store.putRecord('10.244.1.0-24', value(1));
    store.putRecord('10.244.2.0-24', value(2));
    const { watcher, changes, events, lines, until } = await started(store);
    store.disconnect();
    store.deleteRecord('10.244.1.0-24');
    store.putRecord('10.244.2.0-24', value(2, '02:00:00:00:00:bb'));
    store.putRecord('10.244.3.0-24', value(3));
    store.reconnect();
    await until(() => changes.length === 2);
    expect(lines).toContain('warn lease watch reconnected, resyncing');
    expect(events).toEqual([]);
    expect(changes[1]).toEqual({ added: ['10.244.3.0/24'], removed: ['10.244.1.0/24'], changed: ['10.244.2.0/24'] });
    expect(watcher.resyncs).toBe(2);
    // The watch goes on after the resync.
    store.putRecord('10.244.4.0-24', value(4));
    await until(() => changes.length === 3);
    expect(changes[2]).toEqual({ added: ['10.244.4.0/24'], removed: [], changed: [] });
  });

  it('when etcd ends the watch (compacted past it), re-lists, diffs what changed meanwhile and watches from the new revision', async () => {
    const store = new MemoryLeaseStore();
    store.putRecord('10.244.1.0-24', value(1));
    store.putRecord('10.244.2.0-24', value(2));
    const { watcher, changes, lines, until } = await started(store);
    store.cancelWatches('etcd canceled the watch from revision 4 (compacted away, or rejected): ');
    store.deleteRecord('10.244.2.0-24');
    store.putRecord('10.244.1.0-24', value(1, '02:00:00:00:00:cc'));
    store.putRecord('10.244.5.0-24', value(5));
    store.compact();
    await until(() => changes.length === 2);
    expect(lines[0]).toBe('warn lease watch ended, resyncing');
    expect(changes[1]).toEqual({ added: ['10.244.5.0/24'], removed: ['10.244.2.0/24'], changed: ['10.244.1.0/24'] });
    await until(() => store.watchCount === 1 && watcher.state === 'watching');
    store.putRecord('10.244.6.0-24', value(6));
    await until(() => changes.length === 3);
    expect(changes[2]).toEqual({ added: ['10.244.6.0/24'], removed: [], changed: [] });
  });

  it('keeps retrying while the store cannot be reached, and diffs once it can', async () => {
    const store = new MemoryLeaseStore();
    store.putRecord('10.244.1.0-24', value(1));
    const { watcher, changes, lines, until } = await started(store);
    store.failing = new Error('14 UNAVAILABLE: No connection established');
    store.cancelWatches('watch ended');
    await until(() => lines.includes('debug lease resync failed'));
    expect(watcher.state).toBe('backoff');
    store.failing = undefined;
    store.deleteRecord('10.244.1.0-24');
    await until(() => changes.length === 2);
    expect(changes[1]).toEqual({ added: [], removed: ['10.244.1.0/24'], changed: [] });
  });

  it('reports our own record deleted, so the manager gets the same subnet back and the peers see it again', async () => {
    const store = new MemoryLeaseStore();
    const log: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined, child: () => log };
    const manager = new SubnetManager(
      store,
      config,
      { backendType: 'vxlan', publicIp: '192.168.0.1', vni: 1, vtepMac: '02:00:00:00:00:01' },
      { ttlSeconds: 60, renewMarginSeconds: 10, log, random: () => 0 },
    );
    const held = await manager.acquire();
    const { changes, events, until } = await started(store);
    store.deleteRecord(held.key);
    await until(() => events.length === 1);
    expect(manager.isOwnLeaseLost({ type: events[0].type, key: events[0].record.key, value: events[0].record.value })).toBe(true);
    const again = await manager.acquire(held.subnet);
    expect(again.key).toBe(held.key);
    await until(() => changes.length === 3);
    expect(changes).toEqual([
      { added: ['10.244.1.0/24'], removed: [], changed: [] },
      { added: [], removed: ['10.244.1.0/24'], changed: [] },
      { added: ['10.244.1.0/24'], removed: [], changed: [] },
    ]);
  });
});
