import { ip, ipBatch, ipJson, linkShow } from '../netlink/ip.js';
import { run } from '../util/exec.js';
import { logger } from '../util/log.js';
import type { DesiredMaps } from '../reconcile/desired.js';
import { directGateways, DirectRoutes, viaVxlanOnly } from './direct-routes.js';
import { VXLAN6_OVERHEAD, VXLAN_OVERHEAD } from './spec.js';
import type { SyncResult } from '../reconcile/reconciler.js';

const log = logger('kernel-vxlan');

/*
 * flannel's vxlan backend, reproduced: `--dataplane kernel`, the fallback for kernels without the
 * features the BPF datapath needs, and a flannel-identical peer for interop tests and benchmarks.
 * "Kernel VXLAN" in the names here (KernelVxlanDatapath, ensureKernelVxlan) is this mode, as the
 * flag calls it; the kernel's features are feature-probe.ts's.
 *
 * Per node and address family a vxlan device, flannel.<VNI> for IPv4 and flannel-v6.<VNI> for IPv6
 * (nolearning, the subnet's base address as /32 or /128, the family's VtepMAC as its address,
 * outer headers of that family from the interface's address); per remote lease, in flannel's
 * order: a permanent neighbour entry for the peer's base address, a permanent FDB entry sending
 * its VtepMAC to its PublicIP (PublicIPv6), an onlink route.
 *
 * flannel's newVXLANDevice (pkg/backend/vxlan/device.go) asks for underlay - 50 for both devices;
 * the kernel clamps an IPv6 vxlan device to its lower device's MTU less 70 when it creates it, so
 * a flanneld node's flannel-v6.<VNI> has underlay - 70, and so does ours.
 */

type IpFamily = 4 | 6;

interface KernelVxlanSpec {
  /** absent: 4 */
  family?: IpFamily;
  vni: number;
  port: number;
  underlayIface: string;
  /** local address for outer headers (the interface address of the family) */
  localIp: string;
  vtepMac: string;
  /** our lease's subnet of the family */
  subnet: string;
  underlayMtu: number;
}

const vxlanDeviceName = (vni: number, family: IpFamily = 4) => (family === 6 ? `flannel-v6.${vni}` : `flannel.${vni}`);

interface VxlanLinkInfo {
  ifname: string;
  address: string;
  mtu: number;
  /** `ip -j` names an IPv6 local address local6 */
  linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; local6?: string; port?: number; learning?: boolean; link?: string } };
}

export async function ensureKernelVxlan(spec: KernelVxlanSpec): Promise<void> {
  const family = spec.family ?? 4;
  const dev = vxlanDeviceName(spec.vni, family);
  const existing = (await linkShow(dev)) as VxlanLinkInfo | undefined;
  const d = existing?.linkinfo?.info_data;
  const compatible =
    existing?.linkinfo?.info_kind === 'vxlan' &&
    d?.id === spec.vni &&
    (d?.local ?? d?.local6) === spec.localIp &&
    d?.port === spec.port &&
    d?.learning === false;
  if (existing && !compatible) {
    log.warn('existing vxlan device does not match the config, recreating it', { dev, found: d });
    await ip(['link', 'del', dev]);
  }
  if (!existing || !compatible)
    await ip([
      'link',
      'add',
      dev,
      'type',
      'vxlan',
      'id',
      String(spec.vni),
      'local',
      spec.localIp,
      'dev',
      spec.underlayIface,
      'nolearning',
      'dstport',
      String(spec.port),
    ]);
  // Unlike flannel, an MTU or MAC change is applied to an existing device too.
  const mtu = spec.underlayMtu - (family === 6 ? VXLAN6_OVERHEAD : VXLAN_OVERHEAD);
  await ipBatch([`link set ${dev} address ${spec.vtepMac}`, `link set ${dev} mtu ${mtu}`, `link set ${dev} up`]);
  const want = `${spec.subnet.split('/')[0]}/${family === 6 ? 128 : 32}`;
  // The kernel's own fe80:: address of the device stays: neighbour discovery on it is harmless.
  const addrs = (
    (await ipJson<{ addr_info: { local: string; prefixlen: number; scope?: string }[] }[]>([`-${family}`, 'addr', 'show', 'dev', dev]))[0]?.addr_info ?? []
  ).filter((a) => a.scope !== 'link');
  for (const a of addrs) if (`${a.local}/${a.prefixlen}` !== want) await ip(['addr', 'del', `${a.local}/${a.prefixlen}`, 'dev', dev]);
  if (!addrs.some((a) => `${a.local}/${a.prefixlen}` === want)) await ip(['addr', 'add', want, 'dev', dev]);
  log.info('vxlan device ready', { dev, vni: spec.vni, local: spec.localIp, port: spec.port, mtu, mac: spec.vtepMac });
}

/** The VtepMAC of an existing flannel.<VNI> (flannel-v6.<VNI>), so a switch between modes keeps the lease's MAC. */
export async function kernelVxlanMac(vni: number, family: IpFamily = 4): Promise<string | undefined> {
  return (await linkShow(vxlanDeviceName(vni, family)))?.address;
}

/**
 * Routes first, so new packets take the BPF path; the device goes once what it had queued has
 * left (deleting it at once drops those, measured as 1-2 packets per switch under ping flows).
 */
export async function removeKernelVxlan(vni: number, drainMs = 200, family: IpFamily = 4): Promise<boolean> {
  const dev = vxlanDeviceName(vni, family);
  if (!(await linkShow(dev))) return false;
  await ip([`-${family}`, 'route', 'flush', 'dev', dev]);
  await new Promise((r) => setTimeout(r, drainMs));
  await ip(['link', 'del', dev]);
  return true;
}

type Remote = { public_ip: string; vtep_mac: string };

/**
 * The kernel state for the lease set: read back from netlink and changed by difference. With
 * DirectRouting, peers on our L2 segment get flannel's direct route instead of the three VXLAN
 * entries; a peer moving between the two loses its old entries before it gets the new ones.
 */
export class KernelVxlanDatapath {
  private readonly direct: DirectRoutes;
  constructor(
    private readonly vni: number,
    private readonly subnetLen: number,
    network: string,
    private readonly family: IpFamily = 4,
  ) {
    this.direct = new DirectRoutes(network, subnetLen, undefined, family);
  }

  private get dev() {
    return vxlanDeviceName(this.vni, this.family);
  }

  /** Subnets whose route, neighbour and FDB entry are all present and agree. */
  async current(): Promise<Map<string, Remote>> {
    const dev = this.dev;
    const af = `-${this.family}`;
    const routes = await ipJson<{ dst: string; gateway?: string }[]>([af, 'route', 'show', 'dev', dev]);
    const neighs = await ipJson<{ dst: string; lladdr?: string }[]>([af, 'neigh', 'show', 'dev', dev]);
    const fdb = JSON.parse((await run(['bridge', '-j', 'fdb', 'show', 'dev', dev])).stdout || '[]') as { mac: string; dst?: string }[];
    const macOf = new Map(neighs.map((n) => [n.dst, n.lladdr]));
    const dstOf = new Map(fdb.filter((f) => f.dst).map((f) => [f.mac, f.dst]));
    const out = new Map<string, Remote>();
    for (const r of routes) {
      const [base, len] = r.dst.split('/');
      if (Number(len) !== this.subnetLen || r.gateway !== base) continue;
      const mac = macOf.get(base);
      const pub = mac && dstOf.get(mac);
      if (mac && pub) out.set(base, { public_ip: pub, vtep_mac: mac });
    }
    return out;
  }

  async sync(desired: DesiredMaps): Promise<SyncResult> {
    const dev = this.dev;
    const have = await this.current();
    const viaVxlan = viaVxlanOnly(desired).subnets;
    const upsert = [...viaVxlan].filter(([s, r]) => have.get(s)?.public_ip !== r.public_ip || have.get(s)?.vtep_mac !== r.vtep_mac);
    const remove = [...have.keys()].filter((s) => !viaVxlan.has(s));
    const len = this.subnetLen;
    const gone = remove.map((s) => [s, have.get(s)!] as const);
    await ipBatch(gone.map(([s]) => `neigh del ${s} dev ${dev}`));
    await bridgeBatch(
      gone
        .filter(([, r]) => ![...viaVxlan.values()].some((d) => d.vtep_mac === r.vtep_mac))
        .map(([, r]) => `fdb del ${r.vtep_mac} dev ${dev} dst ${r.public_ip} self`),
    );
    await ipBatch(gone.map(([s]) => `route del ${s}/${len} dev ${dev}`));
    const direct = await this.direct.sync(directGateways(desired));
    // flannel's order for each lease, kept by running each kind as one batch in that order.
    await ipBatch(upsert.map(([s, r]) => `neigh replace ${s} lladdr ${r.vtep_mac} dev ${dev} nud permanent`));
    await bridgeBatch(upsert.map(([, r]) => `fdb replace ${r.vtep_mac} dev ${dev} dst ${r.public_ip} self permanent`));
    await ipBatch(upsert.map(([s]) => `route replace ${s}/${len} via ${s} dev ${dev} onlink`));
    const added = upsert.length + direct.added;
    const removed = remove.length + direct.removed;
    return { subnetsAdded: added, subnetsRemoved: removed, peersAdded: added, peersRemoved: removed };
  }

  close(): void {}
}

/** flannel's host-gw backend: one route per peer, `<subnet> via <PublicIP> dev <iface>`, and nothing else. */
export class KernelHostGwDatapath {
  private readonly routes: DirectRoutes;
  constructor(network: string, subnetLen: number, iface: string, family: IpFamily = 4) {
    this.routes = new DirectRoutes(network, subnetLen, iface, family);
  }

  async sync(desired: DesiredMaps): Promise<SyncResult> {
    const r = await this.routes.sync(directGateways(desired));
    return { subnetsAdded: r.added, subnetsRemoved: r.removed, peersAdded: r.added, peersRemoved: r.removed };
  }

  close(): void {}
}

async function bridgeBatch(lines: readonly string[]): Promise<void> {
  if (lines.length === 0) return;
  await run(['bridge', '-batch', '-'], { input: lines.join('\n') + '\n' });
}
