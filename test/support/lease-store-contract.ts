import { expect, it } from 'vitest';
import { LeaseGoneError, type LeaseStore, type WatchEvent } from '../../controller/subnet/lease-store.js';

/*
 * What the subnet manager and the lease watcher rely on from a LeaseStore, as tests: run
 * against a real etcd (test/integration/etcd-store.test.ts) and against the in-memory store the
 * unit tests use (test/unit/memory-lease-store.test.ts), so the double is held to etcd's
 * behaviour and not only to what its author believed.
 */

export interface ContractSubject {
  store: LeaseStore;
  /** a plain put without a lease, as an operator's `etcdctl put` */
  putRaw: (subnetKey: string, value: string) => Promise<void>;
  /** compacts history up to the current revision */
  compact: () => Promise<void>;
}

/** Waits for a watch to deliver `n` events (etcd's arrive over the network). */
async function eventsArrived(events: WatchEvent[], n: number): Promise<void> {
  while (events.length < n) await new Promise((r) => setTimeout(r, 10));
}

const recordOf = async (store: LeaseStore, subnetKey: string) => (await store.listLeases()).records.find((r) => r.key === store.subnetsPrefix + subnetKey);

export function leaseStoreContract(subject: () => ContractSubject): void {
  it('lets exactly one of two concurrent creators of a subnet win, bound to a lease that can be kept alive', async () => {
    const { store } = subject();
    const [a, b] = await Promise.all([
      store.createLease('10.244.1.0-24', '{"PublicIP":"10.0.0.1"}', 60),
      store.createLease('10.244.1.0-24', '{"PublicIP":"10.0.0.2"}', 60),
    ]);
    expect([a, b].filter(Boolean)).toHaveLength(1);
    const won = (a ?? b)!;
    expect((await recordOf(store, '10.244.1.0-24'))!.lease).toBe(won.id);
    expect(await won.keepalive()).toBeGreaterThan(50);
  });

  it('tells a reservation (no lease) from a lease', async () => {
    const { store, putRaw } = subject();
    await putRaw('10.244.9.0-24', '{"PublicIP":"10.0.0.9"}');
    expect((await recordOf(store, '10.244.9.0-24'))!.lease).toBe('0');
  });

  it('rewrites only if nobody changed the record since it was read, keeping its create revision', async () => {
    const { store, putRaw } = subject();
    await putRaw('10.244.10.0-24', '{"PublicIP":"10.0.0.10"}');
    const rec = (await recordOf(store, '10.244.10.0-24'))!;
    expect(await store.rewriteLease('10.244.10.0-24', '{"PublicIP":"10.0.0.10","x":1}', rec.modRevision, undefined)).toBeNull();
    expect(await store.rewriteLease('10.244.10.0-24', '{"PublicIP":"10.0.0.10","x":2}', rec.modRevision, undefined)).toBeUndefined();
    const after = (await recordOf(store, '10.244.10.0-24'))!;
    expect(after).toMatchObject({ value: '{"PublicIP":"10.0.0.10","x":1}', createRevision: rec.createRevision });
    expect(Number(after.modRevision)).toBeGreaterThan(Number(rec.modRevision));
    expect(await store.deleteLease('10.244.10.0-24', rec.modRevision)).toBe(false);
    expect(await store.deleteLease('10.244.10.0-24', after.modRevision)).toBe(true);
    expect(await recordOf(store, '10.244.10.0-24')).toBeUndefined();
  });

  it('moves a record to a fresh lease, so revoking the old one leaves it; revoking its lease deletes it', async () => {
    const { store } = subject();
    const first = (await store.createLease('10.244.11.0-24', '{"PublicIP":"10.0.0.11"}', 60))!;
    const rec = (await recordOf(store, '10.244.11.0-24'))!;
    const second = (await store.rewriteLease('10.244.11.0-24', '{"PublicIP":"10.0.0.11"}', rec.modRevision, 60))!;
    await store.revokeLeaseId(first.id);
    expect((await recordOf(store, '10.244.11.0-24'))!.lease).toBe(second.id);
    await expect(first.keepalive()).rejects.toBeInstanceOf(LeaseGoneError);
    await second.revoke();
    expect(await recordOf(store, '10.244.11.0-24')).toBeUndefined();
    await expect(second.keepalive()).rejects.toBeInstanceOf(LeaseGoneError);
  });

  it('watches from a revision and sees puts and deletes, with the deleted value, in order', async () => {
    const { store, putRaw } = subject();
    const { revision } = await store.listLeases();
    const events: WatchEvent[] = [];
    const w = await store.watchLeases(String(Number(revision) + 1), (e) => events.push(e));
    await putRaw('10.244.3.0-24', '{"PublicIP":"10.0.0.3"}');
    await store.deleteLease('10.244.3.0-24');
    await eventsArrived(events, 2);
    await w.cancel();
    expect(events.map((e) => [e.type, e.record.key.split('/').pop(), e.record.value])).toEqual([
      ['put', '10.244.3.0-24', '{"PublicIP":"10.0.0.3"}'],
      ['delete', '10.244.3.0-24', '{"PublicIP":"10.0.0.3"}'],
    ]);
    expect(Number(events[1].revision)).toBe(Number(events[0].revision) + 1);
  });

  it('replays what happened since the start revision before anything newer', async () => {
    const { store, putRaw } = subject();
    const { revision } = await store.listLeases();
    await putRaw('10.244.12.0-24', '{"PublicIP":"10.0.0.12"}');
    const events: WatchEvent[] = [];
    const w = await store.watchLeases(String(Number(revision) + 1), (e) => events.push(e));
    await putRaw('10.244.13.0-24', '{"PublicIP":"10.0.0.13"}');
    await eventsArrived(events, 2);
    await w.cancel();
    expect(events.map((e) => e.record.key.split('/').pop())).toEqual(['10.244.12.0-24', '10.244.13.0-24']);
  });

  it('ends a watch whose start revision was compacted away', async () => {
    const { store, putRaw, compact } = subject();
    const { revision } = await store.listLeases();
    await putRaw('10.244.4.0-24', '{}');
    await putRaw('10.244.4.0-24', '{"a":1}');
    await compact();
    const w = await store.watchLeases(revision, () => undefined);
    const err = await w.ended;
    expect(err.message).toMatch(/etcd canceled the watch from revision \d+ \(compacted away/);
  });
}
