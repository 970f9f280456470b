import { existsSync, readFileSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopAgent } from '../../controller/lab/agents.js';
import { startLabEtcd, stopLabEtcd } from '../../controller/lab/etcd-cluster.js';
import { restartAgent } from '../../controller/lab/node-daemons.js';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { LAYOUT_VERSION } from '../../maps/layout.js';
import type { MapsDoc } from '../../controller/cli/maps.js';
import type { StatusDoc } from '../../controller/cli/status.js';
import { buildBpf, buildTs, cliPath } from '../support/build.js';
import { ping } from '../support/traffic.js';
import { labUpFresh, until } from '../support/lab-session.js';

/*
 * /metrics, `twill status` and `twill maps` against a real lab (lab name "tpm", one pod per
 * node; n1-n3 run BPF, n4 flannel's kernel VXLAN): counters must move with real traffic, for
 * the right peer only; the process and runtime metrics and build info sit beside them; status
 * and maps must keep working with the lab's etcd stopped.
 */
const LAB = 'tpm';
const UNDERLAY = '192.168.116.0/24';
const PREFIX = '/coreos.com/network';
const twill = (args: string[], netns?: string) => run([process.execPath, cliPath, ...args], { netns, allowFailure: true });
let lab: LabState;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const podOf = (n: LabNode) => lab.pods.find((p) => p.node === n.name)!;
const etcdctl = (...args: string[]) =>
  run(['etcdctl', '--endpoints', lab.etcd!.endpoint, '--command-timeout=5s', ...args], { netns: lab.etcd!.netns, env: { ...process.env, ETCDCTL_API: '3' } });

/** One scrape of a node's /metrics (from its own namespace unless `from` says another's), as text. */
async function scrapeText(n: LabNode, from: LabNode = n): Promise<string> {
  const res = await run(['curl', '-sfi', `http://${n.agent!.healthz}/metrics`], { netns: from.netns });
  const [head, body] = res.stdout.split('\r\n\r\n');
  expect(head).toMatch(/content-type: text\/plain; version=0\.0\.4/i);
  return body;
}
/** One scrape of a node's /metrics, as `name{labels}` -> value. */
async function scrape(n: LabNode, from: LabNode = n): Promise<Map<string, number>> {
  const body = await scrapeText(n, from);
  const samples = new Map<string, number>();
  for (const line of body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}
const peerSample = (metric: string, peer: LabNode) => `twill_peer_${metric}_total{peer="${peer.underlayIp}",subnet="${peer.subnet}"}`;

beforeAll(async () => {
  buildBpf();
  buildTs();
  lab = await labUpFresh(LAB, ['--nodes', '4', '--kernel-nodes', '1', '--pods-per-node', '1', '--underlay', UNDERLAY]);
}, 180_000);

afterAll(async () => {
  await twill(['lab', 'down', '--name', LAB]);
}, 120_000);

describe('/metrics', () => {
  it('counts pod traffic for the peer it went to and came from, and for no other', async () => {
    const [n1, n2, n3] = ['n1', 'n2', 'n3'].map((name) => node(name));
    const before = await scrape(n1);
    const size = 1000; // ICMP payload: each request/reply frame is 1042 bytes inside VXLAN
    expect((await ping(podOf(n1).netns, podOf(n2).ip, 5)).code).toBe(0);
    // -s is not in the shared helper; one big ping shows the byte counters follow frame sizes.
    expect((await run(['ping', '-c', '1', '-s', String(size), '-W', '2', podOf(n2).ip], { netns: podOf(n1).netns })).code).toBe(0);
    const after = await scrape(n1);
    const delta = (metric: string, peer: LabNode) => after.get(peerSample(metric, peer))! - before.get(peerSample(metric, peer))!;

    expect(delta('encap_packets', n2)).toBeGreaterThanOrEqual(6);
    expect(delta('decap_packets', n2)).toBeGreaterThanOrEqual(6);
    expect(delta('encap_bytes', n2)).toBeGreaterThanOrEqual(5 * 98 + (size + 42));
    expect(delta('decap_bytes', n2)).toBeGreaterThanOrEqual(5 * 98 + (size + 42));
    for (const m of ['encap_packets', 'encap_bytes', 'decap_packets', 'decap_bytes']) expect(delta(m, n3), `${m} for n3`).toBe(0);
    // The node totals moved at least as much as the one peer did.
    expect(after.get('twill_encap_packets_total')! - before.get('twill_encap_packets_total')!).toBeGreaterThanOrEqual(delta('encap_packets', n2));

    // The other side sees the same exchange the other way round.
    const onN2 = await scrape(n2);
    expect(onN2.get(peerSample('decap_packets', n1))).toBeGreaterThanOrEqual(6);
    expect(onN2.get(peerSample('encap_packets', n1))).toBeGreaterThanOrEqual(6);
  });

  it('reports the lease expiry, reconciles, the watch, and every drop reason', async () => {
    const m = await scrape(node('n1'));
    const expiry = m.get(`twill_lease_expiry_timestamp_seconds{subnet="${node('n1').subnet}"}`)!;
    expect(expiry).toBeGreaterThan(Date.now() / 1000);
    expect(m.get('twill_ready')).toBe(1);
    expect(m.get('twill_dataplane_info{mode="bpf"}')).toBe(1);
    expect(m.get('twill_reconciles_total')).toBeGreaterThanOrEqual(1);
    expect(m.get('twill_reconcile_errors_total')).toBe(0);
    expect(m.get('twill_reconcile_duration_seconds_count')).toBeGreaterThanOrEqual(m.get('twill_reconciles_total')!);
    expect(m.get('twill_etcd_watch_up')).toBe(1);
    expect(m.get('twill_etcd_watch_state{state="watching"}')).toBe(1);
    expect(m.get('twill_peers')).toBe(lab.nodes.length - 1);
    for (const reason of ['no_peer', 'unknown_source', 'bad_vni', 'malformed', 'inner_dst'])
      expect(m.has(`twill_datapath_drops_total{reason="${reason}"}`), reason).toBe(true);
  });

  it('counts drops summed over CPUs: traffic to a subnet nobody holds', async () => {
    const n1 = node('n1');
    const before = (await scrape(n1)).get('twill_datapath_drops_total{reason="no_peer"}')!;
    // Inside the cluster network, routed to the overlay device, but no lease covers it.
    const unleased = lab.network.replace(/\.0\.0\/16$/, '.250.9');
    expect((await ping(podOf(n1).netns, unleased, 3)).code).not.toBe(0);
    expect((await scrape(n1)).get('twill_datapath_drops_total{reason="no_peer"}')! - before).toBe(3);
  });

  it('adds a peer with zeroed counters when a lease appears, and drops it when the lease goes', async () => {
    const n1 = node('n1');
    const subnet = lab.network.replace(/\.0\.0\/16$/, '.200.0/24');
    const key = `${PREFIX}/subnets/${subnet.replace('/', '-')}`;
    const ghost = UNDERLAY.replace(/\.0\/24$/, '.200');
    await etcdctl(
      'put',
      key,
      JSON.stringify({ PublicIP: ghost, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0a:58:00:00:c8:00' } }),
    );
    try {
      const sample = `twill_peer_encap_packets_total{peer="${ghost}",subnet="${subnet}"}`;
      expect(await until('the new peer in /metrics', async () => (await scrape(n1)).get(sample) === 0)).toBe(true);
      const maps = JSON.parse((await twill(['maps', '--pin-dir', n1.pinDir, '--json'])).stdout) as MapsDoc;
      const slot = maps.peers.find((p) => p.publicIp === ghost)!.statsSlot;
      expect(slot).toBeGreaterThan(0);
      expect(maps.subnets.find((s) => s.subnet === subnet)!.statsSlot).toBe(slot);
      expect(new Set(maps.peers.map((p) => p.statsSlot)).size).toBe(maps.peers.length);
    } finally {
      await etcdctl('del', key);
    }
    await until('the peer gone from /metrics', async () => ![...(await scrape(n1)).keys()].some((k) => k.includes(ghost)));
    expect((await scrape(n1)).get('twill_peers')).toBe(lab.nodes.length - 1);
  });
});

describe("the agent process, beside twill's own metrics", () => {
  const families = (text: string) => [...text.matchAll(/^# TYPE (twill_\S+) (\S+)$/gm)].map(([, name, type]) => `${name} ${type}`).sort();

  it('reports its resident memory, CPU, open fds, heap, event-loop lag and build, from another node too', async () => {
    const n1 = node('n1');
    // Scraped from n2's namespace over the underlay, as a Prometheus elsewhere in the cluster would.
    const m = await scrape(n1, node('n2'));
    expect(m.get('process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(m.get('process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(m.get('process_open_fds')).toBeGreaterThan(0);
    expect(m.get('process_open_fds')).toBeLessThanOrEqual(m.get('process_max_fds')!);
    expect(m.get('nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    expect(m.get('nodejs_heap_size_used_bytes')).toBeLessThanOrEqual(m.get('nodejs_heap_size_total_bytes')!);
    expect(m.has('nodejs_eventloop_lag_seconds')).toBe(true);
    expect(m.get('nodejs_eventloop_lag_p99_seconds')).toBeGreaterThan(0);
    const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    expect(m.get(`twill_build_info{version="${version}",map_layout="${LAYOUT_VERSION}"}`)).toBe(1);
  });

  it('serves a BPF node every family 15aa35c served, with its type, and the families added since beside them', async () => {
    const before = readFileSync(new URL('../fixtures/metrics/agent-15aa35c.prom', import.meta.url), 'utf8');
    const added = ['twill_build_info gauge', 'twill_subnet_manager_info gauge', 'twill_peer_source_drops_total counter', 'twill_forward_foreign_rules gauge'];
    expect(families(await scrapeText(node('n1')))).toEqual([...families(before), ...added].sort());
  });
});

describe('--metrics-per-peer=false', () => {
  const n3 = () => node('n3');
  const restart = async (args: string[]) => {
    await stopAgent(n3().agent!.pid, n3().pinDir);
    restartAgent(lab, n3(), args);
    await until(
      'n3 ready again',
      async () => (await run(['curl', '-sf', `http://${n3().agent!.healthz}/readyz`], { netns: n3().netns, allowFailure: true })).code === 0,
    );
  };
  afterAll(() => restart([]), 60_000);

  it('leaves out every per-peer series and keeps the node totals, which still count', async () => {
    await restart(['--metrics-per-peer=false']);
    const before = await scrapeText(n3());
    expect(before).not.toMatch(/^# TYPE twill_peer_/m);
    expect(before).not.toMatch(/^twill_peer_/m);
    const m = await scrape(n3());
    expect(m.get('twill_peers')).toBe(lab.nodes.length - 1);
    expect((await ping(podOf(n3()).netns, podOf(node('n1')).ip, 3)).code).toBe(0);
    const after = await scrape(n3());
    expect(after.get('twill_encap_packets_total')! - m.get('twill_encap_packets_total')!).toBeGreaterThanOrEqual(3);
    expect(after.get('twill_decap_packets_total')! - m.get('twill_decap_packets_total')!).toBeGreaterThanOrEqual(3);
    // The counters are still kept in the datapath: only /metrics leaves them out.
    const maps = JSON.parse((await twill(['maps', '--pin-dir', n3().pinDir, '--json'])).stdout) as MapsDoc;
    expect(maps.traffic.find((t) => t.publicIp === node('n1').underlayIp)!.encap_packets).toBeGreaterThanOrEqual(3);
  }, 60_000);
});

describe('a kernel VXLAN node', () => {
  it('is counted as a peer by a BPF node, and reports its own metrics without BPF counters', async () => {
    const [n1, n4] = [node('n1'), node('n4')];
    expect(n4.dataplane).toBe('kernel');
    const before = (await scrape(n1)).get(peerSample('decap_packets', n4))!;
    expect((await ping(podOf(n1).netns, podOf(n4).ip, 3)).code).toBe(0);
    expect((await scrape(n1)).get(peerSample('decap_packets', n4))! - before).toBeGreaterThanOrEqual(3);

    const own = await scrape(n4);
    expect(own.get('twill_dataplane_info{mode="kernel"}')).toBe(1);
    expect(own.get('twill_ready')).toBe(1);
    expect([...own.keys()].some((k) => k.startsWith('twill_peer_') || k.startsWith('twill_datapath_drops_total'))).toBe(false);

    const res = await twill(['status', '--pin-dir', n4.pinDir, '--subnet-file', n4.subnetFile, '--healthz', n4.agent!.healthz, '--json'], n4.netns);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({ bpf: false, lease: { subnet: n4.subnet }, peers: [], problems: [] });
  });
});

describe('upgrade from a build without per-peer counters', () => {
  it('the agent starts on pins that lack twill_peer_stats, creates it, and counts', async () => {
    const n2 = node('n2');
    await stopAgent(n2.agent!.pid, n2.pinDir);
    rmSync(`${n2.pinDir}/twill_peer_stats`);
    restartAgent(lab, n2);
    await until(
      'n2 ready again',
      async () => (await run(['curl', '-sf', `http://${n2.agent!.healthz}/readyz`], { netns: n2.netns, allowFailure: true })).code === 0,
    );
    expect(existsSync(`${n2.pinDir}/twill_peer_stats`)).toBe(true);
    expect((await ping(podOf(n2).netns, podOf(node('n1')).ip, 2)).code).toBe(0);
    expect((await scrape(n2)).get(peerSample('encap_packets', node('n1')))).toBeGreaterThanOrEqual(2);
  }, 60_000);
});

describe('twill status and twill maps without etcd', () => {
  beforeAll(async () => {
    expect((await ping(podOf(node('n1')).netns, podOf(node('n3')).ip, 2)).code).toBe(0);
    await stopLabEtcd(lab);
  }, 60_000);
  afterAll(async () => {
    await startLabEtcd(lab);
  }, 60_000);

  it('twill status: own lease, network, peers with counters, attach points, pins, health', async () => {
    const n1 = node('n1');
    const res = await twill(['status', '--pin-dir', n1.pinDir, '--subnet-file', n1.subnetFile, '--healthz', n1.agent!.healthz, '--json'], n1.netns);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const s = JSON.parse(res.stdout) as StatusDoc;
    expect(s.lease.subnet).toBe(n1.subnet);
    expect(Date.parse(s.lease.expiresAt!)).toBeGreaterThan(Date.now());
    expect(s.node).toMatchObject({ public_ip: n1.underlayIp, vtep_mac: n1.vtepMac, vni: 1, vxlan_port: 8472 });
    expect(s.subnetFile).toMatchObject({ subnet: n1.subnet, network: lab.network, mtu: 1450 });
    const others = lab.nodes.filter((n) => n !== n1);
    expect(s.peers.map((p) => [p.publicIp, p.subnet, p.vtepMac]).sort()).toEqual(others.map((n) => [n.underlayIp, n.subnet, n.vtepMac]).sort());
    const n3 = s.peers.find((p) => p.publicIp === node('n3').underlayIp)!;
    expect(n3.encap_packets).toBeGreaterThanOrEqual(2);
    expect(n3.decap_packets).toBeGreaterThanOrEqual(2);
    expect(s.attach?.encap).toMatchObject({ iface: 'twill0' });
    expect(s.attach?.decap).toMatchObject({ iface: 'eth0' });
    const pins = s.pinned.map((o) => `${o.path.slice(n1.pinDir.length + 1)} ${o.kind}`);
    for (const p of ['twill_config map', 'twill_subnets map', 'twill_peers map', 'twill_stats map', 'twill_peer_stats map']) expect(pins).toContain(p);
    // This kernel has tcx, and auto decaps in tc on a veth underlay: both hooks are pinned tcx links.
    expect([s.attach?.encap.mode, s.attach?.decap.mode]).toEqual(['tcx', 'tcx']);
    expect(pins).toEqual(expect.arrayContaining(['links/encap link', 'links/decap link']));
    expect(s.health).toMatchObject({ live: true });
    expect(s.drops.drop_no_peer).toBeGreaterThanOrEqual(3);
    // With etcd gone the agent keeps forwarding; whatever it reports is listed, and nothing else is wrong.
    expect(s.problems.filter((p) => !p.startsWith('agent not ready'))).toEqual([]);

    const text = await twill(['status', '--pin-dir', n1.pinDir, '--subnet-file', n1.subnetFile]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`lease      ${n1.subnet}`);
    expect(text.stdout).toMatch(
      new RegExp(`${node('n3').underlayIp.replace(/\./g, '\\.')} +${node('n3').subnet.replace(/\./g, '\\.')} +${node('n3').vtepMac} +out \\d+ pkts`),
    );
  });

  it('twill maps: every map decoded, subnets as CIDRs, MACs as MACs, per-peer counters', async () => {
    const n1 = node('n1');
    const res = await twill(['maps', '--pin-dir', n1.pinDir, '--json']);
    expect(res.code).toBe(0);
    const m = JSON.parse(res.stdout) as MapsDoc;
    expect(m.subnets.map((s) => s.subnet).sort()).toEqual(
      lab.nodes
        .filter((n) => n !== n1)
        .map((n) => n.subnet)
        .sort(),
    );
    for (const e of [...m.subnets, ...m.peers]) {
      expect(e.vtepMac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      expect(e.subnet).toMatch(/^\d+\.\d+\.\d+\.\d+\/\d+$/);
    }
    expect(m.config?.vtep_mac).toBe(n1.vtepMac);
    expect(m.traffic.map((t) => t.publicIp).sort()).toEqual(m.peers.map((p) => p.publicIp).sort());
    expect(m.traffic.find((t) => t.publicIp === node('n3').underlayIp)!.encap_packets).toBeGreaterThanOrEqual(2);
    expect(m.stats.encap_packets).toBeGreaterThan(0);

    const text = await twill(['maps', '--pin-dir', n1.pinDir]);
    expect(text.stdout).toContain(`twill_peer_stats (${lab.nodes.length - 1} slots in use)`);
  });

  it('names the directory when nothing is pinned there, and changes nothing', async () => {
    const res = await twill(['status', '--pin-dir', '/sys/fs/bpf/tm-nothing-here', '--subnet-file', '/run/tm-nothing-here/subnet.env']);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/no twill datapath is pinned under \/sys\/fs\/bpf\/tm-nothing-here/);
    expect(existsSync('/sys/fs/bpf/tm-nothing-here')).toBe(false);
    // With the subnet file there is still a lease to show, and the missing datapath is a problem.
    const partial = await twill(['status', '--pin-dir', '/sys/fs/bpf/tm-nothing-here', '--subnet-file', node('n1').subnetFile, '--json']);
    expect(partial.code).toBe(0);
    const s = JSON.parse(partial.stdout) as StatusDoc;
    expect(s).toMatchObject({ bpf: false, lease: { subnet: node('n1').subnet }, peers: [] });
    expect(s.problems).toEqual(['no BPF datapath is pinned under /sys/fs/bpf/tm-nothing-here (a kernel VXLAN node, or a wrong --pin-dir)']);
  });
});
