import { formatIpv4, parseIpv4 } from './ipv4.js';

/*
 * IPv6 address and prefix arithmetic on unsigned 128-bit bigints, as ipv4.ts does for v4.
 * Text forms follow Go's net.IP (flannel writes keys, subnet files and leases with it), so what
 * twill writes compares equal byte for byte with what flanneld writes.
 */

export interface Cidr6 {
  /** the address as an unsigned 128-bit value, already masked */
  ip: bigint;
  len: number;
}

const ALL = (1n << 128n) - 1n;
const group = /^[0-9a-fA-F]{1,4}$/;

/** Go's net.ParseIP for IPv6 text: hex groups, at most one `::`, an optional dotted IPv4 tail; no zone. */
export function parseIpv6(text: string): bigint | undefined {
  if (!text.includes(':')) return undefined;
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groupsOf = (part: string, last: boolean): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const pieces = part.split(':');
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i];
      if (last && i === pieces.length - 1 && p.includes('.')) {
        const v4 = parseIpv4(p);
        if (v4 === undefined) return undefined;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else if (group.test(p)) out.push(parseInt(p, 16));
      else return undefined;
    }
    return out;
  };
  const head = groupsOf(halves[0], halves.length === 1);
  const tail = halves.length === 2 ? groupsOf(halves[1], true) : [];
  if (!head || !tail) return undefined;
  const n = head.length + tail.length;
  // `::` stands for at least one zero group (Go refuses "1:2:3:4::5:6:7:8"); without it, exactly eight.
  if (halves.length === 2 ? n > 7 : n !== 8) return undefined;
  const groups = [...head, ...Array<number>(8 - n).fill(0), ...tail];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

/**
 * RFC 5952 text as Go's net.IP.String prints it: lower case, no leading zeros, the longest run
 * of two or more zero groups (the first on a tie) as `::`. An IPv4-mapped address
 * (::ffff:a.b.c.d) prints as plain a.b.c.d, as Go prints it.
 */
export function formatIpv6(n: bigint): string {
  if (n >> 32n === 0xffffn) return formatIpv4(Number(n & 0xffffffffn));
  const groups = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(112 - 16 * i)) & 0xffffn));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

export function maskOf6(len: number): bigint {
  return len === 0 ? 0n : (ALL << BigInt(128 - len)) & ALL;
}

/** Parses "addr/len"; `strict` refuses host bits (as flannel's subnet keys must not have any). */
export function parseCidr6(text: string, strict = false): Cidr6 | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!m) return undefined;
  const ip = parseIpv6(m[1]);
  const len = Number(m[2]);
  if (ip === undefined || len > 128) return undefined;
  const masked = ip & maskOf6(len);
  if (strict && masked !== ip) return undefined;
  return { ip: masked, len };
}

export function formatCidr6(c: Cidr6): string {
  return `${formatIpv6(c.ip)}/${c.len}`;
}

export function cidr6Contains(outer: Cidr6, inner: Cidr6): boolean {
  return inner.len >= outer.len && (inner.ip & maskOf6(outer.len)) === outer.ip;
}

export function cidr6Overlaps(a: Cidr6, b: Cidr6): boolean {
  return cidr6Contains(a, b) || cidr6Contains(b, a);
}

export const sameCidr6 = (a: Cidr6 | undefined, b: Cidr6 | undefined) => a?.ip === b?.ip && a?.len === b?.len;

/** Addresses in the prefix, as a bigint (a /64 holds 2^64). */
export function cidr6Size(c: Cidr6): bigint {
  return 1n << BigInt(128 - c.len);
}

/** The `n`th prefix of length `len` counted from `start` (n = 1: flannel's IP6Net.Next). */
export function nthSubnet6(start: Cidr6, n: bigint, len = start.len): Cidr6 {
  return { ip: (start.ip + n * (1n << BigInt(128 - len))) & ALL, len };
}

/** The address `offset` hosts into the prefix (offset 1 = the first usable address). */
export function hostAddress6(c: Cidr6, offset: number): string {
  return formatIpv6((c.ip + BigInt(offset)) & ALL);
}
