import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, type V1Node } from '@kubernetes/client-node';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { formatIpv4 } from '../net/ipv4.js';
import { kubeAnnotations, ownNodeAnnotations } from '../subnet/kube-nodes.js';
import { fakeAttrs, fakeSubnet, timedWrites } from './fake-peers.js';

/*
 * The Kubernetes side of the control-plane benchmark, as lease-probe.ts is etcd's: it runs in the
 * lab's control-plane namespace as the cluster's admin, writes Nodes through the API server and
 * opens the measured node's maps by their pins, so both ends of every time are on its clock.
 * A Node is made as a cluster makes one: registered with its podCIDR and kubelet's status (the
 * API server takes a Node's status at creation; the podCIDR, inside the cluster CIDR, is one the
 * allocator then only marks taken), then annotated by "its flannel" through the status
 * subresource, with flannel's annotations.
 *
 *   node node-probe.js fill    '{"kubeconfig","count","pinDir","inFlight"}' -> FillResult
 *   node node-probe.js latency '{"kubeconfig","count","pinDir"}'            -> {"times": [WriteTime..]}
 */

interface ProbeArgs {
  kubeconfig: string;
  count: number;
  pinDir: string;
  inFlight?: number;
}

const names = kubeAnnotations('flannel.alpha.coreos.com');
const nodeName = (i: number) => `bench-${i}`;
const base = (i: number) => formatIpv4(fakeSubnet(i).ip);
const sinceMs = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

/** Hex digits derived from the index, for ids and digests that differ per Node and per run of nothing else. */
const hex = (i: number, len: number) => (i.toString(16).padStart(8, '0') + 'c0ffee').repeat(Math.ceil(len / 14)).slice(0, len);
const IMAGES = 30;

/**
 * A Node as kubelet registers it and reports its status (kubelet lists up to 50 images): what the
 * agent's informer is given and caches for every Node of a real cluster, not only what it reads.
 */
const registered = (i: number): V1Node => {
  const name = nodeName(i);
  const since = new Date('2026-01-01T00:00:00Z');
  const condition = (type: string, status: string, reason: string, message: string) => ({
    type,
    status,
    reason,
    message,
    lastHeartbeatTime: since,
    lastTransitionTime: since,
  });
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: {
        'beta.kubernetes.io/arch': 'amd64',
        'beta.kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'node.kubernetes.io/instance-type': 'standard-4',
        'topology.kubernetes.io/zone': `zone-${i % 3}`,
      },
      annotations: {
        'node.alpha.kubernetes.io/ttl': '0',
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
      },
    },
    spec: { podCIDR: `${base(i)}/24`, podCIDRs: [`${base(i)}/24`], providerID: `bench://${name}` },
    status: {
      addresses: [
        { type: 'InternalIP', address: fakeAttrs(i).publicIp },
        { type: 'Hostname', address: name },
      ],
      capacity: { cpu: '4', 'ephemeral-storage': '101430960Ki', 'hugepages-1Gi': '0', 'hugepages-2Mi': '0', memory: '16393364Ki', pods: '110' },
      allocatable: { cpu: '4', 'ephemeral-storage': '93478772582', 'hugepages-1Gi': '0', 'hugepages-2Mi': '0', memory: '16290964Ki', pods: '110' },
      conditions: [
        condition('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'),
        condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
        condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
        condition('Ready', 'True', 'KubeletReady', 'kubelet is posting ready status'),
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: {
        machineID: hex(i, 32),
        systemUUID: `${hex(i, 8)}-0000-4000-8000-${hex(i, 12)}`,
        bootID: `${hex(i + 1, 8)}-0000-4000-8000-${hex(i + 1, 12)}`,
        kernelVersion: '6.12.0-1-amd64',
        osImage: 'Debian GNU/Linux 13 (trixie)',
        containerRuntimeVersion: 'containerd://2.1.4',
        kubeletVersion: 'v1.37.2',
        kubeProxyVersion: '',
        operatingSystem: 'linux',
        architecture: 'amd64',
      },
      images: Array.from({ length: IMAGES }, (_, k) => ({
        names: [`registry.example.com/team-${k % 7}/app-${k}@sha256:${hex(i * IMAGES + k, 64)}`, `registry.example.com/team-${k % 7}/app-${k}:v1.${k}.0`],
        sizeBytes: 10_000_000 + k * 1_234_567,
      })),
    },
  };
};

class Probe {
  private readonly core: CoreV1Api;
  constructor(kubeconfig: string) {
    const config = new KubeConfig();
    config.loadFromFile(kubeconfig);
    this.core = config.makeApiClient(CoreV1Api);
  }

  register = (i: number) => this.core.createNode({ body: registered(i) });
  /** What flanneld (and twill's agent) sends when it acquires the Node's lease. */
  annotate = (i: number) =>
    this.core.patchNodeStatus(
      { name: nodeName(i), body: { metadata: { annotations: ownNodeAnnotations({}, fakeAttrs(i), names) } } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
  remove = (i: number) => this.core.deleteNode({ name: nodeName(i) });
}

export interface FillResult {
  /** images in each Node's status, and the largest Node as the API server answered its creation (JSON) */
  images: number;
  nodeJsonBytes: number;
  registerMs: number;
  annotateMs: number;
  lastToMapMs: number;
}

/** `f` over 0..count-1, at most `inFlight` at a time. */
async function pool(count: number, inFlight: number, f: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await f(next++);
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker));
}

/**
 * Registers `count` Nodes, then annotates them all as their agents would when a cluster's
 * flannel starts at once; times the burst, and from the last annotation's answer until the
 * node's map holds every one of them.
 */
async function fill(p: Probe, a: ProbeArgs): Promise<FillResult> {
  const inFlight = a.inFlight ?? 16;
  let t0 = process.hrtime.bigint();
  let nodeJsonBytes = 0;
  await pool(a.count, inFlight, async (i) => {
    const node = await p.register(i);
    nodeJsonBytes = Math.max(nodeJsonBytes, JSON.stringify(node).length);
  });
  const registerMs = sinceMs(t0);
  // The agent takes in the bare Nodes (no map change) before the burst, which then times annotations alone.
  await new Promise((r) => setTimeout(r, 3000));
  const maps = DatapathMaps.open(a.pinDir);
  try {
    t0 = process.hrtime.bigint();
    await pool(a.count, inFlight, p.annotate);
    const annotateMs = sinceMs(t0);
    const last = process.hrtime.bigint();
    const missing = new Set(Array.from({ length: a.count }, (_, i) => base(i)));
    for (;;) {
      for (const b of missing) if (maps.ipv4.readSubnet(b)) missing.delete(b);
      if (missing.size === 0) break;
      if (sinceMs(last) > 60_000)
        throw new Error(`${missing.size} of ${a.count} annotated Nodes not in ${a.pinDir}/twill_subnets 60 s after the last annotation`);
      await new Promise((r) => setTimeout(r, 1));
    }
    return { images: IMAGES, nodeJsonBytes, registerMs, annotateMs, lastToMapMs: sinceMs(last) };
  } finally {
    maps.close();
  }
}

/** One Node at a time: registered, then timed from its annotation (sent, and answered) until the map holds it; deleted again. */
const latency = (p: Probe, a: ProbeArgs) => timedWrites(a.pinDir, a.count, { prepare: p.register, write: p.annotate, undo: p.remove });

async function main(): Promise<void> {
  const [mode, json] = process.argv.slice(2);
  const a = JSON.parse(json) as ProbeArgs;
  const p = new Probe(a.kubeconfig);
  if (mode === 'fill') console.log(JSON.stringify(await fill(p, a)));
  else if (mode === 'latency') console.log(JSON.stringify({ times: await latency(p, a) }));
  else throw new Error(`node-probe: unknown mode ${mode}`);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
