import { LeaseGoneError, type HeldLease, type LeaseRecord, type LeaseStore, type WatchEvent, type WatchHandle } from '../../controller/subnet/lease-store.js';

/*
 * A LeaseStore in memory, for unit-testing the subnet manager and the lease watcher. It keeps
 * etcd's semantics where their logic depends on them: one revision counter bumped by every
 * write, create and mod revisions per key, compare-and-write transactions that fail when the
 * record moved, TTL leases whose keys vanish when the lease is revoked or expires (on demand:
 * expire()), watches that replay history from a revision in order and are canceled when that
 * revision was compacted away. What etcd3 was seen doing after a lost connection is modelled
 * too: events written while a watch is disconnected never reach it, and reconnect() fires the
 * watch's onReconnect.
 */

interface StoredKV {
  value: string;
  lease: string;
  createRevision: number;
  modRevision: number;
}

interface ActiveWatch {
  from: number;
  onEvent: (e: WatchEvent) => void;
  onReconnect?: () => void;
  connected: boolean;
  end: (err: Error) => void;
}

/** What a transaction is about to do, for beforeTxn. */
export interface PendingTxn {
  op: 'create' | 'rewrite' | 'delete';
  subnetKey: string;
}

export class MemoryLeaseStore implements LeaseStore {
  readonly subnetsPrefix: string;
  private revision = 1;
  private compactedBelow = 0;
  private readonly kvs = new Map<string, StoredKV>();
  /** live leases: id -> TTL in seconds */
  private readonly leases = new Map<string, number>();
  private readonly history: WatchEvent[] = [];
  private readonly watches = new Set<ActiveWatch>();
  private nextLeaseId = 0x7000;
  /** calls that fail with this error until cleared: etcd unreachable */
  failing?: Error;
  /**
   * Runs after a transaction's lease is granted and before its compare: where another writer's
   * put lands between our listing and our write, as when a race is lost against etcd.
   */
  beforeTxn?: (txn: PendingTxn) => void;
  /** every transaction tried, in order, and whether its compare held */
  readonly txns: (PendingTxn & { succeeded: boolean })[] = [];

  constructor(prefix = '/coreos.com/network') {
    this.subnetsPrefix = `${prefix.replace(/\/$/, '')}/subnets/`;
  }

  async listLeases(): Promise<{ revision: string; records: LeaseRecord[] }> {
    this.check();
    const records = [...this.kvs].filter(([k]) => k.startsWith(this.subnetsPrefix)).map(([k, kv]) => this.record(k, kv));
    return { revision: String(this.revision), records };
  }

  async createLease(subnetKey: string, value: string, ttlSeconds: number): Promise<HeldLease | undefined> {
    this.check();
    const id = this.grant(ttlSeconds);
    const key = this.subnetsPrefix + subnetKey;
    const ok = this.txn({ op: 'create', subnetKey }, () => !this.kvs.has(key));
    if (!ok) {
      this.revoke(id);
      return undefined;
    }
    this.put(key, value, id);
    return this.held(id);
  }

  async rewriteLease(subnetKey: string, value: string, modRevision: string, ttlSeconds: number | undefined): Promise<HeldLease | null | undefined> {
    this.check();
    const id = ttlSeconds === undefined ? undefined : this.grant(ttlSeconds);
    const key = this.subnetsPrefix + subnetKey;
    const ok = this.txn({ op: 'rewrite', subnetKey }, () => String(this.kvs.get(key)?.modRevision ?? 0) === modRevision);
    if (!ok) {
      if (id) this.revoke(id);
      return undefined;
    }
    this.put(key, value, id ?? '0');
    return id ? this.held(id) : null;
  }

  async revokeLeaseId(id: string): Promise<void> {
    this.check();
    if (id !== '0') this.revoke(id);
  }

  async deleteLease(subnetKey: string, modRevision?: string): Promise<boolean> {
    this.check();
    const key = this.subnetsPrefix + subnetKey;
    if (modRevision === undefined) return this.delete(key);
    const ok = this.txn({ op: 'delete', subnetKey }, () => String(this.kvs.get(key)?.modRevision ?? 0) === modRevision);
    return ok && this.delete(key);
  }

  /** The error `failing` holds is this store's "unreachable". */
  isUnreachable(err: unknown): boolean {
    return err !== undefined && err === this.failing;
  }

  async watchLeases(fromRevision: string, onEvent: (e: WatchEvent) => void, onReconnect?: () => void): Promise<WatchHandle> {
    this.check();
    const from = Number(fromRevision);
    let end!: (err: Error) => void;
    const ended = new Promise<Error>((resolve) => (end = resolve));
    const watch: ActiveWatch = { from, onEvent, onReconnect, connected: true, end };
    if (from < this.compactedBelow) {
      // etcd accepts the watch, then cancels it.
      end(new Error(`etcd canceled the watch from revision ${fromRevision} (compacted away, or rejected): required revision has been compacted`));
      return { ended, cancel: async () => undefined };
    }
    this.watches.add(watch);
    const backlog = this.history.filter((e) => Number(e.revision) >= from);
    queueMicrotask(() => backlog.forEach((e) => this.deliver(watch, e)));
    return {
      ended,
      cancel: async () => {
        this.watches.delete(watch);
        end(new Error('watch canceled'));
      },
    };
  }

  // What other writers and the passage of time do, for the tests.

  /** A write by someone else (another node, an operator): a lease id binds it to that lease, none makes a reservation. */
  putRecord(subnetKey: string, value: string, leaseId = '0'): void {
    this.put(this.subnetsPrefix + subnetKey, value, leaseId);
  }

  /** Deletes a record outright, as `etcdctl del` would. */
  deleteRecord(subnetKey: string): boolean {
    return this.delete(this.subnetsPrefix + subnetKey);
  }

  /** A TTL lease for someone else's record. */
  grant(ttlSeconds: number): string {
    const id = String(this.nextLeaseId++);
    this.leases.set(id, ttlSeconds);
    return id;
  }

  /** The TTL has run out: the lease is dropped and its keys deleted (every live lease without an id). */
  expire(leaseId?: string): void {
    for (const id of leaseId === undefined ? [...this.leases.keys()] : [leaseId]) this.revoke(id);
  }

  /** Forgets history below the current revision: a watch from an older revision is canceled. */
  compact(): void {
    this.compactedBelow = this.revision;
    this.history.splice(0, this.history.length);
  }

  /** The connection of every watch is lost: what is written meanwhile never reaches them. */
  disconnect(): void {
    for (const w of this.watches) w.connected = false;
  }

  /** Watches resume with new events, and say they reconnected. */
  reconnect(): void {
    for (const w of this.watches) {
      if (w.connected) continue;
      w.connected = true;
      queueMicrotask(() => w.onReconnect?.());
    }
  }

  /** etcd cancels every watch (as after a compaction past them). */
  cancelWatches(reason: string): void {
    for (const w of this.watches) w.end(new Error(reason));
    this.watches.clear();
  }

  get currentRevision(): string {
    return String(this.revision);
  }

  get watchCount(): number {
    return this.watches.size;
  }

  /** The record under a subnet key, as a listing would return it. */
  recordOf(subnetKey: string): LeaseRecord | undefined {
    const key = this.subnetsPrefix + subnetKey;
    const kv = this.kvs.get(key);
    return kv && this.record(key, kv);
  }

  get liveLeaseIds(): string[] {
    return [...this.leases.keys()];
  }

  private check(): void {
    if (this.failing) throw this.failing;
  }

  private txn(pending: PendingTxn, compare: () => boolean): boolean {
    this.beforeTxn?.(pending);
    const succeeded = compare();
    this.txns.push({ ...pending, succeeded });
    return succeeded;
  }

  private held(id: string): HeldLease {
    return {
      id,
      keepalive: async () => {
        this.check();
        const ttl = this.leases.get(id);
        if (ttl === undefined) throw new LeaseGoneError(`requested lease not found: ${id}`);
        return ttl;
      },
      revoke: async () => this.revoke(id),
    };
  }

  private revoke(id: string): void {
    if (!this.leases.delete(id)) return;
    for (const [key, kv] of [...this.kvs]) if (kv.lease === id) this.delete(key);
  }

  private put(key: string, value: string, lease: string): void {
    if (lease !== '0' && !this.leases.has(lease)) throw new Error(`put ${key}: lease ${lease} not found`);
    const revision = ++this.revision;
    const kv = { value, lease, createRevision: this.kvs.get(key)?.createRevision ?? revision, modRevision: revision };
    this.kvs.set(key, kv);
    this.emit({ type: 'put', record: this.record(key, kv), revision: String(revision) });
  }

  private delete(key: string): boolean {
    const kv = this.kvs.get(key);
    if (!kv) return false;
    this.kvs.delete(key);
    this.emit({ type: 'delete', record: this.record(key, kv), revision: String(++this.revision) });
    return true;
  }

  private emit(e: WatchEvent): void {
    this.history.push(e);
    for (const w of this.watches) {
      if (!w.connected || Number(e.revision) < w.from) continue;
      queueMicrotask(() => this.deliver(w, e));
    }
  }

  /** Like etcd, in order and asynchronously; a watch canceled meanwhile gets nothing more. */
  private deliver(w: ActiveWatch, e: WatchEvent): void {
    if (this.watches.has(w)) w.onEvent(e);
  }

  private record(key: string, kv: StoredKV): LeaseRecord {
    return { key, value: kv.value, lease: kv.lease, modRevision: String(kv.modRevision), createRevision: String(kv.createRevision) };
  }
}
