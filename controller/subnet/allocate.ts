import type { NetworkConfig } from '../config/network-config.js';
import { cidrContains, cidrOverlaps, formatCidr, type Cidr } from '../net/ipv4.js';
import { cidr6Contains, cidr6Overlaps, formatCidr6, nthSubnet6, type Cidr6 } from '../net/ipv6.js';
import { isReservation, NO_SUBNET, type Lease } from './lease.js';

/*
 * Pure: which subnet (IPv4, IPv6, or both, as the config enables) this node should hold, in
 * flannel's order (pkg/subnet/etcd/local_manager.go tryAcquireLease). The caller carries out the
 * decision against etcd and comes back here if a transaction loses a race.
 */

type AcquireDecision =
  | { action: 'reuse'; lease: Lease; reservation: boolean }
  /** `subnet` is NO_SUBNET in an IPv6-only network; `subnet6` is there when IPv6 is enabled */
  | { action: 'allocate'; subnet: Cidr; subnet6?: Cidr6; stale: Lease[]; via: 'hint' | 'random' }
  | { action: 'exhausted'; stale: Lease[]; family: 'IPv4' | 'IPv6' };

type Subnets = Pick<Lease, 'subnet' | 'subnet6'>;

/**
 * flannel's isSubnetConfigCompat and isIPv6SubnetConfigCompat: each enabled family's part is in
 * SubnetMin..SubnetMax at SubnetLen, and a disabled family's part is empty (flannel's zero net).
 */
export function fitsConfig(config: NetworkConfig, s: Subnets): boolean {
  const v4 = config.enableIPv4
    ? s.subnet.len === config.subnetLen && cidrContains(config.network, s.subnet) && s.subnet.ip >= config.subnetMin.ip && s.subnet.ip <= config.subnetMax.ip
    : s.subnet.ip === NO_SUBNET.ip && s.subnet.len === NO_SUBNET.len;
  const v6 = config.enableIPv6
    ? s.subnet6 !== undefined &&
      s.subnet6.len === config.ipv6SubnetLen &&
      cidr6Contains(config.ipv6Network, s.subnet6) &&
      s.subnet6.ip >= config.ipv6SubnetMin.ip &&
      s.subnet6.ip <= config.ipv6SubnetMax.ip
    : s.subnet6 === undefined;
  return v4 && v6;
}

/**
 * Why the datapath cannot carry a lease, if it cannot: the maps are keyed by the node subnet
 * size the network config names, so a lease of another size (overlapping a node's subnet, or
 * the whole network) or outside the network would misroute or shadow a real node's entry. The
 * same holds for the IPv6 part when IPv6 is enabled; an IPv6-only network needs one.
 */
export function unroutableReason(config: NetworkConfig, s: Subnets): string | undefined {
  if (config.enableIPv4) {
    if (s.subnet.len !== config.subnetLen) return `${formatCidr(s.subnet)} is not a /${config.subnetLen} as the network config says`;
    if (!cidrContains(config.network, s.subnet)) return `${formatCidr(s.subnet)} is outside the network ${formatCidr(config.network)}`;
  }
  if (config.enableIPv6) {
    if (!s.subnet6) return config.enableIPv4 ? undefined : 'no IPv6 subnet in an IPv6-only network';
    if (s.subnet6.len !== config.ipv6SubnetLen) return `${formatCidr6(s.subnet6)} is not a /${config.ipv6SubnetLen} as the network config says`;
    if (!cidr6Contains(config.ipv6Network, s.subnet6)) return `${formatCidr6(s.subnet6)} is outside the IPv6 network ${formatCidr6(config.ipv6Network)}`;
  }
  return undefined;
}

/** Walks SubnetMin..SubnetMax and returns up to `limit` subnets no lease overlaps (flannel's allocateSubnet). */
export function freeSubnets(config: NetworkConfig, leases: readonly Lease[], limit = 100): Cidr[] {
  if (!config.enableIPv4) return [];
  const step = 2 ** (32 - config.subnetLen);
  const taken = leases.map((l) => l.subnet);
  const out: Cidr[] = [];
  for (let ip = config.subnetMin.ip; ip <= config.subnetMax.ip && out.length < limit; ip += step) {
    const candidate = { ip: ip >>> 0, len: config.subnetLen };
    if (!taken.some((t) => cidrOverlaps(t, candidate))) out.push(candidate);
  }
  return out;
}

/** The same walk over IPv6SubnetMin..IPv6SubnetMax, against every lease's IPv6 part. */
export function freeSubnets6(config: NetworkConfig, leases: readonly Lease[], limit = 100): Cidr6[] {
  if (!config.enableIPv6) return [];
  const taken = leases.flatMap((l) => (l.subnet6 ? [l.subnet6] : []));
  const out: Cidr6[] = [];
  for (let c = config.ipv6SubnetMin; c.ip <= config.ipv6SubnetMax.ip && out.length < limit; c = nthSubnet6(c, 1n)) {
    const candidate = c;
    if (!taken.some((t) => cidr6Overlaps(t, candidate))) out.push(candidate);
  }
  return out;
}

/**
 * Our own records. flannel looks them up by PublicIP (findLeaseByIP); in an IPv6-only network
 * every lease's PublicIP is 0.0.0.0, which would hand us any node's lease, so there PublicIPv6
 * identifies us instead.
 */
function ownLeases(config: NetworkConfig, leases: readonly Lease[], publicIp: string, publicIpv6: string | undefined): Lease[] {
  if (config.enableIPv4) return leases.filter((l) => l.publicIp === publicIp);
  return publicIpv6 === undefined ? [] : leases.filter((l) => l.publicIpv6 === publicIpv6);
}

export function decideAcquire(input: {
  config: NetworkConfig;
  publicIp: string;
  /** our PublicIPv6: what identifies our records in an IPv6-only network */
  publicIpv6?: string;
  leases: readonly Lease[];
  /** FLANNEL_SUBNET's network from a previous subnet file */
  hint?: Cidr;
  /** FLANNEL_IPV6_SUBNET's network from a previous subnet file */
  hint6?: Cidr6;
  random?: () => number;
}): AcquireDecision {
  const { config, publicIp, leases } = input;
  const random = input.random ?? Math.random;
  const mine = ownLeases(config, leases, publicIp, input.publicIpv6);
  // A reservation for us wins over an expiring lease: it is what the operator pinned.
  const ordered = [...mine].sort((a, b) => Number(isReservation(b)) - Number(isReservation(a)));
  const reusable = ordered.find((l) => fitsConfig(config, l));
  const stale = mine.filter((l) => l !== reusable && !isReservation(l));
  if (reusable) return { action: 'reuse', lease: reusable, reservation: isReservation(reusable) };

  const others = leases.filter((l) => !stale.includes(l));
  // The previous subnets, if the config still allows them and nobody holds either part.
  const hinted: Subnets = { subnet: config.enableIPv4 ? (input.hint ?? NO_SUBNET) : NO_SUBNET, subnet6: config.enableIPv6 ? input.hint6 : undefined };
  const hintUsable =
    (config.enableIPv4 ? input.hint !== undefined : input.hint6 !== undefined) &&
    fitsConfig(config, hinted) &&
    !others.some(
      (l) => (config.enableIPv4 && cidrOverlaps(l.subnet, hinted.subnet)) || (hinted.subnet6 && l.subnet6 && cidr6Overlaps(l.subnet6, hinted.subnet6)),
    );
  if (hintUsable) return { action: 'allocate', ...hinted, stale, via: 'hint' };

  // As flannel: each enabled family picks at random among its first 100 free subnets.
  let subnet = NO_SUBNET;
  if (config.enableIPv4) {
    const free = freeSubnets(config, others);
    if (free.length === 0) return { action: 'exhausted', stale, family: 'IPv4' };
    subnet = free[Math.floor(random() * free.length)];
  }
  let subnet6: Cidr6 | undefined;
  if (config.enableIPv6) {
    const free6 = freeSubnets6(config, others);
    if (free6.length === 0) return { action: 'exhausted', stale, family: 'IPv6' };
    subnet6 = free6[Math.floor(random() * free6.length)];
  }
  return { action: 'allocate', subnet, subnet6, stale, via: 'random' };
}

/** A lease's subnets for logs and status: `10.244.1.0/24`, `10.244.1.0/24 fc00:0:0:1::/64`, or `fc00:0:0:1::/64`. */
export function describeSubnets(s: Subnets): string {
  const v4 = s.subnet.len === 0 && s.subnet6 ? [] : [formatCidr(s.subnet)];
  return [...v4, ...(s.subnet6 ? [formatCidr6(s.subnet6)] : [])].join(' ');
}
