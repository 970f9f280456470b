import { describe, expect, it } from 'vitest';
import { UsageError } from '../../controller/cli/args.js';
import { ownerAlive } from '../../controller/monitor/control.js';
import {
  decodeEvent,
  dropReasons,
  formatEvent,
  matches,
  monitorOptions,
  parseAddressMatch,
  readHeaders,
  traceReasons,
  type DecodeContext,
  type MonitorEvent,
} from '../../controller/monitor/events.js';
import { EVENT_DROP, EVENT_TRACE, eventStruct, MONITOR_DROPS, MONITOR_TRACE, pathStatsStruct, statsStruct, type MonitorControl } from '../../maps/layout.js';

/* Packets built byte by byte, as the programs capture them (from the Ethernet header on). */
const eth = (type: number) => Buffer.concat([Buffer.alloc(12, 0x02), Buffer.from([type >> 8, type & 255])]);
const v4 = (a: string) => Buffer.from(a.split('.').map(Number));
function ipv4(src: string, dst: string, proto: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h[8] = 64;
  h[9] = proto;
  v4(src).copy(h, 12);
  v4(dst).copy(h, 16);
  return Buffer.concat([h, payload]);
}
function ipv6(src: string, dst: string, proto: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(payload.length, 4);
  h[6] = proto;
  h[7] = 64;
  const words = (a: string) => {
    const [head, tail = ''] = a.split('::');
    const hs = head ? head.split(':') : [];
    const ts = tail ? tail.split(':') : [];
    return [...hs, ...Array<string>(8 - hs.length - ts.length).fill('0'), ...ts].map((w) => parseInt(w, 16));
  };
  words(src).forEach((w, i) => h.writeUInt16BE(w, 8 + 2 * i));
  words(dst).forEach((w, i) => h.writeUInt16BE(w, 24 + 2 * i));
  return Buffer.concat([h, payload]);
}
function udp(sport: number, dport: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([h, payload]);
}
const vxlan = (vni: number, frame: Buffer) => Buffer.concat([Buffer.from([0x08, 0, 0, 0, vni >> 16, (vni >> 8) & 255, vni & 255, 0]), frame]);

const innerUdp = Buffer.concat([eth(0x0800), ipv4('10.244.2.77', '10.244.1.2', 17, udp(40000, 9999, Buffer.from('probe')))]);
const vxlanPacket = (vni: number, src = '192.168.114.2', dst = '192.168.114.1') =>
  Buffer.concat([eth(0x0800), ipv4(src, dst, 17, udp(45000, 8472, vxlan(vni, innerUdp)))]);

const reasonIndex = (fields: typeof statsStruct.fields, name: string) => fields.find((f) => f.name === name)!.offset / 8;

function record(o: {
  kind: number;
  hook: number;
  reason: number;
  slot?: number;
  headers?: Buffer;
  tunnel?: { family: number; src: string; dst: string };
}): Buffer {
  const headers = (o.headers ?? Buffer.alloc(0)).subarray(0, 128);
  const buf = eventStruct.encode({
    time_ns: 5_000_000_000n,
    ifindex: 7,
    len: o.headers?.length ?? 0,
    kind: o.kind,
    hook: o.hook,
    reason: o.reason,
    tunnel_family: o.tunnel?.family ?? 0,
    peer_slot: o.slot ?? 0,
    captured: headers.length,
    tunnel_src: '::',
    tunnel_dst: '::',
    headers,
  });
  // The programs put an IPv4 tunnel address in the first 4 bytes of the 16.
  if (o.tunnel?.family === 4) {
    v4(o.tunnel.src).copy(buf, eventStruct.fields.find((f) => f.name === 'tunnel_src')!.offset);
    v4(o.tunnel.dst).copy(buf, eventStruct.fields.find((f) => f.name === 'tunnel_dst')!.offset);
  }
  return buf;
}

// Slot 3: a dual-stack peer, whose IPv4 and IPv6 entries share the slot.
const ctx: DecodeContext = {
  vxlanPort: 8472,
  wallOffsetNs: 1_700_000_000_000_000_000n,
  peerBySlot: (s, family) => (s === 3 ? (family === 6 ? 'fd00:192:168:114::2' : '192.168.114.2') : undefined),
};

describe('reasons', () => {
  it('are the names of the counters twill maps prints: every drop_ field of twill_stats, every field of twill_path_stats', () => {
    expect(dropReasons).toEqual(statsStruct.fields.map((f) => f.name).filter((n) => n.startsWith('drop_')));
    expect(dropReasons).toContain('drop_bad_vni');
    expect(traceReasons).toEqual(pathStatsStruct.fields.map((f) => f.name));
    expect(traceReasons[0]).toBe('fast');
  });
});

describe('decodeEvent', () => {
  it('a drop in tc decap: reason from twill_stats, outer and inner addresses from the VXLAN headers, the peer by its slot', () => {
    const e = decodeEvent(
      record({ kind: EVENT_DROP, hook: 4, reason: reasonIndex(statsStruct.fields, 'drop_bad_vni'), slot: 3, headers: vxlanPacket(2) }),
      ctx,
    );
    expect(e).toMatchObject({
      kind: 'drop',
      reason: 'drop_bad_vni',
      hook: 'tc-decap',
      program: 'twill_decap_tc',
      ifindex: 7,
      outer: { family: 4, src: '192.168.114.2', dst: '192.168.114.1', vni: 2 },
      inner: { family: 4, src: '10.244.2.77', dst: '10.244.1.2', protocol: 'udp', sport: 40000, dport: 9999 },
      peer: { slot: 3, publicIp: '192.168.114.2' },
    });
    expect(e.path).toBeUndefined();
    expect(e.time).toBe(new Date(Number((5_000_000_000n + ctx.wallOffsetNs) / 1_000_000n)).toISOString());
  });

  it('VXLAN from no peer: slot 0, the peer address is the outer source', () => {
    const e = decodeEvent(
      record({ kind: EVENT_DROP, hook: 3, reason: reasonIndex(statsStruct.fields, 'drop_unknown_source'), headers: vxlanPacket(1, '192.168.114.254') }),
      ctx,
    );
    expect(e).toMatchObject({ reason: 'drop_unknown_source', hook: 'xdp-decap', program: 'twill_decap', peer: { slot: 0, publicIp: '192.168.114.254' } });
  });

  it('twill-rx: the outer addresses come from the tunnel key, the headers are the inner packet', () => {
    const e = decodeEvent(
      record({
        kind: EVENT_DROP,
        hook: 5,
        reason: reasonIndex(statsStruct.fields, 'drop_unknown_source'),
        headers: innerUdp,
        tunnel: { family: 4, src: '192.168.114.254', dst: '192.168.114.1' },
      }),
      ctx,
    );
    expect(e).toMatchObject({
      hook: 'tunnel-rx',
      outer: { family: 4, src: '192.168.114.254', dst: '192.168.114.1' },
      inner: { src: '10.244.2.77', dst: '10.244.1.2' },
      peer: { publicIp: '192.168.114.254' },
    });
  });

  it('a trace: fast is the fast path, any other twill_path_stats reason the stack', () => {
    const fast = decodeEvent(record({ kind: EVENT_TRACE, hook: 2, reason: 0, slot: 3, headers: vxlanPacket(1, '192.168.114.1', '192.168.114.2') }), ctx);
    expect(fast).toMatchObject({
      kind: 'trace',
      reason: 'fast',
      path: 'fast',
      hook: 'pod-send',
      program: 'twill_from_pod',
      peer: { publicIp: '192.168.114.2' },
    });
    const stack = decodeEvent(record({ kind: EVENT_TRACE, hook: 4, reason: reasonIndex(pathStatsStruct.fields, 'conntrack'), headers: innerUdp }), ctx);
    expect(stack).toMatchObject({ reason: 'conntrack', path: 'stack', inner: { src: '10.244.2.77' } });
    expect(stack.outer).toBeUndefined();
  });

  it('an encap drop: the packet is the inner one, no outer; a slot names the peer it was for', () => {
    const e = decodeEvent(record({ kind: EVENT_DROP, hook: 1, reason: reasonIndex(statsStruct.fields, 'drop_too_big'), slot: 3, headers: innerUdp }), ctx);
    expect(e).toMatchObject({ hook: 'tc-encap', program: 'twill_encap', reason: 'drop_too_big', peer: { slot: 3, publicIp: '192.168.114.2' } });
    expect(e.outer).toBeUndefined();
  });
});

describe('readHeaders', () => {
  it('IPv6 VXLAN carrying IPv6', () => {
    const inner = Buffer.concat([eth(0x86dd), ipv6('fd10:244:0:2::5', 'fd10:244:0:1::2', 58, Buffer.alloc(8))]);
    const pkt = Buffer.concat([eth(0x86dd), ipv6('fd00:192:168:114::2', 'fd00:192:168:114::1', 17, udp(45000, 8472, vxlan(1, inner)))]);
    expect(readHeaders(pkt.subarray(0, 128), 8472)).toEqual({
      outer: { family: 6, src: 'fd00:192:168:114::2', dst: 'fd00:192:168:114::1', vni: 1 },
      inner: { family: 6, src: 'fd10:244:0:2::5', dst: 'fd10:244:0:1::2', protocol: 'icmpv6' },
    });
  });

  it("an IPv6 event from a dual-stack peer names the peer's PublicIPv6, an IPv4 one its PublicIP", () => {
    const inner = Buffer.concat([eth(0x86dd), ipv6('fd10:244:0:2::5', 'fd10:244:0:1::2', 58, Buffer.alloc(8))]);
    const pkt = Buffer.concat([eth(0x86dd), ipv6('fd00:192:168:114::2', 'fd00:192:168:114::1', 17, udp(45000, 8472, vxlan(2, inner)))]);
    const e6 = decodeEvent(record({ kind: EVENT_DROP, hook: 4, reason: reasonIndex(statsStruct.fields, 'drop_bad_vni'), slot: 3, headers: pkt }), ctx);
    expect(e6.peer).toEqual({ slot: 3, publicIp: 'fd00:192:168:114::2' });
    const e4 = decodeEvent(
      record({ kind: EVENT_DROP, hook: 4, reason: reasonIndex(statsStruct.fields, 'drop_bad_vni'), slot: 3, headers: vxlanPacket(2) }),
      ctx,
    );
    expect(e4.peer).toEqual({ slot: 3, publicIp: '192.168.114.2' });
  });

  it('VXLAN whose inner frame is not IP (ARP): outer only', () => {
    const pkt = Buffer.concat([
      eth(0x0800),
      ipv4('192.168.114.2', '192.168.114.1', 17, udp(45000, 8472, vxlan(1, Buffer.concat([eth(0x0806), Buffer.alloc(28)])))),
    ]);
    expect(readHeaders(pkt, 8472)).toEqual({ outer: { family: 4, src: '192.168.114.2', dst: '192.168.114.1', vni: 1 } });
  });

  it('UDP to another port is an inner packet; so is everything on a host-gw node (no VXLAN port)', () => {
    expect(readHeaders(vxlanPacket(1), 4789).inner).toMatchObject({ src: '192.168.114.2', dst: '192.168.114.1', dport: 8472 });
    expect(readHeaders(vxlanPacket(1), 0).outer).toBeUndefined();
  });

  it('too short to read anything: nothing', () => {
    expect(readHeaders(Buffer.alloc(10), 8472)).toEqual({});
    expect(readHeaders(vxlanPacket(1).subarray(0, 30), 8472)).toEqual({});
  });
});

describe('filters', () => {
  const event = (over: Partial<MonitorEvent> = {}): MonitorEvent => ({
    time: '2026-11-30T19:00:00.000Z',
    timeNs: '1',
    kind: 'drop',
    reason: 'drop_bad_vni',
    hook: 'tc-decap',
    program: 'twill_decap_tc',
    ifindex: 2,
    len: 100,
    outer: { family: 4, src: '192.168.114.2', dst: '192.168.114.1', vni: 2 },
    inner: { family: 4, src: '10.244.2.77', dst: '10.244.1.2', protocol: 'udp' },
    peer: { slot: 1, publicIp: '192.168.114.2' },
    ...over,
  });
  const filter = (argv: Partial<Parameters<typeof monitorOptions>[0]> = {}) => monitorOptions({ ...defaults, ...argv }, new Set(Object.keys(argv))).filter;

  it('by kind', () => {
    expect(matches(event(), filter())).toBe(true);
    expect(matches(event({ kind: 'trace', reason: 'fast' }), filter())).toBe(false);
    expect(matches(event({ kind: 'trace', reason: 'fast' }), filter({ type: 'all' }))).toBe(true);
  });

  it('by reason', () => {
    expect(matches(event(), filter({ reason: 'drop_inner_dst,drop_bad_vni' }))).toBe(true);
    expect(matches(event(), filter({ reason: 'drop_inner_dst' }))).toBe(false);
  });

  it.each([
    ['10.244.1.2', true],
    ['10.244.2.0/24', true],
    ['192.168.114.1', true],
    ['10.244.9.9', false],
    ['10.0.0.0/8', true],
    ['fd00::/8', false],
  ])('by address %s: %s', (address, expected) => {
    expect(matches(event(), filter({ address }))).toBe(expected);
  });

  it('by IPv6 address, and by the peer address alone', () => {
    const e6 = event({
      outer: undefined,
      inner: { family: 6, src: 'fd10:244:0:2::5', dst: 'fd10:244:0:1::2', protocol: 'tcp' },
      peer: { slot: 0, publicIp: 'fd00:192:168:114::2' },
    });
    expect(matches(e6, filter({ address: 'fd10:244:0:1::/64' }))).toBe(true);
    expect(matches(e6, filter({ address: 'fd00:192:168:114::2' }))).toBe(true);
    expect(matches(e6, filter({ address: 'fd10:244:0:3::/64' }))).toBe(false);
    expect(matches(e6, filter({ address: '10.244.0.0/16' }))).toBe(false);
  });

  it('one text line with everything', () => {
    expect(formatEvent(event())).toBe(
      '19:00:00.000 drop drop_bad_vni tc-decap if 2 outer 192.168.114.2 -> 192.168.114.1 vni 2 inner udp 10.244.2.77 -> 10.244.1.2 peer 192.168.114.2 (slot 1) len 100',
    );
    expect(
      formatEvent(
        event({
          kind: 'trace',
          reason: 'conntrack',
          path: 'stack',
          outer: undefined,
          inner: { family: 6, src: 'fd10::5', dst: 'fd10::6', protocol: 'tcp', sport: 5, dport: 80 },
          peer: { slot: 0 },
        }),
      ),
    ).toBe('19:00:00.000 trace stack conntrack tc-decap if 2 inner tcp [fd10::5]:5 -> [fd10::6]:80 peer - len 100');
  });

  it('parseAddressMatch takes addresses and CIDRs of both families, nothing else', () => {
    expect(parseAddressMatch('10.244.1.0/24')).toEqual({ family: 4, ip: 0x0af40100, len: 24 });
    expect(parseAddressMatch('fd00::1')).toMatchObject({ family: 6, len: 128 });
    for (const bad of ['10.244.1', '10.244.1.0/33', 'fd00::/129', 'pod-a', '']) expect(parseAddressMatch(bad)).toBeUndefined();
  });
});

const defaults = { 'pin-dir': '/sys/fs/bpf/twill', json: false, type: 'drop', reason: '', address: '', 'trace-sample': 1, count: 0 };

describe('monitorOptions', () => {
  const opts = (argv: Partial<typeof defaults>) => monitorOptions({ ...defaults, ...argv }, new Set(Object.keys(argv)));

  it('sets the switch bits the type asks for', () => {
    expect(opts({}).flags).toBe(MONITOR_DROPS);
    expect(opts({ type: 'trace' }).flags).toBe(MONITOR_TRACE);
    expect(opts({ type: 'all', 'trace-sample': 100 })).toMatchObject({ flags: MONITOR_DROPS | MONITOR_TRACE, traceSample: 100 });
  });

  it.each([
    [{ type: 'drops' }, /--type drops: expected drop, trace or all/],
    [{ reason: 'drop_bogus' }, /--reason drop_bogus: not a reason of --type drop events; expected some of drop_no_peer, /],
    [{ reason: 'conntrack' }, /--reason conntrack: not a reason of --type drop events/],
    [{ type: 'trace', reason: 'drop_bad_vni' }, /--reason drop_bad_vni: not a reason of --type trace events; expected some of fast, /],
    [{ address: '10.244.1.0/40' }, /--address 10.244.1.0\/40: expected an IPv4 or IPv6 address or CIDR/],
    [{ type: 'trace', 'trace-sample': 0 }, /--trace-sample 0: expected a whole number from 1/],
    [{ type: 'trace', 'trace-sample': 2.5 }, /--trace-sample 2.5/],
    [{ 'trace-sample': 10 }, /--trace-sample applies to traces: add --type trace or --type all/],
    [{ count: -1 }, /--count -1: expected a whole number/],
  ])('%j is a usage error naming the flag', (argv, message) => {
    expect(() => opts(argv)).toThrow(UsageError);
    expect(() => opts(argv)).toThrow(message);
  });
});

describe('ownerAlive', () => {
  const control = (over: Partial<MonitorControl>): MonitorControl => ({
    flags: 1,
    trace_sample: 1,
    owner_pid: 42,
    owner_pidns: 7,
    owner_start: 1000n,
    lost: 0n,
    ...over,
  });
  const startOf = (starts: Record<number, bigint>) => (pid: number) => starts[pid];

  it('the owner process with the start time it recorded is alive', () => {
    expect(ownerAlive(control({}), 7, startOf({ 42: 1000n }))).toBe(true);
  });

  it('gone, or its pid reused by a later process: not alive', () => {
    expect(ownerAlive(control({}), 7, startOf({}))).toBe(false);
    expect(ownerAlive(control({}), 7, startOf({ 42: 2000n }))).toBe(false);
    expect(ownerAlive(control({ owner_pid: 0 }), 7, startOf({ 0: 1000n }))).toBe(false);
  });

  it('an owner in another pid namespace cannot be looked up, so it is taken as alive', () => {
    expect(ownerAlive(control({ owner_pidns: 8 }), 7, startOf({}))).toBe(true);
  });
});
