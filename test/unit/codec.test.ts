import { describe, expect, it } from 'vitest';
import { struct, CodecError } from '../../maps/codec.js';
import { config6Struct, configStruct, peer6Struct, peerStatsStruct, peerStruct, remote6Struct, remoteStruct, statsStruct } from '../../maps/layout.js';

describe('struct codecs', () => {
  it('lays fields out with C alignment and tail padding', () => {
    const s = struct('t', { a: 'u8', b: 'u32', c: 'u16' });
    expect(s.fields.map((f) => f.offset)).toEqual([0, 4, 8]);
    expect(s.size).toBe(12);
    expect(configStruct.size).toBe(40);
    expect(remoteStruct.size).toBe(14);
    expect(peerStruct.size).toBe(14);
    expect(peerStruct.fields.find((f) => f.name === 'stats_slot')!.offset).toBe(12);
    expect(statsStruct.size).toBe(19 * 8);
    expect(peerStatsStruct.size).toBe(5 * 8);
  });

  it('round-trips a config with addresses and MACs in network order', () => {
    const cfg = {
      public_ip: '192.168.77.1',
      vtep_mac: '0a:58:c0:a8:4d:01',
      underlay_mac: 'aa:bb:cc:dd:ee:ff',
      subnet: '10.244.1.0',
      network: '10.244.0.0',
      subnet_len: 24,
      network_len: 16,
      vxlan_port: 8472,
      vni: 1,
      underlay_ifindex: 7,
      flags: 0,
    };
    const buf = configStruct.encode(cfg);
    expect([...buf.subarray(0, 4)]).toEqual([192, 168, 77, 1]);
    expect(buf.readUInt16LE(26)).toBe(8472);
    expect(configStruct.decode(buf)).toEqual(cfg);
  });

  it('zeroes padding so equal keys are equal bytes', () => {
    const s = struct('t', { a: 'u8', b: 'u32' });
    const into = Buffer.alloc(s.size, 0xff);
    s.encode({ a: 1, b: 2 }, into);
    // encode into a caller buffer only writes fields; a fresh encode zeroes everything else
    expect([...s.encode({ a: 1, b: 2 })]).toEqual([1, 0, 0, 0, 2, 0, 0, 0]);
  });

  it('rejects values that do not fit, naming the field', () => {
    expect(() => remoteStruct.encode({ public_ip: '10.0.0.256', vtep_mac: '00:00:00:00:00:01', flags: 0, stats_slot: 1 })).toThrow(
      /twill_remote.public_ip: "10.0.0.256" is not an IPv4 address/,
    );
    expect(() => remoteStruct.encode({ public_ip: '10.0.0.1', vtep_mac: '00:00:00:00:01', flags: 0, stats_slot: 1 })).toThrow(CodecError);
    expect(() => remoteStruct.encode({ public_ip: '10.0.0.1', vtep_mac: '00:00:00:00:00:01', flags: 70000, stats_slot: 1 })).toThrow(
      /twill_remote.flags: 70000 is not an integer in 0..65535/,
    );
  });

  it('puts the stats slot of a remote after its reserved flags, little-endian', () => {
    const buf = remoteStruct.encode({ public_ip: '192.168.77.2', vtep_mac: '0a:58:00:00:00:02', flags: 0, stats_slot: 0x0102 });
    expect([...buf.subarray(12, 14)]).toEqual([0x02, 0x01]);
    expect(remoteStruct.decode(buf).stats_slot).toBe(0x0102);
  });

  it('refuses to decode a short buffer', () => {
    expect(() => remoteStruct.decode(Buffer.alloc(4))).toThrow(/need 14 bytes, got 4/);
  });

  it('lays the IPv6 structs out as the C ABI does', () => {
    expect(config6Struct.size).toBe(64);
    expect(config6Struct.fields.find((f) => f.name === 'tunnel_ifindex')!.offset).toBe(56);
    expect(remote6Struct.size).toBe(26);
    expect(peer6Struct.size).toBe(26);
  });

  it('encodes IPv6 addresses in network order and prints them canonically (RFC 5952)', () => {
    const s = struct('t6', { a: 'ipv6' });
    const cases: [string, string][] = [
      ['fd76:b6:0:0:0:0:0:1', 'fd76:b6::1'],
      ['FD76:00B6::0001', 'fd76:b6::1'],
      ['::', '::'],
      ['::1', '::1'],
      ['fd76:b6::', 'fd76:b6::'],
      ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
      ['1:0:0:2:0:0:3:4', '1::2:0:0:3:4'],
      ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
      ['::ffff:192.0.2.1', '::ffff:c000:201'],
    ];
    for (const [input, canonical] of cases) expect(s.decode(s.encode({ a: input })).a, input).toBe(canonical);
    expect([...s.encode({ a: 'fd76:b6::1' })]).toEqual([0xfd, 0x76, 0, 0xb6, ...Array(11).fill(0), 1]);
  });

  it('refuses what is not an IPv6 address', () => {
    const s = struct('t6', { a: 'ipv6' });
    for (const bad of ['10.0.0.1', 'fd76::b6::1', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', 'fd76:b6::g', '12345::', '1:2:3:4:5:6:7::8'])
      expect(() => s.encode({ a: bad }), bad).toThrow(/is not an IPv6 address/);
  });
});
