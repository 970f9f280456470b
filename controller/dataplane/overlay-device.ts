import { ip, ipBatch, linkShow } from '../netlink/ip.js';
import { logger } from '../util/log.js';
import { VXLAN_OVERHEAD, type DataplaneSpec } from './spec.js';

const log = logger('overlay-device');

/**
 * The overlay device replaces flannel.<VNI>: a NOARP device holding the subnet's .0/32 address
 * like flannel.1, with one route for the whole cluster network. The host stack routes
 * remote-pod traffic to it (after conntrack and NAT) and twill_encap, on its egress, turns it
 * into VXLAN. It has no FDB and no neighbour entries.
 *
 * Both kinds below are NOARP and discard whatever reaches their transmit function, so nothing
 * leaks if the program is missing; tc egress runs before that. `dummy` reads best in `ip link`,
 * but some kernels are built without it (this project's CI kernel has CONFIG_DUMMY unset),
 * so `ifb`, which distributions build in for traffic shaping, is the fallback.
 */
const deviceKinds = ['dummy', 'ifb'] as const;
export async function ensureOverlayDevice(spec: DataplaneSpec, underlayMtu: number): Promise<void> {
  const dev = spec.overlayDevice;
  const mtu = underlayMtu - VXLAN_OVERHEAD;
  const [base, len] = spec.subnet.split('/');
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
  // The address changes only when the lease moved to another subnet.
  const addrs = JSON.parse(await ip(['-j', '-4', 'addr', 'show', 'dev', dev])) as { addr_info: { local: string; prefixlen: number }[] }[];
  const want = `${base}/32`;
  for (const a of addrs[0]?.addr_info ?? []) {
    if (`${a.local}/${a.prefixlen}` !== want) await ip(['addr', 'del', `${a.local}/${a.prefixlen}`, 'dev', dev]);
  }
  if (!(addrs[0]?.addr_info ?? []).some((a) => `${a.local}/${a.prefixlen}` === want)) await ip(['addr', 'add', want, 'dev', dev]);
  await ip(['route', 'replace', spec.network, 'dev', dev, 'src', base]);
  log.info('overlay device ready', { dev, mtu, address: want, route: spec.network, subnetLen: Number(len) });
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
