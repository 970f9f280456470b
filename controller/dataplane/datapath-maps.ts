import { BpfMap } from '../bpf/libbpf.js';
import type { FieldsOf } from '../../maps/codec.js';
import {
  configStruct,
  mapSpecs,
  peerKeyStruct,
  peerStruct,
  remoteStruct,
  statsStruct,
  subnetKeyStruct,
  u32Key,
  type MapName,
  type Peer,
  type Remote,
  type Stats,
  type TwillConfig,
} from '../../maps/layout.js';
import { PerCpuArray, TypedMap } from '../../maps/typed-map.js';
import { diffMap, type DesiredMaps } from '../reconcile/desired.js';

export interface SyncResult {
  subnetsAdded: number;
  subnetsRemoved: number;
  peersAdded: number;
  peersRemoved: number;
}

/**
 * The pinned maps of one node, opened by path: needs no netns and no loaded object, so the
 * lab, the agent, `twill maps` and tests all read and write the same live maps.
 */
export class DatapathMaps {
  private constructor(
    readonly pinDir: string,
    private readonly config: TypedMap<FieldsOf<typeof u32Key>, FieldsOf<typeof configStruct>>,
    readonly subnets: TypedMap<FieldsOf<typeof subnetKeyStruct>, FieldsOf<typeof remoteStruct>>,
    readonly peers: TypedMap<FieldsOf<typeof peerKeyStruct>, FieldsOf<typeof peerStruct>>,
    private readonly statsArray: PerCpuArray<FieldsOf<typeof statsStruct>>,
    private readonly handles: BpfMap[],
  ) {}

  static open(pinDir: string): DatapathMaps {
    const opened: BpfMap[] = [];
    const pin = (name: MapName) => {
      const m = BpfMap.fromPin(`${pinDir}/${name}`);
      opened.push(m);
      return m;
    };
    try {
      return new DatapathMaps(
        pinDir,
        new TypedMap(pin('twill_config'), mapSpecs.twill_config.key, mapSpecs.twill_config.value),
        new TypedMap(pin('twill_subnets'), mapSpecs.twill_subnets.key, mapSpecs.twill_subnets.value),
        new TypedMap(pin('twill_peers'), mapSpecs.twill_peers.key, mapSpecs.twill_peers.value),
        new PerCpuArray(pin('twill_stats'), mapSpecs.twill_stats.value),
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

  /**
   * Brings the maps to the desired state by difference only. Order keeps traffic flowing:
   * a new peer is accepted by decap before encap starts sending to it, and a departing one
   * stops being sent to before its packets are refused.
   */
  sync(desired: DesiredMaps, known?: DesiredMaps): SyncResult {
    const peerDiff = diffMap(known?.peers ?? this.readPeers(), desired.peers);
    const subnetDiff = diffMap(known?.subnets ?? this.readSubnets(), desired.subnets);
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
