import { ip, ipBatch } from '../netlink/ip.js';
import type { LabState } from './state.js';

/*
 * The lab's network namespaces: every one is named <lab>-<what> (the underlay, etcd members,
 * nodes, and <node netns>-<pod> for pods), so a lab's are found by name even without its state.
 */

export async function labNamespaces(name: string): Promise<string[]> {
  const out = await ip(['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${name}-`));
}

export async function namespaceExists(ns: string): Promise<boolean> {
  return (await labNamespaces(ns.split('-')[0])).includes(ns);
}

/** A namespace with eth0 on an underlay bridge (the first segment's, unless given): address, default route via its gateway, lo up. */
export async function attachToUnderlay(state: LabState, netns: string, port: string, address: string, mtu: number, segment: { bridge: string; gateway: string } = state.underlay): Promise<void> {
  await ip(['netns', 'add', netns]);
  await ip(['link', 'add', 'eth0', 'netns', netns, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', port, 'netns', state.underlay.netns, 'mtu', String(mtu)]);
  await ipBatch([`link set ${port} master ${segment.bridge} up`], { netns: state.underlay.netns });
  await ipBatch(['link set lo up', `addr add ${address}/24 dev eth0`, 'link set eth0 up', `route add default via ${segment.gateway}`], { netns });
}
