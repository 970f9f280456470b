import { existsSync } from 'node:fs';
import type { FieldsOf } from '../../maps/codec.js';
import {
  configStruct,
  config6Struct,
  mapSpecs,
  nextHopStruct,
  PATH_RECEIVE,
  PATH_SEND,
  pathStatsStruct,
  peerKeyStruct,
  peer6KeyStruct,
  peerStatsStruct,
  statsStruct,
  u32Key,
  UNATTRIBUTED_STATS_SLOT,
  type MapName,
  type PathStats,
  type PeerStats,
  type Stats,
  withDeprecatedCounters,
  type TwillConfig,
  type TwillConfig6,
} from '../../maps/layout.js';
import { PerCpuArray, TypedMap } from '../../maps/typed-map.js';
import { BpfMap } from '../bpf/libbpf.js';
import { FamilyMaps, type IpFamily } from './family-maps.js';

/** One peer's traffic, summed over CPUs. */
export interface PeerTraffic extends PeerStats {
  publicIp: string;
  /** CIDR */
  subnet: string;
  vtepMac: string;
  slot: number;
}

/** Reads entry 0 of a pinned array map without opening anything else. */
function readPinnedEntry<C>(pin: string, read: (map: BpfMap) => C): C {
  const map = BpfMap.fromPin(pin);
  try {
    return read(map);
  } finally {
    map.close();
  }
}

/**
 * The pinned maps of one node, opened by path: needs no netns and no loaded object, so the lab,
 * the agent, `twill maps` and tests all read and write the same live maps. The node-wide maps
 * (each family's config, the counters) are here; each family's peer maps are a FamilyMaps:
 * `ipv4`, and `ipv6` when the pin set has the IPv6 maps. A dual-stack peer's IPv6 entries count
 * in the per-peer slot of its IPv4 entries, so both families show on one row; in an IPv6-only
 * network the IPv6 entries hold slots of their own.
 */
export class DatapathMaps {
  private constructor(
    readonly pinDir: string,
    private readonly config: TypedMap<FieldsOf<typeof u32Key>, FieldsOf<typeof configStruct>>,
    private readonly config6: TypedMap<FieldsOf<typeof u32Key>, FieldsOf<typeof config6Struct>> | undefined,
    private readonly statsArray: PerCpuArray<FieldsOf<typeof statsStruct>>,
    private readonly peerStatsArray: PerCpuArray<FieldsOf<typeof peerStatsStruct>>,
    private readonly pathStatsArray: PerCpuArray<FieldsOf<typeof pathStatsStruct>> | undefined,
    private readonly nextHops: TypedMap<FieldsOf<typeof peerKeyStruct>, FieldsOf<typeof nextHopStruct>> | undefined,
    private readonly nextHops6: TypedMap<FieldsOf<typeof peer6KeyStruct>, FieldsOf<typeof nextHopStruct>> | undefined,
    readonly ipv4: FamilyMaps,
    readonly ipv6: FamilyMaps | undefined,
    private readonly handles: BpfMap[],
  ) {}

  /** Whether this pin set has the IPv6 maps (a datapath attached by a build before IPv6 has not). */
  static hasIpv6(pinDir: string): boolean {
    return existsSync(`${pinDir}/twill_config6`) && FamilyMaps.present(pinDir, 6);
  }

  /**
   * The config map alone: what an agent reads before it loads anything. A pin set left by
   * another build may lack maps this build has (or have had some retired), so open() would fail.
   */
  static readPinnedConfig(pinDir: string): TwillConfig | undefined {
    return readPinnedEntry(`${pinDir}/twill_config`, (map) => {
      const c = new TypedMap(map, mapSpecs.twill_config.key, mapSpecs.twill_config.value).get({ index: 0 });
      return c && c.underlay_ifindex !== 0 ? c : undefined;
    });
  }

  /** The IPv6 VtepMAC a previous agent wrote, if it wrote one: it survives restarts as IPv4's does. */
  static readPinnedMac6(pinDir: string): string | undefined {
    if (!existsSync(`${pinDir}/twill_config6`)) return undefined;
    return readPinnedEntry(`${pinDir}/twill_config6`, (map) => {
      const c = new TypedMap(map, mapSpecs.twill_config6.key, mapSpecs.twill_config6.value).get({ index: 0 });
      return c && c.vtep_mac6 !== '00:00:00:00:00:00' ? c.vtep_mac6 : undefined;
    });
  }

  /** @param ipv6Slots  'own' in an IPv6-only network; by default a peer's IPv6 entries share its IPv4 slot */
  static open(pinDir: string, { ipv6Slots = 'shared' }: { ipv6Slots?: 'own' | 'shared' } = {}): DatapathMaps {
    const opened: { close(): void }[] = [];
    const pin = (name: MapName) => {
      const m = BpfMap.fromPin(`${pinDir}/${name}`);
      opened.push(m);
      return m;
    };
    const optional = (name: MapName) => (existsSync(`${pinDir}/${name}`) ? pin(name) : undefined);
    const family = (f: IpFamily, slots: Parameters<typeof FamilyMaps.open>[2]) => {
      const m = FamilyMaps.open(pinDir, f, slots);
      opened.push(m);
      return m;
    };
    try {
      // One handle on the per-peer counters: the families zero the slots they give out in it.
      const peerStats = new PerCpuArray(pin('twill_peer_stats'), mapSpecs.twill_peer_stats.value);
      const ipv4 = family(4, { own: peerStats });
      const ipv6 = DatapathMaps.hasIpv6(pinDir) ? family(6, ipv6Slots === 'own' ? { own: peerStats } : { sharedWith: ipv4 }) : undefined;
      return new DatapathMaps(
        pinDir,
        new TypedMap(pin('twill_config'), mapSpecs.twill_config.key, mapSpecs.twill_config.value),
        ipv6 && new TypedMap(pin('twill_config6'), mapSpecs.twill_config6.key, mapSpecs.twill_config6.value),
        new PerCpuArray(pin('twill_stats'), mapSpecs.twill_stats.value),
        peerStats,
        ((m) => m && new PerCpuArray(m, mapSpecs.twill_path_stats.value))(optional('twill_path_stats')),
        ((m) => m && new TypedMap(m, mapSpecs.twill_next_hops.key, mapSpecs.twill_next_hops.value))(optional('twill_next_hops')),
        ((m) => m && new TypedMap(m, mapSpecs.twill_next_hops6.key, mapSpecs.twill_next_hops6.value))(optional('twill_next_hops6')),
        ipv4,
        ipv6,
        opened as BpfMap[],
      );
    } catch (err) {
      for (const m of opened) m.close();
      throw err;
    }
  }

  /** IPv4's peer maps, and IPv6's when the pin set has them. */
  get families(): FamilyMaps[] {
    return this.ipv6 ? [this.ipv4, this.ipv6] : [this.ipv4];
  }

  /** The family of `ip` (a pod address, a PublicIP), undefined for IPv6 in a pin set without the IPv6 maps. */
  familyOf(ip: string): FamilyMaps | undefined {
    return ip.includes(':') ? this.ipv6 : this.ipv4;
  }

  readConfig(): TwillConfig | undefined {
    const c = this.config.get({ index: 0 });
    return c && c.underlay_ifindex !== 0 ? c : undefined;
  }

  writeConfig(cfg: TwillConfig): void {
    this.config.put({ index: 0 }, cfg);
  }

  readConfig6(): TwillConfig6 | undefined {
    return this.config6?.get({ index: 0 });
  }

  writeConfig6(cfg: TwillConfig6): void {
    if (!this.config6) throw new Error(`${this.pinDir}/twill_config6 is not pinned: the datapath was attached by a build before IPv6`);
    this.config6.put({ index: 0 }, cfg);
  }

  stats(): Stats {
    return withDeprecatedCounters(this.statsArray.sum());
  }

  /** What the fast path carried and what it left to the stack, per direction (zeros before it existed). */
  pathStats(): { send: PathStats; receive: PathStats } | undefined {
    if (!this.pathStatsArray) return undefined;
    return { send: withDeprecatedCounters(this.pathStatsArray.sum(PATH_SEND)), receive: withDeprecatedCounters(this.pathStatsArray.sum(PATH_RECEIVE)) };
  }

  /** Whether the pin set has twill_next_hops6 (one attached by a build before it has not). */
  get hasNextHops6(): boolean {
    return this.nextHops6 !== undefined;
  }

  /**
   * PublicIP or PublicIPv6 -> the MAC the programs send toward it with (twill_next_hops and
   * twill_next_hops6, or the one map of `family`; empty for a map a pin set lacks).
   */
  readNextHops(family?: IpFamily): Map<string, string> {
    return new Map([
      ...(family === 6 ? [] : (this.nextHops?.entries() ?? [])).map(([k, v]) => [k.public_ip, v.mac] as const),
      ...(family === 4 ? [] : (this.nextHops6?.entries() ?? [])).map(([k, v]) => [k.public_ip6, v.mac] as const),
    ]);
  }

  /** Makes twill_next_hops and twill_next_hops6 equal to `desired` (PublicIP or PublicIPv6 -> MAC), by difference; what changed. */
  syncNextHops(desired: ReadonlyMap<string, string>): { written: string[]; removed: string[] } {
    const v6 = (ip: string) => ip.includes(':');
    for (const [map, name, family6] of [[this.nextHops, 'twill_next_hops', false] as const, [this.nextHops6, 'twill_next_hops6', true] as const])
      if (!map && [...desired.keys()].some((ip) => v6(ip) === family6))
        throw new Error(`${this.pinDir}/${name} is not pinned: the datapath was attached by an older build`);
    const current = this.readNextHops();
    const written = [...desired].filter(([ip, mac]) => current.get(ip) !== mac);
    const removed = [...current.keys()].filter((ip) => !desired.has(ip));
    this.nextHops?.putMany(written.filter(([ip]) => !v6(ip)).map(([ip, mac]) => [{ public_ip: ip }, { mac, flags: 0 }] as const));
    this.nextHops?.deleteMany(removed.filter((ip) => !v6(ip)).map((ip) => ({ public_ip: ip })));
    this.nextHops6?.putMany(written.filter(([ip]) => v6(ip)).map(([ip, mac]) => [{ public_ip6: ip }, { mac, flags: 0 }] as const));
    this.nextHops6?.deleteMany(removed.filter(v6).map((ip) => ({ public_ip6: ip })));
    return { written: written.map(([ip]) => ip), removed };
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
    const rows = [...this.ipv4.readPeers()].map(([ip, p]) => ({
      publicIp: ip,
      subnet: `${p.subnet}/${p.subnet_len || subnetLen}`,
      vtepMac: p.vtep_mac,
      slot: p.stats_slot,
    }));
    const listed = new Set(rows.map((r) => r.slot));
    for (const [ip6, p] of this.ipv6?.readPeers() ?? []) {
      if (!listed.has(p.stats_slot)) rows.push({ publicIp: ip6, subnet: `${p.subnet}/${p.subnet_len}`, vtepMac: p.vtep_mac, slot: p.stats_slot });
    }
    return rows.filter((r) => r.slot !== UNATTRIBUTED_STATS_SLOT);
  }

  close(): void {
    for (const m of this.handles) m.close();
  }
}
