import { writeFileSync } from 'node:fs';
import { ip, ipBatch, linkShow } from '../netlink/ip.js';
import { logger } from '../util/log.js';
import { backendOverhead, type DataplaneSpec } from './spec.js';

const log = logger('overlay-device');

/**
 * The overlay device replaces flannel.<VNI>: a NOARP device holding the subnet's .0/32 address
 * like flannel.1, with one route for the whole cluster network. The host stack routes
 * remote-pod traffic to it (after conntrack and NAT) and twill_encap, on its egress, turns it
 * into VXLAN, or routes it to a directly reachable peer. It has no FDB and no neighbour entries.
 *
 * Both kinds below are NOARP and discard whatever reaches their transmit function, so nothing
 * leaks if the program is missing; tc egress runs before that. `dummy` reads best in `ip link`,
 * but some kernels are built without it (this project's CI kernel has CONFIG_DUMMY unset),
 * so `ifb`, which distributions build in for traffic shaping, is the fallback.
 */
const deviceKinds = ['dummy', 'ifb'] as const;
export async function ensureOverlayDevice(spec: DataplaneSpec, underlayMtu: number): Promise<void> {
  const dev = spec.overlayDevice;
  const mtu = underlayMtu - backendOverhead(spec.backend);
  const existing = await linkShow(dev);
  const kind = existing?.linkinfo?.info_kind;
  if (existing && !deviceKinds.includes(kind as (typeof deviceKinds)[number]))
    throw new Error(`overlay device ${dev} exists but is a ${kind ?? 'unknown'} device, not one of ${deviceKinds.join('/')}: refusing to take it over`);
  if (!existing) await createOverlayDevice(dev);
  await ipBatch([
    // No IPv6 link-local address: nothing but routed IPv4 should ever reach the encap program.
    `link set ${dev} addrgenmode none`,
    `link set ${dev} mtu ${mtu}`,
    `link set ${dev} up`,
  ]);
  // An IPv6-only node: no IPv4 address and no IPv4 route (ensureOverlay6 adds the IPv6Network's).
  if (!spec.subnet || !spec.network) {
    await setOnlyAddress(dev, undefined);
    log.info('overlay device ready (IPv6 only)', { dev, mtu });
    return;
  }
  const [base, len] = spec.subnet.split('/');
  const want = `${base}/32`;
  await setOnlyAddress(dev, want);
  await ip(['route', 'replace', spec.network, 'dev', dev, 'src', base]);
  log.info('overlay device ready', { dev, mtu, address: want, route: spec.network, subnetLen: Number(len) });
}

/** `want` (none: no address) and no other IPv4 address on `dev`; it changes only when the lease moved to another subnet. */
async function setOnlyAddress(dev: string, want: string | undefined): Promise<void> {
  const addrs = JSON.parse(await ip(['-j', '-4', 'addr', 'show', 'dev', dev])) as { addr_info: { local: string; prefixlen: number }[] }[];
  for (const a of addrs[0]?.addr_info ?? []) {
    if (`${a.local}/${a.prefixlen}` !== want) await ip(['addr', 'del', `${a.local}/${a.prefixlen}`, 'dev', dev]);
  }
  if (want && !(addrs[0]?.addr_info ?? []).some((a) => `${a.local}/${a.prefixlen}` === want)) await ip(['addr', 'add', want, 'dev', dev]);
}

/**
 * Loose reverse-path filtering on a device where decapped packets arrive: their sources are
 * remote pods, routed back through the overlay device, which strict filtering would refuse.
 */
export function setLooseRpFilter(dev: string): void {
  writeFileSync(`/proc/sys/net/ipv4/conf/${dev}/rp_filter`, '2');
}

async function createOverlayDevice(dev: string): Promise<void> {
  const errors: string[] = [];
  for (const kind of deviceKinds) {
    try {
      await ip(['link', 'add', dev, 'type', kind]);
      if (kind !== deviceKinds[0]) log.info('kernel has no dummy driver, overlay device is an ifb', { dev });
      return;
    } catch (err) {
      errors.push(`${kind}: ${(err as Error).message}`);
    }
  }
  throw new Error(`cannot create overlay device ${dev}: ${errors.join('; ')}`);
}

export async function removeOverlayDevice(dev: string): Promise<boolean> {
  if (!(await linkShow(dev))) return false;
  await ip(['link', 'del', dev]);
  return true;
}

/*
 * twill-rx: a flow-based ("external") vxlan device that only receives. It owns the VXLAN UDP
 * port, which gives the underlay the kernel's UDP-tunnel GRO ahead of tc decap (behind a NIC
 * without native XDP, VXLAN arrives at MTU size and would otherwise be decapped and delivered one
 * frame at a time), and it decaps what twill's hooks hand to the stack: fragmented VXLAN, once
 * reassembled. It has no FDB, no neighbours and no routes; twill_tunnel_rx at its tc ingress
 * judges every packet it decaps (known peer, VNI, our subnet). It is created down and brought up
 * only once that program is attached. flanneld's flannel.<VNI> holds the same port with other
 * socket flags, so the two cannot be up together: a switch to kernel VXLAN removes twill-rx
 * first, and a switch from it brings twill-rx up once flannel.<VNI> is gone.
 *
 * It carries the same <subnet>.0/32 as the overlay device, as flannel.<VNI> does: the kernel's
 * source check refuses every packet arriving on a device without an IPv4 address whenever
 * rp_filter is on, even in loose mode.
 */
export async function ensureTunnelDevice(dev: string, port: number, subnet: string | undefined): Promise<void> {
  const existing = await linkShow(dev);
  if (existing && existing.linkinfo?.info_kind !== 'vxlan')
    throw new Error(`tunnel device ${dev} exists but is a ${existing.linkinfo?.info_kind ?? 'unknown'} device, not vxlan: refusing to take it over`);
  if (!existing) await ip(['link', 'add', dev, 'type', 'vxlan', 'dstport', String(port), 'external']);
  await ipBatch([`link set ${dev} addrgenmode none`]);
  setLooseRpFilter(dev);
  // IPv6 has no such source check: an IPv6-only node's tunnel device needs no address.
  await setOnlyAddress(dev, subnet && `${subnet.split('/')[0]}/32`);
}

/** Up, unless another vxlan device holds the port; says which when it cannot. */
export async function tunnelDeviceUp(dev: string): Promise<{ up: boolean; reason?: string }> {
  try {
    await ip(['link', 'set', dev, 'up']);
    return { up: true };
  } catch (err) {
    const msg = (err as Error).message;
    if (!/in use/i.test(msg)) throw err;
    return { up: false, reason: 'the VXLAN port is held by another vxlan device (flannel.<VNI> while the node switches from kernel VXLAN)' };
  }
}
