import { z } from 'zod';
import { backendSchema, decapHookSchema } from '../config/choices.js';
import { parseCidr } from '../net/ipv4.js';
import { LabError } from './errors.js';

/*
 * What `twill lab up` is asked for: the options, their defaults, and the checks that need more
 * than one option. Pure: the first stage of making a lab, before anything is touched.
 */

// Checked with the same parser the lab computes addresses with: octets in range, no host bits.
const cidr = z.string().refine((c) => parseCidr(c, true) !== undefined, 'an IPv4 CIDR like 10.244.0.0/16, with no host bits');
export const labOptionsSchema = z.object({
  name: z.string().regex(/^[a-z][a-z0-9]{0,5}$/, '1-6 lowercase letters or digits, starting with a letter'),
  nodes: z.number().int().min(1).max(50),
  kernelNodes: z.number().int().min(0).max(50),
  /** how many nodes (the last ones, after the kernel nodes) run the real flanneld and flannel's CNI plugin */
  flanneldNodes: z.number().int().min(0).max(50),
  /** how many nodes (the first ones) run the agent of the container image `image`, by podman, as its DaemonSet would */
  imageNodes: z.number().int().min(0).max(50),
  image: z.string().regex(/^[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$/, 'an image name like localhost/twill:dev (scripts/image/build.sh)'),
  /** Kubernetes mode: a real API server and controller manager; every node daemon runs with --kube-subnet-mgr */
  kube: z.boolean(),
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
  decapHook: decapHookSchema,
  /** the network config's Backend.Type, and for vxlan its DirectRouting */
  backend: backendSchema,
  directRouting: z.boolean(),
  /** how many nodes (the last ones) sit on a second L2 segment, reached from the first through a router */
  routedNodes: z.number().int().min(0).max(50),
  /** the pod network's families: the config's EnableIPv4 and EnableIPv6 */
  ipFamily: z.enum(['ipv4', 'ipv6', 'dual']),
  /** the config's IPv6Network (with IPv6SubnetLen 64, flannel's default) */
  ipv6Network: z
    .string()
    .regex(/^fd[0-9a-f]{2}(:[0-9a-f]{1,4}){0,3}::\/(4[0-9]|5[0-9]|6[0-2])$/, 'a unique-local IPv6 CIDR like fd10:244::/56, shorter than /63'),
});
export type LabOptions = z.output<typeof labOptionsSchema>;

export const labDefaults: Omit<LabOptions, 'nodes'> = {
  name: 'twl',
  podsPerNode: 2,
  kernelNodes: 0,
  flanneldNodes: 0,
  imageNodes: 0,
  image: 'localhost/twill:dev',
  kube: false,
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

/** The options over the defaults, checked; a problem is named by the command-line flag that set it. */
export function parseLabOptions(input: Partial<LabOptions> & { nodes: number }): LabOptions {
  const res = labOptionsSchema.safeParse({ ...labDefaults, ...input });
  if (!res.success) throw new LabError(res.error.issues.map((i) => `--${flagName(String(i.path[0]))}: ${i.message}`).join('; '));
  const o = res.data;
  const [, netLen] = o.network.split('/').map(Number);
  if (o.subnetLen <= netLen) throw new LabError(`--subnet-len ${o.subnetLen}: must be longer than the network's /${netLen}`);
  if (o.kernelNodes + o.flanneldNodes > o.nodes)
    throw new LabError(`--kernel-nodes ${o.kernelNodes} and --flanneld-nodes ${o.flanneldNodes}: together more than --nodes ${o.nodes}`);
  if (o.imageNodes + o.flanneldNodes > o.nodes)
    throw new LabError(
      `--image-nodes ${o.imageNodes} and --flanneld-nodes ${o.flanneldNodes}: together more than --nodes ${o.nodes} (an image node runs twill's agent)`,
    );
  if (o.routedNodes > o.nodes) throw new LabError(`--routed-nodes ${o.routedNodes}: more than --nodes ${o.nodes}`);
  if (o.directRouting && o.backend !== 'vxlan') throw new LabError(`--direct-routing: an option of the vxlan backend, not of ${o.backend}`);
  if (o.routedNodes > 0 && o.underlayCidr.startsWith('192.168.255.'))
    throw new LabError(`--underlay ${o.underlayCidr}: the routed segment takes the next /24, and there is none`);
  if (o.nodes >= 2 ** (o.subnetLen - netLen))
    throw new LabError(`--nodes ${o.nodes}: network ${o.network} holds only ${2 ** (o.subnetLen - netLen) - 1} /${o.subnetLen} subnets after the first`);
  return o;
}

/** The command-line flag of an option key: kernelNodes -> kernel-nodes (underlayCidr is --underlay). */
const flagName = (key: string) => key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()).replace('underlay-cidr', 'underlay');
