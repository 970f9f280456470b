import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAgent, stopAgent } from '../../controller/lab/agents.js';
import { startLabEtcd, stopLabEtcd } from '../../controller/lab/etcd-cluster.js';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs, repoRoot } from '../support/build.js';
import {
  agentLog,
  bounceAgent,
  etcdctl,
  expectNoLoss,
  fakeLease,
  labUpFresh,
  leaseKey,
  lossLine,
  mapEntries,
  pingFlowsRunning,
  readMaps,
  routes,
  stopPingFlows,
  stopPingFlowsPerFlow,
  twill,
  until,
} from '../support/lab-session.js';
import { stopAll } from '../support/proc.js';
import { ping } from '../support/traffic.js';

/*
 * Faults around a running cluster, with pods pinging across every node pair every 20 ms during
 * each: agents killed, etcd gone, a node cut off past its lease, an upgrade of the programs,
 * a pinned map left with another layout. Lab "tra", underlay 192.168.181.0/24. Every agent runs
 * with a 10 s lease TTL (renewal every 5 s) so renewal and expiry happen within the test.
 * Each test prints one "RELIABILITY" line with what it measured (RELIABILITY.md quotes them).
 */
const LAB = 'tra';
const AGENT_ARGS = ['--subnet-lease-ttl=10'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let lab: LabState;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const pod = (name: string) => lab.pods.find((p) => p.name === name)!;
const report = (line: string) => console.log(`RELIABILITY ${line}`);

beforeAll(async () => {
  buildBpf();
  buildTs();
  lab = await labUpFresh(LAB, ['--nodes', '3', '--pods-per-node', '1', '--underlay', '192.168.181.0/24']);
  for (const n of lab.nodes) await bounceAgent(lab, n, 'SIGTERM', AGENT_ARGS);
}, 240_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
}, 120_000);

describe('agent and etcd faults under traffic', () => {
  it('an agent killed with SIGKILL and restarted, 10 times in a row: no fast-path packet lost, no map entry rewritten, counters kept', async () => {
    const entries = await Promise.all(lab.nodes.map(mapEntries));
    const countersBefore = await Promise.all(lab.nodes.map(async (n) => (await readMaps(n)).stats.decap_packets));
    const fastBefore = await Promise.all(lab.nodes.map(async (n) => (await readMaps(n)).path!.receive.fast));
    const flows = await pingFlowsRunning(lab);
    for (let i = 0; i < 10; i++) {
      const n = lab.nodes[i % lab.nodes.length];
      const restart = await bounceAgent(lab, n, 'SIGKILL', AGENT_ARGS);
      expect(restart).toContain('"swapped":{"encap":true,"decap":true}');
      expect(restart).not.toContain('datapath updated'); // the diff found nothing to write
    }
    const loss = await stopPingFlows(flows, { lastFault: Date.now() });
    report(`agent SIGKILL x10: ${lossLine(loss, 'the last restart')}`);
    expect(await Promise.all(lab.nodes.map(mapEntries))).toEqual(entries);
    // Counters only grow: the maps were reused, not recreated.
    const countersAfter = await Promise.all(lab.nodes.map(async (n) => (await readMaps(n)).stats.decap_packets));
    countersAfter.forEach((c, i) => expect(c).toBeGreaterThan(countersBefore[i]));
    // ...and the pings were delivered by the fast path all along (the agents' restarts left it alone).
    const fastAfter = await Promise.all(lab.nodes.map(async (n) => (await readMaps(n)).path!.receive.fast));
    fastAfter.forEach((c, i) => expect(c - fastBefore[i]).toBeGreaterThanOrEqual(countersAfter[i] - countersBefore[i]));
    expectNoLoss(loss, lab);
  }, 300_000);

  it('etcd stopped for 60 s: the datapath is unchanged and forwards; agents reconnect and renew when it returns', async () => {
    const entries = await Promise.all(lab.nodes.map(mapEntries));
    const flows = await pingFlowsRunning(lab);
    await stopLabEtcd(lab);
    const outageStart = lab.nodes.map((n) => agentLog(n).length);
    try {
      for (let t = 0; t < 6; t++) {
        await sleep(10_000);
        expect(await Promise.all(lab.nodes.map(mapEntries))).toEqual(entries);
        for (const n of lab.nodes) expect(isAgent(n.agent!.pid, n.pinDir)).toBe(true);
      }
    } finally {
      await startLabEtcd(lab);
    }
    const lastFault = Date.now();
    const back = lab.nodes.map((n) => agentLog(n).length);
    lab.nodes.forEach((n, i) => expect(agentLog(n).slice(outageStart[i], back[i])).toContain('lease renewal failed'));
    await until(
      'every agent to renew its lease with the restarted etcd',
      async () => lab.nodes.every((n, i) => agentLog(n).slice(back[i]).includes('"msg":"lease renewed"')),
      30_000,
    );
    const fake = '10.244.241.0/24';
    await etcdctl(lab, 'put', leaseKey(fake), fakeLease('192.168.181.98', '02:00:00:00:00:98'));
    await until(
      'every agent to see a lease put after etcd returned',
      async () => (await Promise.all(lab.nodes.map((n) => routes(n, fake)))).every(Boolean),
      30_000,
    );
    await etcdctl(lab, 'del', leaseKey(fake));
    await until('every agent to see its delete', async () => (await Promise.all(lab.nodes.map((n) => routes(n, fake)))).every((r) => !r), 30_000);
    const loss = await stopPingFlows(flows, { lastFault });
    report(`etcd down 60 s: ${lossLine(loss, 'its restart')}; maps unchanged during the outage; all 3 agents renewed after it`);
    expectNoLoss(loss, lab);
  }, 180_000);

  it("etcd compacted past a cut-off agent's watch revision: it resyncs, missing neither the put nor the delete made meanwhile; nothing lost", async () => {
    const n1 = node('n1');
    const gone = '10.244.242.0/24';
    const added = '10.244.243.0/24';
    await etcdctl(lab, 'put', leaseKey(gone), fakeLease('192.168.181.97', '02:00:00:00:00:97'));
    await until('n1 to route the lease about to be deleted', () => routes(n1, gone));
    const flows = await pingFlowsRunning(lab);
    const from = agentLog(n1).length;
    const block = ['INPUT', '-p', 'tcp', '-s', n1.underlayIp, '--dport', '2379', '-j', 'REJECT', '--reject-with', 'tcp-reset'];
    await run(['iptables', '-I', ...block], { netns: lab.etcd!.netns });
    try {
      await run(['ss', '-K', 'dst', n1.underlayIp], { netns: lab.etcd!.netns });
      await etcdctl(lab, 'del', leaseKey(gone));
      await etcdctl(lab, 'put', leaseKey(added), fakeLease('192.168.181.96', '02:00:00:00:00:96'));
      const revision = /"revision":(\d+)/.exec((await etcdctl(lab, 'get', 'x', '-w', 'json')).stdout)![1];
      await etcdctl(lab, 'compact', revision);
      expect(await routes(n1, gone)).toBe(true); // n1 has heard of neither change
    } finally {
      await run(['iptables', '-D', ...block], { netns: lab.etcd!.netns });
    }
    const lastFault = Date.now();
    await until('n1 to apply both changes after its resync', async () => !(await routes(n1, gone)) && routes(n1, added), 30_000);
    await etcdctl(lab, 'del', leaseKey(added));
    await until('the added lease to leave n1 again', async () => !(await routes(n1, added)), 30_000);
    const loss = await stopPingFlows(flows, { lastFault });
    report(`etcd compacted past a cut-off agent's revision: resynced, put and delete both applied; ${lossLine(loss, 'the cut ended')}`);
    expect(agentLog(n1).slice(from)).toMatch(/lease watch (reconnected|ended), resyncing/);
    expectNoLoss(loss, lab);
  }, 120_000);

  it('a node cut from etcd until its lease expires: peers remove it; back, it gets the same subnet and traffic resumes', async () => {
    const n3 = node('n3');
    const others = lab.nodes.filter((n) => n !== n3);
    const subnetFile = readFileSync(n3.subnetFile, 'utf8');
    const from = agentLog(n3).length;
    const throughout = await pingFlowsRunning(lab);
    const block = ['INPUT', '-p', 'tcp', '-s', n3.underlayIp, '--dport', '2379', '-j', 'REJECT', '--reject-with', 'tcp-reset'];
    await run(['iptables', '-I', ...block], { netns: lab.etcd!.netns });
    const cutAt = Date.now();
    let removedAfterS: number;
    try {
      await run(['ss', '-K', 'dst', n3.underlayIp], { netns: lab.etcd!.netns });
      await until(
        'n1 and n2 to drop n3 once its lease expired',
        async () => (await Promise.all(others.map((n) => routes(n, n3.subnet)))).every((r) => !r),
        60_000,
      );
      removedAfterS = (Date.now() - cutAt) / 1000;
      expect((await etcdctl(lab, 'get', leaseKey(n3.subnet), '--keys-only')).stdout.trim()).toBe('');
      expect(isAgent(n3.agent!.pid, n3.pinDir)).toBe(true);
      // By design: a node whose lease expired is no longer a peer, its VXLAN is refused.
      expect((await ping(pod('n1-p1').netns, pod('n3-p1').ip)).code).not.toBe(0);
    } finally {
      await run(['iptables', '-D', ...block], { netns: lab.etcd!.netns });
    }
    const reconnectAt = Date.now();
    await until('n3 back on n1 and n2 under the same subnet', async () => (await Promise.all(others.map((n) => routes(n, n3.subnet)))).every(Boolean), 60_000);
    const backAt = Date.now();
    const backAfterS = (backAt - reconnectAt) / 1000;
    const perFlow = await stopPingFlowsPerFlow(throughout, { lastFault: backAt });
    const during = { sent: perFlow.reduce((a, f) => a + f.sent, 0), lost: perFlow.reduce((a, f) => a + f.lost, 0) };
    // Only n3 stopped being a peer: every lost packet is on a flow to or from n3's pod...
    expect(perFlow.filter((f) => f.lost > 0 && f.from !== 'n3' && f.to !== 'n3')).toEqual([]);
    // ...and none once n1 and n2 route to it again, on any flow.
    expect(
      perFlow
        .filter((f) => f.lostAfterLastFault > 0 || f.sentAfterLastFault === 0)
        .map((f) => ({ ...f, lostSentAt: f.lostSentAt.slice(0, 10).map((t) => new Date(t).toISOString()) })),
    ).toEqual([]);
    const since = agentLog(n3).slice(from);
    expect(since).toMatch(/our subnet lease is gone from etcd: re-acquiring/);
    expect(since).toContain(`"msg":"lease re-acquired","lease":"${n3.subnet}"`);
    expect(since).not.toContain('lease moved to another subnet');
    expect(readFileSync(n3.subnetFile, 'utf8')).toBe(subnetFile);
    const flows = await pingFlowsRunning(lab);
    const loss = await stopPingFlows(flows, { lastFault: Date.now() }); // fresh flows, for 2 s
    report(
      `node cut from etcd, TTL 10 s: peers removed it after ${removedAfterS!.toFixed(1)} s; ${backAfterS.toFixed(1)} s after reconnecting it held ${n3.subnet} again; ` +
        `${during.lost} of ${during.sent} packets lost across the cut (to and from n3 while it was no peer), ${perFlow.reduce((a, f) => a + f.lostAfterLastFault, 0)} of ${perFlow.reduce((a, f) => a + f.sentAfterLastFault, 0)} once it was back; afterwards ${loss.lost} of ${loss.sent}`,
    );
    expectNoLoss(loss, lab);
  }, 180_000);
});

describe('upgrades', () => {
  let newBuild: string;
  beforeAll(() => {
    // "A new build": the same sources compiled for another BPF ISA level, so every program
    // differs instruction by instruction (another tag) while behaving the same.
    newBuild = mkdtempSync(path.join(os.tmpdir(), 'tr-upgrade-'));
    for (const f of readdirSync(path.join(repoRoot, 'bpf')).filter((f) => f === 'Makefile' || f === 'include' || f.endsWith('.bpf.c')))
      cpSync(path.join(repoRoot, 'bpf', f), path.join(newBuild, f), { recursive: true });
    execFileSync('make', ['-s', '-C', newBuild, 'CLANG=clang -mcpu=v3'], { stdio: 'inherit' });
  });
  afterAll(() => {
    rmSync(newBuild, { recursive: true, force: true });
  });

  const linkOf = async (n: LabNode, which: string) => {
    const link = JSON.parse((await run(['bpftool', '-j', 'link', 'show', 'pinned', `${n.pinDir}/links/${which}`])).stdout) as { id: number; prog_id: number };
    const prog = JSON.parse((await run(['bpftool', '-j', 'prog', 'show', 'id', String(link.prog_id)])).stdout) as { tag: string };
    return { id: link.id, tag: prog.tag };
  };

  /** Restarts the node's agent on the objects in `objectDir` (undefined: the checkout's build). */
  async function restartOnBuild(n: LabNode, objectDir: string | undefined): Promise<string> {
    if (objectDir) process.env.TWILL_BPF_DIR = objectDir;
    try {
      return await bounceAgent(lab, n, 'SIGTERM', AGENT_ARGS);
    } finally {
      delete process.env.TWILL_BPF_DIR;
    }
  }

  it("the agent restarted on a new build swaps the programs on the existing links (the pods' too), and back, without losing a packet", async () => {
    const n2 = node('n2');
    const podLink = `pods/${readdirSync(`${n2.pinDir}/links/pods`)[0]}`;
    const links = async () => ({ encap: await linkOf(n2, 'encap'), decap: await linkOf(n2, 'decap'), [podLink]: await linkOf(n2, podLink) });
    const before = await links();
    const endpoints = (await mapEntries(n2)).endpoints;
    const flows = await pingFlowsRunning(lab);
    const upgrade = await restartOnBuild(n2, path.join(newBuild, 'build'));
    const upgraded = await links();
    const rollback = await restartOnBuild(n2, undefined);
    const lastFault = Date.now();
    const rolledBack = await links();
    const loss = await stopPingFlows(flows, { lastFault });
    report(`upgrade to a new build of the programs and back on n2 (encap, decap and its pod's link): ${lossLine(loss, 'the rollback')}`);
    expect(endpoints).toHaveLength(1);
    expect((await mapEntries(n2)).endpoints).toEqual(endpoints);
    for (const which of ['encap', 'decap', podLink]) {
      expect(upgraded[which].id, which).toBe(before[which].id); // the same link...
      expect(upgraded[which].tag, which).not.toBe(before[which].tag); // ...running other code
      expect(rolledBack[which]).toEqual(before[which]);
    }
    for (const l of [upgrade, rollback]) expect(l).toContain('"swapped":{"encap":true,"decap":true}');
    expectNoLoss(loss, lab);
  }, 120_000);

  it.each(['twill_stats', 'twill_subnets'])(
    'a pinned %s with an older layout is replaced, not fatal, and forwarding goes on',
    async (mapName) => {
      const n2 = node('n2');
      await stopAgent(n2.agent!.pid, n2.pinDir);
      const pin = `${n2.pinDir}/${mapName}`;
      const current = JSON.parse((await run(['bpftool', '-j', 'map', 'show', 'pinned', pin])).stdout) as {
        type: string;
        bytes_key: number;
        bytes_value: number;
        max_entries: number;
      };
      // What an older build would have left: the same map, 8 bytes smaller per value. The
      // programs attached now keep their own reference to the map they were loaded with.
      rmSync(pin);
      await run([
        'bpftool',
        'map',
        'create',
        pin,
        'type',
        current.type,
        'key',
        String(current.bytes_key),
        'value',
        String(current.bytes_value - 8),
        'entries',
        String(current.max_entries),
        'name',
        mapName,
      ]);
      const flows = await pingFlowsRunning(lab);
      const restart = await bounceAgent(lab, n2, 'SIGTERM', AGENT_ARGS);
      const loss = await stopPingFlows(flows, { lastFault: Date.now() });
      report(`pinned ${mapName} with an older layout on n2, agent restarted: ${lossLine(loss, 'the restart')}`);
      expect(restart).toMatch(new RegExp(`"msg":"pinned map has another layout than this build: replacing it","pin":"${pin}"`));
      const replaced = JSON.parse((await run(['bpftool', '-j', 'map', 'show', 'pinned', pin])).stdout) as { bytes_value: number };
      expect(replaced.bytes_value).toBe(current.bytes_value);
      const maps = await readMaps(n2);
      expect(maps.subnets.map((s) => s.subnet).sort()).toEqual(
        lab.nodes
          .filter((n) => n !== n2)
          .map((n) => n.subnet)
          .sort(),
      );
      expectNoLoss(loss, lab);
    },
    120_000,
  );
});
