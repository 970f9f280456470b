import { existsSync } from 'node:fs';
import type { Decoded, FieldKind, StructCodec } from '../../maps/codec.js';
import { MAX_STATS_SLOTS, UNATTRIBUTED_STATS_SLOT, mapSpecs, type Endpoint, type MapName, type Peer, type Remote } from '../../maps/layout.js';
import { PerCpuArray, TypedMap } from '../../maps/typed-map.js';
import { BpfMap } from '../bpf/libbpf.js';
import { diffMap, type DesiredMaps, type DesiredPeer, type DesiredRemote, type MapChanges, type MapDiff } from '../reconcile/desired.js';
import type { SyncResult } from '../reconcile/reconciler.js';
import { StatsSlotTable, assignStatsSlots } from '../reconcile/stats-slots.js';
import { logger } from '../util/log.js';

const log = logger('dataplane');

export type IpFamily = 4 | 6;

/**
 * Where one family's entries live and what its structs call the fields. The entries themselves
 * are family-neutral (IPv4's field names, as the reconciler computes them for both families);
 * only the names below differ, and bpf/include/twill_maps.h gives both families the same field
 * order and sizes (checked against BTF by test/integration/btf-layout.test.ts).
 */
const FAMILY_MAPS = {
  4: { subnets: 'twill_subnets', peers: 'twill_peers', endpoints: 'twill_endpoints', subnetKey: 'subnet', peerKey: 'public_ip', endpointKey: 'ip', fields: {} },
  6: {
    subnets: 'twill_subnets6',
    peers: 'twill_peers6',
    endpoints: 'twill_endpoints6',
    subnetKey: 'subnet6',
    peerKey: 'public_ip6',
    endpointKey: 'ip6',
    fields: { public_ip: 'public_ip6', vtep_mac: 'vtep_mac6', subnet: 'subnet6', subnet_len: 'subnet6_len' },
  },
} as const satisfies Record<
  IpFamily,
  { subnets: MapName; peers: MapName; endpoints: MapName; subnetKey: string; peerKey: string; endpointKey: string; fields: Record<string, string> }
>;

type Row = Decoded<Record<string, FieldKind>>;
type AnyMap = TypedMap<Record<string, FieldKind>, Record<string, FieldKind>>;

/** Each family's renames both ways, made once: a full sync renames every entry it reads. */
const RENAMES = Object.fromEntries(
  Object.entries(FAMILY_MAPS).map(([family, { fields }]) => [family, { to: fields, back: Object.fromEntries(Object.entries(fields).map(([a, b]) => [b, a])) }]),
) as Record<`${IpFamily}`, { to: Record<string, string>; back: Record<string, string> }>;

/**
 * Renames an entry's fields by `table` (absent: kept). IPv4's table is empty and its rows are
 * passed through as they are: at 10,000 peers a copy per entry and sync showed in the agent's peak memory.
 */
function renamed(row: object, table: Readonly<Record<string, string>>): Row {
  if (Object.keys(table).length === 0) return row as Row;
  return Object.fromEntries(Object.entries(row).map(([k, v]) => [table[k] ?? k, v as Row[string]]));
}

/**
 * Where a family's entries get their per-peer counter slot: slots of its own (IPv4, and IPv6 in
 * an IPv6-only network), given out here and zeroed in `own`, the node's twill_peer_stats (opened
 * once, by DatapathMaps); or, for a dual-stack peer's IPv6 entries, the slot its IPv4 entries
 * hold in the family named (`counterPeers` says which IPv4 PublicIP).
 */
export type SlotSource = { own: Pick<PerCpuArray<Record<string, FieldKind>>, 'zero'> } | { sharedWith: Pick<FamilyMaps, 'statsSlotOf'> };

/**
 * The peer maps of one address family (subnets, peers, local endpoints), opened by path: one
 * class for both families, so that IPv4 and IPv6 are written by the same code, in the same
 * order, incrementally alike. What is node-wide (config, counters) is DatapathMaps'.
 */
export class FamilyMaps {
  /** PublicIP -> counter slot as last written (own slots only), for apply(); rebuilt by every sync() */
  private slotTable = new StatsSlotTable(new Map(), MAX_STATS_SLOTS, UNATTRIBUTED_STATS_SLOT);

  private constructor(
    readonly family: IpFamily,
    private readonly subnets: AnyMap,
    private readonly peers: AnyMap,
    /** absent in an IPv4 pin set made before the fast path (until the agent of this build attaches) */
    private readonly endpoints: AnyMap | undefined,
    private readonly slots: SlotSource,
    private readonly handles: BpfMap[],
  ) {}

  /** Whether this pin set has the family's maps (one attached by a build before IPv6 has no IPv6 maps). */
  static present(pinDir: string, family: IpFamily): boolean {
    return existsSync(`${pinDir}/${FAMILY_MAPS[family].peers}`);
  }

  static open(pinDir: string, family: IpFamily, slots: SlotSource): FamilyMaps {
    const names = FAMILY_MAPS[family];
    const opened: BpfMap[] = [];
    const typed = (name: MapName) => {
      const m = BpfMap.fromPin(`${pinDir}/${name}`);
      opened.push(m);
      const spec = mapSpecs[name] as { key: StructCodec<Record<string, FieldKind>>; value: StructCodec<Record<string, FieldKind>> };
      return new TypedMap(m, spec.key, spec.value);
    };
    try {
      const endpoints = family === 6 || existsSync(`${pinDir}/${names.endpoints}`) ? typed(names.endpoints) : undefined;
      return new FamilyMaps(family, typed(names.subnets), typed(names.peers), endpoints, slots, opened);
    } catch (err) {
      for (const m of opened) m.close();
      throw err;
    }
  }

  private get names() {
    return FAMILY_MAPS[this.family];
  }

  private get renames() {
    return RENAMES[this.family];
  }

  get hasEndpoints(): boolean {
    return this.endpoints !== undefined;
  }

  /** subnet base address -> its remote, as the map holds it */
  readSubnets(): Map<string, Remote> {
    return new Map(this.subnets.entries().map(([k, v]) => [k[this.names.subnetKey] as string, renamed(v, this.renames.back) as Remote]));
  }

  /** One subnet's entry (the lease probe polls a single key). */
  readSubnet(base: string): Remote | undefined {
    const v = this.subnets.get({ [this.names.subnetKey]: base });
    return v && (renamed(v, this.renames.back) as Remote);
  }

  /** PublicIP -> peer, as the map holds it */
  readPeers(): Map<string, Peer> {
    return new Map(this.peers.entries().map(([k, v]) => [k[this.names.peerKey] as string, renamed(v, this.renames.back) as Peer]));
  }

  readEndpoints(): Map<string, Endpoint> {
    return new Map((this.endpoints?.entries() ?? []).map(([k, v]) => [k[this.names.endpointKey] as string, v as Endpoint]));
  }

  /** Brings the endpoints map to `desired` (pod address -> entry) by difference only. */
  syncEndpoints(desired: ReadonlyMap<string, Endpoint>): { upserted: string[]; removed: string[] } {
    if (!this.endpoints) throw new Error(`${this.names.endpoints} is not pinned: the datapath was attached by an older build`);
    const key = (ip: string) => ({ [this.names.endpointKey]: ip });
    const diff = diffMap(this.readEndpoints(), desired);
    this.endpoints.putMany(diff.upsert.map(([ip, e]) => [key(ip), e] as const));
    this.endpoints.deleteMany(diff.remove.map(key));
    return { upserted: diff.upsert.map(([ip]) => ip), removed: diff.remove };
  }

  /** The counter slot this object last gave the peer at `publicIp` (UNATTRIBUTED_STATS_SLOT: none). */
  statsSlotOf(publicIp: string): number {
    return this.slotTable.slots.get(publicIp) ?? UNATTRIBUTED_STATS_SLOT;
  }

  /**
   * Brings the maps to the desired state by difference with what they hold, read back. Order
   * keeps traffic flowing: a new peer is accepted by decap before encap starts sending to it, and
   * a departing one stops being sent to before its packets are refused. A new peer's own counter
   * slot is zeroed before any entry points at it.
   */
  sync(desired: DesiredMaps): SyncResult {
    const livePeers = this.readPeers();
    let fresh: number[] = [];
    let unslotted: string[] = [];
    if ('own' in this.slots) {
      const held = new Map([...livePeers].map(([ip, p]) => [ip, p.stats_slot]));
      const assignment = assignStatsSlots(held, desired.peers.keys(), MAX_STATS_SLOTS, UNATTRIBUTED_STATS_SLOT);
      this.slotTable = new StatsSlotTable(assignment.slots, MAX_STATS_SLOTS, UNATTRIBUTED_STATS_SLOT);
      ({ fresh, unslotted } = assignment);
    }
    const slot = this.slotFor(desired.counterPeers);
    return this.write(
      diffMap(this.readSubnets(), new Map([...desired.subnets].map(([k, v]) => [k, withSlot(v, slot(v.public_ip))]))),
      diffMap(livePeers, new Map([...desired.peers].map(([k, v]) => [k, withSlot(v, slot(k))]))),
      fresh,
      unslotted,
    );
  }

  /**
   * Writes entry-level changes computed by the caller (DesiredState), against what this object
   * last wrote: a lease event costs a few map updates, whatever the number of peers.
   */
  apply(changes: MapChanges): SyncResult {
    const got =
      'own' in this.slots
        ? this.slotTable.change(
            changes.peers.upsert.map(([ip]) => ip),
            changes.peers.remove,
          )
        : { fresh: [], unslotted: [] };
    const slot = this.slotFor(changes.counterPeers);
    return this.write(
      { upsert: changes.subnets.upsert.map(([k, v]) => [k, withSlot(v, slot(v.public_ip))]), remove: changes.subnets.remove },
      { upsert: changes.peers.upsert.map(([k, v]) => [k, withSlot(v, slot(k))]), remove: changes.peers.remove },
      got.fresh,
      got.unslotted,
    );
  }

  private slotFor(counterPeers: ReadonlyMap<string, string> | undefined): (publicIp: string) => number {
    const slots = this.slots;
    if ('own' in slots) return (ip) => this.statsSlotOf(ip);
    return (ip) => {
      const counterPeer = counterPeers?.get(ip);
      return counterPeer === undefined ? UNATTRIBUTED_STATS_SLOT : slots.sharedWith.statsSlotOf(counterPeer);
    };
  }

  private write(subnetDiff: MapDiff<Remote>, peerDiff: MapDiff<Peer>, fresh: readonly number[], unslotted: readonly string[]): SyncResult {
    if (unslotted.length)
      log.warn('per-peer counter slots exhausted: these peers count as unattributed', { family: this.family, peers: unslotted.length, slots: MAX_STATS_SLOTS });
    if ('own' in this.slots) this.slots.own.zero(fresh);
    const { subnetKey, peerKey } = this.names;
    this.peers.putMany(peerDiff.upsert.map(([k, v]) => [{ [peerKey]: k }, renamed(v, this.renames.to)] as const));
    this.subnets.putMany(subnetDiff.upsert.map(([k, v]) => [{ [subnetKey]: k }, renamed(v, this.renames.to)] as const));
    this.subnets.deleteMany(subnetDiff.remove.map((k) => ({ [subnetKey]: k })));
    this.peers.deleteMany(peerDiff.remove.map((k) => ({ [peerKey]: k })));
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

function withSlot<V extends DesiredRemote | DesiredPeer>(v: V, slot: number): V & { stats_slot: number } {
  return { ...v, stats_slot: slot };
}
