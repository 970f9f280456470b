import { labDown, labUp } from '../lab/lab.js';
import { stopNodeDaemon } from '../lab/node-daemons.js';
import type { LabState } from '../lab/state.js';
import { RESULT_HEAD, resultRow as row, rssMb, runProbe, spread, startFromEmpty, subnetCount, type Spread } from './control-plane.js';
import type { WriteTime } from './fake-peers.js';
import type { FillResult } from './node-probe.js';
import { waitFor } from './wait.js';

/*
 * Control-plane scale in Kubernetes mode (issue 23): a real kube-apiserver holding 1,000 Nodes that
 * flannel would have annotated, one real agent (--kube-subnet-mgr) watching them, and single Node
 * annotations timed until they reach that agent's map. The etcd run's twin (control-plane.ts).
 */

interface KubeScaleResult extends FillResult {
  nodes: number;
  /** from the PATCH sent, and from its answer (the API server has stored it and sends the watch event) */
  annotateToMapMs: Spread;
  answerToMapMs: Spread;
  /** the agent that watched the Nodes arrive: with the lab's two Nodes only, and its peak once all were in */
  agentRssBeforeMb: number;
  burstPeakRssMb: number;
  /** an agent started (empty datapath) with every Node already there: to all in the maps, then its memory after the timed annotations */
  startToProgrammedMs: number;
  agentRssMb: number;
  agentPeakRssMb: number;
}

const LAB = { name: 'kb', underlayCidr: '192.168.149.0/24' };
const IN_FLIGHT = 16;

const probeRun = (state: LabState, mode: 'fill' | 'latency', args: object) =>
  runProbe('node-probe.js', state.kube!.netns, mode, { kubeconfig: state.kube!.adminKubeconfig, ...args });

export async function kubeScaleBench(nodes: number, annotations: number, say: (m: string) => void): Promise<KubeScaleResult> {
  await labDown(LAB.name);
  try {
    // The cluster CIDR is a /8 of /24s: the lab's Nodes get theirs from the allocator, the probe's
    // carry theirs from 10.128.0.0/9, which the allocator then holds as taken.
    const state = await labUp({ ...LAB, nodes: 2, podsPerNode: 0, network: '10.0.0.0/8', subnetLen: 24, kube: true }, () => undefined);
    const [a, b] = state.nodes;
    await waitFor(`node ${b.name} programming ${a.name}'s subnet from its Node`, () => subnetCount(b.pinDir) >= 1, 60_000, 100);
    // One agent watches: the other's Node stays, annotated, as a peer; its agent would only add load.
    await stopNodeDaemon(a);
    const before = rssMb(b.agent!.pid);
    say(`kube control plane: lab ${LAB.name} up (real kube-apiserver, ${b.name}'s agent watching); registering and annotating ${nodes} Nodes`);
    const fill = (await probeRun(state, 'fill', { count: nodes, pinDir: b.pinDir, inFlight: IN_FLIGHT })) as FillResult;
    const burst = rssMb(b.agent!.pid);
    say(
      `kube control plane: ${nodes} Nodes registered in ${(fill.registerMs / 1000).toFixed(1)} s, annotated in ${(fill.annotateMs / 1000).toFixed(1)} s; all in the map ${fill.lastToMapMs.toFixed(0)} ms after the last annotation; agent peak RSS ${burst.peak.toFixed(0)} MB`,
    );

    // As the etcd run: an agent started on an empty datapath, which lists every Node at once.
    const expected = nodes + 1; // every probe Node and the lab's other node
    const { agent, startToProgrammedMs, mem: loaded } = await startFromEmpty(state, b, expected);
    say(`kube control plane: a new agent had all ${expected} subnets ${startToProgrammedMs.toFixed(0)} ms after start; RSS ${loaded.rss.toFixed(0)} MB`);

    const { times } = (await probeRun(state, 'latency', { count: annotations, pinDir: b.pinDir })) as { times: WriteTime[] };
    const after = rssMb(agent.pid);
    const result = {
      nodes,
      ...fill,
      annotateToMapMs: spread(times.map((t) => t.sentMs)),
      answerToMapMs: spread(times.map((t) => t.answeredMs)),
      agentRssBeforeMb: before.rss,
      burstPeakRssMb: burst.peak,
      startToProgrammedMs,
      agentRssMb: Math.max(loaded.rss, after.rss),
      agentPeakRssMb: after.peak,
    };
    say(
      `kube control plane: annotation -> map p50 ${result.annotateToMapMs.p50.toFixed(1)} ms, p99 ${result.annotateToMapMs.p99.toFixed(1)} ms over ${times.length} Nodes (after the answer: p99 ${result.answerToMapMs.p99.toFixed(1)} ms)`,
    );
    return result;
  } finally {
    await labDown(LAB.name);
  }
}

export function kubeScaleSection(r: KubeScaleResult): string {
  const n = r.nodes.toLocaleString('en');
  return [
    `## Control plane at ${n} Nodes (Kubernetes mode)`,
    '',
    `A real kube-apiserver (and kube-controller-manager's node IPAM) on the lab's etcd. ${n} Nodes are registered through the API as kubelet registers one (with its podCIDR and a status listing ${r.images} images: ${(r.nodeJsonBytes / 1024).toFixed(1)} KiB of JSON each as the API server returns it), then annotated as their flannel would annotate them (flannel's annotations, each Node its own PublicIP and VtepMAC), ${IN_FLIGHT} requests in flight, by a probe process that also reads the map. One agent (\`--kube-subnet-mgr\`, the lab's ServiceAccount) watches: the lab's other Node stays as its peer with its agent stopped. The burst is timed from the last annotation's answer until that agent's subnets map holds every Node. Then, as in the etcd run, an agent is started on an empty datapath and timed until its map holds every Node; then ${r.annotateToMapMs.n} Nodes are registered one at a time, each timed from its annotation (the PATCH sent, and answered) until it is in that agent's map, and deleted. Registering took ${(r.registerMs / 1000).toFixed(1)} s and annotating ${(r.annotateMs / 1000).toFixed(1)} s; the watching agent's resident memory was ${r.agentRssBeforeMb.toFixed(0)} MB before the Nodes.`,
    '',
    ...RESULT_HEAD,
    row(`last Node's annotations -> all ${n} in the maps`, `${(r.lastToMapMs / 1000).toFixed(2)} s`, '< 2 s', r.lastToMapMs < 2000),
    row('Node annotation sent -> map entry, p50', `${r.annotateToMapMs.p50.toFixed(1)} ms`, ''),
    row('Node annotation sent -> map entry, p99', `${r.annotateToMapMs.p99.toFixed(1)} ms`, '< 50 ms', r.annotateToMapMs.p99 < 50),
    row(
      "of which after the API server's answer (stored, watch event sent), p50 / p99",
      `${r.answerToMapMs.p50.toFixed(1)} / ${r.answerToMapMs.p99.toFixed(1)} ms`,
      '',
    ),
    row(`agent peak resident memory (VmHWM), watching the ${n} Nodes arrive`, `${r.burstPeakRssMb.toFixed(0)} MB`, '< 150 MB', r.burstPeakRssMb < 150),
    row(`agent start -> all ${n} Nodes in the maps`, `${(r.startToProgrammedMs / 1000).toFixed(2)} s`, ''),
    row(
      `agent peak resident memory (VmHWM), started with the ${n} Nodes there`,
      `${r.agentPeakRssMb.toFixed(0)} MB (resident at the end: ${r.agentRssMb.toFixed(0)} MB)`,
      '< 150 MB',
      r.agentPeakRssMb < 150,
    ),
  ].join('\n');
}
