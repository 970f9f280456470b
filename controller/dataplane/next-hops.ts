import type { UnderlayRoute } from '../reconcile/underlay.js';
import { ipJson } from '../netlink/ip.js';
import { KernelWatch } from '../netlink/kernel-watch.js';
import type { Logger } from '../util/log.js';
import { DatapathMaps } from './datapath-maps.js';
import { lookUpUnderlayRoutes } from './direct-routes.js';

/*
 * twill_next_hops: the MAC the programs address each peer's packets to on the underlay, so they
 * write the Ethernet header and bpf_redirect() instead of asking the kernel's route and
 * neighbour tables per packet (bpf_redirect_neigh). The kernel stays the authority: an entry is
 * copied from its neighbour table while the kernel holds that MAC as confirmed or is confirming
 * it, and removed when it is not (STALE after its reachable time, FAILED, gone). Packets that
 * bypass the neighbour entry never make the kernel verify it again; the packets of a peer without
 * an entry go through bpf_redirect_neigh(), whose use of a STALE entry is what starts the
 * verification (DELAY, then a probe). A peer that changed its MAC is found by that probe, or
 * sooner by its own ARP request (a MAC change flushes its neighbours), as for any other sender.
 * IPv6 peers (twill_next_hops6) follow the same rules through the kernel's IPv6 neighbour table
 * (neighbour discovery in place of ARP).
 */

/** A kernel neighbour entry, as `ip -j neigh show` prints it. */
export interface NeighbourRow {
  dst: string;
  dev?: string;
  lladdr?: string;
  state?: string[];
}

/**
 * States whose MAC is confirmed (REACHABLE), under verification that runs without more packets
 * (DELAY, PROBE), or given (PERMANENT, NOARP). Not STALE: nothing verifies a STALE entry until
 * a packet uses it.
 */
const USABLE = new Set(['REACHABLE', 'DELAY', 'PROBE', 'PERMANENT', 'NOARP']);

/**
 * Pure: per peer PublicIP, the MAC of its next hop (the peer itself when on-link, its gateway when
 * routed), for the peers whose route leaves by `underlayDev` and whose next hop's neighbour entry
 * there is usable. Any other peer is left to bpf_redirect_neigh().
 */
export function planNextHops(
  peers: Iterable<string>,
  routes: ReadonlyMap<string, UnderlayRoute>,
  neighbours: readonly NeighbourRow[],
  underlayDev: string,
): Map<string, string> {
  const usable = new Map(
    neighbours
      .filter((n) => (n.dev === undefined || n.dev === underlayDev) && n.lladdr && n.state?.some((s) => USABLE.has(s)))
      .map((n) => [n.dst, n.lladdr!.toLowerCase()]),
  );
  const out = new Map<string, string>();
  for (const peer of peers) {
    const route = routes.get(peer);
    if (!route || route.kind === 'unreachable' || route.dev !== underlayDev) continue;
    const mac = usable.get(route.kind === 'routed' ? route.gateway : peer);
    if (mac) out.set(peer, mac);
  }
  return out;
}

/** How soon after an entry left the map (STALE) its neighbour is looked at again. */
const STALE_RECHECK_MS = 500;

export interface NextHopState {
  nextHops: number;
  syncs: number;
  errors: number;
  lastError?: string;
}

/**
 * Keeps twill_next_hops and twill_next_hops6 equal to planNextHops() over the peers in
 * twill_subnets and twill_subnets6: at start, on every neighbour or route change (`ip monitor
 * neigh route`) and every resyncMs. A new peer needs no call of its own: its first packets
 * resolve its neighbour entry, and that is an event.
 */
export class NextHopSync {
  private readonly kernel: KernelWatch;
  /** each peer's last next-hop MAC, kept while its entry is away (STALE), to log a real change */
  private readonly lastMac = new Map<string, string>();
  readonly state: NextHopState = { nextHops: 0, syncs: 0, errors: 0 };

  constructor(private readonly o: { pinDir: string; underlayDev: string; log: Logger; resyncMs?: number }) {
    this.kernel = new KernelWatch({ work: () => this.once(), monitor: ['neigh', 'route'], resyncMs: o.resyncMs ?? 30_000, debounceMs: 200, log: o.log });
  }

  sync(): Promise<void> {
    return this.kernel.run();
  }

  private async once(): Promise<void> {
    try {
      const maps = DatapathMaps.open(this.o.pinDir);
      try {
        // Both families' peers; `ip neigh show` lists both families' neighbours.
        const publicIps = maps.families.flatMap((f) => [...f.readSubnets().values()].map((r) => r.public_ip));
        const peers = new Set(publicIps.filter((ip) => ip !== '0.0.0.0' && ip !== '::'));
        const [routes, neighbours] = await Promise.all([
          lookUpUnderlayRoutes([...peers]),
          ipJson<NeighbourRow[]>(['neigh', 'show', 'dev', this.o.underlayDev]),
        ]);
        const desired = planNextHops(peers, routes, neighbours, this.o.underlayDev);
        const changed = maps.syncNextHops(desired);
        // An entry comes and goes with its neighbour's reachable time: only a new MAC is news.
        for (const ip of changed.written) {
          const from = this.lastMac.get(ip);
          if (from && from !== desired.get(ip)) this.o.log.info("a peer's underlay next hop has a new MAC", { peer: ip, from, to: desired.get(ip) });
          this.lastMac.set(ip, desired.get(ip)!);
        }
        for (const ip of this.lastMac.keys()) if (!peers.has(ip)) this.lastMac.delete(ip);
        // The kernel reports a neighbour going STALE, but not the next packet moving it on to
        // DELAY: looked at once more a moment later, a peer with traffic is back in the map then,
        // not only once its verification ends (REACHABLE, up to the delay_first_probe_time later).
        if (changed.removed.some((ip) => peers.has(ip))) setTimeout(() => this.kernel.request(), STALE_RECHECK_MS).unref();
        if (changed.written.length || changed.removed.length) this.o.log.debug('next hops synced', { written: changed.written, removed: changed.removed });
        Object.assign(this.state, { nextHops: desired.size, lastError: undefined });
        this.state.syncs++;
      } finally {
        maps.close();
      }
    } catch (err) {
      this.state.errors++;
      this.state.lastError = (err as Error).message;
      this.o.log.error('next hop sync failed; retried on the next event or resync', { pinDir: this.o.pinDir, error: (err as Error).message });
    }
  }

  start(): void {
    this.kernel.start();
  }

  stop(): void {
    this.kernel.stop();
  }
}
