import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs } from '../support/build.js';
import { stopAll } from '../support/proc.js';
import { labUpFresh, pingFlowsRunning, stopPingFlowsPerFlow, twill } from '../support/lab-session.js';

/*
 * The negative control of the zero-loss tests' counting (test/support/lab-session.ts): an outage
 * in the very last moments of a run must be reported. Lab "tnc", underlay 192.168.121.0/24:
 * 2 nodes, one pod each, so 2 flows.
 */
const LAB = 'tnc';
const BLACKHOLE_MS = 300;
let lab: LabState;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  buildBpf();
  buildTs();
  lab = await labUpFresh(LAB, ['--nodes', '2', '--pods-per-node', '1', '--underlay', '192.168.121.0/24']);
}, 180_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
});

/** nft in the underlay namespace: every frame n1 sends is dropped at its bridge port (no BPF there to pass it by). */
const blackhole = ['table', 'netdev', 'tnc_blackhole'];
const nft = (...args: string[]) => run(['nft', ...args], { netns: lab.underlay.netns });

describe('loss counting', () => {
  it(`reports a ${BLACKHOLE_MS} ms blackhole that ends just before the flows stop, as loss within the blackhole`, async () => {
    const flows = await pingFlowsRunning(lab);
    await sleep(1000);
    await nft('add', ...blackhole);
    const dropFrom = Date.now();
    await nft('add', 'chain', ...blackhole.slice(1), 'from_n1', '{ type filter hook ingress device "n1" priority 0; policy drop; }');
    try {
      await sleep(BLACKHOLE_MS);
    } finally {
      await nft('delete', ...blackhole);
    }
    const dropTo = Date.now();
    // Stopped at once: the packets sent in the blackhole are the flows' last unanswered ones, all
    // within their last second, which ping stopped by SIGINT left in flight and the old
    // counting forgave. Counted from the blackhole's start, they are the loss after the fault.
    const per = await stopPingFlowsPerFlow(flows, { lastFault: dropFrom, afterMs: 0 });
    console.log(`loss control: ${BLACKHOLE_MS} ms blackhole at the end: ${per.map((f) => `${f.from} -> ${f.to} ${f.lost} of ${f.sent} lost`).join(', ')}`);
    for (const f of per) {
      expect(f.lost, `${f.from} -> ${f.to}`).toBeGreaterThan(0);
      expect(f.lostAfterLastFault).toBe(f.lost); // nothing lost before the blackhole
      // Every lost packet was sent in the blackhole (a few ms of slack before it: one in flight as it began).
      for (const at of f.lostSentAt) expect(at).toBeGreaterThanOrEqual(dropFrom - 50);
      for (const at of f.lostSentAt) expect(at).toBeLessThanOrEqual(dropTo);
      // ...and most of it was: 20 ms apart, a 300 ms blackhole takes about 15 of them.
      expect(f.lost).toBeGreaterThanOrEqual(BLACKHOLE_MS / 20 / 2);
    }
  });
});
