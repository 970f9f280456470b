import { parseCidr } from '../net/ipv4.js';
import { parseCidr6 } from '../net/ipv6.js';
import { parseLeaseKV, subnetKey, NO_PUBLIC_IP, NO_SUBNET, type Lease, type LeaseAttrs } from './lease.js';

/*
 * flannel's Kubernetes subnet manager (pkg/subnet/kube), pure: a node's subnet is its Node's
 * spec.podCIDR(s), which kube-controller-manager allocates; what flannel's etcd record holds
 * (PublicIP, BackendType, BackendData and their IPv6 twins) is in the Node's annotations, under a
 * prefix (`--kube-annotation-prefix`, flannel.alpha.coreos.com by default). A Node is a peer once
 * its agent has written `<prefix>kube-subnet-manager: "true"`.
 */

/** The annotation names under one prefix (flannel's annotations struct). */
export interface KubeAnnotations {
  subnetKubeManaged: string;
  backendData: string;
  backendV6Data: string;
  backendType: string;
  publicIp: string;
  publicIpv6: string;
  /** set by the operator: what the node's PublicIP should be (flannel reads it at start) */
  nodePublicIp: string;
  nodePublicIpv6: string;
  /** set by the operator: the PublicIP to publish instead of the one the agent found */
  publicIpOverwrite: string;
  publicIpv6Overwrite: string;
}

export class AnnotationPrefixError extends Error {
  override name = 'AnnotationPrefixError';
}

/**
 * flannel's newAnnotations: a prefix without a slash gets one; one ending in neither `/` nor `-`
 * gets a `-`; the result must be an FQDN, a slash, and an optional name ending in `-`.
 */
export function kubeAnnotations(prefix: string): KubeAnnotations {
  const slashes = prefix.split('/').length - 1;
  if (slashes > 1) throw new AnnotationPrefixError(`--kube-annotation-prefix ${JSON.stringify(prefix)}: a prefix can contain at most a single slash`);
  let p = slashes === 0 ? `${prefix}/` : prefix;
  if (!p.endsWith('/') && !p.endsWith('-')) p += '-';
  // flannel's expression, unanchored at the start as Go's MatchString is.
  if (!/(?:[a-z0-9_-]+\.)+[a-z0-9_-]+\/(?:[a-z0-9_-]+-)?$/.test(p))
    throw new AnnotationPrefixError(`--kube-annotation-prefix ${JSON.stringify(prefix)}: a prefix must be in the format fqdn/[0-9a-z-_]*`);
  return {
    subnetKubeManaged: `${p}kube-subnet-manager`,
    backendData: `${p}backend-data`,
    backendV6Data: `${p}backend-v6-data`,
    backendType: `${p}backend-type`,
    publicIp: `${p}public-ip`,
    publicIpv6: `${p}public-ipv6`,
    nodePublicIp: `${p}node-public-ip`,
    nodePublicIpv6: `${p}node-public-ipv6`,
    publicIpOverwrite: `${p}public-ip-overwrite`,
    publicIpv6Overwrite: `${p}public-ipv6-overwrite`,
  };
}

/** What the subnet manager reads of a Node: the API object's fields it depends on. */
export interface NodeView {
  name: string;
  annotations: Readonly<Record<string, string>>;
  podCIDR?: string;
  podCIDRs?: readonly string[];
}

export type NodeCidrs = { ok: true; subnet?: string; subnet6?: string } | { ok: false; reason: string };

/**
 * A Node's pod CIDRs by family, as flannel reads them: spec.podCIDRs when set (one or two, at most
 * one per family), else spec.podCIDR. None at all: the controller manager has not allocated yet.
 */
export function nodeCidrs(node: Pick<NodeView, 'name' | 'podCIDR' | 'podCIDRs'>): NodeCidrs {
  const list = node.podCIDRs?.length ? node.podCIDRs : node.podCIDR ? [node.podCIDR] : [];
  if (list.length > 2) return { ok: false, reason: `node ${node.name}: pod CIDRs should be IPv4 or IPv6 only, or dual-stack (${list.join(', ')})` };
  const out: { ok: true; subnet?: string; subnet6?: string } = { ok: true };
  for (const cidr of list) {
    if (parseCidr(cidr, true)) out.subnet = cidr;
    else if (parseCidr6(cidr)) out.subnet6 = cidr;
    else return { ok: false, reason: `node ${node.name}: pod CIDR ${JSON.stringify(cidr)} is not an IPv4 or IPv6 CIDR` };
  }
  return out;
}

/** Which families the network config enables (net-conf.json's EnableIPv4, EnableIPv6). */
export interface Families {
  ipv4: boolean;
  ipv6: boolean;
}

export type NodeLease = { ok: true; lease: Lease } | { ok: false; reason: string };

/**
 * A peer Node as the lease flannel's etcd mode would hold for it (flannel's nodeToLease), parsed
 * and checked by the same code as an etcd record: a Node whose annotations do not make one is
 * reported with the reason, never half-used. Nodes without the kube-subnet-manager mark are not
 * flannel's (undefined).
 */
export function nodeToLease(node: NodeView, names: KubeAnnotations, families: Families): NodeLease | undefined {
  const a = node.annotations;
  if (a[names.subnetKubeManaged] !== 'true') return undefined;
  const cidrs = nodeCidrs(node);
  if (!cidrs.ok) return cidrs;
  if (families.ipv4 && !cidrs.subnet) return { ok: false, reason: `node ${node.name}: no IPv4 pod CIDR` };
  if (families.ipv6 && !cidrs.subnet6) return { ok: false, reason: `node ${node.name}: no IPv6 pod CIDR` };
  const subnet = families.ipv4 ? parseCidr(cidrs.subnet!, true)! : NO_SUBNET;
  const subnet6 = families.ipv6 ? parseCidr6(cidrs.subnet6!) : undefined;
  const json = (name: string) => {
    const text = a[name];
    if (text === undefined || text === '' || text === 'null') return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text; // parseLeaseKV names what is wrong with it
    }
  };
  const value = {
    PublicIP: families.ipv4 ? a[names.publicIp] : NO_PUBLIC_IP,
    PublicIPv6: families.ipv6 ? (a[names.publicIpv6] ?? null) : null,
    BackendType: a[names.backendType],
    BackendData: families.ipv4 ? json(names.backendData) : undefined,
    BackendV6Data: families.ipv6 ? json(names.backendV6Data) : undefined,
  };
  const parsed = parseLeaseKV(subnetKey(subnet, subnet6), JSON.stringify(value));
  return parsed.ok ? parsed : { ok: false, reason: `node ${node.name}: ${parsed.reason.replace(/^(lease|key) \S+: /, '')}` };
}

/** flannel's BackendData as it writes it into the annotation (Go's json of the vxlan backend's struct). */
const backendData = (attrs: LeaseAttrs, mac: string | undefined): string =>
  attrs.backendType === 'vxlan' && mac ? JSON.stringify({ VNI: attrs.vni, VtepMAC: mac.toLowerCase() }) : 'null';

/**
 * The annotations our own Node must carry, given what it carries now (flannel's AcquireLease):
 * undefined when they are right already, else the ones to set. An operator's
 * `public-ip-overwrite` (`public-ipv6-overwrite`) is published in place of the found address.
 */
export function ownNodeAnnotations(current: Readonly<Record<string, string>>, attrs: LeaseAttrs, names: KubeAnnotations): Record<string, string> | undefined {
  const data = backendData(attrs, attrs.backendType === 'vxlan' ? attrs.vtepMac : undefined);
  const data6 = backendData(attrs, attrs.backendType === 'vxlan' ? attrs.vtepMac6 : undefined);
  const want: Record<string, string> = { [names.backendType]: attrs.backendType, [names.subnetKubeManaged]: 'true' };
  // flannel writes a vxlan node's BackendData only when it has an IPv4 VTEP, host-gw's always (as "null").
  if (attrs.backendType !== 'vxlan' || data !== 'null') {
    want[names.backendData] = data;
    want[names.publicIp] = current[names.publicIpOverwrite] || attrs.publicIp;
  }
  if (attrs.publicIpv6 && (attrs.backendType !== 'vxlan' || data6 !== 'null')) {
    want[names.backendV6Data] = data6;
    want[names.publicIpv6] = current[names.publicIpv6Overwrite] || attrs.publicIpv6;
  }
  const changed = Object.entries(want).filter(([k, v]) => current[k] !== v);
  return changed.length ? Object.fromEntries(changed) : undefined;
}

/** The VtepMACs our Node's annotations hold from an earlier run (flannel's GetStoredMacAddresses). */
export function storedVtepMacs(annotations: Readonly<Record<string, string>>, names: KubeAnnotations): { vtepMac?: string; vtepMac6?: string } {
  const mac = (name: string) => {
    try {
      const d = JSON.parse(annotations[name] ?? 'null') as { VtepMAC?: unknown } | null;
      return typeof d?.VtepMAC === 'string' ? d.VtepMAC.toLowerCase() : undefined;
    } catch {
      return undefined;
    }
  };
  return { vtepMac: mac(names.backendData), vtepMac6: mac(names.backendV6Data) };
}
