import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pidAlive, stopAgent } from '../../controller/lab/agents.js';
import { restartAgent } from '../../controller/lab/node-daemons.js';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs, cliPath } from '../support/build.js';
import { stopAll } from '../support/proc.js';
import { ping, tcpTransfer, udpProbe } from '../support/traffic.js';
import { expectNoLoss, labUpFresh, lossLine, pingFlowsRunning, stopPingFlows, until, vxlanDevices } from '../support/lab-session.js';

/* twill BPF nodes and flannel-identical kernel VXLAN nodes in one cluster, and migration between them. */
const twill = (args: string[]) => run([process.execPath, cliPath, ...args], { allowFailure: true });

beforeAll(() => {
  buildBpf();
  buildTs();
});
afterAll(async () => {
  await stopAll();
});

describe('mixed cluster: 2 BPF nodes and 2 kernel VXLAN nodes', () => {
  const LAB = 'twi';
  let lab: LabState;
  beforeAll(async () => {
    lab = await labUpFresh(LAB, ['--nodes', '4', '--kernel-nodes', '2', '--pods-per-node', '1']);
  }, 120_000);
  afterAll(async () => {
    await twill(['lab', 'down', '--name', LAB]);
  }, 60_000);

  it("runs flannel's exact kernel state on the kernel nodes and BPF on the others", async () => {
    expect(lab.nodes.map((n) => n.dataplane)).toEqual(['bpf', 'bpf', 'kernel', 'kernel']);
    const n3 = lab.nodes[2];
    const dev = (await run(['ip', '-n', n3.netns, '-d', '-j', 'link', 'show', 'flannel.1'])).stdout;
    expect(JSON.parse(dev)[0]).toMatchObject({
      mtu: 1450,
      address: n3.vtepMac,
      linkinfo: { info_kind: 'vxlan', info_data: { id: 1, port: 8472, learning: false, local: n3.underlayIp } },
    });
    for (const peer of lab.nodes.filter((n) => n !== n3)) {
      const base = peer.subnet.split('/')[0];
      expect((await run(['ip', '-n', n3.netns, 'neigh', 'show', base, 'dev', 'flannel.1'])).stdout).toContain(`lladdr ${peer.vtepMac} PERMANENT`);
      expect((await run(['bridge', '-n', n3.netns, 'fdb', 'show', 'dev', 'flannel.1'])).stdout).toContain(
        `${peer.vtepMac} dst ${peer.underlayIp} self permanent`,
      );
      expect((await run(['ip', '-n', n3.netns, 'route', 'show', peer.subnet])).stdout).toContain(`${peer.subnet} via ${base} dev flannel.1 onlink`);
    }
    expect(await vxlanDevices(lab.nodes[0].netns)).toEqual([{ ifname: 'twill-rx', external: true, fdbEntries: 0 }]);
  });

  it('every pod pair talks across kinds in both directions: ping, TCP and UDP', async () => {
    const failures: string[] = [];
    for (const a of lab.pods)
      for (const b of lab.pods) {
        if (a.node === b.node) continue;
        const kinds = `${lab.nodes.find((n) => n.name === a.node)!.dataplane}->${lab.nodes.find((n) => n.name === b.node)!.dataplane}`;
        if ((await ping(a.netns, b.ip)).code !== 0) failures.push(`ping ${a.name} -> ${b.name} (${kinds})`);
        const t = await tcpTransfer(a, b, 512 * 1024);
        if (t.received !== t.sent) failures.push(`tcp ${a.name} -> ${b.name} (${kinds}): ${t.sent} vs ${t.received}`);
        if (!(await udpProbe(a, b))) failures.push(`udp ${a.name} -> ${b.name} (${kinds})`);
      }
    expect(failures).toEqual([]);
  });
});

describe('migration: kernel VXLAN to BPF and back, one node at a time, under traffic', () => {
  const LAB = 'twg';
  let lab: LabState;
  beforeAll(async () => {
    lab = await labUpFresh(LAB, ['--nodes', '3', '--kernel-nodes', '3', '--pods-per-node', '1', '--underlay', '192.168.79.0/24']);
  }, 120_000);
  afterAll(async () => {
    await twill(['lab', 'down', '--name', LAB]);
  }, 60_000);

  async function switchTo(node: LabNode, mode: 'bpf' | 'kernel'): Promise<void> {
    await stopAgent(node.agent!.pid, node.pinDir); // SIGTERM: the old datapath stays up meanwhile
    const before = readFileSync(node.agent!.log, 'utf8').length;
    node.dataplane = mode;
    const agent = restartAgent(lab, node, [`--dataplane=${mode}`]);
    // Not ready within 30 s fails the test here, rather than letting it go on against a half-switched node.
    await until(
      `the agent on ${node.name} to be ready in ${mode} mode`,
      async () => {
        const since = readFileSync(node.agent!.log, 'utf8').slice(before);
        if (!pidAlive(agent.pid)) throw new Error(`agent on ${node.name} exited: ${since}`);
        return since.includes('"msg":"ready"');
      },
      30_000,
    );
    // The other mode's state is gone: no flannel.1 under BPF; no twill0, links or pins under kernel VXLAN.
    const has = async (dev: string) => (await run(['ip', '-n', node.netns, 'link', 'show', dev], { allowFailure: true })).code === 0;
    expect(await has('flannel.1')).toBe(mode === 'kernel');
    expect(await has('twill0')).toBe(mode === 'bpf');
    expect(existsSync(`${node.pinDir}/links/decap`)).toBe(mode === 'bpf');
  }

  it('switches each node kernel -> BPF -> kernel with pods pinging across all nodes, and reports the loss', async () => {
    const report: string[] = [];
    const losses: Awaited<ReturnType<typeof stopPingFlows>>[] = [];
    for (const node of lab.nodes) {
      for (const mode of ['bpf', 'kernel'] as const) {
        const flows = await pingFlowsRunning(lab);
        await switchTo(node, mode);
        // Traffic on the new datapath for 2 s before the flows stop.
        const loss = await stopPingFlows(flows, { lastFault: Date.now() });
        losses.push(loss);
        report.push(`${node.name} -> ${mode}: ${lossLine(loss, 'the switch')}`);
      }
    }
    console.log(`migration report (6 ordered pod pairs, 20 ms interval):\n  ${report.join('\n  ')}`);
    for (const a of lab.pods) for (const b of lab.pods) if (a.node !== b.node) expect((await ping(a.netns, b.ip)).code).toBe(0);
    for (const loss of losses) expectNoLoss(loss);
  }, 180_000);
});
