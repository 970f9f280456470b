/**
 * Struct codecs for the C structs in bpf/include/twill_maps.h.
 *
 * A struct is declared once as an ordered list of typed fields; offsets, padding and
 * size follow the C ABI (natural alignment), and the test in test/integration/btf-layout
 * checks every declaration against the BTF of the built objects. Decoded values use the
 * C field names, so what `twill maps` prints lines up with what `bpftool map dump` prints.
 */

export type FieldKind = 'u8' | 'u16' | 'u32' | 'u64' | 'ipv4' | 'ipv6' | 'mac' | 'frame';

interface KindInfo {
  size: number;
  align: number;
}

const kinds: Record<FieldKind, KindInfo> = {
  u8: { size: 1, align: 1 },
  u16: { size: 2, align: 2 },
  u32: { size: 4, align: 4 },
  u64: { size: 8, align: 8 },
  ipv4: { size: 4, align: 1 }, // __u8[4], network order
  ipv6: { size: 16, align: 1 }, // __u8[16], network order
  mac: { size: 6, align: 1 }, // __u8[6]
  frame: { size: 128, align: 1 }, // __u8[TWILL_EVENT_HEADERS]: a packet's first bytes, as they are
};

type FieldValue<K extends FieldKind> = K extends 'u64' ? bigint : K extends 'ipv4' | 'ipv6' | 'mac' ? string : K extends 'frame' ? Buffer : number;

export type Decoded<F extends Record<string, FieldKind>> = { [N in keyof F]: FieldValue<F[N]> };

interface FieldLayout {
  name: string;
  kind: FieldKind;
  offset: number;
  size: number;
}

export class CodecError extends Error {
  override name = 'CodecError';
}

export class StructCodec<F extends Record<string, FieldKind>> {
  readonly fields: readonly FieldLayout[];
  readonly size: number;

  constructor(
    readonly cName: string,
    spec: F,
  ) {
    let offset = 0;
    let maxAlign = 1;
    const fields: FieldLayout[] = [];
    for (const [name, kind] of Object.entries(spec)) {
      const { size, align } = kinds[kind];
      offset = alignUp(offset, align);
      fields.push({ name, kind, offset, size });
      offset += size;
      maxAlign = Math.max(maxAlign, align);
    }
    this.fields = fields;
    this.size = alignUp(offset, maxAlign);
  }

  /** Padding bytes stay zero: the kernel compares hash keys byte for byte. */
  encode(value: Decoded<F>, into?: Buffer, at = 0): Buffer {
    const buf = into ?? Buffer.alloc(this.size);
    if (!into) buf.fill(0);
    for (const f of this.fields) writeField(buf, at + f.offset, f, (value as Record<string, unknown>)[f.name], this.cName);
    return buf;
  }

  decode(buf: Buffer, at = 0): Decoded<F> {
    if (buf.length - at < this.size) throw new CodecError(`${this.cName}: need ${this.size} bytes, got ${buf.length - at}`);
    const out: Record<string, unknown> = {};
    for (const f of this.fields) out[f.name] = readField(buf, at + f.offset, f);
    return out as Decoded<F>;
  }
}

export function struct<F extends Record<string, FieldKind>>(cName: string, spec: F): StructCodec<F> {
  return new StructCodec(cName, spec);
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function writeField(buf: Buffer, at: number, f: FieldLayout, v: unknown, owner: string): void {
  const where = `${owner}.${f.name}`;
  switch (f.kind) {
    case 'u8':
    case 'u16':
    case 'u32': {
      const max = 2 ** (8 * f.size) - 1;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new CodecError(`${where}: ${String(v)} is not an integer in 0..${max}`);
      if (f.kind === 'u8') buf.writeUInt8(v, at);
      else if (f.kind === 'u16') buf.writeUInt16LE(v, at);
      else buf.writeUInt32LE(v, at);
      return;
    }
    case 'u64':
      if (typeof v !== 'bigint' || v < 0n || v >= 1n << 64n) throw new CodecError(`${where}: ${String(v)} is not a u64 bigint`);
      buf.writeBigUInt64LE(v, at);
      return;
    case 'ipv4':
      parseIpv4Into(String(v), buf, at, where);
      return;
    case 'ipv6':
      parseIpv6Into(String(v), buf, at, where);
      return;
    case 'mac':
      parseMacInto(String(v), buf, at, where);
      return;
    case 'frame':
      if (!Buffer.isBuffer(v) || v.length > f.size) throw new CodecError(`${where}: expected a Buffer of at most ${f.size} bytes`);
      buf.fill(0, at, at + f.size);
      v.copy(buf, at);
      return;
  }
}

function readField(buf: Buffer, at: number, f: FieldLayout): unknown {
  switch (f.kind) {
    case 'u8':
      return buf.readUInt8(at);
    case 'u16':
      return buf.readUInt16LE(at);
    case 'u32':
      return buf.readUInt32LE(at);
    case 'u64':
      return buf.readBigUInt64LE(at);
    case 'ipv4':
      return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
    case 'ipv6':
      return formatIpv6(buf.subarray(at, at + 16));
    case 'mac':
      return [...buf.subarray(at, at + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
    case 'frame':
      return Buffer.from(buf.subarray(at, at + f.size));
  }
}

function parseIpv4Into(s: string, buf: Buffer, at: number, where: string): void {
  const parts = s.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255))
    throw new CodecError(`${where}: ${JSON.stringify(s)} is not an IPv4 address`);
  parts.forEach((p, i) => (buf[at + i] = Number(p)));
}

/** Full, `::`-compressed and IPv4-suffixed forms; no zone. */
function parseIpv6Into(s: string, buf: Buffer, at: number, where: string): void {
  const fail = () => new CodecError(`${where}: ${JSON.stringify(s)} is not an IPv6 address`);
  let text = s;
  const tail: number[] = [];
  const v4 = /^(.*:)(\d{1,3}(?:\.\d{1,3}){3})$/.exec(text);
  if (v4) {
    const parts = v4[2].split('.').map(Number);
    if (parts.some((p) => p > 255)) throw fail();
    tail.push((parts[0] << 8) | parts[1], (parts[2] << 8) | parts[3]);
    text = v4[1].endsWith('::') ? v4[1] : v4[1].slice(0, -1);
  }
  const halves = text.split('::');
  if (halves.length > 2) throw fail();
  const groups = (h: string) => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  if ([...head, ...rest].some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) throw fail();
  const given = head.length + rest.length + tail.length;
  if (halves.length === 2 ? given > 7 : given !== 8) throw fail();
  const words = [...head.map((g) => parseInt(g, 16)), ...Array<number>(8 - given).fill(0), ...rest.map((g) => parseInt(g, 16)), ...tail];
  words.forEach((w, i) => buf.writeUInt16BE(w, at + 2 * i));
}

/** RFC 5952: lowercase, no leading zeros, the longest run of two or more zero groups (the first of equals) as `::`. */
export function formatIpv6(b: Buffer): string {
  const words = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(2 * i));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(':');
  return best < 0 ? hex(words) : `${hex(words.slice(0, best))}::${hex(words.slice(best + bestLen))}`;
}

function parseMacInto(s: string, buf: Buffer, at: number, where: string): void {
  const parts = s.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) throw new CodecError(`${where}: ${JSON.stringify(s)} is not a MAC address`);
  parts.forEach((p, i) => (buf[at + i] = parseInt(p, 16)));
}

/** The decoded value type of a codec: `Value<typeof configStruct>`. */
export type Value<C> = C extends StructCodec<infer F> ? Decoded<F> : never;

/** The field spec of a codec, for typing maps over it: `TypedMap<FieldsOf<typeof k>, FieldsOf<typeof v>>`. */
export type FieldsOf<C> = C extends StructCodec<infer F> ? F : never;
