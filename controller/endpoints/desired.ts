import type { Endpoint } from '../../maps/layout.js';
import { cidrContains, parseCidr, parseIpv4 } from '../net/ipv4.js';
import { cidr6Contains, parseCidr6, parseIpv6 } from '../net/ipv6.js';
import type { PodVeth } from '../dataplane/pod-links.js';
import type { EndpointRecord } from './records.js';

/*
 * Pure: which local pods the fast path serves. The live bridge ports are the truth about which
 * pods exist (a pod deleted while the agent was down has no port left); the CNI plugin's
 * records say which address and MAC each port's pod has. A port without a record (a pod added
 * by another plugin, before twill was installed) is described by what the scan found in the
 * pod's own namespace, when it could look there.
 */

export interface BridgePort {
  bridge: string;
  ifname: string;
  ifindex: number;
  /** the veth's MTU, which the CNI plugin made the pod's */
  mtu: number;
}

/** A pod found by looking at the far end of a bridge port (no record for it). */
export interface DiscoveredPod {
  hostVeth: string;
  ip: string;
  mac: string;
}

interface EndpointPlan {
  /** pod address -> twill_endpoints entry */
  endpoints: Map<string, Endpoint>;
  /** pod IPv6 address -> twill_endpoints6 entry (recorded pods with an address in our IPv6 subnet) */
  endpoints6: Map<string, Endpoint>;
  /** the veths that carry the send half of the fast path */
  veths: PodVeth[];
  /** records whose veth is gone (the pod was deleted without a DEL we saw, or is being deleted) */
  stale: EndpointRecord[];
  problems: string[];
}

/** Bridge ports no CNI record describes: only their pods need looking for in their namespace. */
export function portsWithoutRecord<P extends BridgePort>(records: readonly EndpointRecord[], ports: readonly P[]): P[] {
  const recorded = new Set(records.map((r) => `${r.bridge}/${r.hostVeth}`));
  return ports.filter((p) => !recorded.has(`${p.bridge}/${p.ifname}`));
}

export function planEndpoints(input: {
  subnet: string;
  /** the largest pod packet that fits the underlay once encapsulated (underlay MTU - 50) */
  encapMtu: number;
  records: readonly EndpointRecord[];
  ports: readonly BridgePort[];
  bridgeMacs: ReadonlyMap<string, string>;
  discovered?: readonly DiscoveredPod[];
  /** our IPv6 subnet (CIDR) and the largest pod IPv6 packet that fits the underlay once encapsulated (underlay MTU - 70) */
  subnet6?: string;
  encapMtu6?: number;
}): EndpointPlan {
  const subnet = parseCidr(input.subnet)!;
  const inSubnet = (ip: string) => cidrContains(subnet, { ip: parseIpv4(ip)!, len: 32 });
  const subnet6 = input.subnet6 === undefined ? undefined : parseCidr6(input.subnet6);
  const inSubnet6 = (ip6: string | undefined): ip6 is string =>
    subnet6 !== undefined && ip6 !== undefined && cidr6Contains(subnet6, { ip: parseIpv6(ip6)!, len: 128 });
  const portByName = new Map(input.ports.map((p) => [`${p.bridge}/${p.ifname}`, p]));
  const problems: string[] = [];
  const stale: EndpointRecord[] = [];
  // Address -> the claim that wins it: records over discovery, the newest record over older ones.
  type Claim = { port: BridgePort; mac: string; addedAt: string; source: string; ip?: string; ip6?: string };
  const claims = new Map<string, Claim>();
  const claim = (ip: string, c: Claim) => {
    const have = claims.get(ip);
    if (have && have.port.ifindex !== c.port.ifindex) {
      const [winner, loser] = have.addedAt >= c.addedAt ? [have, c] : [c, have];
      problems.push(`${ip} is claimed by ${winner.source} on ${winner.port.ifname} and ${loser.source} on ${loser.port.ifname}: using ${winner.port.ifname}`);
      claims.set(ip, winner);
      return;
    }
    claims.set(ip, c);
  };

  for (const r of input.records) {
    const port = portByName.get(`${r.bridge}/${r.hostVeth}`);
    if (!port) {
      stale.push(r);
      continue;
    }
    if (r.ip !== undefined && !inSubnet(r.ip)) {
      problems.push(`pod ${r.containerId} has ${r.ip}, outside this node's subnet ${input.subnet}: left to the stack`);
      continue;
    }
    const ip6 = inSubnet6(r.ip6) ? r.ip6 : undefined;
    // An IPv6-only pod is claimed by its IPv6 address.
    const key = r.ip ?? ip6;
    if (key === undefined) {
      problems.push(`pod ${r.containerId} has ${r.ip6}, outside this node's IPv6 subnet ${input.subnet6 ?? '(none)'}: left to the stack`);
      continue;
    }
    claim(key, { port, mac: r.mac, addedAt: r.addedAt, source: `container ${r.containerId}`, ip: r.ip, ip6 });
  }
  const unrecorded = portsWithoutRecord(input.records, input.ports);
  for (const d of input.discovered ?? []) {
    const port = unrecorded.find((p) => p.ifname === d.hostVeth);
    if (!port || !inSubnet(d.ip)) continue;
    claim(d.ip, { port, mac: d.mac, addedAt: '', source: 'the scan of its namespace', ip: d.ip });
  }

  const endpoints = new Map<string, Endpoint>();
  const endpoints6 = new Map<string, Endpoint>();
  const veths = new Map<string, PodVeth>();
  for (const c of claims.values()) {
    const gateway = input.bridgeMacs.get(c.port.bridge);
    if (!gateway) continue;
    const entry = { ifindex: c.port.ifindex, mac: c.mac, gateway_mac: gateway, mtu: c.port.mtu, encap_mtu: input.encapMtu, flags: 0 };
    if (c.ip) endpoints.set(c.ip, entry);
    if (c.ip6 && input.encapMtu6) endpoints6.set(c.ip6, { ...entry, encap_mtu: input.encapMtu6 });
    veths.set(c.port.ifname, { ifname: c.port.ifname, ifindex: c.port.ifindex });
  }
  return { endpoints, endpoints6, veths: [...veths.values()], stale, problems };
}
