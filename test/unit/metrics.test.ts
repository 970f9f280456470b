import { describe, expect, it } from 'vitest';
import { agentMetricFamilies, type AgentSnapshot } from '../../controller/metrics/agent-metrics.js';
import { formatPrometheus, MetricsFormatError } from '../../controller/metrics/prometheus.js';
import { statsStruct, type Stats } from '../../maps/layout.js';

const zeroStats = Object.fromEntries(statsStruct.fields.map((f) => [f.name, 0n])) as Stats;
const zeroPeer = { encap_packets: 0n, encap_bytes: 0n, decap_packets: 0n, decap_bytes: 0n };

const snapshot: AgentSnapshot = {
  ready: true,
  mode: 'bpf',
  lease: { subnet: '10.244.1.0/24', reservation: false, expiresAt: 1_700_000_000_400 },
  reconcile: { count: 7, errors: 1, lastDurationMs: 2.5, totalDurationMs: 40 },
  watch: { state: 'watching', resyncs: 2 },
  datapath: {
    stats: { ...zeroStats, encap_packets: 10n, drop_no_peer: 3n, drop_bad_vni: 1n },
    peers: [
      { publicIp: '192.168.77.2', subnet: '10.244.2.0/24', vtepMac: '0a:58:00:00:00:02', slot: 1, encap_packets: 6n, encap_bytes: 600n, decap_packets: 5n, decap_bytes: 500n },
      { publicIp: '192.168.77.3', subnet: '10.244.3.0/24', vtepMac: '0a:58:00:00:00:03', slot: 2, ...zeroPeer, encap_packets: 4n },
    ],
    unattributed: zeroPeer,
  },
};

/** The sample lines of a text exposition, as name{labels} -> value. */
function samples(text: string): Map<string, string> {
  return new Map(
    text
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => {
        const at = l.lastIndexOf(' ');
        return [l.slice(0, at), l.slice(at + 1)];
      }),
  );
}

describe('Prometheus text format', () => {
  it('writes HELP, TYPE and samples with labels', () => {
    const text = formatPrometheus([
      { name: 'x_total', help: 'Things.', type: 'counter', samples: [{ labels: { peer: '10.0.0.2', dir: 'in' }, value: 5n }] },
      { name: 'y', help: 'A gauge.', type: 'gauge', samples: [{ value: 0.25 }] },
    ]);
    expect(text).toBe('# HELP x_total Things.\n# TYPE x_total counter\nx_total{peer="10.0.0.2",dir="in"} 5\n# HELP y A gauge.\n# TYPE y gauge\ny 0.25\n');
  });

  it('escapes label values and help text', () => {
    const text = formatPrometheus([{ name: 'e', help: 'back\\slash\nnewline', type: 'gauge', samples: [{ labels: { l: 'a"b\\c\nd' }, value: 1 }] }]);
    expect(text).toContain('# HELP e back\\\\slash\\nnewline\n');
    expect(text).toContain('e{l="a\\"b\\\\c\\nd"} 1\n');
  });

  it('writes special float values as Prometheus spells them', () => {
    const text = formatPrometheus([{ name: 'f', help: 'h', type: 'gauge', samples: [{ value: NaN }, { value: Infinity }, { value: -Infinity }] }]);
    expect(text.split('\n').slice(2, 5)).toEqual(['f NaN', 'f +Inf', 'f -Inf']);
  });

  it('writes a summary as _sum and _count, and refuses those suffixes elsewhere', () => {
    const text = formatPrometheus([{ name: 'd_seconds', help: 'h', type: 'summary', samples: [{ suffix: '_sum', value: 1.5 }, { suffix: '_count', value: 3 }] }]);
    expect(text).toContain('# TYPE d_seconds summary\nd_seconds_sum 1.5\nd_seconds_count 3\n');
    expect(() => formatPrometheus([{ name: 'g', help: 'h', type: 'gauge', samples: [{ suffix: '_sum', value: 1 }] }])).toThrow(/only a summary/);
  });

  it('refuses invalid names, a counter without _total, a duplicate family', () => {
    expect(() => formatPrometheus([{ name: 'bad-name', help: '', type: 'gauge', samples: [] }])).toThrow(/metric name "bad-name" is not valid/);
    expect(() => formatPrometheus([{ name: 'c', help: '', type: 'counter', samples: [] }])).toThrow(/counter c must end in _total/);
    expect(() => formatPrometheus([{ name: 'g', help: '', type: 'gauge', samples: [{ labels: { 'a-b': 'x' }, value: 1 }] }])).toThrow(MetricsFormatError);
    expect(() => formatPrometheus([{ name: 'g', help: '', type: 'gauge', samples: [{ labels: { __name__: 'x' }, value: 1 }] }])).toThrow(/label name "__name__"/);
    const g = { name: 'g', help: '', type: 'gauge' as const, samples: [] };
    expect(() => formatPrometheus([g, g])).toThrow(/declared twice/);
  });
});

describe('agent metrics', () => {
  const text = formatPrometheus(agentMetricFamilies(snapshot));
  const s = samples(text);

  it('reports per-peer traffic labelled by PublicIP and subnet', () => {
    expect(s.get('twill_peer_encap_packets_total{peer="192.168.77.2",subnet="10.244.2.0/24"}')).toBe('6');
    expect(s.get('twill_peer_encap_bytes_total{peer="192.168.77.2",subnet="10.244.2.0/24"}')).toBe('600');
    expect(s.get('twill_peer_decap_packets_total{peer="192.168.77.2",subnet="10.244.2.0/24"}')).toBe('5');
    expect(s.get('twill_peer_decap_bytes_total{peer="192.168.77.2",subnet="10.244.2.0/24"}')).toBe('500');
    expect(s.get('twill_peer_encap_packets_total{peer="192.168.77.3",subnet="10.244.3.0/24"}')).toBe('4');
    expect(s.get('twill_peers')).toBe('2');
    expect([...s.keys()].some((k) => k.includes('unattributed'))).toBe(false);
  });

  it('reports every drop reason, without the drop_ prefix', () => {
    expect(s.get('twill_datapath_drops_total{reason="no_peer"}')).toBe('3');
    expect(s.get('twill_datapath_drops_total{reason="bad_vni"}')).toBe('1');
    expect(s.get('twill_datapath_drops_total{reason="inner_dst"}')).toBe('0');
    expect(s.get('twill_datapath_drops_total{reason="inner_not_ipv6"}')).toBeDefined();
    expect([...s.keys()].filter((k) => k.startsWith('twill_datapath_drops_total'))).toHaveLength(12);
    expect(s.get('twill_encap_packets_total')).toBe('10');
  });

  it('reports the lease expiry in seconds, reconciles and the watch state', () => {
    expect(s.get('twill_lease_expiry_timestamp_seconds{subnet="10.244.1.0/24"}')).toBe('1700000000');
    expect(s.get('twill_lease_info{subnet="10.244.1.0/24",reservation="false"}')).toBe('1');
    expect(s.get('twill_reconciles_total')).toBe('7');
    expect(s.get('twill_reconcile_errors_total')).toBe('1');
    expect(s.get('twill_reconcile_last_duration_seconds')).toBe('0.0025');
    expect(s.get('twill_reconcile_duration_seconds_sum')).toBe('0.04');
    expect(s.get('twill_reconcile_duration_seconds_count')).toBe('8');
    expect(s.get('twill_etcd_watch_up')).toBe('1');
    expect(s.get('twill_etcd_watch_state{state="watching"}')).toBe('1');
    expect(s.get('twill_etcd_watch_state{state="backoff"}')).toBe('0');
    expect(s.get('twill_etcd_watch_resyncs_total')).toBe('2');
    expect(s.get('twill_ready')).toBe('1');
    expect(s.get('twill_dataplane_info{mode="bpf"}')).toBe('1');
  });

  it('declares every family once with its type, counters ending in _total', () => {
    const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]);
    expect(new Set(types.map(([n]) => n)).size).toBe(types.length);
    for (const [name, type] of types) {
      expect(name).toMatch(/^twill_/);
      if (type === 'counter') expect(name).toMatch(/_total$/);
    }
  });

  it('shows traffic of entries without a slot, and leaves out what a node does not have', () => {
    const unslotted = samples(
      formatPrometheus(agentMetricFamilies({ ...snapshot, datapath: { ...snapshot.datapath!, unattributed: { ...zeroPeer, decap_packets: 9n } } })),
    );
    expect(unslotted.get('twill_peer_decap_packets_total{peer="unattributed",subnet=""}')).toBe('9');
    expect(unslotted.has('twill_peer_encap_packets_total{peer="unattributed",subnet=""}')).toBe(false);

    const bare = samples(formatPrometheus(agentMetricFamilies({ ready: false, mode: 'kernel', lease: { subnet: '10.244.1.0/24', reservation: true } })));
    expect(bare.get('twill_ready')).toBe('0');
    expect(bare.has('twill_lease_expiry_timestamp_seconds{subnet="10.244.1.0/24"}')).toBe(false);
    expect([...bare.keys()].some((k) => k.startsWith('twill_peer_') || k.startsWith('twill_datapath_drops'))).toBe(false);
  });

  it('lists a watch state it does not know rather than hiding it', () => {
    const odd = samples(formatPrometheus(agentMetricFamilies({ ready: true, watch: { state: 'lost', resyncs: 0 } })));
    expect(odd.get('twill_etcd_watch_state{state="lost"}')).toBe('1');
    expect(odd.get('twill_etcd_watch_up')).toBe('0');
  });
});
