import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopAgent } from '../../controller/lab/agents.js';
import { endpointsDirFor, readEndpointRecord } from '../../controller/endpoints/records.js';
import { addLabPod, removeLabPod } from '../../controller/lab/pods.js';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { applyServices } from '../../controller/lab/services.js';
import { run } from '../../controller/util/exec.js';
import { bpfBuildDir, buildBpf, buildTs, repoRoot } from '../support/build.js';
import { bounceAgent, labUpFresh, readMaps, twill, until } from '../support/lab-session.js';
import { startInNetns, stopAll } from '../support/proc.js';
import { stackSaw as stackSawBetween } from '../support/stack-watch.js';
import { ping, tcpTransfer, udpProbe } from '../support/traffic.js';

/*
 * The fast path on the real kernel, with real CNI pods, real iptables (flannel's FORWARD accepts,
 * kube-proxy's Service NAT) and real conntrack: what bypasses the stack provably does, what must
 * not bypass it does not, and pods coming and going keep it right. Lab "twf": n1 and n2 run
 * twill's BPF datapath, n3 flannel's kernel VXLAN; one pod each.
 */
const LAB = 'twf';
let lab: LabState;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const pod = (name: string) => lab.pods.find((p) => p.name === name)!;
const nameServer = path.join(repoRoot, 'test/support/name-server.py');
const CLUSTER_IP = '10.96.0.20';

beforeAll(async () => {
  buildBpf();
  buildTs();
  lab = await labUpFresh(LAB, ['--nodes', '3', '--kernel-nodes', '1', '--pods-per-node', '1', '--underlay', '192.168.85.0/24']);
}, 240_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
}, 120_000);

/** What n1's and n2's stacks saw of the traffic between the two test pods. */
const stackSaw = <T>(nodes: LabNode[], traffic: () => Promise<T>) => stackSawBetween(nodes, [pod('n1-p1').ip, pod('n2-p1').ip], traffic);

const paths = async (n: LabNode) => (await readMaps(n)).path!;

/** Ping (both ways), a TCP transfer and a UDP datagram between the pods of n1 and n2; the packets the pings alone sent. */
async function podTraffic(): Promise<number> {
  const count = 100;
  for (const [a, b] of [
    ['n1-p1', 'n2-p1'],
    ['n2-p1', 'n1-p1'],
  ]) {
    const res = await run(['ping', '-c', String(count), '-i', '0.005', '-W', '1', pod(b).ip], { netns: pod(a).netns, allowFailure: true });
    expect(res.stdout).toMatch(new RegExp(`${count} received`));
  }
  const t = await tcpTransfer(pod('n1-p1'), pod('n2-p1'), 256 * 1024);
  expect(t.received).toBe(t.sent);
  expect(await udpProbe(pod('n2-p1'), pod('n1-p1'))).toBe(true);
  return 2 * count;
}

/** The pod bridge's headroom port (dataplane/headroom.ts), and the bridge itself, as `ip` shows them; undefined where absent. */
const headroomPort = async (n: LabNode) => {
  const show = async (dev: string) =>
    (JSON.parse((await run(['ip', '-n', n.netns, '-d', '-j', 'link', 'show', dev], { allowFailure: true })).stdout || '[]') as Record<string, unknown>[])[0];
  return { port: await show('twill-hr'), bridge: await show('cni0') };
};

describe('pod traffic between BPF nodes bypasses the host stack', () => {
  it("each pod bridge has a headroom port, a vxlan device never brought up, so the bridge gives the pods' veths IPv6 VXLAN's headroom; it lowers no MTU", async () => {
    for (const n of [node('n1'), node('n2')]) {
      const { port, bridge } = await headroomPort(n);
      expect(port, n.name).toMatchObject({ master: 'cni0', operstate: 'DOWN', mtu: 65535, linkinfo: { info_kind: 'vxlan', info_data: { local6: '::1' } } });
      expect(bridge?.mtu, n.name).toBe(1450);
    }
    // The kernel-VXLAN node (flannel's datapath, twill's --dataplane kernel) has no fast path, and no headroom port.
    expect((await headroomPort(node('n3'))).port).toBeUndefined();
  });

  it('ping, TCP and UDP move the fast-path counters, and no IPv4 packet crosses cni0 or FORWARD on either node', async () => {
    const nodes = [node('n1'), node('n2')];
    const fastBefore = await Promise.all(nodes.map(paths));
    const seen = await stackSaw(nodes, podTraffic);
    const fastAfter = await Promise.all(nodes.map(paths));
    for (const i of [0, 1]) {
      // Each ping request and reply is sent by one node's pod and delivered into the other's.
      expect(fastAfter[i].send.fast - fastBefore[i].send.fast).toBeGreaterThanOrEqual(seen.result / 2);
      expect(fastAfter[i].receive.fast - fastBefore[i].receive.fast).toBeGreaterThanOrEqual(seen.result / 2);
    }
    expect(seen.forward).toEqual([0, 0]);
    expect(seen.cni0Ipv4).toEqual([[], []]);
  });

  it('the control: with --fast-path=false the same traffic crosses cni0 and FORWARD on both nodes', async () => {
    for (const n of [node('n1'), node('n2')]) await bounceAgent(lab, n, 'SIGTERM', ['--fast-path=false']);
    try {
      const fastBefore = await paths(node('n1'));
      const seen = await stackSaw([node('n1'), node('n2')], podTraffic);
      for (const i of [0, 1]) {
        expect(seen.forward[i]).toBeGreaterThanOrEqual(seen.result);
        expect(seen.cni0Ipv4[i].length).toBeGreaterThanOrEqual(seen.result);
      }
      const fastAfter = await paths(node('n1'));
      expect(fastAfter.send.fast - fastBefore.send.fast).toBe(0);
      expect(fastAfter.receive.disabled - fastBefore.receive.disabled).toBeGreaterThanOrEqual(seen.result / 2);
      // The pods' veths keep their program for the pod source check (--pod-source-check drop),
      // which hands everything else to the stack (counted above); no headroom is asked for.
      expect(readdirSync(`${node('n1').pinDir}/links/pods`)).toHaveLength(1);
      expect((await headroomPort(node('n1'))).port).toBeUndefined();
    } finally {
      for (const n of [node('n1'), node('n2')]) await bounceAgent(lab, n, 'SIGTERM', ['--fast-path=true']);
    }
    expect(readdirSync(`${node('n1').pinDir}/links/pods`)).toHaveLength(1);
    expect((await headroomPort(node('n1'))).port).toMatchObject({ master: 'cni0' });
  });

  it('TTL is decremented once per node as routing does; at TTL 1 the node answers time exceeded', async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    const ok = await run(['ping', '-c', '1', '-W', '2', pod('n2-p1').ip], { netns: pod('n1-p1').netns, allowFailure: true });
    expect(ok.stdout).toMatch(/ttl=62/); // 64, less one hop on each node, as on the stack path
    const before = [await paths(n1), await paths(n2)];
    const atSender = await run(['ping', '-c', '1', '-W', '2', '-t', '1', pod('n2-p1').ip], { netns: pod('n1-p1').netns, allowFailure: true });
    expect(atSender.stdout).toMatch(/Time to live exceeded/);
    const atReceiver = await run(['ping', '-c', '1', '-W', '2', '-t', '2', pod('n2-p1').ip], { netns: pod('n1-p1').netns, allowFailure: true });
    expect(atReceiver.stdout).toMatch(/Time to live exceeded/);
    const after = [await paths(n1), await paths(n2)];
    expect(after[0].send.ttl - before[0].send.ttl).toBe(1);
    expect(after[1].receive.ttl - before[1].receive.ttl).toBe(1);
  });

  it('what the fast path leaves to the stack is counted by reason, and still arrives through the stack', async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    const [a, b] = [pod('n1-p1'), pod('n2-p1')];
    const before = [await paths(n1), await paths(n2)];
    const spoofDropsBefore = (await readMaps(n1)).stats.drop_pod_source;
    // Fragments: 3000 bytes on a 1450-byte pod link, both ways.
    expect((await run(['ping', '-c', '2', '-W', '2', '-s', '3000', b.ip], { netns: a.netns, allowFailure: true })).stdout).toMatch(/2 received/);
    // IP options (record route), both ways.
    expect((await run(['ping', '-c', '1', '-W', '2', '-R', b.ip], { netns: a.netns, allowFailure: true })).stdout).toMatch(/1 received/);
    // An ICMP error: n2's pod answers a datagram to a closed port with "port unreachable".
    const refused = `import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("${b.ip}", 9)); s.settimeout(2); s.send(b"x")\ntry:\n  s.recv(10)\nexcept ConnectionRefusedError:\n  print("refused")`;
    expect((await run(['/usr/bin/python3', '-c', refused], { netns: a.netns })).stdout).toContain('refused');
    // A source address that is not the pod's own (dropped at its veth: anti-spoofing.test.ts), and ARP for the gateway.
    const spoof = `from scapy.all import IP, UDP, send, conf; conf.verb = 0; send(IP(src="${a.ip.replace(/\d+$/, '200')}", dst="${b.ip}") / UDP(dport=9999))`;
    await run(['/usr/bin/python3', '-c', spoof], { netns: a.netns });
    await run(['ip', 'neigh', 'flush', 'dev', 'eth0'], { netns: a.netns });
    await ping(a.netns, b.ip);
    // IPv6 from a pod on a node without IPv6 (a link-local source passes the source check).
    const ipv6 = `from scapy.all import Ether, IPv6, UDP, sendp, conf; conf.verb = 0; sendp(Ether()/IPv6(src="fe80::1", dst="fd00::1")/UDP(dport=9999), iface="eth0")`;
    await run(['/usr/bin/python3', '-c', ipv6], { netns: a.netns });
    // Plain IPv4 to a pod from the underlay (not VXLAN): the underlay gateway routes the cluster network via n1.
    await run(['ip', 'route', 'replace', n1.subnet, 'via', n1.underlayIp], { netns: lab.underlay.netns });
    try {
      expect((await ping(lab.underlay.netns, a.ip)).code).toBe(0);
    } finally {
      await run(['ip', 'route', 'del', n1.subnet], { netns: lab.underlay.netns });
    }
    const after = [await paths(n1), await paths(n2)];
    const d = (i: number, dir: 'send' | 'receive', reason: string) => after[i][dir][reason] - before[i][dir][reason];
    const spoofDrops = (await readMaps(n1)).stats.drop_pod_source - spoofDropsBefore;
    expect({
      sentFragments: d(0, 'send', 'fragment') >= 7, // 2 x 3 fragments, and the options
      receivedFragments: d(1, 'receive', 'fragment') >= 7,
      icmpErrorSent: d(1, 'send', 'protocol') >= 1,
      icmpErrorReceived: d(0, 'receive', 'protocol') >= 1,
      spoofedSourceDropped: spoofDrops >= 1,
      arp: d(0, 'send', 'not_ip') >= 1,
      ipv6WithoutIpv6: d(0, 'send', 'ipv6_off') >= 1,
      deprecatedNotIpv4IsTheirSum: d(0, 'send', 'not_ipv4') === d(0, 'send', 'not_ip') + d(0, 'send', 'ipv6_off'),
      plainFromUnderlay: d(0, 'receive', 'source') >= 1,
    }).toEqual({
      sentFragments: true,
      receivedFragments: true,
      icmpErrorSent: true,
      icmpErrorReceived: true,
      spoofedSourceDropped: true,
      arp: true,
      ipv6WithoutIpv6: true,
      deprecatedNotIpv4IsTheirSum: true,
      plainFromUnderlay: true,
    });
  });

  it('what the overlay device is given that VXLAN cannot carry is dropped under its own counter: ARP as not_ip, IPv6 on a node without IPv6 as ipv6_off', async () => {
    const n1 = node('n1');
    const before = (await readMaps(n1)).stats;
    // A raw socket: the program's verdict (shot) comes back as an error for each frame, which scapy would stop at.
    const frames = [
      'import socket',
      'from scapy.all import ARP, Ether, IPv6, UDP',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("twill0", 0))',
      'eth = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")',
      'for f in [eth / ARP(pdst="10.244.250.1")] * 2 + [eth / IPv6(src="fd00::2", dst="fd00::1") / UDP(dport=9999)] * 3:',
      '    try: s.send(bytes(f))',
      '    except OSError: pass',
    ].join('\n');
    await run(['/usr/bin/python3', '-c', frames], { netns: n1.netns });
    const after = (await readMaps(n1)).stats;
    const d = (k: keyof typeof after) => after[k] - before[k];
    // drop_not_ipv4, the deprecated name, is their sum.
    expect({ not_ip: d('drop_not_ip'), ipv6_off: d('drop_ipv6_off'), not_ipv4: d('drop_not_ipv4') }).toEqual({ not_ip: 2, ipv6_off: 3, not_ipv4: 5 });
  });

  it('kernel VXLAN peers are served both ways: sent to and received from flannel.1 on the fast path', async () => {
    const n1 = node('n1');
    const before = await paths(n1);
    const res = await run(['ping', '-c', '20', '-i', '0.01', '-W', '1', pod('n3-p1').ip], { netns: pod('n1-p1').netns, allowFailure: true });
    expect(res.stdout).toMatch(/20 received/);
    const t = await tcpTransfer(pod('n3-p1'), pod('n1-p1'), 256 * 1024);
    expect(t.received).toBe(t.sent);
    const after = await paths(n1);
    expect(after.send.fast - before.send.fast).toBeGreaterThanOrEqual(20);
    expect(after.receive.fast - before.receive.fast).toBeGreaterThanOrEqual(20);
  });

  it("a kernel peer's fragmented VXLAN (flannel.1 does not set DF) is reassembled, decapped on twill-rx and delivered", async () => {
    const [n1, n3] = [node('n1'), node('n3')];
    // A 1400-byte path MTU from n3 to n1: flannel.1 then fragments its 1478-byte VXLAN packets.
    await run(['ip', 'route', 'add', `${n1.underlayIp}/32`, 'dev', 'eth0', 'mtu', 'lock', '1400'], { netns: n3.netns });
    try {
      const before = await paths(n1);
      const res = await run(['ping', '-c', '3', '-i', '0.2', '-W', '2', '-s', '1400', pod('n1-p1').ip], { netns: pod('n3-p1').netns, allowFailure: true });
      expect(res.stdout).toMatch(/3 received/);
      expect((await paths(n1)).receive.fragment - before.receive.fragment).toBeGreaterThanOrEqual(3); // twill_tunnel_rx, once per reassembled packet
    } finally {
      await run(['ip', 'route', 'del', `${n1.underlayIp}/32`], { netns: n3.netns });
    }
  });

  it('twill status names the path per hook, and /metrics counts both paths', async () => {
    const n1 = node('n1');
    const status = JSON.parse((await twill(['status', '--pin-dir', n1.pinDir, '--subnet-file', n1.subnetFile, '--json'])).stdout);
    expect(status.fastPath).toMatchObject({ enabled: true, conntrack: true, endpoints: [{ ip: pod('n1-p1').ip }] });
    expect(status.fastPath.hooks.send).toMatch(/^fast path at the pod veths/);
    expect(status.fastPath.hooks.receive).toMatch(/straight into local pods/);
    expect(status.problems).toEqual([]);
    const metrics = (await run(['curl', '-s', `http://${n1.agent!.healthz}/metrics`], { netns: n1.netns })).stdout;
    expect(Number(/^twill_fast_path_packets_total\{direction="send"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0);
    expect(metrics).toMatch(/^twill_stack_path_packets_total\{direction="receive",reason="conntrack"\} \d+$/m);
    expect(metrics).toMatch(/^twill_endpoints 1$/m);
    expect(metrics).toMatch(/^twill_fast_path_enabled 1$/m);
  });
});

describe('flows conntrack knows stay on the stack in both directions', () => {
  beforeAll(async () => {
    // kube-proxy's iptables rules on every node: a ClusterIP whose one endpoint is n2's pod.
    await startInNetns(pod('n2-p1').netns, ['/usr/bin/python3', nameServer, 'n2-p1', '8080']).waitFor(/listening/);
    await applyServices(lab, [{ name: 'default/echo', clusterIp: CLUSTER_IP, port: 80, targetPort: 8080, endpoints: [pod('n2-p1').ip] }]);
  });

  /** "<server> <client address it saw>", or FAILED: the reply must come back from the ClusterIP. */
  async function askClusterIp(): Promise<string> {
    const py = `import socket; s=socket.create_connection(("${CLUSTER_IP}", 80), timeout=3); print(s.recv(200).decode().strip())`;
    const res = await run(['/usr/bin/python3', '-c', py], { netns: pod('n1-p1').netns, allowFailure: true });
    return res.code === 0 ? res.stdout.trim() : 'FAILED';
  }

  it('a ClusterIP flow to a pod on another node: DNATed on the way out, its replies un-NATed on the way back', async () => {
    const n1 = node('n1');
    const before = await paths(n1);
    for (let i = 0; i < 3; i++) expect(await askClusterIp()).toBe(`n2-p1 ${pod('n1-p1').ip}`);
    const after = await paths(n1);
    expect(after.send.not_remote - before.send.not_remote).toBeGreaterThan(0); // to the ClusterIP: the stack's
    expect(after.receive.conntrack - before.receive.conntrack).toBeGreaterThan(0); // the replies: conntrack's
  });

  it('the negative control: programs built without the conntrack check deliver the replies straight to the pod, and the flow breaks', async () => {
    // The builds for kernels without conntrack, loaded here under the usual names: the agent takes them for the real ones.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'twf-noct-'));
    const files = readdirSync(bpfBuildDir);
    for (const f of files)
      if (f.includes('-noct') || !files.includes(f.replace('.bpf.o', '-noct.bpf.o')))
        copyFileSync(path.join(bpfBuildDir, f), path.join(dir, f.replace('-noct', '')));
    const n1 = node('n1');
    process.env.TWILL_BPF_DIR = dir;
    try {
      await bounceAgent(lab, n1, 'SIGTERM');
    } finally {
      delete process.env.TWILL_BPF_DIR;
    }
    try {
      expect(await askClusterIp()).toBe('FAILED');
    } finally {
      await bounceAgent(lab, n1, 'SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    }
    expect(await askClusterIp()).toBe(`n2-p1 ${pod('n1-p1').ip}`);
  });
});

describe('pods come and go', () => {
  const endpoints = async (n: LabNode) => (await readMaps(n)).endpoints;
  const podLinks = (n: LabNode) => (existsSync(`${n.pinDir}/links/pods`) ? readdirSync(`${n.pinDir}/links/pods`).sort() : []);

  it('a pod re-created with the same address on a new veth is served on the new one', async () => {
    const n1 = node('n1');
    const first = await addLabPod(lab, 'n1');
    const firstIfindex = (await endpoints(n1)).get(first.ip);
    expect(firstIfindex).toBeDefined();
    await removeLabPod(lab, first.name);
    expect((await endpoints(n1)).has(first.ip)).toBe(false);
    const again = await addLabPod(lab, 'n1', { ip: first.ip });
    expect(again.ip).toBe(first.ip);
    expect((await endpoints(n1)).get(again.ip)).not.toBe(firstIfindex);
    const before = await paths(n1);
    expect((await ping(pod('n2-p1').netns, again.ip, 5)).stdout).toMatch(/5 received/);
    expect((await paths(n1)).receive.fast - before.receive.fast).toBeGreaterThanOrEqual(5);
    await removeLabPod(lab, again.name);
  });

  it('a pod deleted while the agent was down leaves nothing behind, and a new pod with its address works meanwhile and after', async () => {
    const n1 = node('n1');
    const doomed = await addLabPod(lab, 'n1');
    // addLabPod waits for the pod's map entry; the agent pins the veth's link just after writing it.
    const doomedVeth = readEndpointRecord(endpointsDirFor(n1.subnetFile), doomed.containerId, 'eth0')!.hostVeth;
    await until("the doomed pod's link pinned", async () => podLinks(n1).includes(doomedVeth));
    const linksWithIt = podLinks(n1);
    await stopAgent(n1.agent!.pid, n1.pinDir, 'SIGKILL');
    await removeLabPod(lab, doomed.name);
    // The plugin's DEL took the entry out itself; the dead veth's pinned link waits for the agent.
    expect((await endpoints(n1)).has(doomed.ip)).toBe(false);
    expect(podLinks(n1)).toEqual(linksWithIt);
    // A new pod takes the address while the agent is still down: the stack path serves it.
    const successor = await addLabPod(lab, 'n1', { ip: doomed.ip });
    const before = await paths(n1);
    expect((await ping(pod('n2-p1').netns, successor.ip, 3)).stdout).toMatch(/3 received/);
    expect((await paths(n1)).receive.no_endpoint - before.receive.no_endpoint).toBeGreaterThanOrEqual(3);
    // The agent back: the successor is on the fast path, the dead veth's link is gone.
    await bounceAgent(lab, n1, 'SIGTERM');
    await until('the successor in the endpoints map', async () => (await endpoints(n1)).has(successor.ip));
    expect(podLinks(n1)).toHaveLength(2); // n1-p1 and the successor
    const status = JSON.parse((await twill(['status', '--pin-dir', n1.pinDir, '--subnet-file', n1.subnetFile, '--json'])).stdout);
    expect(status.problems).toEqual([]);
    await removeLabPod(lab, successor.name);
  });

  it('a pod without a CNI record (made before twill was installed) is found by scanning the bridge', async () => {
    const n1 = node('n1');
    const p = await addLabPod(lab, 'n1');
    const recordsDir = path.join(path.dirname(n1.subnetFile), 'endpoints');
    for (const f of readdirSync(recordsDir).filter((f) => f.startsWith(p.containerId))) rmSync(path.join(recordsDir, f));
    await bounceAgent(lab, n1, 'SIGTERM');
    expect((await endpoints(n1)).has(p.ip)).toBe(true);
    const before = await paths(n1);
    expect((await ping(pod('n2-p1').netns, p.ip, 3)).stdout).toMatch(/3 received/);
    expect((await paths(n1)).receive.fast - before.receive.fast).toBeGreaterThanOrEqual(3);
    await removeLabPod(lab, p.name);
  });
});
