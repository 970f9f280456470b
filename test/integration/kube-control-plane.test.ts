import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { isIPv6 } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasExited, startEtcd, stopEtcd, type EtcdProcess } from '../../controller/lab/etcd.js';
import { startKubeControlPlane, type KubeControlPlane, type KubeControlPlaneOptions } from '../../controller/lab/kube-control-plane.js';
import { kubeApiserver, kubeControllerManager, kubectl } from '../../controller/lab/peers.js';
import { run } from '../../controller/util/exec.js';
import { until } from '../support/lab-session.js';

/*
 * The real kube-apiserver and kube-controller-manager (scripts/peers/versions.env) against
 * Debian's etcd: Nodes registered as kubelet registers them get distinct podCIDRs from the node
 * IPAM controller, inside the cluster CIDR, in both families when the cluster is dual-stack.
 * Its own etcd on 127.0.0.1:23791/23801 and API server on 127.0.0.1:16443 (controller manager
 * 16444); each cluster below keeps its objects under its own etcd prefix. The last one runs,
 * with an etcd of its own, in network namespace tkcp-ns on 192.168.150.10, as the lab will.
 */

let dir: string;
let etcd: EtcdProcess | undefined;
let plane: KubeControlPlane | undefined;

beforeAll(async () => {
  // Fails here, naming module and version, where Kubernetes could not be built: never skipped.
  kubeApiserver();
  kubeControllerManager();
  kubectl();
  dir = mkdtempSync(path.join(os.tmpdir(), 'tkcp-'));
  etcd = await startEtcd({
    name: 'tkcp',
    host: '127.0.0.1',
    clientPort: 23791,
    peerPort: 23801,
    dataDir: path.join(dir, 'etcd'),
    logFile: path.join(dir, 'etcd.log'),
  });
});

afterAll(async () => {
  await plane?.stop();
  if (etcd) await stopEtcd(etcd);
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

/** Pure: ADDR/LEN lies inside CIDR (same family, at least as long a prefix, same leading bits). */
function cidrInside(inner: string, outer: string): boolean {
  const toBits = (cidr: string) => {
    const [addr, len] = cidr.split('/');
    if (isIPv6(addr)) {
      const [h, t] = addr.includes('::') ? addr.split('::') : [addr, ''];
      const hs = h ? h.split(':') : [];
      const ts = t ? t.split(':') : [];
      const groups = [...hs, ...Array<string>(8 - hs.length - ts.length).fill('0'), ...ts];
      return { v6: true, n: groups.reduce((a, g) => (a << 16n) | BigInt(parseInt(g, 16)), 0n), len: Number(len), width: 128n };
    }
    return { v6: false, n: addr.split('.').reduce((a, o) => (a << 8n) | BigInt(o), 0n), len: Number(len), width: 32n };
  };
  const i = toBits(inner);
  const o = toBits(outer);
  if (i.v6 !== o.v6 || i.len < o.len) return false;
  const shift = o.width - BigInt(o.len);
  return i.n >> shift === o.n >> shift;
}

describe('cidrInside (the test helper)', () => {
  it('tells inside from outside in both families', () => {
    expect(cidrInside('10.244.3.0/24', '10.244.0.0/16')).toBe(true);
    expect(cidrInside('10.245.0.0/24', '10.244.0.0/16')).toBe(false);
    expect(cidrInside('10.244.0.0/15', '10.244.0.0/16')).toBe(false);
    expect(cidrInside('fd00:10:244:1::/64', 'fd00:10:244::/56')).toBe(true);
    expect(cidrInside('fd00:10:245::/64', 'fd00:10:244::/56')).toBe(false);
    expect(cidrInside('10.244.0.0/24', 'fd00::/8')).toBe(false);
  });
});

interface RegisteredNode {
  name: string;
  addresses: string[];
}

/** The namespace the control plane in use runs in (kubectl must reach it from there). */
let planeNetns: string | undefined;

/** The parts of kubectl's JSON these tests read. */
interface KubeJson {
  spec?: { podCIDR?: string; podCIDRs?: string[] };
  items?: { endpoints?: { addresses: string[] }[] }[];
  serverVersion?: { gitVersion: string };
}
const kubectlJson = async (args: string[], input?: string) => {
  const r = await run([kubectl().bin, '--kubeconfig', plane!.adminKubeconfig, ...args], { input, netns: planeNetns });
  return r.stdout ? (JSON.parse(r.stdout) as KubeJson) : {};
};

/** What kubelet does on its first start: create its Node with its name and InternalIP addresses. */
async function registerNode(n: RegisteredNode): Promise<void> {
  const node = {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: n.name },
    status: { addresses: n.addresses.map((address) => ({ type: 'InternalIP', address })) },
  };
  await kubectlJson(['create', '-o', 'json', '-f', '-'], JSON.stringify(node));
}

/** The Node's spec.podCIDRs once it has one per family asked for (generous: the machine is shared). */
async function podCidrs(name: string, families: number, timeoutMs = 120_000): Promise<{ podCIDR: string; podCIDRs: string[] }> {
  const deadline = Date.now() + timeoutMs;
  let spec: NonNullable<KubeJson['spec']> = {};
  while (Date.now() < deadline) {
    spec = (await kubectlJson(['get', 'node', name, '-o', 'json'])).spec ?? {};
    if (spec.podCIDR && spec.podCIDRs && spec.podCIDRs.length >= families) return { podCIDR: spec.podCIDR, podCIDRs: spec.podCIDRs };
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(
    `node ${name} has no podCIDRs for ${families} families after ${timeoutMs} ms (spec ${JSON.stringify(spec)}); kube-controller-manager log ${plane?.controllerManager.logFile}`,
  );
}

function useControlPlane(name: string, extra: Partial<KubeControlPlaneOptions>, etcdOf = () => etcd!): () => KubeControlPlaneOptions {
  const opts = (): KubeControlPlaneOptions => ({
    stateDir: path.join(dir, name),
    etcdEndpoint: etcdOf().endpoint,
    etcdPrefix: `/${name}`,
    clusterCidr: '10.244.0.0/16',
    nodeCidrMaskSize: 24,
    serviceCidr: '10.96.0.0/12',
    listen: { address: '127.0.0.1', port: 16443 },
    ...extra,
  });
  beforeAll(async () => {
    planeNetns = opts().netns;
    plane = await startKubeControlPlane(opts());
  }, 300_000);
  afterAll(async () => {
    await plane?.stop();
    plane = undefined;
    planeNetns = undefined;
  }, 60_000);
  return opts;
}

describe('an IPv4 cluster', () => {
  const opts = useControlPlane('tkcp-v4', {});

  it('serves the API through the admin kubeconfig, at the release that was built', async () => {
    const v = await kubectlJson(['version', '-o', 'json']);
    expect(v.serverVersion?.gitVersion).toBe(kubeApiserver().version);
  });

  it('gives each registered Node a distinct podCIDR of the mask size, inside the cluster CIDR', async () => {
    await registerNode({ name: 'tkcp-a', addresses: ['192.168.150.1'] });
    await registerNode({ name: 'tkcp-b', addresses: ['192.168.150.2'] });
    const a = await podCidrs('tkcp-a', 1);
    const b = await podCidrs('tkcp-b', 1);
    for (const n of [a, b]) {
      expect(n.podCIDRs).toEqual([n.podCIDR]);
      expect(n.podCIDR).toMatch(/\/24$/);
      expect(cidrInside(n.podCIDR, opts().clusterCidr), n.podCIDR).toBe(true);
    }
    expect(a.podCIDR).not.toBe(b.podCIDR);
  });

  it('stop() ends both processes and frees their ports', async () => {
    const { apiserver, controllerManager } = plane!;
    await plane!.stop();
    expect(hasExited(apiserver.pid)).toBe(true);
    expect(hasExited(controllerManager.pid)).toBe(true);
    const listening = await run(['ss', '-Hltn', 'sport = :16443 or sport = :16444']);
    expect(listening.stdout.trim()).toBe('');
  });
});

describe('a port already taken', () => {
  it('is refused before anything starts, naming the program and the port', async () => {
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(16443, '127.0.0.1', resolve));
    try {
      const opts: KubeControlPlaneOptions = {
        stateDir: path.join(dir, 'tkcp-taken'),
        etcdEndpoint: etcd!.endpoint,
        clusterCidr: '10.244.0.0/16',
        nodeCidrMaskSize: 24,
        serviceCidr: '10.96.0.0/12',
        listen: { address: '127.0.0.1', port: 16443 },
      };
      await expect(startKubeControlPlane(opts)).rejects.toThrow(/kube-apiserver cannot listen on 127\.0\.0\.1 port 16443/);
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
  });
});

describe('a dual-stack cluster', () => {
  const opts = useControlPlane('tkcp-dual', { clusterCidr6: 'fd00:10:244::/56', nodeCidrMaskSize6: 64, serviceCidr6: 'fd00:10:96::/112' });

  it('gives each registered Node distinct podCIDRs, one per family, inside the cluster CIDRs', async () => {
    await registerNode({ name: 'tkcp-a', addresses: ['192.168.150.1', 'fd00:150::1'] });
    await registerNode({ name: 'tkcp-b', addresses: ['192.168.150.2', 'fd00:150::2'] });
    const a = await podCidrs('tkcp-a', 2);
    const b = await podCidrs('tkcp-b', 2);
    for (const n of [a, b]) {
      const [v4, v6] = n.podCIDRs;
      // IPv4 first, as the cluster CIDRs are given; podCIDR is the first of podCIDRs.
      expect(n.podCIDR).toBe(v4);
      expect(v4).toMatch(/\/24$/);
      expect(v6).toMatch(/\/64$/);
      expect(cidrInside(v4, opts().clusterCidr), v4).toBe(true);
      expect(cidrInside(v6, opts().clusterCidr6!), v6).toBe(true);
    }
    expect(a.podCIDRs[0]).not.toBe(b.podCIDRs[0]);
    expect(a.podCIDRs[1]).not.toBe(b.podCIDRs[1]);
  });
});

describe('a cluster inside a network namespace, on an address of its own', () => {
  // The lab's shape: the control plane and its etcd in a namespace, the API server on a
  // non-loopback address, so the `kubernetes` Service gets that address as its endpoint.
  const NS = 'tkcp-ns';
  const ADDRESS = '192.168.150.10';
  let nsEtcd: EtcdProcess | undefined;
  beforeAll(async () => {
    await run(['ip', 'netns', 'del', NS], { allowFailure: true });
    await run(['ip', 'netns', 'add', NS]);
    await run(['ip', '-n', NS, 'link', 'set', 'lo', 'up']);
    // A veth pair with both ends inside (this kernel has no dummy devices): an up, non-loopback interface.
    await run(['ip', '-n', NS, 'link', 'add', 'tkcp0', 'type', 'veth', 'peer', 'name', 'tkcp1']);
    await run(['ip', '-n', NS, 'addr', 'add', `${ADDRESS}/24`, 'dev', 'tkcp0']);
    for (const dev of ['tkcp0', 'tkcp1']) await run(['ip', '-n', NS, 'link', 'set', dev, 'up']);
    nsEtcd = await startEtcd({
      name: 'tkcp-ns',
      host: '127.0.0.1',
      clientPort: 23791,
      peerPort: 23801,
      dataDir: path.join(dir, 'etcd-ns'),
      logFile: path.join(dir, 'etcd-ns.log'),
      netns: NS,
    });
  });
  afterAll(async () => {
    if (nsEtcd) await stopEtcd(nsEtcd);
    await run(['ip', 'netns', 'del', NS], { allowFailure: true });
  }, 60_000);
  const opts = useControlPlane('tkcp-ns', { netns: NS, listen: { address: ADDRESS, port: 16443 } }, () => nsEtcd!);

  it('serves the `kubernetes` Service from its address and allocates podCIDRs', async () => {
    // The API server's endpoint reconciler writes it soon after start-up, not before /readyz.
    const addresses = await until(
      'the kubernetes Service endpoint',
      async () => {
        const slices = await kubectlJson(['get', 'endpointslices', '-n', 'default', '-l', 'kubernetes.io/service-name=kubernetes', '-o', 'json']);
        const found = (slices.items ?? []).flatMap((sl) => (sl.endpoints ?? []).flatMap((e) => e.addresses));
        return found.length > 0 && found;
      },
      120_000,
    );
    expect(addresses).toEqual([ADDRESS]);
    await registerNode({ name: 'tkcp-a', addresses: ['192.168.150.1'] });
    expect(cidrInside((await podCidrs('tkcp-a', 1)).podCIDR, opts().clusterCidr)).toBe(true);
  });
});
