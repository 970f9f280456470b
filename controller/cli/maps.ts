import { existsSync } from 'node:fs';
import { readAttachState, type AttachState } from '../dataplane/attach-state.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import type { FamilyMaps, IpFamily } from '../dataplane/family-maps.js';
import {
  CONFIG6_ENABLED,
  isDeprecatedCounter,
  MONITOR_DROPS,
  MONITOR_TRACE,
  type Endpoint,
  type Remote,
  type TwillConfig,
  type TwillConfig6,
} from '../../maps/layout.js';
import { isDirect } from '../reconcile/desired.js';
import { MonitorSwitch } from '../monitor/control.js';
import { parseArgs } from './args.js';
import { mapsOpts } from './options.js';

export const counters = (o: object): Record<string, number> => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Number(v)]));

export interface TrafficCounters {
  encap_packets: number;
  encap_bytes: number;
  decap_packets: number;
  decap_bytes: number;
  /** dropped for an inner source outside the peer's subnet (absent from a node without the counter) */
  source_drops?: number;
}

export interface PeerTrafficDoc extends TrafficCounters {
  publicIp: string;
  subnet: string;
  vtepMac: string;
  statsSlot: number;
}

/** Every pinned map of a node, decoded; what `twill maps` prints and `twill status` builds on. */
export interface MapsDoc {
  pinDir: string;
  config?: TwillConfig;
  attach?: Pick<AttachState, 'encap' | 'decap'>;
  /** route: how pods' packets reach the subnet, in VXLAN or routed to the PublicIP as they are (host-gw, DirectRouting) */
  subnets: { subnet: string; publicIp: string; vtepMac: string; statsSlot: number; route: 'vxlan' | 'direct' }[];
  peers: { publicIp: string; subnet: string; vtepMac: string; statsSlot: number }[];
  /** twill_next_hops: the underlay MAC the programs send each peer's packets to (a peer left out goes through the kernel's neighbour table) */
  nextHops: { publicIp: string; mac: string }[];
  /** twill_stats summed over CPUs */
  stats: Record<string, number>;
  /** twill_peer_stats, per peer, summed over CPUs */
  traffic: PeerTrafficDoc[];
  /** traffic counted in slot 0 (entries written without a slot) */
  unattributed: TrafficCounters;
  /** twill_endpoints: the local pods the fast path serves (absent before this build attached) */
  endpoints?: { ip: string; ifindex: number; mac: string; gatewayMac: string; mtu: number; encapMtu: number }[];
  /** twill_path_stats summed over CPUs: what the fast path carried and what it left to the stack */
  path?: { send: Record<string, number>; receive: Record<string, number> };
  /** the IPv6 maps (absent before this build attached): twill_config6 and, while it is enabled, what IPv6 routes by */
  ipv6?: {
    config: TwillConfig6 | undefined;
    enabled: boolean;
    /** statsSlot: the peer's row in `traffic`, shared with its IPv4 entries (0: unattributed) */
    subnets: { subnet: string; publicIp: string; vtepMac: string; statsSlot: number }[];
    peers: { publicIp: string; subnet: string; vtepMac: string; statsSlot: number }[];
    endpoints: { ip: string; ifindex: number; mac: string; gatewayMac: string; mtu: number; encapMtu: number }[];
    /** twill_next_hops6: as `nextHops`, per PublicIPv6 (absent in a pin set without the map) */
    nextHops?: { publicIp: string; mac: string }[];
  };
  /** twill_monitor (absent before layout 5): whether a `twill monitor` listens, and events lost for want of room */
  monitor?: { drops: boolean; trace: boolean; traceSample: number; ownerPid: number; lost: number };
}

function readMonitorDoc(pinDir: string): MapsDoc['monitor'] {
  const sw = MonitorSwitch.open(pinDir);
  if (!sw) return undefined;
  try {
    const c = sw.read();
    return {
      drops: (c.flags & MONITOR_DROPS) !== 0,
      trace: (c.flags & MONITOR_TRACE) !== 0,
      traceSample: c.trace_sample,
      ownerPid: c.owner_pid,
      lost: Number(c.lost),
    };
  } finally {
    sw.close();
  }
}

const endpointDocs = (entries: Map<string, Endpoint>) =>
  [...entries].map(([ip, e]) => ({ ip, ifindex: e.ifindex, mac: e.mac, gatewayMac: e.gateway_mac, mtu: e.mtu, encapMtu: e.encap_mtu }));

function readIpv6Doc(maps: DatapathMaps): MapsDoc['ipv6'] {
  if (!maps.ipv6) return undefined;
  const config = maps.readConfig6();
  return {
    config,
    enabled: ((config?.flags ?? 0) & CONFIG6_ENABLED) !== 0,
    subnets: [...maps.ipv6.readSubnets()].map((e) => subnetDoc(e, config?.subnet6_len ?? 0)),
    peers: peerDocs(maps.ipv6),
    endpoints: endpointDocs(maps.ipv6.readEndpoints()),
    nextHops: maps.hasNextHops6 ? nextHopDocs(maps, 6) : undefined,
  };
}

const nextHopDocs = (maps: DatapathMaps, family: IpFamily) => [...maps.readNextHops(family)].map(([publicIp, mac]) => ({ publicIp, mac }));

const subnetDoc = ([base, r]: [string, Remote], subnetLen: number) => ({
  subnet: `${base}/${subnetLen}`,
  publicIp: r.public_ip,
  vtepMac: r.vtep_mac,
  statsSlot: r.stats_slot,
});

const peerDocs = (family: FamilyMaps) =>
  [...family.readPeers()].map(([ip, p]) => ({ publicIp: ip, subnet: `${p.subnet}/${p.subnet_len}`, vtepMac: p.vtep_mac, statsSlot: p.stats_slot }));

/** Reads the pins only: no etcd, no agent, no netns needed. */
export function readMapsDoc(pinDir: string): MapsDoc {
  if (!existsSync(`${pinDir}/twill_config`)) throw new Error(`no twill datapath is pinned under ${pinDir} (wrong --pin-dir, or the node runs kernel VXLAN)`);
  const maps = DatapathMaps.open(pinDir);
  try {
    const config = maps.readConfig();
    // The route (VXLAN or direct) is in the IPv4 document only, as it always was.
    const subnets = [...maps.ipv4.readSubnets()].map((e) => ({
      ...subnetDoc(e, config?.subnet_len ?? 0),
      route: isDirect(e[1]) ? ('direct' as const) : ('vxlan' as const),
    }));
    const peers = peerDocs(maps.ipv4);
    const { peers: perPeer, unattributed } = maps.peerTraffic();
    const traffic = perPeer.map(
      ({ publicIp, subnet, vtepMac, slot, ...c }) => ({ publicIp, subnet, vtepMac, statsSlot: slot, ...counters(c) }) as PeerTrafficDoc,
    );
    const attach = readAttachState(pinDir);
    const path = maps.pathStats();
    return {
      pinDir,
      config,
      attach: attach && { encap: attach.encap, decap: attach.decap },
      subnets,
      peers,
      nextHops: nextHopDocs(maps, 4),
      stats: counters(maps.stats()),
      traffic,
      unattributed: counters(unattributed) as unknown as TrafficCounters,
      endpoints: maps.ipv4.hasEndpoints ? endpointDocs(maps.ipv4.readEndpoints()) : undefined,
      path: path && { send: counters(path.send), receive: counters(path.receive) },
      ipv6: readIpv6Doc(maps),
      monitor: readMonitorDoc(pinDir),
    };
  } finally {
    maps.close();
  }
}

export const formatNodeLine = (c: TwillConfig) =>
  `${c.public_ip}  vtep ${c.vtep_mac}  subnet ${c.subnet}/${c.subnet_len}  network ${c.network}/${c.network_len}  vni ${c.vni}  port ${c.vxlan_port || 'none (host-gw)'}`;

/** "fast 120, to the stack: not_remote=4 conntrack=2" (zero reasons left out). */
export const formatPathLine = (c: Record<string, number>) => {
  const { fast, ...stack } = c;
  const reasons = Object.entries(stack).filter(([k, v]) => v !== 0 && !isDeprecatedCounter(k));
  return `fast ${fast}, to the stack: ${reasons.length ? reasons.map(([k, v]) => `${k}=${v}`).join(' ') : 'none'}`;
};

export const formatTrafficLine = (t: TrafficCounters) =>
  `out ${t.encap_packets} pkts ${t.encap_bytes} B, in ${t.decap_packets} pkts ${t.decap_bytes} B${t.source_drops ? `, ${t.source_drops} dropped for their source` : ''}`;

/** `twill maps`: every pinned map decoded (subnets as CIDRs, MACs as MACs), no etcd needed. */
export async function mapsCli(argv: string[]): Promise<number> {
  const o = parseArgs(argv, mapsOpts);
  const doc = readMapsDoc(o['pin-dir']);
  if (o.json) {
    console.log(JSON.stringify(doc, null, 2));
    return 0;
  }
  console.log(`pin dir   ${doc.pinDir}`);
  if (doc.config) console.log(`node      ${formatNodeLine(doc.config)}`);
  if (doc.attach)
    console.log(`attached  encap ${doc.attach.encap.mode} on ${doc.attach.encap.iface}, decap ${doc.attach.decap.mode} on ${doc.attach.decap.iface}`);
  console.log(`twill_subnets (${doc.subnets.length})`);
  for (const s of doc.subnets)
    console.log(`  ${s.subnet.padEnd(20)} -> ${s.publicIp.padEnd(16)} ${s.vtepMac}  slot ${s.statsSlot}${s.route === 'direct' ? '  direct' : ''}`);
  console.log(`twill_peers (${doc.peers.length})`);
  for (const p of doc.peers) console.log(`  ${p.publicIp.padEnd(16)} ${p.subnet.padEnd(20)} ${p.vtepMac}  slot ${p.statsSlot}`);
  console.log(`twill_next_hops (${doc.nextHops.length})`);
  for (const h of doc.nextHops) console.log(`  ${h.publicIp.padEnd(16)} ${h.mac}`);
  console.log(`twill_peer_stats (${doc.traffic.length} slots in use)`);
  for (const t of doc.traffic) console.log(`  ${t.publicIp.padEnd(16)} ${formatTrafficLine(t)}`);
  if (Object.values(doc.unattributed).some((v) => v !== 0)) console.log(`  ${'(no slot)'.padEnd(16)} ${formatTrafficLine(doc.unattributed)}`);
  if (doc.endpoints) {
    console.log(`twill_endpoints (${doc.endpoints.length})`);
    for (const e of doc.endpoints)
      console.log(
        `  ${e.ip.padEnd(16)} ifindex ${String(e.ifindex).padEnd(5)} ${e.mac}  gateway ${e.gatewayMac}  mtu ${e.mtu}, encapsulated up to ${e.encapMtu}`,
      );
  }
  if (doc.ipv6?.config && doc.ipv6.config.public_ip6 !== '::') {
    const c = doc.ipv6.config;
    console.log(
      `ipv6      ${c.public_ip6}  vtep ${c.vtep_mac6}  subnet ${c.subnet6}/${c.subnet6_len}  network ${c.network6}/${c.network6_len}  ${doc.ipv6.enabled ? 'on' : 'off (the tunnel device is not up)'}`,
    );
    console.log(`twill_subnets6 (${doc.ipv6.subnets.length})`);
    for (const s of doc.ipv6.subnets) console.log(`  ${s.subnet.padEnd(24)} -> ${s.publicIp.padEnd(24)} ${s.vtepMac}`);
    console.log(`twill_peers6 (${doc.ipv6.peers.length})`);
    for (const p of doc.ipv6.peers) console.log(`  ${p.publicIp.padEnd(24)} ${p.subnet.padEnd(24)} ${p.vtepMac}`);
    console.log(`twill_endpoints6 (${doc.ipv6.endpoints.length})`);
    for (const e of doc.ipv6.endpoints)
      console.log(`  ${e.ip.padEnd(24)} ifindex ${String(e.ifindex).padEnd(5)} ${e.mac}  mtu ${e.mtu}, encapsulated up to ${e.encapMtu}`);
    if (doc.ipv6.nextHops) {
      console.log(`twill_next_hops6 (${doc.ipv6.nextHops.length})`);
      for (const h of doc.ipv6.nextHops) console.log(`  ${h.publicIp.padEnd(24)} ${h.mac}`);
    }
  }
  if (doc.path) console.log(`twill_path_stats\n  send     ${formatPathLine(doc.path.send)}\n  receive  ${formatPathLine(doc.path.receive)}`);
  if (doc.monitor) {
    const m = doc.monitor;
    const on = [m.drops && 'drops', m.trace && `trace (1 in ${m.traceSample})`].filter(Boolean).join(' and ');
    console.log(
      `twill_monitor  ${on ? `${on} for twill monitor pid ${m.ownerPid}` : 'off (no twill monitor listening)'}${m.lost ? `, ${m.lost} events lost` : ''}`,
    );
  }
  console.log('twill_stats');
  for (const [k, v] of Object.entries(doc.stats)) if ((v !== 0 || !k.startsWith('drop_')) && !isDeprecatedCounter(k)) console.log(`  ${k.padEnd(22)} ${v}`);
  return 0;
}
