import type { SyncResult } from '../dataplane/datapath-maps.js';
import { formatCidr } from '../net/ipv4.js';
import type { Lease } from '../subnet/lease.js';
import type { Logger } from '../util/log.js';
import { desiredMaps, type DesiredMaps, type NodeLease } from './desired.js';

/** What the reconciler drives: the BPF maps, or flannel's kernel VXLAN state. */
export interface Datapath {
  /**
   * Brings the datapath to `desired` by difference. With `known` (what the last sync wrote),
   * the difference may be taken against it instead of reading the live state back.
   */
  sync(desired: DesiredMaps, known?: DesiredMaps): SyncResult | Promise<SyncResult>;
}

/** How often the live state is read back and diffed in full, to repair drift made behind our back. */
export const FULL_SYNC_INTERVAL_MS = 60_000;

/**
 * Turns the lease set into map contents. Changes that arrive together are applied together
 * (one sync per event-loop turn); each sync writes only the difference, so restarting the agent
 * against populated maps touches nothing that is already right. Only the first sync, the one
 * after a failure or a new datapath, and one a minute read the live state back: with 10,000
 * leases that read is most of a sync's cost, and single lease changes must land in milliseconds.
 */
export class Reconciler {
  count = 0;
  errors = 0;
  lastDurationMs = 0;
  lastResult?: SyncResult;
  private pending?: ReadonlyMap<string, Lease>;
  private running?: Promise<void>;
  private readonly warned = new Set<string>();
  /** what the last successful sync wrote, while it can be trusted */
  private applied?: DesiredMaps;
  private lastFullSync = 0;

  constructor(
    private datapath: Datapath,
    private self: { subnet: string; publicIp: string },
    private readonly vni: number,
    private readonly log: Logger,
  ) {}

  setSelf(self: { subnet: string; publicIp: string }): void {
    this.self = self;
    this.applied = undefined;
  }

  setDatapath(datapath: Datapath): void {
    this.datapath = datapath;
    this.applied = undefined;
  }

  /** The next sync reads the live state back (after a watch gap, say). */
  forgetApplied(): void {
    this.applied = undefined;
  }

  /** Applies are serialized; updates arriving meanwhile are folded into the next one. */
  update(leases: ReadonlyMap<string, Lease>): void {
    this.pending = leases;
    this.running ??= (async () => {
      await new Promise((r) => setImmediate(r));
      while (this.pending) {
        const next = this.pending;
        this.pending = undefined;
        await this.apply(next);
      }
      this.running = undefined;
    })();
  }

  /** Resolves once everything passed to update() so far is in the datapath. */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  /** The desired datapath state for a lease set, as the next sync would write it. */
  desired(leases: Iterable<Lease>): DesiredMaps {
    const desired = desiredMaps(this.self, this.usable(leases));
    for (const s of desired.skipped) this.log.warn('ignoring conflicting lease', { subnet: s.lease.subnet, publicIp: s.lease.publicIp, reason: s.reason });
    return desired;
  }

  private usable(leases: Iterable<Lease>): NodeLease[] {
    const out: NodeLease[] = [];
    for (const l of leases) {
      const subnet = formatCidr(l.subnet);
      const skip = l.backendType !== 'vxlan' ? `backend type ${JSON.stringify(l.backendType)} is not vxlan` : !l.vtepMac ? 'no VtepMAC' : l.vni !== undefined && l.vni !== this.vni ? `VNI ${l.vni} differs from ours (${this.vni})` : undefined;
      if (skip) {
        if (!this.warned.has(`${subnet} ${skip}`)) this.log.warn('ignoring lease', { subnet, publicIp: l.publicIp, reason: skip });
        this.warned.add(`${subnet} ${skip}`);
        continue;
      }
      out.push({ subnet, publicIp: l.publicIp, vtepMac: l.vtepMac! });
    }
    return out;
  }

  private async apply(leases: ReadonlyMap<string, Lease>): Promise<void> {
    const started = performance.now();
    const known = this.applied;
    try {
      const desired = this.desired(leases.values());
      const full = !this.applied || started - this.lastFullSync >= FULL_SYNC_INTERVAL_MS;
      this.applied = undefined; // until this sync is known to have completed
      this.lastResult = await this.datapath.sync(desired, full ? undefined : known);
      this.applied = desired;
      if (full) this.lastFullSync = started;
      this.count++;
      const r = this.lastResult;
      if (r.subnetsAdded + r.subnetsRemoved + r.peersAdded + r.peersRemoved) this.log.info('datapath updated', { ...r, peers: desired.peers.size, full, ms: Math.round(performance.now() - started) });
    } catch (err) {
      this.errors++;
      this.log.error('reconcile failed; will retry with the next change or resync', { error: (err as Error).message });
      setTimeout(() => this.update(leases), 1000).unref();
    } finally {
      this.lastDurationMs = performance.now() - started;
    }
  }
}
