import { parseIpv4 } from '../net/ipv4.js';
import { formatIpv6, parseIpv6 } from '../net/ipv6.js';
import { ipJson } from '../netlink/ip.js';

/** One interface as `ip -j addr show` reports it. */
export interface IfaceAddrs {
  ifindex: number;
  ifname: string;
  mtu: number;
  address?: string;
  operstate?: string;
  flags?: string[];
  addr_info: { family: string; local: string; prefixlen: number; scope?: string; deprecated?: boolean; tentative?: boolean; dadfailed?: boolean }[];
}

interface IfaceOptions {
  iface?: string[];
  ifaceRegex?: string[];
  ifaceCanReach?: string;
  publicIp?: string;
  publicIpv6?: string;
  /** the families the network config enables (flannel's ipStack); IPv4 alone when not given */
  families?: { ipv4: boolean; ipv6: boolean };
}

export interface ChosenIface {
  name: string;
  ifindex: number;
  mtu: number;
  mac: string;
  /** the interface's own IPv4 address; there when the network enables IPv4 */
  address?: string;
  /** what goes into the lease's PublicIP: --public-ip, else the interface address; there when IPv4 is enabled */
  publicIp?: string;
  /** the interface's own global IPv6 address (canonical text); there when the network enables IPv6 */
  address6?: string;
  /** what goes into the lease's PublicIPv6: --public-ipv6, else address6 (canonical text) */
  publicIpv6?: string;
  reason: string;
}

/** What `ip route` said: for IPv4, and with a 6 for IPv6 (each asked only when that family is enabled). */
interface RouteHint {
  defaultDev?: string;
  defaultDev6?: string;
  canReachDev?: string;
  canReachSrc?: string;
}

class IfaceError extends Error {
  override name = 'IfaceError';
}

const ipv4Of = (l: IfaceAddrs) => l.addr_info.filter((a) => a.family === 'inet' && a.scope !== 'host').map((a) => a.local);
/**
 * Global, usable IPv6 addresses, canonical. flannel also takes link-local ones (GetInterfaceIP6Addrs),
 * but a link-local address cannot be a tunnel endpoint for peers on other links, so twill refuses it.
 */
const ipv6Of = (l: IfaceAddrs) =>
  l.addr_info
    .filter((a) => a.family === 'inet6' && a.scope === 'global' && !a.deprecated && !a.tentative && !a.dadfailed)
    .map((a) => formatIpv6(parseIpv6(a.local) ?? 0n));
const canonical6 = (text: string) => {
  const n = parseIpv6(text);
  return n === undefined ? undefined : formatIpv6(n);
};

/** The addresses of each enabled family on `l`: the given one, else the interface's first. */
function choose(l: IfaceAddrs, found: { v4?: string; v6?: string }, opts: IfaceOptions, reason: string): ChosenIface {
  const fam = opts.families ?? { ipv4: true, ipv6: false };
  const out: ChosenIface = { name: l.ifname, ifindex: l.ifindex, mtu: l.mtu, mac: l.address ?? '', reason };
  if (fam.ipv4) {
    const addr = found.v4 ?? ipv4Of(l)[0];
    if (!addr) throw new IfaceError(`interface ${l.ifname} (${reason}) has no IPv4 address`);
    out.address = addr;
    out.publicIp = opts.publicIp ?? addr;
  }
  if (fam.ipv6) {
    const addr6 = found.v6 ?? ipv6Of(l)[0];
    if (!addr6) throw new IfaceError(`interface ${l.ifname} (${reason}) has no global IPv6 address, which the network config's EnableIPv6 needs`);
    out.address6 = addr6;
    out.publicIpv6 = (opts.publicIpv6 && canonical6(opts.publicIpv6)) || addr6;
  }
  return out;
}

/**
 * flannel's order (pkg/ipmatch/match.go LookupExtIface), for the families the config enables:
 * --iface entries (name or address of either family) in the order given, then --iface-regex
 * (matched against addresses of each enabled family, then names), then --iface-can-reach (the
 * route to that address, of either family), then the interface of the default route (both
 * families' in dual stack, which must be the same interface). Pure: the caller supplies what
 * `ip` reported.
 */
export function chooseIface(links: readonly IfaceAddrs[], opts: IfaceOptions, routeHint: RouteHint): ChosenIface {
  const fam = opts.families ?? { ipv4: true, ipv6: false };
  const byName = (n: string) => links.find((l) => l.ifname === n);
  if (opts.iface?.length) {
    for (const want of opts.iface) {
      const named = byName(want);
      if (named) return choose(named, {}, opts, `--iface ${want}`);
      const want6 = canonical6(want);
      const holder = links.find((l) => ipv4Of(l).includes(want) || (want6 !== undefined && ipv6Of(l).includes(want6)));
      if (holder) return choose(holder, want6 ? { v6: want6 } : { v4: want }, opts, `--iface ${want}`);
    }
    throw new IfaceError(`--iface ${opts.iface.join(',')}: no interface has that name or address`);
  }
  if (opts.ifaceRegex?.length) {
    for (const pattern of opts.ifaceRegex) {
      let re: RegExp;
      try {
        re = new RegExp(pattern);
      } catch (err) {
        throw new IfaceError(`--iface-regex ${pattern}: ${(err as Error).message}`);
      }
      for (const l of links) {
        // In dual stack flannel wants an address of each family to match on the same interface.
        const v4 = fam.ipv4 ? ipv4Of(l).find((a) => re.test(a)) : undefined;
        const v6 = fam.ipv6 ? ipv6Of(l).find((a) => re.test(a)) : undefined;
        if ((!fam.ipv4 || v4) && (!fam.ipv6 || v6)) return choose(l, { v4, v6 }, opts, `--iface-regex ${pattern}`);
        const hasAddrs = (!fam.ipv4 || ipv4Of(l).length > 0) && (!fam.ipv6 || ipv6Of(l).length > 0);
        if (re.test(l.ifname) && hasAddrs) return choose(l, {}, opts, `--iface-regex ${pattern}`);
      }
    }
    throw new IfaceError(`--iface-regex ${opts.ifaceRegex.join(',')}: no interface name or address matches`);
  }
  if (opts.ifaceCanReach) {
    const l = routeHint.canReachDev && byName(routeHint.canReachDev);
    if (!l) throw new IfaceError(`--iface-can-reach ${opts.ifaceCanReach}: no route to it`);
    const src = routeHint.canReachSrc;
    const found = src === undefined ? {} : parseIpv4(src) !== undefined ? { v4: src } : { v6: canonical6(src) };
    return choose(l, found, opts, `route to ${opts.ifaceCanReach}`);
  }
  const l = fam.ipv4 ? routeHint.defaultDev && byName(routeHint.defaultDev) : undefined;
  const l6 = fam.ipv6 ? routeHint.defaultDev6 && byName(routeHint.defaultDev6) : undefined;
  if (fam.ipv4 && !l) throw new IfaceError('no default route: pass --iface, --iface-regex or --iface-can-reach');
  if (fam.ipv6 && !l6)
    throw new IfaceError("no IPv6 default route, which the network config's EnableIPv6 needs: pass --iface, --iface-regex or --iface-can-reach");
  if (l && l6 && l !== l6)
    throw new IfaceError(
      `the IPv6 default route's interface ${l6.ifname} must be the IPv4 default route's ${l.ifname} (as flannel requires in dual stack): pass --iface`,
    );
  return choose((l || l6) as IfaceAddrs, {}, opts, 'default route');
}

/** The edge: asks iproute2 in the current network namespace, only about the families enabled. */
export async function selectIface(opts: IfaceOptions): Promise<ChosenIface> {
  const fam = opts.families ?? { ipv4: true, ipv6: false };
  const links = await ipJson<IfaceAddrs[]>(['addr', 'show']);
  const hint: RouteHint = {};
  if (opts.ifaceCanReach) {
    const v6 = parseIpv6(opts.ifaceCanReach) !== undefined;
    const r = await ipJson<{ dev?: string; prefsrc?: string }[]>([v6 ? '-6' : '-4', 'route', 'get', opts.ifaceCanReach]).catch(() => []);
    hint.canReachDev = r[0]?.dev;
    hint.canReachSrc = r[0]?.prefsrc;
  } else if (!opts.iface?.length && !opts.ifaceRegex?.length) {
    if (fam.ipv4) hint.defaultDev = (await ipJson<{ dev?: string }[]>(['-4', 'route', 'show', 'default']))[0]?.dev;
    if (fam.ipv6) hint.defaultDev6 = (await ipJson<{ dev?: string }[]>(['-6', 'route', 'show', 'default']))[0]?.dev;
  }
  return chooseIface(links, opts, hint);
}
