import { ip, ipJson } from '../netlink/ip.js';
import { HEADROOM_DEVICE_PREFIX } from './spec.js';

/*
 * The headroom port: without it, every small packet a pod sends on the fast path has its head
 * reallocated (pskb_expand_head) when twill_from_pod grows it by VXLAN's 50 bytes, because the
 * pod's sockets reserve only the veth's own hard header. A bridge gives each of its ports the
 * largest needed_headroom among them (br_add_if -> update_headroom -> netdev_set_rx_headroom),
 * and a veth passes what it is given on to its peer, the pod's eth0, whose sockets then reserve
 * it. A vxlan device needs exactly VXLAN's headroom, so one such device, never brought up,
 * enslaved to the pod bridge, makes the kernel do it for every pod, present and future. Its local
 * address is IPv6, so it asks for IPv6 VXLAN's 70 bytes (vxlan_config_apply), which hold IPv4's 50
 * too: the program writes IPv6 VXLAN itself (encap.h's vxlan6_encap). Down, the port is disabled:
 * the bridge forwards nothing to it, and it opens no socket.
 */

/** The headroom port of a bridge: a name that fits IFNAMSIZ, one per bridge. */
export const headroomPortName = (bridge: string) => (bridge === 'cni0' ? HEADROOM_DEVICE_PREFIX : `${HEADROOM_DEVICE_PREFIX}-${bridge}`).slice(0, 15);

// Never up, so neither VNI nor port is ever used on the wire; distinct from twill-rx's and flannel.<VNI>'s.
const VNI = 16777215;
const PORT = 1;
// As large as the kernel takes: a bridge's MTU follows its smallest port, and this one must never lower it.
const MTU = 65535;
// Any IPv6 address makes the device IPv6 VXLAN; loopback's, because it is never used.
const LOCAL6 = '::1';

interface Port {
  ifname: string;
  master?: string;
  linkinfo?: { info_kind?: string; info_data?: { local6?: string } };
}

/** Whether a vxlan device is one of the headroom ports, by its name (uninstall finds them so too). */
export const isHeadroomPort = (ifname: string) => ifname.startsWith(HEADROOM_DEVICE_PREFIX);

/** The headroom ports that exist, by name, with the bridge each is a port of. */
async function headroomPorts(): Promise<Port[]> {
  const links = await ipJson<Port[]>(['-d', 'link', 'show', 'type', 'vxlan']);
  return links.filter((l) => isHeadroomPort(l.ifname));
}

/**
 * Makes the headroom ports exactly those of `bridges` (the pod bridges present; empty when the
 * fast path is off, which encapsulates nothing from the pods). Returns what changed, one line each.
 */
export async function syncHeadroomPorts(bridges: readonly string[]): Promise<string[]> {
  const changed: string[] = [];
  const want = new Map(bridges.map((b) => [headroomPortName(b), b]));
  const kept = new Set<string>();
  for (const p of await headroomPorts()) {
    // A port made before IPv6's headroom (no local address) is made again.
    if (want.get(p.ifname) === p.master && p.linkinfo?.info_data?.local6 === LOCAL6) {
      kept.add(p.ifname);
      continue;
    }
    await ip(['link', 'del', p.ifname]);
    changed.push(`removed headroom port ${p.ifname}${p.master ? ` from ${p.master}` : ''}`);
  }
  for (const [name, bridge] of want) {
    if (kept.has(name)) continue;
    await ip(['link', 'add', name, 'mtu', String(MTU), 'type', 'vxlan', 'id', String(VNI), 'dstport', String(PORT), 'local', LOCAL6]);
    await ip(['link', 'set', name, 'master', bridge]);
    changed.push(`added headroom port ${name} to ${bridge}`);
  }
  return changed;
}

/** Every headroom port goes (uninstall, detach). */
export async function removeHeadroomPorts(): Promise<string[]> {
  return syncHeadroomPorts([]);
}
