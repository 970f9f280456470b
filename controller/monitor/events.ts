import { formatIpv6 } from '../../maps/codec.js';
import {
  deprecatedCounters,
  EVENT_TRACE,
  eventHooks,
  isDeprecatedCounter,
  eventStruct,
  MONITOR_DROPS,
  MONITOR_TRACE,
  pathStatsStruct,
  statsStruct,
} from '../../maps/layout.js';
import { UsageError } from '../util/usage-error.js';
import { maskOf, parseCidr, parseIpv4 } from '../net/ipv4.js';
import { maskOf6, parseCidr6, parseIpv6 } from '../net/ipv6.js';

/*
 * The pure half of `twill monitor`: what a twill_event record says (decoded, its packet headers
 * read), which events a user asked for, and how they are printed. The side effects (pins, the
 * ring buffer, the control map, signals) are in controller/cli/monitor.ts and control.ts.
 */

/** The reasons events carry: the counters' own names, as `twill maps` prints them. */
export const dropReasons = statsStruct.fields.filter((f) => f.name.startsWith('drop_')).map((f) => f.name);
export const traceReasons = pathStatsStruct.fields.map((f) => f.name);

const reasonName = (fields: readonly { name: string; offset: number }[], index: number) =>
  fields.find((f) => f.offset === index * 8)?.name ?? `reason_${index}`;

export type EventKind = 'drop' | 'trace';

export interface Endpoints {
  src: string;
  dst: string;
}

/** One event as `--json` prints it (an interface: fields are added, never renamed or removed). */
export interface MonitorEvent {
  /** wall-clock time of the event (ISO 8601, microseconds in `timeNs`) */
  time: string;
  /** bpf_ktime_get_ns() of the event: nanoseconds since boot, CLOCK_MONOTONIC */
  timeNs: string;
  kind: EventKind;
  /** drop: the twill_stats counter; trace: the twill_path_stats counter (`fast`, or why the stack got it) */
  reason: string;
  /** trace: which path the packet took */
  path?: 'fast' | 'stack';
  hook: string;
  program: string;
  ifindex: number;
  /** bytes of the packet at the hook */
  len: number;
  /** VXLAN's outer addresses: from the captured headers, or from the tunnel key where twill-rx had already removed them */
  outer?: Endpoints & { family: 4 | 6; vni?: number };
  inner?: Endpoints & { family: 4 | 6; protocol: string; sport?: number; dport?: number };
  /** the peer node: its twill_peer_stats slot (0: none known) and PublicIP */
  peer: { slot: number; publicIp?: string };
  /** pod-send: the pod whose veth it came from, by its addresses (twill_endpoints); absent for a veth no endpoint names */
  pod?: { addresses: string[] };
}

interface L3 {
  family: 4 | 6;
  src: string;
  dst: string;
  proto: number;
  l4: number;
}

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_HLEN = 14;
const UDP_VXLAN_HEADERS = 8 + 8; // UDP, VXLAN

const ipv4At = (b: Buffer, at: number) => `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;

function l3At(b: Buffer, at: number, ethertype: number): L3 | undefined {
  if (ethertype === ETH_P_IP && b.length >= at + 20 && b[at] >> 4 === 4)
    return { family: 4, src: ipv4At(b, at + 12), dst: ipv4At(b, at + 16), proto: b[at + 9], l4: at + (b[at] & 15) * 4 };
  if (ethertype === ETH_P_IPV6 && b.length >= at + 40 && b[at] >> 4 === 6)
    return { family: 6, src: formatIpv6(b.subarray(at + 8, at + 24)), dst: formatIpv6(b.subarray(at + 24, at + 40)), proto: b[at + 6], l4: at + 40 };
  return undefined;
}

const protocols: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' };

function inner(l3: L3, b: Buffer): NonNullable<MonitorEvent['inner']> {
  const out: NonNullable<MonitorEvent['inner']> = { family: l3.family, src: l3.src, dst: l3.dst, protocol: protocols[l3.proto] ?? String(l3.proto) };
  if ((l3.proto === 6 || l3.proto === 17) && b.length >= l3.l4 + 4) {
    out.sport = b.readUInt16BE(l3.l4);
    out.dport = b.readUInt16BE(l3.l4 + 2);
  }
  return out;
}

/**
 * The addresses in a packet's first bytes. A UDP packet to the VXLAN port that carries an inner
 * Ethernet frame is VXLAN: its addresses are the outer ones and the frame's are the inner ones.
 * Anything else is an inner packet as it is (what a pod or the stack sent, or what decap left).
 */
export function readHeaders(headers: Buffer, vxlanPort: number): Pick<MonitorEvent, 'outer' | 'inner'> {
  if (headers.length < ETH_HLEN) return {};
  const l3 = l3At(headers, ETH_HLEN, headers.readUInt16BE(12));
  if (!l3) return {};
  const vxlanAt = l3.l4 + 8;
  const isVxlan = l3.proto === 17 && vxlanPort !== 0 && headers.length >= l3.l4 + 4 && headers.readUInt16BE(l3.l4 + 2) === vxlanPort;
  if (!isVxlan) return { inner: inner(l3, headers) };
  const outer: NonNullable<MonitorEvent['outer']> = { family: l3.family, src: l3.src, dst: l3.dst };
  if (headers.length >= vxlanAt + 8) outer.vni = headers.readUIntBE(vxlanAt + 4, 3);
  const innerEth = l3.l4 + UDP_VXLAN_HEADERS;
  const innerL3 = headers.length >= innerEth + ETH_HLEN ? l3At(headers, innerEth + ETH_HLEN, headers.readUInt16BE(innerEth + 12)) : undefined;
  return innerL3 ? { outer, inner: inner(innerL3, headers) } : { outer };
}

export interface DecodeContext {
  /** twill_config.vxlan_port (0: host-gw, no VXLAN) */
  vxlanPort: number;
  /** wall clock minus CLOCK_MONOTONIC, in nanoseconds: turns bpf_ktime_get_ns() into a time of day */
  wallOffsetNs: bigint;
  /** a peer's PublicIP by its stats slot, of the event's address family where the peer has one */
  peerBySlot(slot: number, family: 4 | 6): string | undefined;
  /** the addresses of the pod behind a host veth, by its ifindex */
  podByIfindex?(ifindex: number): string[] | undefined;
}

const RECEIVE_HOOKS = new Set(['xdp-decap', 'tc-decap', 'tunnel-rx']);
const fieldOffset = (name: string) => eventStruct.fields.find((f) => f.name === name)!.offset;

/** A twill_event record, as the ring buffer hands it over. */
export function decodeEvent(record: Buffer, ctx: DecodeContext): MonitorEvent {
  const e = eventStruct.decode(record);
  const kind: EventKind = e.kind === EVENT_TRACE ? 'trace' : 'drop';
  const hook = eventHooks[e.hook] ?? { hook: `hook-${e.hook}`, program: 'unknown' };
  const reason = kind === 'drop' ? reasonName(statsStruct.fields, e.reason) : reasonName(pathStatsStruct.fields, e.reason);
  const { outer: fromHeaders, inner: innerEp } = readHeaders(e.headers.subarray(0, e.captured), ctx.vxlanPort);
  let outer = fromHeaders;
  if (!outer && (e.tunnel_family === 4 || e.tunnel_family === 6)) {
    // An IPv4 tunnel address is in the first 4 of the 16 bytes, which the codec reads as IPv6.
    const address = (f: 'tunnel_src' | 'tunnel_dst') => (e.tunnel_family === 4 ? ipv4At(record, fieldOffset(f)) : e[f]);
    outer = { family: e.tunnel_family, src: address('tunnel_src'), dst: address('tunnel_dst') };
  }
  const receive = RECEIVE_HOOKS.has(hook.hook);
  const family = outer?.family ?? innerEp?.family ?? 4;
  const publicIp = (e.peer_slot ? ctx.peerBySlot(e.peer_slot, family) : undefined) ?? (receive ? outer?.src : outer?.dst);
  const wallNs = e.time_ns + ctx.wallOffsetNs;
  const event: MonitorEvent = {
    time: new Date(Number(wallNs / 1_000_000n)).toISOString(),
    timeNs: e.time_ns.toString(),
    kind,
    reason,
    hook: hook.hook,
    program: hook.program,
    ifindex: e.ifindex,
    len: e.len,
    peer: publicIp ? { slot: e.peer_slot, publicIp } : { slot: e.peer_slot },
  };
  if (kind === 'trace') event.path = reason === 'fast' ? 'fast' : 'stack';
  const pod = hook.hook === 'pod-send' ? ctx.podByIfindex?.(e.ifindex) : undefined;
  if (pod) event.pod = { addresses: pod };
  if (outer) event.outer = outer;
  if (innerEp) event.inner = innerEp;
  return event;
}

/** What a user asked `twill monitor` for. */
export interface MonitorFilter {
  kinds: ReadonlySet<EventKind>;
  /** empty: every reason */
  reasons: ReadonlySet<string>;
  /** an address or CIDR any of the event's addresses must be in */
  address?: AddressMatch;
}

export type AddressMatch = { family: 4; ip: number; len: number } | { family: 6; ip: bigint; len: number };

/** `10.244.1.5`, `10.244.1.0/24`, `fd00::1`, `fd00::/64`; undefined if it is none of these. */
export function parseAddressMatch(text: string): AddressMatch | undefined {
  const c4 = text.includes('/') ? parseCidr(text) : ((ip) => (ip === undefined ? undefined : { ip, len: 32 }))(parseIpv4(text));
  if (c4) return { family: 4, ...c4 };
  const c6 = text.includes('/') ? parseCidr6(text) : ((ip) => (ip === undefined ? undefined : { ip, len: 128 }))(parseIpv6(text));
  if (c6) return { family: 6, ...c6 };
  return undefined;
}

function addressIn(m: AddressMatch, address: string): boolean {
  if (m.family === 4) {
    const ip = parseIpv4(address);
    return ip !== undefined && (ip & maskOf(m.len)) >>> 0 === m.ip;
  }
  const ip = parseIpv6(address);
  return ip !== undefined && (ip & maskOf6(m.len)) === m.ip;
}

export const eventAddresses = (e: MonitorEvent): string[] =>
  [e.outer?.src, e.outer?.dst, e.inner?.src, e.inner?.dst, e.peer.publicIp].filter((a): a is string => a !== undefined);

export function matches(e: MonitorEvent, f: MonitorFilter): boolean {
  if (!f.kinds.has(e.kind)) return false;
  if (f.reasons.size > 0 && !f.reasons.has(e.reason)) return false;
  const m = f.address;
  if (m && !eventAddresses(e).some((a) => addressIn(m, a))) return false;
  return true;
}

const hostPort = (a: string, port: number | undefined) => (port === undefined ? a : a.includes(':') ? `[${a}]:${port}` : `${a}:${port}`);

/**
 * One line per event: "19:04:05.123 drop drop_bad_vni tc-decap if 3 outer 192.168.114.2 -> 192.168.114.1 vni 2
 * inner udp 10.244.2.77:40000 -> 10.244.1.2:9999 peer 192.168.114.2 (slot 1) len 120".
 */
export function formatEvent(e: MonitorEvent): string {
  const what = e.kind === 'drop' ? `drop ${e.reason}` : e.path === 'fast' ? 'trace fast' : `trace stack ${e.reason}`;
  const parts = [e.time.slice(11, 23), what, e.hook, `if ${e.ifindex}`];
  if (e.outer) parts.push(`outer ${e.outer.src} -> ${e.outer.dst}${e.outer.vni === undefined ? '' : ` vni ${e.outer.vni}`}`);
  parts.push(e.inner ? `inner ${e.inner.protocol} ${hostPort(e.inner.src, e.inner.sport)} -> ${hostPort(e.inner.dst, e.inner.dport)}` : 'inner -');
  if (e.pod) parts.push(`pod ${e.pod.addresses.join(',')}`);
  parts.push(`peer ${e.peer.publicIp ?? '-'}${e.peer.slot ? ` (slot ${e.peer.slot})` : ''}`);
  parts.push(`len ${e.len}`);
  return parts.join(' ');
}

export interface MonitorOptions {
  pinDir: string;
  json: boolean;
  filter: MonitorFilter;
  /** twill_monitor.flags to set */
  flags: number;
  /** keep 1 trace decision in this many */
  traceSample: number;
  /** stop after this many events printed; 0: until a signal */
  count: number;
}

const TYPES: Record<string, EventKind[]> = { drop: ['drop'], trace: ['trace'], all: ['drop', 'trace'] };

/** Checks the flags of `twill monitor` as parsed; a UsageError names what is wrong. */
export function monitorOptions(
  o: { 'pin-dir': string; json: boolean; type: string; reason: string; address: string; 'trace-sample': number; count: number },
  given: ReadonlySet<string>,
): MonitorOptions {
  const kinds = TYPES[o.type];
  if (!kinds) throw new UsageError(`--type ${o.type}: expected drop, trace or all`);
  const valid = new Set([...(kinds.includes('drop') ? dropReasons : []), ...(kinds.includes('trace') ? traceReasons : [])]);
  // A deprecated counter's name stands for the counters that replaced it.
  const reasons = (o.reason === '' ? [] : o.reason.split(',').map((r) => r.trim())).flatMap((r) =>
    isDeprecatedCounter(r) && deprecatedCounters[r].every((p) => valid.has(p)) ? deprecatedCounters[r] : [r],
  );
  const unknown = reasons.filter((r) => !valid.has(r));
  if (unknown.length) throw new UsageError(`--reason ${unknown.join(',')}: not a reason of --type ${o.type} events; expected some of ${[...valid].join(', ')}`);
  let address: AddressMatch | undefined;
  if (o.address !== '') {
    address = parseAddressMatch(o.address);
    if (!address) throw new UsageError(`--address ${o.address}: expected an IPv4 or IPv6 address or CIDR`);
  }
  const sample = o['trace-sample'];
  if (!Number.isInteger(sample) || sample < 1 || sample > 0xffffffff)
    throw new UsageError(`--trace-sample ${sample}: expected a whole number from 1 (every decision) up`);
  if (given.has('trace-sample') && !kinds.includes('trace')) throw new UsageError(`--trace-sample applies to traces: add --type trace or --type all`);
  if (!Number.isInteger(o.count) || o.count < 0) throw new UsageError(`--count ${o.count}: expected a whole number (0: no limit)`);
  return {
    pinDir: o['pin-dir'],
    json: o.json,
    filter: { kinds: new Set(kinds), reasons: new Set(reasons), address },
    flags: (kinds.includes('drop') ? MONITOR_DROPS : 0) | (kinds.includes('trace') ? MONITOR_TRACE : 0),
    traceSample: sample,
    count: o.count,
  };
}
