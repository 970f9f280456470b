import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { choiceRecordPath } from '../dataplane/choice-record.js';
import { backendOverhead } from '../dataplane/spec.js';
import { formatCidr } from '../net/ipv4.js';
import { formatCidr6 } from '../net/ipv6.js';
import { ip } from '../netlink/ip.js';
import { parseSubnetFile } from '../subnet/subnet-file.js';
import { run } from '../util/exec.js';
import { logger } from '../util/log.js';
import { cliEntry, runtimeNode } from '../util/paths.js';
import { hostIn, host6In, labHasIpv4, labHasIpv6, underlay6Of } from './addressing.js';
import { checkImage } from './image.js';
import { waitForSubnetFile } from './agents.js';
import { cniDel, installTwillCniPlugin } from './cni.js';
import { LabError } from './errors.js';
import { startLabEtcdCluster, stopLabEtcdCluster } from './etcd-cluster.js';
import { deviceMac, readVtepMac, readVtepMac6 } from './macs.js';
import { connectNode, labNamespaces, makeUnderlay, namespaceExists } from './namespaces.js';
import { startNodeDaemon, stopNodeDaemon } from './node-daemons.js';
import { registerLabNode, startLabKube, stopLabKube } from './kube.js';
import { labDefaults, parseLabOptions, type LabOptions } from './options.js';
import { flannelCniPlugin, flanneld } from './peers.js';
import { addLabPod } from './pods.js';
import { labStateDir, labStatus, saveState, type LabNode, type LabState } from './state.js';

const log = logger('lab');

/*
 * A multi-node cluster on one machine: an underlay bridge in its own namespace, etcd in another,
 * one namespace per node running `twill agent` (which leases the node's subnet and programs
 * its datapath) or, on the last --flanneld-nodes, the real flanneld, and pods made by the real
 * CNI plugins over the subnet each node leased, the way flannel's CNI plugin delegates to them
 * (flannel's own plugin on flanneld nodes). The root namespace is never touched. Everything
 * made is recorded in the state file as it is made, so `labDown` can remove a lab that failed
 * half-way.
 *
 * This file is the order of the steps; each step's work is in the module named for it: options,
 * addressing, namespaces, etcd-cluster, node-daemons, macs, cni, pods, and state for the record.
 */

type Progress = (msg: string) => void;

export async function labUp(input: Partial<LabOptions> & { nodes: number }, progress: Progress = () => undefined): Promise<LabState> {
  const o = parseLabOptions(input);
  // Before anything is made: a lab cannot half-start for want of flanneld's build.
  if (o.flanneldNodes > 0) for (const peer of [flanneld, flannelCniPlugin]) peer();
  if (o.imageNodes > 0) await checkImage(o.image);
  if ((await labStatus(o.name)) || (await labNamespaces(o.name)).length) {
    progress(`lab ${o.name} exists: removing it first`);
    await labDown(o.name, progress);
  }
  const gateway = hostIn(o.underlayCidr, 254);
  const routedCidr = hostIn(o.underlayCidr, 256) + '/24';
  const state: LabState = {
    name: o.name,
    network: o.network,
    subnetLen: o.subnetLen,
    podMtu: o.mtu - backendOverhead(o.backend),
    pinRoot: o.pinRoot,
    underlay: { netns: `${o.name}-ul`, bridge: 'br0', cidr: o.underlayCidr, gateway },
    routedSegment: o.routedNodes > 0 ? { bridge: 'br1', cidr: routedCidr, gateway: hostIn(routedCidr, 254) } : undefined,
    backend: o.backend,
    directRouting: o.directRouting,
    ipFamily: o.ipFamily,
    ipv6Network: o.ipFamily === 'ipv4' ? undefined : o.ipv6Network,
    fastPath: o.fastPath,
    decapHook: o.decapHook,
    ipMasq: o.ipMasq,
    nodes: [],
    pods: [],
  };
  if (labHasIpv6(state)) {
    const cidr6 = underlay6Of(o.underlayCidr);
    const routed6 = underlay6Of(routedCidr);
    state.underlay6 = {
      cidr: cidr6,
      gateway: host6In(cidr6, 254),
      ...(state.routedSegment ? { routedCidr: routed6, routedGateway: host6In(routed6, 254) } : {}),
    };
  }
  saveState(state);
  const steps = 2 + (o.kube ? 1 : 0) + o.nodes * 2 + o.nodes * o.podsPerNode;
  let step = 0;
  const say = (msg: string) => progress(`[${++step}/${steps}] ${msg}`);

  say(await makeUnderlay(state, o.mtu));
  say(await startLabEtcdCluster(state, o));
  if (o.kube) say(await startLabKube(state, o));

  const u6 = state.underlay6;

  for (let i = 1; i <= o.nodes; i++) {
    const onRouted = i > o.nodes - o.routedNodes;
    const node: LabNode = {
      name: `n${i}`,
      netns: `${o.name}-n${i}`,
      iface: 'eth0',
      underlayIp: onRouted ? hostIn(routedCidr, i) : hostIn(o.underlayCidr, i),
      underlayIp6: u6 ? host6In(onRouted ? u6.routedCidr! : u6.cidr, i) : undefined,
      underlayMac: '',
      subnet: '',
      vtepMac: '',
      pinDir: `${o.pinRoot}/${o.name}-n${i}`,
      subnetFile: `${labStateDir(o.name)}/n${i}/subnet.env`,
      dataplane: i > o.nodes - o.flanneldNodes ? 'flanneld' : i > o.nodes - o.flanneldNodes - o.kernelNodes ? 'kernel' : 'bpf',
      image: i <= o.imageNodes ? o.image : undefined,
    };
    state.nodes.push(node);
    saveState(state);
    await connectNode(state, node, onRouted, o.mtu);
    node.underlayMac = await deviceMac(node, 'eth0');
    // As kubelet registers its Node; the controller manager then gives it a podCIDR.
    if (state.kube) await registerLabNode(state, node);
    mkdirSync(path.dirname(node.subnetFile), { recursive: true });
    startNodeDaemon(state, node);
    const kernelKind = o.backend === 'host-gw' ? 'kernel host-gw routes' : `kernel VXLAN${o.directRouting ? ' with direct routes' : ''}`;
    const runs = { bpf: 'twill BPF', kernel: `twill, ${kernelKind} as flannel`, flanneld: `flanneld ${node.flanneldVersion}, ${kernelKind}` }[node.dataplane];
    say(
      `node ${node.name}: netns ${node.netns}, underlay ${node.underlayIp}${node.underlayIp6 ? ` ${node.underlayIp6}` : ''}${onRouted ? ' (routed segment)' : ''}, ${node.dataplane === 'flanneld' ? 'flanneld' : 'agent'} pid ${node.agent!.pid} (${runs}${node.image ? `, the agent of image ${node.image} by podman` : ''})`,
    );
  }

  // Each agent leases a subnet from etcd and programs its datapath; its subnet file says which.
  for (const node of state.nodes) {
    const text = await waitForSubnetFile(node.subnetFile, node.agent!.pid, node.agent!.log);
    const file = parseSubnetFile(text);
    if (labHasIpv4(state)) {
      if (!file.subnet) throw new LabError(`node ${node.name}: subnet file ${node.subnetFile} names no subnet`);
      node.subnet = formatCidr(file.subnet);
      node.vtepMac = await readVtepMac(node, state.backend);
    }
    if (labHasIpv6(state)) {
      if (!file.ipv6Subnet) throw new LabError(`node ${node.name}: subnet file ${node.subnetFile} names no IPv6 subnet (FLANNEL_IPV6_SUBNET)`);
      node.subnet6 = formatCidr6(file.ipv6Subnet);
      node.vtepMac6 = await readVtepMac6(node, state.backend);
    }
    saveState(state);
    const leases = [node.subnet, node.subnet6].filter(Boolean).join(' and ');
    const macs = [node.vtepMac, node.vtepMac6].filter(Boolean).join(' and ');
    say(`node ${node.name}: agent ready, lease ${leases}${macs ? `, VtepMAC ${macs}` : ''}`);
  }

  installTwillCniPlugin(state, true);
  for (const node of state.nodes) {
    for (let k = 1; k <= o.podsPerNode; k++) {
      const pod = await addLabPod(state, node.name, { name: `${node.name}-p${k}` });
      const plugin = node.dataplane === 'flanneld' ? `flannel's CNI plugin ${flannelCniPlugin().version}` : "twill's CNI flannel";
      say(
        `pod ${pod.name}: ${(pod.ips ?? [pod.ip]).join(' ')} (${plugin} -> bridge + host-local)${node.dataplane === 'bpf' ? (o.fastPath ? ', on the fast path' : ', known to the agent (fast path off)') : ''}`,
      );
    }
  }
  return state;
}

export async function labDown(name: string, progress: Progress = () => undefined): Promise<void> {
  const state = await labStatus(name);
  if (state) {
    for (const node of state.nodes) {
      await stopNodeDaemon(node);
      // The agent leaves its datapath in place on purpose; the lab removes it. flanneld's goes with the namespace.
      if (node.dataplane !== 'flanneld' && (await namespaceExists(node.netns)))
        await run([runtimeNode(), cliEntry(), 'dataplane', 'detach', '--pin-dir', node.pinDir], { netns: node.netns }).catch((err: Error) =>
          log.warn('datapath detach failed, removing the namespace anyway', { node: node.name, error: err.message }),
        );
      rmSync(choiceRecordPath(node.pinDir), { force: true });
    }
    for (const pod of state.pods) {
      const node = state.nodes.find((n) => n.name === pod.node);
      if (!node || !node.subnet || !(await namespaceExists(node.netns))) continue;
      await cniDel(state, node, pod).catch((err: Error) => log.warn('CNI DEL failed', { pod: pod.name, error: err.message }));
    }
    await stopLabKube(state);
    await stopLabEtcdCluster(state);
  }
  const namespaces = await labNamespaces(name);
  // Pods first, then nodes, then the underlay: every veth pair goes with its inner end.
  namespaces.sort((a, b) => b.length - a.length);
  for (const ns of namespaces) await ip(['netns', 'del', ns]).catch((err: Error) => log.warn('netns delete failed', { netns: ns, error: err.message }));
  const pinRoot = state?.pinRoot ?? labDefaults.pinRoot;
  if (existsSync(pinRoot)) {
    for (const entry of readdirSync(pinRoot)) if (entry.startsWith(`${name}-n`)) rmSync(path.join(pinRoot, entry), { recursive: true, force: true });
    if (readdirSync(pinRoot).length === 0) rmSync(pinRoot, { recursive: true, force: true });
  }
  rmSync(labStateDir(name), { recursive: true, force: true });
  progress(`lab ${name} removed (${namespaces.length} namespaces)`);
}
