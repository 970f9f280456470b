import path from 'node:path';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { applyServices } from '../../controller/lab/services.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs, repoRoot } from '../support/build.js';
import { agentLog, etcdctl, labUpFresh, PREFIX, readMaps, twill, until } from '../support/lab-session.js';
import { startInNetns, stopAll } from '../support/proc.js';
import { stackSaw, underlayCapture } from '../support/stack-watch.js';
import { tcpTransfer, udpProbe } from '../support/traffic.js';

/*
 * flannel's other two configurations, with real traffic: the host-gw backend, and vxlan with
 * DirectRouting, each on a lab whose underlay has two L2 segments joined by a router namespace,
 * with twill BPF nodes and nodes set up exactly as flanneld sets them up (--dataplane kernel).
 */

const nameServer = path.join(repoRoot, 'test/support/name-server.py');
let lab: LabState;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const podOf = (n: string) => lab.pods.find((p) => p.node === n)!;
const paths = async (n: LabNode) => (await readMaps(n)).path!;
const pingOk = async (from: string, to: string, count = 3) =>
  (await run(['ping', '-c', String(count), '-i', '0.05', '-W', '1', podOf(to).ip], { netns: podOf(from).netns, allowFailure: true })).stdout.includes(
    `${count} received`,
  );
const mainRoutes = async (n: LabNode) => (await run(['ip', '-4', 'route', 'show'], { netns: n.netns })).stdout.split('\n').map((l) => l.trim());

/** Every ordered pair of these nodes' pods, as "a->b" for those that did not answer. */
async function failingPairs(names: string[]): Promise<string[]> {
  const failed: string[] = [];
  for (const a of names) for (const b of names) if (a !== b && !(await pingOk(a, b, 2))) failed.push(`${a}->${b}`);
  return failed;
}

/** Pod traffic from n1's pod to each of `to` (one ping each), as n1's underlay port carried it. */
async function wireFromN1(to: string[]): Promise<string[]> {
  const cap = await underlayCapture(lab.underlay.netns, 'n1', async () => {
    for (const t of to) expect(await pingOk('n1', t, 2)).toBe(true);
  });
  return cap.lines;
}
const plainIcmp = (lines: string[], b: string) => lines.filter((l) => l.includes(`${podOf('n1').ip} > ${podOf(b).ip}: ICMP`)).length;
const vxlanTo = (lines: string[], b: string) => lines.filter((l) => new RegExp(`> ${node(b).underlayIp.replace(/\./g, '\\.')}\\.8472: UDP`).test(l)).length;

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', 'twg']);
  await twill(['lab', 'down', '--name', 'twd']);
}, 120_000);

describe('host-gw: n1-n3 twill BPF, n4 as flanneld sets it up, n5 on another segment behind a router', () => {
  beforeAll(async () => {
    buildBpf();
    buildTs();
    lab = await labUpFresh('twg', [
      '--nodes',
      '5',
      '--kernel-nodes',
      '2',
      '--routed-nodes',
      '1',
      '--pods-per-node',
      '1',
      '--backend',
      'host-gw',
      '--underlay',
      '192.168.87.0/24',
    ]);
  }, 240_000);
  afterAll(async () => {
    await stopAll();
    await twill(['lab', 'down', '--name', 'twg']);
  }, 120_000);

  it("leases are flannel's host-gw records, and the subnet file gives pods the whole underlay MTU", async () => {
    for (const n of lab.nodes) {
      const value = (await etcdctl(lab, 'get', '--print-value-only', `${PREFIX}/subnets/${n.subnet.replace('/', '-')}`)).stdout.trim();
      expect(value).toBe(`{"PublicIP":"${n.underlayIp}","PublicIPv6":null,"BackendType":"host-gw"}`);
    }
    expect(lab.podMtu).toBe(1500);
    const link = JSON.parse((await run(['ip', '-j', 'link', 'show', 'eth0'], { netns: podOf('n1').netns })).stdout)[0];
    expect(link.mtu).toBe(1500);
  });

  it("the flanneld-style node holds exactly flanneld's routes: one per reachable peer via its PublicIP, no VXLAN device", async () => {
    const n4 = node('n4');
    const routes = await mainRoutes(n4);
    for (const peer of ['n1', 'n2', 'n3']) expect(routes).toContain(`${node(peer).subnet} via ${node(peer).underlayIp} dev eth0`);
    expect(routes.some((r) => r.startsWith(node('n5').subnet))).toBe(false);
    expect((await run(['ip', '-j', 'link', 'show', 'type', 'vxlan'], { netns: n4.netns })).stdout.trim()).toBe('[]');
  });

  it("a peer off our L2 segment is refused with flannel's route error, on twill and kernel nodes alike", async () => {
    const n5 = node('n5');
    const refusal = `Error adding route to ${n5.subnet} via ${n5.underlayIp}: not on our L2 segment`;
    for (const n of [node('n1'), node('n4')]) expect(agentLog(n)).toContain(refusal);
    expect((await readMaps(node('n1'))).subnets.map((s) => s.subnet)).not.toContain(n5.subnet);
    expect(await pingOk('n1', 'n5', 1)).toBe(false);
  });

  it('every pair of pods on the segment reaches every other, BPF and flanneld-style nodes both ways', async () => {
    expect(await failingPairs(['n1', 'n2', 'n3', 'n4'])).toEqual([]);
    for (const [a, b] of [
      ['n1', 'n4'],
      ['n4', 'n1'],
    ]) {
      const t = await tcpTransfer(podOf(a), podOf(b), 256 * 1024);
      expect(t.received).toBe(t.sent);
    }
  });

  it("between BPF nodes the pods' packets bypass cni0 and FORWARD on both sides, and nothing on the wire is VXLAN", async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    const before = await Promise.all([n1, n2].map(paths));
    const cap = await underlayCapture(lab.underlay.netns, 'n1', () =>
      stackSaw([n1, n2], [podOf('n1').ip, podOf('n2').ip], async () => {
        expect(await pingOk('n1', 'n2', 50)).toBe(true);
        const t = await tcpTransfer(podOf('n1'), podOf('n2'), 256 * 1024);
        expect(t.received).toBe(t.sent);
        expect(await udpProbe(podOf('n2'), podOf('n1'))).toBe(true);
        return 100;
      }),
    );
    const after = await Promise.all([n1, n2].map(paths));
    for (const i of [0, 1]) {
      expect(after[i].send.fast - before[i].send.fast).toBeGreaterThanOrEqual(50);
      expect(after[i].receive.fast - before[i].receive.fast).toBeGreaterThanOrEqual(50);
    }
    expect(cap.result.forward).toEqual([0, 0]);
    expect(cap.result.cni0Ipv4).toEqual([[], []]);
    expect(cap.lines.filter((l) => /\.8472: UDP/.test(l))).toEqual([]);
    expect(plainIcmp(cap.lines, 'n2')).toBeGreaterThanOrEqual(50);
  });

  it('TTL is decremented once per node, as host-gw routing does', async () => {
    const res = await run(['ping', '-c', '1', '-W', '2', podOf('n2').ip], { netns: podOf('n1').netns, allowFailure: true });
    expect(res.stdout).toMatch(/ttl=62/);
  });

  it('a flow conntrack knows stays on the stack: a ClusterIP reply is un-NATed on the way back', async () => {
    await startInNetns(podOf('n2').netns, ['/usr/bin/python3', nameServer, 'n2-p1', '8080']).waitFor(/listening/);
    await applyServices(lab, [{ name: 'default/echo', clusterIp: '10.96.0.30', port: 80, targetPort: 8080, endpoints: [podOf('n2').ip] }]);
    const n1 = node('n1');
    const before = await paths(n1);
    const py = `import socket; s=socket.create_connection(("10.96.0.30", 80), timeout=3); print(s.recv(200).decode().strip())`;
    for (let i = 0; i < 3; i++) expect((await run(['/usr/bin/python3', '-c', py], { netns: podOf('n1').netns })).stdout.trim()).toBe(`n2-p1 ${podOf('n1').ip}`);
    expect((await paths(n1)).receive.conntrack - before.receive.conntrack).toBeGreaterThan(0);
  });

  it('twill status and maps say host-gw, with every peer routed directly and no VXLAN port', async () => {
    const n1 = node('n1');
    const status = JSON.parse((await twill(['status', '--pin-dir', n1.pinDir, '--subnet-file', n1.subnetFile, '--json'])).stdout);
    expect(status.backend).toBe('host-gw');
    expect(status.node.vxlan_port).toBe(0);
    expect(status.attach.tunnel).toBeUndefined();
    expect(status.peers.map((p: { route: string }) => p.route)).toEqual(['direct', 'direct', 'direct']);
    expect(status.problems).toEqual([]);
    expect(existsSync(`${n1.pinDir}/links/tunnel-rx`)).toBe(false);
  });
});

describe('vxlan DirectRouting: n1, n2 twill BPF on one segment; n3 twill BPF and n4 as flanneld on the other, behind a router', () => {
  beforeAll(async () => {
    lab = await labUpFresh('twd', [
      '--nodes',
      '4',
      '--kernel-nodes',
      '1',
      '--routed-nodes',
      '2',
      '--pods-per-node',
      '1',
      '--direct-routing',
      '--underlay',
      '192.168.89.0/24',
    ]);
  }, 240_000);

  it('every pod reaches every other, both ways, across and within segments', async () => {
    expect(await failingPairs(['n1', 'n2', 'n3', 'n4'])).toEqual([]);
    for (const [a, b] of [
      ['n1', 'n4'],
      ['n4', 'n1'],
      ['n3', 'n4'],
      ['n4', 'n3'],
    ]) {
      const t = await tcpTransfer(podOf(a), podOf(b), 256 * 1024);
      expect(t.received).toBe(t.sent);
    }
  });

  it('the wire shows no VXLAN to the peer on our segment, and VXLAN to the peers behind the router', async () => {
    const lines = await wireFromN1(['n2', 'n3', 'n4']);
    expect({ n2: plainIcmp(lines, 'n2') >= 2, n3: plainIcmp(lines, 'n3'), n4: plainIcmp(lines, 'n4') }).toEqual({ n2: true, n3: 0, n4: 0 });
    expect({ n2: vxlanTo(lines, 'n2'), n3: vxlanTo(lines, 'n3') >= 2, n4: vxlanTo(lines, 'n4') >= 2 }).toEqual({ n2: 0, n3: true, n4: true });
  });

  it('between a twill node and a flanneld DirectRouting node on one segment, pods talk directly, both ways', async () => {
    const cap = await underlayCapture(lab.underlay.netns, 'n3', async () => {
      expect(await pingOk('n3', 'n4', 2)).toBe(true);
      expect(await pingOk('n4', 'n3', 2)).toBe(true);
    });
    expect(cap.lines.filter((l) => /\.8472: UDP/.test(l))).toEqual([]);
    expect(cap.lines.filter((l) => l.includes(`${podOf('n3').ip} > ${podOf('n4').ip}: ICMP`)).length).toBeGreaterThanOrEqual(4);
  });

  it("the flanneld-style node holds flannel's state: a direct route on its segment, VXLAN entries for the rest", async () => {
    const n4 = node('n4');
    const routes = await mainRoutes(n4);
    expect(routes).toContain(`${node('n3').subnet} via ${node('n3').underlayIp} dev eth0`);
    for (const peer of ['n1', 'n2']) expect(routes).toContain(`${node(peer).subnet} via ${node(peer).subnet.split('/')[0]} dev flannel.1 onlink`);
    const fdb = (await run(['bridge', 'fdb', 'show', 'dev', 'flannel.1'], { netns: n4.netns })).stdout;
    expect(fdb).toContain(`dst ${node('n1').underlayIp}`);
    expect(fdb).not.toContain(`dst ${node('n3').underlayIp}`);
  });

  it('the twill node routes its segment peer directly on the fast path, and says so per peer', async () => {
    const n1 = node('n1');
    const before = await paths(n1);
    expect(await pingOk('n1', 'n2', 20)).toBe(true);
    const after = await paths(n1);
    expect(after.send.fast - before.send.fast).toBeGreaterThanOrEqual(20);
    expect(after.receive.fast - before.receive.fast).toBeGreaterThanOrEqual(20);
    const maps = JSON.parse((await twill(['maps', '--pin-dir', n1.pinDir, '--json'])).stdout);
    const route = (n: string) => maps.subnets.find((s: { subnet: string }) => s.subnet === node(n).subnet).route;
    expect({ n2: route('n2'), n3: route('n3'), n4: route('n4') }).toEqual({ n2: 'direct', n3: 'vxlan', n4: 'vxlan' });
  });
});

describe('configs twill does not run', () => {
  it('an unsupported backend: the agent names it and exits non-zero, having touched nothing', async () => {
    const n1 = node('n1');
    const prefix = '/twill-test/udp';
    await etcdctl(lab, 'put', `${prefix}/config`, '{"Network":"10.250.0.0/16","Backend":{"Type":"udp"}}');
    const pinDir = '/sys/fs/bpf/twill-lab/twd-unsupported';
    const res = await twill(
      [
        'agent',
        `--etcd-endpoints=${lab.etcd!.endpoint}`,
        `--etcd-prefix=${prefix}`,
        '--iface=eth0',
        `--pin-dir=${pinDir}`,
        `--subnet-file=/run/twill/lab/twd/unsupported.env`,
      ],
      n1.netns,
    );
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(
      `twill: ${prefix}/config: unsupported config: Backend.Type "udp": flannel's udp backend is not supported (twill implements vxlan and host-gw)`,
    );
    expect(existsSync(pinDir)).toBe(false);
    expect((await etcdctl(lab, 'get', '--prefix', '--keys-only', `${prefix}/subnets`)).stdout.trim()).toBe('');
  });

  it('a config changed at runtime to an unsupported one is reported in readyz and status, and the datapath goes on untouched', async () => {
    const n1 = node('n1');
    const key = `${PREFIX}/config`;
    const original = (await etcdctl(lab, 'get', '--print-value-only', key)).stdout.trim();
    const mapsBefore = (await readMaps(n1)).subnets;
    await etcdctl(lab, 'put', key, '{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}');
    try {
      const readyz = await until(
        'the agent to report the config change',
        async () => {
          const body = (await run(['curl', '-s', `http://${n1.agent!.healthz}/readyz`], { netns: n1.netns, allowFailure: true })).stdout;
          return body.includes('wireguard') && JSON.parse(body);
        },
        30_000,
      );
      expect(readyz.configError).toMatch(
        /changed after start to one twill cannot run \(unsupported config: Backend.Type "wireguard".*the running datapath is unchanged/,
      );
      const status = JSON.parse(
        (await twill(['status', '--pin-dir', n1.pinDir, '--subnet-file', n1.subnetFile, '--healthz', n1.agent!.healthz, '--json'], n1.netns)).stdout,
      );
      expect(status.problems.some((p: string) => p.startsWith('network config: ') && p.includes('wireguard'))).toBe(true);
      expect((await readMaps(n1)).subnets).toEqual(mapsBefore);
      expect(await failingPairs(['n1', 'n2', 'n3'])).toEqual([]);
    } finally {
      await etcdctl(lab, 'put', key, original);
    }
  });
});
