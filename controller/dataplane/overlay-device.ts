import { ip, ipBatch, linkShow } from '../netlink/ip.js';
import { logger } from '../util/log.js';
import { VXLAN_OVERHEAD, type DataplaneSpec } from './spec.js';

const log = logger('overlay-device');

/**
 * The overlay device replaces flannel.<VNI>: a dummy (NOARP) device holding the subnet's
 * .0/32 address like flannel.1, with one route for the whole cluster network. The host stack
 * routes remote-pod traffic to it (after conntrack and NAT) and twill_encap, on its egress,
 * turns it into VXLAN. It has no FDB and no neighbour entries.
 */
export async function ensureOverlayDevice(spec: DataplaneSpec, underlayMtu: number): Promise<void> {
  const dev = spec.overlayDevice;
  const mtu = underlayMtu - VXLAN_OVERHEAD;
  const [base, len] = spec.subnet.split('/');
  const existing = await linkShow(dev);
  if (existing && existing.linkinfo?.info_kind !== 'dummy')
    throw new Error(`overlay device ${dev} exists but is a ${existing.linkinfo?.info_kind ?? 'unknown'} device, not dummy`);
  const lines: string[] = [];
  if (!existing) lines.push(`link add ${dev} type dummy`);
  lines.push(
    // No IPv6 link-local address: nothing but routed IPv4 should ever reach the encap program.
    `link set ${dev} addrgenmode none`,
    `link set ${dev} mtu ${mtu}`,
    `link set ${dev} up`,
  );
  await ipBatch(lines);
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

export async function removeOverlayDevice(dev: string): Promise<boolean> {
  if (!(await linkShow(dev))) return false;
  await ip(['link', 'del', dev]);
  return true;
}
