import { existsSync } from 'node:fs';
import type { Ipv4Networks, NetworkConfig } from '../config/network-config.js';
import { attachDataplane, detachDataplane, removeTunnelDevice, retryTunnelDeviceUp } from '../dataplane/attach.js';
import { readAttachState, type AttachState, type FastPathState } from '../dataplane/attach-state.js';
import { retireIncompatiblePins } from '../dataplane/bpf-objects.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { DirectRoutes, VxlanWithDirectRoutes } from '../dataplane/direct-routes.js';
import { config6For, ensureOverlay6, VXLAN6_OVERHEAD } from '../dataplane/ipv6.js';
import { recordKernelFallback } from '../dataplane/choice-record.js';
import { ensureKernelVxlan, kernelVxlanMac, KernelHostGwDatapath, KernelVxlanDatapath, removeKernelVxlan } from '../dataplane/flannel-vxlan.js';
import { parseDataplaneSpec, TUNNEL_DEVICE, VXLAN_OVERHEAD } from '../dataplane/spec.js';
import { endpointsDirFor } from '../endpoints/records.js';
import { EndpointSync } from '../endpoints/sync.js';
import { ForwardPolicyWatch } from '../dataplane/forward-policy.js';
import { NextHopSync } from '../dataplane/next-hops.js';
import { CONFIG6_ENABLED, CONFIG_FAST_PATH } from '../../maps/layout.js';
import { randomVtepMac } from '../net/mac.js';
import { formatCidr } from '../net/ipv4.js';
import { formatCidr6 } from '../net/ipv6.js';
import { linkShow } from '../netlink/ip.js';
import type { DesiredMaps } from '../reconcile/desired.js';
import { noDatapath, type Datapath, type Datapaths } from '../reconcile/reconciler.js';
import type { OwnLease } from '../subnet/manager.js';
import { logger } from '../util/log.js';
import type { AgentFlags } from './flags.js';
import type { ChosenIface } from './iface.js';

const log = logger('agent');
/** How often FORWARD is looked at for rules the fast path would bypass. */
const FORWARD_CHECK_MS = 5000;

export type DataplaneMode = 'bpf' | 'kernel';

/** What the IPv4 datapath is built for; none in an IPv6-only network. */
export interface Ipv4Side {
  networks: Ipv4Networks;
  /** the interface's address: the underlay source of VXLAN */
  address: string;
  /** the lease's PublicIP */
  publicIp: string;
}

/** What the IPv6 datapath is built for, when the network enables IPv6. */
export interface Ipv6Side {
  /** the IPv6Network, CIDR */
  network: string;
  subnetLen: number;
  address: string;
  publicIp: string;
}

export interface NodeDatapathOptions {
  flags: Pick<AgentFlags, 'pinDir' | 'dataplane' | 'decapHook' | 'fastPath' | 'podSourceCheck' | 'overlayDevice' | 'subnetFile'>;
  config: NetworkConfig;
  iface: ChosenIface;
  ipv4?: Ipv4Side;
  ipv6?: Ipv6Side;
  vtepMac: string;
  /** with IPv6 */
  vtepMac6?: string;
  underlayMtu: number;
  /** what `auto` chose from the kernel's features, or what --dataplane said */
  mode: DataplaneMode;
}

/**
 * The VtepMACs survive restarts and mode switches: read back from the pinned config maps when
 * there are some, else from flannel.<VNI> and flannel-v6.<VNI> (a node moving from kernel VXLAN
 * or from flanneld keeps its MACs), else new.
 */
export async function rememberedVtepMacs(
  pinDir: string,
  vni: number,
  withIpv6: boolean,
  /** what the subnet manager kept (a Node's backend-data annotations), after the pins and before the devices */
  stored: { vtepMac?: string; vtepMac6?: string } = {},
): Promise<{ vtepMac: string; vtepMac6?: string }> {
  retireIncompatiblePins(pinDir); // maps another build left with another layout could not even be opened
  const pinned = existsSync(`${pinDir}/twill_config`);
  const vtepMac = (pinned ? DatapathMaps.readPinnedConfig(pinDir)?.vtep_mac : undefined) ?? stored.vtepMac ?? (await kernelVxlanMac(vni)) ?? randomVtepMac();
  if (!withIpv6) return { vtepMac };
  const pinned6 = pinned && DatapathMaps.hasIpv6(pinDir) ? DatapathMaps.readPinnedMac6(pinDir) : undefined;
  return { vtepMac, vtepMac6: pinned6 ?? stored.vtepMac6 ?? (await linkShow(`flannel-v6.${vni}`))?.address ?? randomVtepMac() };
}

/**
 * This node's datapath, in whichever mode it runs: BPF (the programs, twill0 and twill-rx, the
 * pinned maps, the local endpoints) or flannel's kernel devices and routes. It owns the mode
 * (`auto` falls back to kernel VXLAN when the programs cannot attach), the attach state (read
 * once, then kept as this object changes it), and the programming of both address families.
 */
export class NodeDatapath {
  /** the mode chosen; `programmed` says whether it carries traffic yet */
  mode: DataplaneMode;
  /** the mode last programmed, undefined while programming (status and metrics read it) */
  programmed?: DataplaneMode;
  /** as the last attach decided it (BPF mode) */
  fastPath?: FastPathState;
  /** the local pods, for the fast path (BPF mode) */
  endpoints?: EndpointSync;
  /** the underlay MACs the programs send to (BPF mode, IPv4) */
  nextHops?: NextHopSync;
  /** FORWARD rules the fast path would bypass, once looked at (BPF mode with the fast path on) */
  forwardRules?: string[];
  private forwardPolicy?: ForwardPolicyWatch;
  private attach: AttachState | undefined;

  constructor(private readonly o: NodeDatapathOptions) {
    this.mode = o.mode;
    this.attach = readAttachState(o.flags.pinDir);
  }

  private get pinDir(): string {
    return this.o.flags.pinDir;
  }

  private get backend() {
    return this.o.config.backend;
  }

  /** The tunnel device the last attach made (twill-rx unless --tunnel-device said otherwise). */
  private get tunnelDevice(): string {
    return this.attach?.tunnel?.iface ?? TUNNEL_DEVICE;
  }

  /**
   * Sets up this node's datapath for the lease we hold (again if the lease ever moves), and
   * returns what carries each family's peers. `peers` is the IPv4 peer set to program before the
   * programs attach, so decap never runs with an empty allow-list.
   */
  async program(own: OwnLease, peers: DesiredMaps): Promise<Datapaths> {
    this.programmed = undefined;
    const datapaths = { ipv4: await this.program4(own, peers), ipv6: await this.program6(own) };
    this.programmed = this.mode;
    return datapaths;
  }

  /**
   * The pinned maps the reconciler writes in BPF mode, both families: opened after the first
   * attach and kept (a re-attach for a moved lease keeps the pinned maps).
   */
  private maps?: DatapathMaps;
  private openMaps(): DatapathMaps {
    return (this.maps ??= DatapathMaps.open(this.pinDir, { ipv6Slots: this.o.ipv4 ? 'shared' : 'own' }));
  }

  private async program4(own: OwnLease, peers: DesiredMaps): Promise<Datapath> {
    const { flags, iface, ipv4, underlayMtu } = this.o;
    if (this.mode === 'bpf') {
      const spec = parseDataplaneSpec({
        pinDir: flags.pinDir,
        underlayIface: iface.name,
        // An IPv6-only node attaches the programs with no IPv4 identity: twill_config6 is its identity.
        ...(ipv4 && { publicIp: ipv4.address, subnet: formatCidr(own.subnet), network: formatCidr(ipv4.networks.network) }),
        vtepMac: this.o.vtepMac,
        backend: this.backend.type,
        vni: this.backend.vni,
        port: this.backend.port,
        mtu: underlayMtu,
        overlayDevice: flags.overlayDevice,
        decapHook: flags.decapHook,
        fastPath: flags.fastPath !== false,
        podSourceCheck: flags.podSourceCheck,
      });
      try {
        // Peers first, programs second: decap must know every peer the moment it runs.
        const attached = await attachDataplane({ spec, beforeAttach: async (maps) => void maps.ipv4.sync(peers) });
        this.attach = attached.state;
        this.fastPath = attached.state.fastPath;
        await this.syncEndpoints(own, attached.state.fastPath?.enabled ?? false);
        await this.syncNextHops();
        await this.watchForwardPolicy();
        return this.openMaps().ipv4;
      } catch (err) {
        if (flags.dataplane !== 'auto') throw err;
        log.warn('BPF datapath unavailable on this kernel, using kernel VXLAN as flannel does', { error: (err as Error).message });
        recordKernelFallback(flags.pinDir, (err as Error).message);
        this.mode = 'kernel';
      }
    }
    // IPv6 only on the kernel dataplane: flannel-v6.<VNI> (program6) is all there is.
    if (!ipv4) return noDatapath;
    const network = formatCidr(ipv4.networks.network);
    if (this.backend.type === 'host-gw') return new KernelHostGwDatapath(network, ipv4.networks.subnetLen, iface.name);
    // flannel.<VNI> needs the VXLAN port that twill's tunnel device holds; BPF decap goes on meanwhile.
    await this.removeTunnelDevice();
    await ensureKernelVxlan({
      vni: this.backend.vni,
      port: this.backend.port,
      underlayIface: iface.name,
      localIp: ipv4.address,
      vtepMac: this.o.vtepMac,
      subnet: formatCidr(own.subnet),
      underlayMtu,
    });
    return new KernelVxlanDatapath(this.backend.vni, ipv4.networks.subnetLen, network);
  }

  /**
   * The IPv6 side, for the lease we hold. BPF: twill0 takes the IPv6Network (its route's locked
   * MTU leaves room for IPv6's 70 bytes) and twill_config6 says who we are; the programs hand IPv6
   * to twill-rx, whose IPv6 socket the kernel's vxlan driver encapsulates and decapsulates with.
   * Kernel: flannel-v6.<VNI> exactly as flanneld makes it.
   */
  private async program6(own: OwnLease): Promise<Datapath | undefined> {
    const { ipv6, iface, underlayMtu } = this.o;
    if (!ipv6 || !own.subnet6) return undefined;
    const subnet6 = formatCidr6(own.subnet6);
    // host-gw's IPv6 is flannel's GetV6Route on either dataplane: the programs pass IPv6 to the stack.
    if (this.backend.type === 'host-gw') return new KernelHostGwDatapath(ipv6.network, ipv6.subnetLen, iface.name, 6);
    if (this.mode === 'bpf') {
      await ensureOverlay6({ overlayDevice: this.o.flags.overlayDevice, tunnelDevice: this.tunnelDevice, subnet6, network6: ipv6.network, underlayMtu });
      const maps = this.openMaps();
      this.writeConfig6(maps, subnet6);
      const maps6 = maps.ipv6!; // writeConfig6 above would have thrown without the IPv6 maps
      // IPv6 peers on our segment get flannel's v6 direct route; the stack forwards their traffic.
      return this.backend.directRouting ? new VxlanWithDirectRoutes(maps6, new DirectRoutes(ipv6.network, ipv6.subnetLen, undefined, 6)) : maps6;
    }
    // flannel-v6.<VNI> needs the VXLAN port (IPv6's) that twill-rx holds in both families.
    await this.removeTunnelDevice();
    await ensureKernelVxlan({
      family: 6,
      vni: this.backend.vni,
      port: this.backend.port,
      underlayIface: iface.name,
      localIp: ipv6.address,
      vtepMac: this.o.vtepMac6!,
      subnet: subnet6,
      underlayMtu,
    });
    return new KernelVxlanDatapath(this.backend.vni, ipv6.subnetLen, ipv6.network, 6);
  }

  private async removeTunnelDevice(): Promise<void> {
    if (!this.attach?.tunnel) return;
    await removeTunnelDevice(this.pinDir, this.attach);
    this.attach = { ...this.attach, tunnel: undefined };
  }

  /**
   * IPv6 is on in the programs only while twill-rx is up: until flannel's devices have given the
   * VXLAN port back, IPv6 handed to it would be lost (IPv6 stays off, IPv4 takes the stack path).
   */
  private writeConfig6(maps: DatapathMaps, subnet6: string): boolean {
    const ipv6 = this.o.ipv6!;
    const up = this.attach?.tunnel?.up === true;
    const cfg = config6For({ publicIp6: ipv6.publicIp, vtepMac6: this.o.vtepMac6!, subnet6, network6: ipv6.network, tunnelDevice: this.tunnelDevice });
    maps.writeConfig6({ ...cfg, flags: up ? CONFIG6_ENABLED : 0 });
    return up;
  }

  /**
   * The pods on this node, for the fast path: synced before the agent reports ready (a restart
   * repairs what changed while it was down), then on every CNI record and link change.
   */
  private async syncEndpoints(own: OwnLease, fastPath: boolean): Promise<void> {
    this.endpoints?.stop();
    const { flags, ipv6, underlayMtu } = this.o;
    const sync = new EndpointSync({
      pinDir: flags.pinDir,
      recordsDir: endpointsDirFor(flags.subnetFile),
      subnet: formatCidr(own.subnet),
      encapMtu: underlayMtu - VXLAN_OVERHEAD,
      subnet6: ipv6 && own.subnet6 && formatCidr6(own.subnet6),
      encapMtu6: underlayMtu - VXLAN6_OVERHEAD,
      fastPath,
      podSourceCheck: flags.podSourceCheck === 'drop',
      log: logger('endpoints'),
    });
    await sync.sync();
    sync.start();
    this.endpoints = sync;
  }

  private async syncNextHops(): Promise<void> {
    if (this.nextHops) return;
    this.nextHops = new NextHopSync({ pinDir: this.pinDir, underlayDev: this.o.iface.name, log: logger('next-hops') });
    await this.nextHops.sync();
    this.nextHops.start();
  }

  private async watchForwardPolicy(): Promise<void> {
    if (!this.attach?.fastPath?.enabled) return;
    // A re-attach (the lease moved) wrote twill_config afresh: what the rules ask for is applied again.
    if (this.forwardPolicy) return this.forwardRules && this.obeyForwardRules(this.forwardRules);
    this.forwardPolicy = new ForwardPolicyWatch({ periodMs: FORWARD_CHECK_MS, log, onChange: (rules) => this.obeyForwardRules(rules) });
    await this.forwardPolicy.check();
    this.forwardPolicy.start();
  }

  /**
   * Says when FORWARD has rules the fast path would bypass, and with --fast-path auto keeps pod
   * traffic on the stack while they exist (twill_config's fast-path bit, which both directions read).
   */
  private obeyForwardRules(rules: string[]): void {
    const attached = this.attach?.fastPath;
    if (!attached?.enabled) return;
    const had = (this.forwardRules?.length ?? 0) > 0;
    this.forwardRules = rules;
    const hold = this.o.flags.fastPath === 'auto' && rules.length > 0;
    const maps = this.openMaps();
    const c = maps.readConfig();
    const flags = c && (hold ? c.flags & ~CONFIG_FAST_PATH : c.flags | CONFIG_FAST_PATH);
    if (c && flags !== c.flags) maps.writeConfig({ ...c, flags: flags! });
    this.fastPath = hold
      ? { ...attached, enabled: false, reason: `held off (--fast-path auto): FORWARD has ${rules.length} rule(s) the fast path would bypass` }
      : attached;
    if (hold) log.warn('FORWARD has rules the fast path would bypass: pod traffic stays on the stack while they exist (--fast-path auto)', { rules });
    else if (rules.length) log.warn('FORWARD has rules the fast path bypasses (--fast-path true): they do not see pod traffic between nodes', { rules });
    else if (had) log.info(`FORWARD has no rules the fast path would bypass any more${this.o.flags.fastPath === 'auto' ? ': the fast path is on again' : ''}`);
  }

  /** Only once the new mode carries traffic is the other one taken down: a switch drops nothing. */
  async removeOtherMode(own: OwnLease): Promise<void> {
    const { ipv4, ipv6 } = this.o;
    const vni = this.backend.vni;
    // The BPF datapath routes direct peers itself; kernel host-gw has no vxlan device.
    if (this.mode === 'bpf' || this.backend.type === 'host-gw') {
      if (await removeKernelVxlan(vni)) log.info(`switched from kernel VXLAN to ${this.mode === 'bpf' ? 'BPF' : 'host-gw routes'}: removed the vxlan device`);
    }
    if (this.mode === 'kernel') {
      if (this.attach || existsSync(`${this.pinDir}/twill_config`)) {
        this.nextHops?.stop();
        this.nextHops = undefined;
        await detachDataplane(this.pinDir);
        this.attach = undefined;
        log.info('switched from BPF to kernel VXLAN: removed the BPF datapath', { pinDir: this.pinDir });
      }
      return;
    }
    const stale = ipv4 ? await new DirectRoutes(formatCidr(ipv4.networks.network), ipv4.networks.subnetLen).sync(new Map()) : { removed: 0 };
    if (stale.removed) log.info('switched from kernel routes to BPF: removed the direct routes to peers', { routes: stale.removed });
    if (await removeKernelVxlan(vni, undefined, 6)) log.info('switched from kernel VXLAN to BPF: removed the IPv6 vxlan device');
    const tunnel = await retryTunnelDeviceUp(this.pinDir);
    if (this.attach?.tunnel) this.attach = { ...this.attach, tunnel: { ...this.attach.tunnel, up: tunnel.up, reason: tunnel.reason } };
    if (!tunnel.up)
      log.warn(`the tunnel device is not up: fragmented VXLAN is dropped and tc decap gets no GRO${ipv6 ? '; IPv6 is not carried' : ''}`, {
        reason: tunnel.reason,
      });
    // host-gw carries IPv6 by kernel routes: the programs' IPv6 stays off, as no twill-rx exists.
    if (ipv6 && own.subnet6 && this.backend.type !== 'host-gw' && this.openMaps().ipv6) {
      if (this.writeConfig6(this.openMaps(), formatCidr6(own.subnet6))) log.info('IPv6 datapath on', { tunnelDevice: this.tunnelDevice });
    }
  }

  /** The datapath stays (pinned links and maps keep forwarding); only what this process watches stops. */
  stop(): void {
    this.endpoints?.stop();
    this.nextHops?.stop();
    this.forwardPolicy?.stop();
  }
}
