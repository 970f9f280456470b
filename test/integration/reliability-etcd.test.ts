import { readFileSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAgent, stopAgent } from '../../controller/lab/agents.js';
import { startLabEtcdMember, stopLabEtcdMember } from '../../controller/lab/etcd-cluster.js';
import { labDown, labUp } from '../../controller/lab/lab.js';
import { restartAgent } from '../../controller/lab/node-daemons.js';
import type { LabState } from '../../controller/lab/state.js';
import { formatCidr } from '../../controller/net/ipv4.js';
import { parseSubnetFile } from '../../controller/subnet/subnet-file.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs } from '../support/build.js';
import {
  agentLog,
  bounceAgent,
  etcdctl,
  expectNoLoss,
  fakeLease,
  leaseKey,
  lossLine,
  mapEntries,
  PREFIX,
  pingFlowsRunning,
  routes,
  stopPingFlows,
  until,
} from '../support/lab-session.js';
import { stopAll } from '../support/proc.js';

/*
 * etcd as operators run it: a 3-member cluster, agents given every endpoint. Members are taken
 * away under traffic: a follower, then the leader. Lab "trc", underlay 192.168.183.0/24.
 * And 20 agents started at once against one etcd (lab "trd", underlay 192.168.184.0/24).
 */
const report = (line: string) => console.log(`RELIABILITY ${line}`);

afterAll(async () => {
  await stopAll();
});

describe('a 3-member etcd cluster loses a follower, then the leader', () => {
  const LAB = 'trc';
  let lab: LabState;
  const etcdctlAt = (index: number, ...args: string[]) => {
    const m = lab.etcdMembers![index];
    return run(['etcdctl', '--endpoints', m.endpoint, '--command-timeout=5s', ...args], { netns: m.netns, env: { ...process.env, ETCDCTL_API: '3' } });
  };
  /** Index of the member that leads now, as the members that answer see it; -1 if none does. */
  async function leaderIndex(): Promise<number> {
    for (const [i, m] of lab.etcdMembers!.entries()) {
      const res = await run(['etcdctl', '--endpoints', m.endpoint, '--command-timeout=2s', 'endpoint', 'status', '-w', 'json'], {
        netns: m.netns,
        allowFailure: true,
        env: { ...process.env, ETCDCTL_API: '3' },
      });
      if (res.code !== 0) continue;
      // Ids are 64-bit: compared as the digits etcdctl printed, never as JSON numbers.
      const self = /"member_id":(\d+)/.exec(res.stdout)?.[1];
      const leader = /"leader":(\d+)/.exec(res.stdout)?.[1];
      if (leader === '0' || !leader) continue;
      if (self === leader) return i;
    }
    return -1;
  }
  async function awaitLeader(what: string): Promise<number> {
    const found = await until(
      what,
      async () => {
        const index = await leaderIndex();
        return index >= 0 ? { index } : undefined;
      },
      30_000,
    );
    return found.index;
  }
  /** A lease put through a live member reaches every agent, and leaves them again on delete. */
  async function agentsFollow(viaIndex: number, subnet: string): Promise<void> {
    await etcdctlAt(viaIndex, 'put', leaseKey(subnet), fakeLease('192.168.183.99', '02:00:00:00:00:99'));
    await until(`every agent to see ${subnet}`, async () => (await Promise.all(lab.nodes.map((n) => routes(n, subnet)))).every(Boolean), 30_000);
    await etcdctlAt(viaIndex, 'del', leaseKey(subnet));
    await until(`every agent to see ${subnet} deleted`, async () => (await Promise.all(lab.nodes.map((n) => routes(n, subnet)))).every((r) => !r), 30_000);
  }
  const renewedSince = (from: number[]) => lab.nodes.every((n, i) => agentLog(n).slice(from[i]).includes('"msg":"lease renewed"'));
  /** Per node, the members its agent holds an established etcd connection to, from the node's own socket table. */
  async function connectedMembers(): Promise<number[][]> {
    return Promise.all(
      lab.nodes.map(async (n) => {
        const out = (await run(['ss', '-Htn', 'state', 'established', 'dport', '= :2379'], { netns: n.netns })).stdout;
        const peers = new Set([...out.matchAll(/\s(\d+\.\d+\.\d+\.\d+):2379\b/g)].map((m) => m[1]));
        return lab.etcdMembers!.flatMap((m, i) => (peers.has(new URL(m.endpoint).hostname) ? [i] : []));
      }),
    );
  }

  beforeAll(async () => {
    buildBpf();
    buildTs();
    await labDown(LAB);
    lab = await labUp({ name: LAB, nodes: 3, podsPerNode: 1, underlayCidr: '192.168.183.0/24', etcdMembers: 3 });
    // 10 s leases: renewals every 5 s show the agents keep talking to the cluster.
    for (const n of lab.nodes) await bounceAgent(lab, n, 'SIGTERM', ['--subnet-lease-ttl=10']);
  }, 240_000);
  afterAll(async () => {
    await labDown(LAB);
  }, 120_000);

  it('agents are given all three endpoints', () => {
    for (const n of lab.nodes) {
      const cmdline = readFileSync(`/proc/${n.agent!.pid}/cmdline`, 'utf8');
      expect(cmdline).toContain('--etcd-endpoints=http://192.168.183.250:2379,http://192.168.183.249:2379,http://192.168.183.248:2379');
    }
  });

  it('under traffic: each loss leaves the datapath alone and the agents renewing and following changes; nothing lost', async () => {
    const entries = await Promise.all(lab.nodes.map(mapEntries));
    const flows = await pingFlowsRunning(lab);
    const steps: string[] = [];

    const leader = await awaitLeader('a leader');
    const follower = [0, 1, 2].find((i) => i !== leader)!;
    await stopLabEtcdMember(lab, follower);
    let from = lab.nodes.map((n) => agentLog(n).length);
    const survivor = [0, 1, 2].find((i) => i !== follower)!;
    await agentsFollow(survivor, '10.244.250.0/24');
    await until('every agent to renew with a follower down', async () => renewedSince(from), 20_000);
    steps.push(`follower ${lab.etcdMembers![follower].endpoint} down`);

    // The leader goes too: with two members down there is no quorum, so the follower comes
    // back first and the leader is taken from a healthy 3-member cluster.
    await startLabEtcdMember(lab, follower);
    const oldLeader = await awaitLeader('a leader with all three members up');
    await stopLabEtcdMember(lab, oldLeader);
    const other = [0, 1, 2].find((i) => i !== oldLeader)!;
    const newLeader = await awaitLeader('a new leader');
    from = lab.nodes.map((n) => agentLog(n).length);
    await agentsFollow(other, '10.244.251.0/24');
    await until('every agent to renew after the leader was lost', async () => renewedSince(from), 20_000);
    steps.push(`leader ${lab.etcdMembers![oldLeader].endpoint} down, ${lab.etcdMembers![newLeader].endpoint} elected`);
    await startLabEtcdMember(lab, oldLeader);

    // The member the agents actually talk to goes: found from their sockets, so the move of the
    // client to a live member is what is tested, whichever member that happens to be.
    await awaitLeader('a leader with all three members up again');
    const before = await until('every agent connected to a member', async () => {
      const c = await connectedMembers();
      return c.every((members) => members.length > 0) && c;
    });
    const counts = [0, 1, 2].map((i) => before.filter((members) => members.includes(i)).length);
    const used = counts.indexOf(Math.max(...counts));
    // The check below is about the agents on that member: there is at least one.
    expect(counts[used]).toBeGreaterThan(0);
    await stopLabEtcdMember(lab, used);
    from = lab.nodes.map((n) => agentLog(n).length);
    const live = [0, 1, 2].find((i) => i !== used)!;
    await awaitLeader('a leader without the members the agents used');
    await agentsFollow(live, '10.244.252.0/24');
    await until('every agent to renew after its member was lost', async () => renewedSince(from), 20_000);
    const after = await connectedMembers();
    lab.nodes.forEach((n, i) => {
      if (before[i].includes(used)) expect({ node: n.name, members: after[i] }).toEqual({ node: n.name, members: expect.not.arrayContaining([used]) });
      expect(after[i].length).toBeGreaterThan(0);
    });
    steps.push(`the member ${counts[used]} of 3 agents were connected to (${lab.etcdMembers![used].endpoint}) down; they moved to another`);
    await startLabEtcdMember(lab, used);
    const lastFault = Date.now();

    const loss = await stopPingFlows(flows, { lastFault });
    report(
      `3-member etcd, ${steps.join(', then ')}: ${lossLine(loss, 'the member came back')}; every agent renewed and followed a put and a delete after each loss`,
    );
    expect(await Promise.all(lab.nodes.map(mapEntries))).toEqual(entries);
    for (const n of lab.nodes) expect(isAgent(n.agent!.pid, n.pinDir)).toBe(true);
    // Two members of three were up at every loss: no lease may have expired on the way.
    expect(lab.nodes.filter((n) => agentLog(n).includes('subnet lease is gone')).map((n) => n.name)).toEqual([]);
    expectNoLoss(loss, lab);
  }, 240_000);
});

describe('20 agents starting at once against one etcd', () => {
  const LAB = 'trd';
  afterAll(async () => {
    await labDown(LAB);
  }, 180_000);

  it('20 agents spawned together for exactly 20 subnets: each gets its own, none crashes or logs an error', async () => {
    await labDown(LAB);
    const lab = await labUp({ name: LAB, nodes: 20, podsPerNode: 0, underlayCidr: '192.168.184.0/24' });
    // labUp starts its agents one node at a time. Start them again truly together, with no
    // lease or subnet-file hint left, and only 20 subnets to share: every allocation contends.
    for (const n of lab.nodes) await stopAgent(n.agent!.pid, n.pinDir);
    await etcdctl(lab, 'del', '--prefix', `${PREFIX}/subnets/`);
    await etcdctl(
      lab,
      'put',
      `${PREFIX}/config`,
      JSON.stringify({ Network: '10.244.0.0/16', SubnetLen: 24, SubnetMin: '10.244.1.0', SubnetMax: '10.244.20.0', Backend: { Type: 'vxlan' } }),
    );
    for (const n of lab.nodes) rmSync(n.subnetFile, { force: true });
    const from = lab.nodes.map((n) => agentLog(n).length);
    for (const n of lab.nodes) restartAgent(lab, n);
    await until('all 20 agents ready', async () => lab.nodes.every((n, i) => agentLog(n).slice(from[i]).includes('"msg":"ready"')), 120_000);

    const logs = lab.nodes.map((n, i) => agentLog(n).slice(from[i]));
    const subnets = lab.nodes.map((n) => parseSubnetFile(readFileSync(n.subnetFile, 'utf8')).subnet!);
    const races = logs.reduce((sum, l) => sum + (l.match(/lost a race for a subnet/g)?.length ?? 0), 0);
    report(`20 agents spawned at once for 20 subnets: ${new Set(subnets.map(formatCidr)).size} distinct subnets, ${races} lost races retried`);
    // 10.244.1.0/24 .. 10.244.20.0/24, each once.
    expect(subnets.map((s) => (s.ip >>> 8) & 0xff).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    lab.nodes.forEach((n, i) => {
      expect(isAgent(n.agent!.pid, n.pinDir), n.name).toBe(true);
      expect(logs[i], n.name).not.toMatch(/"level":"error"/);
    });
    // Every node routes the 19 others.
    await until('every node to know the 19 others', async () => (await Promise.all(lab.nodes.map(mapEntries))).every((m) => m.subnets.length === 19), 30_000);
  }, 300_000);
});
