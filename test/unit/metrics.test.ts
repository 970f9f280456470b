import { describe, expect, it } from 'vitest';
import { agentMetricFamilies, type AgentSnapshot, type MetricFamily } from '../../controller/metrics/agent-metrics.js';
import { AgentRegistry, familiesRegistry, processRegistry } from '../../controller/metrics/registry.js';
import { fullSnapshot } from '../support/agent-snapshot.js';

const build = { version: '9.8.7', mapLayout: 4 };
const options = { build, eventLoopResolutionMs: 100 };

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
const render = (families: readonly MetricFamily[]) => familiesRegistry(families).metrics();
const agentText = (s: AgentSnapshot, perPeer = true) => render(agentMetricFamilies(s, { perPeer }));

describe("twill's families in prom-client", () => {
  it('writes HELP, TYPE and samples with labels in the order given', async () => {
    const text = await render([
      { name: 'x_total', help: 'Things.', type: 'counter', labelNames: ['peer', 'dir'], samples: [{ labels: { peer: '10.0.0.2', dir: 'in' }, value: 5n }] },
      { name: 'y', help: 'A gauge.', type: 'gauge', labelNames: [], samples: [{ value: 0.25 }] },
    ]);
    expect(text).toBe('# HELP x_total Things.\n# TYPE x_total counter\nx_total{peer="10.0.0.2",dir="in"} 5\n\n# HELP y A gauge.\n# TYPE y gauge\ny 0.25\n');
  });

  it('escapes label values and help text', async () => {
    const text = await render([
      { name: 'e', help: 'back\\slash\nnewline', type: 'gauge', labelNames: ['l'], samples: [{ labels: { l: 'a"b\\c\nd' }, value: 1 }] },
    ]);
    expect(text).toContain('# HELP e back\\\\slash\\nnewline\n');
    expect(text).toContain('e{l="a\\"b\\\\c\\nd"} 1\n');
  });

  it('writes a summary as _sum and _count from the totals given, without quantiles', async () => {
    const text = await render([
      {
        name: 'd_seconds',
        help: 'h',
        type: 'summary',
        labelNames: [],
        samples: [
          { suffix: '_sum', value: 1.5 },
          { suffix: '_count', value: 3 },
        ],
      },
    ]);
    expect(text).toBe('# HELP d_seconds h\n# TYPE d_seconds summary\nd_seconds_sum 1.5\nd_seconds_count 3\n');
    await expect(render([{ name: 's', help: 'h', type: 'summary', labelNames: [], samples: [{ value: 1 }] }])).rejects.toThrow(
      /summary s: a sample without _sum or _count/,
    );
  });

  it('shows no series for a labelled family without samples', async () => {
    expect(await render([{ name: 'p_total', help: 'h', type: 'counter', labelNames: ['peer'], samples: [] }])).toBe(
      '# HELP p_total h\n# TYPE p_total counter\n',
    );
  });

  it('refuses an invalid name, an undeclared label, a duplicate family', () => {
    expect(() => familiesRegistry([{ name: 'bad-name', help: 'h', type: 'gauge', labelNames: [], samples: [] }])).toThrow(/Invalid metric name/);
    expect(() => familiesRegistry([{ name: 'g', help: 'h', type: 'gauge', labelNames: ['a-b'], samples: [] }])).toThrow(/Invalid label name/);
    expect(() => familiesRegistry([{ name: 'g', help: 'h', type: 'gauge', labelNames: ['a'], samples: [{ labels: { b: 'x' }, value: 1 }] }])).toThrow(/b/);
    const g: MetricFamily = { name: 'g', help: 'h', type: 'gauge', labelNames: [], samples: [{ value: 1 }] };
    expect(() => familiesRegistry([g, g])).toThrow(/already been registered/);
  });
});

describe('agent metrics', () => {
  it('reports per-peer traffic labelled by PublicIP and subnet, and traffic of entries without a slot', async () => {
    const s = samples(await agentText(fullSnapshot));
    expect(s.get('twill_peer_encap_packets_total{peer="192.168.77.2",subnet="10.244.2.0/24"}')).toBe('6');
    expect(s.get('twill_peer_encap_bytes_total{peer="192.168.77.2",subnet="10.244.2.0/24"}')).toBe('600');
    expect(s.get('twill_peer_decap_packets_total{peer="192.168.77.2",subnet="10.244.2.0/24"}')).toBe('5');
    expect(s.get('twill_peer_decap_bytes_total{peer="192.168.77.2",subnet="10.244.2.0/24"}')).toBe('500');
    expect(s.get('twill_peer_encap_packets_total{peer="192.168.77.3",subnet="10.244.3.0/24"}')).toBe('4');
    expect(s.get('twill_peer_decap_packets_total{peer="unattributed",subnet=""}')).toBe('9');
    expect(s.has('twill_peer_encap_packets_total{peer="unattributed",subnet=""}')).toBe(false);
    expect(s.get('twill_peers')).toBe('2');
  });

  it('with per-peer series off, keeps the node totals and the peer count and no series names a peer', async () => {
    const text = await agentText(fullSnapshot, false);
    const s = samples(text);
    expect(text).not.toContain('twill_peer_');
    expect([...s.keys()].filter((k) => k.includes('192.168.77.'))).toEqual([]);
    expect(s.get('twill_peers')).toBe('2');
    expect(s.get('twill_encap_packets_total')).toBe('100');
    expect(s.get('twill_decap_bytes_total')).toBe('103');
    const on = samples(await agentText(fullSnapshot, true));
    expect(on.size - s.size).toBe(5 * 2 + 2); // 5 counters for each of 2 peers, and 2 unattributed
  });

  it('reports every drop reason, without the drop_ prefix', async () => {
    const s = samples(await agentText(fullSnapshot));
    expect(s.get('twill_datapath_drops_total{reason="no_peer"}')).toBe('104');
    expect(s.get('twill_datapath_drops_total{reason="bad_vni"}')).toBe('109');
    expect(s.get('twill_datapath_drops_total{reason="inner_not_ipv6"}')).toBe('115');
    // 15 counters, and not_ipv4 (deprecated since layout 8) as the sum of the two it was split into.
    expect([...s.keys()].filter((k) => k.startsWith('twill_datapath_drops_total'))).toHaveLength(16);
    expect(['not_ip', 'ipv6_off', 'not_ipv4'].map((r) => s.get(`twill_datapath_drops_total{reason="${r}"}`))).toEqual(['60', '45', '105']);
  });

  it('reports the lease expiry in seconds, reconciles and the watch state', async () => {
    const s = samples(await agentText(fullSnapshot));
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

  it('leaves out what a node does not have', async () => {
    const bare = samples(await agentText({ ready: false, mode: 'kernel', lease: { subnet: '10.244.1.0/24', reservation: true } }));
    expect(bare.get('twill_ready')).toBe('0');
    expect(bare.has('twill_lease_expiry_timestamp_seconds{subnet="10.244.1.0/24"}')).toBe(false);
    expect([...bare.keys()].filter((k) => !['twill_ready', 'twill_dataplane_info', 'twill_lease_info'].includes(k.replace(/\{.*/, '')))).toEqual([]);
  });

  it('says which subnet manager is in use and whether its watch is up: the Kubernetes Node watch has families of its own', async () => {
    const kube = samples(await agentText({ ready: true, watch: { state: 'backoff', resyncs: 3, kind: 'kube', ignoredNodes: 2, relists: 1 } }));
    expect(kube.get('twill_subnet_manager_info{kind="kube"}')).toBe('1');
    expect(kube.get('twill_kube_watch_up')).toBe('0');
    expect(kube.get('twill_kube_watch_state{state="backoff"}')).toBe('1');
    expect(kube.get('twill_kube_watch_resyncs_total')).toBe('3');
    expect(kube.get('twill_kube_nodes_ignored_total')).toBe('2');
    expect(kube.get('twill_kube_watch_relists_total')).toBe('1');
    expect([...kube.keys()].some((k) => k.startsWith('twill_etcd_'))).toBe(false);
    expect(samples(await agentText(fullSnapshot)).get('twill_subnet_manager_info{kind="etcd"}')).toBe('1');
  });

  it('lists a watch state it does not know rather than hiding it', async () => {
    const odd = samples(await agentText({ ready: true, watch: { state: 'lost', resyncs: 0 } }));
    expect(odd.get('twill_etcd_watch_state{state="lost"}')).toBe('1');
    expect(odd.get('twill_etcd_watch_up')).toBe('0');
  });
});

describe('the process registry', () => {
  it("has twill_build_info and prom-client's process and runtime metrics, read from this process", async () => {
    const s = samples(await processRegistry(options).metrics());
    expect(s.get('twill_build_info{version="9.8.7",map_layout="4"}')).toBe('1');
    expect(Number(s.get('process_resident_memory_bytes'))).toBeGreaterThan(0);
    expect(Number(s.get('process_open_fds'))).toBeGreaterThan(0);
    expect(Number(s.get('process_cpu_seconds_total'))).toBeGreaterThan(0);
    expect(Number(s.get('nodejs_heap_size_used_bytes'))).toBeGreaterThan(0);
    expect(s.has('nodejs_eventloop_lag_seconds')).toBe(true);
    expect(
      s.get(
        `nodejs_version_info{version="${process.version}",major="${process.versions.node.split('.')[0]}",minor="${process.versions.node.split('.')[1]}",patch="${process.versions.node.split('.')[2]}"}`,
      ),
    ).toBe('1');
  });

  it("serves twill's families first, read anew at every scrape, then the process's", async () => {
    let ready = false;
    const registry = new AgentRegistry(() => agentMetricFamilies({ ready }, { perPeer: true }), options);
    expect(registry.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    const first = await registry.text();
    expect(first.startsWith('# HELP twill_ready ')).toBe(true);
    expect(samples(first).get('twill_ready')).toBe('0');
    ready = true;
    const second = samples(await registry.text());
    expect(second.get('twill_ready')).toBe('1');
    expect(second.has('process_resident_memory_bytes')).toBe(true);
  });
});
