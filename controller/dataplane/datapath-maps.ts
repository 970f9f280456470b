import { BpfMap } from '../bpf/libbpf.js';
import type { FieldsOf } from '../../maps/codec.js';
import { existsSync } from 'node:fs';
import {
  configStruct,
  endpointKeyStruct,
  endpointStruct,
  MAX_STATS_SLOTS,
  PATH_RECEIVE,
  PATH_SEND,
  pathStatsStruct,
  mapSpecs,
  peerKeyStruct,
  peerStatsStruct,
  peerStruct,
  remoteStruct,
  statsStruct,
  subnetKeyStruct,
  u32Key,
  type Endpoint,
  type MapName,
  type PathStats,
  type Peer,
  type Peer6,
  type PeerStats,
  type Remote,
  type Stats,
  type TwillConfig,
  UNATTRIBUTED_STATS_SLOT,
} from '../../maps/layout.js';
import { PerCpuArray, TypedMap } from '../../maps/typed-map.js';
import { diffMap, type DesiredMaps, type DesiredPeer, type DesiredRemote, type MapChanges, type MapDiff } from '../reconcile/desired.js';
import type { SyncResult } from '../reconcile/reconciler.js';
import { StatsSlotTable, assignStatsSlots, type SlotAssignment } from '../reconcile/stats-slots.js';
import { logger } from '../util/log.js';

const log = logger('dataplane');

/** One peer's traffic, summed over CPUs. */
export interface PeerTraffic extends PeerStats {
  publicIp: string;
  /** CIDR */
  subnet: string;
  vtepMac: string;
  slot: number;
}

/** Entries as the maps hold them: each with the counter slot of the peer it names. */
function slotted(slots: ReadonlyMap<string, number>) {
  const slot = (ip: string) => slots.get(ip) ?? UNATTRIBUTED_STATS_SLOT;
  return {
    remote: ([k, v]: readonly [string, DesiredRemote]): [string, Remote] => [k, { ...v, stats_slot: slot(v.public_ip) }],
    peer: ([k, v]: readonly [string, DesiredPeer]): [string, Peer] => [k, { ...v, stats_slot: slot(k) }],
  };
}

/**
 * The pinned maps of one node, opened by path: needs no netns and no loaded object, so the
 * lab, the agent, `twill maps` and tests all read and write the same live maps.
 */
/** twill_peers6 as pinned (empty before a build with IPv6 attached), for the per-peer listing. */
function readPeers6(pinDir: string): Map<string, Peer6> {
  if (!existsSync(`${pinDir}/twill_peers6`)) return new Map();
  const map = BpfMap.fromPin(`${pinDir}/twill_peers6`);
  try {
    return new Map(new TypedMap(map, mapSpecs.twill_peers6.key, mapSpecs.twill_peers6.value).entries().map(([k, v]) => [k.public_ip6, v]));
  } finally {
    map.close();
  }
}

export class DatapathMaps {
  private constructor(
    readonly pinDir: string,
    private readonly config: TypedMap<FieldsOf<typeof u32Key>, FieldsOf<typeof configStruct>>,
    readonly subnets: TypedMap<FieldsOf<typeof subnetKeyStruct>, FieldsOf<typeof remoteStruct>>,
    readonly peers: TypedMap<FieldsOf<typeof peerKeyStruct>, FieldsOf<typeof peerStruct>>,
    private readonly statsArray: PerCpuArray<FieldsOf<typeof statsStruct>>,
    private readonly peerStatsArray: PerCpuArray<FieldsOf<typeof peerStatsStruct>>,
    /** absent in a pin set made before the fast path (until the agent of this build attaches) */
    readonly endpoints: TypedMap<FieldsOf<typeof endpointKeyStruct>, FieldsOf<typeof endpointStruct>> | undefined,
    private readonly pathStatsArray: PerCpuArray<FieldsOf<typeof pathStatsStruct>> | undefined,
    private readonly handles: BpfMap[],
  ) {}

  /** PublicIP -> counter slot as last written, for apply(); rebuilt from the live maps by every sync() */
  private slotTable = new StatsSlotTable(new Map(), MAX_STATS_SLOTS, UNATTRIBUTED_STATS_SLOT);

  /**
   * The config map alone: what an agent reads before it loads anything. A pin set left by
   * another build may lack maps this build has (or have had some retired), so open() would fail.
   */
  static readPinnedConfig(pinDir: string): TwillConfig | undefined {
    const map = BpfMap.fromPin(`${pinDir}/twill_config`);
    try {
      const c = new TypedMap(map, mapSpecs.twill_config.key, mapSpecs.twill_config.value).get({ index: 0 });
      return c && c.underlay_ifindex !== 0 ? c : undefined;
    } finally {
      map.close();
    }
  }

  static open(pinDir: string): DatapathMaps {
    const opened: BpfMap[] = [];
    const pin = (name: MapName) => {
      const m = BpfMap.fromPin(`${pinDir}/${name}`);
      opened.push(m);
      return m;
    };
    const optional = (name: MapName) => (existsSync(`${pinDir}/${name}`) ? pin(name) : undefined);
    try {
      return new DatapathMaps(
        pinDir,
        new TypedMap(pin('twill_config'), mapSpecs.twill_config.key, mapSpecs.twill_config.value),
        new TypedMap(pin('twill_subnets'), mapSpecs.twill_subnets.key, mapSpecs.twill_subnets.value),
        new TypedMap(pin('twill_peers'), mapSpecs.twill_peers.key, mapSpecs.twill_peers.value),
        new PerCpuArray(pin('twill_stats'), mapSpecs.twill_stats.value),
        new PerCpuArray(pin('twill_peer_stats'), mapSpecs.twill_peer_stats.value),
        ((m) => m && new TypedMap(m, mapSpecs.twill_endpoints.key, mapSpecs.twill_endpoints.value))(optional('twill_endpoints')),
        ((m) => m && new PerCpuArray(m, mapSpecs.twill_path_stats.value))(optional('twill_path_stats')),
        opened,
      );
    } catch (err) {
      for (const m of opened) m.close();
      throw err;
    }
  }

  readConfig(): TwillConfig | undefined {
    const c = this.config.get({ index: 0 });
    return c && c.underlay_ifindex !== 0 ? c : undefined;
  }

  writeConfig(cfg: TwillConfig): void {
    this.config.put({ index: 0 }, cfg);
  }

  readSubnets(): Map<string, Remote> {
    return new Map(this.subnets.entries().map(([k, v]) => [k.subnet, v]));
  }

  readPeers(): Map<string, Peer> {
    return new Map(this.peers.entries().map(([k, v]) => [k.public_ip, v]));
  }

  stats(): Stats {
    return this.statsArray.sum();
  }

  /** What the fast path carried and what it left to the stack, per direction (zeros before it existed). */
  pathStats(): { send: PathStats; receive: PathStats } | undefined {
    if (!this.pathStatsArray) return undefined;
    return { send: this.pathStatsArray.sum(PATH_SEND), receive: this.pathStatsArray.sum(PATH_RECEIVE) };
  }

  readEndpoints(): Map<string, Endpoint> {
    return new Map((this.endpoints?.entries() ?? []).map(([k, v]) => [k.ip, v]));
  }

  /** Brings twill_endpoints to `desired` (pod address -> entry) by difference only. */
  syncEndpoints(desired: ReadonlyMap<string, Endpoint>): { upserted: string[]; removed: string[] } {
    if (!this.endpoints) throw new Error(`${this.pinDir}/twill_endpoints is not pinned: the datapath was attached by an older build`);
    const diff = diffMap(this.readEndpoints(), desired);
    this.endpoints.putMany(diff.upsert.map(([ip, e]) => [{ ip }, e] as const));
    this.endpoints.deleteMany(diff.remove.map((ip) => ({ ip })));
    return { upserted: diff.upsert.map(([ip]) => ip), removed: diff.remove };
  }

  /** The counter slot this object last gave the peer at `publicIp` (UNATTRIBUTED_STATS_SLOT: none). */
  statsSlotOf(publicIp: string): number {
    return this.slotTable.slots.get(publicIp) ?? UNATTRIBUTED_STATS_SLOT;
  }

  /** The peers peerTraffic() reports, counted without reading their counters. */
  peerCount(): number {
    return this.peerRows().length;
  }

  /**
   * Traffic per peer (from twill_peer_stats), plus what entries without a slot carried. A peer
   * with IPv6 entries only (an IPv6-only network) is listed by its PublicIPv6 and IPv6 subnet; a
   * dual-stack peer's IPv6 entries share its IPv4 slot, so it is listed once.
   */
  peerTraffic(): { peers: PeerTraffic[]; unattributed: PeerStats } {
    const peers = this.peerRows().map((r) => ({ ...r, ...this.peerStatsArray.sum(r.slot) }));
    return { peers, unattributed: this.peerStatsArray.sum(UNATTRIBUTED_STATS_SLOT) };
  }

  /** Every peer with a counter slot: IPv4 peers, then IPv6-only ones. */
  private peerRows(): { publicIp: string; subnet: string; vtepMac: string; slot: number }[] {
    const subnetLen = this.readConfig()?.subnet_len;
    const rows = [...this.readPeers()].map(([ip, p]) => ({ publicIp: ip, subnet: `${p.subnet}/${p.subnet_len || subnetLen}`, vtepMac: p.vtep_mac, slot: p.stats_slot }));
    const listed = new Set(rows.map((r) => r.slot));
    for (const [ip6, p] of readPeers6(this.pinDir)) {
      if (!listed.has(p.stats_slot)) rows.push({ publicIp: ip6, subnet: `${p.subnet6}/${p.subnet6_len}`, vtepMac: p.vtep_mac6, slot: p.stats_slot });
    }
    return rows.filter((r) => r.slot !== UNATTRIBUTED_STATS_SLOT);
  }

  /**
   * Brings the maps to the desired state by difference only. Order keeps traffic flowing:
   * a new peer is accepted by decap before encap starts sending to it, and a departing one
   * stops being sent to before its packets are refused. A new peer's counter slot is zeroed
   * before any entry points at it.
   */
  sync(desired: DesiredMaps): SyncResult {
    const livePeers = this.readPeers();
    const held = new Map([...livePeers].map(([ip, p]) => [ip, p.stats_slot]));
    const assignment = assignStatsSlots(held, desired.peers.keys(), MAX_STATS_SLOTS, UNATTRIBUTED_STATS_SLOT);
    const withSlot = slotted(assignment.slots);
    this.slotTable = new StatsSlotTable(assignment.slots, MAX_STATS_SLOTS, UNATTRIBUTED_STATS_SLOT);
    return this.write(
      diffMap(this.readSubnets(), new Map([...desired.subnets].map(withSlot.remote))),
      diffMap(livePeers, new Map([...desired.peers].map(withSlot.peer))),
      assignment,
    );
  }

  /**
   * Writes entry-level changes computed by the caller (DesiredState), against what this object
   * last wrote: a lease event costs a few map updates, whatever the number of peers.
   */
  apply(changes: MapChanges): SyncResult {
    const got = this.slotTable.change(changes.peers.upsert.map(([ip]) => ip), changes.peers.remove);
    const withSlot = slotted(this.slotTable.slots);
    return this.write(
      { upsert: changes.subnets.upsert.map(withSlot.remote), remove: changes.subnets.remove },
      { upsert: changes.peers.upsert.map(withSlot.peer), remove: changes.peers.remove },
      got,
    );
  }

  private write(subnetDiff: MapDiff<Remote>, peerDiff: MapDiff<Peer>, assignment: Pick<SlotAssignment, 'fresh' | 'unslotted'>): SyncResult {
    if (assignment.unslotted.length) log.warn('per-peer counter slots exhausted: these peers count as unattributed', { peers: assignment.unslotted.length, slots: MAX_STATS_SLOTS });
    this.peerStatsArray.zero(assignment.fresh);
    this.peers.putMany(peerDiff.upsert.map(([k, v]) => [{ public_ip: k }, v] as const));
    this.subnets.putMany(subnetDiff.upsert.map(([k, v]) => [{ subnet: k }, v] as const));
    this.subnets.deleteMany(subnetDiff.remove.map((k) => ({ subnet: k })));
    this.peers.deleteMany(peerDiff.remove.map((k) => ({ public_ip: k })));
    return {
      subnetsAdded: subnetDiff.upsert.length,
      subnetsRemoved: subnetDiff.remove.length,
      peersAdded: peerDiff.upsert.length,
      peersRemoved: peerDiff.remove.length,
    };
  }

  close(): void {
    for (const m of this.handles) m.close();
  }
}
