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
export interface SelfIdentity {
  subnet: string;
  publicIp: string;
  /** with IPv6 enabled: our lease's IPv6 subnet and our PublicIPv6 */
  subnet6?: string;
  publicIpv6?: string;
}

type IpFamily = 4 | 6;

/** What carries each family's leases: IPv4's datapath, and IPv6's when the network has IPv6. */
export interface Datapaths {
  ipv4: Datapath;
  ipv6?: Datapath;
}

export interface ReconcilerOptions {
  self: SelfIdentity;
  policy: LeasePolicy;
  log: Logger;
  /** none yet: updates wait for setDatapaths() */
  datapaths?: Datapaths;
}

/**
 * One family's share of the work: its datapath, who we are in it, the desired state kept lease
 * by lease, and each lease as last seen with the underlay route it was judged by.
 */
interface FamilyLane {
  family: IpFamily;
  datapath: Datapath;
  self: { subnet: string; publicIp: string };
  state: DesiredState;
  seen: Map<string, { lease: Lease; route?: UnderlayRoute['kind'] }>;
}

/** A datapath that carries nothing: the IPv4 side of an IPv6-only network. */
const NOTHING: SyncResult = { subnetsAdded: 0, subnetsRemoved: 0, peersAdded: 0, peersRemoved: 0 };
export const noDatapath: Datapath = { sync: () => NOTHING, apply: () => NOTHING };

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
  private self: SelfIdentity;
  private readonly policy: LeasePolicy;
  private readonly log: Logger;
  private datapaths?: Datapaths;
  /** per family, built afresh (empty state, full sync) after setSelf() or setDatapaths() */
  private lanes?: FamilyLane[];
  private peerEvents: PeerEvent[] = [];
  /** per PublicIP, refreshed for all at every full sync (the underlay may change under us) */
  private routes = new Map<string, UnderlayRoute>();
  /** whether the datapaths hold exactly what the lanes' states say (false until a sync completes) */
  private trusted = false;
  private lastFullSync = 0;

  constructor(o: ReconcilerOptions) {
    this.self = o.self;
    this.policy = o.policy;
    this.log = o.log;
    this.datapaths = o.datapaths;
  }

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
    this.lanes = undefined;
  }

  setDatapaths(datapaths: Datapaths): void {
    this.datapaths = datapaths;
    this.lanes = undefined;
    this.kick();
  }

  private get ipv4(): boolean {
    return this.policy.families?.ipv4 ?? true;
  }

  /** IPv4's lane, and IPv6's when there is an IPv6 datapath and we have an IPv6 identity. */
  private makeLanes(datapaths: Datapaths): FamilyLane[] {
    const lane = (family: IpFamily, datapath: Datapath, self: FamilyLane['self']): FamilyLane => ({
      family,
      datapath,
      self,
      state: new DesiredState(self),
      seen: new Map(),
    });
    const { subnet6, publicIpv6 } = this.self;
    return [
      lane(4, datapaths.ipv4, { subnet: this.self.subnet, publicIp: this.self.publicIp }),
      ...(datapaths.ipv6 && subnet6 && publicIpv6 ? [lane(6, datapaths.ipv6, { subnet: subnet6, publicIp: publicIpv6 })] : []),
    ];
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
    if (!this.datapaths) return; // held until setDatapaths()
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

  /** The desired IPv4 datapath state for a lease set, as the next sync would write it. */
  async desired(leases: Iterable<Lease>): Promise<DesiredMaps> {
    const list = [...leases];
    await this.learnRoutes(list, false);
    const desired = desiredMaps(
      this.self,
      list.flatMap((l) => this.usable(l, 4) ?? []),
    );
    for (const s of desired.skipped) this.log.warn('ignoring conflicting lease', { subnet: s.lease.subnet, publicIp: s.lease.publicIp, reason: s.reason });
    return desired;
  }

  /**
   * One family's side of a lease as the datapath carries it, or undefined (logged once per
   * reason) when it cannot: vxlan (the family's subnet, PublicIP and VtepMAC) or, with
   * DirectRouting and the PublicIP on our segment, a direct route, as host-gw always does. The
   * IPv6 side is flannel's: its IPv6 subnet, PublicIPv6 and BackendV6Data's VtepMAC.
   */
  private usable(l: Lease, family: IpFamily): NodeLease | undefined {
    if (family === 4 && !this.ipv4) return undefined; // an IPv6-only network: every lease's IPv4 part is empty
    // An IPv4-only lease in a dual-stack network: flannel skips its IPv6 side too.
    const side =
      family === 4
        ? { subnet: formatCidr(l.subnet), publicIp: l.publicIp, vtepMac: l.vtepMac, noVtep: 'no VtepMAC' }
        : l.subnet6 && { subnet: formatCidr6(l.subnet6), publicIp: l.publicIpv6, vtepMac: l.vtepMac6, noVtep: 'no IPv6 VtepMAC (BackendV6Data)' };
    if (!side) return undefined;
    const { backend, vni } = this.policy;
    const route = side.publicIp ? this.routes.get(side.publicIp) : undefined;
    // flannel's backends each ignore the others' leases ("Ignoring non-host-gw subnet").
    let skip: string | undefined;
    if (l.backendType !== backend) skip = `backend type ${JSON.stringify(l.backendType)} is not ${backend}`;
    else if (!side.publicIp) skip = 'no PublicIPv6';
    else if (backend === 'host-gw')
      skip = hostGwRefusal(side.subnet, side.publicIp, route); // our own address answers as local: direct
    else if (!side.vtepMac) skip = side.noVtep;
    else if (l.vni !== undefined && l.vni !== vni) skip = `VNI ${l.vni} differs from ours (${vni})`;
    if (!skip) {
      const direct = backend === 'host-gw' || (this.policy.directRouting && route?.kind === 'direct');
      // A dual-stack peer's IPv6 entries count in the slot of its IPv4 ones.
      const counterPeer = family === 6 && l.publicIp !== NO_PUBLIC_IP ? l.publicIp : undefined;
      return {
        subnet: side.subnet,
        publicIp: side.publicIp!,
        vtepMac: side.vtepMac,
        direct,
        createRevision: l.createRevision,
        ...(counterPeer && { counterPeer }),
      };
    }
    this.warnOnce(side.subnet, side.publicIp ?? '', skip);
    return undefined;
  }

  private warnOnce(subnet: string, publicIp: string, reason: string): void {
    if (!this.warned.has(`${subnet} ${reason}`)) this.log.warn('ignoring lease', { subnet, publicIp, reason });
    this.warned.add(`${subnet} ${reason}`);
  }

  /** The leases that differ from the lane's last apply (among `keys` if given), as DesiredState changes; `seen` follows. */
  private leaseChanges(lane: FamilyLane, leases: ReadonlyMap<string, Lease>, keys?: ReadonlySet<string>): [string, NodeLease | undefined][] {
    const changes: [string, NodeLease | undefined][] = [];
    // The family's subnet of a lease (none: an IPv4-only lease on the IPv6 lane).
    const subnetOf = (l: Lease) => (lane.family === 4 ? formatCidr(l.subnet) : l.subnet6 && formatCidr6(l.subnet6));
    // Peers come and go once per lease: the first lane says so.
    const events = lane === this.lanes![0] ? this.peerEvents : [];
    const check = (key: string) => {
      const l = leases.get(key);
      const before = lane.seen.get(key);
      if (l) {
        const route = this.routes.get((lane.family === 4 ? l.publicIp : l.publicIpv6) ?? '')?.kind;
        if (before && (before.lease === l || sameLease(before.lease, l)) && before.route === route) return;
        lane.seen.set(key, { lease: l, route });
        const was = before && subnetOf(before.lease);
        const subnet = subnetOf(l);
        if (was && was !== subnet) changes.push([was, undefined]);
        if (subnet) changes.push([subnet, this.usable(l, lane.family)]);
        events.push({ change: before ? 'changed' : 'added', subnet: formatCidr(l.subnet), publicIp: l.publicIp });
      } else if (before) {
        lane.seen.delete(key);
        const was = subnetOf(before.lease);
        if (was) changes.push([was, undefined]);
        events.push({ change: 'removed', subnet: formatCidr(before.lease.subnet), publicIp: before.lease.publicIp });
      }
    };
    if (keys) for (const key of keys) check(key);
    else for (const key of new Set([...leases.keys(), ...lane.seen.keys()])) check(key);
    return changes;
  }

  private async apply(leases: ReadonlyMap<string, Lease>, keys?: ReadonlySet<string>): Promise<void> {
    const started = performance.now();
    try {
      if (!this.lanes) {
        this.lanes = this.makeLanes(this.datapaths!);
        this.peerEvents = [];
        this.trusted = false;
        keys = undefined;
      }
      const full = !this.trusted || started - this.lastFullSync >= FULL_SYNC_INTERVAL_MS;
      // A datapath that can only sync (flannel's kernel devices, direct routes) is synced in full every time.
      const fullOf = (lane: FamilyLane) => full || !lane.datapath.apply;
      const anyFull = this.lanes.some(fullOf);
      // A full sync looks every lease's route up again: a peer may have moved on or off our segment.
      if (anyFull && this.needsRoutes) keys = undefined;
      await this.learnRoutes(keys ? [...keys].flatMap((k) => leases.get(k) ?? []) : leases.values(), anyFull);
      this.trusted = false; // until this write is known to have completed
      let result = NOTHING;
      for (const lane of this.lanes) result = addResults(result, await this.applyLane(lane, leases, keys, fullOf(lane)));
      this.lastResult = result;
      this.trusted = true;
      if (full) this.lastFullSync = started;
      this.count++;
      for (const line of peerLines(this.peerEvents.filter((e) => e.subnet !== this.self.subnet))) this.log.info(line.msg, line.fields);
      this.peerEvents = [];
      const [v4, v6] = this.lanes;
      if (result.subnetsAdded + result.subnetsRemoved + result.peersAdded + result.peersRemoved)
        this.log.info('datapath updated', {
          ...result,
          peers: v4.state.peers.size,
          ...(v6 ? { peers6: v6.state.subnets.size } : {}),
          full,
          ms: Math.round(performance.now() - started),
        });
    } catch (err) {
      this.errors++;
      this.log.error('reconcile failed; will retry with the next change or resync', { error: (err as Error).message });
      setTimeout(() => this.update(leases), 1000).unref();
    } finally {
      this.lastDurationMs = performance.now() - started;
      this.totalDurationMs += this.lastDurationMs;
    }
  }

  /** One family's write: the whole state on a full sync, else only the entries the changed leases touch. */
  private async applyLane(lane: FamilyLane, leases: ReadonlyMap<string, Lease>, keys: ReadonlySet<string> | undefined, full: boolean): Promise<SyncResult> {
    const leaseChanges = this.leaseChanges(lane, leases, keys);
    const changes = lane.state.update(leaseChanges);
    for (const [cidr, lease] of leaseChanges) {
      const why = lease && lane.state.whySkipped(cidr);
      if (why) this.log.warn('ignoring conflicting lease', { subnet: cidr, publicIp: lease.publicIp, reason: why });
    }
    return full ? lane.datapath.sync(lane.state.snapshot()) : lane.datapath.apply!(changes);
  }
}

function addResults(a: SyncResult, b: SyncResult): SyncResult {
  return {
    ...a,
    subnetsAdded: a.subnetsAdded + b.subnetsAdded,
    subnetsRemoved: a.subnetsRemoved + b.subnetsRemoved,
    peersAdded: a.peersAdded + b.peersAdded,
    peersRemoved: a.peersRemoved + b.peersRemoved,
  };
}
