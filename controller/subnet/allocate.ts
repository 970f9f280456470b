import type { NetworkConfig } from '../config/network-config.js';
import { cidrContains, cidrOverlaps, formatCidr, type Cidr } from '../net/ipv4.js';
import { isReservation, type Lease } from './lease.js';

/*
 * Pure: which subnet this node should hold, in flannel's order. The caller carries out the
 * decision against etcd and comes back here if a transaction loses a race.
 */

export type AcquireDecision =
  | { action: 'reuse'; lease: Lease; reservation: boolean }
  | { action: 'allocate'; subnet: Cidr; stale: Lease[]; via: 'hint' | 'random' }
  | { action: 'exhausted'; stale: Lease[] };

export function fitsConfig(config: NetworkConfig, subnet: Cidr): boolean {
  return (
    subnet.len === config.subnetLen &&
    cidrContains(config.network, subnet) &&
    subnet.ip >= config.subnetMin.ip &&
    subnet.ip <= config.subnetMax.ip
  );
}

/**
 * Why the datapath cannot carry a lease, if it cannot: the maps are keyed by the node subnet
 * size the network config names, so a lease of another size (overlapping a node's subnet, or
 * the whole network) or outside the network would misroute or shadow a real node's entry.
 */
export function unroutableReason(config: NetworkConfig, subnet: Cidr): string | undefined {
  if (subnet.len !== config.subnetLen) return `${formatCidr(subnet)} is not a /${config.subnetLen} as the network config says`;
  if (!cidrContains(config.network, subnet)) return `${formatCidr(subnet)} is outside the network ${formatCidr(config.network)}`;
  return undefined;
}

/** Walks SubnetMin..SubnetMax and returns up to `limit` subnets no lease overlaps. */
export function freeSubnets(config: NetworkConfig, leases: readonly Lease[], limit = 100): Cidr[] {
  const step = 2 ** (32 - config.subnetLen);
  const taken = leases.map((l) => l.subnet);
  const out: Cidr[] = [];
  for (let ip = config.subnetMin.ip; ip <= config.subnetMax.ip && out.length < limit; ip += step) {
    const candidate = { ip: ip >>> 0, len: config.subnetLen };
    if (!taken.some((t) => cidrOverlaps(t, candidate))) out.push(candidate);
  }
  return out;
}

export function decideAcquire(input: {
  config: NetworkConfig;
  publicIp: string;
  leases: readonly Lease[];
  /** FLANNEL_SUBNET's network from a previous subnet file */
  hint?: Cidr;
  random?: () => number;
}): AcquireDecision {
  const { config, publicIp, leases, hint } = input;
  const random = input.random ?? Math.random;
  const mine = leases.filter((l) => l.publicIp === publicIp);
  // A reservation for us wins over an expiring lease: it is what the operator pinned.
  const ordered = [...mine].sort((a, b) => Number(isReservation(b)) - Number(isReservation(a)));
  const reusable = ordered.find((l) => fitsConfig(config, l.subnet));
  const stale = mine.filter((l) => l !== reusable && !isReservation(l));
  if (reusable) return { action: 'reuse', lease: reusable, reservation: isReservation(reusable) };

  const others = leases.filter((l) => !stale.includes(l));
  if (hint && fitsConfig(config, hint) && !others.some((l) => cidrOverlaps(l.subnet, hint))) return { action: 'allocate', subnet: hint, stale, via: 'hint' };
  const free = freeSubnets(config, others);
  if (free.length === 0) return { action: 'exhausted', stale };
  return { action: 'allocate', subnet: free[Math.floor(random() * free.length)], stale, via: 'random' };
}

export const describeSubnet = formatCidr;
