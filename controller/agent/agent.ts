import { existsSync } from 'node:fs';
import { configChangeReport, parseNetworkConfig, ConfigError, UnsupportedConfigError, waitLogDue, type NetworkConfig } from '../config/network-config.js';
import { attachDataplane, detachDataplane, readAttachState, removeTunnelDevice, retireIncompatiblePins, retryTunnelDeviceUp, type FastPathState } from '../dataplane/attach.js';
import { ensureKernelVxlan, kernelVxlanMac, KernelHostGwDatapath, KernelVxlanDatapath, removeKernelVxlan } from '../dataplane/kernel-vxlan.js';
import { DirectRoutes, lookUpUnderlayRoutes } from '../dataplane/direct-routes.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { probeAndChoose, recordKernelFallback } from '../dataplane/kernel-record.js';
import { backendOverhead, parseDataplaneSpec, VXLAN_OVERHEAD } from '../dataplane/spec.js';
import { EtcdStore } from '../etcd/store.js';
import { IptablesMasq } from '../masq/iptables.js';
import { formatCidr } from '../net/ipv4.js';
import { randomVtepMac } from '../net/mac.js';
import { Reconciler, type Datapath } from '../reconcile/reconciler.js';
import { SubnetManager, type OwnLease } from '../subnet/manager.js';
import { readSubnetHint, writeSubnetFile } from '../subnet/subnet-file.js';
import { LeaseWatcher } from '../subnet/watcher.js';
import { endpointsDirFor } from '../endpoints/records.js';
import { EndpointSync } from '../endpoints/sync.js';
import { logger, setLogLevel } from '../util/log.js';
import type { AgentFlags } from './flags.js';
import { agentMetricsText } from '../metrics/collect.js';
import { startHealthServer } from './health.js';
import { selectIface, type ChosenIface } from './iface.js';
import { sdNotify } from './sd-notify.js';

const log = logger('agent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How often a wait for the config says it is still waiting, and how often the config is re-read after start. */
const CONFIG_WAIT_LOG_MS = 30_000;
const CONFIG_RECHECK_MS = 10_000;

/**
 * flannel reads the config once at start and waits for it to exist; an invalid one is reported
 * and waited out too (someone may be fixing it). One that asks for what twill does not implement
 * throws UnsupportedConfigError: no wait would help.
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
      if (err instanceof UnsupportedConfigError) throw new UnsupportedConfigError(`${store.configKey}: ${err.message}`);
      problem = err instanceof ConfigError ? `${store.configKey}: ${err.message}` : `etcd: ${(err as Error).message}`;
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

/** The VtepMAC survives restarts: it is read back from the pinned config map when there is one. */
function previousVtepMac(pinDir: string): string | undefined {
  retireIncompatiblePins(pinDir); // maps another build left with another layout could not even be opened
  if (!existsSync(`${pinDir}/twill_config`)) return undefined;
  return DatapathMaps.readPinnedConfig(pinDir)?.vtep_mac;
}

export async function runAgent(flags: AgentFlags): Promise<never> {
  if (flags.v >= 2) setLogLevel('debug');
  else if (flags.v >= 1) setLogLevel('info');
  const status: {
    configError?: string;
    ready: boolean;
    lease?: string;
    mode?: 'bpf' | 'kernel';
    manager?: SubnetManager;
    watcher?: LeaseWatcher;
    reconciler?: Reconciler;
    masq?: IptablesMasq;
    endpoints?: EndpointSync;
    /** as the last attach decided it (BPF mode) */
    fastPath?: FastPathState;
  } = { ready: false };

  const iface: ChosenIface = await selectIface({ iface: flags.iface, ifaceRegex: flags.ifaceRegex, ifaceCanReach: flags.ifaceCanReach, publicIp: flags.publicIp });
  log.info('using interface', { iface: iface.name, address: iface.address, publicIp: iface.publicIp, reason: iface.reason });

  const health = flags.healthzPort
    ? await startHealthServer(flags.healthzIp, flags.healthzPort, {
        ready: () => status.ready,
        detail: () => ({
          lease: status.lease,
          leaseExpiresAt: status.manager?.own?.expiresAt && new Date(status.manager.own.expiresAt).toISOString(),
          mode: status.mode,
          configError: status.configError,
          watch: status.watcher?.state,
          reconciles: status.reconciler?.count,
          fastPath: status.mode === 'bpf' ? { ...status.fastPath, endpoints: status.endpoints?.state } : undefined,
          iptables: status.masq && { writes: status.masq.writes, error: status.masq.error },
        }),
        metrics: () => agentMetricsText({ pinDir: flags.pinDir, ...status }),
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
  try {
    ({ config, text: configText } = await waitForConfig(store, status));
    // flannel's host-gw refuses a PublicIP that is not the interface's: peers could not route to it.
    if (config.backend.type === 'host-gw' && iface.publicIp !== iface.address)
      throw new UnsupportedConfigError(`--public-ip ${iface.publicIp} differs from the interface's address ${iface.address}, meaning that probably you're on a NAT, which is not supported by host-gw backend`);
  } catch (err) {
    if (!(err instanceof UnsupportedConfigError)) throw err;
    log.error('cannot run this network config; exiting', { problem: err.message });
    store.close();
    throw err;
  }
  status.configError = undefined;
  const backend = config.backend.type;
  log.info('network config', { network: formatCidr(config.network), subnetLen: config.subnetLen, backend, directRouting: config.backend.directRouting, vni: config.backend.vni, port: config.backend.port });
  const underlayMtu = config.backend.mtu ?? iface.mtu;
  const podMtu = underlayMtu - backendOverhead(backend);
  // The lease's VtepMAC survives restarts and mode switches: BPF config map, else flannel.<VNI>.
  const vtepMac = previousVtepMac(flags.pinDir) ?? (await kernelVxlanMac(config.backend.vni)) ?? randomVtepMac();
  const manager = new SubnetManager(
    store,
    config,
    backend === 'host-gw' ? { backendType: 'host-gw', publicIp: iface.publicIp } : { backendType: 'vxlan', publicIp: iface.publicIp, vni: config.backend.vni, vtepMac },
    { ttlSeconds: flags.subnetLeaseTtl, renewMarginSeconds: flags.subnetLeaseRenewMargin * 60, hint: readSubnetHint(flags.subnetFile), log },
  );
  status.manager = manager;

  const acquireWithRetry = async (hint?: OwnLease['subnet']): Promise<OwnLease> => {
    for (let delay = 1000; ; delay = Math.min(delay * 2, 30_000)) {
      try {
        return await manager.acquire(hint);
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
    status.lease = formatCidr(own.subnet);
    status.mode = undefined; // until this mode is programmed
    if (mode === 'bpf') {
      const spec = parseDataplaneSpec({
        pinDir: flags.pinDir,
        underlayIface: iface.name,
        publicIp: iface.address,
        vtepMac,
        subnet: formatCidr(own.subnet),
        network: formatCidr(config.network),
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
    if (backend === 'host-gw') {
      status.mode = mode;
      return new KernelHostGwDatapath(formatCidr(config.network), config.subnetLen, iface.name);
    }
    // flannel.<VNI> needs the VXLAN port that twill's tunnel device holds; BPF decap goes on meanwhile.
    if (readAttachState(flags.pinDir)?.tunnel) await removeTunnelDevice(flags.pinDir);
    await ensureKernelVxlan({ vni: config.backend.vni, port: config.backend.port, underlayIface: iface.name, localIp: iface.address, vtepMac, subnet: formatCidr(own.subnet), underlayMtu });
    status.mode = mode;
    return new KernelVxlanDatapath(config.backend.vni, config.subnetLen, formatCidr(config.network));
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
      const stale = await new DirectRoutes(formatCidr(config.network), config.subnetLen).sync(new Map());
      if (stale.removed) log.info('switched from kernel routes to BPF: removed the direct routes to peers', { routes: stale.removed });
      const tunnel = await retryTunnelDeviceUp(flags.pinDir);
      if (!tunnel.up) log.warn('the tunnel device is not up: fragmented VXLAN is dropped and tc decap gets no GRO', { reason: tunnel.reason });
    } else if (readAttachState(flags.pinDir) || existsSync(`${flags.pinDir}/twill_config`)) {
      await detachDataplane(flags.pinDir);
      log.info('switched from BPF to kernel VXLAN: removed the BPF datapath', { pinDir: flags.pinDir });
    }
  };

  let own = await acquireWithRetry();
  // Masquerade and forward-accept rules follow the lease; they are never removed on exit.
  const masq = new IptablesMasq({ resyncSeconds: flags.iptablesResync, log: logger('masq') });
  status.masq = masq;
  const masqInput = (lease: OwnLease) => ({
    network: config.network,
    subnet: lease.subnet,
    ipMasq: flags.ipMasq,
    randomFully: !flags.ipMasqFullyRandomDisable,
    forwardRules: flags.iptablesForwardRules,
  });
  await masq.update(masqInput(own));
  masq.startResync();
  const reconciler = new Reconciler(
    undefined,
    { subnet: formatCidr(own.subnet), publicIp: iface.publicIp },
    { backend, vni: config.backend.vni, directRouting: config.backend.directRouting, underlay: lookUpUnderlayRoutes },
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
  reconciler.setDatapath(await program(own));
  log.info('datapath mode', { mode, requested: flags.dataplane });
  await reconciler.settled();
  await removeOtherMode();

  writeSubnetFile(flags.subnetFile, { network: config.network, subnet: own.subnet, mtu: podMtu, ipMasq: flags.ipMasq });
  status.ready = true;
  watchConfigChanges(store, configText, status);
  sdNotify(`READY=1\nSTATUS=lease ${formatCidr(own.subnet)}`);
  log.info('ready', { lease: formatCidr(own.subnet), reservation: own.reservation, subnetFile: flags.subnetFile, pinDir: flags.pinDir });

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
        if (!gone) log.info('lease renewed', { lease: formatCidr(own.subnet), expiresInS: Math.round(((manager.own?.expiresAt ?? 0) - Date.now()) / 1000) });
      } catch (err) {
        log.warn('lease renewal failed, retrying in a minute or before expiry', { error: (err as Error).message });
        await Promise.race([lost, sleep(Math.min(60_000, Math.max(1000, ((manager.own?.expiresAt ?? Date.now()) - Date.now()) / 2)))]);
        continue;
      }
    }
    if (!gone) continue;
    status.ready = false;
    log.error('our subnet lease is gone from etcd: re-acquiring', { lease: formatCidr(own.subnet) });
    const previous = formatCidr(own.subnet);
    own = await acquireWithRetry(own.subnet);
    if (formatCidr(own.subnet) !== previous) {
      log.error('lease moved to another subnet: pods on the old subnet lose connectivity until they are recreated', { from: previous, to: formatCidr(own.subnet) });
      reconciler.setSelf({ subnet: formatCidr(own.subnet), publicIp: iface.publicIp });
      reconciler.setDatapath(await program(own));
      await masq.update(masqInput(own));
      writeSubnetFile(flags.subnetFile, { network: config.network, subnet: own.subnet, mtu: podMtu, ipMasq: flags.ipMasq });
    }
    reconciler.update(watcher.leases);
    status.ready = true;
    log.warn('lease re-acquired', { lease: formatCidr(own.subnet) });
  }
}
