import { describeSubnets } from './allocate.js';
import type { Logger } from '../util/log.js';
import { leaseKey, parseLeaseKV, sameLease, type Lease } from './lease.js';
import type { LeaseStore, WatchEvent } from './lease-store.js';
import { routableLease, usableLeases } from './manager.js';
import type { NetworkConfig } from '../config/network-config.js';

export interface LeaseChange {
  added: Lease[];
  removed: Lease[];
  changed: Lease[];
}

export interface LeaseWatcherOptions {
  store: LeaseStore;
  /** every change to the lease set, with the whole set after it */
  onChange: (change: LeaseChange, all: ReadonlyMap<string, Lease>) => void;
  log: Logger;
  /** every raw watch event, before it is applied (the agent spots the loss of its own lease here) */
  onEvent?: (e: WatchEvent) => void;
  /** leases the datapath could not carry under this config are reported and left out */
  routableIn?: NetworkConfig;
}

/**
 * Keeps the set of leases current: a listing at revision R, then a watch from R+1. When the
 * watch ends (etcd compacted past it, or canceled it) or its connection was re-established,
 * a new listing is diffed against what we had, so deletes and attribute changes missed
 * meanwhile are not lost. Events no newer than the last listing are stale and skipped.
 */
export class LeaseWatcher {
  readonly leases = new Map<string, Lease>();
  private stopped = false;
  private current?: { cancel(): Promise<void> };
  /** state for metrics and status */
  state: 'starting' | 'watching' | 'resyncing' | 'backoff' = 'starting';
  resyncs = 0;

  private readonly store: LeaseStore;
  private readonly onChange: LeaseWatcherOptions['onChange'];
  private readonly log: Logger;
  private readonly onEvent?: LeaseWatcherOptions['onEvent'];
  private readonly routableIn?: NetworkConfig;

  constructor(o: LeaseWatcherOptions) {
    ({ store: this.store, onChange: this.onChange, log: this.log, onEvent: this.onEvent, routableIn: this.routableIn } = o);
  }

  /** Resolves after the first listing has been applied; keeps watching in the background. */
  async start(): Promise<void> {
    await this.resync();
    void this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.current?.cancel().catch(() => undefined);
  }

  private revision = '0';
  private listedAt = 0;

  private async resync(): Promise<void> {
    this.state = 'resyncing';
    const { revision, records } = await this.store.listLeases();
    const fresh = new Map(usableLeases(records, this.log, this.routableIn).map((l) => [leaseKey(l), l]));
    const change: LeaseChange = { added: [], removed: [], changed: [] };
    for (const [k, l] of fresh) {
      const had = this.leases.get(k);
      if (!had) change.added.push(l);
      else if (!sameLease(had, l)) change.changed.push(l);
    }
    for (const [k, l] of this.leases) if (!fresh.has(k)) change.removed.push(l);
    this.leases.clear();
    for (const [k, l] of fresh) this.leases.set(k, l);
    this.revision = revision;
    this.listedAt = Number(revision);
    this.resyncs++;
    if (change.added.length + change.removed.length + change.changed.length) this.onChange(change, this.leases);
  }

  private async loop(): Promise<void> {
    let backoff = 100;
    while (!this.stopped) {
      try {
        const handle = await this.store.watchLeases(
          String(Number(this.revision) + 1),
          (e) => this.apply(e),
          () => {
            this.log.warn('lease watch reconnected, resyncing', { revision: this.revision });
            this.resync().catch((err: Error) => this.log.warn('lease resync failed', { error: err.message }));
          },
        );
        this.current = handle;
        this.state = 'watching';
        backoff = 100;
        const reason = await handle.ended;
        if (this.stopped) return;
        this.log.warn('lease watch ended, resyncing', { error: reason.message, revision: this.revision });
      } catch (err) {
        if (this.stopped) return;
        this.quietWhileUnreachable(err)('lease watch failed', { error: (err as Error).message, retryInMs: backoff });
      }
      this.state = 'backoff';
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(5000, backoff * 2);
      try {
        await this.resync();
      } catch (err) {
        this.quietWhileUnreachable(err)('lease resync failed', { error: (err as Error).message });
      }
    }
  }

  /** The store reports an unreachable etcd once for all callers; each retry here says it again only at debug. */
  private quietWhileUnreachable(err: unknown) {
    return this.store.isUnreachable(err) ? this.log.debug : this.log.warn;
  }

  private apply(e: WatchEvent): void {
    if (Number(e.revision) <= this.listedAt) return;
    this.revision = e.revision;
    this.onEvent?.(e);
    const parsed = routableLease(parseLeaseKV(e.record.key, e.record.value, e.record.lease, e.record.modRevision, e.record.createRevision), this.routableIn);
    if (!parsed.ok) {
      this.log.warn('ignoring unusable lease record', { reason: parsed.reason, event: e.type });
      return;
    }
    const k = leaseKey(parsed.lease);
    const change: LeaseChange = { added: [], removed: [], changed: [] };
    if (e.type === 'delete') {
      const had = this.leases.get(k);
      if (!had) return;
      this.leases.delete(k);
      change.removed.push(had);
    } else {
      (this.leases.has(k) ? change.changed : change.added).push(parsed.lease);
      this.leases.set(k, parsed.lease);
    }
    this.log.debug('lease event', {
      type: e.type,
      subnet: describeSubnets(parsed.lease),
      publicIp: parsed.lease.publicIp,
      publicIpv6: parsed.lease.publicIpv6,
    });
    this.onChange(change, this.leases);
  }
}
