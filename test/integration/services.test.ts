import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabState } from '../../controller/lab/state.js';
import { applyServices, type LabService } from '../../controller/lab/services.js';
import { run } from '../../controller/util/exec.js';
import { labUpFresh } from '../support/lab-session.js';
import { buildBpf, buildTs, cliPath, repoRoot } from '../support/build.js';
import { startInNetns, stopAll } from '../support/proc.js';

/*
 * kube-proxy's iptables Services across a mixed lab (2 twill BPF nodes, 1 kernel VXLAN node):
 * ClusterIP and NodePort TCP with endpoints on other nodes, replies coming back by VXLAN and
 * un-NATed by conntrack. Lab name "twv".
 */
const LAB = 'twv';
const twill = (args: string[]) => run([process.execPath, cliPath, ...args], { allowFailure: true });
let lab: LabState;
const pod = (name: string) => lab.pods.find((p) => p.name === name)!;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const nameServer = path.join(repoRoot, 'test/support/name-server.py');

/** Connects, reads one line: "<server pod> <client address the server saw>". */
async function ask(netns: string, ip: string, port: number): Promise<string> {
  const py = `import socket; s=socket.create_connection(("${ip}", ${port}), timeout=3); print(s.recv(200).decode().strip())`;
  const res = await run(['/usr/bin/python3', '-c', py], { netns, allowFailure: true });
  return res.code === 0 ? res.stdout.trim() : `FAILED: ${res.stderr.trim().split('\n').pop()}`;
}

/**
 * Asks until both endpoints have answered, checking every answer. kube-proxy picks an endpoint at
 * random (probability 1/2 each), so a fixed count of 10 would miss one with probability 1/512;
 * at most 64 tries leaves a chance of 2^-63 that a working Service looks one-sided.
 */
async function askUntilBothServed(netns: string, ip: string, port: number, checkAnswer: (server: string, client: string) => void): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < 64 && seen.size < 2; i++) {
    const answer = await ask(netns, ip, port);
    expect(answer).toMatch(/^n[23]-p1 /);
    const [server, client] = answer.split(' ');
    checkAnswer(server, client);
    seen.add(server);
  }
  return seen;
}

beforeAll(async () => {
  buildBpf();
  buildTs();
  lab = await labUpFresh(LAB, ['--nodes', '3', '--kernel-nodes', '1', '--pods-per-node', '1', '--underlay', '192.168.80.0/24']);
  for (const p of ['n2-p1', 'n3-p1']) await startInNetns(pod(p).netns, ['/usr/bin/python3', nameServer, p, '8080']).waitFor(/listening/);
  const web: LabService = {
    name: 'default/web',
    clusterIp: '10.96.0.10',
    port: 80,
    targetPort: 8080,
    nodePort: 30080,
    endpoints: [pod('n2-p1').ip, pod('n3-p1').ip],
  };
  await applyServices(lab, [web]);
}, 120_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
}, 60_000);

describe('Services through kube-proxy iptables rules', () => {
  it('a pod reaches a ClusterIP whose endpoints are on other nodes (BPF and kernel VXLAN), and keeps its own address', async () => {
    // Pod to ClusterIP is not masqueraded: the server sees the pod's own address.
    const seen = await askUntilBothServed(pod('n1-p1').netns, '10.96.0.10', 80, (_server, client) => expect(client).toBe(pod('n1-p1').ip));
    expect(seen).toEqual(new Set(['n2-p1', 'n3-p1'])); // both endpoints served, over both datapaths
  });

  it('an outside client reaches a NodePort on a twill node; the masqueraded replies return by VXLAN through conntrack', async () => {
    const n1 = node('n1');
    const before = JSON.parse((await twill(['maps', '--pin-dir', n1.pinDir, '--json'])).stdout).stats;
    // The underlay gateway stands in for a client outside the cluster; SNAT (mark 0x4000) to n1's overlay address.
    const seen = await askUntilBothServed(lab.underlay.netns, n1.underlayIp, 30080, (_server, client) => expect(client).toBe(n1.subnet.split('/')[0]));
    expect(seen).toEqual(new Set(['n2-p1', 'n3-p1']));
    const after = JSON.parse((await twill(['maps', '--pin-dir', n1.pinDir, '--json'])).stdout).stats;
    expect(after.decap_packets).toBeGreaterThan(before.decap_packets); // the replies came back as VXLAN
  });

  it('a pod reaches a NodePort on another node', async () => {
    expect(await ask(pod('n3-p1').netns, node('n1').underlayIp, 30080)).toMatch(/^n[23]-p1 /);
    expect(await ask(pod('n1-p1').netns, node('n3').underlayIp, 30080)).toMatch(/^n[23]-p1 /);
  });
});
