import { readFileSync } from 'node:fs';
import { configChangeReport, parseNetworkConfig, ConfigError, FatalConfigError, waitLogDue, type NetworkConfig } from '../config/network-config.js';
import { EtcdStore } from '../etcd/store.js';
import { KubeApi, KubeApiError } from '../kube/api.js';
import { KubeSubnets } from '../kube/subnets.js';
import type { Lease, LeaseAttrs } from '../subnet/lease.js';
import { SubnetManager, type OwnLease } from '../subnet/manager.js';
import { readSubnetHints } from '../subnet/subnet-file.js';
import { LeaseWatcher, type LeaseChange } from '../subnet/watcher.js';
import { logger } from '../util/log.js';
import type { AgentFlags } from './flags.js';

const log = logger('agent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How often a wait for the config says it is still waiting, and how often the config is re-read after start. */
const CONFIG_WAIT_LOG_MS = 30_000;
const CONFIG_RECHECK_MS = 10_000;

/** Where a config problem is reported while the agent waits or runs (readyz, status). */
export interface ConfigReport {
  configError?: string;
}

export interface PeerEvents {
  /** every change of the lease set, with the whole set after it */
  onChange: (change: LeaseChange, all: ReadonlyMap<string, Lease>) => void;
  /** our lease is gone or moved: re-acquire */
  onLost: () => void;
  /** the source refuses us for good (RBAC): the agent stops with this error */
  onFatal: (err: Error) => void;
}

/**
 * flannel's subnet.Manager as the agent uses it: where the network config, our lease and the
 * peers come from. etcd (flannel's default) or the Kubernetes API (`--kube-subnet-mgr`); the
 * rest of the agent does not know which.
 */
export interface SubnetSource {
  readonly kind: 'etcd' | 'kube';
  /** The network config, waited for (etcd) or read (net-conf.json); throws when it cannot be run. */
  networkConfig(report: ConfigReport): Promise<{ config: NetworkConfig; text: string }>;
  /** What an earlier run of this node left in the source: VtepMACs, and the operator's public IPs (Kubernetes). */
  stored(): Promise<{ vtepMac?: string; vtepMac6?: string; publicIp?: string; publicIpv6?: string }>;
  /** Our lease, retried until it is had; `held` is the lease we just lost, to get back. */
  acquire(attrs: LeaseAttrs, held?: OwnLease): Promise<OwnLease>;
  readonly own?: OwnLease;
  /** ms until the lease must be renewed; undefined: it never expires */
  renewDelay(): number | undefined;
  /** false: the lease is gone */
  renew(): Promise<boolean>;
  /** Starts watching the peers; resolves after the first listing, which `leases` then holds. */
  watch(events: PeerEvents): Promise<void>;
  readonly leases: ReadonlyMap<string, Lease>;
  /** Once the node is ready (Kubernetes: its NetworkUnavailable condition is cleared). */
  ready(): Promise<void>;
  /** After start, a change of the config is reported, never applied. */
  watchConfig(running: string, report: ConfigReport): void;
  /** for readyz, status and metrics */
  readonly watchState: string;
  readonly resyncs: number;
  readonly connected: boolean;
  /** Kubernetes: Nodes whose annotations made no usable lease */
  readonly ignoredNodes?: number;
  /** Kubernetes: full Node listings after an expired watch (410 Gone) */
  readonly relists?: number;
  close(): Promise<void>;
}

/** etcd: flanneld's default subnet manager, config at <prefix>/config, leases under <prefix>/subnets. */
class EtcdSource implements SubnetSource {
  readonly kind = 'etcd';
  private readonly store: EtcdStore;
  private manager?: SubnetManager;
  private watcher?: LeaseWatcher;
  private config?: NetworkConfig;

  constructor(private readonly flags: AgentFlags) {
    this.store = new EtcdStore({
      endpoints: flags.etcdEndpoints,
      prefix: flags.etcdPrefix,
      caFile: flags.etcdCafile,
      certFile: flags.etcdCertfile,
      keyFile: flags.etcdKeyfile,
      username: flags.etcdUsername,
      password: flags.etcdPassword,
    });
  }

  /**
   * flannel reads the config once at start and waits for it to exist; an invalid one is reported
   * and waited out too (someone may be fixing it), as flanneld retries one that fails its check.
   * One flanneld exits on, or one that asks for what twill does not implement, throws
   * FatalConfigError: no wait would help.
   */
  async networkConfig(report: ConfigReport): Promise<{ config: NetworkConfig; text: string }> {
    const store = this.store;
    let last: { problem: string; at: number } | undefined;
    for (;;) {
      let problem: string;
      try {
        const text = await store.getConfig();
        if (text !== undefined) {
          this.config = parseNetworkConfig(text);
          return { config: this.config, text };
        }
        problem = `no network config at ${store.configKey} yet`;
      } catch (err) {
        if (err instanceof FatalConfigError) {
          err.message = `${store.configKey}: ${err.message}`;
          throw err;
        }
        problem = err instanceof ConfigError ? `${store.configKey}: ${err.message}` : store.describeError(err);
      }
      report.configError = problem;
      if (waitLogDue(problem, last, Date.now(), CONFIG_WAIT_LOG_MS)) {
        (problem.startsWith('no network config') ? log.warn : log.error)('waiting for a usable network config', { problem, retryEveryMs: 1000 });
        last = { problem, at: Date.now() };
      }
      await sleep(1000);
    }
  }

  async stored() {
    return {};
  }

  async acquire(attrs: LeaseAttrs, held?: OwnLease): Promise<OwnLease> {
    const flags = this.flags;
    this.manager ??= new SubnetManager(this.store, this.config!, attrs, {
      ttlSeconds: flags.subnetLeaseTtl,
      renewMarginSeconds: flags.subnetLeaseRenewMargin * 60,
      ...readSubnetHints(flags.subnetFile),
      log,
    });
    for (let delay = 1000; ; delay = Math.min(delay * 2, 30_000)) {
      try {
        return await this.manager.acquire(held?.subnet, held?.subnet6);
      } catch (err) {
        log.error('cannot acquire a subnet lease, retrying', { error: (err as Error).message, retryInMs: delay });
        await sleep(delay);
      }
    }
  }

  get own() {
    return this.manager?.own;
  }

  renewDelay() {
    return this.manager?.renewDelay();
  }

  async renew() {
    return this.manager!.renew();
  }

  async watch(events: PeerEvents): Promise<void> {
    const manager = this.manager!;
    this.watcher = new LeaseWatcher({
      store: this.store,
      onChange: events.onChange,
      log,
      onEvent: (e) => {
        if (manager.isOwnLeaseLost({ type: e.type, key: e.record.key, value: e.record.value })) events.onLost();
      },
      routableIn: this.config,
    });
    await this.watcher.start();
  }

  get leases(): ReadonlyMap<string, Lease> {
    return this.watcher?.leases ?? new Map();
  }

  async ready() {}

  watchConfig(running: string, report: ConfigReport): void {
    let reported: string | undefined;
    const check = async () => {
      let problem: string | undefined;
      try {
        problem = configChangeReport(running, await this.store.getConfig());
      } catch {
        return; // etcd unreachable: the lease watcher reports that
      }
      report.configError = problem;
      if (problem && problem !== reported) log.error('network config changed', { problem });
      reported = problem;
    };
    setInterval(() => void check(), CONFIG_RECHECK_MS).unref();
  }

  get watchState() {
    return this.watcher?.state ?? 'starting';
  }

  get resyncs() {
    return this.watcher?.resyncs ?? 0;
  }

  get connected() {
    return this.watcher?.state === 'watching';
  }

  async close(): Promise<void> {
    // etcd may be unreachable, and cancelling a watch waits for it: that must not hold the exit.
    await Promise.race([this.watcher?.stop(), sleep(2000)]);
    this.store.close();
  }
}

/** flanneld's `--kube-subnet-mgr`: the config from net-conf.json, our subnet our Node's podCIDR, the peers the other Nodes. */
class KubeSource implements SubnetSource {
  readonly kind = 'kube';
  private subnets?: KubeSubnets;
  private config?: NetworkConfig;

  constructor(private readonly flags: AgentFlags) {}

  /** flanneld reads net-conf.json once and exits when it cannot: so does twill, naming the file and what is wrong. */
  async networkConfig(): Promise<{ config: NetworkConfig; text: string }> {
    const path = this.flags.netConfigPath;
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new FatalConfigError(`--net-config-path ${path}: ${(err as Error).message}`);
    }
    try {
      this.config = parseNetworkConfig(text);
    } catch (err) {
      throw new FatalConfigError(`${path}: ${(err as Error).message}`);
    }
    const api = await KubeApi.connect({ apiUrl: this.flags.kubeApiUrl, kubeconfigFile: this.flags.kubeconfigFile });
    const nodeName = await nodeNameOf(api);
    this.subnets = new KubeSubnets({
      api,
      nodeName,
      config: this.config,
      annotationPrefix: this.flags.kubeAnnotationPrefix,
      setNetworkUnavailable: this.flags.setNodeNetworkUnavailable,
      log,
    });
    log.info('Kubernetes subnet manager', { server: api.server, node: nodeName, annotationPrefix: this.flags.kubeAnnotationPrefix });
    return { config: this.config, text };
  }

  stored() {
    return this.subnets!.stored();
  }

  /** Retried while the API server is unreachable; a refusal (RBAC) or a podCIDR the config cannot carry is final. */
  async acquire(attrs: LeaseAttrs): Promise<OwnLease> {
    for (let delay = 1000; ; delay = Math.min(delay * 2, 30_000)) {
      try {
        return await this.subnets!.acquire(attrs);
      } catch (err) {
        if (!(err instanceof KubeApiError) || KubeApi.refused(err)) throw err;
        log.error('cannot publish our Node annotations, retrying', { error: err.message, retryInMs: delay });
        await sleep(delay);
      }
    }
  }

  get own() {
    return this.subnets?.own;
  }

  renewDelay() {
    return undefined; // a podCIDR does not expire
  }

  async renew() {
    return true;
  }

  watch(events: PeerEvents): Promise<void> {
    return this.subnets!.start({ onChange: events.onChange, onOwnNode: events.onLost, onRefused: events.onFatal });
  }

  get leases(): ReadonlyMap<string, Lease> {
    return this.subnets?.leases ?? new Map();
  }

  ready() {
    return this.subnets!.complete();
  }

  watchConfig(): void {
    // flanneld reads net-conf.json once; a changed ConfigMap takes a restart, as there.
  }

  get watchState() {
    return this.subnets?.state ?? 'starting';
  }

  get resyncs() {
    return this.subnets?.resyncs ?? 0;
  }

  get connected() {
    return this.subnets?.connected ?? false;
  }

  get ignoredNodes() {
    return this.subnets?.malformedNodes ?? 0;
  }

  get relists() {
    return this.subnets?.relists ?? 0;
  }

  async close(): Promise<void> {
    await Promise.race([this.subnets?.stop(), sleep(2000)]);
  }
}

/** flannel's: NODE_NAME, else the node of the pod POD_NAME in POD_NAMESPACE. */
async function nodeNameOf(api: KubeApi): Promise<string> {
  const env = process.env;
  if (env.NODE_NAME) return env.NODE_NAME;
  if (!env.POD_NAME || !env.POD_NAMESPACE) throw new FatalConfigError('--kube-subnet-mgr: env variables NODE_NAME, or POD_NAME and POD_NAMESPACE, must be set');
  const node = await api.nodeOfPod(env.POD_NAMESPACE, env.POD_NAME);
  if (!node) throw new FatalConfigError(`--kube-subnet-mgr: node name not present in pod spec '${env.POD_NAMESPACE}/${env.POD_NAME}'`);
  return node;
}

export function subnetSource(flags: AgentFlags): SubnetSource {
  return flags.kubeSubnetMgr ? new KubeSource(flags) : new EtcdSource(flags);
}
