import type { DatapathMaps, SyncResult } from '../dataplane/datapath-maps.js';
import { formatCidr } from '../net/ipv4.js';
import type { Lease } from '../subnet/lease.js';
import type { Logger } from '../util/log.js';
import { desiredMaps, type NodeLease } from './desired.js';

/**
 * Turns the lease set into map contents. Changes that arrive together are applied together
 * (one sync per event-loop turn); each sync writes only the difference, so restarting the agent
 * against populated maps touches nothing that is already right.
 */
export class Reconciler {
  count = 0;
  errors = 0;
  lastDurationMs = 0;
  lastResult?: SyncResult;
  private pending?: ReadonlyMap<string, Lease>;
  private scheduled = false;
  private readonly warned = new Set<string>();
  private idle: Promise<void> = Promise.resolve();

  constructor(
    private readonly maps: DatapathMaps,
    private self: { subnet: string; publicIp: string },
    private readonly vni: number,
    private readonly log: Logger,
  ) {}

  setSelf(self: { subnet: string; publicIp: string }): void {
    this.self = self;
  }

  update(leases: ReadonlyMap<string, Lease>): void {
    this.pending = leases;
    if (this.scheduled) return;
    this.scheduled = true;
    this.idle = new Promise((resolve) =>
      setImmediate(() => {
        this.scheduled = false;
        this.apply();
        resolve();
      }),
    );
  }

  /** Resolves once everything passed to update() so far is in the maps. */
  settled(): Promise<void> {
    return this.idle;
  }

  private usable(leases: ReadonlyMap<string, Lease>): NodeLease[] {
    const out: NodeLease[] = [];
    for (const l of leases.values()) {
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

  private apply(): void {
    const leases = this.pending;
    if (!leases) return;
    const started = performance.now();
    try {
      const desired = desiredMaps(this.self, this.usable(leases));
      for (const s of desired.skipped) this.log.warn('ignoring conflicting lease', { subnet: s.lease.subnet, publicIp: s.lease.publicIp, reason: s.reason });
      this.lastResult = this.maps.sync(desired);
      this.count++;
      const r = this.lastResult;
      if (r.subnetsAdded + r.subnetsRemoved + r.peersAdded + r.peersRemoved) this.log.info('datapath maps updated', { ...r, peers: desired.peers.size });
    } catch (err) {
      this.errors++;
      this.log.error('reconcile failed; will retry with the next change or resync', { error: (err as Error).message });
      setTimeout(() => this.update(leases), 1000).unref();
    } finally {
      this.lastDurationMs = performance.now() - started;
    }
  }
}
