import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kubeManifestPath, labKubectl, rbacDocuments, registerLabNode, startLabKubeProcess, stopLabKubeProcess } from '../../controller/lab/kube.js';
import { flanneld, kubeApiserver, kubectl } from '../../controller/lab/peers.js';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { pidAlive } from '../../controller/lab/agents.js';
import { restartAgent, stopNodeDaemon } from '../../controller/lab/node-daemons.js';
import { addLabPod, removeLabPod } from '../../controller/lab/pods.js';
import { saveState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs } from '../support/build.js';
import { stopAll } from '../support/proc.js';
import {
  agentLog,
  allPodPairs,
  bounceAgent,
  expectNoLoss,
  labUpFresh,
  lossLine,
  pingFlowsRunning,
  readMaps,
  stopPingFlows,
  twill,
  underTraffic,
  until,
  vxlanDevices,
  readyz,
  FLANNEL_ANNOTATIONS,
  kubeNode,
} from '../support/lab-session.js';

/*
 * Kubernetes mode against a real control plane (kube-apiserver and kube-controller-manager of
 * scripts/peers/versions.env's release, on the lab's etcd): twill agents and the real flanneld,
 * both with --kube-subnet-mgr, take their subnets from their Nodes' podCIDRs and their peers from
 * the other Nodes' flannel annotations, with the ServiceAccount token and RBAC of
 * deploy/kubernetes/twill-kube.yaml. Lab tkm on 192.168.147.0/24.
 */

const LAB = 'tkm';
let lab: LabState;

beforeAll(async () => {
  buildBpf();
  buildTs();
  // Fail here, naming module and version, where a program could not be built: never skipped.
  flanneld();
  kubeApiserver();
  lab = await labUpFresh(LAB, ['--kube', '--nodes', '3', '--flanneld-nodes', '1', '--pods-per-node', '1', '--underlay', '192.168.147.0/24']);
}, 300_000);
afterAll(async () => {
  await twill(['lab', 'down', '--name', LAB]);
  await stopAll();
}, 120_000);

const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const P = FLANNEL_ANNOTATIONS;
const nodeObject = (name: string) => kubeNode(lab, name);
const subnetsOf = async (n: LabNode) => (await readMaps(n)).subnets.map((s) => s.subnet).sort();
const metricOf = async (n: LabNode, name: string) =>
  Number(new RegExp(`^${name} (\\d+)$`, 'm').exec((await run(['curl', '-s', `http://${n.agent!.healthz}/metrics`], { netns: n.netns })).stdout)?.[1] ?? NaN);
/** The reconciler's lines saying a peer left the maps (one per peer, or a count when many changed at once). */
const peerRemovals = (log: string) => log.split('\n').filter((l) => l.includes('"msg":"peer removed"') || /"msg":"peers changed".*"removed":[1-9]/.test(l));
const etcdctl = (args: string[]) =>
  run(['etcdctl', '--endpoints', lab.etcd!.endpoint, ...args], { netns: lab.etcd!.netns, env: { ...process.env, ETCDCTL_API: '3' } });

describe('twill and flanneld nodes in one Kubernetes-mode cluster', () => {
  it("takes each node's subnet from its Node's podCIDR and publishes flannel's annotations and condition", async () => {
    for (const n of lab.nodes) {
      const obj = await nodeObject(n.name);
      expect(obj.spec.podCIDR, n.name).toBe(n.subnet);
      expect(obj.metadata.annotations).toMatchObject({
        [`${P}kube-subnet-manager`]: 'true',
        [`${P}backend-type`]: 'vxlan',
        [`${P}public-ip`]: n.underlayIp,
        [`${P}backend-data`]: JSON.stringify({ VNI: 1, VtepMAC: n.vtepMac }),
      });
      expect(obj.status.conditions).toContainEqual(expect.objectContaining({ type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp' }));
    }
  });

  it('says which subnet manager runs and that its watch is connected: lab status, readyz and metrics', async () => {
    const status = JSON.parse((await twill(['lab', 'status', '--name', LAB, '--json'])).stdout) as { kube?: { apiserver: string; kubeconfig: string } };
    expect(status.kube).toMatchObject({ apiserver: 'https://192.168.147.240:6443', kubeconfig: lab.kube!.kubeconfig });
    expect(await readyz(node('n1'))).toMatchObject({ ready: true, subnetManager: { kind: 'kube', connected: true } });
    const metrics = (await run(['curl', '-s', `http://${node('n1').agent!.healthz}/metrics`], { netns: node('n1').netns })).stdout;
    expect(metrics).toMatch(/^twill_subnet_manager_info\{kind="kube"\} 1$/m);
    expect(metrics).toMatch(/^twill_kube_watch_up 1$/m);
  });

  it('every pod pair talks both ways between twill and flanneld nodes: ping, TCP and UDP', async () => {
    expect(await allPodPairs(lab)).toEqual([]);
  });

  it("runs with the token of twill-kube.yaml's ServiceAccount, not as admin", () => {
    const kubeconfig = readFileSync(lab.kube!.kubeconfig, 'utf8');
    expect(kubeconfig).toMatch(/token: \S+/);
    expect(kubeconfig).toContain('name: system:serviceaccount:kube-flannel:flannel');
    expect(kubeconfig).not.toMatch(/client-certificate/);
  });

  it('a Node whose annotations are malformed is logged, counted and skipped; mended, it is a peer', async () => {
    await registerLabNode(lab, { name: 'ghost', underlayIp: '192.168.147.99' });
    const cidr = await until('ghost to get a podCIDR', async () => (await nodeObject('ghost')).spec.podCIDR, 30_000);
    const annotate = (mac: string) =>
      labKubectl(lab, [
        'annotate',
        '--overwrite',
        'node',
        'ghost',
        `${P}kube-subnet-manager=true`,
        `${P}backend-type=vxlan`,
        `${P}public-ip=192.168.147.99`,
        `${P}backend-data={"VNI":1,"VtepMAC":"${mac}"}`,
      ]);
    const n1 = node('n1');
    const from = agentLog(n1).length;
    await annotate('not-a-mac');
    await until("n1 to log the ghost Node's bad annotations", async () => agentLog(n1).slice(from).includes('"node":"ghost"'), 15_000);
    expect(agentLog(n1).slice(from)).toMatch(/ignoring Node whose annotations make no usable lease.*"node":"ghost".*VtepMAC/);
    const metrics = (await run(['curl', '-s', `http://${n1.agent!.healthz}/metrics`], { netns: n1.netns })).stdout;
    expect(Number(/^twill_kube_nodes_ignored_total (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
    expect(await subnetsOf(n1)).not.toContain(cidr);
    expect(await readyz(n1)).toMatchObject({ ready: true });
    await annotate('0a:00:00:00:00:99');
    await until("the mended ghost in n1's maps", async () => (await subnetsOf(n1)).includes(cidr), 15_000);
    await labKubectl(lab, ['delete', 'node', 'ghost', '--wait=true']);
    await until("the ghost gone from n1's maps", async () => !(await subnetsOf(n1)).includes(cidr), 15_000);
  });

  it('with a verb taken from its ClusterRole the agent stops with an error naming it; with the exact ClusterRole it runs', async () => {
    const rbac = rbacDocuments(readFileSync(kubeManifestPath(), 'utf8'));
    const withoutWatch = rbac.replace(/(- list\n)(\s+)- watch\n/, '$1');
    expect(withoutWatch).not.toBe(rbac);
    const n1 = node('n1');
    try {
      await labKubectl(lab, ['apply', '-f', '-'], withoutWatch);
      await stopNodeDaemon(n1);
      const from = agentLog(n1).length;
      const agent = restartAgent(lab, n1);
      await until('the agent without `watch nodes` to exit', async () => !pidAlive(agent.pid), 60_000);
      expect(agentLog(n1).slice(from)).toMatch(/watch nodes: 403/);
    } finally {
      await labKubectl(lab, ['apply', '-f', '-'], rbac);
    }
    const log = await bounceAgent(lab, n1, 'SIGTERM');
    expect(log).toContain('"msg":"ready"');
    expect(await allPodPairs(lab, { tcp: false })).toEqual([]);
  });
  it('without NODE_NAME the agent finds its Node from its pod (POD_NAME, POD_NAMESPACE), as flannel does; a pod with no node is refused', async () => {
    const n1 = node('n1');
    const pod = (name: string, nodeName?: string) =>
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace: 'kube-flannel' },
        // As a DaemonSet's pod: flannel's ServiceAccount (the lab runs no token controller to mount it).
        spec: {
          ...(nodeName ? { nodeName } : {}),
          serviceAccountName: 'flannel',
          automountServiceAccountToken: false,
          containers: [{ name: 'twill', image: 'twill:lab' }],
        },
      });
    // No kubelet runs these pods: the API server records them, which is all the lookup reads.
    await labKubectl(lab, ['create', '-f', '-'], pod('twill-n1', 'n1'));
    await labKubectl(lab, ['create', '-f', '-'], pod('twill-nowhere'));
    try {
      await stopNodeDaemon(n1);
      let from = agentLog(n1).length;
      const lost = restartAgent(lab, n1, [], { POD_NAME: 'twill-nowhere', POD_NAMESPACE: 'kube-flannel' });
      await until('the agent of a pod with no node to exit', async () => !pidAlive(lost.pid), 60_000);
      expect(agentLog(n1).slice(from)).toContain("node name not present in pod spec 'kube-flannel/twill-nowhere'");
      from = agentLog(n1).length;
      const found = restartAgent(lab, n1, [], { POD_NAME: 'twill-n1', POD_NAMESPACE: 'kube-flannel' });
      await until('the agent found by its pod to be ready', async () => agentLog(n1).slice(from).includes('"msg":"ready"'), 60_000);
      expect(agentLog(n1).slice(from)).toMatch(/"msg":"Kubernetes subnet manager".*"node":"n1"/);
      expect(pidAlive(found.pid)).toBe(true);
    } finally {
      await labKubectl(lab, ['delete', 'pod', '-n', 'kube-flannel', 'twill-n1', 'twill-nowhere', '--wait=false']);
      // Back to the lab's way (NODE_NAME), for the tests that follow.
      await bounceAgent(lab, n1, 'SIGTERM');
    }
    expect(await allPodPairs(lab, { tcp: false })).toEqual([]);
  });

  it('the API server stopped for 60 s under ping flows: nothing lost, every agent stays ready and its watch reconnects', async () => {
    const twillNodes = lab.nodes.filter((n) => n.dataplane !== 'flanneld');
    const flows = await pingFlowsRunning(lab);
    await stopLabKubeProcess(lab, 'kube-apiserver');
    const stoppedAt = Date.now();
    const allWatches = async (connected: boolean) => (await Promise.all(twillNodes.map(readyz))).every((r) => r.subnetManager?.connected === connected);
    await until('every agent to see its Node watch lost', () => allWatches(false), 30_000);
    await new Promise((r) => setTimeout(r, Math.max(0, 60_000 - (Date.now() - stoppedAt))));
    for (const n of twillNodes)
      expect(await readyz(n), `${n.name} during the outage`).toMatchObject({ ready: true, subnetManager: { kind: 'kube', connected: false } });
    await startLabKubeProcess(lab, 'kube-apiserver');
    const back = Date.now();
    // The client's backoff is capped at 30 s.
    await until('every agent to reconnect', () => allWatches(true), 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; ${twillNodes.map((n) => `${n.name}: ${agentLog(n).trim().split('\n').slice(-6).join('\n')}`).join('\n')}`);
    });
    const loss = await stopPingFlows(flows, { lastFault: back });
    console.log(`RELIABILITY kube mode (Kubernetes ${kubeApiserver().version}): API server stopped for 60 s: ${lossLine(loss, 'it came back')}`);
    expectNoLoss(loss, lab);
    // The watch works again: a Node made now (its podCIDR given, not waited for from the
    // controller manager, whose own watches come back at their own pace) reaches the maps.
    const cidr = '10.244.200.0/24';
    const annotations = {
      [`${P}kube-subnet-manager`]: 'true',
      [`${P}backend-type`]: 'vxlan',
      [`${P}public-ip`]: '192.168.147.98',
      [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:00:98"}',
    };
    await labKubectl(
      lab,
      ['create', '-f', '-'],
      JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'late', annotations }, spec: { podCIDR: cidr, podCIDRs: [cidr] } }),
    );
    await until("late's subnet in n1's maps", async () => (await subnetsOf(node('n1'))).includes(cidr), 15_000);
    await labKubectl(lab, ['delete', 'node', 'late', '--wait=true']);
  }, 240_000);

  it('an expired watch (410 Gone) is listed again and applied as a difference: no peer leaves the maps, nothing is lost', async () => {
    const twillNodes = lab.nodes.filter((n) => n.dataplane !== 'flanneld');
    const before = await Promise.all(twillNodes.map(async (n) => ({ relists: await metricOf(n, 'twill_kube_watch_relists_total'), maps: await subnetsOf(n) })));
    const logFrom = twillNodes.map((n) => agentLog(n).length);
    const flows = await pingFlowsRunning(lab);
    await stopLabKubeProcess(lab, 'kube-apiserver');
    // While no API server runs, etcd moves on and forgets the past: the agents' watches resume
    // from a resourceVersion that a new API server can no longer serve, and it answers 410 Gone.
    for (let i = 0; i < 3; i++) await etcdctl(['put', '/tkm-expire-watch', String(i)]);
    const revision = (JSON.parse((await etcdctl(['get', '/tkm-expire-watch', '-w', 'json'])).stdout) as { header: { revision: number } }).header.revision;
    await etcdctl(['compact', String(revision)]);
    await etcdctl(['del', '/tkm-expire-watch']);
    await startLabKubeProcess(lab, 'kube-apiserver');
    const back = Date.now();
    for (const [i, n] of twillNodes.entries())
      await until(
        `${n.name} to list its Nodes again and watch`,
        async () => (await metricOf(n, 'twill_kube_watch_relists_total')) > before[i].relists && (await readyz(n)).subnetManager?.connected === true,
        60_000,
      );
    const loss = await stopPingFlows(flows, { lastFault: back });
    console.log(`RELIABILITY kube-mode expired watch (Kubernetes ${kubeApiserver().version}): 410 Gone, Nodes listed again: ${lossLine(loss, 'the relist')}`);
    expectNoLoss(loss, lab);
    for (const [i, n] of twillNodes.entries()) {
      const since = agentLog(n).slice(logFrom[i]);
      expect(since, n.name).toContain('Node watch expired (410 Gone)');
      expect(peerRemovals(since), n.name).toEqual([]);
      expect(await subnetsOf(n), n.name).toEqual(before[i].maps);
    }
  }, 180_000);

  it('moves node by node from flanneld to twill and back, or from twill to flanneld and back (kube mode on both sides), under traffic: nothing lost, the VtepMAC kept', async () => {
    const scratch = mkdtempSync(path.join(tmpdir(), 'tkm-'));
    const vtepMac = async (n: LabNode) => (JSON.parse((await nodeObject(n.name)).metadata.annotations![`${P}backend-data`]) as { VtepMAC: string }).VtepMAC;
    const toTwill = (n: LabNode, dataplane: LabNode['dataplane']) =>
      underTraffic(lab, n, `${n.name} flanneld -> twill (kube)`, async () => {
        await bounceAgent(lab, n, 'SIGTERM', [], async () => {
          n.dataplane = dataplane;
        });
      });
    // As a user would: the agent hands the node to kernel VXLAN, is uninstalled keeping flannel's files, and flanneld starts.
    const toFlanneld = (n: LabNode) =>
      underTraffic(lab, n, `${n.name} twill -> flanneld (kube)`, async () => {
        await bounceAgent(lab, n, 'SIGTERM', ['--dataplane=kernel']);
        await bounceAgent(lab, n, 'SIGTERM', [], async () => {
          const res = await twill(
            ['uninstall', '--pin-dir', n.pinDir, '--subnet-file', n.subnetFile, '--cni-bin-dir', scratch, '--keep-flannel', '--json'],
            n.netns,
          );
          expect(res.code, res.stderr).toBe(0);
          n.dataplane = 'flanneld';
        });
      });
    const expectFlanneld = async (n: LabNode) =>
      expect(await vxlanDevices(n.netns), n.name).toEqual([{ ifname: 'flannel.1', external: false, fdbEntries: lab.nodes.length - 1 }]);
    const expectTwill = async (n: LabNode) => expect(await vxlanDevices(n.netns), n.name).toEqual([{ ifname: 'twill-rx', external: true, fdbEntries: 0 }]);
    const lines: string[] = [];
    try {
      for (const n of lab.nodes) {
        const mac = await vtepMac(n);
        if (n.dataplane === 'flanneld') {
          lines.push(await toTwill(n, 'bpf'));
          expect(await vtepMac(n)).toBe(mac);
          await expectTwill(n);
          lines.push(await toFlanneld(n));
          await expectFlanneld(n);
        } else {
          const dataplane = n.dataplane;
          lines.push(await toFlanneld(n));
          expect(await vtepMac(n)).toBe(mac);
          await expectFlanneld(n);
          lines.push(await toTwill(n, dataplane));
          await expectTwill(n);
        }
        expect(await vtepMac(n), n.name).toBe(mac);
      }
      console.log(lines.map((l) => `RELIABILITY kube-mode migration (${flanneld().version}, Kubernetes ${kubeApiserver().version}): ${l}`).join('\n'));
    } finally {
      saveState(lab);
      rmSync(scratch, { recursive: true, force: true });
    }
  }, 600_000);

  it("every manifest in deploy/kubernetes passes the real API server's dry run", async () => {
    const dir = path.join(path.dirname(kubeManifestPath()));
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    expect(files).toContain('twill-kube.yaml');
    const failed: string[] = [];
    const docsOf = (file: string) => readFileSync(path.join(dir, file), 'utf8').split(/^---$/m);
    const kindOf = (doc: string) => /^kind:\s*(\S+)/m.exec(doc)?.[1];
    // A dry run creates nothing, so the namespaces the objects go into (twill.yaml's is the others') are made for real first.
    await labKubectl(
      lab,
      ['apply', '-f', '-'],
      files
        .flatMap(docsOf)
        .filter((d) => kindOf(d) === 'Namespace')
        .join('---\n'),
    );
    for (const file of files) {
      const checked = docsOf(file).filter((d) => kindOf(d));
      const res = await run([kubectl().bin, `--kubeconfig=${lab.kube!.adminKubeconfig}`, 'apply', '--dry-run=server', '-f', '-'], {
        netns: lab.kube!.netns,
        input: checked.join('---\n'),
        allowFailure: true,
      });
      if (res.code !== 0) failed.push(`${file}: ${res.stderr.trim()}`);
    }
    expect(failed).toEqual([]);
    // The check can fail: a field the API does not know is refused by the server.
    const bad = await run([kubectl().bin, `--kubeconfig=${lab.kube!.adminKubeconfig}`, 'apply', '--dry-run=server', '-f', '-'], {
      netns: lab.kube!.netns,
      input: JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x', namespace: 'kube-flannel' }, dataa: {} }),
      allowFailure: true,
    });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/dataa/);
  });

  it('a Node deleted leaves every map within 5 s; registered again, its agent waits for a podCIDR, and it comes back with one', async () => {
    const n1 = node('n1');
    const n2 = node('n2');
    const n1From = agentLog(n1).length;
    await labKubectl(lab, ['delete', 'node', 'n2', '--wait=true']);
    await until("n2's subnet to leave n1's maps", async () => !(await subnetsOf(n1)).includes(n2.subnet), 5000);
    // The same log check that the relist test expects empty sees this removal.
    expect(peerRemovals(agentLog(n1).slice(n1From)).join('\n')).toContain(n2.subnet);
    await until(
      "n2's route to leave flanneld's node",
      async () => !(await run(['ip', 'route', 'show', n2.subnet], { netns: node('n3').netns })).stdout.trim(),
      5000,
    );
    // With the controller manager away the Node comes back without a podCIDR: n2's agent waits, says so, and stays up.
    await stopLabKubeProcess(lab, 'kube-controller-manager');
    const n2From = agentLog(n2).length;
    try {
      await registerLabNode(lab, n2);
      await until(
        "n2's agent to say it waits for a podCIDR",
        async () => agentLog(n2).slice(n2From).includes('waiting for our Node to be given a podCIDR'),
        30_000,
      );
      const bare = await nodeObject('n2');
      expect(bare.spec.podCIDR).toBeUndefined();
      expect(bare.metadata.annotations?.[`${P}kube-subnet-manager`]).toBeUndefined();
      expect(pidAlive(n2.agent!.pid)).toBe(true);
    } finally {
      await startLabKubeProcess(lab, 'kube-controller-manager');
    }
    // Given a podCIDR, n2's agent publishes its annotations again.
    const subnet = await until(
      "n2's Node to be annotated again",
      async () => {
        const obj = await nodeObject('n2');
        return obj.metadata.annotations?.[`${P}kube-subnet-manager`] === 'true' && obj.spec.podCIDR;
      },
      60_000,
    );
    await until("n2's subnet back in n1's maps", async () => (await subnetsOf(node('n1'))).includes(subnet), 15_000);
    await until(
      "n2's route back on flanneld's node",
      async () => (await run(['ip', 'route', 'show', subnet], { netns: node('n3').netns })).stdout.includes('flannel.1'),
      15_000,
    );
    // The controller manager may give the new Node another podCIDR, and then, as with flanneld, a
    // pod of the old one talks no more until it is made again: it is, and every pair talks.
    n2.subnet = subnet;
    saveState(lab);
    await removeLabPod(lab, 'n2-p1');
    // cni0 keeps the old subnet's gateway, which the bridge plugin refuses to change (as with flannel).
    await run(['ip', 'link', 'del', 'cni0'], { netns: n2.netns, allowFailure: true });
    await addLabPod(lab, 'n2', { name: 'n2-p1' });
    expect(await allPodPairs(lab, { tcp: false })).toEqual([]);
  });
});
