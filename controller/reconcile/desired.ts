import { REMOTE_DIRECT, type Peer, type Remote } from '../../maps/layout.js';

/**
 * Pure: which entries the datapath maps must hold, given who we are and the leases we know.
 * Used by the lab (leases it made itself) and by the agent (leases from etcd) alike.
 */
export interface NodeLease {
  /** CIDR, e.g. 10.244.2.0/24 */
  subnet: string;
  publicIp: string;
  /** absent for a host-gw lease, which has no VTEP */
  vtepMac?: string;
  /** the peer shares our L2 segment and is routed to directly (host-gw, VXLAN DirectRouting), not through VXLAN */
  direct?: boolean;
  /** etcd's create revision of the record, when it came from etcd: the older claim to a PublicIP wins */
  createRevision?: string;
  /**
   * An IPv6 lease's IPv4 PublicIP, when it has one: its IPv6 entries count in the per-peer
   * counter slot of its IPv4 entries (one node, one row of counters, both families)
   */
  counterPeer?: string;
}

/**
 * Of two leases naming one PublicIP, the one that keeps it: the older record (lower etcd create
 * revision: a stray record written later cannot take a live node's address over), then the
 * smaller subnet. The same answer on every node, since revisions are etcd's.
 */
function claimsFirst(a: NodeLease, b: NodeLease): boolean {
  const ra = BigInt(a.createRevision || '0');
  const rb = BigInt(b.createRevision || '0');
  return ra !== rb ? ra < rb : a.subnet < b.subnet;
}

/** Counter slots are the BPF datapath's bookkeeping (see stats-slots.ts), not part of the lease set. */
export type DesiredRemote = Omit<Remote, 'stats_slot'>;
export type DesiredPeer = Omit<Peer, 'stats_slot'>;

const NO_VTEP = '00:00:00:00:00:00';

/** The twill_subnets entry of a lease. */
function remoteOf(lease: NodeLease): DesiredRemote {
  return { public_ip: lease.publicIp, vtep_mac: (lease.vtepMac ?? NO_VTEP).toLowerCase(), flags: lease.direct ? REMOTE_DIRECT : 0 };
}

/** The twill_peers entry of a lease. */
function peerOf(lease: NodeLease): DesiredPeer {
  const [base, len] = lease.subnet.split('/');
  return { subnet: base, vtep_mac: (lease.vtepMac ?? NO_VTEP).toLowerCase(), subnet_len: Number(len), flags: 0 };
}

/** Whether a desired remote is routed directly rather than through VXLAN. */
export const isDirect = (r: Pick<DesiredRemote, 'flags'>) => (r.flags & REMOTE_DIRECT) !== 0;

export interface DesiredMaps {
  /** subnet base address -> remote VTEP */
  subnets: Map<string, DesiredRemote>;
  /** PublicIP -> peer */
  peers: Map<string, DesiredPeer>;
  /** leases left out, with why (own lease, conflicts) */
  skipped: { lease: NodeLease; reason: string }[];
  /** peer -> its lease's counterPeer, for the peers whose lease names one (NodeLease.counterPeer) */
  counterPeers?: ReadonlyMap<string, string>;
}

export function desiredMaps(self: { subnet: string; publicIp: string }, leases: readonly NodeLease[]): DesiredMaps {
  const subnets = new Map<string, DesiredRemote>();
  const peers = new Map<string, DesiredPeer>();
  const skipped: DesiredMaps['skipped'] = [];
  const counterPeers = new Map<string, string>();
  // Who holds each PublicIP, decided first; then leases in subnet order, so that of two sharing a
  // base address the later one wins, the same way on every node and every run.
  const holder = new Map<string, NodeLease>();
  for (const lease of leases) {
    if (lease.subnet === self.subnet || lease.publicIp === self.publicIp) continue;
    const h = holder.get(lease.publicIp);
    if (!h || claimsFirst(lease, h)) holder.set(lease.publicIp, lease);
  }
  const ordered = [...leases].sort((a, b) => (a.subnet < b.subnet ? -1 : a.subnet > b.subnet ? 1 : 0));
  for (const lease of ordered) {
    const base = baseOf(lease.subnet);
    if (lease.subnet === self.subnet) {
      if (lease.publicIp !== self.publicIp) skipped.push({ lease, reason: `claims our subnet ${self.subnet}` });
      continue;
    }
    if (lease.publicIp === self.publicIp) {
      skipped.push({ lease, reason: `has our PublicIP ${self.publicIp} but not our subnet` });
      continue;
    }
    const owner = holder.get(lease.publicIp)!;
    if (owner !== lease) {
      skipped.push({ lease, reason: `PublicIP ${lease.publicIp} already holds ${owner.subnet}` });
      continue;
    }
    subnets.set(base, remoteOf(lease));
    peers.set(lease.publicIp, peerOf(lease));
    if (lease.counterPeer !== undefined) counterPeers.set(lease.publicIp, lease.counterPeer);
  }
  return { subnets, peers, skipped, counterPeers };
}

/** Entry-level changes to both maps. */
export interface MapChanges {
  subnets: MapDiff<DesiredRemote>;
  peers: MapDiff<DesiredPeer>;
  /** every peer's counterPeer as of these changes (DesiredMaps.counterPeers) */
  counterPeers?: ReadonlyMap<string, string>;
}

const baseOf = (cidr: string) => cidr.slice(0, cidr.indexOf('/'));

/**
 * The same desired state as desiredMaps(), kept up to date lease by lease: a change costs work
 * for the subnets and PublicIPs it touches, not for the whole lease set (10,000 leases must not
 * make one lease event slow). Conflicts resolve exactly as desiredMaps() resolves them: per
 * PublicIP the first claim wins (claimsFirst); of eligible leases sharing a base address, the
 * largest subnet.
 */
export class DesiredState {
  readonly subnets = new Map<string, DesiredRemote>();
  readonly peers = new Map<string, DesiredPeer>();
  readonly counterPeers = new Map<string, string>();
  private readonly leases = new Map<string, NodeLease>();
  private readonly byIp = new Map<string, Set<string>>();
  private readonly byBase = new Map<string, Set<string>>();

  constructor(readonly self: { subnet: string; publicIp: string }) {}

  /** Applies lease changes (undefined: the lease is gone) and returns what that changes in the maps. */
  update(changes: Iterable<readonly [cidr: string, lease: NodeLease | undefined]>): MapChanges {
    const ips = new Set<string>();
    const bases = new Set<string>();
    for (const [cidr, lease] of changes) {
      const old = this.leases.get(cidr);
      if (old) {
        this.unindex(this.byIp, old.publicIp, cidr);
        this.unindex(this.byBase, baseOf(cidr), cidr);
        this.leases.delete(cidr);
        ips.add(old.publicIp);
      }
      if (lease) {
        this.leases.set(cidr, lease);
        this.index(this.byIp, lease.publicIp, cidr);
        this.index(this.byBase, baseOf(cidr), cidr);
        ips.add(lease.publicIp);
      }
      bases.add(baseOf(cidr));
    }
    const out: MapChanges = { subnets: { upsert: [], remove: [] }, peers: { upsert: [], remove: [] }, counterPeers: this.counterPeers };
    for (const ip of ips) {
      const before = this.peers.get(ip);
      if (before) bases.add(before.subnet);
      const winner = this.ipWinner(ip);
      const lease = winner && this.leases.get(winner)!;
      if (winner) bases.add(baseOf(winner));
      record(this.peers, out.peers, ip, before, lease && peerOf(lease));
      if (lease && lease.counterPeer !== undefined) this.counterPeers.set(ip, lease.counterPeer);
      else this.counterPeers.delete(ip);
    }
    for (const base of bases) {
      let winner: string | undefined;
      for (const cidr of this.byBase.get(base) ?? []) if (this.eligible(cidr) && (winner === undefined || cidr > winner)) winner = cidr;
      const lease = winner && this.leases.get(winner)!;
      record(this.subnets, out.subnets, base, this.subnets.get(base), lease && remoteOf(lease));
    }
    return out;
  }

  snapshot(): DesiredMaps {
    return { subnets: new Map(this.subnets), peers: new Map(this.peers), skipped: [], counterPeers: new Map(this.counterPeers) };
  }

  /** Why a lease we hold is not in the maps, as desiredMaps() would say it; undefined if it is, or is our own. */
  whySkipped(cidr: string): string | undefined {
    const lease = this.leases.get(cidr);
    if (!lease) return undefined;
    if (cidr === this.self.subnet) return lease.publicIp === this.self.publicIp ? undefined : `claims our subnet ${this.self.subnet}`;
    if (lease.publicIp === this.self.publicIp) return `has our PublicIP ${this.self.publicIp} but not our subnet`;
    const winner = this.ipWinner(lease.publicIp);
    return winner === cidr ? undefined : `PublicIP ${lease.publicIp} already holds ${winner}`;
  }

  /** The lease that holds this PublicIP: our own address and our own subnet never count. */
  private ipWinner(ip: string): string | undefined {
    if (ip === this.self.publicIp) return undefined;
    let first: NodeLease | undefined;
    for (const c of this.byIp.get(ip) ?? []) {
      const lease = this.leases.get(c)!;
      if (c !== this.self.subnet && (first === undefined || claimsFirst(lease, first))) first = lease;
    }
    return first?.subnet;
  }

  private eligible(cidr: string): boolean {
    const lease = this.leases.get(cidr)!;
    return cidr !== this.self.subnet && this.ipWinner(lease.publicIp) === cidr;
  }

  private index(m: Map<string, Set<string>>, k: string, cidr: string): void {
    let set = m.get(k);
    if (!set) m.set(k, (set = new Set()));
    set.add(cidr);
  }

  private unindex(m: Map<string, Set<string>>, k: string, cidr: string): void {
    const set = m.get(k);
    set?.delete(cidr);
    if (set?.size === 0) m.delete(k);
  }
}

function record<V>(map: Map<string, V>, diff: MapDiff<V>, key: string, before: V | undefined, after: V | undefined): void {
  if (after === undefined) {
    if (before !== undefined) {
      map.delete(key);
      diff.remove.push(key);
    }
  } else if (before === undefined || !shallowEqual(before, after)) {
    map.set(key, after);
    diff.upsert.push([key, after]);
  }
}

export interface MapDiff<V> {
  upsert: [string, V][];
  remove: string[];
}

/** Only the difference: entries already right are not rewritten, stale ones are removed. */
export function diffMap<V>(current: ReadonlyMap<string, V>, desired: ReadonlyMap<string, V>): MapDiff<V> {
  const upsert: [string, V][] = [];
  const remove: string[] = [];
  for (const [k, v] of desired) {
    const have = current.get(k);
    if (have === undefined || !shallowEqual(have, v)) upsert.push([k, v]);
  }
  for (const k of current.keys()) if (!desired.has(k)) remove.push(k);
  return { upsert, remove };
}

function shallowEqual(a: unknown, b: unknown): boolean {
  const ka = Object.keys(a as object);
  if (ka.length !== Object.keys(b as object).length) return false;
  return ka.every((k) => (a as Record<string, unknown>)[k] === (b as Record<string, unknown>)[k]);
}
