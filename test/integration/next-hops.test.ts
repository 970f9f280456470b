import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatapathMaps } from '../../controller/dataplane/datapath-maps.js';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { linkShow } from '../../controller/netlink/ip.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs } from '../support/build.js';
import { stopAll } from '../support/proc.js';
import { bounceAgent, labUpFresh, lossLine, pingFlowsRunning, stopPingFlowsPerFlow, twill, until } from '../support/lab-session.js';

/*
 * twill_next_hops (controller/dataplane/next-hops.ts): the underlay MAC the programs address a
 * peer's packets to, copied from the kernel's neighbour table. Lab "tnh": 2 nodes, one pod each.
 */
const LAB = 'tnh';
let lab: LabState;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const podOn = (n: LabNode) => lab.pods.find((p) => p.node === n.name)!;

function nextHops(n: LabNode): Map<string, string> {
  const maps = DatapathMaps.open(n.pinDir);
  try {
    return maps.readNextHops();
  } finally {
    maps.close();
  }
}
function writeNextHops(n: LabNode, hops: Map<string, string>): void {
  const maps = DatapathMaps.open(n.pinDir);
  try {
    maps.syncNextHops(hops);
  } finally {
    maps.close();
  }
}
const underlayMac = async (n: LabNode) => (await linkShow('eth0', { netns: n.netns }))!.address!;
/** Whether 3 pings from `from`'s pod to `to`'s pod get any answer. */
const pings = async (from: LabNode, to: LabNode) =>
  (await run(['ping', '-c', '3', '-i', '0.2', '-W', '1', podOn(to).ip], { netns: podOn(from).netns, allowFailure: true })).code === 0;

beforeAll(async () => {
  buildBpf();
  buildTs();
  lab = await labUpFresh(LAB, ['--nodes', '2', '--pods-per-node', '1', '--underlay', '192.168.162.0/24']);
}, 180_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
});

describe("the peers' underlay next hops", () => {
  it("holds each peer's underlay MAC once the kernel has resolved it", async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    expect(await pings(n1, n2)).toBe(true);
    const mac = await underlayMac(n2);
    await until(`n1's next hop for n2 (${n2.underlayIp})`, async () => nextHops(n1).get(n2.underlayIp) === mac);
  });

  it("is what the programs send with: with another host's MAC there n2 gets nothing, with none the kernel's neighbour table is used", async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    // The etcd host's MAC: on the lab's bridge, a frame to it reaches that host alone (an unknown
    // MAC would be flooded to n2 as well, whose decap does not look at the Ethernet destination).
    const etcdIp = new URL(lab.etcd!.endpoint).hostname;
    const neighbours = JSON.parse((await run(['ip', '-j', 'neigh', 'show', etcdIp], { netns: n1.netns })).stdout) as { lladdr?: string }[];
    const elsewhere = neighbours[0]?.lladdr;
    expect(elsewhere).toMatch(/^[0-9a-f:]{17}$/);
    // n1's agent is stopped (its datapath stays), so nothing puts the right MAC back meanwhile.
    const answered: Record<string, boolean> = {};
    await bounceAgent(lab, n1, 'SIGTERM', [], async () => {
      writeNextHops(n1, new Map([[n2.underlayIp, elsewhere!]]));
      answered.wrongMac = await pings(n1, n2);
      writeNextHops(n1, new Map());
      answered.noEntry = await pings(n1, n2);
    });
    expect(answered).toEqual({ wrongMac: false, noEntry: true });
    await until("n1's agent to write n2's next hop again", async () => (await pings(n1, n2)) && nextHops(n1).get(n2.underlayIp) === (await underlayMac(n2)));
  });

  it('follows a peer whose underlay NIC was replaced (new MAC, same address, agent restarted); nothing is lost once it has', async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    const flows = await pingFlowsRunning(lab);
    const newMac = '02:54:00:00:01:02';
    expect(await underlayMac(n2)).not.toBe(newMac);
    await run(['ip', 'link', 'set', 'eth0', 'address', newMac], { netns: n2.netns });
    await bounceAgent(lab, n2, 'SIGTERM');
    await until(`n1's next hop for n2 to be ${newMac}`, async () => nextHops(n1).get(n2.underlayIp) === newMac, 60_000);
    const followed = Date.now();
    const perFlow = await stopPingFlowsPerFlow(flows, { lastFault: followed });
    const sum = (k: 'sent' | 'lost' | 'sentAfterLastFault' | 'lostAfterLastFault') => perFlow.reduce((a, f) => a + f[k], 0);
    console.log(
      `RELIABILITY next hops: a peer's underlay MAC changed and its agent restarted: ${lossLine({ sent: sum('sent'), lost: sum('lost'), sentAfterLastFault: sum('sentAfterLastFault'), lostAfterLastFault: sum('lostAfterLastFault') }, "n1's map had the new MAC")}`,
    );
    expect(perFlow.map((f) => ({ flow: `${f.from} -> ${f.to}`, lostAfter: f.lostAfterLastFault, sentAfter: f.sentAfterLastFault > 0 }))).toEqual(
      perFlow.map((f) => ({ flow: `${f.from} -> ${f.to}`, lostAfter: 0, sentAfter: true })),
    );
  }, 120_000);
});
