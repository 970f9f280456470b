import { existsSync } from 'node:fs';
import { configChangeReport, ipv4Networks, parseNetworkConfig, ConfigError, FatalConfigError, UnsupportedConfigError, waitLogDue, type Ipv4Networks, type NetworkConfig } from '../config/network-config.js';
import { attachDataplane, detachDataplane, removeTunnelDevice, retryTunnelDeviceUp } from '../dataplane/attach.js';
import { readAttachState, type AttachState, type FastPathState } from '../dataplane/attach-state.js';
import { retireIncompatiblePins } from '../dataplane/bpf-objects.js';
import { ensureKernelVxlan, kernelVxlanMac, KernelHostGwDatapath, KernelVxlanDatapath, removeKernelVxlan } from '../dataplane/flannel-vxlan.js';
import { DirectRoutes, lookUpUnderlayRoutes, VxlanWithDirectRoutes } from '../dataplane/direct-routes.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { DatapathMaps6 } from '../dataplane/datapath-maps6.js';
import { config6For, ensureOverlay6, VXLAN6_OVERHEAD } from '../dataplane/ipv6.js';
import { CONFIG6_ENABLED } from '../../maps/layout.js';
import { clearAbandonedMonitor } from '../monitor/control.js';
import { probeAndChoose, recordKernelFallback } from '../dataplane/choice-record.js';
import { backendOverhead, parseDataplaneSpec, TUNNEL_DEVICE, VXLAN_OVERHEAD } from '../dataplane/spec.js';
import { EtcdStore } from '../etcd/store.js';
import { IptablesMasq } from '../masq/iptables.js';
import { formatCidr } from '../net/ipv4.js';
import { formatCidr6 } from '../net/ipv6.js';
import { linkShow } from '../netlink/ip.js';
import { randomVtepMac } from '../net/mac.js';
import { noDatapath, Reconciler, type Datapath } from '../reconcile/reconciler.js';
import { SubnetManager, type OwnLease } from '../subnet/manager.js';
import { readSubnetHints, subnetFileFor, writeSubnetFile } from '../subnet/subnet-file.js';
import { describeSubnets } from '../subnet/allocate.js';
import { NO_PUBLIC_IP, type LeaseAttrs } from '../subnet/lease.js';
import { LeaseWatcher } from '../subnet/watcher.js';
import { endpointsDirFor } from '../endpoints/records.js';
import { EndpointSync } from '../endpoints/sync.js';
import { logger, setLogLevel } from '../util/log.js';
import type { AgentFlags } from './flags.js';
import { openAgentMetrics } from '../metrics/collect.js';
import { startHealthServer } from './health.js';
import { selectIface, type ChosenIface } from './iface.js';
import { sdNotify } from './sd-notify.js';

const log = logger('agent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How often a wait for the config says it is still waiting, and how often the config is re-read after start. */
const CONFIG_WAIT_LOG_MS = 30_000;
const CONFIG_RECHECK_MS = 10_000;
const MONITOR_CHECK_MS = 5_000;

/**
 * flannel reads the config once at start and waits for it to exist; an invalid one is reported
 * and waited out too (someone may be fixing it), as flanneld retries one that fails its check.
 * One flanneld exits on, or one that asks for what twill does not implement, throws
 * FatalConfigError: no wait would help.
 */
async function waitForConfig(store: EtcdStore, status: { configError?: string }): Promise<{ config: NetworkConfig; text: string }> {
  let last: { problem: string; at: number } | undefined;
  for (;;) {
    let problem: string;
    try {
      const text = await store.getConfig();
      if (text !== undefined) return { config: parseNetworkConfig(text), text };
      problem = `no network config at ${store.configKey} yet`;
    } catch (err) {
      if (err instanceof FatalConfigError) {
        err.message = `${store.configKey}: ${err.message}`;
        throw err;
      }
      problem = err instanceof ConfigError ? `${store.configKey}: ${err.message}` : store.describeError(err);
    }
    status.configError = problem;
    if (waitLogDue(problem, last, Date.now(), CONFIG_WAIT_LOG_MS)) {
      (problem.startsWith('no network config') ? log.warn : log.error)('waiting for a usable network config', { problem, retryEveryMs: 1000 });
      last = { problem, at: Date.now() };
    }
    await sleep(1000);
  }
}

/** After start: an edit of the config is reported (readyz, status, one log line per change), never applied. */
function watchConfigChanges(store: EtcdStore, running: string, status: { configError?: string }): void {
  let reported: string | undefined;
  const check = async () => {
    let report: string | undefined;
    try {
      report = configChangeReport(running, await store.getConfig());
    } catch {
      return; // etcd unreachable: the lease watcher reports that
    }
    status.configError = report;
    if (report && report !== reported) log.error('network config changed', { problem: report });
    reported = report;
  };
  setInterval(() => void check(), CONFIG_RECHECK_MS).unref();
}

/** Events a `twill monitor` killed with SIGKILL left on are turned off within MONITOR_CHECK_MS (controller/monitor/control.ts). */
function watchAbandonedMonitor(pinDir: string): void {
  const check = () => {
    try {
      clearAbandonedMonitor(pinDir);
    } catch (err) {
      log.debug('could not check twill_monitor', { error: (err as Error).message });
    }
  };
  setInterval(check, MONITOR_CHECK_MS).unref();
}

/** The VtepMACs survive restarts: they are read back from the pinned config map when there is one. */
function previousVtepMacs(pinDir: string): { vtepMac?: string; vtepMac6?: string } {
  retireIncompatiblePins(pinDir); // maps another build left with another layout could not even be opened
  if (!existsSync(`${pinDir}/twill_config`)) return {};
  const c = DatapathMaps.readPinnedConfig(pinDir);
  return { vtepMac: c?.vtep_mac, vtepMac6: DatapathMaps6.present(pinDir) ? DatapathMaps6.readPinnedMac(pinDir) : undefined };
}

/** The tunnel device the last attach made (twill-rx unless --tunnel-device said otherwise). */
const tunnelDeviceOf = (tunnel: AttachState['tunnel']) => tunnel?.iface ?? TUNNEL_DEVICE;

/** flannel's IPv6 VXLAN device (pkg/backend/vxlan/vxlan.go): its MAC is the IPv6 VtepMAC flanneld had. */
const kernelVxlanMac6 = async (vni: number) => (await linkShow(`flannel-v6.${vni}`))?.address;

export async function runAgent(flags: AgentFlags): Promise<never> {
  if (flags.v >= 2) setLogLevel('debug');
  else if (flags.v >= 1) setLogLevel('info');
  const status: {
    configError?: string;
    ready: boolean;
    /** our IPv4 subnet (absent in an IPv6-only network) */
    lease?: string;
    /** our IPv6 subnet, when the network enables IPv6 */
    lease6?: string;
    mode?: 'bpf' | 'kernel';
    manager?: SubnetManager;
    watcher?: LeaseWatcher;
    reconciler?: Reconciler;
    masq?: IptablesMasq;
    /** ip6tables, with IPv6 */
    masq6?: IptablesMasq;
    endpoints?: EndpointSync;
    /** as the last attach decided it (BPF mode) */
    fastPath?: FastPathState;
  } = { ready: false };

  // prom-client (about 13 MB and 75+ ms to import) is loaded at the first scrape, not at start:
  // an agent nobody scrapes stays as small as before it.
  let metrics: ReturnType<typeof openAgentMetrics> | undefined;
  const openMetrics = () => (metrics ??= openAgentMetrics(() => ({ pinDir: flags.pinDir, ...status }), { perPeer: flags.metricsPerPeer }));
  const health = flags.healthzPort
    ? await startHealthServer(flags.healthzIp, flags.healthzPort, {
        ready: () => status.ready,
        detail: () => ({
          lease: status.lease,
          lease6: status.lease6,
          leaseExpiresAt: status.manager?.own?.expiresAt && new Date(status.manager.own.expiresAt).toISOString(),
          mode: status.mode,
          configError: status.configError,
          watch: status.watcher?.state,
          reconciles: status.reconciler?.count,
          fastPath: status.mode === 'bpf' ? { ...status.fastPath, endpoints: status.endpoints?.state } : undefined,
          iptables: status.masq && { writes: status.masq.writes, error: status.masq.error },
          ip6tables: status.masq6 && { writes: status.masq6.writes, error: status.masq6.error },
        }),
        metrics: async () => {
          const registry = await openMetrics();
          return { contentType: registry.contentType, body: await registry.text() };
        },
      })
    : undefined;
  if (health) log.info('health server listening', { address: health.address });

  const store = new EtcdStore({
    endpoints: flags.etcdEndpoints,
    prefix: flags.etcdPrefix,
    caFile: flags.etcdCafile,
    certFile: flags.etcdCertfile,
    keyFile: flags.etcdKeyfile,
    username: flags.etcdUsername,
    password: flags.etcdPassword,
  });
  let config: NetworkConfig;
  let configText: string;
  let iface: ChosenIface;
  /** what the IPv4 datapath below is built for; none in an IPv6-only network */
  let datapath4: { networks: Ipv4Networks; address: string; publicIp: string } | undefined;
  try {
    ({ config, text: configText } = await waitForConfig(store, status));
    // As flanneld: the config says which families the interface must have addresses of.
    iface = await selectIface({
      iface: flags.iface,
      ifaceRegex: flags.ifaceRegex,
      ifaceCanReach: flags.ifaceCanReach,
      publicIp: flags.publicIp,
      publicIpv6: flags.publicIpv6,
      families: { ipv4: config.enableIPv4, ipv6: config.enableIPv6 },
    });
    log.info('using interface', { iface: iface.name, address: iface.address, publicIp: iface.publicIp, address6: iface.address6, publicIpv6: iface.publicIpv6, reason: iface.reason });
    // flannel's host-gw refuses a PublicIP that is not the interface's: peers could not route to it.
    if (config.backend.type === 'host-gw' && iface.publicIp !== iface.address)
      throw new UnsupportedConfigError(`--public-ip ${iface.publicIp} differs from the interface's address ${iface.address}, meaning that probably you're on a NAT, which is not supported by host-gw backend`);
    if (config.backend.type === 'host-gw' && iface.publicIpv6 !== iface.address6)
      throw new UnsupportedConfigError(`--public-ipv6 ${iface.publicIpv6} differs from the interface's address ${iface.address6}, meaning that probably you're on a NAT, which is not supported by host-gw backend`);
    const networks = ipv4Networks(config);
    // selectIface found an address of every family the config enables, or threw.
    datapath4 = networks && iface.address && iface.publicIp ? { networks, address: iface.address, publicIp: iface.publicIp } : undefined;
  } catch (err) {
    // Neither a config twill cannot run nor an interface without the addresses it needs gets better by waiting.
    store.close();
    if (err instanceof FatalConfigError) log.error('cannot run this network config; exiting', { problem: err.message });
    throw err;
  }
  status.configError = undefined;
  const backend = config.backend.type;
  log.info('network config', {
    network: config.network && formatCidr(config.network),
    subnetLen: config.subnetLen,
    ipv6Network: config.ipv6Network && formatCidr6(config.ipv6Network),
    ipv6SubnetLen: config.enableIPv6 ? config.ipv6SubnetLen : undefined,
    backend,
    directRouting: config.backend.directRouting,
    vni: config.backend.vni,
    port: config.backend.port,
  });
  const underlayMtu = config.backend.mtu ?? iface.mtu;
  const podMtu = underlayMtu - backendOverhead(backend);
  // The lease's VtepMACs survive restarts and mode switches: BPF config map, else flannel.<VNI> (flannel-v6.<VNI>).
  const previous = previousVtepMacs(flags.pinDir);
  const vtepMac = previous.vtepMac ?? (await kernelVxlanMac(config.backend.vni)) ?? randomVtepMac();
  const vtepMac6 = config.enableIPv6 ? (previous.vtepMac6 ?? (await kernelVxlanMac6(config.backend.vni)) ?? randomVtepMac()) : undefined;
  // flannel's LeaseAttrs: an IPv6-only node's PublicIP is the zero address, and it has no IPv4 VTEP.
  const publicIp = iface.publicIp ?? NO_PUBLIC_IP;
  const attrs: LeaseAttrs =
    backend === 'host-gw'
      ? { backendType: 'host-gw', publicIp, publicIpv6: iface.publicIpv6 }
      : { backendType: 'vxlan', publicIp, publicIpv6: iface.publicIpv6, vni: config.backend.vni, vtepMac: config.enableIPv4 ? vtepMac : undefined, vtepMac6 };
  const ipv6 = config.enableIPv6 ? { network: formatCidr6(config.ipv6Network!), subnetLen: config.ipv6SubnetLen, address: iface.address6!, publicIp: iface.publicIpv6! } : undefined;
  const manager = new SubnetManager(store, config, attrs, { ttlSeconds: flags.subnetLeaseTtl, renewMarginSeconds: flags.subnetLeaseRenewMargin * 60, ...readSubnetHints(flags.subnetFile), log });
  status.manager = manager;

  const acquireWithRetry = async (held?: OwnLease): Promise<OwnLease> => {
    for (let delay = 1000; ; delay = Math.min(delay * 2, 30_000)) {
      try {
        return await manager.acquire(held?.subnet, held?.subnet6);
      } catch (err) {
        log.error('cannot acquire a subnet lease, retrying', { error: (err as Error).message, retryInMs: delay });
        await sleep(delay);
      }
    }
  };

  // What the kernel offers decides `auto` (logged, and recorded for `twill status`).
  const kernelChoice = await probeAndChoose(flags.pinDir, { dataplane: flags.dataplane, decapHook: flags.decapHook, fastPath: flags.fastPath, backend }, iface.name);
  let mode: 'bpf' | 'kernel' = kernelChoice.choice.dataplane;

  /** Sets up this node's datapath for the lease we hold; run again if the lease ever moves. */
  const program = async (own: OwnLease): Promise<Datapath> => {
    status.lease = config.enableIPv4 ? formatCidr(own.subnet) : undefined;
    status.lease6 = own.subnet6 && formatCidr6(own.subnet6);
    status.mode = undefined; // until this mode is programmed
    if (mode === 'bpf') {
      const spec = parseDataplaneSpec({
        pinDir: flags.pinDir,
        underlayIface: iface.name,
        // An IPv6-only node attaches the programs with no IPv4 identity: twill_config6 is its identity.
        ...(datapath4 && { publicIp: datapath4.address, subnet: formatCidr(own.subnet), network: formatCidr(datapath4.networks.network) }),
        vtepMac,
        backend,
        vni: config.backend.vni,
        port: config.backend.port,
        mtu: underlayMtu,
        overlayDevice: flags.overlayDevice,
        decapHook: flags.decapHook,
        fastPath: flags.fastPath,
      });
      try {
        const attached = await attachDataplane(spec, undefined, {
          // Peers first, programs second: decap must know every peer the moment it runs.
          beforeAttach: async (maps) => {
            maps.sync(await reconciler.desired(status.watcher?.leases.values() ?? []));
          },
        });
        status.mode = mode;
        status.fastPath = attached.state.fastPath;
        await syncEndpoints(own, attached.state.fastPath?.enabled ?? false);
        return DatapathMaps.open(flags.pinDir);
      } catch (err) {
        if (flags.dataplane !== 'auto') throw err;
        log.warn('BPF datapath unavailable on this kernel, using kernel VXLAN as flannel does', { error: (err as Error).message });
        recordKernelFallback(flags.pinDir, (err as Error).message);
        mode = 'kernel';
      }
    }
    // IPv6 only on the kernel dataplane: flannel-v6.<VNI> (program6) is all there is.
    if (!datapath4) {
      status.mode = mode;
      return noDatapath;
    }
    const { networks: v4, address: v4Address } = datapath4;
    if (backend === 'host-gw') {
      status.mode = mode;
      return new KernelHostGwDatapath(formatCidr(v4.network), v4.subnetLen, iface.name);
    }
    // flannel.<VNI> needs the VXLAN port that twill's tunnel device holds; BPF decap goes on meanwhile.
    if (readAttachState(flags.pinDir)?.tunnel) await removeTunnelDevice(flags.pinDir);
    await ensureKernelVxlan({ vni: config.backend.vni, port: config.backend.port, underlayIface: iface.name, localIp: v4Address, vtepMac, subnet: formatCidr(own.subnet), underlayMtu });
    status.mode = mode;
    return new KernelVxlanDatapath(config.backend.vni, v4.subnetLen, formatCidr(v4.network));
  };

  /**
   * The IPv6 side, for the lease we hold. BPF: twill0 takes the IPv6Network (its route's locked
   * MTU leaves room for IPv6's 70 bytes) and twill_config6 says who we are; the programs hand IPv6
   * to twill-rx, whose IPv6 socket the kernel's vxlan driver encapsulates and decapsulates with.
   * Kernel: flannel-v6.<VNI> exactly as flanneld makes it.
   */
  const program6 = async (own: OwnLease, datapath: Datapath): Promise<Datapath | undefined> => {
    if (!ipv6 || !own.subnet6) return undefined;
    const subnet6 = formatCidr6(own.subnet6);
    // host-gw's IPv6 is flannel's GetV6Route on either dataplane: the programs pass IPv6 to the stack.
    if (backend === 'host-gw') return new KernelHostGwDatapath(ipv6.network, ipv6.subnetLen, iface.name, 6);
    if (mode === 'bpf') {
      await ensureOverlay6({ overlayDevice: flags.overlayDevice, tunnelDevice: tunnelDeviceOf(readAttachState(flags.pinDir)?.tunnel), subnet6, network6: ipv6.network, underlayMtu });
      // A peer's IPv6 traffic counts in the slot its IPv4 entries got in the same pass.
      // (IPv6 only: the IPv6 entries hold counter slots of their own.)
      const maps6 = DatapathMaps6.open(flags.pinDir, datapath4 && datapath instanceof DatapathMaps ? (ip) => datapath.statsSlotOf(ip) : undefined);
      writeConfig6(maps6, subnet6);
      // IPv6 peers on our segment get flannel's v6 direct route; the stack forwards their traffic.
      return config.backend.directRouting ? new VxlanWithDirectRoutes(maps6, new DirectRoutes(ipv6.network, ipv6.subnetLen, undefined, 6)) : maps6;
    }
    // flannel-v6.<VNI> needs the VXLAN port (IPv6's) that twill-rx holds in both families.
    if (readAttachState(flags.pinDir)?.tunnel) await removeTunnelDevice(flags.pinDir);
    await ensureKernelVxlan({ family: 6, vni: config.backend.vni, port: config.backend.port, underlayIface: iface.name, localIp: ipv6.address, vtepMac: vtepMac6!, subnet: subnet6, underlayMtu });
    return new KernelVxlanDatapath(config.backend.vni, ipv6.subnetLen, ipv6.network, 6);
  };

  const setDatapaths = async (own: OwnLease): Promise<void> => {
    const datapath = await program(own);
    reconciler.setDatapath(datapath, await program6(own, datapath));
  };

  /**
   * IPv6 is on in the programs only while twill-rx is up: until flannel's devices have given the
   * VXLAN port back, IPv6 handed to it would be lost (IPv6 stays off, IPv4 takes the stack path).
   */
  const writeConfig6 = (maps6: DatapathMaps6, subnet6: string): boolean => {
    const tunnel = readAttachState(flags.pinDir)?.tunnel;
    const cfg = config6For({ publicIp6: ipv6!.publicIp, vtepMac6: vtepMac6!, subnet6, network6: ipv6!.network, tunnelDevice: tunnelDeviceOf(tunnel) });
    maps6.writeConfig({ ...cfg, flags: tunnel?.up ? CONFIG6_ENABLED : 0 });
    return tunnel?.up === true;
  };

  /**
   * The pods on this node, for the fast path: synced before the agent reports ready (a restart
   * repairs what changed while it was down), then on every CNI record and link change.
   */
  const syncEndpoints = async (own: OwnLease, fastPath: boolean): Promise<void> => {
    status.endpoints?.stop();
    const sync = new EndpointSync({
      pinDir: flags.pinDir,
      recordsDir: endpointsDirFor(flags.subnetFile),
      subnet: formatCidr(own.subnet),
      encapMtu: underlayMtu - VXLAN_OVERHEAD,
      subnet6: ipv6 && own.subnet6 && formatCidr6(own.subnet6),
      encapMtu6: underlayMtu - VXLAN6_OVERHEAD,
      fastPath,
      log: logger('endpoints'),
    });
    await sync.sync();
    sync.start();
    status.endpoints = sync;
  };

  /** Only once the new mode carries traffic is the other one taken down: a switch drops nothing. */
  const removeOtherMode = async (): Promise<void> => {
    // The BPF datapath routes direct peers itself; kernel host-gw has no vxlan device.
    if (mode === 'bpf' || backend === 'host-gw') {
      if (await removeKernelVxlan(config.backend.vni)) log.info(`switched from kernel VXLAN to ${mode === 'bpf' ? 'BPF' : 'host-gw routes'}: removed the vxlan device`);
    }
    if (mode === 'bpf') {
      const stale = datapath4 ? await new DirectRoutes(formatCidr(datapath4.networks.network), datapath4.networks.subnetLen).sync(new Map()) : { removed: 0 };
      if (stale.removed) log.info('switched from kernel routes to BPF: removed the direct routes to peers', { routes: stale.removed });
      if (await removeKernelVxlan(config.backend.vni, undefined, 6)) log.info('switched from kernel VXLAN to BPF: removed the IPv6 vxlan device');
      const tunnel = await retryTunnelDeviceUp(flags.pinDir);
      if (!tunnel.up) log.warn(`the tunnel device is not up: fragmented VXLAN is dropped and tc decap gets no GRO${ipv6 ? '; IPv6 is not carried' : ''}`, { reason: tunnel.reason });
      // host-gw carries IPv6 by kernel routes: the programs' IPv6 stays off, as no twill-rx exists.
      if (ipv6 && own.subnet6 && backend !== 'host-gw' && DatapathMaps6.present(flags.pinDir)) {
        const maps6 = DatapathMaps6.open(flags.pinDir);
        try {
          if (writeConfig6(maps6, formatCidr6(own.subnet6))) log.info('IPv6 datapath on', { tunnelDevice: tunnelDeviceOf(readAttachState(flags.pinDir)?.tunnel) });
        } finally {
          maps6.close();
        }
      }
    } else if (readAttachState(flags.pinDir) || existsSync(`${flags.pinDir}/twill_config`)) {
      await detachDataplane(flags.pinDir);
      log.info('switched from BPF to kernel VXLAN: removed the BPF datapath', { pinDir: flags.pinDir });
    }
  };

  let own = await acquireWithRetry();
  // Masquerade and forward-accept rules follow the lease, per family (iptables, ip6tables); they are never removed on exit.
  const masqFlags = { ipMasq: flags.ipMasq, randomFully: !flags.ipMasqFullyRandomDisable, forwardRules: flags.iptablesForwardRules };
  const masq = datapath4 ? new IptablesMasq({ resyncSeconds: flags.iptablesResync, log: logger('masq') }) : undefined;
  const masq6 = ipv6 ? new IptablesMasq({ resyncSeconds: flags.iptablesResync, log: logger('masq6'), family: 6 }) : undefined;
  status.masq = masq;
  status.masq6 = masq6;
  const updateMasq = async (lease: OwnLease) => {
    if (masq) await masq.update({ ...masqFlags, network: datapath4!.networks.network, subnet: lease.subnet });
    if (masq6 && lease.subnet6) await masq6.update({ ...masqFlags, family: 6, network: config.ipv6Network!, subnet: lease.subnet6 });
  };
  await updateMasq(own);
  masq?.startResync();
  masq6?.startResync();
  const selfOf = (lease: OwnLease) => ({
    subnet: datapath4 ? formatCidr(lease.subnet) : '',
    publicIp: datapath4?.publicIp ?? '',
    subnet6: lease.subnet6 && formatCidr6(lease.subnet6),
    publicIpv6: ipv6?.publicIp,
  });
  const reconciler = new Reconciler(
    undefined,
    selfOf(own),
    { backend, vni: config.backend.vni, directRouting: config.backend.directRouting, underlay: lookUpUnderlayRoutes, families: { ipv4: config.enableIPv4, ipv6: config.enableIPv6 } },
    log,
  );
  status.reconciler = reconciler;

  let lostSignal: (() => void) | undefined;
  const watcher = new LeaseWatcher(
    store,
    (change, all) => reconciler.update(all, change),
    log,
    (e) => {
      if (manager.isOwnLeaseLost({ type: e.type, key: e.record.key, value: e.record.value })) lostSignal?.();
    },
    config,
  );
  status.watcher = watcher;
  // Listed once, before the datapath is attached (which programs every peer from this listing);
  // the reconciler holds watch events until the datapath is there.
  await watcher.start();
  reconciler.update(watcher.leases);
  await setDatapaths(own);
  log.info('datapath mode', { mode, requested: flags.dataplane });
  await reconciler.settled();
  await removeOtherMode();

  const subnetFile = (lease: OwnLease) => subnetFileFor(config, lease, { mtu: podMtu, ipMasq: flags.ipMasq });
  writeSubnetFile(flags.subnetFile, subnetFile(own));
  status.ready = true;
  watchConfigChanges(store, configText, status);
  if (mode === 'bpf') watchAbandonedMonitor(flags.pinDir);
  sdNotify(`READY=1\nSTATUS=lease ${describeSubnets(own)}`);
  log.info('ready', { lease: describeSubnets(own), reservation: own.reservation, subnetFile: flags.subnetFile, pinDir: flags.pinDir });

  const shutdown = (signal: string) => {
    // The datapath stays: pinned links and maps keep forwarding until the next agent takes over.
    log.info('stopping; datapath left in place', { signal });
    status.endpoints?.stop();
    // etcd may be unreachable, and cancelling a watch waits for it: that must not hold the exit.
    void Promise.race([watcher.stop(), sleep(2000)]).finally(() => {
      store.close();
      void health?.close();
      process.exit(0);
    });
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));

  // Renew before expiry; re-acquire (loudly) when the lease is lost.
  for (;;) {
    const lost = new Promise<'lost'>((resolve) => (lostSignal = () => resolve('lost')));
    const delay = manager.renewDelay();
    const outcome = await Promise.race([lost, delay === undefined ? new Promise<never>(() => undefined) : sleep(delay).then(() => 'renew' as const)]);
    let gone = outcome === 'lost';
    if (outcome === 'renew') {
      try {
        gone = !(await manager.renew());
        if (!gone) log.info('lease renewed', { lease: describeSubnets(own), expiresInS: Math.round(((manager.own?.expiresAt ?? 0) - Date.now()) / 1000) });
      } catch (err) {
        log.warn('lease renewal failed, retrying in a minute or before expiry', { error: (err as Error).message });
        await Promise.race([lost, sleep(Math.min(60_000, Math.max(1000, ((manager.own?.expiresAt ?? Date.now()) - Date.now()) / 2)))]);
        continue;
      }
    }
    if (!gone) continue;
    status.ready = false;
    log.error('our subnet lease is gone from etcd: re-acquiring', { lease: describeSubnets(own) });
    const held = describeSubnets(own);
    own = await acquireWithRetry(own);
    if (describeSubnets(own) !== held) {
      log.error('lease moved to another subnet: pods on the old subnet lose connectivity until they are recreated', { from: held, to: describeSubnets(own) });
      reconciler.setSelf(selfOf(own));
      await setDatapaths(own);
      await updateMasq(own);
      writeSubnetFile(flags.subnetFile, subnetFile(own));
    }
    reconciler.update(watcher.leases);
    status.ready = true;
    log.warn('lease re-acquired', { lease: describeSubnets(own) });
  }
}
