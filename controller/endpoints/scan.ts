import { ipJson, linkShow } from '../netlink/ip.js';
import type { BridgePort, DiscoveredPod } from './desired.js';

/*
 * The edge that looks at the node: the ports of the pod bridges, and (for ports no CNI record
 * describes) the pod at the far end of each, found through the named network namespace the
 * container runtime keeps for it. Runs in the node's network namespace.
 */

interface PortJson {
  ifindex: number;
  ifname: string;
  mtu: number;
  link_index?: number;
  link_netnsid?: number;
  linkinfo?: { info_kind?: string };
}

export async function scanBridges(
  bridges: readonly string[],
): Promise<{ ports: (BridgePort & { peerIfindex?: number; peerNetnsId?: number })[]; bridgeMacs: Map<string, string> }> {
  const ports: (BridgePort & { peerIfindex?: number; peerNetnsId?: number })[] = [];
  const bridgeMacs = new Map<string, string>();
  for (const bridge of new Set(bridges)) {
    const br = await linkShow(bridge);
    if (!br?.address) continue;
    bridgeMacs.set(bridge, br.address);
    for (const p of await ipJson<PortJson[]>(['-d', 'link', 'show', 'master', bridge])) {
      if (p.linkinfo?.info_kind !== 'veth') continue;
      ports.push({ bridge, ifname: p.ifname, ifindex: p.ifindex, mtu: p.mtu, peerIfindex: p.link_index, peerNetnsId: p.link_netnsid });
    }
  }
  return { ports, bridgeMacs };
}

/** Pods at the far end of `ports`, where their namespace has a name (/run/netns) this node can see. */
export async function discoverPods(ports: readonly (BridgePort & { peerIfindex?: number; peerNetnsId?: number })[]): Promise<DiscoveredPod[]> {
  if (ports.length === 0) return [];
  const names = new Map((await ipJson<{ nsid: number; name?: string }[]>(['netns', 'list-id'])).filter((n) => n.name).map((n) => [n.nsid, n.name!]));
  const found: DiscoveredPod[] = [];
  for (const p of ports) {
    const ns = p.peerNetnsId !== undefined ? names.get(p.peerNetnsId) : undefined;
    if (!ns || p.peerIfindex === undefined) continue;
    try {
      const links = await ipJson<{ ifindex: number; address?: string; addr_info?: { family: string; local: string }[] }[]>(['-n', ns, 'addr', 'show']);
      const peer = links.find((l) => l.ifindex === p.peerIfindex);
      const v4 = peer?.addr_info?.find((a) => a.family === 'inet');
      if (peer?.address && v4) found.push({ hostVeth: p.ifname, ip: v4.local, mac: peer.address });
    } catch {
      // The namespace went away since it was listed: that pod is being deleted.
    }
  }
  return found;
}
