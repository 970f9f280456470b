import { ipBatch, ipJson } from '../netlink/ip.js';
import { run } from '../util/exec.js';
import { isDirect, type DesiredMaps } from '../reconcile/desired.js';
import type { SyncResult } from '../reconcile/reconciler.js';
import { cidrContains, parseCidr } from '../net/ipv4.js';
import { cidr6Contains, parseCidr6 } from '../net/ipv6.js';
import type { UnderlayRoute } from '../reconcile/underlay.js';

/*
 * Peers on our L2 segment, as flannel judges them, and the kernel routes flannel gives them.
 *
 * flannel routes a peer's subnet straight to its PublicIP (`<subnet> via <PublicIP>`) in the
 * host-gw backend always, and in the vxlan backend with DirectRouting when the PublicIP is
 * on-link: `ip route get <PublicIP>` answers with one route and no gateway
 * (flannel's ip.DirectRouting). host-gw cannot reach any other peer.
 */

interface RouteGetAnswer {
  type?: string;
  dst: string;
  gateway?: string;
  dev?: string;
}

/** Pure: flannel's verdict on one `ip route get` answer (none: the kernel found no route). */
export function underlayRoute(answer: RouteGetAnswer | undefined): UnderlayRoute {
  if (!answer) return { kind: 'unreachable', error: 'no route' };
  if (answer.type && answer.type !== 'unicast' && answer.type !== 'local') return { kind: 'unreachable', error: `a ${answer.type} route` };
  return answer.gateway ? { kind: 'routed', gateway: answer.gateway, dev: answer.dev } : { kind: 'direct', dev: answer.dev };
}

/** The kernel's answers for many addresses in one `ip -batch` run (a failing lookup leaves no answer). */
export async function lookUpUnderlayRoutes(ips: readonly string[]): Promise<Map<string, UnderlayRoute>> {
  const out = new Map<string, UnderlayRoute>();
  if (ips.length === 0) return out;
  const res = await run(['ip', '-j', '-force', '-batch', '-'], { input: ips.map((a) => `route get ${a}`).join('\n') + '\n', allowFailure: true });
  const answers = new Map<string, RouteGetAnswer>();
  for (const line of res.stdout.split('\n')) {
    if (!line.trim()) continue;
    for (const a of JSON.parse(line) as RouteGetAnswer[]) answers.set(a.dst, a);
  }
  for (const a of ips) out.set(a, underlayRoute(answers.get(a)));
  return out;
}

interface RouteEntry {
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
}

/** Pure: whether `dst` (a route's destination) is a subnet of the family's `network` with `subnetLen`. */
function isPeerSubnet(dst: string, network: string, subnetLen: number, family: 4 | 6): boolean {
  if (family === 6) {
    const d = parseCidr6(dst);
    return d !== undefined && d.len === subnetLen && cidr6Contains(parseCidr6(network)!, d);
  }
  const d = parseCidr(dst);
  return d !== undefined && d.len === subnetLen && cidrContains(parseCidr(network)!, d);
}

/** Pure: the direct routes to peer subnets among a route listing (subnet base -> gateway). */
export function directRoutesIn(routes: readonly RouteEntry[], network: string, subnetLen: number, family: 4 | 6 = 4): Map<string, string> {
  const out = new Map<string, string>();
  for (const r of routes) {
    // flannel.<VNI>'s (flannel-v6.<VNI>'s) routes are `via <subnet base> onlink`: those are the VXLAN ones.
    if (!r.gateway || r.flags?.includes('onlink') || !isPeerSubnet(r.dst, network, subnetLen, family)) continue;
    out.set(r.dst.split('/')[0], r.gateway);
  }
  return out;
}

/**
 * The kernel routes flannel programs for directly routed peers, changed by difference with the
 * main table: `<subnet> via <PublicIP>`, on the interface for host-gw (flannel's RouteNetwork
 * sets it), without one for VXLAN DirectRouting (the kernel picks it, as in flannel).
 */
export class DirectRoutes {
  constructor(
    private readonly network: string,
    private readonly subnetLen: number,
    private readonly dev?: string,
    /** 6: IPv6 subnets via PublicIPv6, as flannel's GetV6Route and v6 direct routes */
    private readonly family: 4 | 6 = 4,
  ) {}

  async current(): Promise<Map<string, string>> {
    return directRoutesIn(await ipJson<RouteEntry[]>([`-${this.family}`, 'route', 'show', 'table', 'main']), this.network, this.subnetLen, this.family);
  }

  /** Brings the direct routes to `want` (subnet base -> PublicIP); returns how many were added and removed. */
  async sync(want: ReadonlyMap<string, string>): Promise<{ added: number; removed: number }> {
    const have = await this.current();
    const add = [...want].filter(([s, gw]) => have.get(s) !== gw);
    const remove = [...have.keys()].filter((s) => !want.has(s));
    const dev = this.dev ? ` dev ${this.dev}` : '';
    await ipBatch(add.map(([s, gw]) => `route replace ${s}/${this.subnetLen} via ${gw}${dev}`));
    await ipBatch(remove.map((s) => `route del ${s}/${this.subnetLen} via ${have.get(s)}`));
    return { added: add.length, removed: remove.length };
  }
}

/** Subnet base -> PublicIP of the desired remotes routed directly: what DirectRoutes programs. */
export const directGateways = (desired: DesiredMaps) => new Map([...desired.subnets].filter(([, r]) => isDirect(r)).map(([s, r]) => [s, r.public_ip]));

/** The desired state without the directly routed remotes: what goes to VXLAN. */
export const viaVxlanOnly = (desired: DesiredMaps): DesiredMaps => ({ ...desired, subnets: new Map([...desired.subnets].filter(([, r]) => !isDirect(r))) });

/**
 * A VXLAN datapath beside flannel's direct routes (IPv6 with DirectRouting on the BPF dataplane):
 * a peer on our segment gets `<subnet> via <PublicIP>` and no VXLAN entry; VXLAN from it is still
 * accepted (it stays a peer). A peer moving either way gets its new route or entry before it
 * loses the old one: both carry its traffic meanwhile.
 */
export class VxlanWithDirectRoutes {
  constructor(
    private readonly vxlan: { sync(desired: DesiredMaps): SyncResult | Promise<SyncResult> },
    private readonly routes: DirectRoutes,
  ) {}

  async sync(desired: DesiredMaps): Promise<SyncResult> {
    const want = directGateways(desired);
    const a = await this.routes.sync(new Map([...(await this.routes.current()), ...want]));
    const v = await this.vxlan.sync(viaVxlanOnly(desired));
    const r = await this.routes.sync(want);
    return { subnetsAdded: v.subnetsAdded + a.added, subnetsRemoved: v.subnetsRemoved + r.removed, peersAdded: v.peersAdded, peersRemoved: v.peersRemoved };
  }
}
