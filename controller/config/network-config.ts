import { z } from 'zod';
import { BACKENDS, type Backend } from './choices.js';
import { formatIpv4, parseCidr, parseIpv4, type Cidr } from '../net/ipv4.js';
import { formatIpv6, parseCidr6, parseIpv6, type Cidr6 } from '../net/ipv6.js';
import { FLANNEL_VXLAN_PORT, VNI_MAX } from '../net/vxlan.js';

/*
 * flannel's network config (<prefix>/config) with flannel's defaults and validation.
 * Go's encoding/json matches field names case-insensitively (a later key for the same field
 * wins), and ignores unknown fields; so does this parser.
 */

/** The backends twill implements, on both dataplanes. */
export type BackendType = Backend;

/** flannel's other backends: known, and refused by name rather than as typos. */
const FLANNEL_ONLY_BACKENDS = ['udp', 'ipip', 'wireguard', 'ipsec', 'alloc', 'extension', 'aws-vpc', 'gce', 'ali-vpc', 'tencent-vpc'];

interface BackendConfig {
  type: BackendType;
  vni: number;
  port: number;
  /** underlay MTU override; undefined = the interface's MTU */
  mtu?: number;
  gbp: boolean;
  learning: boolean;
  directRouting: boolean;
}

/** The IPv4 half of a network config: present exactly when EnableIPv4 is true. */
export interface Ipv4Networks {
  network: Cidr;
  subnetLen: number;
  subnetMin: Cidr;
  subnetMax: Cidr;
}

/** The IPv6 half: present exactly when EnableIPv6 is true. */
interface Ipv6Networks {
  ipv6Network: Cidr6;
  ipv6SubnetLen: number;
  ipv6SubnetMin: Cidr6;
  ipv6SubnetMax: Cidr6;
}

type Absent<T> = { [K in keyof T]?: undefined };

/*
 * The families are discriminated by their Enable flag, so code that reads `network` (or
 * `ipv6Network`) must first check the flag: an IPv6-only network has no IPv4 part to misuse.
 */
export type NetworkConfig = {
  backend: BackendConfig;
  /** the document as stored, for logs */
  raw: unknown;
} & (({ enableIPv4: true } & Ipv4Networks) | ({ enableIPv4: false } & Absent<Ipv4Networks>)) &
  (({ enableIPv6: true } & Ipv6Networks) | ({ enableIPv6: false; ipv6SubnetLen: number } & Absent<Omit<Ipv6Networks, 'ipv6SubnetLen'>>));

/** The IPv4 half, if the network has one. */
export function ipv4Networks(c: NetworkConfig): Ipv4Networks | undefined {
  return c.enableIPv4 ? { network: c.network, subnetLen: c.subnetLen, subnetMin: c.subnetMin, subnetMax: c.subnetMax } : undefined;
}

/** The IPv6 half, if the network has one. */
export function ipv6Networks(c: NetworkConfig): Ipv6Networks | undefined {
  return c.enableIPv6
    ? { ipv6Network: c.ipv6Network, ipv6SubnetLen: c.ipv6SubnetLen, ipv6SubnetMin: c.ipv6SubnetMin, ipv6SubnetMax: c.ipv6SubnetMax }
    : undefined;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * A config that passes flanneld's config check (ParseConfig, CheckNetworkConfig), on which
 * flanneld then exits 1 rather than retrying: no address family (GetIPFamily), an unknown
 * backend, backend options it cannot decode or a VXLAN device cannot have (RegisterNetwork),
 * a subnet range with no subnet in it (AcquireLease: out of subnets). The agent names it and
 * exits 1 too. A config that fails the check is a plain ConfigError, waited out as flanneld does.
 */
export class FatalConfigError extends ConfigError {
  override name = 'FatalConfigError';
}

/**
 * A config that is valid for flannel but asks for what twill does not do (another backend, an
 * option): waiting would not help, so the agent names it and exits, as flanneld exits on an
 * unknown backend. Its message lists the fatal fields too, if there are any.
 */
export class UnsupportedConfigError extends FatalConfigError {
  override name = 'UnsupportedConfigError';
}

const topFields = [
  'Network',
  'SubnetLen',
  'SubnetMin',
  'SubnetMax',
  'EnableIPv4',
  'EnableIPv6',
  'IPv6Network',
  'IPv6SubnetLen',
  'IPv6SubnetMin',
  'IPv6SubnetMax',
  'Backend',
] as const;
const backendFields = ['Type', 'VNI', 'Port', 'MTU', 'GBP', 'Learning', 'DirectRouting', 'MacPrefix'] as const;

/**
 * Go's encoding/json, key by key in document order: each key sets the field of its exact name,
 * else of the same name in another case, and a later key for the same field overwrites an
 * earlier one, whatever its case ({"Network":A,"network":B} is B).
 */
function goFields<const F extends readonly string[]>(obj: Record<string, unknown>, fields: F): Partial<Record<F[number], unknown>> {
  const out: Partial<Record<F[number], unknown>> = {};
  for (const key of Object.keys(obj)) {
    const f = fields.find((name) => name === key) ?? fields.find((name) => name.toLowerCase() === key.toLowerCase());
    if (f !== undefined) out[f as F[number]] = obj[key];
  }
  return out;
}

const uint = (max: number) => z.number({ error: 'must be a number' }).int('must be an integer').min(0, 'must not be negative').max(max, `must be <= ${max}`);
const bool = z.boolean({ error: 'must be true or false' });
const str = z.string({ error: 'must be a string' });

const topSchema = z.object({
  Network: str.optional(),
  SubnetLen: uint(32).optional(),
  SubnetMin: str.optional(),
  SubnetMax: str.optional(),
  EnableIPv4: bool.optional(),
  EnableIPv6: bool.optional(),
  IPv6Network: str.optional(),
  IPv6SubnetLen: uint(128).optional(),
  IPv6SubnetMin: str.optional(),
  IPv6SubnetMax: str.optional(),
  Backend: z.record(z.string(), z.unknown(), { error: 'must be an object' }).optional(),
});
/** What flanneld decodes with the config (parseBackendType): a bad Type is waited out with the rest. */
const backendTypeSchema = z.object({ Type: str.optional() });
/** What flanneld's vxlan backend decodes when it starts (parseVXLANConfig): a bad value makes it exit. */
const vxlanSchema = z.object({
  VNI: uint(VNI_MAX).optional(),
  Port: uint(65535).optional(),
  MTU: uint(65535).optional(),
  GBP: bool.optional(),
  Learning: bool.optional(),
  DirectRouting: bool.optional(),
});

function zodProblems(err: z.ZodError, prefix: string): string[] {
  return err.issues.map((i) => `${prefix}${i.path.join('.')}: ${i.message}`);
}

type FamilyCidr = { ip: bigint; len: number };

/**
 * flannel's CheckNetworkConfig rules for one address family (pkg/subnet/config.go): the two
 * families differ only in sizes and names, so one walk serves both, on bigints.
 */
interface FamilyRules {
  name: 'IPv4' | 'IPv6';
  fields: { network: string; len: string; min: string; max: string; enable: string };
  bits: number;
  /** the longest SubnetLen (a tunnel and a bridge address must fit) */
  maxSubnetLen: number;
  /** the longest network prefix without SubnetLen: four subnets of four addresses */
  maxNetworkLen: number;
  /** the SubnetLen given when the network is large enough for it */
  defaultSubnetLen: number;
  parseNetwork(text: string): FamilyCidr | undefined;
  parseAddress(text: string): bigint | undefined;
  format(ip: bigint): string;
}

const mask = (bits: number, len: number) => (len === 0 ? 0n : (((1n << BigInt(bits)) - 1n) << BigInt(bits - len)) & ((1n << BigInt(bits)) - 1n));

const IPV4: FamilyRules = {
  name: 'IPv4',
  fields: { network: 'Network', len: 'SubnetLen', min: 'SubnetMin', max: 'SubnetMax', enable: 'EnableIPv4' },
  bits: 32,
  maxSubnetLen: 30,
  maxNetworkLen: 28,
  defaultSubnetLen: 24,
  parseNetwork: (text) => {
    const c = parseCidr(text);
    return c && { ip: BigInt(c.ip), len: c.len };
  },
  parseAddress: (text) => {
    const ip = parseIpv4(text);
    return ip === undefined ? undefined : BigInt(ip);
  },
  format: (ip) => formatIpv4(Number(ip)),
};

const IPV6: FamilyRules = {
  name: 'IPv6',
  fields: { network: 'IPv6Network', len: 'IPv6SubnetLen', min: 'IPv6SubnetMin', max: 'IPv6SubnetMax', enable: 'EnableIPv6' },
  bits: 128,
  maxSubnetLen: 126,
  maxNetworkLen: 124,
  defaultSubnetLen: 64,
  parseNetwork: (text) => parseCidr6(text),
  parseAddress: parseIpv6,
  format: formatIpv6,
};

/** One family's network, SubnetLen and range with flannel's defaults; problems are pushed, each naming field and value. */
function familyNetworks(
  f: FamilyRules,
  given: { network?: string; len?: number; min?: string; max?: string },
  problems: string[],
  fatal: string[],
): { network: FamilyCidr; subnetLen: number; min: FamilyCidr; max: FamilyCidr } | undefined {
  const n = f.fields;
  const fmt = (c: FamilyCidr) => `${f.format(c.ip)}/${c.len}`;
  if (given.network === undefined) {
    problems.push(`${n.network}: missing (required when ${n.enable} is true)`);
    return undefined;
  }
  const network = f.parseNetwork(given.network);
  if (!network) {
    problems.push(`${n.network} ${JSON.stringify(given.network)}: not an ${f.name} CIDR`);
    return undefined;
  }
  let subnetLen: number;
  if (given.len === undefined || given.len === 0) {
    if (network.len > f.maxNetworkLen) {
      problems.push(`${n.network} ${given.network}: prefix /${network.len} is too small, must be /${f.maxNetworkLen} or larger`);
      return undefined;
    }
    subnetLen = network.len <= f.defaultSubnetLen - 2 ? f.defaultSubnetLen : network.len + 2;
  } else if (given.len > f.maxSubnetLen) {
    problems.push(`${n.len} ${given.len}: must be <= ${f.maxSubnetLen}`);
    return undefined;
  } else if (given.len < network.len + 2) {
    problems.push(`${n.len} ${given.len}: must be >= ${network.len + 2} (${n.network} /${network.len} plus 2)`);
    return undefined;
  } else subnetLen = given.len;
  const step = 1n << BigInt(f.bits - subnetLen);
  const bound = (field: string, value: string | undefined, fallback: bigint): FamilyCidr | undefined => {
    if (value === undefined) return { ip: fallback, len: subnetLen };
    const ip = f.parseAddress(value);
    if (ip === undefined) {
      problems.push(`${field} ${JSON.stringify(value)}: not an ${f.name} address`);
      return undefined;
    }
    const masked = ip & mask(f.bits, subnetLen);
    if ((ip & mask(f.bits, network.len)) !== network.ip) problems.push(`${field} ${value}: outside ${n.network} ${fmt(network)}`);
    else if (masked !== ip) problems.push(`${field} ${value}: not aligned to ${n.len} /${subnetLen}`);
    return { ip: masked, len: subnetLen };
  };
  const min = bound(n.min, given.min, network.ip + step);
  const max = bound(n.max, given.max, network.ip + (1n << BigInt(f.bits - network.len)) - step);
  // flannel's check allows it; no subnet fits, so flanneld exits when it asks for a lease (out of subnets).
  if (min && max && min.ip > max.ip) fatal.push(`${n.min} ${fmt(min)} is above ${n.max} ${fmt(max)}: no subnet is left to lease`);
  return min && max ? { network, subnetLen, min, max } : undefined;
}

/** Parses and validates; throws ConfigError listing every problem, each naming field and value. */
export function parseNetworkConfig(text: string): NetworkConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config: not valid JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ConfigError('config: must be a JSON object');
  const top = topSchema.safeParse(goFields(doc as Record<string, unknown>, topFields));
  if (!top.success) throw new ConfigError(`invalid config: ${zodProblems(top.error, '').join('; ')}`);
  const t = top.data;
  const backendRaw = goFields(t.Backend ?? {}, backendFields);
  const bt = backendTypeSchema.safeParse(backendRaw);
  if (!bt.success) throw new ConfigError(`invalid config: ${zodProblems(bt.error, 'Backend.').join('; ')}`);

  // Three kinds of problem, in flanneld's order: its config check fails (it retries: we wait),
  // a backend twill does not implement, or what flanneld exits on once past its check.
  const problems: string[] = [];
  const unsupported: string[] = [];
  const fatal: string[] = [];
  const enableIPv4 = t.EnableIPv4 ?? true;
  const enableIPv6 = t.EnableIPv6 ?? false;
  if (!enableIPv4 && !enableIPv6) fatal.push('EnableIPv4 and EnableIPv6 are both false: nothing to do');
  const typeName = bt.data.Type;
  const type = (typeName ?? 'udp').toLowerCase(); // flannel's default backend is udp
  const supported = `twill implements ${BACKENDS.join(' and ')}`;
  if (typeName === undefined)
    unsupported.push(`Backend.Type missing: flannel's default is the udp backend, which twill does not implement (${supported}; set Type)`);
  else if (FLANNEL_ONLY_BACKENDS.includes(type))
    unsupported.push(`Backend.Type ${JSON.stringify(typeName)}: flannel's ${type} backend is not supported (${supported})`);
  else if (!(BACKENDS as readonly string[]).includes(type))
    unsupported.push(`Backend.Type ${JSON.stringify(typeName)}: no such flannel backend (${supported})`);
  // Only the vxlan backend reads options: host-gw ignores whatever else Backend holds, as flannel's does.
  let b: z.infer<typeof vxlanSchema> = {};
  if (type === 'vxlan') {
    const vx = vxlanSchema.safeParse(backendRaw);
    if (!vx.success) fatal.push(...zodProblems(vx.error, 'Backend.'));
    else b = vx.data;
    if (b.GBP) unsupported.push('Backend.GBP true: VXLAN group-based policy is not supported by twill');
    if (b.Learning) unsupported.push('Backend.Learning true: twill programs every peer from its lease, it does not learn VTEPs from traffic');
  }

  const v4 = enableIPv4 ? familyNetworks(IPV4, { network: t.Network, len: t.SubnetLen, min: t.SubnetMin, max: t.SubnetMax }, problems, fatal) : undefined;
  const v6 = enableIPv6
    ? familyNetworks(IPV6, { network: t.IPv6Network, len: t.IPv6SubnetLen, min: t.IPv6SubnetMin, max: t.IPv6SubnetMax }, problems, fatal)
    : undefined;
  // flanneld checks the networks before it looks at the backend: while they are invalid it retries, whatever the backend.
  if (problems.length) throw new ConfigError(`invalid config: ${[...unsupported, ...problems].join('; ')}`);
  if (unsupported.length) throw new UnsupportedConfigError(`unsupported config: ${[...unsupported, ...fatal].join('; ')}`);
  if (fatal.length) throw new FatalConfigError(`invalid config: ${fatal.join('; ')}`);
  const toV4 = (c: FamilyCidr): Cidr => ({ ip: Number(c.ip), len: c.len });
  const families = {
    ...(v4
      ? { enableIPv4: true as const, network: toV4(v4.network), subnetLen: v4.subnetLen, subnetMin: toV4(v4.min), subnetMax: toV4(v4.max) }
      : { enableIPv4: false as const }),
    ...(v6
      ? { enableIPv6: true as const, ipv6Network: v6.network, ipv6SubnetLen: v6.subnetLen, ipv6SubnetMin: v6.min, ipv6SubnetMax: v6.max }
      : { enableIPv6: false as const, ipv6SubnetLen: t.IPv6SubnetLen ?? 0 }),
  };
  return {
    ...families,
    backend: {
      type: type as BackendType,
      // flanneld's default applies only when VNI is absent: an explicit 0 is VNI 0 (flannel.0), and peers must agree on it.
      vni: b.VNI ?? 1,
      port: b.Port || FLANNEL_VXLAN_PORT,
      // host-gw has no options of its own in flannel: its MTU is the interface's, and it routes every peer directly.
      mtu: type === 'vxlan' ? b.MTU || undefined : undefined,
      gbp: b.GBP ?? false,
      learning: b.Learning ?? false,
      directRouting: type === 'vxlan' && (b.DirectRouting ?? false),
    },
    raw: doc,
  };
}

/**
 * Pure: what to report when the config in etcd is no longer the one the agent started with.
 * flanneld reads the config once; so does twill, and the running datapath never changes because
 * of an edit: the report says whether a restart would apply it or refuse it.
 */
export function configChangeReport(running: string, current: string | undefined): string | undefined {
  if (current === running) return undefined;
  if (current === undefined) return 'the network config was deleted from etcd after start: the running datapath is unchanged';
  try {
    const before = parseNetworkConfig(running);
    const after = parseNetworkConfig(current);
    const same = (c: NetworkConfig) => JSON.stringify({ ...c, raw: undefined }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
    if (same(after) === same(before)) return undefined;
    return 'the network config changed after start: twill, like flanneld, reads it only at start; the running datapath is unchanged until the agent restarts';
  } catch (err) {
    return `the network config changed after start to one twill cannot run (${(err as Error).message}): the running datapath is unchanged`;
  }
}

/** While the agent waits for a usable config: a new problem is logged at once, the same one again every `everyMs`. */
export function waitLogDue(problem: string, last: { problem: string; at: number } | undefined, now: number, everyMs = 30_000): boolean {
  return last === undefined || problem !== last.problem || now - last.at >= everyMs;
}
