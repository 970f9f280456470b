import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
// zod's tree-shakable API: the CNI plugin reads this file at every pod ADD (its bundle loads only zod/mini).
import * as z from 'zod/mini';
import { formatCidr, hostAddress, parseCidr, type Cidr } from '../net/ipv4.js';
import { formatCidr6, hostAddress6, parseCidr6, type Cidr6 } from '../net/ipv6.js';
import type { NetworkConfig } from '../config/network-config.js';

/**
 * flannel's subnet.env, which the flannel CNI plugin and Docker users read. Each family's pair
 * of lines is there when the network enables that family: an IPv6-only file has no
 * FLANNEL_NETWORK or FLANNEL_SUBNET.
 */
interface SubnetFile {
  network?: Cidr;
  subnet?: Cidr;
  ipv6Network?: Cidr6;
  ipv6Subnet?: Cidr6;
  mtu: number;
  ipMasq: boolean;
}

/** What the agent writes: at least one family's network and subnet. */
type SubnetFileContents = SubnetFile & ({ network: Cidr; subnet: Cidr } | { ipv6Network: Cidr6; ipv6Subnet: Cidr6 });

/** What the agent writes for a lease: each enabled family's network and our subnet in it. */
export function subnetFileFor(config: NetworkConfig, lease: { subnet: Cidr; subnet6?: Cidr6 }, o: { mtu: number; ipMasq: boolean }): SubnetFileContents {
  const v6 = config.enableIPv6 && lease.subnet6 ? { ipv6Network: config.ipv6Network, ipv6Subnet: lease.subnet6 } : undefined;
  if (config.enableIPv4) return { network: config.network, subnet: lease.subnet, ...v6, ...o };
  if (v6) return { ...v6, ...o };
  throw new Error('an IPv6-only lease without an IPv6 subnet: nothing to write to the subnet file');
}

/**
 * flannel's WriteSubnetFile (pkg/subnet/subnet.go): the IPv4 pair, then the IPv6 pair, then MTU
 * and IPMASQ; each subnet as its first usable address with the prefix length.
 */
export function formatSubnetFile(f: SubnetFileContents): string {
  let out = '';
  if (f.network && f.subnet) out += `FLANNEL_NETWORK=${formatCidr(f.network)}\nFLANNEL_SUBNET=${hostAddress(f.subnet, 1)}/${f.subnet.len}\n`;
  if (f.ipv6Network && f.ipv6Subnet)
    out += `FLANNEL_IPV6_NETWORK=${formatCidr6(f.ipv6Network)}\nFLANNEL_IPV6_SUBNET=${hostAddress6(f.ipv6Subnet, 1)}/${f.ipv6Subnet.len}\n`;
  return `${out}FLANNEL_MTU=${f.mtu}\nFLANNEL_IPMASQ=${f.ipMasq}\n`;
}

/** Each variable read back, and what makes a value unusable (flanneld writes FLANNEL_IPMASQ as true or false). */
const cidrVar = <T>(parse: (s: string) => T | undefined, what: string) =>
  z.pipe(
    z.string(),
    z.transform((s: string, ctx) => parse(s) ?? (ctx.issues.push({ code: 'custom', message: `not ${what}`, input: s }), z.NEVER)),
  );
const subnetFileVars = {
  network: ['FLANNEL_NETWORK', cidrVar(parseCidr, 'an IPv4 CIDR')],
  subnet: ['FLANNEL_SUBNET', cidrVar(parseCidr, 'an IPv4 CIDR')],
  ipv6Network: ['FLANNEL_IPV6_NETWORK', cidrVar(parseCidr6, 'an IPv6 CIDR')],
  ipv6Subnet: ['FLANNEL_IPV6_SUBNET', cidrVar(parseCidr6, 'an IPv6 CIDR')],
  mtu: ['FLANNEL_MTU', z.pipe(z.string().check(z.regex(/^\d+$/, 'not a number')), z.transform(Number))],
  ipMasq: [
    'FLANNEL_IPMASQ',
    z.pipe(
      z.enum(['true', 'false'], 'not true or false'),
      z.transform((s: 'true' | 'false') => s === 'true'),
    ),
  ],
} as const;

/** Pure: what a subnet file says, and each variable whose value is not usable (left out of `file`). */
export function checkSubnetFile(text: string): { file: Partial<SubnetFile>; problems: string[] } {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) vars.set(m[1], m[2].trim());
  }
  const file: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [field, [name, schema]] of Object.entries(subnetFileVars)) {
    const raw = vars.get(name);
    if (raw === undefined) continue;
    const res = z.safeParse(schema as z.ZodMiniType, raw);
    if (res.success) file[field] = res.data;
    else problems.push(`${name}=${raw}: ${res.error.issues[0].message}`);
  }
  return { file, problems };
}

export const parseSubnetFile = (text: string): Partial<SubnetFile> => checkSubnetFile(text).file;

/** The previous subnets, if a readable subnet file names them: flannel's second choice at start (previousSubnet, previousIPv6Subnet). */
export function readSubnetHints(file: string): { hint?: Cidr; hint6?: Cidr6 } {
  try {
    const f = parseSubnetFile(readFileSync(file, 'utf8'));
    return { hint: f.subnet, hint6: f.ipv6Subnet };
  } catch {
    return {};
  }
}

/** Readers never see a half-written file: temp file in the same directory, fsync, rename. */
export function writeSubnetFile(file: string, f: SubnetFileContents): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeSync(fd, formatSubnetFile(f));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}
