import { struct, type Value } from './codec.js';

/*
 * The TypeScript face of bpf/include/twill_maps.h. Field order, kinds and names must
 * match the C structs exactly; test/integration/btf-layout.test.ts enforces it.
 */

export const LAYOUT_VERSION = 8;

/** twill_config.flags: pod traffic to and from remote pods may bypass the host stack. */
export const CONFIG_FAST_PATH = 0x1;
/** twill_config.flags: a pod's packet from an address that is not its own is dropped (--pod-source-check drop). */
export const CONFIG_POD_SOURCE_CHECK = 0x2;
/** twill_remote.flags: the peer shares our L2 segment; its pods are routed to its PublicIP, not through VXLAN. */
export const REMOTE_DIRECT = 0x1;

export const u32Key = struct('__u32', { index: 'u32' });

export const configStruct = struct('twill_config', {
  public_ip: 'ipv4',
  vtep_mac: 'mac',
  underlay_mac: 'mac',
  subnet: 'ipv4',
  network: 'ipv4',
  subnet_len: 'u8',
  network_len: 'u8',
  vxlan_port: 'u16',
  vni: 'u32',
  underlay_ifindex: 'u32',
  flags: 'u32',
});

export const subnetKeyStruct = struct('twill_subnet_key', { subnet: 'ipv4' });
export const remoteStruct = struct('twill_remote', { public_ip: 'ipv4', vtep_mac: 'mac', flags: 'u16', stats_slot: 'u16' });

export const peerKeyStruct = struct('twill_peer_key', { public_ip: 'ipv4' });
export const peerStruct = struct('twill_peer', { subnet: 'ipv4', vtep_mac: 'mac', subnet_len: 'u8', flags: 'u8', stats_slot: 'u16' });
/** twill_next_hops' value, keyed by a peer's PublicIP (twill_peer_key); twill_next_hops6's, by its PublicIPv6 (twill_peer6_key). */
export const nextHopStruct = struct('twill_next_hop', { mac: 'mac', flags: 'u16' });

export const peerStatsStruct = struct('twill_peer_stats', {
  encap_packets: 'u64',
  encap_bytes: 'u64',
  decap_packets: 'u64',
  decap_bytes: 'u64',
  source_drops: 'u64',
});

/** Slot 0 of twill_peer_stats is never given to a peer: it counts entries that carry no slot. */
export const UNATTRIBUTED_STATS_SLOT = 0;
export const MAX_STATS_SLOTS = 8192;

export const statsStruct = struct('twill_stats', {
  encap_packets: 'u64',
  encap_bytes: 'u64',
  decap_packets: 'u64',
  decap_bytes: 'u64',
  drop_no_peer: 'u64',
  drop_not_ip: 'u64',
  drop_too_big: 'u64',
  drop_encap_error: 'u64',
  drop_unknown_source: 'u64',
  drop_bad_vni: 'u64',
  drop_malformed: 'u64',
  drop_ip_options: 'u64',
  drop_fragment: 'u64',
  drop_inner_not_ipv4: 'u64',
  drop_inner_dst: 'u64',
  drop_inner_not_ipv6: 'u64',
  drop_pod_source: 'u64',
  drop_peer_source: 'u64',
  drop_ipv6_off: 'u64',
});

/** twill_config6.flags: IPv6 is encapsulated and accepted (the cluster has an IPv6Network and this node a v6 lease). */
export const CONFIG6_ENABLED = 0x1;

export const config6Struct = struct('twill_config6', {
  public_ip6: 'ipv6',
  subnet6: 'ipv6',
  network6: 'ipv6',
  vtep_mac6: 'mac',
  subnet6_len: 'u8',
  network6_len: 'u8',
  tunnel_ifindex: 'u32',
  flags: 'u32',
});
export const subnet6KeyStruct = struct('twill_subnet6_key', { subnet6: 'ipv6' });
export const remote6Struct = struct('twill_remote6', { public_ip6: 'ipv6', vtep_mac6: 'mac', flags: 'u16', stats_slot: 'u16' });
export const peer6KeyStruct = struct('twill_peer6_key', { public_ip6: 'ipv6' });
export const peer6Struct = struct('twill_peer6', { subnet6: 'ipv6', vtep_mac6: 'mac', subnet6_len: 'u8', flags: 'u8', stats_slot: 'u16' });

export const endpointKeyStruct = struct('twill_endpoint_key', { ip: 'ipv4' });
export const endpointStruct = struct('twill_endpoint', { ifindex: 'u32', mac: 'mac', gateway_mac: 'mac', mtu: 'u16', encap_mtu: 'u16', flags: 'u32' });
const MAX_ENDPOINTS = 8192;
/** twill_endpoints6: the same value as twill_endpoints; encap_mtu is the underlay's MTU less 70 (IPv6 VXLAN). */
export const endpoint6KeyStruct = struct('twill_endpoint6_key', { ip6: 'ipv6' });

/** twill_path_stats: entry 0 counts what pods send, entry 1 what arrives for them. */
export const PATH_SEND = 0;
export const PATH_RECEIVE = 1;
export const pathStatsStruct = struct('twill_path_stats', {
  fast: 'u64',
  not_ip: 'u64',
  not_remote: 'u64',
  no_endpoint: 'u64',
  source: 'u64',
  conntrack: 'u64',
  ttl: 'u64',
  fragment: 'u64',
  protocol: 'u64',
  too_big: 'u64',
  disabled: 'u64',
  error: 'u64',
  ipv6_off: 'u64',
});

/** twill_monitor.flags: what `twill monitor` asks the programs for. */
export const MONITOR_DROPS = 0x1;
export const MONITOR_TRACE = 0x2;
export const monitorStruct = struct('twill_monitor', {
  flags: 'u32',
  trace_sample: 'u32',
  owner_pid: 'u32',
  owner_pidns: 'u32',
  owner_start: 'u64',
  lost: 'u64',
});

/** twill_event.kind */
export const EVENT_DROP = 1;
export const EVENT_TRACE = 2;
/** twill_event.hook, by the program that saw the packet */
export const eventHooks: Record<number, { hook: string; program: string }> = {
  1: { hook: 'tc-encap', program: 'twill_encap' },
  2: { hook: 'pod-send', program: 'twill_from_pod' },
  3: { hook: 'xdp-decap', program: 'twill_decap' },
  4: { hook: 'tc-decap', program: 'twill_decap_tc' },
  5: { hook: 'tunnel-rx', program: 'twill_tunnel_rx' },
};
export const eventStruct = struct('twill_event', {
  time_ns: 'u64',
  ifindex: 'u32',
  len: 'u32',
  kind: 'u8',
  hook: 'u8',
  reason: 'u8',
  tunnel_family: 'u8',
  peer_slot: 'u16',
  captured: 'u16',
  tunnel_src: 'ipv6',
  tunnel_dst: 'ipv6',
  headers: 'frame',
});
/** The ring buffer twill_events: no key or value, max_entries is its size in bytes. */
export const EVENTS_MAP = 'twill_events';
export const EVENTS_BYTES = 256 * 1024;

export type TwillConfig = Value<typeof configStruct>;
export type Remote = Value<typeof remoteStruct>;
export type Peer = Value<typeof peerStruct>;
export type NextHop = Value<typeof nextHopStruct>;
/** twill_stats as the map holds it; Stats is what twill reports (with the deprecated names). */
export type StatsFields = Value<typeof statsStruct>;
export type PeerStats = Value<typeof peerStatsStruct>;
export type Endpoint = Value<typeof endpointStruct>;
export type PathStatsFields = Value<typeof pathStatsStruct>;
export type TwillConfig6 = Value<typeof config6Struct>;
export type Remote6 = Value<typeof remote6Struct>;
export type Peer6 = Value<typeof peer6Struct>;
export type MonitorControl = Value<typeof monitorStruct>;
export type TwillEvent = Value<typeof eventStruct>;

/*
 * Counters that a layout change split, still reported under their old name, as the sum of what
 * replaced them, wherever twill's output is machine-read: `twill maps --json`, `twill status
 * --json`, /metrics and `twill monitor --reason`. Human output shows only the new names.
 * Layout 8 split "not IPv4", which also counted IPv6 on a node without IPv6, into "not IP" and
 * "IPv6 off". The old names go no sooner than layout 10.
 */
export const deprecatedCounters = {
  drop_not_ipv4: ['drop_not_ip', 'drop_ipv6_off'],
  not_ipv4: ['not_ip', 'ipv6_off'],
} as const satisfies Record<string, readonly [keyof StatsFields, keyof StatsFields] | readonly [keyof PathStatsFields, keyof PathStatsFields]>;
export type DeprecatedCounter = keyof typeof deprecatedCounters;
export const isDeprecatedCounter = (name: string): name is DeprecatedCounter => Object.hasOwn(deprecatedCounters, name);

/** twill_stats as twill reports it: the map's counters and, until layout 10, drop_not_ipv4. */
export type Stats = StatsFields & { drop_not_ipv4: bigint };
/** twill_path_stats as twill reports it: the map's counters and, until layout 10, not_ipv4. */
export type PathStats = PathStatsFields & { not_ipv4: bigint };

/** The counters with each deprecated name whose parts they have, placed right after its first part. */
export function withDeprecatedCounters(counters: StatsFields): Stats;
export function withDeprecatedCounters(counters: PathStatsFields): PathStats;
export function withDeprecatedCounters(counters: Record<string, bigint>): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (const [name, value] of Object.entries(counters)) {
    out[name] = value;
    for (const [old, parts] of Object.entries(deprecatedCounters))
      if (parts[0] === name && parts.every((p) => p in counters)) out[old] = parts.reduce((sum, p) => sum + counters[p], 0n);
  }
  return out;
}

/** Every pinned map: its name (also the pin file name), kind, and codecs. */
export const mapSpecs = {
  twill_config: { kind: 'array', key: u32Key, value: configStruct, maxEntries: 1 },
  twill_subnets: { kind: 'hash', key: subnetKeyStruct, value: remoteStruct, maxEntries: 65536 },
  twill_peers: { kind: 'hash', key: peerKeyStruct, value: peerStruct, maxEntries: 65536 },
  twill_next_hops: { kind: 'hash', key: peerKeyStruct, value: nextHopStruct, maxEntries: 65536 },
  twill_stats: { kind: 'percpu_array', key: u32Key, value: statsStruct, maxEntries: 1 },
  twill_peer_stats: { kind: 'percpu_array', key: u32Key, value: peerStatsStruct, maxEntries: MAX_STATS_SLOTS },
  twill_endpoints: { kind: 'hash', key: endpointKeyStruct, value: endpointStruct, maxEntries: MAX_ENDPOINTS },
  twill_path_stats: { kind: 'percpu_array', key: u32Key, value: pathStatsStruct, maxEntries: 2 },
  twill_config6: { kind: 'array', key: u32Key, value: config6Struct, maxEntries: 1 },
  twill_subnets6: { kind: 'hash', key: subnet6KeyStruct, value: remote6Struct, maxEntries: 65536 },
  twill_peers6: { kind: 'hash', key: peer6KeyStruct, value: peer6Struct, maxEntries: 65536 },
  twill_endpoints6: { kind: 'hash', key: endpoint6KeyStruct, value: endpointStruct, maxEntries: MAX_ENDPOINTS },
  twill_next_hops6: { kind: 'hash', key: peer6KeyStruct, value: nextHopStruct, maxEntries: 65536 },
  twill_monitor: { kind: 'array', key: u32Key, value: monitorStruct, maxEntries: 1 },
} as const;

export type MapName = keyof typeof mapSpecs;
