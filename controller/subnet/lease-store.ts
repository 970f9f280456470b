/*
 * What the subnet manager and the lease watcher need from the store of lease records (flannel's
 * subnet.Manager, narrowed to what twill uses): records under one prefix read at a revision,
 * created only where absent, rewritten only where unchanged, bound to TTL leases, watched from a
 * revision. controller/etcd/store.ts implements it against etcd; the unit tests use an in-memory
 * one, so the acquire, renew and resync logic is tested without a server.
 */

export interface LeaseRecord {
  key: string;
  value: string;
  /** etcd lease id in decimal, "0" when the key has none (a reservation) */
  lease: string;
  modRevision: string;
  /** when the key was created: stable across rewrites, so the older of two claims can be told */
  createRevision: string;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  /** for a delete, the record as it was before */
  record: LeaseRecord;
  revision: string;
}

export interface WatchHandle {
  /** settles when the watch stops for good: compacted, canceled, or closed */
  ended: Promise<Error>;
  cancel(): Promise<void>;
}

/** A TTL lease granted to us, bound to our record. */
export interface HeldLease {
  /** etcd's lease id, decimal */
  readonly id: string;
  /** Refreshes the TTL and returns it in seconds; throws LeaseGoneError once the lease has expired or was revoked. */
  keepalive(): Promise<number>;
  /** Drops the lease and every key bound to it; a lease already gone is not an error. */
  revoke(): Promise<void>;
}

/** The store answered that the lease no longer exists (expired or revoked): renewing cannot help. */
export class LeaseGoneError extends Error {
  override name = 'LeaseGoneError';
}

export interface LeaseStore {
  /** `<prefix>/subnets/`: what every record's key starts with */
  readonly subnetsPrefix: string;
  /** Every lease record, and the revision they were read at (watch from revision + 1). */
  listLeases(): Promise<{ revision: string; records: LeaseRecord[] }>;
  /** flannel's "put if version == 0", bound to a fresh lease. Undefined if someone else won. */
  createLease(subnetKey: string, value: string, ttlSeconds: number): Promise<HeldLease | undefined>;
  /**
   * Rewrites a record only if nobody touched it since `modRevision`: bound to a fresh lease, or
   * to none (null) without `ttlSeconds`. Undefined if the record changed meanwhile.
   */
  rewriteLease(subnetKey: string, value: string, modRevision: string, ttlSeconds: number | undefined): Promise<HeldLease | null | undefined>;
  /** Drops a lease by id, as a listing names it ("0": none); a lease already gone is not an error. */
  revokeLeaseId(id: string): Promise<void>;
  /** Deletes a record, only if unchanged since `modRevision` when given; whether it did. */
  deleteLease(subnetKey: string, modRevision?: string): Promise<boolean>;
  /**
   * Delivers every change from `fromRevision` on, in order. `onReconnect` fires when the watch
   * came back after a lost connection: changes made meanwhile may be missing, so the caller
   * re-lists.
   */
  watchLeases(fromRevision: string, onEvent: (e: WatchEvent) => void, onReconnect?: () => void): Promise<WatchHandle>;
  /** Whether an error of this store's says the store could not be reached (rather than that it answered no). */
  isUnreachable(err: unknown): boolean;
}
