import { mkdirSync, watch, type FSWatcher } from 'node:fs';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { syncHeadroomPorts } from '../dataplane/headroom.js';
import { syncPodLinks } from '../dataplane/pod-links.js';
import { KernelWatch } from '../netlink/kernel-watch.js';
import type { Logger } from '../util/log.js';
import { planEndpoints, portsWithoutRecord } from './desired.js';
import { readEndpointRecords, writePinDirPointer } from './records.js';
import { discoverPods, scanBridges } from './scan.js';

interface EndpointSyncOptions {
  pinDir: string;
  /** where the CNI plugin records the pods it adds */
  recordsDir: string;
  /** this node's lease (CIDR): only pods in it are served */
  subnet: string;
  /** underlay MTU - 50: the largest pod packet the fast path encapsulates */
  encapMtu: number;
  /** with IPv6: our IPv6 subnet (CIDR), and underlay MTU - 70 */
  subnet6?: string;
  encapMtu6?: number;
  /** false: the send program encapsulates nothing (the endpoints are still kept, for status) */
  fastPath: boolean;
  /** true: every pod veth carries the send program, which checks the pod's source, fast path or not */
  podSourceCheck?: boolean;
  log: Logger;
  /** bridges always scanned, besides those the records name */
  bridges?: string[];
  /** full re-sync period; a missed event is repaired by the next one */
  resyncMs?: number;
}

export interface EndpointSyncState {
  endpoints: number;
  podLinks: number;
  syncs: number;
  errors: number;
  lastError?: string;
  problems: string[];
}

/**
 * Keeps twill_endpoints and the pod veths' links equal to the pods on this node. A sync runs at
 * start (which is what repairs a restart, a pod deleted while the agent was down, or one
 * re-created with the same address on a new veth), whenever the CNI plugin adds or removes a
 * record, whenever a link appears or goes (`ip monitor link`), and every resyncMs.
 */
export class EndpointSync {
  private watcher?: FSWatcher;
  private readonly kernel: KernelWatch;
  readonly state: EndpointSyncState = { endpoints: 0, podLinks: 0, syncs: 0, errors: 0, problems: [] };

  constructor(private readonly o: EndpointSyncOptions) {
    this.kernel = new KernelWatch({ work: () => this.once(), monitor: ['link'], resyncMs: o.resyncMs ?? 30_000, log: o.log });
  }

  /** One sync now (joined with one already running, then repeated once if asked for meanwhile). */
  sync(): Promise<void> {
    return this.kernel.run();
  }

  private async once(): Promise<void> {
    try {
      const { records, invalid } = readEndpointRecords(this.o.recordsDir);
      const bridges = [...(this.o.bridges ?? ['cni0']), ...records.map((r) => r.bridge)];
      const { ports, bridgeMacs } = await scanBridges(bridges);
      const discovered = await discoverPods(portsWithoutRecord(records, ports));
      const plan = planEndpoints({
        subnet: this.o.subnet,
        encapMtu: this.o.encapMtu,
        subnet6: this.o.subnet6,
        encapMtu6: this.o.encapMtu6,
        records,
        ports,
        bridgeMacs,
        discovered,
      });
      const maps = DatapathMaps.open(this.o.pinDir);
      const changed: { upserted: string[]; removed: string[] } = { upserted: [], removed: [] };
      const linked = this.o.fastPath || this.o.podSourceCheck === true;
      let links: ReturnType<typeof syncPodLinks>;
      try {
        const families = [
          { maps: maps.ipv4, endpoints: plan.endpoints },
          ...(this.o.subnet6 && maps.ipv6 ? [{ maps: maps.ipv6, endpoints: plan.endpoints6 }] : []),
        ];
        // The send program drops what a pod sends from an address it has no endpoint for: a
        // pod's entry goes in before its veth gets the program, and comes out only after the
        // program has left the veth (a pod outside a moved lease keeps sending meanwhile).
        for (const f of families) changed.upserted.push(...f.maps.syncEndpoints(new Map([...f.maps.readEndpoints(), ...f.endpoints])).upserted);
        links = syncPodLinks(this.o.pinDir, linked ? plan.veths : []);
        for (const f of families) changed.removed.push(...f.maps.syncEndpoints(f.endpoints).removed);
      } finally {
        maps.close();
      }
      // Only the fast path encapsulates what pods send, so only it needs their headroom.
      const headroom = await syncHeadroomPorts(this.o.fastPath ? [...bridgeMacs.keys()] : []);
      const problems = [...plan.problems, ...invalid.map((i) => i.error)];
      for (const p of problems.filter((p) => !this.state.problems.includes(p))) this.o.log.warn('endpoint problem', { problem: p });
      Object.assign(this.state, { endpoints: plan.endpoints.size, podLinks: linked ? plan.veths.length : 0, problems, lastError: undefined });
      this.state.syncs++;
      if (changed.upserted.length || changed.removed.length || links.attached.length || links.removed.length || headroom.length)
        this.o.log.info('pod endpoints synced', {
          added: changed.upserted,
          removed: changed.removed,
          linksAttached: links.attached,
          linksRemoved: links.removed,
          headroom,
          endpoints: plan.endpoints.size,
          staleRecords: plan.stale.length,
        });
    } catch (err) {
      this.state.errors++;
      this.state.lastError = (err as Error).message;
      this.o.log.error('pod endpoint sync failed; retried on the next event or resync', { error: (err as Error).message });
    }
  }

  start(): void {
    mkdirSync(this.o.recordsDir, { recursive: true });
    writePinDirPointer(this.o.recordsDir, this.o.pinDir);
    this.watcher = watch(this.o.recordsDir, () => this.kernel.request());
    this.watcher.on('error', (err) =>
      this.o.log.warn('watching the endpoint records failed; relying on resyncs', { dir: this.o.recordsDir, error: err.message }),
    );
    this.kernel.start();
  }

  stop(): void {
    this.watcher?.close();
    this.kernel.stop();
  }
}
