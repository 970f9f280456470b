/** IPv4 address and prefix arithmetic on unsigned 32-bit numbers; every other module uses these. */

export interface Cidr {
  /** network-order value as an unsigned number, already masked */
  ip: number;
  len: number;
}

const octet = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => octet.test(p))) return undefined;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

export function maskOf(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/** Parses "a.b.c.d/len"; `strict` refuses host bits (as flannel's subnet keys must not have any). */
export function parseCidr(text: string, strict = false): Cidr | undefined {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text);
  if (!m) return undefined;
  const ip = parseIpv4(m[1]);
  const len = Number(m[2]);
  if (ip === undefined || len > 32) return undefined;
  const masked = (ip & maskOf(len)) >>> 0;
  if (strict && masked !== ip) return undefined;
  return { ip: masked, len };
}

export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.ip)}/${c.len}`;
}

export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  return inner.len >= outer.len && (inner.ip & maskOf(outer.len)) >>> 0 === outer.ip;
}

export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b) || cidrContains(b, a);
}

/** The address `offset` hosts into the prefix (offset 1 = the first usable address). */
export function hostAddress(c: Cidr, offset: number): string {
  return formatIpv4((c.ip + offset) >>> 0);
}
