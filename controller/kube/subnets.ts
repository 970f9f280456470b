import type { V1Node } from '@kubernetes/client-node';
import type { NetworkConfig } from '../config/network-config.js';
import { parseCidr } from '../net/ipv4.js';
import { parseCidr6 } from '../net/ipv6.js';
import { describeSubnets } from '../subnet/allocate.js';
import { kubeAnnotations, nodeCidrs, nodeToLease, ownNodeAnnotations, storedVtepMacs, type KubeAnnotations } from '../subnet/kube-nodes.js';
import { leaseKey, sameLease, subnetKey, NO_SUBNET, type Lease, type LeaseAttrs } from '../subnet/lease.js';
import { routableLease, type OwnLease } from '../subnet/manager.js';
import type { LeaseChange } from '../subnet/watcher.js';
import type { Logger } from '../util/log.js';
import { KubeApi, KubeApiError, nodeView, type NodeInformer } from './api.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** How often a wait (for our Node, its podCIDR, the API server) says it is still waiting. */
const WAIT_LOG_MS = 30_000;

export interface KubeSubnetsOptions {
  api: KubeApi;
  nodeName: string;
  config: NetworkConfig;
  annotationPrefix: string;
  /** --set-node-network-unavailable: clear the Node's NetworkUnavailable condition once ready */
  setNetworkUnavailable: boolean;
  log: Logger;
}

/**
 * flannel's Kubernetes subnet manager (pkg/subnet/kube) for one node: our subnet is our Node's
 * podCIDR(s), published with our attributes in its annotations; the peers are the other Nodes
 * an agent has annotated, kept by a list+watch of Nodes. An API outage leaves the lease set as
 * it was (the maps and the traffic stay); the watch is restarted with backoff, and a relist
 * after an expired watch (410 Gone) is applied as a difference, never as a flush.
 */
export class KubeSubnets {
  readonly kind = 'kube';
  readonly names: KubeAnnotations;
  /** leaseKey -> lease of every usable peer Node, ours included (the reconciler skips its own) */
  readonly leases = new Map<string, Lease>();
  own?: OwnLease;
  /** for status and metrics, as LeaseWatcher's */
  state: 'starting' | 'watching' | 'resyncing' | 'backoff' = 'starting';
  resyncs = 0;
  private listings = 0;
  /** full listings after the first: each followed an expired watch (410 Gone), and was applied as a difference */
  get relists(): number {
    return Math.max(0, this.listings - 1);
  }
  /** the last API error, cleared by the next successful list or watch */
  lastError?: string;
  /** Nodes whose annotations make no usable lease, counted once per change of the Node's annotations */
  malformedNodes = 0;
  private readonly byNode = new Map<string, string>();
  private readonly reported = new Map<string, string>();
  private informer?: NodeInformer;
  private stopped = false;
  private onChange?: (change: LeaseChange, all: ReadonlyMap<string, Lease>) => void;
  private onOwnNode?: () => void;

  constructor(private readonly o: KubeSubnetsOptions) {
    this.names = kubeAnnotations(o.annotationPrefix);
  }

  get connected(): boolean {
    return this.state === 'watching';
  }

  /** Our Node as the API has it now, retried with backoff while the API server is unreachable. */
  private async ownNode(what: string): Promise<V1Node> {
    let lastLog = 0;
    for (let delay = BACKOFF_MIN_MS; ; delay = Math.min(delay * 2, BACKOFF_MAX_MS)) {
      try {
        return await this.o.api.readNode(this.o.nodeName);
      } catch (err) {
        const problem = KubeApi.error(err).message;
        // A refusal will not heal by waiting as a missing Node or an outage may: it is fatal.
        if (KubeApi.refused(err)) throw err;
        if (Date.now() - lastLog >= WAIT_LOG_MS) {
          this.o.log.warn(`waiting for our Node (${what})`, { node: this.o.nodeName, problem, retryInMs: delay });
          lastLog = Date.now();
        }
        await sleep(delay);
      }
    }
  }

  /** What an earlier run left in our Node's annotations: the VtepMACs, and the operator's node-public-ip(s). */
  async stored(): Promise<{ vtepMac?: string; vtepMac6?: string; publicIp?: string; publicIpv6?: string }> {
    const annotations = (await this.ownNode('to read what an earlier run stored')).metadata?.annotations ?? {};
    return {
      ...storedVtepMacs(annotations, this.names),
      publicIp: annotations[this.names.nodePublicIp] || undefined,
      publicIpv6: annotations[this.names.nodePublicIpv6] || undefined,
    };
  }

  /**
   * Our lease: waits until the controller manager gave our Node a podCIDR (logged while it has
   * not), checks it fits the network config, then publishes our attributes in the Node's
   * annotations where they differ (flannel's AcquireLease).
   */
  async acquire(attrs: LeaseAttrs): Promise<OwnLease> {
    let lastLog = 0;
    for (;;) {
      const node = await this.ownNode('to acquire our subnet');
      const cidrs = nodeCidrs(nodeView(node));
      const missing = !cidrs.ok
        ? cidrs.reason
        : this.o.config.enableIPv4 && !cidrs.subnet
          ? 'no IPv4 podCIDR yet'
          : this.o.config.enableIPv6 && !cidrs.subnet6
            ? 'no IPv6 podCIDR yet'
            : undefined;
      if (!missing && cidrs.ok) {
        const subnet = this.o.config.enableIPv4 ? parseCidr(cidrs.subnet!, true)! : NO_SUBNET;
        const subnet6 = this.o.config.enableIPv6 ? parseCidr6(cidrs.subnet6!) : undefined;
        const fit = routableLease(
          {
            ok: true,
            lease: { subnet, subnet6, publicIp: attrs.publicIp, backendType: attrs.backendType, etcdLease: '0', modRevision: '0', createRevision: '0' },
          },
          this.o.config,
        );
        if (!fit.ok) throw new Error(`node ${this.o.nodeName}: ${fit.reason}`);
        const patch = ownNodeAnnotations(node.metadata?.annotations ?? {}, attrs, this.names);
        if (patch) await this.o.api.patchNodeStatus(this.o.nodeName, { metadata: { annotations: patch } });
        this.own = { subnet, subnet6, key: subnetKey(subnet, subnet6), reservation: true, etcdLease: null };
        this.attrs = attrs;
        this.o.log.info('acquired the subnet of our Node', {
          node: this.o.nodeName,
          lease: describeSubnets(this.own),
          annotated: patch ? Object.keys(patch).length : 0,
        });
        return this.own;
      }
      if (Date.now() - lastLog >= WAIT_LOG_MS) {
        this.o.log.warn('waiting for our Node to be given a podCIDR', { node: this.o.nodeName, problem: missing });
        lastLog = Date.now();
      }
      await sleep(BACKOFF_MIN_MS);
    }
  }
  private attrs?: LeaseAttrs;

  /** flannel's CompleteLease: once ready, the Node's NetworkUnavailable condition is cleared. */
  async complete(): Promise<void> {
    if (!this.o.setNetworkUnavailable) return;
    const now = new Date().toISOString();
    const condition = {
      type: 'NetworkUnavailable',
      status: 'False',
      reason: 'FlannelIsUp',
      message: 'Flannel is running on this node',
      lastTransitionTime: now,
      lastHeartbeatTime: now,
    };
    await this.o.api.patchNodeStatus(this.o.nodeName, { status: { conditions: [condition] } });
  }

  /**
   * Starts the list+watch of Nodes; resolves after the first successful listing. `onChange` gets
   * every change of the lease set, `onOwnNode` a change of our own Node that unpublishes or moves
   * our lease (deleted and registered again, its annotations gone, another podCIDR).
   */
  async start(o: {
    onChange: (change: LeaseChange, all: ReadonlyMap<string, Lease>) => void;
    onOwnNode: () => void;
    onRefused: (err: Error) => void;
  }): Promise<void> {
    this.onChange = o.onChange;
    this.onOwnNode = o.onOwnNode;
    this.onRefused = o.onRefused;
    const informer = this.o.api.nodeInformer(() => {
      if (this.listings++ === 0) return;
      this.o.log.info('Node watch expired (410 Gone): listed every Node again, applied as a difference', { relists: this.relists });
    });
    this.informer = informer;
    informer.on('add', (n) => this.nodeChanged(n));
    informer.on('update', (n) => this.nodeChanged(n));
    informer.on('delete', (n) => this.nodeChanged(n, true));
    informer.on('error', (err) => void this.restart(err));
    let lastLog = 0;
    for (let delay = BACKOFF_MIN_MS; ; delay = Math.min(delay * 2, BACKOFF_MAX_MS)) {
      const failure = await this.attempt();
      if (!failure) {
        this.listed = true;
        this.refusedOnce = false;
        this.watching();
        return;
      }
      if (KubeApi.refused(failure)) {
        if (await this.refusalStands(failure)) throw failure;
        continue;
      }
      this.refusedOnce = false;
      if (Date.now() - lastLog >= WAIT_LOG_MS) {
        this.o.log.warn('waiting for the API server to list Nodes', { problem: this.lastError, retryInMs: delay });
        lastLog = Date.now();
      }
      await sleep(delay);
    }
  }

  /** The client's list+watch stops at an error: it is started again with backoff, from where it was. */
  private backoffMs = BACKOFF_MIN_MS;
  private lastFailure?: Error;
  private watchProblem?: { problem: string; at: number };
  private listed = false;
  private onRefused?: (err: Error) => void;
  private async restart(err: unknown): Promise<void> {
    const failure = KubeApi.error(err);
    this.lastFailure = failure;
    const problem = failure.message;
    if (KubeApi.refused(failure) && this.listed) {
      this.state = 'backoff';
      this.lastError = problem;
      if (await this.refusalStands(failure)) this.onRefused?.(failure);
      else if (!this.stopped) await this.rewatch();
      return;
    }
    // Once per problem, and again every WAIT_LOG_MS while it lasts: an outage is not a line every retry.
    if (problem !== this.watchProblem?.problem || Date.now() - this.watchProblem.at >= WAIT_LOG_MS) {
      this.o.log.warn('Node watch failed; the datapath keeps what it has, retrying', { problem, retryInMs: this.backoffMs });
      this.watchProblem = { problem, at: Date.now() };
    }
    this.lastError = problem;
    this.state = 'backoff';
    if (!this.listed || !this.informer) return; // the first listing is start()'s to retry
    this.refusedOnce = false;
    await sleep(this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    if (this.stopped) return;
    await this.rewatch();
  }

  private refusedOnce = false;

  /**
   * Whether a refusal is final: one a ready API server repeated. A list's or a get's was asked
   * again already (KubeApi.request); the watch's is asked again here, once, when the API server
   * says it is ready, since one still starting refuses everything until its authorizer has synced.
   */
  private async refusalStands(failure: Error): Promise<boolean> {
    if ((failure instanceof KubeApiError && failure.confirmed) || this.refusedOnce) return true;
    this.refusedOnce = true;
    this.o.log.warn('Node watch refused; asking again once the API server says it is ready', { problem: failure.message });
    await this.o.api.untilReady();
    return false;
  }

  /** One more start of the list+watch; its failure, if any, has already scheduled the next (restart). */
  private async rewatch(): Promise<void> {
    this.state = 'resyncing';
    if (await this.attempt()) return;
    this.backoffMs = BACKOFF_MIN_MS;
    this.refusedOnce = false;
    this.resyncs++;
    this.o.log.info('Node watch established again', { after: this.watchProblem?.problem });
    this.watching();
  }

  /** Starts the list+watch once; the error it met, if any (the informer reports it by its error event). */
  private async attempt(): Promise<Error | undefined> {
    this.lastFailure = undefined;
    await this.informer!.start();
    return this.lastFailure;
  }

  /** The list (when one was needed) and the watch request both went through. */
  private watching(): void {
    this.state = 'watching';
    this.lastError = undefined;
    this.watchProblem = undefined;
  }

  private nodeChanged(node: V1Node, deleted = false): void {
    const view = nodeView(node);
    if (view.name === this.o.nodeName) this.ownNodeChanged(view, deleted);
    const parsed = deleted ? undefined : nodeToLease(view, this.names, { ipv4: this.o.config.enableIPv4, ipv6: this.o.config.enableIPv6 });
    const checked = parsed && routableLease(parsed, this.o.config);
    if (checked && !checked.ok) {
      const said = this.reported.get(view.name);
      if (said !== checked.reason) {
        this.malformedNodes++;
        this.o.log.warn('ignoring Node whose annotations make no usable lease', { node: view.name, reason: checked.reason });
        this.reported.set(view.name, checked.reason);
      }
    } else this.reported.delete(view.name);
    const lease = checked?.ok ? checked.lease : undefined;
    const change: LeaseChange = { added: [], removed: [], changed: [] };
    const beforeKey = this.byNode.get(view.name);
    const before = beforeKey === undefined ? undefined : this.leases.get(beforeKey);
    if (before && (!lease || leaseKey(lease) !== beforeKey)) {
      this.leases.delete(beforeKey!);
      this.byNode.delete(view.name);
      change.removed.push(before);
    }
    if (lease) {
      const key = leaseKey(lease);
      const held = this.leases.get(key);
      if (held && sameLease(held, lease)) return this.emit(change);
      this.leases.set(key, lease);
      this.byNode.set(view.name, key);
      (before && beforeKey === key ? change.changed : change.added).push(lease);
    }
    this.emit(change);
  }

  private emit(change: LeaseChange): void {
    if (change.added.length + change.removed.length + change.changed.length) this.onChange?.(change, this.leases);
  }

  /** Our Node no longer says what we published: deleted, registered again without our annotations, or given another podCIDR. */
  private ownNodeChanged(view: ReturnType<typeof nodeView>, deleted: boolean): void {
    if (!this.own || !this.attrs) return;
    const cidrs = nodeCidrs(view);
    const moved = !cidrs.ok || (this.o.config.enableIPv4 && cidrs.subnet && parseCidr(cidrs.subnet, true)?.ip !== this.own.subnet.ip);
    if (deleted || moved || ownNodeAnnotations(view.annotations, this.attrs, this.names)) this.onOwnNode?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer?.stop();
  }
}
