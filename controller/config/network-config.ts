import { z } from 'zod';
import { cidrContains, cidrSize, formatCidr, parseCidr, type Cidr } from '../net/ipv4.js';

/*
 * flannel's network config (<prefix>/config) with flannel's defaults and validation.
 * Go's encoding/json matches field names case-insensitively (an exact match wins), and
 * ignores unknown fields; so does this parser.
 */

/** The backends twill implements, on both dataplanes. */
export const SUPPORTED_BACKENDS = ['vxlan', 'host-gw'] as const;
export type BackendType = (typeof SUPPORTED_BACKENDS)[number];

/** flannel's other backends: known, and refused by name rather than as typos. */
const FLANNEL_ONLY_BACKENDS = ['udp', 'ipip', 'wireguard', 'ipsec', 'alloc', 'extension', 'aws-vpc', 'gce', 'ali-vpc', 'tencent-vpc'];

export interface BackendConfig {
  type: BackendType;
  vni: number;
  port: number;
  /** underlay MTU override; undefined = the interface's MTU */
  mtu?: number;
  gbp: boolean;
  learning: boolean;
  directRouting: boolean;
}

export interface NetworkConfig {
  enableIPv4: boolean;
  enableIPv6: boolean;
  network: Cidr;
  subnetLen: number;
  subnetMin: Cidr;
  subnetMax: Cidr;
  ipv6Network?: string;
  ipv6SubnetLen?: number;
  backend: BackendConfig;
  /** the document as stored, for logs */
  raw: unknown;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/**
 * A config that is valid for flannel but asks for what twill does not do (another backend, an
 * option): waiting would not help, so the agent names it and exits, as flanneld exits on an
 * unknown backend. Its message lists the invalid fields too, if there are any.
 */
export class UnsupportedConfigError extends ConfigError {
  override name = 'UnsupportedConfigError';
}

const topFields = ['Network', 'SubnetLen', 'SubnetMin', 'SubnetMax', 'EnableIPv4', 'EnableIPv6', 'IPv6Network', 'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax', 'Backend'] as const;
const backendFields = ['Type', 'VNI', 'Port', 'MTU', 'GBP', 'Learning', 'DirectRouting', 'MacPrefix'] as const;

/** Go json field matching: the exact name, else the first case-insensitive one. */
function goFields<const F extends readonly string[]>(obj: Record<string, unknown>, fields: F): Partial<Record<F[number], unknown>> {
  const out: Partial<Record<F[number], unknown>> = {};
  for (const f of fields) {
    if (f in obj) out[f as F[number]] = obj[f];
    else {
      const k = Object.keys(obj).find((key) => key.toLowerCase() === f.toLowerCase());
      if (k !== undefined) out[f as F[number]] = obj[k];
    }
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
const backendSchema = z.object({
  Type: str.optional(),
  VNI: uint(0xffffff).optional(),
  Port: uint(65535).optional(),
  MTU: uint(65535).optional(),
  GBP: bool.optional(),
  Learning: bool.optional(),
  DirectRouting: bool.optional(),
});

function zodProblems(err: z.ZodError, prefix: string): string[] {
  return err.issues.map((i) => `${prefix}${i.path.join('.')}: ${i.message}`);
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
  const backendRaw = goFields((t.Backend ?? {}) as Record<string, unknown>, backendFields);
  const be = backendSchema.safeParse(backendRaw);
  if (!be.success) throw new ConfigError(`invalid config: ${zodProblems(be.error, 'Backend.').join('; ')}`);
  const b = be.data;

  const problems: string[] = [];
  const unsupported: string[] = [];
  const enableIPv4 = t.EnableIPv4 ?? true;
  const enableIPv6 = t.EnableIPv6 ?? false;
  if (!enableIPv4 && !enableIPv6) problems.push('EnableIPv4 and EnableIPv6 are both false: nothing to do');
  if (enableIPv6) unsupported.push('EnableIPv6: IPv6 overlays are not supported by twill yet (set EnableIPv6 false)');
  const type = (b.Type ?? 'udp').toLowerCase(); // flannel's default backend is udp
  const supported = `twill implements ${SUPPORTED_BACKENDS.join(' and ')}`;
  if (b.Type === undefined) unsupported.push(`Backend.Type missing: flannel's default is the udp backend, which twill does not implement (${supported}; set Type)`);
  else if (FLANNEL_ONLY_BACKENDS.includes(type)) unsupported.push(`Backend.Type ${JSON.stringify(b.Type)}: flannel's ${type} backend is not supported (${supported})`);
  else if (!(SUPPORTED_BACKENDS as readonly string[]).includes(type)) unsupported.push(`Backend.Type ${JSON.stringify(b.Type)}: no such flannel backend (${supported})`);
  if (type === 'vxlan') {
    if (b.GBP) unsupported.push('Backend.GBP true: VXLAN group-based policy is not supported by twill');
    if (b.Learning) unsupported.push('Backend.Learning true: twill programs every peer from its lease, it does not learn VTEPs from traffic');
  }

  let network: Cidr | undefined;
  if (enableIPv4) {
    if (t.Network === undefined) problems.push('Network: missing (required when EnableIPv4 is true)');
    else {
      network = parseCidr(t.Network);
      if (!network) problems.push(`Network ${JSON.stringify(t.Network)}: not an IPv4 CIDR`);
      else if (network.len > 28) problems.push(`Network ${t.Network}: prefix /${network.len} is too small, must be /28 or larger`);
    }
  }
  let subnetLen = 0;
  let subnetMin: Cidr | undefined;
  let subnetMax: Cidr | undefined;
  if (network && network.len <= 28) {
    if (t.SubnetLen === undefined || t.SubnetLen === 0) subnetLen = network.len <= 22 ? 24 : network.len + 2;
    else if (t.SubnetLen > 30) problems.push(`SubnetLen ${t.SubnetLen}: must be <= 30`);
    else if (t.SubnetLen < network.len + 2) problems.push(`SubnetLen ${t.SubnetLen}: must be >= ${network.len + 2} (Network /${network.len} plus 2)`);
    else subnetLen = t.SubnetLen;
  }
  if (network && subnetLen) {
    const step = 2 ** (32 - subnetLen);
    const bound = (field: 'SubnetMin' | 'SubnetMax', value: string | undefined, fallback: number): Cidr | undefined => {
      if (value === undefined) return { ip: fallback >>> 0, len: subnetLen };
      const ip = parseCidr(`${value}/${subnetLen}`);
      if (!ip) {
        problems.push(`${field} ${JSON.stringify(value)}: not an IPv4 address`);
        return undefined;
      }
      if (!cidrContains(network!, ip)) problems.push(`${field} ${value}: outside Network ${formatCidr(network!)}`);
      else if (parseCidr(`${value}/${subnetLen}`, true) === undefined) problems.push(`${field} ${value}: not aligned to SubnetLen /${subnetLen}`);
      return ip;
    };
    subnetMin = bound('SubnetMin', t.SubnetMin, network.ip + step);
    subnetMax = bound('SubnetMax', t.SubnetMax, network.ip + cidrSize(network) - step);
    if (subnetMin && subnetMax && subnetMin.ip > subnetMax.ip) problems.push(`SubnetMin ${formatCidr(subnetMin)} is above SubnetMax ${formatCidr(subnetMax)}`);
  }
  if (unsupported.length) throw new UnsupportedConfigError(`unsupported config: ${[...unsupported, ...problems].join('; ')}`);
  if (problems.length) throw new ConfigError(`invalid config: ${problems.join('; ')}`);
  return {
    enableIPv4,
    enableIPv6,
    network: network!,
    subnetLen,
    subnetMin: subnetMin!,
    subnetMax: subnetMax!,
    backend: {
      type: type as BackendType,
      vni: b.VNI || 1, // flannel treats 0 as unset
      port: b.Port || 8472,
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
    if (JSON.stringify({ ...after, raw: undefined }) === JSON.stringify({ ...before, raw: undefined })) return undefined;
    return 'the network config changed after start: twill, like flanneld, reads it only at start; the running datapath is unchanged until the agent restarts';
  } catch (err) {
    return `the network config changed after start to one twill cannot run (${(err as Error).message}): the running datapath is unchanged`;
  }
}

/** While the agent waits for a usable config: a new problem is logged at once, the same one again every `everyMs`. */
export function waitLogDue(problem: string, last: { problem: string; at: number } | undefined, now: number, everyMs = 30_000): boolean {
  return last === undefined || problem !== last.problem || now - last.at >= everyMs;
}
