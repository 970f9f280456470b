import type { BackendType } from '../config/network-config.js';
import { formatCidr } from '../net/ipv4.js';
import { formatCidr6 } from '../net/ipv6.js';
import { leaseKey, NO_PUBLIC_IP, sameLease, type Lease } from '../subnet/lease.js';
import type { LeaseChange } from '../subnet/watcher.js';
import type { Logger } from '../util/log.js';
import { DesiredState, desiredMaps, type DesiredMaps, type MapChanges, type NodeLease } from './desired.js';
import { hostGwRefusal, type UnderlayRoute } from './underlay.js';

/** What one sync or apply changed in a datapath. */
export interface SyncResult {
  subnetsAdded: number;
  subnetsRemoved: number;
  peersAdded: number;
  peersRemoved: number;
}

/**
 * What the reconciler drives: the BPF maps, or flannel's kernel VXLAN state. Declared here, and
 * implemented in controller/dataplane, so the flow runs one way: desired state -> reconciler ->
 * datapath.
 */
export interface Datapath {
  /** Brings the datapath to `desired` by difference with its live state, read back. */
  sync(desired: DesiredMaps): SyncResult | Promise<SyncResult>;
  /** Writes entry-level changes, trusting that the datapath holds what the last sync or apply wrote. */
  apply?(changes: MapChanges): SyncResult | Promise<SyncResult>;
}

/** Which leases this node can carry, and how: from the network config, plus the underlay's routes. */
export interface LeasePolicy {
  backend: BackendType;
  vni: number;
  /** VXLAN's DirectRouting: peers on our L2 segment are routed directly */
  directRouting: boolean;
  /** How this node reaches these PublicIPs (the kernel's `ip route get`); needed by host-gw and DirectRouting. */
  underlay?: (publicIps: string[]) => Promise<Map<string, UnderlayRoute>>;
  /** the config's EnableIPv4 and EnableIPv6 (absent: IPv4 only) */
  families?: { ipv4: boolean; ipv6: boolean };
}

/** Who we are, per address family: our own lease and address are never programmed as a peer. */
interface SelfIdentity {
  subnet: string;
  publicIp: string;
  /** with IPv6 enabled: our lease's IPv6 subnet and our PublicIPv6 */
  subnet6?: string;
  publicIpv6?: string;
}

/** A datapath that carries nothing: the IPv4 side of an IPv6-only network. */
export const noDatapath: Datapath = { sync: () => ({ subnetsAdded: 0, subnetsRemoved: 0, peersAdded: 0, peersRemoved: 0 }) };

/** How often the live state is read back and diffed in full, to repair drift made behind our back. */
const FULL_SYNC_INTERVAL_MS = 60_000;
/** Up to this many peer changes in one write get a line each; a start or a mass change gets one summary. */
const PEER_LINES_MAX = 10;

type PeerEvent = { change: 'added' | 'changed' | 'removed'; subnet: string; publicIp: string };

/** The info lines an operator follows peers by: one per peer for a few, a summary for many. */
function peerLines(events: readonly PeerEvent[]): { msg: string; fields: Record<string, unknown> }[] {
  if (events.length <= PEER_LINES_MAX) return events.map(({ change, subnet, publicIp }) => ({ msg: `peer ${change}`, fields: { subnet, publicIp } }));
  const count = (c: PeerEvent['change']) => events.filter((e) => e.change === c).length;
  return [{ msg: 'peers changed', fields: { added: count('added'), changed: count('changed'), removed: count('removed') } }];
}

/**
 * Turns the lease set into map contents. Changes that arrive together are applied together
 * (one sync per event-loop turn); each sync writes only the difference, so restarting the agent
 * against populated maps touches nothing that is already right. The desired state is kept lease
 * by lease (DesiredState), and between full syncs only the entries a change touches are written:
 * with 10,000 leases a full sync (read back both maps, diff) takes hundreds of milliseconds, and
 * a single lease change must land in a few. A full sync runs first, after a failure or a new
 * datapath, and once a minute to repair drift made behind our back.
 */
export class Reconciler {
  count = 0;
  errors = 0;
  lastDurationMs = 0;
  /** over every attempt, failed ones included (for the /metrics summary) */
  totalDurationMs = 0;
  lastResult?: SyncResult;
  private pending?: ReadonlyMap<string, Lease>;
  private pendingAll = false;
  private pendingKeys = new Set<string>();
  private running?: Promise<void>;
  private readonly warned = new Set<string>();
  /** the desired state and the lease objects it was built from, with the underlay route each was judged by */
  private state?: DesiredState;
  private seen = new Map<string, { lease: Lease; route?: UnderlayRoute['kind'] }>();
  private peerEvents: PeerEvent[] = [];
  /** per PublicIP, refreshed for all at every full sync (the underlay may change under us) */
  private routes = new Map<string, UnderlayRoute>();
  /** whether the datapath holds exactly what `state` says (false until a sync completes) */
  private trusted = false;
  private lastFullSync = 0;
  /** the IPv6 side: its own datapath (flannel-v6.<VNI>), given the whole IPv6 state whenever it changes */
  private datapath6?: Datapath;
  private last6?: string;
  /** the IPv6 state last written, for status */
  desired6?: DesiredMaps;

  constructor(
    /** none yet: updates wait for setDatapath() */
    private datapath: Datapath | undefined,
    private self: SelfIdentity,
    private readonly policy: LeasePolicy,
    private readonly log: Logger,
  ) {}

  private get needsRoutes(): boolean {
    return this.policy.underlay !== undefined && (this.policy.backend === 'host-gw' || this.policy.directRouting);
  }

  /** Looks up the underlay route of these PublicIPs (all of them again when `refresh`), where the policy needs it. */
  private async learnRoutes(leases: Iterable<Lease>, refresh: boolean): Promise<void> {
    if (!this.needsRoutes) return;
    const ips = new Set<string>();
    const ipv6 = this.policy.families?.ipv6 ?? false;
    for (const l of leases) {
      if (refresh || !this.routes.has(l.publicIp)) ips.add(l.publicIp);
      if (ipv6 && l.publicIpv6 && (refresh || !this.routes.has(l.publicIpv6))) ips.add(l.publicIpv6);
    }
    ips.delete(NO_PUBLIC_IP);
    if (refresh) this.routes = new Map();
    for (const [ip, r] of await this.policy.underlay!([...ips])) this.routes.set(ip, r);
  }

  setSelf(self: SelfIdentity): void {
    this.self = self;
    this.state = undefined;
    this.last6 = undefined;
  }

  /** `datapath6` carries the IPv6 leases when the network has IPv6. */
  setDatapath(datapath: Datapath, datapath6?: Datapath): void {
    this.datapath = datapath;
    this.datapath6 = datapath6;
    this.last6 = undefined;
    this.trusted = false;
    this.kick();
  }

  private get ipv4(): boolean {
    return this.policy.families?.ipv4 ?? true;
  }

  /**
   * Applies are serialized; updates arriving meanwhile are folded into the next one. With the
   * watcher's `change`, only the leases it names are compared; without, the whole set is.
   */
  update(leases: ReadonlyMap<string, Lease>, change?: LeaseChange): void {
    this.pending = leases;
    if (!change) this.pendingAll = true;
    else if (!this.pendingAll) for (const l of [...change.added, ...change.changed, ...change.removed]) this.pendingKeys.add(leaseKey(l));
    this.kick();
  }

  private kick(): void {
    if (!this.datapath) return; // held until setDatapath()
    this.running ??= (async () => {
      await new Promise((r) => setImmediate(r));
      while (this.pending) {
        const next = this.pending;
        const keys = this.pendingAll ? undefined : this.pendingKeys;
        this.pending = undefined;
        this.pendingAll = false;
        this.pendingKeys = new Set();
        await this.apply(next, keys);
      }
      this.running = undefined;
    })();
  }

  /** Resolves once everything passed to update() so far is in the datapath. */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  /** The desired datapath state for a lease set, as the next sync would write it. */
  async desired(leases: Iterable<Lease>): Promise<DesiredMaps> {
    const list = [...leases];
    await this.learnRoutes(list, false);
    const desired = desiredMaps(this.self, this.usable(list));
    for (const s of desired.skipped) this.log.warn('ignoring conflicting lease', { subnet: s.lease.subnet, publicIp: s.lease.publicIp, reason: s.reason });
    return desired;
  }

  private usable(leases: Iterable<Lease>): NodeLease[] {
    const out: NodeLease[] = [];
    for (const l of leases) {
      const n = this.usableOne(l);
      if (n) out.push(n);
    }
    return out;
  }

  /** The lease as the datapath carries it, or undefined (logged once per reason) when it cannot. */
  private usableOne(l: Lease): NodeLease | undefined {
    if (!this.ipv4) return undefined; // an IPv6-only network: every lease's IPv4 part is empty
    const subnet = formatCidr(l.subnet);
    const { backend, vni } = this.policy;
    const route = this.routes.get(l.publicIp);
    // flannel's backends each ignore the others' leases ("Ignoring non-host-gw subnet").
    let skip: string | undefined;
    if (l.backendType !== backend) skip = `backend type ${JSON.stringify(l.backendType)} is not ${backend}`;
    else if (backend === 'host-gw') skip = hostGwRefusal(subnet, l.publicIp, route); // our own address answers as local: direct
    else if (!l.vtepMac) skip = 'no VtepMAC';
    else if (l.vni !== undefined && l.vni !== vni) skip = `VNI ${l.vni} differs from ours (${vni})`;
    if (!skip) {
      const direct = backend === 'host-gw' || (this.policy.directRouting && route?.kind === 'direct');
      return { subnet, publicIp: l.publicIp, vtepMac: l.vtepMac, direct, createRevision: l.createRevision };
    }
    this.warnOnce(subnet, l.publicIp, skip);
    return undefined;
  }

  private warnOnce(subnet: string, publicIp: string, reason: string): void {
    if (!this.warned.has(`${subnet} ${reason}`)) this.log.warn('ignoring lease', { subnet, publicIp, reason });
    this.warned.add(`${subnet} ${reason}`);
  }

  /**
   * The IPv6 side of a lease, as flannel's backends carry it: vxlan on flannel-v6.<VNI> (its IPv6
   * subnet, PublicIPv6 and BackendV6Data's VtepMAC) or, with DirectRouting and the PublicIPv6 on
   * our segment, by a direct route, as host-gw always does; undefined (logged once) when it
   * cannot be carried.
   */
  private usable6(l: Lease): NodeLease | undefined {
    if (!l.subnet6) return undefined; // an IPv4-only lease in a dual-stack network: flannel skips its IPv6 side too
    const subnet = formatCidr6(l.subnet6);
    const { backend, vni } = this.policy;
    const route = l.publicIpv6 ? this.routes.get(l.publicIpv6) : undefined;
    let skip: string | undefined;
    if (l.backendType !== backend) skip = `backend type ${JSON.stringify(l.backendType)} is not ${backend}`;
    else if (!l.publicIpv6) skip = 'no PublicIPv6';
    else if (backend === 'host-gw') skip = hostGwRefusal(subnet, l.publicIpv6, route);
    else if (!l.vtepMac6) skip = 'no IPv6 VtepMAC (BackendV6Data)';
    else if (l.vni !== undefined && l.vni !== vni) skip = `VNI ${l.vni} differs from ours (${vni})`;
    if (!skip) {
      const direct = backend === 'host-gw' || (this.policy.directRouting && route?.kind === 'direct');
      return { subnet, publicIp: l.publicIpv6!, vtepMac: l.vtepMac6, direct, createRevision: l.createRevision };
    }
    this.warnOnce(subnet, l.publicIpv6 ?? '', skip);
    return undefined;
  }

  /** Writes the IPv6 state when it changed (or on a full sync); returns what that changed. */
  private async apply6(leases: ReadonlyMap<string, Lease>, full: boolean): Promise<SyncResult | undefined> {
    if (!this.datapath6 || !this.self.subnet6 || !this.self.publicIpv6) return undefined;
    const leases6: NodeLease[] = [];
    const publicIpOf = new Map<string, string>();
    for (const l of leases.values()) {
      const n = this.usable6(l);
      if (!n) continue;
      leases6.push(n);
      if (l.publicIp !== NO_PUBLIC_IP) publicIpOf.set(n.publicIp, l.publicIp);
    }
    const maps6 = desiredMaps({ subnet: this.self.subnet6, publicIp: this.self.publicIpv6 }, leases6);
    const counterPeers = new Map([...maps6.peers.keys()].flatMap((ip6) => (publicIpOf.has(ip6) ? [[ip6, publicIpOf.get(ip6)!] as const] : [])));
    const desired = { ...maps6, counterPeers };
    // A peer's counter slot follows its IPv4 entries, which this pass may just have (re)assigned.
    const key = JSON.stringify([[...desired.subnets], [...counterPeers]]);
    if (!full && key === this.last6) return undefined;
    for (const s of desired.skipped) this.warnOnce(s.lease.subnet, s.lease.publicIp, s.reason);
    const result = await this.datapath6.sync(desired);
    this.last6 = key;
    this.desired6 = desired;
    return result;
  }

  /** The leases that differ from the last apply (among `keys` if given), as DesiredState changes; `seen` follows. */
  private leaseChanges(leases: ReadonlyMap<string, Lease>, keys?: ReadonlySet<string>): [string, NodeLease | undefined][] {
    const changes: [string, NodeLease | undefined][] = [];
    const check = (key: string) => {
      const l = leases.get(key);
      const before = this.seen.get(key);
      if (l) {
        const route = this.routes.get(l.publicIp)?.kind;
        if (before && (before.lease === l || sameLease(before.lease, l)) && before.route === route) return;
        this.seen.set(key, { lease: l, route });
        changes.push([formatCidr(l.subnet), this.usableOne(l)]);
        this.peerEvents.push({ change: before ? 'changed' : 'added', subnet: formatCidr(l.subnet), publicIp: l.publicIp });
      } else if (before) {
        this.seen.delete(key);
        changes.push([formatCidr(before.lease.subnet), undefined]);
        this.peerEvents.push({ change: 'removed', subnet: formatCidr(before.lease.subnet), publicIp: before.lease.publicIp });
      }
    };
    if (keys) for (const key of keys) check(key);
    else for (const key of new Set([...leases.keys(), ...this.seen.keys()])) check(key);
    return changes;
  }

  private async apply(leases: ReadonlyMap<string, Lease>, keys?: ReadonlySet<string>): Promise<void> {
    const started = performance.now();
    try {
      if (!this.state) {
        this.state = new DesiredState(this.self);
        this.seen = new Map();
        this.peerEvents = [];
        this.trusted = false;
        keys = undefined;
      }
      const state = this.state;
      const datapath = this.datapath!;
      const full = !this.trusted || !datapath.apply || started - this.lastFullSync >= FULL_SYNC_INTERVAL_MS;
      // A full sync looks every lease's route up again: a peer may have moved on or off our segment.
      if (full && this.needsRoutes) keys = undefined;
      await this.learnRoutes(keys ? [...keys].flatMap((k) => leases.get(k) ?? []) : leases.values(), full);
      const leaseChanges = this.leaseChanges(leases, keys);
      const changes = state.update(leaseChanges);
      for (const [cidr, lease] of leaseChanges) {
        const why = lease && state.whySkipped(cidr);
        if (why) this.log.warn('ignoring conflicting lease', { subnet: cidr, publicIp: lease.publicIp, reason: why });
      }
      this.trusted = false; // until this write is known to have completed
      this.lastResult = full ? await datapath.sync(state.snapshot()) : await datapath.apply!(changes);
      const r6 = await this.apply6(leases, full);
      if (r6) this.lastResult = addResults(this.lastResult, r6);
      this.trusted = true;
      if (full) this.lastFullSync = started;
      this.count++;
      const r = this.lastResult;
      for (const line of peerLines(this.peerEvents.filter((e) => e.subnet !== this.self.subnet))) this.log.info(line.msg, line.fields);
      this.peerEvents = [];
      if (r.subnetsAdded + r.subnetsRemoved + r.peersAdded + r.peersRemoved) this.log.info('datapath updated', { ...r, peers: state.peers.size, ...(this.desired6 ? { peers6: this.desired6.subnets.size } : {}), full, ms: Math.round(performance.now() - started) });
    } catch (err) {
      this.errors++;
      this.log.error('reconcile failed; will retry with the next change or resync', { error: (err as Error).message });
      setTimeout(() => this.update(leases), 1000).unref();
    } finally {
      this.lastDurationMs = performance.now() - started;
      this.totalDurationMs += this.lastDurationMs;
    }
  }
}

function addResults(a: SyncResult, b: SyncResult): SyncResult {
  return { ...a, subnetsAdded: a.subnetsAdded + b.subnetsAdded, subnetsRemoved: a.subnetsRemoved + b.subnetsRemoved, peersAdded: a.peersAdded + b.peersAdded, peersRemoved: a.peersRemoved + b.peersRemoved };
}
