import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  mapSpecs,
  configStruct,
  subnetKeyStruct,
  remoteStruct,
  peerKeyStruct,
  peerStruct,
  nextHopStruct,
  statsStruct,
  peerStatsStruct,
  endpointKeyStruct,
  endpointStruct,
  pathStatsStruct,
  config6Struct,
  subnet6KeyStruct,
  remote6Struct,
  peer6KeyStruct,
  peer6Struct,
  endpoint6KeyStruct,
  monitorStruct,
  eventStruct,
  EVENTS_MAP,
  EVENTS_BYTES,
} from '../../maps/layout.js';
import type { FieldKind, StructCodec } from '../../maps/codec.js';
import { bpfBuildDir, buildBpf } from '../support/build.js';

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number; bits_offset: number }[];
}

function loadBtf(object: string): Map<number, BtfType> {
  const out = execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', object], { encoding: 'utf8' });
  const types = (JSON.parse(out) as { types: BtfType[] }).types;
  return new Map(types.map((t) => [t.id, t]));
}

/** Follows typedefs and qualifiers to the type that gives a member its shape. */
function resolve(btf: Map<number, BtfType>, id: number): BtfType {
  let t = btf.get(id)!;
  while (['TYPEDEF', 'CONST', 'VOLATILE'].includes(t.kind)) t = btf.get(t.type_id!)!;
  return t;
}

function sizeOf(btf: Map<number, BtfType>, id: number): number {
  const t = resolve(btf, id);
  if (t.kind === 'ARRAY') return t.nr_elems! * sizeOf(btf, t.type_id!);
  return t.size!;
}

/** What a member looks like in BTF: a codec field kind (FieldKind) when it is one, else its BTF kind and name. */
function shapeOf(btf: Map<number, BtfType>, id: number): string {
  const t = resolve(btf, id);
  if (t.kind === 'ARRAY' && sizeOf(btf, t.type_id!) === 1) {
    if (t.nr_elems === 4) return 'ipv4';
    if (t.nr_elems === 6) return 'mac';
    if (t.nr_elems === 16) return 'ipv6';
    if (t.nr_elems === 128) return 'frame';
  }
  if (t.kind === 'INT') return ({ 1: 'u8', 2: 'u16', 4: 'u32', 8: 'u64' } as Record<number, string>)[t.size!] ?? `int${t.size}`;
  return `${t.kind}:${t.name}`;
}

function findStruct(btf: Map<number, BtfType>, name: string): BtfType | undefined {
  return [...btf.values()].find((t) => t.kind === 'STRUCT' && t.name === name);
}

const objects = ['encap.bpf.o', 'decap.bpf.o', 'decap-noct.bpf.o', 'pod.bpf.o', 'pod-noct.bpf.o'];
const structs: StructCodec<Record<string, FieldKind>>[] = [
  configStruct,
  subnetKeyStruct,
  remoteStruct,
  peerKeyStruct,
  peerStruct,
  nextHopStruct,
  statsStruct,
  peerStatsStruct,
  endpointKeyStruct,
  endpointStruct,
  pathStatsStruct,
  config6Struct,
  subnet6KeyStruct,
  remote6Struct,
  peer6KeyStruct,
  peer6Struct,
  endpoint6KeyStruct,
  monitorStruct,
  eventStruct,
];

describe('maps/layout.ts matches the BTF of the built objects', () => {
  const btfs = new Map<string, Map<number, BtfType>>();
  beforeAll(() => {
    buildBpf();
    for (const o of objects) btfs.set(o, loadBtf(path.join(bpfBuildDir, o)));
  });

  for (const object of objects) {
    for (const codec of structs) {
      it(`${object}: struct ${codec.cName}`, () => {
        const btf = btfs.get(object)!;
        const s = findStruct(btf, codec.cName);
        expect(s, `struct ${codec.cName} missing from ${object}`).toBeDefined();
        expect(s!.size).toBe(codec.size);
        const actual = s!.members!.map((m) => ({ name: m.name, offset: m.bits_offset / 8, kind: shapeOf(btf, m.type_id) }));
        const expected = codec.fields.map((f) => ({ name: f.name, offset: f.offset, kind: f.kind }));
        expect(actual).toEqual(expected);
      });
    }

    it(`${object}: map definitions (type, key, value, max_entries)`, () => {
      const btf = btfs.get(object)!;
      const kindIds: Record<string, number> = { hash: 1, array: 2, percpu_array: 6 };
      for (const [name, spec] of Object.entries(mapSpecs)) {
        const v = [...btf.values()].find((t) => t.kind === 'VAR' && t.name === name);
        expect(v, `map ${name} missing from ${object}`).toBeDefined();
        const def = resolve(btf, v!.type_id!);
        const member = (m: string) => def.members!.find((x) => x.name === m)!;
        // __uint(type, N) is encoded as int (*type)[N]; __type(key, T) as T *key.
        const uintOf = (m: string) => resolve(btf, resolve(btf, member(m).type_id).type_id!).nr_elems;
        const pointee = (m: string) => resolve(btf, member(m).type_id).type_id!;
        expect(uintOf('type'), `${name}.type`).toBe(kindIds[spec.kind]);
        expect(uintOf('max_entries'), `${name}.max_entries`).toBe(spec.maxEntries);
        expect(sizeOf(btf, pointee('key')), `${name}.key size`).toBe(spec.key.size);
        expect(sizeOf(btf, pointee('value')), `${name}.value size`).toBe(spec.value.size);
        const valueType = resolve(btf, pointee('value'));
        expect(valueType.name, `${name}.value type`).toBe(spec.value.cName);
      }
      // The ring buffer has no key or value: its max_entries is its size in bytes.
      const events = [...btf.values()].find((t) => t.kind === 'VAR' && t.name === EVENTS_MAP);
      expect(events, `map ${EVENTS_MAP} missing from ${object}`).toBeDefined();
      const def = resolve(btf, events!.type_id!);
      const uint = (m: string) => resolve(btf, resolve(btf, def.members!.find((x) => x.name === m)!.type_id).type_id!).nr_elems;
      expect(uint('type'), `${EVENTS_MAP}.type`).toBe(27); // BPF_MAP_TYPE_RINGBUF
      expect(uint('max_entries'), `${EVENTS_MAP}.max_entries`).toBe(EVENTS_BYTES);
    });
  }
});
