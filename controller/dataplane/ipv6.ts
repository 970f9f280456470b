import { writeFileSync } from 'node:fs';
import { CONFIG6_ENABLED, type TwillConfig6 } from '../../maps/layout.js';
import { ifNameToIndex } from '../bpf/libbpf.js';
import { ip } from '../netlink/ip.js';
import { VXLAN6_OVERHEAD } from './spec.js';

/*
 * IPv6 beside IPv4, as flannel's dual-stack VXLAN does it: inner IPv6 in VXLAN over an IPv6
 * underlay, the same VNI and port, towards the peer's PublicIPv6 and v6 VtepMAC.
 *
 * No new device: twill_encap (twill0's egress) hands IPv6 to the flow-based vxlan device that
 * already holds the VXLAN port (twill-rx) with a tunnel key, and the kernel's vxlan driver
 * encapsulates it, so the outer UDP checksum is right for single packets and GSO segments alike
 * (bpf/include/encap.h says why adjust_room cannot); its IPv6 socket (a flow-based device listens
 * on both families) decaps what arrives, and twill_tunnel_rx judges it. twill_decap_tc on the
 * underlay refuses early, counted, what is plainly not for us.
 *
 * What the agent programs for a node with an IPv6 lease, after attachDataplane (which makes
 * twill0 and twill-rx) and again after anything that re-creates twill-rx (its ifindex is in the config):
 *  - ensureOverlay6(): twill0's address and the locked-MTU route of the IPv6Network;
 *  - twill_config6[0] = config6For() (flags CONFIG6_ENABLED; 0 turns IPv6 off);
 *  - per remote lease with an IPv6Subnet: twill_subnets6[{subnet6: base}] = {public_ip6: its
 *    PublicIPv6, vtep_mac6: its BackendV6Data.VtepMAC, flags: 0, stats_slot: its slot} and
 *    twill_peers6[{public_ip6}] = {subnet6: base, vtep_mac6, subnet6_len, flags: 0, stats_slot};
 *  - per local pod with an IPv6 address, for the fast path: twill_endpoints6[{ip6}] = the pod's
 *    twill_endpoint, with encap_mtu = underlay MTU - VXLAN6_OVERHEAD.
 * Not with host-gw (no twill-rx), and not while twill-rx is down (flannel-v6.<VNI> or flannel.<VNI>
 * holds the port): IPv6 sent there would be lost, so flags 0 until it is up.
 */

export { VXLAN6_OVERHEAD };

interface Overlay6 {
  /** twill0 */
  overlayDevice: string;
  /** twill-rx */
  tunnelDevice: string;
  /** our lease's IPv6Subnet, CIDR */
  subnet6: string;
  /** the cluster's IPv6Network, CIDR */
  network6: string;
  /** the MTU of the underlay towards the peers' PublicIPv6 */
  underlayMtu: number;
}

/**
 * What the stack needs for IPv6 through twill0, as flannel-v6.<VNI> has it: our subnet's base
 * address on the overlay device (a source for the node's own packets to pods elsewhere), and the
 * IPv6Network routed there with a locked MTU that leaves room for the 70 bytes of IPv6 VXLAN, so the
 * stack answers what is larger with ICMPv6 Packet Too Big (twill0's own MTU is IPv4's, 50 less).
 * IPv6 must be on for both devices (the routes need it on twill0, and the decapped packets are
 * dropped on a device without it) and forwarding on for the node. Idempotent. Runs in the node's netns.
 */
export async function ensureOverlay6(o: Overlay6): Promise<void> {
  for (const dev of [o.overlayDevice, o.tunnelDevice]) writeFileSync(`/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`, '0');
  writeFileSync('/proc/sys/net/ipv6/conf/all/forwarding', '1');
  const [base] = o.subnet6.split('/');
  await ip(['-6', 'addr', 'replace', `${base}/128`, 'dev', o.overlayDevice, 'nodad']);
  // Locked: the stack takes a route's MTU for forwarded packets (the pods') only when it is
  // (ip6_dst_mtu_maybe_forward), and would otherwise judge them by twill0's MTU, sized for IPv4.
  await ip(['-6', 'route', 'replace', o.network6, 'dev', o.overlayDevice, 'mtu', 'lock', String(o.underlayMtu - VXLAN6_OVERHEAD)]);
}

interface Identity6 {
  publicIp6: string;
  vtepMac6: string;
  subnet6: string;
  network6: string;
  tunnelDevice: string;
}

/** The twill_config6 entry for this node; the tunnel device must exist (its ifindex is written). */
export function config6For(id: Identity6): TwillConfig6 {
  const [subnet6, subnet6Len] = id.subnet6.split('/');
  const [network6, network6Len] = id.network6.split('/');
  return {
    public_ip6: id.publicIp6,
    subnet6,
    network6,
    vtep_mac6: id.vtepMac6.toLowerCase(),
    subnet6_len: Number(subnet6Len),
    network6_len: Number(network6Len),
    tunnel_ifindex: ifNameToIndex(id.tunnelDevice),
    flags: CONFIG6_ENABLED,
  };
}
