import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseNetworkConfig } from '../../controller/config/network-config.js';
import { parseCidr } from '../../controller/net/ipv4.js';
import { encodeLeaseValue, parseLeaseKV, type LeaseAttrs } from '../../controller/subnet/lease.js';
import { SubnetManager, type NodeAttrs } from '../../controller/subnet/manager.js';
import { readSubnetHints, subnetFileFor, writeSubnetFile } from '../../controller/subnet/subnet-file.js';
import type { Logger } from '../../controller/util/log.js';
import { MemoryLeaseStore } from '../support/memory-lease-store.js';

/*
 * SubnetManager's logic against an in-memory LeaseStore (etcd's revisions, transactions and
 * TTL leases, without a server): flannel's acquire order, renew, re-acquire, lost races.
 * test/integration/etcd-store.test.ts runs it against a real etcd.
 */

const config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
const v6only = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
const node = (n: number, mac = `02:00:00:00:00:0${n}`) => ({ backendType: 'vxlan' as const, publicIp: `192.168.0.${n}`, vni: 1, vtepMac: mac });
const node6 = (n: number): NodeAttrs => ({ backendType: 'vxlan', publicIp: '0.0.0.0', publicIpv6: `fd00::${n}`, vni: 1, vtepMac6: `02:00:00:00:06:0${n}` });

function recordingLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log: Logger & { lines: string[] } = {
    lines,
    debug: () => undefined,
    info: (m) => void lines.push(`info ${m}`),
    warn: (m) => void lines.push(`warn ${m}`),
    error: (m) => void lines.push(`error ${m}`),
    child: () => log,
  };
  return log;
}

/** A manager as the agent makes one; random 0 picks the first free subnet. */
function manager(store: MemoryLeaseStore, attrs: NodeAttrs, extra: Partial<ConstructorParameters<typeof SubnetManager>[3]> = {}, net = config) {
  const log = recordingLog();
  return { m: new SubnetManager(store, net, attrs, { ttlSeconds: 60, renewMarginSeconds: 10, log, random: () => 0, ...extra }), log };
}

/** Whose record it is, as a peer would read it. */
function holder(store: MemoryLeaseStore, key: string): string | undefined {
  const r = store.recordOf(key);
  const p = r && parseLeaseKV(r.key, r.value);
  return p?.ok ? p.lease.publicIp : undefined;
}

const dir = mkdtempSync(path.join(tmpdir(), 'twill-manager-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('SubnetManager: acquire order', () => {
  it('allocates the first free subnet by create-if-absent, bound to a TTL lease, when nothing is ours', async () => {
    const store = new MemoryLeaseStore();
    store.putRecord('10.244.1.0-24', encodeLeaseValue(node(9)), store.grant(60));
    const { m, log } = manager(store, node(1));
    const own = await m.acquire();
    expect(own.key).toBe('10.244.2.0-24');
    expect(own.reservation).toBe(false);
    expect(store.recordOf(own.key)).toMatchObject({ value: encodeLeaseValue(node(1)), lease: own.etcdLease!.id });
    expect(store.txns).toEqual([{ op: 'create', subnetKey: '10.244.2.0-24', succeeded: true }]);
    expect(log.lines).toEqual(['info acquired a new lease']);
  });

  it('reuses our own lease by PublicIP ahead of the subnet-file hint, rewriting our attributes under a fresh lease', async () => {
    const store = new MemoryLeaseStore();
    const oldLease = store.grant(60);
    store.putRecord('10.244.5.0-24', encodeLeaseValue(node(1, '02:00:00:00:00:aa')), oldLease);
    const created = store.recordOf('10.244.5.0-24')!.createRevision;
    const { m, log } = manager(store, node(1), { hint: parseCidr('10.244.7.0/24') });
    const own = await m.acquire();
    expect(own.key).toBe('10.244.5.0-24');
    const rec = store.recordOf('10.244.5.0-24')!;
    expect(rec.value).toBe(encodeLeaseValue(node(1)));
    expect(rec.lease).toBe(own.etcdLease!.id);
    expect(rec.lease).not.toBe(oldLease);
    // The same record rewritten, not a new claim; the lease it had is dropped without taking the record along.
    expect(rec.createRevision).toBe(created);
    expect(store.liveLeaseIds).toEqual([own.etcdLease!.id]);
    expect(store.recordOf('10.244.7.0-24')).toBeUndefined();
    expect(log.lines).toEqual(['info reusing our lease']);
  });

  it('finds an IPv6-only node its own lease by PublicIPv6, not by the 0.0.0.0 every such lease has', async () => {
    const store = new MemoryLeaseStore();
    store.putRecord('0.0.0.0-0&fc00:0:0:1::-64', encodeLeaseValue(node6(1)), store.grant(60));
    store.putRecord('0.0.0.0-0&fc00:0:0:2::-64', encodeLeaseValue(node6(2)), store.grant(60));
    const own = await manager(store, node6(2), {}, v6only).m.acquire();
    expect(own.key).toBe('0.0.0.0-0&fc00:0:0:2::-64');
    const fresh = await manager(store, node6(3), {}, v6only).m.acquire();
    expect(fresh.key).toBe('0.0.0.0-0&fc00:0:0:3::-64');
  });

  it("takes the subnet file's previous subnet when nobody holds it, and a free one when somebody does", async () => {
    const store = new MemoryLeaseStore();
    const file = path.join(dir, 'subnet.env');
    writeSubnetFile(file, subnetFileFor(config, { subnet: parseCidr('10.244.7.0/24')! }, { mtu: 1450, ipMasq: false }));
    const hints = readSubnetHints(file);
    const first = manager(store, node(1), hints);
    expect((await first.m.acquire()).key).toBe('10.244.7.0-24');
    const second = await manager(store, node(2), hints).m.acquire();
    expect(second.key).toBe('10.244.1.0-24');
    expect([holder(store, '10.244.7.0-24'), holder(store, '10.244.1.0-24')]).toEqual(['192.168.0.1', '192.168.0.2']);
  });

  it('keeps a reservation (a record without TTL) as one: nothing to renew', async () => {
    const store = new MemoryLeaseStore();
    store.putRecord('10.244.3.0-24', encodeLeaseValue(node(1, '02:00:00:00:00:aa')));
    const { m, log } = manager(store, node(1));
    const own = await m.acquire();
    expect(own).toMatchObject({ key: '10.244.3.0-24', reservation: true, etcdLease: null });
    expect(store.recordOf('10.244.3.0-24')).toMatchObject({ value: encodeLeaseValue(node(1)), lease: '0' });
    expect(m.renewDelay()).toBeUndefined();
    expect(await m.renew()).toBe(true);
    expect(log.lines).toEqual(['info using our reservation']);
  });

  it('prefers our reservation to a lease of ours, and deletes our leases that no longer fit the config', async () => {
    const store = new MemoryLeaseStore();
    store.putRecord('10.244.4.0-24', encodeLeaseValue(node(1)), store.grant(60));
    store.putRecord('10.244.6.0-24', encodeLeaseValue(node(1)));
    store.putRecord('10.99.0.0-24', encodeLeaseValue(node(1)), store.grant(60));
    const own = await manager(store, node(1)).m.acquire();
    expect(own).toMatchObject({ key: '10.244.6.0-24', reservation: true });
    // A stale lease is only deleted on the way to a new one: reuse leaves the others be.
    expect(store.recordOf('10.244.4.0-24')).toBeDefined();

    const store2 = new MemoryLeaseStore();
    store2.putRecord('10.99.0.0-24', encodeLeaseValue(node(1)), store2.grant(60));
    const { m, log } = manager(store2, node(1));
    expect((await m.acquire()).key).toBe('10.244.1.0-24');
    expect(store2.recordOf('10.99.0.0-24')).toBeUndefined();
    expect(log.lines).toEqual(['warn deleting our old lease that no longer fits the network config', 'info acquired a new lease']);
  });
});

describe('SubnetManager: lost races', () => {
  it('retries a create that lost the subnet to another node, on the next free subnet, and drops the lease it was granted', async () => {
    const store = new MemoryLeaseStore();
    let rival: string | undefined;
    store.beforeTxn = (txn) => {
      if (txn.op !== 'create' || rival) return;
      rival = store.grant(60);
      store.putRecord(txn.subnetKey, encodeLeaseValue(node(2)), rival);
    };
    const { m, log } = manager(store, node(1));
    const own = await m.acquire();
    expect(store.txns).toEqual([
      { op: 'create', subnetKey: '10.244.1.0-24', succeeded: false },
      { op: 'create', subnetKey: '10.244.2.0-24', succeeded: true },
    ]);
    expect(own.key).toBe('10.244.2.0-24');
    expect(holder(store, '10.244.1.0-24')).toBe('192.168.0.2');
    expect(store.liveLeaseIds.sort()).toEqual([rival, own.etcdLease!.id].sort());
    expect(log.lines).toEqual(['info lost a race for a subnet, trying again', 'info acquired a new lease']);
  });

  it('retries a reuse whose record changed between the listing and the rewrite', async () => {
    const store = new MemoryLeaseStore();
    store.putRecord('10.244.5.0-24', encodeLeaseValue(node(1)), store.grant(60));
    let touched = false;
    store.beforeTxn = (txn) => {
      if (touched) return;
      touched = true;
      store.putRecord(txn.subnetKey, encodeLeaseValue(node(1, '02:00:00:00:00:bb')), store.recordOf(txn.subnetKey)!.lease);
    };
    const own = await manager(store, node(1)).m.acquire();
    expect(store.txns.map((t) => [t.op, t.succeeded])).toEqual([
      ['rewrite', false],
      ['rewrite', true],
    ]);
    expect(own.key).toBe('10.244.5.0-24');
    expect(store.recordOf(own.key)).toMatchObject({ value: encodeLeaseValue(node(1)), lease: own.etcdLease!.id });
  });
});

describe('SubnetManager: renew and re-acquire', () => {
  it('renews before expiry by the margin (at most half the TTL), and a renewal moves the expiry', async () => {
    const store = new MemoryLeaseStore();
    const { m } = manager(store, node(1));
    const own = await m.acquire();
    expect(m.renewDelay(own.expiresAt! - 60_000)).toBe(50_000);
    expect(manager(store, node(2), { renewMarginSeconds: 600 }).m.renewDelay()).toBeUndefined();
    const wide = manager(store, node(2), { renewMarginSeconds: 600 }).m;
    const own2 = await wide.acquire();
    expect(wide.renewDelay(own2.expiresAt! - 60_000)).toBe(30_000);
    own.expiresAt = 0;
    expect(await m.renew()).toBe(true);
    expect(m.own!.expiresAt).toBeGreaterThan(Date.now());
  });

  it('says the lease is gone once it expired, and re-acquires the same subnet while it is free', async () => {
    const store = new MemoryLeaseStore();
    const { m } = manager(store, node(1), { hint: parseCidr('10.244.8.0/24') });
    const held = await m.acquire();
    store.expire(held.etcdLease!.id);
    expect(store.recordOf(held.key)).toBeUndefined();
    expect(await m.renew()).toBe(false);
    const again = await m.acquire(held.subnet);
    expect(again.key).toBe(held.key);
    expect(again.etcdLease!.id).not.toBe(held.etcdLease!.id);
    expect(await m.renew()).toBe(true);
  });

  it('moves to a free subnet when another node took ours after it expired', async () => {
    const store = new MemoryLeaseStore();
    const { m } = manager(store, node(1), { hint: parseCidr('10.244.8.0/24') });
    const held = await m.acquire();
    store.expire(held.etcdLease!.id);
    store.putRecord(held.key, encodeLeaseValue(node(2)), store.grant(60));
    const again = await m.acquire(held.subnet);
    expect(again.key).toBe('10.244.1.0-24');
    expect(holder(store, held.key)).toBe('192.168.0.2');
  });

  it('passes on a renewal that could not reach the store: not gone, the caller retries', async () => {
    const store = new MemoryLeaseStore();
    const { m } = manager(store, node(1));
    await m.acquire();
    store.failing = new Error('14 UNAVAILABLE: No connection established');
    await expect(m.renew()).rejects.toThrow(/UNAVAILABLE/);
    store.failing = undefined;
    expect(await m.renew()).toBe(true);
  });

  it('writes our record back over a write by another PublicIP while our lease lives', async () => {
    const store = new MemoryLeaseStore();
    const { m, log } = manager(store, node(1));
    const held = await m.acquire();
    store.putRecord(held.key, encodeLeaseValue(node(2)));
    const key = store.subnetsPrefix + held.key;
    expect(m.isOwnLeaseLost({ type: 'put', key, value: encodeLeaseValue(node(2)) })).toBe(true);
    const restored = await m.acquire(held.subnet);
    expect(restored.key).toBe(held.key);
    expect(store.recordOf(held.key)).toMatchObject({ value: encodeLeaseValue(node(1)), lease: restored.etcdLease!.id });
    expect(store.liveLeaseIds).toEqual([restored.etcdLease!.id]);
    expect(log.lines.at(-1)).toBe('error our lease record was overwritten while we hold the subnet: ignoring the write and restoring ours');
  });

  it('tells which watch events mean our record is lost: a delete, or a put by another node; not our own rewrite or other keys', async () => {
    const store = new MemoryLeaseStore();
    const dual = parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
    // Our PublicIPv6 as the flag spelled it; records carry it canonically.
    const ours: LeaseAttrs = { ...node(1), publicIpv6: 'fd00:0::1', vtepMac6: '02:00:00:00:06:01' };
    const { m } = manager(store, ours, {}, dual);
    const own = await m.acquire();
    const key = store.subnetsPrefix + own.key;
    expect(store.recordOf(own.key)!.value).toContain('"PublicIPv6":"fd00::1"');
    expect(m.isOwnLeaseLost({ type: 'put', key, value: encodeLeaseValue(ours) })).toBe(false);
    expect(m.isOwnLeaseLost({ type: 'put', key, value: encodeLeaseValue({ ...ours, publicIpv6: 'fd00::9' }) })).toBe(true);
    expect(m.isOwnLeaseLost({ type: 'put', key, value: 'not json' })).toBe(true);
    expect(m.isOwnLeaseLost({ type: 'delete', key, value: '' })).toBe(true);
    expect(m.isOwnLeaseLost({ type: 'delete', key: `${store.subnetsPrefix}10.244.200.0-24&fc00:0:0:c8::-64`, value: '' })).toBe(false);
  });
});
