import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAttachState } from '../../controller/dataplane/attach-state.js';
import { BpfLink } from '../../controller/bpf/libbpf.js';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { repoRoot } from '../../controller/util/paths.js';
import { buildBpf, buildTs } from '../support/build.js';
import { stopAll } from '../support/proc.js';
import { bounceAgent, craftEnv, expectNoLoss, labUpFresh, pingFlowsRunning, readMaps, stopPingFlows, twill } from '../support/lab-session.js';

/*
 * --decap-hook: auto (tc on this veth underlay), XDP, and moving a running node between the two
 * hooks without losing a packet. Lab "twh": 2 nodes, one pod each.
 */
const LAB = 'twh';
const craft = path.join(repoRoot(), 'test/support/craft.py');
let lab: LabState;
// enum bpf_link_type and enum bpf_attach_type (uapi/linux/bpf.h)
const LINK_TYPE_XDP = 6;
const LINK_TYPE_TCX = 11;
const BPF_TCX_INGRESS = 46;
function linkInfo(pin: string) {
  const link = BpfLink.fromPin(pin);
  try {
    return link.info();
  } finally {
    link.close();
  }
}
const decapLink = (n: LabNode) => linkInfo(`${n.pinDir}/links/decap`);
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const pod = (name: string) => lab.pods.find((p) => p.name === name)!;

beforeAll(async () => {
  buildBpf();
  buildTs();
  lab = await labUpFresh(LAB, ['--nodes', '2', '--pods-per-node', '1', '--underlay', '192.168.78.0/24']);
}, 180_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
});

/** Moves every node to `hook` under continuous cross-node pings, which go on 2 s after the last move; returns the pings lost. */
async function moveTo(hook: 'xdp' | 'tc' | 'auto'): Promise<Awaited<ReturnType<typeof stopPingFlows>>> {
  const flows = await pingFlowsRunning(lab);
  for (const n of lab.nodes) await bounceAgent(lab, n, 'SIGTERM', ['--decap-hook', hook]);
  return stopPingFlows(flows, { lastFault: Date.now() });
}

describe('where decap runs', () => {
  it('auto puts decap at tc ingress on a veth underlay, says why, and twill status shows it', async () => {
    for (const n of lab.nodes) {
      expect(readAttachState(n.pinDir)?.decap).toMatchObject({ mode: 'tcx', hook: 'tc', requested: 'auto', reason: expect.stringMatching(/veth/) });
      expect(decapLink(n)).toMatchObject({ type: LINK_TYPE_TCX, attachType: BPF_TCX_INGRESS });
      expect(existsSync(`${n.pinDir}/links/deliver`)).toBe(false);
      expect((await run(['ip', '-details', 'link', 'show', 'eth0'], { netns: n.netns })).stdout).not.toMatch(/xdp/);
      const status = JSON.parse((await twill(['status', '--pin-dir', n.pinDir, '--subnet-file', n.subnetFile, '--json'])).stdout);
      expect(status.attach.decap).toMatchObject({ hook: 'tc', mode: 'tcx' });
      expect(status.fastPath.hooks.receive).toMatch(/^tc decap on eth0/);
    }
  });

  it('decaps and counts traffic, and refuses VXLAN with a wrong VNI or from an unknown source', async () => {
    const before = (await readMaps(node('n1'))).stats;
    const ping = await run(['ping', '-c', '5', '-i', '0.05', '-W', '1', pod('n1-p1').ip], { netns: pod('n2-p1').netns, allowFailure: true });
    expect(ping.stdout).toMatch(/5 received/);
    const send = (src: string, kind: string) =>
      run(['/usr/bin/python3', craft, kind, src, node('n1').underlayIp, pod('n1-p1').ip, '1', '8472', node('n1').vtepMac], {
        netns: node('n2').netns,
        env: craftEnv(lab, src),
      });
    await send(node('n2').underlayIp, 'bad-vni');
    await send('192.168.78.99', 'good');
    const after = (await readMaps(node('n1'))).stats;
    expect(after.decap_packets - before.decap_packets).toBeGreaterThanOrEqual(5);
    expect(after.drop_bad_vni - before.drop_bad_vni).toBe(1);
    expect(after.drop_unknown_source - before.drop_unknown_source).toBe(1);
  });

  it('moves to XDP on running nodes without losing a packet; the tc program stays to deliver into pods', async () => {
    const loss = await moveTo('xdp');
    expect(loss.sent).toBeGreaterThan(20);
    expectNoLoss(loss, lab);
    expect(lab.nodes.map((n) => readAttachState(n.pinDir)?.decap.mode)).toEqual(['xdp-link', 'xdp-link']);
    for (const n of lab.nodes) {
      expect(decapLink(n).type).toBe(LINK_TYPE_XDP);
      expect(linkInfo(`${n.pinDir}/links/deliver`)).toMatchObject({ type: LINK_TYPE_TCX, attachType: BPF_TCX_INGRESS });
      expect((await run(['ip', '-details', 'link', 'show', 'eth0'], { netns: n.netns })).stdout).toMatch(/prog\/xdp id \d+/);
    }
    // What XDP decapped is delivered into the pod by the tc program (the inner source's VTEP checked).
    const before = (await readMaps(node('n1'))).path!.receive.fast;
    const ping = await run(['ping', '-c', '5', '-i', '0.05', '-W', '1', pod('n1-p1').ip], { netns: pod('n2-p1').netns, allowFailure: true });
    expect(ping.stdout).toMatch(/5 received/);
    expect((await readMaps(node('n1'))).path!.receive.fast - before).toBeGreaterThanOrEqual(5);
  });

  it('moves back to tc without losing a packet, and leaves no XDP program behind', async () => {
    expectNoLoss(await moveTo('auto'));
    expect(lab.nodes.map((n) => readAttachState(n.pinDir)?.decap.mode)).toEqual(['tcx', 'tcx']);
    for (const n of lab.nodes) {
      expect(decapLink(n)).toMatchObject({ type: LINK_TYPE_TCX, attachType: BPF_TCX_INGRESS });
      expect(existsSync(`${n.pinDir}/links/deliver`)).toBe(false);
      expect((await run(['ip', '-details', 'link', 'show', 'eth0'], { netns: n.netns })).stdout).not.toMatch(/xdp/);
    }
  });
});
