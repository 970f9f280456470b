import type { Peer, Remote } from '../../maps/layout.js';

/**
 * Pure: which entries the datapath maps must hold, given who we are and the leases we know.
 * Used by the lab (leases it made itself) and by the agent (leases from etcd) alike.
 */
export interface NodeLease {
  /** CIDR, e.g. 10.244.2.0/24 */
  subnet: string;
  publicIp: string;
  vtepMac: string;
}

/** Counter slots are the BPF datapath's bookkeeping (see stats-slots.ts), not part of the lease set. */
export type DesiredRemote = Omit<Remote, 'stats_slot'>;
export type DesiredPeer = Omit<Peer, 'stats_slot'>;

export interface DesiredMaps {
  /** subnet base address -> remote VTEP */
  subnets: Map<string, DesiredRemote>;
  /** PublicIP -> peer */
  peers: Map<string, DesiredPeer>;
  /** leases left out, with why (own lease, conflicts) */
  skipped: { lease: NodeLease; reason: string }[];
}

export function desiredMaps(self: { subnet: string; publicIp: string }, leases: readonly NodeLease[]): DesiredMaps {
  const subnets = new Map<string, DesiredRemote>();
  const peers = new Map<string, DesiredPeer>();
  const skipped: DesiredMaps['skipped'] = [];
  // Sorted so that conflicts resolve the same way on every node and every run.
  const ordered = [...leases].sort((a, b) => (a.subnet < b.subnet ? -1 : a.subnet > b.subnet ? 1 : 0));
  for (const lease of ordered) {
    const [base, lenText] = lease.subnet.split('/');
    if (lease.subnet === self.subnet) {
      if (lease.publicIp !== self.publicIp) skipped.push({ lease, reason: `claims our subnet ${self.subnet}` });
      continue;
    }
    if (lease.publicIp === self.publicIp) {
      skipped.push({ lease, reason: `has our PublicIP ${self.publicIp} but not our subnet` });
      continue;
    }
    const owner = peers.get(lease.publicIp);
    if (owner) {
      skipped.push({ lease, reason: `PublicIP ${lease.publicIp} already holds ${owner.subnet}/${owner.subnet_len}` });
      continue;
    }
    subnets.set(base, { public_ip: lease.publicIp, vtep_mac: lease.vtepMac.toLowerCase(), flags: 0 });
    peers.set(lease.publicIp, { subnet: base, vtep_mac: lease.vtepMac.toLowerCase(), subnet_len: Number(lenText), flags: 0 });
  }
  return { subnets, peers, skipped };
}

export interface MapDiff<V> {
  upsert: [string, V][];
  remove: string[];
}

/** Only the difference: entries already right are not rewritten, stale ones are removed. */
export function diffMap<V>(current: ReadonlyMap<string, V>, desired: ReadonlyMap<string, V>): MapDiff<V> {
  const upsert: [string, V][] = [];
  const remove: string[] = [];
  for (const [k, v] of desired) {
    const have = current.get(k);
    if (have === undefined || !shallowEqual(have, v)) upsert.push([k, v]);
  }
  for (const k of current.keys()) if (!desired.has(k)) remove.push(k);
  return { upsert, remove };
}

function shallowEqual(a: unknown, b: unknown): boolean {
  const ka = Object.keys(a as object);
  if (ka.length !== Object.keys(b as object).length) return false;
  return ka.every((k) => (a as Record<string, unknown>)[k] === (b as Record<string, unknown>)[k]);
}
