import { ip, ipBatch } from '../netlink/ip.js';
import { run } from '../util/exec.js';
import type { LabNode, LabState } from './state.js';

/*
 * The lab's network namespaces and how they are wired: the underlay's, whose bridges are the
 * L2 segments (and which routes between them), and every other one's eth0 on a segment. Every
 * one is named <lab>-<what> (the underlay, etcd members, nodes, and <node netns>-<pod> for
 * pods), so a lab's are found by name even without its state.
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
export async function attachToUnderlay(
  state: LabState,
  netns: string,
  port: string,
  address: string,
  mtu: number,
  segment: { bridge: string; gateway: string } = state.underlay,
): Promise<void> {
  await ip(['netns', 'add', netns]);
  await ip([
    'link',
    'add',
    'eth0',
    'netns',
    netns,
    'mtu',
    String(mtu),
    'type',
    'veth',
    'peer',
    'name',
    port,
    'netns',
    state.underlay.netns,
    'mtu',
    String(mtu),
  ]);
  await ipBatch([`link set ${port} master ${segment.bridge} up`], { netns: state.underlay.netns });
  await ipBatch(['link set lo up', `addr add ${address}/24 dev eth0`, 'link set eth0 up', `route add default via ${segment.gateway}`], { netns });
}

/** The underlay namespace: br0 with the gateway, br1 for the routed segment, IPv6 on both with it; returns what to tell the user. */
export async function makeUnderlay(state: LabState, mtu: number): Promise<string> {
  const { netns: ul, cidr, gateway } = state.underlay;
  await ip(['netns', 'add', ul]);
  await ipBatch(['link set lo up', 'link add br0 type bridge', `addr add ${gateway}/24 dev br0`, `link set br0 mtu ${mtu} up`], { netns: ul });
  const routed = state.routedSegment;
  if (routed) {
    // The underlay namespace is the router between the two segments.
    await ipBatch(['link add br1 type bridge', `addr add ${routed.gateway}/24 dev br1`, `link set br1 mtu ${mtu} up`], { netns: ul });
    await run(['sysctl', '-qw', 'net.ipv4.ip_forward=1'], { netns: ul });
  }
  const u6 = state.underlay6;
  if (u6) {
    await ipBatch([`addr add ${u6.gateway}/64 dev br0 nodad`, ...(u6.routedGateway ? [`addr add ${u6.routedGateway}/64 dev br1 nodad`] : [])], { netns: ul });
    await run(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1'], { netns: ul });
  }
  return `underlay ${ul}: bridge br0, ${cidr}${u6 ? ` and ${u6.cidr}` : ''}, gateway ${gateway}${routed ? `; bridge br1, ${routed.cidr}, gateway ${routed.gateway}, routed to br0` : ''}`;
}

/** A node's namespace on its segment (with its IPv6 address too, in a lab with IPv6), forwarding as a node does. */
export async function connectNode(state: LabState, node: LabNode, onRouted: boolean, mtu: number): Promise<void> {
  await attachToUnderlay(state, node.netns, node.name, node.underlayIp, mtu, onRouted ? state.routedSegment : undefined);
  const u6 = state.underlay6;
  if (u6)
    await ipBatch([`addr add ${node.underlayIp6}/64 dev eth0 nodad`, `route add default via ${onRouted ? u6.routedGateway : u6.gateway} dev eth0`], {
      netns: node.netns,
    });
  for (const [key, value] of [
    ['net.ipv4.ip_forward', '1'],
    ['net.ipv4.conf.all.rp_filter', '0'],
    ['net.ipv4.conf.default.rp_filter', '0'],
    // A node routes its pods' IPv6 as it routes their IPv4.
    ...(u6 ? [['net.ipv6.conf.all.forwarding', '1']] : []),
  ])
    await run(['sysctl', '-qw', `${key}=${value}`], { netns: node.netns });
}
