import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdStore, type WatchEvent } from '../../controller/etcd/store.js';
import { startTestEtcd, type TestEtcd } from '../support/etcd.js';

let etcd: TestEtcd;
let store: EtcdStore;
beforeAll(async () => {
  etcd = await startTestEtcd();
  store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: '/coreos.com/network' });
});
afterAll(async () => {
  store?.close();
  await etcd?.destroy();
});

describe('EtcdStore against a real etcd', () => {
  it('reads and writes the network config under the prefix', async () => {
    expect(await store.getConfig()).toBeUndefined();
    await store.putConfig('{"Network":"10.244.0.0/16"}');
    expect(await store.getConfig()).toBe('{"Network":"10.244.0.0/16"}');
  });

  it('lets exactly one of two concurrent creators of a subnet win', async () => {
    const [a, b] = await Promise.all([store.createLease('10.244.1.0-24', '{"PublicIP":"10.0.0.1"}', 60), store.createLease('10.244.1.0-24', '{"PublicIP":"10.0.0.2"}', 60)]);
    expect([a, b].filter(Boolean)).toHaveLength(1);
    const { records } = await store.listLeases();
    const rec = records.find((r) => r.key.endsWith('10.244.1.0-24'))!;
    expect(rec.lease).not.toBe('0');
    expect(await store.keepalive((a ?? b)!)).toBeGreaterThan(50);
  });

  it('tells a reservation (no etcd lease) from a lease', async () => {
    await store.putRaw(`${store.subnetsPrefix}10.244.9.0-24`, '{"PublicIP":"10.0.0.9"}');
    const { records } = await store.listLeases();
    expect(records.find((r) => r.key.endsWith('10.244.9.0-24'))!.lease).toBe('0');
  });

  it('rewrites only if nobody changed the record since it was read', async () => {
    const { records } = await store.listLeases();
    const rec = records.find((r) => r.key.endsWith('10.244.9.0-24'))!;
    expect(await store.rewriteLease('10.244.9.0-24', '{"PublicIP":"10.0.0.9","x":1}', rec.modRevision, undefined)).toBeNull();
    expect(await store.rewriteLease('10.244.9.0-24', '{"PublicIP":"10.0.0.9","x":2}', rec.modRevision, undefined)).toBeUndefined();
  });

  it('watches from a revision and sees puts and deletes with the deleted value', async () => {
    const { revision } = await store.listLeases();
    const events: WatchEvent[] = [];
    const w = await store.watchLeases(String(Number(revision) + 1), (e) => events.push(e));
    await store.putRaw(`${store.subnetsPrefix}10.244.3.0-24`, '{"PublicIP":"10.0.0.3"}');
    await store.deleteLease('10.244.3.0-24');
    for (let i = 0; i < 50 && events.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
    await w.cancel();
    expect(events.map((e) => [e.type, e.record.key.split('/').pop(), e.record.value])).toEqual([
      ['put', '10.244.3.0-24', '{"PublicIP":"10.0.0.3"}'],
      ['delete', '10.244.3.0-24', '{"PublicIP":"10.0.0.3"}'],
    ]);
  });

  it('ends a watch whose start revision was compacted away', async () => {
    const { revision } = await store.listLeases();
    await store.putRaw(`${store.subnetsPrefix}10.244.4.0-24`, '{}');
    await store.putRaw(`${store.subnetsPrefix}10.244.4.0-24`, '{"a":1}');
    const { execFileSync } = await import('node:child_process');
    const now = (await store.listLeases()).revision;
    execFileSync('etcdctl', ['--endpoints', etcd.endpoint, 'compact', now], { env: { ...process.env, ETCDCTL_API: '3' } });
    const w = await store.watchLeases(revision, () => undefined);
    const err = await w.ended;
    expect(err.message).toMatch(/etcd canceled the watch from revision \d+ \(compacted away/);
  });

  it('names an unreadable TLS file', () => {
    expect(() => new EtcdStore({ endpoints: ['https://127.0.0.1:1'], prefix: '/x', caFile: '/nonexistent/ca.pem' })).toThrow(/--etcd-cafile \/nonexistent\/ca.pem: cannot read: ENOENT/);
  });
});
