import { hostAddress, parseCidr } from '../net/ipv4.js';
import type { LabState } from './state.js';

/*
 * Pure: where things sit in a lab's address plan. On an underlay /24 nodes take .1 to .N, etcd
 * members .250 down, the gateway .254; the routed segment is the next /24; with IPv6 each /24 has
 * a /64 twin whose host numbers read as the IPv4 ones.
 */

/** Host `host` of an IPv4 CIDR (past its end for the next /24: hostIn(x.y.z.0/24, 256) is x.y.(z+1).0). */
export function hostIn(cidrText: string, host: number): string {
  return hostAddress(parseCidr(cidrText)!, host);
}

/**
 * The IPv6 twin of an underlay /24: 192.168.77.0/24 -> fd00:192:168:77::/64, host .N -> ::N (in
 * hex), so an address reads as its IPv4 one.
 */
export function underlay6Of(cidr4: string): string {
  const [a, b, c] = cidr4.split('/')[0].split('.');
  return `fd00:${a}:${b}:${c}::/64`;
}

export const host6In = (cidr6: string, host: number) => `${cidr6.split('::/')[0]}::${host.toString(16)}`;

export const labHasIpv6 = (state: Pick<LabState, 'ipFamily'>) => state.ipFamily === 'ipv6' || state.ipFamily === 'dual';
export const labHasIpv4 = (state: Pick<LabState, 'ipFamily'>) => state.ipFamily !== 'ipv6';
