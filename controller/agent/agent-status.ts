import type { FastPathState } from '../dataplane/attach-state.js';
import type { EndpointSyncState } from '../endpoints/sync.js';
import type { IptablesMasq } from '../masq/iptables.js';
import type { AgentMetricSources } from '../metrics/collect.js';
import type { Reconciler } from '../reconcile/reconciler.js';
import type { SubnetSource } from './subnet-source.js';
import type { DataplaneMode, NodeDatapath } from './node-datapath.js';

/** /readyz's body beside `ready`: an interface (fields are added, never renamed or removed). */
export interface ReadyzDetail {
  /** our IPv4 subnet (absent in an IPv6-only network) */
  lease?: string;
  /** our IPv6 subnet, when the network enables IPv6 */
  lease6?: string;
  leaseExpiresAt?: string;
  mode?: DataplaneMode;
  configError?: string;
  watch?: string;
  /** where the subnet and the peers come from, and whether its watch is established */
  subnetManager?: { kind: SubnetSource['kind']; connected: boolean };
  reconciles?: number;
  /** forwardRules: FORWARD rules the fast path would bypass (a NetworkPolicy engine's), once looked at */
  fastPath?: Partial<FastPathState> & { endpoints?: EndpointSyncState; forwardRules?: string[] };
  iptables?: { writes: number; error?: string };
  ip6tables?: { writes: number; error?: string };
}

/**
 * What the agent is doing, for /readyz, /metrics and its logs: each part is filled in as start-up
 * reaches it, so a probe during start-up says how far it got.
 */
export class AgentStatus {
  ready = false;
  /** why the network config cannot be used (at start), or how it changed since (after) */
  configError?: string;
  lease?: string;
  lease6?: string;
  subnets?: SubnetSource;
  reconciler?: Reconciler;
  masq?: IptablesMasq;
  /** ip6tables, with IPv6 */
  masq6?: IptablesMasq;
  datapath?: NodeDatapath;

  constructor(private readonly pinDir: string) {}

  /** The mode programmed, once it carries traffic. */
  get mode(): DataplaneMode | undefined {
    return this.datapath?.programmed;
  }

  detail(): ReadyzDetail {
    const expiresAt = this.subnets?.own?.expiresAt;
    const masq = (m: IptablesMasq | undefined) => m && { writes: m.writes, error: m.error };
    return {
      lease: this.lease,
      lease6: this.lease6,
      leaseExpiresAt: expiresAt ? new Date(expiresAt).toISOString() : undefined,
      mode: this.mode,
      configError: this.configError,
      watch: this.subnets?.watchState,
      subnetManager: this.subnets && { kind: this.subnets.kind, connected: this.subnets.connected },
      reconciles: this.reconciler?.count,
      fastPath:
        this.mode === 'bpf' ? { ...this.datapath?.fastPath, endpoints: this.datapath?.endpoints?.state, forwardRules: this.datapath?.forwardRules } : undefined,
      iptables: masq(this.masq),
      ip6tables: masq(this.masq6),
    };
  }

  metricSources(): AgentMetricSources {
    return {
      pinDir: this.pinDir,
      ready: this.ready,
      mode: this.mode,
      manager: this.subnets,
      reconciler: this.reconciler,
      watcher: this.subnets && {
        state: this.subnets.watchState,
        resyncs: this.subnets.resyncs,
        kind: this.subnets.kind,
        ignoredNodes: this.subnets.ignoredNodes,
        relists: this.subnets.relists,
      },
      endpoints: this.datapath?.endpoints,
      fastPath: this.datapath?.fastPath,
      forwardRules: this.datapath?.forwardRules,
    };
  }
}
