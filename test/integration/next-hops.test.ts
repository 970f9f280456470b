import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MapsDoc } from '../../controller/cli/maps.js';
import { DatapathMaps } from '../../controller/dataplane/datapath-maps.js';
import type { LabNode, LabPod, LabState } from '../../controller/lab/state.js';
import { linkShow } from '../../controller/netlink/ip.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs } from '../support/build.js';
import { stopAll } from '../support/proc.js';
import { bounceAgent, labUpFresh, lossLine, pingFlowsRunning, stopPingFlowsPerFlow, twill, until } from '../support/lab-session.js';

/*
 * twill_next_hops and twill_next_hops6 (controller/dataplane/next-hops.ts): the underlay MAC the
 * programs address a peer's packets to, copied from the kernel's neighbour table (ARP for IPv4,
 * neighbour discovery for IPv6). Lab "tnh": 2 dual-stack nodes, one pod each.
 */
const LAB = 'tnh';
let lab: LabState;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const podOn = (n: LabNode) => lab.pods.find((p) => p.node === n.name)!;
const v6Of = (p: LabPod) => (p.ips ?? []).find((a) => a.includes(':'))!;
const families = [
  { family: 'IPv4', publicIp: (n: LabNode) => n.underlayIp, podIp: (p: LabPod) => p.ip },
  { family: 'IPv6', publicIp: (n: LabNode) => n.underlayIp6!, podIp: v6Of },
] as const;

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
/** Whether 3 pings from `from`'s pod to `to`'s pod (at its address of `podIp`'s family) get any answer. */
const pings = async (from: LabNode, to: LabNode, podIp: (p: LabPod) => string = (p) => p.ip) =>
  (await run(['ping', '-c', '3', '-i', '0.2', '-W', '1', podIp(podOn(to))], { netns: podOn(from).netns, allowFailure: true })).code === 0;
/** Both families' answers, for one assertion over both. */
const pingsBoth = async (from: LabNode, to: LabNode) =>
  Object.fromEntries(await Promise.all(families.map(async (f) => [f.family, await pings(from, to, f.podIp)] as const)));

beforeAll(async () => {
  buildBpf();
  buildTs();
  lab = await labUpFresh(LAB, ['--nodes', '2', '--pods-per-node', '1', '--ip-family', 'dual', '--underlay', '192.168.162.0/24']);
}, 180_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
});

describe("the peers' underlay next hops", () => {
  it.each(families)("holds each peer's underlay MAC once the kernel has resolved it ($family)", async ({ publicIp, podIp }) => {
    const [n1, n2] = [node('n1'), node('n2')];
    expect(publicIp(n2)).toBeTruthy();
    expect(await pings(n1, n2, podIp)).toBe(true);
    const mac = await underlayMac(n2);
    await until(`n1's next hop for n2 (${publicIp(n2)})`, async () => nextHops(n1).get(publicIp(n2)) === mac);
  });

  it('`twill maps --json` lists each family under its own map: IPv4 in nextHops, IPv6 in ipv6.nextHops', async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    const mac = await underlayMac(n2);
    expect(await pingsBoth(n1, n2)).toEqual({ IPv4: true, IPv6: true });
    await until("n1's next hops for n2 in both families", async () => families.every((f) => nextHops(n1).get(f.publicIp(n2)) === mac));
    const doc = JSON.parse((await twill(['maps', '--pin-dir', n1.pinDir, '--json'])).stdout) as MapsDoc;
    expect({ nextHops: doc.nextHops, ipv6: doc.ipv6?.nextHops }).toEqual({
      nextHops: [{ publicIp: n2.underlayIp, mac }],
      ipv6: [{ publicIp: n2.underlayIp6, mac }],
    });
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
    const answered: Record<string, Record<string, boolean>> = {};
    await bounceAgent(lab, n1, 'SIGTERM', [], async () => {
      writeNextHops(n1, new Map(families.map((f) => [f.publicIp(n2), elsewhere!])));
      answered.wrongMac = await pingsBoth(n1, n2);
      writeNextHops(n1, new Map());
      answered.noEntry = await pingsBoth(n1, n2);
    });
    expect(answered).toEqual({ wrongMac: { IPv4: false, IPv6: false }, noEntry: { IPv4: true, IPv6: true } });
    const mac = await underlayMac(n2);
    await until("n1's agent to write n2's next hops again", async () => {
      const answers = await pingsBoth(n1, n2);
      const hops = nextHops(n1);
      return answers.IPv4 && answers.IPv6 && families.every((f) => hops.get(f.publicIp(n2)) === mac);
    });
  });

  it('follows a peer whose underlay NIC was replaced (new MAC, same addresses, agent restarted); nothing is lost once it has', async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    const flows = [...(await pingFlowsRunning(lab)), ...(await pingFlowsRunning(lab, v6Of))];
    const newMac = '02:54:00:00:01:02';
    expect(await underlayMac(n2)).not.toBe(newMac);
    await run(['ip', 'link', 'set', 'eth0', 'address', newMac], { netns: n2.netns });
    await bounceAgent(lab, n2, 'SIGTERM');
    await until(`n1's next hops for n2 to be ${newMac}`, async () => families.every((f) => nextHops(n1).get(f.publicIp(n2)) === newMac), 60_000);
    const followed = Date.now();
    const perFlow = await stopPingFlowsPerFlow(flows, { lastFault: followed });
    const sum = (k: 'sent' | 'lost' | 'sentAfterLastFault' | 'lostAfterLastFault') => perFlow.reduce((a, f) => a + f[k], 0);
    console.log(
      `RELIABILITY next hops: a peer's underlay MAC changed and its agent restarted (IPv4 and IPv6 flows): ${lossLine({ sent: sum('sent'), lost: sum('lost'), sentAfterLastFault: sum('sentAfterLastFault'), lostAfterLastFault: sum('lostAfterLastFault') }, "n1's maps had the new MAC")}`,
    );
    expect(perFlow.map((f) => ({ flow: `${f.from} -> ${f.to}`, lostAfter: f.lostAfterLastFault, sentAfter: f.sentAfterLastFault > 0 }))).toEqual(
      perFlow.map((f) => ({ flow: `${f.from} -> ${f.to}`, lostAfter: 0, sentAfter: true })),
    );
  }, 120_000);
});
