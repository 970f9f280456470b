import { ipBatch, ipJson } from '../netlink/ip.js';
import { run } from '../util/exec.js';
import { cidrContains, parseCidr } from '../net/ipv4.js';
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

/** Pure: the direct routes to peer subnets among a route listing (subnet base -> gateway). */
export function directRoutesIn(routes: readonly RouteEntry[], network: string, subnetLen: number): Map<string, string> {
  const net = parseCidr(network)!;
  const out = new Map<string, string>();
  for (const r of routes) {
    const dst = parseCidr(r.dst);
    // flannel.<VNI>'s routes are `via <subnet base> onlink`: those are the VXLAN ones.
    if (!dst || dst.len !== subnetLen || !cidrContains(net, dst) || !r.gateway || r.flags?.includes('onlink')) continue;
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
  ) {}

  async current(): Promise<Map<string, string>> {
    return directRoutesIn(await ipJson<RouteEntry[]>(['-4', 'route', 'show', 'table', 'main']), this.network, this.subnetLen);
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
