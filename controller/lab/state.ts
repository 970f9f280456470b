import { existsSync } from 'node:fs';
import { z } from 'zod';
import { readStateFile, writeStateFile } from '../util/state-file.js';
import type { AgentProcess } from './agents.js';
import type { EtcdProcess } from './etcd.js';
import { labOptionsSchema, type LabOptions } from './options.js';

/*
 * What a lab is made of, as recorded in its state file. Everything is recorded as it is made,
 * so `labDown` can remove a lab that failed half-way, and `lab status`, the bench and the tests
 * read the lab back from here.
 */

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
  /** the container image whose agent the node runs (--image-nodes), by podman; absent: the checkout's agent */
  image?: string;
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
  /** Kubernetes mode (--kube): the control plane, and what the node daemons are given to reach it */
  kube?: LabKube;
  nodes: LabNode[];
  pods: LabPod[];
}

export interface LabKube {
  /** the namespace kube-apiserver and kube-controller-manager run in */
  netns: string;
  /** the API server's URL */
  apiserver: string;
  /** the node daemons' kubeconfig: a ServiceAccount token with twill-kube.yaml's RBAC, not admin */
  kubeconfig: string;
  adminKubeconfig: string;
  /** net-conf.json, as kube-flannel-cfg holds it */
  netConf: string;
  caCert: string;
  processes: { program: string; pid: number; logFile: string }[];
  /** what the control plane was started with, to start its API server again (tests) */
  options: object;
}

/*
 * The state file as read back (by `lab status`, `lab down`, the tests): written field by field
 * while a lab is made, so a node's addresses may still be empty. Loose objects: what a newer
 * version added survives this one's rewrite.
 */
const etcdProcessSchema = z.looseObject({
  pid: z.number().int(),
  endpoint: z.string(),
  dataDir: z.string(),
  logFile: z.string(),
  netns: z.string().optional(),
});
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
  kube: z
    .looseObject({
      netns: z.string(),
      apiserver: z.string(),
      kubeconfig: z.string(),
      adminKubeconfig: z.string(),
      netConf: z.string(),
      caCert: z.string(),
      processes: z.array(z.looseObject({ program: z.string(), pid: z.number().int(), logFile: z.string() })),
      options: z.looseObject({}),
    })
    .optional(),
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
      image: z.string().optional(),
      agent: z.looseObject({ pid: z.number().int(), log: z.string(), healthz: z.string() }).optional(),
    }),
  ),
  pods: z.array(
    z.looseObject({ name: z.string(), netns: z.string(), ip: z.string(), ips: z.array(z.string()).optional(), node: z.string(), containerId: z.string() }),
  ),
});

/** Where a lab keeps its state file, its nodes' subnet files and logs, etcd's data and the CNI plugins. */
export const labStateDir = (name: string) => `/run/twill/lab/${name}`;
export const labStatePath = (name: string) => `${labStateDir(name)}/state.json`;

export function saveState(state: LabState): void {
  writeStateFile(labStatePath(state.name), state);
}

export async function labStatus(name: string): Promise<LabState | undefined> {
  const file = labStatePath(name);
  if (!existsSync(file)) return undefined;
  return readStateFile('lab state', file, labStateSchema);
}
