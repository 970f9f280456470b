import { ipv4Networks, FatalConfigError, UnsupportedConfigError, type NetworkConfig } from '../config/network-config.js';
import { lookUpUnderlayRoutes } from '../dataplane/direct-routes.js';
import { probeAndChoose } from '../dataplane/choice-record.js';
import { backendOverhead } from '../dataplane/spec.js';
import { IptablesMasq } from '../masq/iptables.js';
import { openAgentMetrics } from '../metrics/collect.js';
import { clearAbandonedMonitor } from '../monitor/control.js';
import { formatCidr } from '../net/ipv4.js';
import { formatCidr6 } from '../net/ipv6.js';
import { Reconciler } from '../reconcile/reconciler.js';
import { describeSubnets } from '../subnet/allocate.js';
import { NO_PUBLIC_IP, type LeaseAttrs } from '../subnet/lease.js';
import type { OwnLease } from '../subnet/manager.js';
import { subnetFileFor, writeSubnetFile } from '../subnet/subnet-file.js';
import { logger, setLogLevel } from '../util/log.js';
import { AgentStatus } from './agent-status.js';
import type { AgentFlags } from './flags.js';
import { startHealthServer } from './health.js';
import { selectIface, type ChosenIface } from './iface.js';
import { NodeDatapath, rememberedVtepMacs, type Ipv4Side, type Ipv6Side } from './node-datapath.js';
import { sdNotify } from './sd-notify.js';
import { subnetSource, type SubnetSource } from './subnet-source.js';

const log = logger('agent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const MONITOR_CHECK_MS = 5_000;

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

/** flannel's LeaseAttrs for our lease: an IPv6-only node's PublicIP is the zero address, and it has no IPv4 VTEP. */
function leaseAttrs(config: NetworkConfig, iface: ChosenIface, macs: { vtepMac: string; vtepMac6?: string }): LeaseAttrs {
  const publicIp = iface.publicIp ?? NO_PUBLIC_IP;
  if (config.backend.type === 'host-gw') return { backendType: 'host-gw', publicIp, publicIpv6: iface.publicIpv6 };
  return {
    backendType: 'vxlan',
    publicIp,
    publicIpv6: iface.publicIpv6,
    vni: config.backend.vni,
    vtepMac: config.enableIPv4 ? macs.vtepMac : undefined,
    vtepMac6: macs.vtepMac6,
  };
}

/**
 * The network config, and the interface it runs on. A config twill cannot run, or an interface
 * without the addresses it needs, does not get better by waiting: those throw.
 */
async function configAndIface(source: SubnetSource, flags: AgentFlags, status: AgentStatus) {
  try {
    const { config, text: configText } = await source.networkConfig(status);
    const stored = await source.stored();
    // As flanneld: the config says which families the interface must have addresses of; a Node's
    // node-public-ip annotations stand for --public-ip(v6).
    const iface = await selectIface({
      iface: flags.iface,
      ifaceRegex: flags.ifaceRegex,
      ifaceCanReach: flags.ifaceCanReach,
      publicIp: stored.publicIp ?? flags.publicIp,
      publicIpv6: stored.publicIpv6 ?? flags.publicIpv6,
      families: { ipv4: config.enableIPv4, ipv6: config.enableIPv6 },
    });
    log.info('using interface', {
      iface: iface.name,
      address: iface.address,
      publicIp: iface.publicIp,
      address6: iface.address6,
      publicIpv6: iface.publicIpv6,
      reason: iface.reason,
    });
    // flannel's host-gw refuses a PublicIP that is not the interface's: peers could not route to it.
    if (config.backend.type === 'host-gw' && iface.publicIp !== iface.address)
      throw new UnsupportedConfigError(
        `--public-ip ${iface.publicIp} differs from the interface's address ${iface.address}, meaning that probably you're on a NAT, which is not supported by host-gw backend`,
      );
    if (config.backend.type === 'host-gw' && iface.publicIpv6 !== iface.address6)
      throw new UnsupportedConfigError(
        `--public-ipv6 ${iface.publicIpv6} differs from the interface's address ${iface.address6}, meaning that probably you're on a NAT, which is not supported by host-gw backend`,
      );
    status.configError = undefined;
    return { config, configText, iface, stored };
  } catch (err) {
    await source.close();
    if (err instanceof FatalConfigError) log.error('cannot run this network config; exiting', { problem: err.message });
    throw err;
  }
}

/** Per family, what the datapath is built for (selectIface found an address of every family the config enables, or threw). */
function familySides(config: NetworkConfig, iface: ChosenIface): { ipv4?: Ipv4Side; ipv6?: Ipv6Side } {
  const networks = ipv4Networks(config);
  return {
    ipv4: networks && iface.address && iface.publicIp ? { networks, address: iface.address, publicIp: iface.publicIp } : undefined,
    ipv6: config.enableIPv6
      ? { network: formatCidr6(config.ipv6Network), subnetLen: config.ipv6SubnetLen, address: iface.address6!, publicIp: iface.publicIpv6! }
      : undefined,
  };
}

function logNetworkConfig(config: NetworkConfig): void {
  log.info('network config', {
    network: config.network && formatCidr(config.network),
    subnetLen: config.subnetLen,
    ipv6Network: config.ipv6Network && formatCidr6(config.ipv6Network),
    ipv6SubnetLen: config.enableIPv6 ? config.ipv6SubnetLen : undefined,
    backend: config.backend.type,
    directRouting: config.backend.directRouting,
    vni: config.backend.vni,
    port: config.backend.port,
  });
}

async function serveHealth(flags: AgentFlags, status: AgentStatus) {
  if (!flags.healthzPort) return undefined;
  // prom-client (about 13 MB and 75+ ms to import) is loaded at the first scrape, not at start:
  // an agent nobody scrapes stays as small as before it.
  let metrics: ReturnType<typeof openAgentMetrics> | undefined;
  const health = await startHealthServer(flags.healthzIp, flags.healthzPort, {
    ready: () => status.ready,
    detail: () => ({ ...status.detail() }),
    metrics: async () => {
      const registry = await (metrics ??= openAgentMetrics(() => status.metricSources(), { perPeer: flags.metricsPerPeer }));
      return { contentType: registry.contentType, body: await registry.text() };
    },
  });
  log.info('health server listening', { address: health.address });
  return health;
}

/** Masquerade and forward-accept rules follow the lease, per family (iptables, ip6tables); they are never removed on exit. */
function masquerading(flags: AgentFlags, config: NetworkConfig, sides: { ipv4?: Ipv4Side; ipv6?: Ipv6Side }, status: AgentStatus) {
  const masqFlags = { ipMasq: flags.ipMasq, randomFully: !flags.ipMasqFullyRandomDisable, forwardRules: flags.iptablesForwardRules };
  const masq = sides.ipv4 ? new IptablesMasq({ resyncSeconds: flags.iptablesResync, log: logger('masq') }) : undefined;
  const masq6 = sides.ipv6 ? new IptablesMasq({ resyncSeconds: flags.iptablesResync, log: logger('masq6'), family: 6 }) : undefined;
  status.masq = masq;
  status.masq6 = masq6;
  return {
    update: async (lease: OwnLease) => {
      if (masq) await masq.update({ ...masqFlags, network: sides.ipv4!.networks.network, subnet: lease.subnet });
      if (masq6 && lease.subnet6) await masq6.update({ ...masqFlags, family: 6, network: config.ipv6Network!, subnet: lease.subnet6 });
    },
    startResync: () => {
      masq?.startResync();
      masq6?.startResync();
    },
  };
}

/**
 * The node agent, in start-up order: the network config and the interface, our lease, the
 * masquerade rules, the peers (listed once), the datapath programmed with them, then ready; then
 * it renews the lease for as long as it runs, and re-programs if the lease is lost and moves.
 */
export async function runAgent(flags: AgentFlags): Promise<never> {
  if (flags.v >= 2) setLogLevel('debug');
  else if (flags.v >= 1) setLogLevel('info');
  const status = new AgentStatus(flags.pinDir);
  const health = await serveHealth(flags, status);

  const source = subnetSource(flags);
  status.subnets = source;
  const { config, configText, iface, stored } = await configAndIface(source, flags, status);
  logNetworkConfig(config);
  const sides = familySides(config, iface);
  const underlayMtu = config.backend.mtu ?? iface.mtu;
  const macs = await rememberedVtepMacs(flags.pinDir, config.backend.vni, config.enableIPv6, stored);
  const attrs = leaseAttrs(config, iface, macs);

  // What the kernel offers decides `auto` (logged, and recorded for `twill status`).
  const kernelChoice = await probeAndChoose(
    flags.pinDir,
    { dataplane: flags.dataplane, decapHook: flags.decapHook, fastPath: flags.fastPath !== false, backend: config.backend.type },
    iface.name,
  );
  const datapath = new NodeDatapath({ flags, config, iface, ...sides, ...macs, underlayMtu, mode: kernelChoice.choice.dataplane });
  status.datapath = datapath;

  let own = await source.acquire(attrs);
  const setLease = (lease: OwnLease) => {
    status.lease = config.enableIPv4 ? formatCidr(lease.subnet) : undefined;
    status.lease6 = lease.subnet6 && formatCidr6(lease.subnet6);
  };
  setLease(own);
  const masq = masquerading(flags, config, sides, status);
  await masq.update(own);
  masq.startResync();

  const selfOf = (lease: OwnLease) => ({
    subnet: sides.ipv4 ? formatCidr(lease.subnet) : '',
    publicIp: sides.ipv4?.publicIp ?? '',
    subnet6: lease.subnet6 && formatCidr6(lease.subnet6),
    publicIpv6: sides.ipv6?.publicIp,
  });
  const policy = {
    backend: config.backend.type,
    vni: config.backend.vni,
    directRouting: config.backend.directRouting,
    underlay: lookUpUnderlayRoutes,
    families: { ipv4: config.enableIPv4, ipv6: config.enableIPv6 },
  };
  const reconciler = new Reconciler({ self: selfOf(own), policy, log });
  status.reconciler = reconciler;
  let lostSignal: (() => void) | undefined;
  // Listed once, before the datapath is attached (which programs every peer from this listing);
  // the reconciler holds watch events until the datapath is there.
  await source.watch({
    onChange: (change, all) => reconciler.update(all, change),
    onLost: () => lostSignal?.(),
    onFatal: (err) => {
      log.error('the subnet manager refuses this agent; exiting', { kind: source.kind, error: err.message });
      process.exit(1);
    },
  });
  reconciler.update(source.leases);
  const program = async (lease: OwnLease) => reconciler.setDatapaths(await datapath.program(lease, await reconciler.desired(source.leases.values())));
  await program(own);
  log.info('datapath mode', { mode: datapath.mode, requested: flags.dataplane });
  await reconciler.settled();
  await datapath.removeOtherMode(own);

  const podMtu = underlayMtu - backendOverhead(config.backend.type);
  const subnetFile = (lease: OwnLease) => subnetFileFor(config, lease, { mtu: podMtu, ipMasq: flags.ipMasq });
  writeSubnetFile(flags.subnetFile, subnetFile(own));
  await source.ready();
  status.ready = true;
  source.watchConfig(configText, status);
  if (datapath.mode === 'bpf') watchAbandonedMonitor(flags.pinDir);
  sdNotify(`READY=1\nSTATUS=lease ${describeSubnets(own)}`);
  log.info('ready', { lease: describeSubnets(own), reservation: own.reservation, subnetFile: flags.subnetFile, pinDir: flags.pinDir });

  const shutdown = (signal: string) => {
    // The datapath stays: pinned links and maps keep forwarding until the next agent takes over.
    log.info('stopping; datapath left in place', { signal });
    datapath.stop();
    void source.close().finally(() => {
      void health?.close();
      process.exit(0);
    });
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));

  // Renew before expiry; re-acquire (loudly) when the lease is lost.
  for (;;) {
    const lost = new Promise<'lost'>((resolve) => (lostSignal = () => resolve('lost')));
    const delay = source.renewDelay();
    const outcome = await Promise.race([lost, delay === undefined ? new Promise<never>(() => undefined) : sleep(delay).then(() => 'renew' as const)]);
    let gone = outcome === 'lost';
    if (outcome === 'renew') {
      try {
        gone = !(await source.renew());
        if (!gone) log.info('lease renewed', { lease: describeSubnets(own), expiresInS: Math.round(((source.own?.expiresAt ?? 0) - Date.now()) / 1000) });
      } catch (err) {
        log.warn('lease renewal failed, retrying in a minute or before expiry', { error: (err as Error).message });
        await Promise.race([lost, sleep(Math.min(60_000, Math.max(1000, ((source.own?.expiresAt ?? Date.now()) - Date.now()) / 2)))]);
        continue;
      }
    }
    if (!gone) continue;
    status.ready = false;
    log.error(`our subnet lease is gone from ${source.kind === 'etcd' ? 'etcd' : 'our Node'}: re-acquiring`, { lease: describeSubnets(own) });
    const held = describeSubnets(own);
    own = await source.acquire(attrs, own);
    if (describeSubnets(own) !== held) {
      log.error('lease moved to another subnet: pods on the old subnet lose connectivity until they are recreated', { from: held, to: describeSubnets(own) });
      setLease(own);
      reconciler.setSelf(selfOf(own));
      await program(own);
      await masq.update(own);
      writeSubnetFile(flags.subnetFile, subnetFile(own));
    }
    reconciler.update(source.leases);
    status.ready = true;
    log.warn('lease re-acquired', { lease: describeSubnets(own) });
  }
}
