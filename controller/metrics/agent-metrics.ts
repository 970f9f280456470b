import type { PathStats, PeerStats, Stats } from '../../maps/layout.js';
import type { PeerTraffic } from '../dataplane/datapath-maps.js';

/*
 * twill's own metrics as data: what a scrape reports, computed from one snapshot. Names, label
 * names and types are an interface (test/unit/metrics-interface.test.ts holds them to what
 * 15aa35c served); registry.ts hands the families to prom-client for exposition.
 */

export type MetricType = 'counter' | 'gauge' | 'summary';

export interface Sample {
  labels?: Readonly<Record<string, string>>;
  /** bigint for the BPF counters (u64); Prometheus stores a float64 either way */
  value: number | bigint;
  /** for summaries: `_sum` or `_count` after the family name */
  suffix?: '_sum' | '_count';
}

export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  /** declared, not taken from the samples: a labelled family with no samples shows no series */
  labelNames: readonly string[];
  samples: readonly Sample[];
}

export interface MetricsOptions {
  /** the per-peer traffic families (4 series per peer); the node totals are there either way */
  perPeer: boolean;
}

/** Everything /metrics reports, as read at scrape time. Pure data: no handles, no clocks. */
export interface AgentSnapshot {
  ready: boolean;
  mode?: 'bpf' | 'kernel';
  lease?: { subnet: string; reservation: boolean; /** ms since the epoch; none for a reservation */ expiresAt?: number };
  reconcile?: { count: number; errors: number; lastDurationMs: number; totalDurationMs: number };
  /** the peers' watch: etcd's lease watch, or the Kubernetes Node watch (`kind`, absent: etcd) */
  watch?: { state: string; resyncs: number; kind?: 'etcd' | 'kube'; ignoredNodes?: number; relists?: number };
  /** BPF mode only: the pinned counters, summed over CPUs; per peer only when asked for (see MetricsOptions) */
  datapath?: {
    stats: Stats;
    peerCount: number;
    traffic?: { peers: readonly PeerTraffic[]; unattributed: PeerStats };
    path?: { send: PathStats; receive: PathStats };
  };
  /** BPF mode only: the fast path's switch and the local pods it serves */
  fastPath?: { enabled: boolean; endpoints: number; podLinks: number; forwardRules?: number };
}

/** twill_path_stats fields that count packets handed to the stack (all but `fast`). */
const STACK_REASONS = [
  'not_ip',
  'not_ipv4',
  'not_remote',
  'no_endpoint',
  'source',
  'conntrack',
  'ttl',
  'fragment',
  'protocol',
  'too_big',
  'disabled',
  'error',
  'ipv6_off',
] as const satisfies readonly (keyof PathStats)[];

/** The lease watcher's states, all reported (1 for the current one) so a dashboard sees transitions. */
const WATCH_STATES = ['starting', 'watching', 'resyncing', 'backoff'] as const;

const DROP_PREFIX = 'drop_';

const peerCounters = [
  ['encap_packets', 'Packets encapsulated towards the peer (GSO segments counted one by one).'],
  ['encap_bytes', 'Inner frame bytes encapsulated towards the peer.'],
  ['decap_packets', 'Packets from the peer decapsulated and delivered.'],
  ['decap_bytes', 'Inner frame bytes from the peer decapsulated and delivered.'],
  ['source_drops', "Packets from the peer dropped because their inner source was outside the peer's subnet."],
] as const satisfies readonly (readonly [keyof PeerStats, string])[];

const gauge = (name: string, help: string, samples: Sample[], labelNames: readonly string[] = []): MetricFamily => ({
  name,
  help,
  type: 'gauge',
  labelNames,
  samples,
});
const counter = (name: string, help: string, samples: Sample[], labelNames: readonly string[] = []): MetricFamily => ({
  name,
  help,
  type: 'counter',
  labelNames,
  samples,
});

export function agentMetricFamilies(s: AgentSnapshot, opts: MetricsOptions): MetricFamily[] {
  const out: MetricFamily[] = [gauge('twill_ready', '1 once the datapath is programmed and the subnet file written.', [{ value: s.ready ? 1 : 0 }])];
  if (s.mode)
    out.push(
      gauge('twill_dataplane_info', 'The datapath this node runs (bpf, or kernel VXLAN as flannel).', [{ labels: { mode: s.mode }, value: 1 }], ['mode']),
    );

  if (s.lease) {
    out.push(
      gauge(
        'twill_lease_info',
        "This node's subnet lease.",
        [{ labels: { subnet: s.lease.subnet, reservation: String(s.lease.reservation) }, value: 1 }],
        ['subnet', 'reservation'],
      ),
    );
    if (s.lease.expiresAt !== undefined)
      out.push(
        gauge(
          'twill_lease_expiry_timestamp_seconds',
          'When our lease expires unless renewed (Unix time).',
          [{ labels: { subnet: s.lease.subnet }, value: Math.round(s.lease.expiresAt / 1000) }],
          ['subnet'],
        ),
      );
  }

  if (s.reconcile) {
    out.push(
      counter('twill_reconciles_total', 'Datapath syncs completed.', [{ value: s.reconcile.count }]),
      counter('twill_reconcile_errors_total', 'Datapath syncs that failed (retried).', [{ value: s.reconcile.errors }]),
      gauge('twill_reconcile_last_duration_seconds', 'How long the last datapath sync took.', [{ value: s.reconcile.lastDurationMs / 1000 }]),
      {
        name: 'twill_reconcile_duration_seconds',
        help: 'Time spent in datapath syncs, failed ones included.',
        type: 'summary',
        labelNames: [],
        samples: [
          { suffix: '_sum', value: s.reconcile.totalDurationMs / 1000 },
          { suffix: '_count', value: s.reconcile.count + s.reconcile.errors },
        ],
      },
    );
  }

  if (s.watch) {
    const w = s.watch;
    const kind = w.kind ?? 'etcd';
    const states: readonly string[] = WATCH_STATES.includes(w.state as (typeof WATCH_STATES)[number]) ? WATCH_STATES : [...WATCH_STATES, w.state];
    const what = kind === 'etcd' ? 'etcd lease watch' : 'Kubernetes Node watch';
    out.push(
      gauge(
        'twill_subnet_manager_info',
        'Where this node takes its subnet and its peers from: etcd, or the Kubernetes API (--kube-subnet-mgr).',
        [{ labels: { kind }, value: 1 }],
        ['kind'],
      ),
      gauge(`twill_${kind}_watch_up`, `1 while the ${what} is established.`, [{ value: w.state === 'watching' ? 1 : 0 }]),
      gauge(
        `twill_${kind}_watch_state`,
        `The ${what} state (1 for the current one).`,
        states.map((state) => ({ labels: { state }, value: state === w.state ? 1 : 0 })),
        ['state'],
      ),
      counter(
        `twill_${kind}_watch_resyncs_total`,
        kind === 'etcd' ? 'Full lease listings (at start and after every watch reconnect).' : 'Full Node listings after the Node watch was lost.',
        [{ value: w.resyncs }],
      ),
    );
    if (w.ignoredNodes !== undefined)
      out.push(
        counter('twill_kube_nodes_ignored_total', 'Nodes whose annotations made no usable lease, once per change of them.', [{ value: w.ignoredNodes }]),
      );
    if (w.relists !== undefined)
      out.push(
        counter('twill_kube_watch_relists_total', 'Full Node listings after the Node watch expired (410 Gone), each applied as a difference to the peers.', [
          { value: w.relists },
        ]),
      );
  }

  if (s.fastPath) {
    out.push(
      gauge('twill_fast_path_enabled', '1 when pod traffic to and from remote pods may bypass the host stack (--fast-path, and a kernel that allows it).', [
        { value: s.fastPath.enabled ? 1 : 0 },
      ]),
      gauge('twill_endpoints', "Local pods in the fast path's endpoints map.", [{ value: s.fastPath.endpoints }]),
      gauge('twill_pod_links', 'Pod veths carrying the send half of the fast path.', [{ value: s.fastPath.podLinks }]),
    );
    if (s.fastPath.forwardRules !== undefined)
      out.push(
        gauge(
          'twill_forward_foreign_rules',
          "Rules in the node's FORWARD chain (or an nftables forward hook) that are neither flannel's nor kube-proxy's: what the fast path would bypass.",
          [{ value: s.fastPath.forwardRules }],
        ),
      );
  }

  const d = s.datapath;
  if (d?.path) {
    const directions = [
      ['send', d.path.send],
      ['receive', d.path.receive],
    ] as const;
    out.push(
      counter(
        'twill_fast_path_packets_total',
        'Pod packets that bypassed the host stack: sent from a local pod (send) or delivered into one (receive).',
        directions.map(([direction, p]) => ({ labels: { direction }, value: p.fast })),
        ['direction'],
      ),
      counter(
        'twill_stack_path_packets_total',
        'Packets the fast path handed to the host stack, by direction and reason (see twill_path_stats in bpf/include/twill_maps.h).',
        directions.flatMap(([direction, p]) => STACK_REASONS.map((reason) => ({ labels: { direction, reason }, value: p[reason] }))),
        ['direction', 'reason'],
      ),
    );
  }
  if (d) {
    out.push(gauge('twill_peers', 'Peers in the datapath (twill_peers entries).', [{ value: d.peerCount }]));
    // Off for large clusters: these grow with the peers, on every node (see --metrics-per-peer).
    if (opts.perPeer && d.traffic)
      for (const [field, help] of peerCounters) out.push(counter(`twill_peer_${field}_total`, help, peerSamples(d.traffic, field), ['peer', 'subnet']));
    const drops = Object.entries(d.stats).filter(([k]) => k.startsWith(DROP_PREFIX));
    out.push(
      counter('twill_encap_packets_total', 'Packets encapsulated, all peers.', [{ value: d.stats.encap_packets }]),
      counter('twill_encap_bytes_total', 'Inner frame bytes encapsulated, all peers.', [{ value: d.stats.encap_bytes }]),
      counter('twill_decap_packets_total', 'Packets decapsulated, all peers.', [{ value: d.stats.decap_packets }]),
      counter('twill_decap_bytes_total', 'Inner frame bytes decapsulated, all peers.', [{ value: d.stats.decap_bytes }]),
      counter(
        'twill_datapath_drops_total',
        'Packets the BPF programs dropped, by reason (see bpf/include/twill_maps.h).',
        drops.map(([k, v]) => ({ labels: { reason: k.slice(DROP_PREFIX.length) }, value: v })),
        ['reason'],
      ),
    );
  }
  return out;
}

function peerSamples(d: NonNullable<NonNullable<AgentSnapshot['datapath']>['traffic']>, field: keyof PeerStats): Sample[] {
  const samples: Sample[] = d.peers.map((p) => ({ labels: { peer: p.publicIp, subnet: p.subnet }, value: p[field] }));
  // Entries written without a counter slot: shown only when they carried traffic.
  if (d.unattributed[field] > 0n) samples.push({ labels: { peer: 'unattributed', subnet: '' }, value: d.unattributed[field] });
  return samples;
}
