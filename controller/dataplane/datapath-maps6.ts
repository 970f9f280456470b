import { existsSync } from 'node:fs';
import type { FieldsOf } from '../../maps/codec.js';
import {
  mapSpecs,
  MAX_STATS_SLOTS,
  UNATTRIBUTED_STATS_SLOT,
  type peerStatsStruct,
  type config6Struct,
  type endpoint6KeyStruct,
  type endpointStruct,
  type Endpoint,
  type MapName,
  type Peer6,
  type peer6KeyStruct,
  type peer6Struct,
  type Remote6,
  type remote6Struct,
  type subnet6KeyStruct,
  type TwillConfig6,
  type u32Key,
} from '../../maps/layout.js';
import { PerCpuArray, TypedMap } from '../../maps/typed-map.js';
import { assignStatsSlots } from '../reconcile/stats-slots.js';
import { BpfMap } from '../bpf/libbpf.js';
import { diffMap, type DesiredMaps } from '../reconcile/desired.js';
import type { SyncResult } from '../reconcile/reconciler.js';


/**
 * The IPv6 maps of one node (twill_config6, twill_subnets6, twill_peers6, twill_endpoints6),
 * opened by path like DatapathMaps. The reconciler gives it the IPv6 side of the lease set, in
 * the same DesiredMaps shape as IPv4's (subnet base and PublicIPv6 as keys). A peer's IPv6
 * entries count into the per-peer slot of its IPv4 entries (`statsSlotOf`, from IPv4's
 * DatapathMaps), so `twill maps` and the metrics show one node's traffic in both families on one
 * row. In an IPv6-only network (`statsSlotOf` absent) the IPv6 entries hold slots of their own,
 * given out and zeroed as IPv4's are.
 */
export class DatapathMaps6 {
  readonly mode = 'bpf';
  private constructor(
    private readonly config: TypedMap<FieldsOf<typeof u32Key>, FieldsOf<typeof config6Struct>>,
    private readonly subnets: TypedMap<FieldsOf<typeof subnet6KeyStruct>, FieldsOf<typeof remote6Struct>>,
    private readonly peers: TypedMap<FieldsOf<typeof peer6KeyStruct>, FieldsOf<typeof peer6Struct>>,
    private readonly endpoints: TypedMap<FieldsOf<typeof endpoint6KeyStruct>, FieldsOf<typeof endpointStruct>>,
    private readonly handles: BpfMap[],
    /** a dual-stack peer's IPv4 counter slot; absent in an IPv6-only network, where slots are ours to give */
    private readonly statsSlotOf: ((publicIp: string) => number) | undefined,
    private readonly peerStatsArray: PerCpuArray<FieldsOf<typeof peerStatsStruct>>,
  ) {}

  /** Whether this pin set has the IPv6 maps (a datapath attached by a build before IPv6 has not). */
  static present(pinDir: string): boolean {
    return existsSync(`${pinDir}/twill_config6`);
  }

  /** The IPv6 VtepMAC a previous agent wrote, if it wrote one: it survives restarts as IPv4's does. */
  static readPinnedMac(pinDir: string): string | undefined {
    const map = BpfMap.fromPin(`${pinDir}/twill_config6`);
    try {
      const c = new TypedMap(map, mapSpecs.twill_config6.key, mapSpecs.twill_config6.value).get({ index: 0 });
      return c && c.vtep_mac6 !== '00:00:00:00:00:00' ? c.vtep_mac6 : undefined;
    } finally {
      map.close();
    }
  }

  /** @param statsSlotOf  a peer's IPv4 counter slot by its PublicIP (UNATTRIBUTED_STATS_SLOT when it has none); absent: IPv6 only */
  static open(pinDir: string, statsSlotOf?: (publicIp: string) => number): DatapathMaps6 {
    const opened: BpfMap[] = [];
    const pin = (name: MapName) => {
      const m = BpfMap.fromPin(`${pinDir}/${name}`);
      opened.push(m);
      return m;
    };
    try {
      return new DatapathMaps6(
        new TypedMap(pin('twill_config6'), mapSpecs.twill_config6.key, mapSpecs.twill_config6.value),
        new TypedMap(pin('twill_subnets6'), mapSpecs.twill_subnets6.key, mapSpecs.twill_subnets6.value),
        new TypedMap(pin('twill_peers6'), mapSpecs.twill_peers6.key, mapSpecs.twill_peers6.value),
        new TypedMap(pin('twill_endpoints6'), mapSpecs.twill_endpoints6.key, mapSpecs.twill_endpoints6.value),
        opened,
        statsSlotOf,
        new PerCpuArray(pin('twill_peer_stats'), mapSpecs.twill_peer_stats.value),
      );
    } catch (err) {
      for (const m of opened) m.close();
      throw err;
    }
  }

  readConfig(): TwillConfig6 | undefined {
    return this.config.get({ index: 0 });
  }

  writeConfig(cfg: TwillConfig6): void {
    this.config.put({ index: 0 }, cfg);
  }

  readSubnets(): Map<string, Remote6> {
    return new Map(this.subnets.entries().map(([k, v]) => [k.subnet6, v]));
  }

  readPeers(): Map<string, Peer6> {
    return new Map(this.peers.entries().map(([k, v]) => [k.public_ip6, v]));
  }

  readEndpoints(): Map<string, Endpoint> {
    return new Map(this.endpoints.entries().map(([k, v]) => [k.ip6, v]));
  }

  /** Brings twill_endpoints6 to `desired` (pod IPv6 address -> entry) by difference only. */
  syncEndpoints(desired: ReadonlyMap<string, Endpoint>): { upserted: string[]; removed: string[] } {
    const diff = diffMap(this.readEndpoints(), desired);
    this.endpoints.putMany(diff.upsert.map(([ip6, e]) => [{ ip6 }, e] as const));
    this.endpoints.deleteMany(diff.remove.map((ip6) => ({ ip6 })));
    return { upserted: diff.upsert.map(([ip]) => ip), removed: diff.remove };
  }

  /**
   * By difference, in the order IPv4's sync keeps: a new peer is accepted by decap before encap
   * sends to it, and a departing one is no longer sent to before its packets are refused.
   */
  sync(desired: DesiredMaps): SyncResult {
    const own = this.statsSlotOf ? undefined : this.ownSlots(desired);
    const slot = (publicIp6: string) => {
      if (own) return own.get(publicIp6) ?? UNATTRIBUTED_STATS_SLOT;
      const publicIp = desired.counterPeers?.get(publicIp6);
      return publicIp === undefined ? UNATTRIBUTED_STATS_SLOT : this.statsSlotOf!(publicIp);
    };
    const subnets = new Map<string, Remote6>([...desired.subnets].map(([base, r]) => [base, { public_ip6: r.public_ip, vtep_mac6: r.vtep_mac, flags: r.flags, stats_slot: slot(r.public_ip) }]));
    const peers = new Map<string, Peer6>(
      [...desired.peers].map(([ip, p]) => [ip, { subnet6: p.subnet, vtep_mac6: p.vtep_mac, subnet6_len: p.subnet_len, flags: p.flags, stats_slot: slot(ip) }]),
    );
    const subnetDiff = diffMap(this.readSubnets(), subnets);
    const peerDiff = diffMap(this.readPeers(), peers);
    this.peers.putMany(peerDiff.upsert.map(([k, v]) => [{ public_ip6: k }, v] as const));
    this.subnets.putMany(subnetDiff.upsert.map(([k, v]) => [{ subnet6: k }, v] as const));
    this.subnets.deleteMany(subnetDiff.remove.map((k) => ({ subnet6: k })));
    this.peers.deleteMany(peerDiff.remove.map((k) => ({ public_ip6: k })));
    return { subnetsAdded: subnetDiff.upsert.length, subnetsRemoved: subnetDiff.remove.length, peersAdded: peerDiff.upsert.length, peersRemoved: peerDiff.remove.length };
  }

  /** IPv6 only: each peer keeps its slot while it stays; a new one gets a free slot, zeroed before any entry points at it. */
  private ownSlots(desired: DesiredMaps): ReadonlyMap<string, number> {
    const held = new Map([...this.readPeers()].map(([ip, p]) => [ip, p.stats_slot]));
    const assignment = assignStatsSlots(held, desired.peers.keys(), MAX_STATS_SLOTS, UNATTRIBUTED_STATS_SLOT);
    this.peerStatsArray.zero(assignment.fresh);
    return assignment.slots;
  }

  close(): void {
    for (const m of this.handles) m.close();
  }
}
