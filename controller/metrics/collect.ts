import { existsSync } from 'node:fs';
import { LAYOUT_VERSION } from '../../maps/layout.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { formatCidr } from '../net/ipv4.js';
import type { OwnLease } from '../subnet/manager.js';
import { twillVersion } from '../util/paths.js';
import { agentMetricFamilies, type AgentSnapshot, type MetricsOptions } from './agent-metrics.js';
import type { AgentRegistry } from './registry.js';

/** What the agent exposes to /metrics: its live objects, read at scrape time. */
export interface AgentMetricSources {
  pinDir: string;
  ready: boolean;
  mode?: 'bpf' | 'kernel';
  manager?: { own?: OwnLease };
  reconciler?: { count: number; errors: number; lastDurationMs: number; totalDurationMs: number };
  watcher?: { state: string; resyncs: number; kind?: 'etcd' | 'kube'; ignoredNodes?: number; relists?: number };
  endpoints?: { state: { endpoints: number; podLinks: number } };
  fastPath?: { enabled: boolean };
  /** FORWARD rules the fast path would bypass (BPF mode, once looked at) */
  forwardRules?: readonly string[];
}

/** The edge: reads the pinned counters (opened per scrape, so a replaced map is never stale). */
export function readAgentSnapshot(src: AgentMetricSources, opts: MetricsOptions): AgentSnapshot {
  const own = src.manager?.own;
  const snapshot: AgentSnapshot = {
    ready: src.ready,
    mode: src.mode,
    lease: own && { subnet: formatCidr(own.subnet), reservation: own.reservation, expiresAt: own.reservation ? undefined : own.expiresAt },
    reconcile: src.reconciler && {
      count: src.reconciler.count,
      errors: src.reconciler.errors,
      lastDurationMs: src.reconciler.lastDurationMs,
      totalDurationMs: src.reconciler.totalDurationMs,
    },
    watch: src.watcher && {
      state: src.watcher.state,
      resyncs: src.watcher.resyncs,
      kind: src.watcher.kind,
      ignoredNodes: src.watcher.ignoredNodes,
      relists: src.watcher.relists,
    },
  };
  if (src.mode === 'bpf' && existsSync(`${src.pinDir}/twill_peer_stats`)) {
    const maps = DatapathMaps.open(src.pinDir);
    try {
      // Summing every peer's per-CPU counters is most of a scrape's cost on a large cluster.
      const traffic = opts.perPeer ? maps.peerTraffic() : undefined;
      snapshot.datapath = { stats: maps.stats(), peerCount: traffic?.peers.length ?? maps.peerCount(), traffic, path: maps.pathStats() };
    } finally {
      maps.close();
    }
    snapshot.fastPath = {
      enabled: src.fastPath?.enabled ?? false,
      endpoints: src.endpoints?.state.endpoints ?? 0,
      podLinks: src.endpoints?.state.podLinks ?? 0,
      forwardRules: src.forwardRules?.length,
    };
  }
  return snapshot;
}

/**
 * The agent's /metrics. prom-client is loaded here, only by an agent that serves metrics
 * (--healthz-port), not by every agent or command.
 */
export async function openAgentMetrics(src: () => AgentMetricSources, opts: MetricsOptions): Promise<AgentRegistry> {
  const { AgentRegistry, EVENT_LOOP_RESOLUTION_MS } = await import('./registry.js');
  return new AgentRegistry(() => agentMetricFamilies(readAgentSnapshot(src(), opts), opts), {
    build: { version: twillVersion(), mapLayout: LAYOUT_VERSION },
    eventLoopResolutionMs: EVENT_LOOP_RESOLUTION_MS,
  });
}
