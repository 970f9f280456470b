import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { ip, ipBatch } from '../netlink/ip.js';
import { run } from '../util/exec.js';
import { logger } from '../util/log.js';

const log = logger('lab');

/*
 * A multi-node cluster on one machine: an underlay bridge in its own namespace, one namespace
 * per node, pods made by the real CNI plugins the way flannel's CNI plugin delegates to them.
 * The root namespace is never touched. Everything made is recorded in a state file as it is
 * made, so `labDown` can remove a lab that failed half-way.
 */

const cidr = z.string().regex(/^(\d{1,3}\.){3}\d{1,3}\/(\d|[12]\d|3[0-2])$/, 'an IPv4 CIDR like 10.244.0.0/16');
export const labOptionsSchema = z.object({
  name: z.string().regex(/^[a-z][a-z0-9]{0,5}$/, '1-6 lowercase letters or digits, starting with a letter'),
  nodes: z.number().int().min(1).max(50),
  podsPerNode: z.number().int().min(0).max(20),
  network: cidr,
  subnetLen: z.number().int().min(16).max(28),
  underlayCidr: cidr.refine((c) => c.endsWith('/24'), 'a /24 (nodes take .1 to .N, the gateway .254)'),
  mtu: z.number().int().min(1280).max(9000),
  pinRoot: z.string().startsWith('/sys/fs/bpf/'),
});
export type LabOptions = z.output<typeof labOptionsSchema>;

export const labDefaults: Omit<LabOptions, 'nodes'> = {
  name: 'twl',
  podsPerNode: 2,
  network: '10.244.0.0/16',
  subnetLen: 24,
  underlayCidr: '192.168.77.0/24',
  mtu: 1500,
  pinRoot: '/sys/fs/bpf/twill-lab',
};

export interface LabNode {
  name: string;
  netns: string;
  iface: 'eth0';
  underlayIp: string;
  underlayMac: string;
  subnet: string;
  vtepMac: string;
  pinDir: string;
  subnetFile: string;
}
export interface LabPod {
  name: string;
  netns: string;
  ip: string;
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
  nodes: LabNode[];
  pods: LabPod[];
}
export interface LabHooks {
  /** After the underlay and every node's pods exist; this is where a datapath is installed. */
  nodeReady?(node: LabNode, state: LabState): Promise<void>;
  /** First thing in labDown; failures are logged, teardown goes on. */
  nodeRemoving?(node: LabNode, state: LabState): Promise<void>;
}
type Progress = (msg: string) => void;

export class LabError extends Error {
  override name = 'LabError';
}

const stateDir = (name: string) => `/run/twill/lab/${name}`;
export const labStatePath = (name: string) => `${stateDir(name)}/state.json`;
const CNI_BIN = '/usr/lib/cni';

export function parseLabOptions(input: Partial<LabOptions> & { nodes: number }): LabOptions {
  const res = labOptionsSchema.safeParse({ ...labDefaults, ...input });
  if (!res.success) throw new LabError(res.error.issues.map((i) => `--${flagName(String(i.path[0]))}: ${i.message}`).join('; '));
  const o = res.data;
  const [, netLen] = o.network.split('/').map(Number);
  if (o.subnetLen <= netLen) throw new LabError(`--subnet-len ${o.subnetLen}: must be longer than the network's /${netLen}`);
  if (o.nodes >= 2 ** (o.subnetLen - netLen)) throw new LabError(`--nodes ${o.nodes}: network ${o.network} holds only ${2 ** (o.subnetLen - netLen) - 1} /${o.subnetLen} subnets after the first`);
  return o;
}

const flagName = (key: string) => key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()).replace('underlay-cidr', 'underlay');

function ipv4ToInt(a: string): number {
  return a.split('.').reduce((acc, p) => acc * 256 + Number(p), 0);
}
function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}
/** The i-th subnet of the network (i=0 is the network's first subnet). */
function nthSubnet(network: string, subnetLen: number, i: number): string {
  const base = ipv4ToInt(network.split('/')[0]);
  return `${intToIpv4(base + i * 2 ** (32 - subnetLen))}/${subnetLen}`;
}
function hostIn(cidrText: string, host: number): string {
  return intToIpv4(ipv4ToInt(cidrText.split('/')[0]) + host);
}
/** Random, unicast, locally administered: what flannel gives flannel.1. */
export function randomVtepMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

function saveState(state: LabState): void {
  mkdirSync(stateDir(state.name), { recursive: true });
  const file = labStatePath(state.name);
  writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}

export async function labStatus(name: string): Promise<LabState | undefined> {
  const file = labStatePath(name);
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as LabState;
}

export async function labUp(input: Partial<LabOptions> & { nodes: number }, hooks: LabHooks = {}, progress: Progress = () => undefined): Promise<LabState> {
  const o = parseLabOptions(input);
  if ((await labStatus(o.name)) || (await labNamespaces(o.name)).length) {
    progress(`lab ${o.name} exists: removing it first`);
    await labDown(o.name, hooks, progress);
  }
  const gateway = hostIn(o.underlayCidr, 254);
  const state: LabState = {
    name: o.name,
    network: o.network,
    subnetLen: o.subnetLen,
    podMtu: o.mtu - 50,
    pinRoot: o.pinRoot,
    underlay: { netns: `${o.name}-ul`, bridge: 'br0', cidr: o.underlayCidr, gateway },
    nodes: [],
    pods: [],
  };
  saveState(state);
  const steps = o.nodes * (1 + o.podsPerNode) + o.nodes + 1;
  let step = 0;
  const say = (msg: string) => progress(`[${++step}/${steps}] ${msg}`);

  const ul = state.underlay.netns;
  await ip(['netns', 'add', ul]);
  await ipBatch(['link set lo up', 'link add br0 type bridge', `addr add ${gateway}/24 dev br0`, `link set br0 mtu ${o.mtu} up`], { netns: ul });
  say(`underlay ${ul}: bridge br0, ${o.underlayCidr}, gateway ${gateway}`);

  for (let i = 1; i <= o.nodes; i++) {
    const node: LabNode = {
      name: `n${i}`,
      netns: `${o.name}-n${i}`,
      iface: 'eth0',
      underlayIp: hostIn(o.underlayCidr, i),
      underlayMac: '',
      subnet: nthSubnet(o.network, o.subnetLen, i),
      vtepMac: randomVtepMac(),
      pinDir: `${o.pinRoot}/${o.name}-n${i}`,
      subnetFile: `${stateDir(o.name)}/n${i}/subnet.env`,
    };
    state.nodes.push(node);
    saveState(state);
    await ip(['netns', 'add', node.netns]);
    await ip(['link', 'add', 'eth0', 'netns', node.netns, 'mtu', String(o.mtu), 'type', 'veth', 'peer', 'name', node.name, 'netns', ul, 'mtu', String(o.mtu)]);
    await ipBatch([`link set ${node.name} master br0 up`], { netns: ul });
    await ipBatch(['link set lo up', `addr add ${node.underlayIp}/24 dev eth0`, 'link set eth0 up', `route add default via ${gateway}`], { netns: node.netns });
    for (const [key, value] of [
      ['net.ipv4.ip_forward', '1'],
      ['net.ipv4.conf.all.rp_filter', '0'],
      ['net.ipv4.conf.default.rp_filter', '0'],
      ['net.ipv4.conf.eth0.rp_filter', '0'],
    ])
      await run(['sysctl', '-qw', `${key}=${value}`], { netns: node.netns });
    node.underlayMac = (JSON.parse(await ip(['-j', 'link', 'show', 'eth0'], { netns: node.netns })) as { address: string }[])[0].address;
    mkdirSync(path.dirname(node.subnetFile), { recursive: true });
    writeFileSync(
      node.subnetFile,
      `FLANNEL_NETWORK=${o.network}\nFLANNEL_SUBNET=${hostIn(node.subnet, 1)}/${o.subnetLen}\nFLANNEL_MTU=${state.podMtu}\nFLANNEL_IPMASQ=false\n`,
    );
    saveState(state);
    say(`node ${node.name}: netns ${node.netns}, underlay ${node.underlayIp}, subnet ${node.subnet}`);

    for (let k = 1; k <= o.podsPerNode; k++) {
      const pod: LabPod = { name: `${node.name}-p${k}`, netns: `${node.netns}-p${k}`, ip: '', node: node.name, containerId: `${o.name}-${node.name}-p${k}` };
      await ip(['netns', 'add', pod.netns]);
      state.pods.push(pod);
      saveState(state);
      pod.ip = await cniAdd(state, node, pod);
      saveState(state);
      say(`pod ${pod.name}: ${pod.ip} (CNI bridge + host-local)`);
    }
  }

  for (const node of state.nodes) {
    await hooks.nodeReady?.(node, state);
    say(`node ${node.name}: datapath ready`);
  }
  saveState(state);
  return state;
}

/** flannel's delegate config: bridge cni0 as the gateway, host-local IPAM over the node subnet. */
function cniConf(state: LabState, node: LabNode) {
  return {
    cniVersion: '0.4.0',
    name: 'twill-lab',
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    ipMasq: false,
    hairpinMode: true,
    mtu: state.podMtu,
    ipam: {
      type: 'host-local',
      // Per node: host-local keeps its allocations in dataDir, which nodes on one host must not share.
      dataDir: `${stateDir(state.name)}/${node.name}/ipam`,
      ranges: [[{ subnet: node.subnet }]],
      routes: [{ dst: state.network }],
    },
  };
}

async function cni(command: 'ADD' | 'DEL', plugin: string, conf: object, node: LabNode, pod: LabPod, ifname = 'eth0') {
  const res = await run([`${CNI_BIN}/${plugin}`], {
    netns: node.netns,
    input: JSON.stringify(conf),
    allowFailure: true,
    env: {
      PATH: process.env.PATH,
      CNI_COMMAND: command,
      CNI_CONTAINERID: pod.containerId,
      CNI_NETNS: `/run/netns/${pod.netns}`,
      CNI_IFNAME: ifname,
      CNI_PATH: CNI_BIN,
    },
  });
  if (res.code !== 0) throw new LabError(`CNI ${command} ${plugin} for pod ${pod.name} on node ${node.name} failed: ${(res.stdout + res.stderr).trim()}`);
  return res.stdout;
}

async function cniAdd(state: LabState, node: LabNode, pod: LabPod): Promise<string> {
  await cni('ADD', 'loopback', { cniVersion: '0.4.0', name: 'lo', type: 'loopback' }, node, pod, 'lo');
  const out = JSON.parse(await cni('ADD', 'bridge', cniConf(state, node), node, pod)) as { ips?: { address: string }[] };
  const addr = out.ips?.[0]?.address;
  if (!addr) throw new LabError(`CNI ADD for pod ${pod.name} returned no address: ${JSON.stringify(out)}`);
  return addr.split('/')[0];
}

async function labNamespaces(name: string): Promise<string[]> {
  const out = await ip(['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${name}-`));
}

export async function labDown(name: string, hooks: LabHooks = {}, progress: Progress = () => undefined): Promise<void> {
  const state = await labStatus(name);
  if (state) {
    for (const node of state.nodes) {
      try {
        await hooks.nodeRemoving?.(node, state);
      } catch (err) {
        log.warn('node teardown hook failed, removing its namespace anyway', { node: node.name, error: (err as Error).message });
      }
    }
    for (const pod of state.pods) {
      const node = state.nodes.find((n) => n.name === pod.node);
      if (!node) continue;
      await cni('DEL', 'bridge', cniConf(state, node), node, pod).catch((err: Error) => log.warn('CNI DEL failed', { pod: pod.name, error: err.message }));
    }
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
