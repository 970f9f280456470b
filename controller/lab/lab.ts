import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { backendOverhead } from '../dataplane/spec.js';
import { ip, ipBatch } from '../netlink/ip.js';
import { parseSubnetFile } from '../subnet/subnet-file.js';
import { formatCidr, hostAddress, parseCidr } from '../net/ipv4.js';
import { formatCidr6 } from '../net/ipv6.js';
import { run } from '../util/exec.js';
import { logger } from '../util/log.js';
import { cliEntry, runtimeNode } from '../util/paths.js';
import { readStateFile } from '../util/state-file.js';
import { installCniPlugin } from '../cni/install.js';
import { isAgent, isFlanneld, startAgent, startFlanneld, stopAgent, stopFlanneld, waitForSubnetFile, type AgentProcess } from './agents.js';
import { flannelCniPlugin, flanneld } from './peers.js';
import { isEtcd, startEtcd, stopEtcd, type EtcdProcess } from './etcd.js';
import { kernelRecordPath } from '../dataplane/kernel-record.js';

const log = logger('lab');

/*
 * A multi-node cluster on one machine: an underlay bridge in its own namespace, etcd in another,
 * one namespace per node running `twill agent` (which leases the node's subnet and programs
 * its datapath) or, on the last --flanneld-nodes, the real flanneld, and pods made by the real
 * CNI plugins over the subnet each node leased, the way flannel's CNI plugin delegates to them
 * (flannel's own plugin on flanneld nodes). The root namespace is never touched. Everything
 * made is recorded in a state file as it is made, so `labDown` can remove a lab that failed
 * half-way.
 */

// Checked with the same parser the lab computes addresses with: octets in range, no host bits.
const cidr = z.string().refine((c) => parseCidr(c, true) !== undefined, 'an IPv4 CIDR like 10.244.0.0/16, with no host bits');
const labOptionsSchema = z.object({
  name: z.string().regex(/^[a-z][a-z0-9]{0,5}$/, '1-6 lowercase letters or digits, starting with a letter'),
  nodes: z.number().int().min(1).max(50),
  kernelNodes: z.number().int().min(0).max(50),
  /** how many nodes (the last ones, after the kernel nodes) run the real flanneld and flannel's CNI plugin */
  flanneldNodes: z.number().int().min(0).max(50),
  /**
   * which nodes masquerade traffic leaving the network (--ip-masq): the flanneld nodes only, as
   * kube-flannel.yml runs flanneld and as twill's lab always ran its agents; every node; or none
   */
  ipMasq: z.enum(['flanneld', 'all', 'none']),
  podsPerNode: z.number().int().min(0).max(20),
  network: cidr,
  subnetLen: z.number().int().min(16).max(28),
  underlayCidr: cidr.refine((c) => c.endsWith('/24'), 'a /24 (nodes take .1 to .N, the gateway .254)'),
  mtu: z.number().int().min(1280).max(9000),
  pinRoot: z.string().startsWith('/sys/fs/bpf/'),
  etcdMembers: z.union([z.literal(1), z.literal(3)], { error: '1, or 3 for a cluster that survives losing a member' }),
  /** passed to every BPF node's agent */
  fastPath: z.boolean(),
  decapHook: z.enum(['auto', 'xdp', 'tc']),
  /** the network config's Backend.Type, and for vxlan its DirectRouting */
  backend: z.enum(['vxlan', 'host-gw']),
  directRouting: z.boolean(),
  /** how many nodes (the last ones) sit on a second L2 segment, reached from the first through a router */
  routedNodes: z.number().int().min(0).max(50),
  /** the pod network's families: the config's EnableIPv4 and EnableIPv6 */
  ipFamily: z.enum(['ipv4', 'ipv6', 'dual']),
  /** the config's IPv6Network (with IPv6SubnetLen 64, flannel's default) */
  ipv6Network: z.string().regex(/^fd[0-9a-f]{2}(:[0-9a-f]{1,4}){0,3}::\/(4[0-9]|5[0-9]|6[0-2])$/, 'a unique-local IPv6 CIDR like fd10:244::/56, shorter than /63'),
});
export type LabOptions = z.output<typeof labOptionsSchema>;

const labDefaults: Omit<LabOptions, 'nodes'> = {
  name: 'twl',
  podsPerNode: 2,
  kernelNodes: 0,
  flanneldNodes: 0,
  ipMasq: 'flanneld',
  network: '10.244.0.0/16',
  subnetLen: 24,
  underlayCidr: '192.168.77.0/24',
  mtu: 1500,
  pinRoot: '/sys/fs/bpf/twill-lab',
  etcdMembers: 1,
  fastPath: true,
  decapHook: 'auto',
  backend: 'vxlan',
  directRouting: false,
  routedNodes: 0,
  ipFamily: 'ipv4',
  ipv6Network: 'fd10:244::/56',
};

export interface LabNode {
  name: string;
  netns: string;
  iface: 'eth0';
  underlayIp: string;
  /** the node's IPv6 underlay address (labs with IPv6) */
  underlayIp6?: string;
  /** the IPv6 subnet its agent leased, and its flannel-v6.1 MAC (BackendV6Data) */
  subnet6?: string;
  vtepMac6?: string;
  underlayMac: string;
  subnet: string;
  vtepMac: string;
  pinDir: string;
  subnetFile: string;
  /**
   * what the node runs: twill's BPF datapath, twill's own copy of flannel's kernel VXLAN setup,
   * or the real flanneld (with flannel's CNI plugin for its pods)
   */
  dataplane: 'bpf' | 'kernel' | 'flanneld';
  /** the release a flanneld node runs */
  flanneldVersion?: string;
  /** the node's daemon: twill agent, or flanneld on a flanneld node */
  agent?: AgentProcess;
}
export interface LabPod {
  name: string;
  netns: string;
  /** the IPv4 address; in an IPv6-only lab, the IPv6 one */
  ip: string;
  /** every address of the pod, IPv4 first (absent in labs made before IPv6: [ip]) */
  ips?: string[];
  node: string;
  containerId: string;
}
export interface LabState {
  name: string;
  network: string;
  subnetLen: number;
  podMtu: number;
  pinRoot: string;
  underlay: { netns: string; bridge: string; cidr: string; gateway: string };
  /** the second L2 segment (--routed-nodes): its own bridge and /24 in the underlay namespace, which routes between the two */
  routedSegment?: { bridge: string; cidr: string; gateway: string };
  /** the network config's backend (absent in labs made before backends: vxlan) */
  backend?: LabOptions['backend'];
  directRouting?: boolean;
  /** absent in labs made before IPv6: ipv4 */
  ipFamily?: LabOptions['ipFamily'];
  ipv6Network?: string;
  /** the underlay's IPv6 /64 (and the routed segment's), with IPv6 */
  underlay6?: { cidr: string; gateway: string; routedCidr?: string; routedGateway?: string };
  /** the first etcd member (the only one unless the lab has a cluster) */
  etcd?: EtcdProcess & { prefix: string };
  /** every member when the lab runs a 3-member cluster; agents are given all their endpoints */
  etcdMembers?: EtcdProcess[];
  /** which nodes run with --ip-masq (absent in labs made before flanneld nodes: none did) */
  ipMasq?: LabOptions['ipMasq'];
  /** the BPF agents' --fast-path and --decap-hook (absent in labs made before they existed: the defaults) */
  fastPath?: boolean;
  decapHook?: LabOptions['decapHook'];
  nodes: LabNode[];
  pods: LabPod[];
}
type Progress = (msg: string) => void;

/*
 * The state file as read back (by `lab status`, `lab down`, the tests): written field by field
 * while a lab is made, so a node's addresses may still be empty. Loose objects: what a newer
 * version added survives this one's rewrite.
 */
const etcdProcessSchema = z.looseObject({ pid: z.number().int(), endpoint: z.string(), dataDir: z.string(), logFile: z.string(), netns: z.string().optional() });
const labStateSchema: z.ZodType<LabState> = z.looseObject({
  name: z.string(),
  network: z.string(),
  subnetLen: z.number().int(),
  podMtu: z.number().int(),
  pinRoot: z.string(),
  underlay: z.looseObject({ netns: z.string(), bridge: z.string(), cidr: z.string(), gateway: z.string() }),
  routedSegment: z.looseObject({ bridge: z.string(), cidr: z.string(), gateway: z.string() }).optional(),
  backend: labOptionsSchema.shape.backend.optional(),
  directRouting: z.boolean().optional(),
  ipFamily: labOptionsSchema.shape.ipFamily.optional(),
  ipv6Network: z.string().optional(),
  underlay6: z.looseObject({ cidr: z.string(), gateway: z.string(), routedCidr: z.string().optional(), routedGateway: z.string().optional() }).optional(),
  etcd: etcdProcessSchema.extend({ prefix: z.string() }).optional(),
  etcdMembers: z.array(etcdProcessSchema).optional(),
  fastPath: z.boolean().optional(),
  ipMasq: labOptionsSchema.shape.ipMasq.optional(),
  decapHook: labOptionsSchema.shape.decapHook.optional(),
  nodes: z.array(
    z.looseObject({
      name: z.string(),
      netns: z.string(),
      iface: z.literal('eth0'),
      underlayIp: z.string(),
      underlayIp6: z.string().optional(),
      subnet6: z.string().optional(),
      vtepMac6: z.string().optional(),
      underlayMac: z.string(),
      subnet: z.string(),
      vtepMac: z.string(),
      pinDir: z.string(),
      subnetFile: z.string(),
      dataplane: z.enum(['bpf', 'kernel', 'flanneld']),
      flanneldVersion: z.string().optional(),
      agent: z.looseObject({ pid: z.number().int(), log: z.string(), healthz: z.string() }).optional(),
    }),
  ),
  pods: z.array(z.looseObject({ name: z.string(), netns: z.string(), ip: z.string(), ips: z.array(z.string()).optional(), node: z.string(), containerId: z.string() })),
});

export class LabError extends Error {
  override name = 'LabError';
}

const stateDir = (name: string) => `/run/twill/lab/${name}`;
export const labStatePath = (name: string) => `${stateDir(name)}/state.json`;
const CNI_BIN = '/usr/lib/cni';
const ETCD_PREFIX = '/coreos.com/network';
const HEALTHZ_PORT = 8471;
/** etcd's registered ports, on each member's own address */
const ETCD_CLIENT_PORT = 2379;
const ETCD_PEER_PORT = 2380;

function parseLabOptions(input: Partial<LabOptions> & { nodes: number }): LabOptions {
  const res = labOptionsSchema.safeParse({ ...labDefaults, ...input });
  if (!res.success) throw new LabError(res.error.issues.map((i) => `--${flagName(String(i.path[0]))}: ${i.message}`).join('; '));
  const o = res.data;
  const [, netLen] = o.network.split('/').map(Number);
  if (o.subnetLen <= netLen) throw new LabError(`--subnet-len ${o.subnetLen}: must be longer than the network's /${netLen}`);
  if (o.kernelNodes + o.flanneldNodes > o.nodes)
    throw new LabError(`--kernel-nodes ${o.kernelNodes} and --flanneld-nodes ${o.flanneldNodes}: together more than --nodes ${o.nodes}`);
  if (o.routedNodes > o.nodes) throw new LabError(`--routed-nodes ${o.routedNodes}: more than --nodes ${o.nodes}`);
  if (o.directRouting && o.backend !== 'vxlan') throw new LabError(`--direct-routing: an option of the vxlan backend, not of ${o.backend}`);
  if (o.routedNodes > 0 && o.underlayCidr.startsWith('192.168.255.')) throw new LabError(`--underlay ${o.underlayCidr}: the routed segment takes the next /24, and there is none`);
  if (o.nodes >= 2 ** (o.subnetLen - netLen)) throw new LabError(`--nodes ${o.nodes}: network ${o.network} holds only ${2 ** (o.subnetLen - netLen) - 1} /${o.subnetLen} subnets after the first`);
  return o;
}

const flagName = (key: string) => key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()).replace('underlay-cidr', 'underlay');

function hostIn(cidrText: string, host: number): string {
  return hostAddress(parseCidr(cidrText)!, host);
}

/**
 * The IPv6 twin of an underlay /24: 192.168.77.0/24 -> fd00:192:168:77::/64, host .N -> ::N (in
 * hex), so an address reads as its IPv4 one.
 */
function underlay6Of(cidr4: string): string {
  const [a, b, c] = cidr4.split('/')[0].split('.');
  return `fd00:${a}:${b}:${c}::/64`;
}

const host6In = (cidr6: string, host: number) => `${cidr6.split('::/')[0]}::${host.toString(16)}`;

const labHasIpv6 = (state: Pick<LabState, 'ipFamily'>) => state.ipFamily === 'ipv6' || state.ipFamily === 'dual';
const labHasIpv4 = (state: Pick<LabState, 'ipFamily'>) => state.ipFamily !== 'ipv6';

function saveState(state: LabState): void {
  mkdirSync(stateDir(state.name), { recursive: true });
  const file = labStatePath(state.name);
  writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}

export async function labStatus(name: string): Promise<LabState | undefined> {
  const file = labStatePath(name);
  if (!existsSync(file)) return undefined;
  return readStateFile('lab state', file, labStateSchema);
}

export async function labUp(input: Partial<LabOptions> & { nodes: number }, progress: Progress = () => undefined): Promise<LabState> {
  const o = parseLabOptions(input);
  // Before anything is made: a lab cannot half-start for want of flanneld's build.
  if (o.flanneldNodes > 0) for (const peer of [flanneld, flannelCniPlugin]) peer();
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
    state.underlay6 = { cidr: cidr6, gateway: host6In(cidr6, 254), ...(state.routedSegment ? { routedCidr: routed6, routedGateway: host6In(routed6, 254) } : {}) };
  }
  saveState(state);
  const steps = 2 + o.nodes * 2 + o.nodes * o.podsPerNode;
  let step = 0;
  const say = (msg: string) => progress(`[${++step}/${steps}] ${msg}`);

  const ul = state.underlay.netns;
  await ip(['netns', 'add', ul]);
  await ipBatch(['link set lo up', 'link add br0 type bridge', `addr add ${gateway}/24 dev br0`, `link set br0 mtu ${o.mtu} up`], { netns: ul });
  const routed = state.routedSegment;
  if (routed) {
    // The underlay namespace is the router between the two segments.
    await ipBatch(['link add br1 type bridge', `addr add ${routed.gateway}/24 dev br1`, `link set br1 mtu ${o.mtu} up`], { netns: ul });
    await run(['sysctl', '-qw', 'net.ipv4.ip_forward=1'], { netns: ul });
  }
  const u6 = state.underlay6;
  if (u6) {
    await ipBatch([`addr add ${u6.gateway}/64 dev br0 nodad`, ...(u6.routedGateway ? [`addr add ${u6.routedGateway}/64 dev br1 nodad`] : [])], { netns: ul });
    await run(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1'], { netns: ul });
  }
  say(`underlay ${ul}: bridge br0, ${o.underlayCidr}${u6 ? ` and ${u6.cidr}` : ''}, gateway ${gateway}${routed ? `; bridge br1, ${routed.cidr}, gateway ${routed.gateway}, routed to br0` : ''}`);

  // Member i listens at .(251-i) in namespace <lab>-etcd (the first) or <lab>-etcd<i>.
  const members = Array.from({ length: o.etcdMembers }, (_, i) => etcdOptions(o.name, hostIn(o.underlayCidr, 250 - i), i + 1));
  const initialCluster = o.etcdMembers > 1 ? members.map((m) => `${m.name}=http://${m.host}:${m.peerPort}`).join(',') : undefined;
  for (const [i, m] of members.entries()) await attachToUnderlay(state, m.netns, i === 0 ? 'etcd' : `etcd${i + 1}`, m.host, o.mtu);
  // Together: a cluster member is healthy only once a quorum has started.
  const started = await Promise.all(members.map((m) => startEtcd({ ...m, initialCluster })));
  state.etcd = { ...started[0], prefix: ETCD_PREFIX };
  if (o.etcdMembers > 1) state.etcdMembers = started;
  saveState(state);
  const configNote = await ensureNetworkConfig(state, o);
  say(`etcd ${started.map((e) => e.endpoint).join(', ')} in ${members.map((m) => m.netns).join(', ')} (${configNote})`);

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
      subnetFile: `${stateDir(o.name)}/n${i}/subnet.env`,
      dataplane: i > o.nodes - o.flanneldNodes ? 'flanneld' : i > o.nodes - o.flanneldNodes - o.kernelNodes ? 'kernel' : 'bpf',
    };
    state.nodes.push(node);
    saveState(state);
    await attachToUnderlay(state, node.netns, node.name, node.underlayIp, o.mtu, onRouted ? state.routedSegment : undefined);
    if (u6) await ipBatch([`addr add ${node.underlayIp6}/64 dev eth0 nodad`, `route add default via ${onRouted ? u6.routedGateway : u6.gateway} dev eth0`], { netns: node.netns });
    for (const [key, value] of [
      ['net.ipv4.ip_forward', '1'],
      ['net.ipv4.conf.all.rp_filter', '0'],
      ['net.ipv4.conf.default.rp_filter', '0'],
      // A node routes its pods' IPv6 as it routes their IPv4.
      ...(u6 ? [['net.ipv6.conf.all.forwarding', '1']] : []),
    ])
      await run(['sysctl', '-qw', `${key}=${value}`], { netns: node.netns });
    node.underlayMac = (JSON.parse(await ip(['-j', 'link', 'show', 'eth0'], { netns: node.netns })) as { address: string }[])[0].address;
    mkdirSync(path.dirname(node.subnetFile), { recursive: true });
    startNodeDaemon(state, node);
    const kernelKind = o.backend === 'host-gw' ? 'kernel host-gw routes' : `kernel VXLAN${o.directRouting ? ' with direct routes' : ''}`;
    const runs = { bpf: 'twill BPF', kernel: `twill, ${kernelKind} as flannel`, flanneld: `flanneld ${node.flanneldVersion}, ${kernelKind}` }[node.dataplane];
    say(`node ${node.name}: netns ${node.netns}, underlay ${node.underlayIp}${node.underlayIp6 ? ` ${node.underlayIp6}` : ''}${onRouted ? ' (routed segment)' : ''}, ${node.dataplane === 'flanneld' ? 'flanneld' : 'agent'} pid ${node.agent!.pid} (${runs})`);
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

  installCniPlugin(`${stateDir(o.name)}/cni-bin`, 'flannel');
  for (const node of state.nodes) {
    for (let k = 1; k <= o.podsPerNode; k++) {
      const pod = await addLabPod(state, node.name, { name: `${node.name}-p${k}` });
      const plugin = node.dataplane === 'flanneld' ? `flannel's CNI plugin ${flannelCniPlugin().version}` : 'twill\'s CNI flannel';
      say(`pod ${pod.name}: ${(pod.ips ?? [pod.ip]).join(' ')} (${plugin} -> bridge + host-local)${node.dataplane === 'bpf' ? (o.fastPath ? ', on the fast path' : ', known to the agent (fast path off)') : ''}`);
    }
  }
  return state;
}

/**
 * Adds a pod to a node through the CNI plugins, as kubelet would; `ip` asks host-local for that
 * address (a pod re-created with its old address). On a BPF node whose agent runs it returns once
 * the agent has the pod in its endpoints map, so what follows may count on the fast path.
 */
export async function addLabPod(state: LabState, nodeName: string, opts: { name?: string; ip?: string } = {}): Promise<LabPod> {
  const node = state.nodes.find((n) => n.name === nodeName);
  if (!node) throw new LabError(`no node ${nodeName} in lab ${state.name}`);
  if (!existsSync(`${stateDir(state.name)}/cni-bin/flannel`)) installCniPlugin(`${stateDir(state.name)}/cni-bin`, 'flannel');
  if (node.dataplane === 'flanneld') installFlannelCniPlugin(state);
  let name = opts.name;
  for (let k = 1; !name; k++) if (!state.pods.some((p) => p.name === `${node.name}-p${k}`) && !(await namespaceExists(`${node.netns}-p${k}`))) name = `${node.name}-p${k}`;
  if (state.pods.some((p) => p.name === name)) throw new LabError(`pod ${name} exists in lab ${state.name}`);
  const suffix = name.slice(node.name.length + 1);
  const pod: LabPod = { name, netns: `${node.netns}-${suffix}`, ip: '', node: node.name, containerId: `${state.name}-${name}` };
  await ip(['netns', 'add', pod.netns]);
  state.pods.push(pod);
  saveState(state);
  pod.ips = await cniAdd(state, node, pod, opts.ip);
  pod.ip = pod.ips.find((a) => !a.includes(':')) ?? pod.ips[0];
  saveState(state);
  // IPv6 addresses are tentative until duplicate address detection is done (a second or so): the
  // pod's, and its gateway's on the node's bridge. Until then the pod reaches nothing over IPv6.
  if (labHasIpv6(state)) for (const ns of [pod.netns, node.netns]) await waitUntilNotTentative(ns);
  // Until the agent has put the pod in its endpoints map (twill_endpoints6 for an IPv6-only pod).
  if (node.dataplane === 'bpf' && node.agent && isAgent(node.agent.pid, node.pinDir)) await waitForEndpoint(node, pod.ip, true);
  return pod;
}

/** Deletes a pod as kubelet would (CNI DEL, then its namespace); on a BPF node, until the agent forgot it. */
export async function removeLabPod(state: LabState, podName: string): Promise<void> {
  const pod = state.pods.find((p) => p.name === podName);
  if (!pod) throw new LabError(`no pod ${podName} in lab ${state.name}`);
  const node = state.nodes.find((n) => n.name === pod.node)!;
  await cni(state, 'DEL', 'flannel', cniConf(state, node), node, pod);
  await ip(['netns', 'del', pod.netns]);
  state.pods = state.pods.filter((p) => p !== pod);
  saveState(state);
  if (node.dataplane === 'bpf' && node.agent && isAgent(node.agent.pid, node.pinDir)) await waitForEndpoint(node, pod.ip, false);
}

async function waitUntilNotTentative(netns: string, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    const tentative = (JSON.parse(await ip(['-6', '-j', 'addr', 'show', 'tentative'], { netns })) as { addr_info?: unknown[] }[]).some((l) => (l.addr_info ?? []).length > 0);
    if (!tentative) return;
    if (Date.now() > deadline) throw new LabError(`netns ${netns}: IPv6 addresses still tentative after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Until the node's endpoints map has (or no longer has) `ip`. */
async function waitForEndpoint(node: LabNode, podIp: string, present: boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const maps = DatapathMaps.open(node.pinDir);
    let has: boolean;
    try {
      has = maps.familyOf(podIp)?.readEndpoints().has(podIp) ?? false;
    } finally {
      maps.close();
    }
    if (has === present) return;
    if (Date.now() > deadline)
      throw new LabError(`node ${node.name}: pod ${podIp} ${present ? 'never appeared in' : 'never left'} its endpoints map in ${timeoutMs / 1000} s; agent log ${node.agent?.log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function etcdOptions(name: string, host: string, member = 1) {
  const id = member === 1 ? 'etcd' : `etcd${member}`;
  return { name: `${name}-${id}`, host, clientPort: ETCD_CLIENT_PORT, peerPort: ETCD_PEER_PORT, dataDir: `${stateDir(name)}/${id}/data`, logFile: `${stateDir(name)}/${id}/etcd.log`, netns: `${name}-${id}` };
}

/** Stops member `index` (0-based) of the lab's etcd cluster, data kept; tests take members away. */
export async function stopLabEtcdMember(state: LabState, index: number): Promise<void> {
  await stopEtcd(state.etcdMembers![index]);
}

/** Starts a stopped cluster member again; it rejoins with its data. */
export async function startLabEtcdMember(state: LabState, index: number): Promise<void> {
  const members = state.etcdMembers!;
  const initialCluster = members.map((m, i) => `${etcdOptions(state.name, '', i + 1).name}=http://${new URL(m.endpoint).hostname}:2380`).join(',');
  members[index] = await startEtcd({ ...etcdOptions(state.name, new URL(members[index].endpoint).hostname, index + 1), initialCluster });
  if (index === 0) state.etcd = { ...members[0], prefix: state.etcd!.prefix };
  saveState(state);
}

/** Stops the lab's etcd (data kept); tests use it to show the datapath does not depend on etcd. */
export async function stopLabEtcd(state: LabState): Promise<void> {
  if (state.etcd) await stopEtcd(state.etcd);
}

export async function startLabEtcd(state: LabState): Promise<void> {
  const host = new URL(state.etcd!.endpoint).hostname;
  state.etcd = { ...(await startEtcd(etcdOptions(state.name, host))), prefix: state.etcd!.prefix };
  saveState(state);
}

/** A namespace with eth0 on an underlay bridge (the first segment's, unless given): address, default route via its gateway, lo up. */
async function attachToUnderlay(state: LabState, netns: string, port: string, address: string, mtu: number, segment: { bridge: string; gateway: string } = state.underlay): Promise<void> {
  await ip(['netns', 'add', netns]);
  await ip(['link', 'add', 'eth0', 'netns', netns, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', port, 'netns', state.underlay.netns, 'mtu', String(mtu)]);
  await ipBatch([`link set ${port} master ${segment.bridge} up`], { netns: state.underlay.netns });
  await ipBatch(['link set lo up', `addr add ${address}/24 dev eth0`, 'link set eth0 up', `route add default via ${segment.gateway}`], { netns });
}

function etcdctl(state: LabState, args: string[], input?: string) {
  return run(['etcdctl', '--endpoints', state.etcd!.endpoint, ...args], { netns: state.etcd!.netns, input, env: { ...process.env, ETCDCTL_API: '3' } });
}

/** Writes flannel's network config unless one is there already (the lab never overwrites it). */
async function ensureNetworkConfig(state: LabState, o: LabOptions): Promise<string> {
  const key = `${ETCD_PREFIX}/config`;
  if ((await etcdctl(state, ['get', '--print-value-only', key])).stdout.trim()) return 'network config present';
  const backend = o.backend === 'vxlan' && o.directRouting ? { Type: 'vxlan', DirectRouting: true } : { Type: o.backend };
  const v4 = o.ipFamily !== 'ipv6' ? { Network: o.network, SubnetLen: o.subnetLen } : { EnableIPv4: false };
  const v6 = o.ipFamily !== 'ipv4' ? { EnableIPv6: true, IPv6Network: o.ipv6Network, IPv6SubnetLen: 64 } : {};
  await etcdctl(state, ['put', key], JSON.stringify({ ...v4, ...v6, Backend: backend }));
  const nets = [o.ipFamily !== 'ipv6' && `${o.network}, /${o.subnetLen} per node`, o.ipFamily !== 'ipv4' && `${o.ipv6Network}, /64 per node`].filter(Boolean).join(' and ');
  return `network config written: ${nets}, ${o.backend}${o.directRouting ? ' with DirectRouting' : ''}`;
}

/** From the pinned config map of a BPF node, or the vxlan device of a kernel one; none for host-gw, whose leases carry no VTEP. */
async function readVtepMac(node: LabNode, backend: LabState['backend'] = 'vxlan'): Promise<string> {
  if (backend === 'host-gw') return '';
  if (existsSync(`${node.pinDir}/twill_config`)) {
    const maps = DatapathMaps.open(node.pinDir);
    try {
      return maps.readConfig()?.vtep_mac ?? '';
    } finally {
      maps.close();
    }
  }
  return (JSON.parse(await ip(['-j', 'link', 'show', 'flannel.1'], { netns: node.netns })) as { address: string }[])[0].address;
}

/** From the pinned IPv6 config map of a BPF node, or the flannel-v6.1 device of a kernel one; none for host-gw. */
async function readVtepMac6(node: LabNode, backend: LabState['backend'] = 'vxlan'): Promise<string> {
  if (backend === 'host-gw') return '';
  if (existsSync(`${node.pinDir}/twill_config6`)) return DatapathMaps.readPinnedMac6(node.pinDir) ?? '';
  return (JSON.parse(await ip(['-j', 'link', 'show', 'flannel-v6.1'], { netns: node.netns })) as { address: string }[])[0].address;
}

/**
 * The flags flanneld and twill agent share (twill takes flanneld's): the lab's etcd, the node's
 * underlay, subnet file and health address, and whether it masquerades.
 */
function flannelFlags(state: LabState, node: LabNode, ipMasq: boolean): string[] {
  return [
    `--etcd-endpoints=${(state.etcdMembers ?? [state.etcd!]).map((e) => e.endpoint).join(',')}`,
    `--etcd-prefix=${state.etcd!.prefix}`,
    '--iface=eth0',
    `--subnet-file=${node.subnetFile}`,
    ...(ipMasq ? ['--ip-masq'] : []),
    `--healthz-ip=${node.underlayIp}`,
    `--healthz-port=${HEALTHZ_PORT}`,
  ];
}

/** flanneld masquerades as kube-flannel.yml runs it, unless --ip-masq none. */
const flanneldArgs = (state: LabState, node: LabNode): string[] => flannelFlags(state, node, state.ipMasq !== 'none');

function agentArgs(state: LabState, node: LabNode): string[] {
  return [
    `--dataplane=${node.dataplane}`,
    `--fast-path=${state.fastPath ?? labDefaults.fastPath}`,
    `--decap-hook=${state.decapHook ?? labDefaults.decapHook}`,
    ...flannelFlags(state, node, state.ipMasq === 'all'),
    `--pin-dir=${node.pinDir}`,
    '-v=1',
    // Tests and the bench read these logs line by line.
    '--log-format=json',
  ];
}

/**
 * Starts a node's daemon (twill agent, or flanneld on a flanneld node) with the lab's flags plus
 * any given; tests kill and restart them through restartAgent and stopNodeDaemon.
 */
function startNodeDaemon(state: LabState, node: LabNode, extraArgs: string[] = []): AgentProcess {
  const opts = { netns: node.netns, logFile: node.agent?.log ?? `${path.dirname(node.subnetFile)}/agent.log`, healthz: `${node.underlayIp}:${HEALTHZ_PORT}` };
  if (node.dataplane === 'flanneld') {
    const bin = flanneld();
    node.flanneldVersion = bin.version;
    node.agent = startFlanneld(bin.bin, { ...opts, args: [...flanneldArgs(state, node), ...extraArgs] });
  } else node.agent = startAgent({ ...opts, args: [...agentArgs(state, node), ...extraArgs] });
  saveState(state);
  return node.agent;
}

export const restartAgent = startNodeDaemon;

/** Whether the node's daemon (twill agent or flanneld) still runs. */
export function nodeDaemonRunning(node: LabNode): boolean {
  if (!node.agent) return false;
  return node.dataplane === 'flanneld' ? isFlanneld(node.agent.pid, node.subnetFile) : isAgent(node.agent.pid, node.pinDir);
}

/** Stops the node's daemon; both leave their datapath in place on SIGTERM. */
export async function stopNodeDaemon(node: LabNode, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!node.agent) return;
  if (node.dataplane === 'flanneld') await stopFlanneld(node.agent.pid, node.subnetFile, signal);
  else await stopAgent(node.agent.pid, node.pinDir, signal);
}

/**
 * Pods are added the way kubelet does with flannel's conflist: through the `flannel` plugin
 * (twill's compatible one, installed in the lab's own plugin directory), which reads the node's
 * subnet file and delegates to the real bridge and host-local plugins.
 */
function cniConf(state: LabState, node: LabNode) {
  return {
    cniVersion: '0.4.0',
    name: 'cbr0',
    type: 'flannel',
    subnetFile: node.subnetFile,
    dataDir: `${stateDir(state.name)}/${node.name}/cni-flannel`,
    // As in a conflist: the lab has no outside network, so nothing to masquerade (pod addresses stay visible).
    delegate: { hairpinMode: true, isDefaultGateway: true, ipMasq: false }, // as kube-flannel.yml, minus masquerading
    // Per node: host-local keeps its allocations in dataDir, which nodes on one host must not share.
    ipam: { dataDir: `${stateDir(state.name)}/${node.name}/ipam` },
  };
}

/** Where a node's `flannel` plugin is: twill's, or flannel's own on a flanneld node. */
const cniBinDir = (state: LabState, node: LabNode) => `${stateDir(state.name)}/${node.dataplane === 'flanneld' ? 'cni-bin-flannel' : 'cni-bin'}`;
const cniPath = (state: LabState, node: LabNode) => `${cniBinDir(state, node)}:${CNI_BIN}`;

/** flannel's CNI plugin from the build cache, where a flanneld node's CNI_PATH finds it. */
function installFlannelCniPlugin(state: LabState): void {
  const dir = `${stateDir(state.name)}/cni-bin-flannel`;
  if (existsSync(`${dir}/flannel`)) return;
  mkdirSync(dir, { recursive: true });
  copyFileSync(flannelCniPlugin().bin, `${dir}/flannel`);
  chmodSync(`${dir}/flannel`, 0o755);
}

/** What the lab hands a node's CNI plugin: the netconf, CNI_PATH and where twill's plugin is (the bench times it). */
export function labCniSetup(state: LabState, node: LabNode): { conf: ReturnType<typeof cniConf>; cniPath: string; plugin: string } {
  return { conf: cniConf(state, node), cniPath: cniPath(state, node), plugin: `${cniBinDir(state, node)}/flannel` };
}

async function cni(state: LabState, command: 'ADD' | 'DEL', plugin: string, conf: object, node: LabNode, pod: LabPod, ifname = 'eth0', args?: string) {
  const dir = plugin === 'flannel' ? cniBinDir(state, node) : CNI_BIN;
  const res = await run([`${dir}/${plugin}`], {
    netns: node.netns,
    input: JSON.stringify(conf),
    allowFailure: true,
    env: {
      PATH: process.env.PATH,
      CNI_COMMAND: command,
      CNI_CONTAINERID: pod.containerId,
      CNI_NETNS: `/run/netns/${pod.netns}`,
      CNI_IFNAME: ifname,
      CNI_PATH: cniPath(state, node),
      ...(args ? { CNI_ARGS: args } : {}),
    },
  });
  if (res.code !== 0) throw new LabError(`CNI ${command} ${plugin} for pod ${pod.name} on node ${node.name} failed: ${(res.stdout + res.stderr).trim()}`);
  return res.stdout;
}

/** The pod's addresses, IPv4 first, as the plugins returned them. */
async function cniAdd(state: LabState, node: LabNode, pod: LabPod, requestIp?: string): Promise<string[]> {
  await cni(state, 'ADD', 'loopback', { cniVersion: '0.4.0', name: 'lo', type: 'loopback' }, node, pod, 'lo');
  // host-local takes a wanted address from CNI_ARGS, as a runtime passes a pod's static IP.
  const args = requestIp ? `IgnoreUnknown=1;IP=${requestIp}` : undefined;
  const out = JSON.parse(await cni(state, 'ADD', 'flannel', cniConf(state, node), node, pod, 'eth0', args)) as { ips?: { address: string }[] };
  const addrs = (out.ips ?? []).map((a) => a.address.split('/')[0]).sort((a, b) => Number(a.includes(':')) - Number(b.includes(':')));
  const want = Number(labHasIpv4(state)) + Number(labHasIpv6(state));
  if (addrs.length !== want) throw new LabError(`CNI ADD for pod ${pod.name} returned ${addrs.length} addresses, expected ${want} (${state.ipFamily ?? 'ipv4'}): ${JSON.stringify(out)}`);
  return addrs;
}

async function labNamespaces(name: string): Promise<string[]> {
  const out = await ip(['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${name}-`));
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
      rmSync(kernelRecordPath(node.pinDir), { force: true });
    }
    for (const pod of state.pods) {
      const node = state.nodes.find((n) => n.name === pod.node);
      if (!node || !node.subnet || !(await namespaceExists(node.netns))) continue;
      await cni(state, 'DEL', 'flannel', cniConf(state, node), node, pod).catch((err: Error) => log.warn('CNI DEL failed', { pod: pod.name, error: err.message }));
    }
    for (const e of state.etcdMembers ?? (state.etcd ? [state.etcd] : [])) if (isEtcd(e)) await stopEtcd(e);
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
  rmSync(stateDir(name), { recursive: true, force: true });
  progress(`lab ${name} removed (${namespaces.length} namespaces)`);
}

async function namespaceExists(ns: string): Promise<boolean> {
  return (await labNamespaces(ns.split('-')[0])).includes(ns);
}
