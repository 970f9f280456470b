import type { NetworkConfig } from '../config/network-config.js';
import { type Cidr } from '../net/ipv4.js';
import { formatIpv6, parseIpv6, type Cidr6 } from '../net/ipv6.js';
import type { Logger } from '../util/log.js';
import { decideAcquire, describeSubnets, unroutableReason } from './allocate.js';
import { encodeLeaseValue, type LeaseAttrs, parseLeaseKV, subnetKey, type Lease, type LeaseParse } from './lease.js';
import { LeaseGoneError, type HeldLease, type LeaseStore } from './lease-store.js';

/** What we hold in etcd. */
export interface OwnLease {
  /** NO_SUBNET in an IPv6-only network */
  subnet: Cidr;
  /** there when the network enables IPv6 */
  subnet6?: Cidr6;
  key: string;
  reservation: boolean;
  /** null for a reservation, which has no TTL and is never converted into one */
  etcdLease: HeldLease | null;
  expiresAt?: number;
}

export type NodeAttrs = LeaseAttrs;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Parses the records of a listing; unusable ones are reported once each and skipped. With
 * `routableIn`, leases the datapath cannot carry under that config are skipped too (the
 * allocator, which must see every record, passes none).
 */
export function usableLeases(
  records: { key: string; value: string; lease: string; modRevision: string; createRevision?: string }[],
  log: Logger,
  routableIn?: NetworkConfig,
): Lease[] {
  const out: Lease[] = [];
  for (const r of records) {
    const p = routableLease(parseLeaseKV(r.key, r.value, r.lease, r.modRevision, r.createRevision), routableIn);
    if (p.ok) out.push(p.lease);
    else log.warn('ignoring unusable lease record', { reason: p.reason });
  }
  return out;
}

export function routableLease(p: LeaseParse, config?: NetworkConfig): LeaseParse {
  if (!p.ok || !config) return p;
  const misfit = unroutableReason(config, p.lease);
  return misfit ? { ok: false, reason: `lease ${subnetKey(p.lease.subnet, p.lease.subnet6)}: ${misfit}` } : p;
}

/**
 * flannel's subnet manager for one node: acquire (reuse, hint, allocate), renew before expiry,
 * and re-acquire when the lease is lost. A transaction that loses a race is retried, never fatal.
 */
export class SubnetManager {
  own?: OwnLease;

  constructor(
    private readonly store: LeaseStore,
    private readonly config: NetworkConfig,
    private readonly attrs: NodeAttrs,
    private readonly opts: { ttlSeconds: number; renewMarginSeconds: number; hint?: Cidr; hint6?: Cidr6; log: Logger; random?: () => number },
  ) {}

  /** Whether a record is ours: the same PublicIP, and the same PublicIPv6 when we have one. */
  private isOurs(l: Pick<Lease, 'publicIp' | 'publicIpv6'>): boolean {
    const canonical = (ip: string | undefined) => (ip === undefined ? undefined : formatIpv6(parseIpv6(ip) ?? 0n));
    return l.publicIp === this.attrs.publicIp && (this.attrs.publicIpv6 === undefined || canonical(l.publicIpv6) === canonical(this.attrs.publicIpv6));
  }

  /** `hint`/`hint6` override the subnet-file hints: on re-acquire, the subnets we just held are the ones to get back. */
  async acquire(hint = this.opts.hint, hint6 = this.opts.hint6): Promise<OwnLease> {
    const { log } = this.opts;
    const value = encodeLeaseValue(this.attrs);
    const restored = await this.restoreOverwritten(value);
    if (restored) return restored;
    for (let attempt = 1; ; attempt++) {
      const { records } = await this.store.listLeases();
      const leases = usableLeases(records, log);
      const d = decideAcquire({
        config: this.config,
        publicIp: this.attrs.publicIp,
        publicIpv6: this.attrs.publicIpv6,
        leases,
        hint,
        hint6,
        random: this.opts.random,
      });
      const stale = d.action === 'reuse' ? [] : d.stale;
      for (const s of stale) {
        log.warn('deleting our old lease that no longer fits the network config', { subnet: describeSubnets(s) });
        await this.store.deleteLease(subnetKey(s.subnet, s.subnet6), s.modRevision);
      }
      let own: OwnLease | undefined;
      if (d.action === 'reuse') {
        const key = subnetKey(d.lease.subnet, d.lease.subnet6);
        // Fresh attributes (our VtepMAC may be new); a reservation stays one.
        const lease = await this.store.rewriteLease(key, value, d.lease.modRevision, d.reservation ? undefined : this.opts.ttlSeconds);
        if (lease !== undefined) {
          if (!d.reservation) await this.store.revokeLeaseId(d.lease.etcdLease);
          own = {
            subnet: d.lease.subnet,
            subnet6: d.lease.subnet6,
            key,
            reservation: d.reservation,
            etcdLease: lease,
            expiresAt: lease ? Date.now() + this.opts.ttlSeconds * 1000 : undefined,
          };
          log.info(d.reservation ? 'using our reservation' : 'reusing our lease', { subnet: describeSubnets(d.lease) });
        }
      } else if (d.action === 'allocate') {
        const key = subnetKey(d.subnet, d.subnet6);
        const lease = await this.store.createLease(key, value, this.opts.ttlSeconds);
        if (lease) {
          own = { subnet: d.subnet, subnet6: d.subnet6, key, reservation: false, etcdLease: lease, expiresAt: Date.now() + this.opts.ttlSeconds * 1000 };
          log.info('acquired a new lease', { subnet: describeSubnets(d), via: d.via });
        }
      } else {
        log.error(`no free ${d.family} subnet left in the network; retrying`, { attempt });
        await sleep(Math.min(30_000, 1000 * attempt));
        continue;
      }
      if (own) {
        this.own = own;
        return own;
      }
      log.info('lost a race for a subnet, trying again', { attempt });
      await sleep(Math.min(1000, 20 * attempt + Math.floor((this.opts.random ?? Math.random)() * 50)));
    }
  }

  /**
   * Our record overwritten with another PublicIP while our etcd lease is still alive is not an
   * allocation (allocators only create absent keys, and a live lease keeps ours present): it
   * is a stray or hostile write. Moving away would cut our pods off, so our record is written
   * back over it, by transaction. After a delete, or once our lease has expired, someone may
   * hold the subnet rightfully: then the normal acquire runs.
   */
  private async restoreOverwritten(value: string): Promise<OwnLease | undefined> {
    const own = this.own;
    if (!own?.etcdLease) return undefined;
    const record = (await this.store.listLeases()).records.find((r) => r.key === this.store.subnetsPrefix + own.key);
    if (!record) return undefined;
    const current = parseLeaseKV(record.key, record.value);
    if (current.ok && this.isOurs(current.lease)) return undefined;
    try {
      await own.etcdLease.keepalive();
    } catch {
      return undefined;
    }
    const lease = await this.store.rewriteLease(own.key, value, record.modRevision, this.opts.ttlSeconds);
    if (!lease) return undefined;
    await own.etcdLease.revoke();
    this.opts.log.error('our lease record was overwritten while we hold the subnet: ignoring the write and restoring ours', {
      subnet: describeSubnets(own),
      overwrittenWith: current.ok ? { publicIp: current.lease.publicIp, publicIpv6: current.lease.publicIpv6 } : { problem: current.reason },
    });
    this.own = { ...own, etcdLease: lease, expiresAt: Date.now() + this.opts.ttlSeconds * 1000 };
    return this.own;
  }

  /** Milliseconds until the next renewal is due (flannel: at expiry minus the margin). */
  renewDelay(now = Date.now()): number | undefined {
    const own = this.own;
    if (!own?.etcdLease || own.expiresAt === undefined) return undefined;
    const margin = Math.min(this.opts.renewMarginSeconds, this.opts.ttlSeconds / 2) * 1000;
    return Math.max(0, own.expiresAt - margin - now);
  }

  /** Refreshes our TTL. Returns false when etcd says the lease is gone (the caller re-acquires). */
  async renew(): Promise<boolean> {
    const own = this.own;
    if (!own?.etcdLease) return true;
    try {
      const ttl = await own.etcdLease.keepalive();
      own.expiresAt = Date.now() + ttl * 1000;
      return true;
    } catch (err) {
      if (err instanceof LeaseGoneError) return false;
      throw err;
    }
  }

  /** Whether a watch event means our own record is gone or taken over. */
  isOwnLeaseLost(e: { type: 'put' | 'delete'; key: string; value: string }): boolean {
    if (!this.own || !e.key.endsWith(`/${this.own.key}`)) return false;
    if (e.type === 'delete') return true;
    const p = parseLeaseKV(e.key, e.value);
    return !p.ok || !this.isOurs(p.lease);
  }
}
