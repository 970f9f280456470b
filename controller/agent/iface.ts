import { ipJson } from '../netlink/ip.js';

/** One interface as `ip -j addr show` reports it. */
export interface IfaceAddrs {
  ifindex: number;
  ifname: string;
  mtu: number;
  address?: string;
  operstate?: string;
  flags?: string[];
  addr_info: { family: string; local: string; prefixlen: number; scope?: string }[];
}

export interface IfaceOptions {
  iface?: string[];
  ifaceRegex?: string[];
  ifaceCanReach?: string;
  publicIp?: string;
}

export interface ChosenIface {
  name: string;
  ifindex: number;
  mtu: number;
  mac: string;
  /** the interface's own IPv4 address */
  address: string;
  /** what goes into the lease: --public-ip, else the interface address */
  publicIp: string;
  reason: string;
}

export class IfaceError extends Error {
  override name = 'IfaceError';
}

const ipv4Of = (l: IfaceAddrs) => l.addr_info.filter((a) => a.family === 'inet' && a.scope !== 'host').map((a) => a.local);

function choose(l: IfaceAddrs, address: string | undefined, publicIp: string | undefined, reason: string): ChosenIface {
  const addr = address ?? ipv4Of(l)[0];
  if (!addr) throw new IfaceError(`interface ${l.ifname} (${reason}) has no IPv4 address`);
  return { name: l.ifname, ifindex: l.ifindex, mtu: l.mtu, mac: l.address ?? '', address: addr, publicIp: publicIp ?? addr, reason };
}

/**
 * flannel's order: --iface entries (name or address) in the order given, then --iface-regex
 * (matched against names and addresses), then --iface-can-reach (the route to that address),
 * then the interface of the default route. Pure: the caller supplies what `ip` reported.
 */
export function chooseIface(
  links: readonly IfaceAddrs[],
  opts: IfaceOptions,
  routeHint: { defaultDev?: string; canReachDev?: string; canReachSrc?: string },
): ChosenIface {
  const byName = (n: string) => links.find((l) => l.ifname === n);
  if (opts.iface?.length) {
    for (const want of opts.iface) {
      const named = byName(want);
      if (named) return choose(named, undefined, opts.publicIp, `--iface ${want}`);
      const holder = links.find((l) => ipv4Of(l).includes(want));
      if (holder) return choose(holder, want, opts.publicIp, `--iface ${want}`);
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
        const addr = ipv4Of(l).find((a) => re.test(a));
        if (addr) return choose(l, addr, opts.publicIp, `--iface-regex ${pattern}`);
        if (re.test(l.ifname) && ipv4Of(l).length) return choose(l, undefined, opts.publicIp, `--iface-regex ${pattern}`);
      }
    }
    throw new IfaceError(`--iface-regex ${opts.ifaceRegex.join(',')}: no interface name or address matches`);
  }
  if (opts.ifaceCanReach) {
    const l = routeHint.canReachDev && byName(routeHint.canReachDev);
    if (!l) throw new IfaceError(`--iface-can-reach ${opts.ifaceCanReach}: no route to it`);
    return choose(l, routeHint.canReachSrc, opts.publicIp, `route to ${opts.ifaceCanReach}`);
  }
  const l = routeHint.defaultDev && byName(routeHint.defaultDev);
  if (!l) throw new IfaceError('no default route: pass --iface, --iface-regex or --iface-can-reach');
  return choose(l, undefined, opts.publicIp, 'default route');
}

/** The edge: asks iproute2 in the current network namespace. */
export async function selectIface(opts: IfaceOptions): Promise<ChosenIface> {
  const links = await ipJson<IfaceAddrs[]>(['addr', 'show']);
  const hint: { defaultDev?: string; canReachDev?: string; canReachSrc?: string } = {};
  if (opts.ifaceCanReach) {
    const r = await ipJson<{ dev?: string; prefsrc?: string }[]>(['route', 'get', opts.ifaceCanReach]).catch(() => []);
    hint.canReachDev = r[0]?.dev;
    hint.canReachSrc = r[0]?.prefsrc;
  } else {
    const r = await ipJson<{ dev?: string }[]>(['-4', 'route', 'show', 'default']);
    hint.defaultDev = r[0]?.dev;
  }
  return chooseIface(links, opts, hint);
}
