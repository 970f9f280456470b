import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatapathMaps } from '../../controller/dataplane/datapath-maps.js';
import type { LabNode, LabPod, LabState } from '../../controller/lab/state.js';
import { linkShow } from '../../controller/netlink/ip.js';
import { run } from '../../controller/util/exec.js';
import type { MonitorEvent } from '../../controller/monitor/events.js';
import { buildBpf, buildTs, cliPath, repoRoot } from '../support/build.js';
import { agentLog, bounceAgent, craftEnv, labUpFresh, readMaps, readyz, twill, until } from '../support/lab-session.js';
import { startInNetns, stopAll } from '../support/proc.js';
import { ping, tcpTransfer } from '../support/traffic.js';

/*
 * A pod speaks only as itself, a node only for its own pods (issue 27): hostile traffic from a
 * pod (test/support/spoof.py) and from a peer node (craft.py, craft6.py), both families, decap in
 * tc and in XDP; and a NetworkPolicy engine's FORWARD rules, which the fast path would bypass.
 * Lab "tas": 3 dual-stack nodes, 2 pods each, underlay 192.168.164.0/24.
 */
const LAB = 'tas';
const spoof = path.join(repoRoot, 'test/support/spoof.py');
const craft = path.join(repoRoot, 'test/support/craft.py');
const craft6 = path.join(repoRoot, 'test/support/craft6.py');
const listen = path.join(repoRoot, 'test/support/udp-listen.py');
let lab: LabState;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const pod = (name: string) => lab.pods.find((p) => p.name === name)!;
const addrOf = (p: LabPod, family: 4 | 6) => (family === 4 ? p.ip : p.ips!.find((a) => a.includes(':'))!);
const stats = async (n: LabNode) => (await readMaps(n)).stats;
/** What `n` dropped from `peer` for its inner source (twill_peer_stats' source_drops). */
function sourceDropsFrom(n: LabNode, peer: LabNode): number {
  const maps = DatapathMaps.open(n.pinDir);
  try {
    return Number(maps.peerTraffic().peers.find((p) => p.publicIp === peer.underlayIp)?.source_drops ?? -1);
  } finally {
    maps.close();
  }
}
const linkMac = async (netns: string, dev: string) => (await linkShow(dev, { netns }))!.address!;

/** The datagrams `to` receives on port 9999 while `send` runs, and for a second after it. */
async function received(to: LabPod, send: () => Promise<void>): Promise<string[]> {
  const listener = startInNetns(to.netns, ['/usr/bin/python3', listen, '9999', 'never', '60']);
  await listener.waitFor(/listening/);
  await send();
  await new Promise((r) => setTimeout(r, 1000));
  listener.kill('SIGTERM');
  await listener.exited;
  return listener
    .output()
    .split('\n')
    .filter((l) => l.startsWith('twill-'))
    .sort();
}

/** From `from`'s pod: `count` datagrams from each spoofed source to `to`, then one from its own address ("own"). */
async function spoofRound(from: LabPod, to: LabPod, family: 4 | 6, spoofs: [tag: string, src: string][], count = 1): Promise<string[]> {
  const gateway = await linkMac(node(from.node).netns, 'cni0');
  const send = (src: string, tag: string, n: number) =>
    run(['/usr/bin/python3', spoof, 'eth0', gateway, src, addrOf(to, family), String(n), tag], { netns: from.netns });
  return received(to, async () => {
    for (const [tag, src] of spoofs) await send(src, tag, count);
    await send(addrOf(from, family), 'own', 1);
  });
}

beforeAll(async () => {
  buildBpf();
  buildTs();
  lab = await labUpFresh(LAB, ['--nodes', '3', '--pods-per-node', '2', '--ip-family', 'dual', '--underlay', '192.168.164.0/24']);
}, 240_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
}, 120_000);

describe('a pod speaks only as itself (--pod-source-check drop, the default)', () => {
  for (const family of [4, 6] as const) {
    it(`IPv${family}: as another pod of its node, a pod of another node, its node, or an outside address: dropped at its veth and counted; as itself: delivered`, async () => {
      const n1 = node('n1');
      const spoofs: [string, string][] = [
        ['a pod of its node', addrOf(pod('n1-p2'), family)],
        ['a pod of another node', addrOf(pod('n3-p1'), family)],
        ['its node', family === 4 ? n1.underlayIp : n1.underlayIp6!],
        ['an outside address', family === 4 ? '203.0.113.7' : '2001:db8::7'],
      ];
      const before = await stats(n1);
      const got = await spoofRound(pod('n1-p1'), pod('n2-p1'), family, spoofs, 5);
      const dropped = (await stats(n1)).drop_pod_source - before.drop_pod_source;
      console.log(
        `RELIABILITY anti-spoofing: a pod sending IPv${family} as ${spoofs.length} other sources, 5 each: ${dropped} dropped at its veth, its own address delivered`,
      );
      expect(got).toEqual(['twill-spoof:own']);
      expect(dropped).toBe(spoofs.length * 5);
    });
  }

  it('twill monitor reports such a drop with the pod named by its addresses', async () => {
    const n1 = node('n1');
    const m = startInNetns(undefined, [process.execPath, cliPath, 'monitor', '--pin-dir', n1.pinDir, '--json', '--count', '1', '--reason', 'drop_pod_source']);
    await m.waitFor(/listening for/);
    await spoofRound(pod('n1-p1'), pod('n2-p1'), 4, [['an outside address', '203.0.113.7']]);
    await m.exited;
    const events = m
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as MonitorEvent);
    expect(events.map((e) => ({ reason: e.reason, hook: e.hook, pod: e.pod, src: e.inner?.src }))).toEqual([
      { reason: 'drop_pod_source', hook: 'pod-send', pod: { addresses: pod('n1-p1').ips }, src: '203.0.113.7' },
    ]);
  });

  it('with the fast path off, the check stays on: the pod veths keep the program for it', async () => {
    const n1 = node('n1');
    await bounceAgent(lab, n1, 'SIGTERM', ['--fast-path=false']);
    try {
      const before = await stats(n1);
      const got = await spoofRound(pod('n1-p1'), pod('n2-p1'), 4, [['a pod of another node', pod('n3-p1').ip]], 3);
      expect(got).toEqual(['twill-spoof:own']);
      expect((await stats(n1)).drop_pod_source - before.drop_pod_source).toBe(3);
    } finally {
      await bounceAgent(lab, n1, 'SIGTERM');
    }
  });

  it('the control: with --pod-source-check allow, the same packet goes on through the stack, as in flannel', async () => {
    const n1 = node('n1');
    await bounceAgent(lab, n1, 'SIGTERM', ['--pod-source-check', 'allow']);
    try {
      const before = await stats(n1);
      // Another pod of the same node: its address is inside n1's subnet, so n2's peer check lets it through too.
      const got = await spoofRound(pod('n1-p1'), pod('n2-p1'), 4, [['a pod of its node', pod('n1-p2').ip]]);
      expect(got).toEqual(['twill-spoof:a pod of its node', 'twill-spoof:own']);
      expect((await stats(n1)).drop_pod_source - before.drop_pod_source).toBe(0);
    } finally {
      await bounceAgent(lab, n1, 'SIGTERM');
    }
  });
});

describe('a node speaks only for its own pods', () => {
  for (const hook of ['tc', 'xdp'] as const) {
    describe(`decap in ${hook}`, () => {
      beforeAll(async () => {
        for (const n of lab.nodes) await bounceAgent(lab, n, 'SIGTERM', ['--decap-hook', hook]);
      }, 120_000);

      it("IPv4: a peer's VXLAN with a third node's pod as inner source and that node's VtepMAC, whole or in fragments: dropped, counted by reason and for that peer; as its pods or itself: delivered", async () => {
        const [n1, n2, n3] = [node('n1'), node('n2'), node('n3')];
        const target = pod('n1-p1');
        const send = (kind: string, env: NodeJS.ProcessEnv) =>
          run(['/usr/bin/python3', craft, kind, n2.underlayIp, n1.underlayIp, target.ip, '1', '8472', n1.vtepMac], { netns: n2.netns, env });
        const spoofed = { ...process.env, INNER_SRC: pod('n3-p1').ip, INNER_SRC_MAC: n3.vtepMac, PROBE_SUFFIX: ':spoofed' };
        const before = { stats: await stats(n1), peer: sourceDropsFrom(n1, n2) };
        const got = await received(target, async () => {
          await send('good', spoofed);
          await send('fragment', spoofed); // reassembled by the stack, judged by twill_tunnel_rx
          await send('good', craftEnv(lab, n2.underlayIp)); // the control: n2 for its own pods
          // and n2 as itself: a reply to a pod's connection to n2's NodePort, un-NATed there to n2's address
          await send('good', { ...process.env, INNER_SRC: n2.underlayIp, PROBE_SUFFIX: ':as-itself' });
        });
        const after = { stats: await stats(n1), peer: sourceDropsFrom(n1, n2) };
        expect(got).toEqual(['twill-probe:good', 'twill-probe:good:as-itself']);
        expect(after.stats.drop_peer_source - before.stats.drop_peer_source).toBe(2);
        expect(after.peer - before.peer).toBe(2);
      });

      it("IPv6: a peer's VXLAN with a third node's pod as inner source and that node's VtepMAC, whole or in fragments: dropped, counted by reason and for that peer; as its pods or itself: delivered", async () => {
        const [n1, n2, n3] = [node('n1'), node('n2'), node('n3')];
        const target = pod('n1-p1');
        const n1Mac = await linkMac(n1.netns, 'eth0');
        const send = (kind: string, env: NodeJS.ProcessEnv) =>
          run(['/usr/bin/python3', craft6, kind, 'eth0', n1Mac, n2.underlayIp6!, n1.underlayIp6!, addrOf(target, 6), '1', '8472', n1.vtepMac6!], {
            netns: n2.netns,
            env,
          });
        const spoofed = { ...process.env, INNER_SRC: addrOf(pod('n3-p1'), 6), INNER_SRC_MAC: n3.vtepMac6!, PROBE_SUFFIX: ':spoofed' };
        const before = { stats: await stats(n1), peer: sourceDropsFrom(n1, n2) };
        const got = await received(target, async () => {
          await send('good', spoofed); // judged in tc (judge6), ahead of twill-rx
          await send('fragment', spoofed); // reassembled by the stack, judged by twill_tunnel_rx
          await send('good', craftEnv(lab, n2.underlayIp6!));
          await send('good', { ...process.env, INNER_SRC: n2.underlayIp6!, PROBE_SUFFIX: ':as-itself' });
        });
        const after = { stats: await stats(n1), peer: sourceDropsFrom(n1, n2) };
        expect(got).toEqual(['twill-probe6:good', 'twill-probe6:good:as-itself']);
        expect(after.stats.drop_peer_source - before.stats.drop_peer_source).toBe(2);
        expect(after.peer - before.peer).toBe(2);
      });
    });
  }

  it("a node's own traffic to a remote pod leaves from its overlay address, inside its subnet: it passes", async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    const before = await stats(n1);
    const got = await received(pod('n1-p1'), async () => {
      await run(
        ['/usr/bin/python3', '-c', `import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"twill-node:n2", ("${pod('n1-p1').ip}", 9999))`],
        {
          netns: n2.netns,
        },
      );
    });
    expect(got).toEqual(['twill-node:n2']);
    expect((await stats(n1)).drop_peer_source - before.drop_peer_source).toBe(0);
  });

  it('outside traffic a node forwards to a remote pod: dropped there with its outside source, delivered once the node masquerades it (--ip-masq)', async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    const outside = lab.underlay.netns; // the underlay's router: not a node, no lease
    const send = (tag: string) =>
      run(
        [
          '/usr/bin/python3',
          '-c',
          `import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"twill-outside:${tag}", ("${pod('n1-p1').ip}", 9999))`,
        ],
        {
          netns: outside,
        },
      );
    await run(['ip', 'route', 'replace', n1.subnet, 'via', n2.underlayIp], { netns: outside });
    try {
      const before = await stats(n1);
      const unmasqueraded = await received(pod('n1-p1'), () => send('as itself').then(() => undefined));
      const mid = await stats(n1);
      await bounceAgent(lab, n2, 'SIGTERM', ['--ip-masq']);
      const masqueraded = await received(pod('n1-p1'), () => send('masqueraded').then(() => undefined));
      const after = await stats(n1);
      expect({ unmasqueraded, masqueraded }).toEqual({ unmasqueraded: [], masqueraded: ['twill-outside:masqueraded'] });
      expect([mid.drop_peer_source - before.drop_peer_source, after.drop_peer_source - mid.drop_peer_source]).toEqual([1, 0]);
    } finally {
      await run(['ip', 'route', 'del', n1.subnet], { netns: outside, allowFailure: true });
      await bounceAgent(lab, n2, 'SIGTERM');
    }
  });

  it('a flood of both kinds, mixed with transfers between pods: every spoofed packet is dropped and counted, every transfer arrives whole', async () => {
    const [n1, n2, n3] = [node('n1'), node('n2'), node('n3')];
    const target = pod('n1-p1');
    const gateway = await linkMac(n1.netns, 'cni0');
    const before = await Promise.all([n1, n2].map(stats));
    const rounds = 20;
    // From n2's namespace, as n2: VXLAN for n1's pod with n3's pod inside; from n1's second pod: UDP as n3's pod.
    const peerFlood = startInNetns(n2.netns, [
      '/usr/bin/python3',
      '-c',
      `import os, runpy, sys, scapy.all\nos.environ.update(INNER_SRC="${pod('n3-p1').ip}", INNER_SRC_MAC="${n3.vtepMac}")\nprint("flooding", flush=True)\nfor i in range(${rounds}):\n  sys.argv = ["craft.py", "good", "${n2.underlayIp}", "${n1.underlayIp}", "${target.ip}", "1", "8472", "${n1.vtepMac}"]\n  runpy.run_path("${craft}")\nprint("flood done", flush=True)`,
    ]);
    const podFlood = startInNetns(pod('n1-p2').netns, [
      '/usr/bin/python3',
      '-c',
      `import runpy, sys, time\nprint("flooding", flush=True)\nfor i in range(${rounds}):\n  sys.argv = ["spoof.py", "eth0", "${gateway}", "${pod('n3-p1').ip}", "${pod('n2-p1').ip}", "10", "flood"]\n  runpy.run_path("${spoof}")\n  time.sleep(0.05)\nprint("flood done", flush=True)`,
    ]);
    await Promise.all([peerFlood, podFlood].map((f) => f.waitFor(/flooding/, 30_000)));
    let floodsEnded = 0;
    for (const f of [peerFlood, podFlood]) void f.exited.then(() => floodsEnded++);
    const bad: string[] = [];
    let transfers = 0;
    while (floodsEnded < 2) {
      for (const [from, to] of [
        [pod('n2-p1'), target],
        [pod('n3-p2'), pod('n1-p2')],
      ]) {
        const t = await tcpTransfer(from, to, 256 * 1024);
        transfers++;
        if (t.received !== t.sent) bad.push(`${from.name} -> ${to.name}: ${t.sent} vs ${t.received}`);
      }
    }
    expect([peerFlood, podFlood].map((f) => f.output().includes('flood done'))).toEqual([true, true]);
    const after = await Promise.all([n1, n2].map(stats));
    const peerDrops = after[0].drop_peer_source - before[0].drop_peer_source;
    const podDrops = after[0].drop_pod_source - before[0].drop_pod_source;
    console.log(
      `RELIABILITY anti-spoofing flood: ${rounds} spoofed VXLAN from a peer and ${rounds * 10} spoofed datagrams from a pod: ${peerDrops} and ${podDrops} dropped and counted; ${transfers} TCP transfers of 256 KiB meanwhile, ${bad.length} corrupted or short`,
    );
    expect(bad).toEqual([]);
    expect(transfers).toBeGreaterThan(0);
    expect({ peerDrops, podDrops, atN2: after[1].drop_peer_source - before[1].drop_peer_source }).toEqual({
      peerDrops: rounds,
      podDrops: rounds * 10,
      atN2: 0,
    });
  }, 180_000);
});

describe("a NetworkPolicy engine's FORWARD rules are never bypassed silently", () => {
  /** Stands for a policy engine: a FORWARD rule that drops everything n1's first pod sends through the node. */
  const rule = () => ['FORWARD', '-s', `${pod('n1-p1').ip}/32`, '-j', 'DROP'];
  const reaches = async (from: LabPod) => (await ping(from.netns, pod('n2-p1').ip, 2)).code === 0;
  const fastPathFlag = () => Number((readMapsConfigFlags(node('n1')) & 0x1) !== 0);

  it('--fast-path auto: such a rule holds the fast path off while it exists, so it applies; removed, the fast path is back', async () => {
    const n1 = node('n1');
    await bounceAgent(lab, n1, 'SIGTERM', ['--fast-path=auto']);
    try {
      expect([await reaches(pod('n1-p1')), fastPathFlag()]).toEqual([true, 1]);
      const from = agentLog(n1).length;
      await run(['iptables', '-I', ...rule()], { netns: n1.netns });
      await until("n1's agent to hold the fast path off", async () => agentLog(n1).slice(from).includes('pod traffic stays on the stack while they exist'));
      expect((await readyz(n1)).fastPath).toMatchObject({
        enabled: false,
        forwardRules: [expect.stringContaining(`-A FORWARD -s ${pod('n1-p1').ip}/32 -j DROP`)],
      });
      expect({ flag: fastPathFlag(), dropped: !(await reaches(pod('n1-p1'))), other: await reaches(pod('n1-p2')) }).toEqual({
        flag: 0,
        dropped: true,
        other: true,
      });
      const status = JSON.parse((await twill(['status', '--json', '--pin-dir', n1.pinDir, '--healthz', n1.agent!.healthz], n1.netns)).stdout) as {
        fastPath: { enabled: boolean; reason: string; forwardRules?: string[] };
      };
      expect(status.fastPath).toMatchObject({
        enabled: false,
        reason: expect.stringMatching(/held off .*FORWARD/),
        forwardRules: [expect.stringContaining('DROP')],
      });
      await run(['iptables', '-D', ...rule()], { netns: n1.netns });
      await until('the fast path to be on again', async () => agentLog(n1).slice(from).includes('the fast path is on again'));
      expect([await reaches(pod('n1-p1')), fastPathFlag()]).toEqual([true, 1]);
    } finally {
      await run(['iptables', '-D', ...rule()], { netns: n1.netns, allowFailure: true });
      await bounceAgent(lab, n1, 'SIGTERM');
    }
  });

  it('the control: with --fast-path true the rule is bypassed, as the agent and twill status say', async () => {
    const n1 = node('n1');
    const from = agentLog(n1).length;
    await run(['iptables', '-I', ...rule()], { netns: n1.netns });
    try {
      await until("n1's agent to warn", async () => agentLog(n1).slice(from).includes('rules the fast path bypasses (--fast-path true)'));
      expect({ flag: fastPathFlag(), reaches: await reaches(pod('n1-p1')) }).toEqual({ flag: 1, reaches: true });
      const status = JSON.parse((await twill(['status', '--json', '--pin-dir', n1.pinDir, '--healthz', n1.agent!.healthz], n1.netns)).stdout) as {
        problems: string[];
      };
      expect(status.problems).toContainEqual(expect.stringMatching(/^FORWARD has 1 rule\(s\) the fast path bypasses/));
    } finally {
      await run(['iptables', '-D', ...rule()], { netns: n1.netns, allowFailure: true });
    }
  });
});

function readMapsConfigFlags(n: LabNode): number {
  const maps = DatapathMaps.open(n.pinDir);
  try {
    return maps.readConfig()?.flags ?? -1;
  } finally {
    maps.close();
  }
}
