import { z } from 'zod';
import { formatCidr, parseCidr, parseIpv4, type Cidr } from '../net/ipv4.js';

/*
 * flannel's lease records: key `<prefix>/subnets/10.244.1.0-24` (dual stack adds
 * `&fc00:0:0:1::-64`), value {"PublicIP","PublicIPv6","BackendType","BackendData"}.
 */

export interface Lease {
  subnet: Cidr;
  publicIp: string;
  backendType: string;
  vni?: number;
  vtepMac?: string;
  /** etcd lease id ("0" for a reservation: a key with no TTL) */
  etcdLease: string;
  /** etcd mod revision of the record */
  modRevision: string;
  /** etcd's create revision of the record ('0' when not from etcd) */
  createRevision: string;
}

/** The key leases are held under in memory (LeaseWatcher.leases): one per subnet. */
export const leaseKey = (l: Pick<Lease, 'subnet'>) => `${l.subnet.ip}/${l.subnet.len}`;

/** Whether a re-read record says the same as the one held: what the datapath and the PublicIP rule depend on. */
export const sameLease = (a: Lease, b: Lease) =>
  a.subnet.ip === b.subnet.ip &&
  a.subnet.len === b.subnet.len &&
  a.publicIp === b.publicIp &&
  a.vtepMac === b.vtepMac &&
  a.backendType === b.backendType &&
  a.vni === b.vni &&
  a.createRevision === b.createRevision;

export const isReservation = (l: Pick<Lease, 'etcdLease'>) => l.etcdLease === '0' || l.etcdLease === '';

export function subnetKey(subnet: Cidr): string {
  return formatCidr(subnet).replace('/', '-');
}

/** The IPv4 part of a lease key; undefined when the key is not one. */
export function parseSubnetKey(key: string): Cidr | undefined {
  const v4 = key.split('&')[0];
  const m = /^(\d+\.\d+\.\d+\.\d+)-(\d{1,2})$/.exec(v4);
  return m ? parseCidr(`${m[1]}/${m[2]}`, true) : undefined;
}

const macRe = /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/;
const leaseValueSchema = z.object({
  PublicIP: z.string({ error: 'PublicIP must be a string' }).refine((s) => parseIpv4(s) !== undefined, { error: (i) => `PublicIP ${JSON.stringify(i.input)} is not an IPv4 address` }),
  PublicIPv6: z.string().nullable().optional(),
  BackendType: z.string({ error: 'BackendType must be a string' }).optional().default(''),
  BackendData: z.unknown().optional(),
  BackendV6Data: z.unknown().optional(),
});
const vxlanDataSchema = z.object({
  VNI: z.number({ error: 'BackendData.VNI must be a number' }).int().min(0).max(0xffffff).optional(),
  VtepMAC: z.string({ error: 'BackendData.VtepMAC must be a string' }).regex(macRe, { error: (i) => `BackendData.VtepMAC ${JSON.stringify(i.input)} is not a MAC address` }),
});

export type LeaseParse = { ok: true; lease: Lease } | { ok: false; reason: string };

/** Never throws: a bad record is reported and ignored, the way flannel skips it. */
export function parseLeaseKV(key: string, value: string, etcdLease = '0', modRevision = '0', createRevision = '0'): LeaseParse {
  const subnet = parseSubnetKey(key.split('/').pop() ?? '');
  if (!subnet) return { ok: false, reason: `key ${key}: not a subnet key like 10.244.1.0-24` };
  let doc: unknown;
  try {
    doc = JSON.parse(value);
  } catch {
    return { ok: false, reason: `lease ${key}: value is not JSON` };
  }
  const v = leaseValueSchema.safeParse(doc);
  if (!v.success) return { ok: false, reason: `lease ${key}: ${v.error.issues.map((i) => i.message).join('; ')}` };
  const lease: Lease = { subnet, publicIp: v.data.PublicIP, backendType: v.data.BackendType, etcdLease, modRevision, createRevision };
  if (v.data.BackendType === 'vxlan') {
    const d = vxlanDataSchema.safeParse(typeof v.data.BackendData === 'string' ? safeJson(v.data.BackendData) : v.data.BackendData);
    if (!d.success) return { ok: false, reason: `lease ${key}: ${d.error.issues.map((i) => i.message).join('; ')}` };
    lease.vni = d.data.VNI;
    lease.vtepMac = d.data.VtepMAC.toLowerCase();
  }
  return { ok: true, lease };
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

/** What our own record says: flannel's LeaseAttrs for the backend in use. */
export type LeaseAttrs = { publicIp: string; backendType: 'vxlan'; vni: number; vtepMac: string } | { publicIp: string; backendType: 'host-gw' };

/**
 * Our own record, byte for byte as flanneld writes it. host-gw has no BackendData (flannel's
 * LeaseAttrs omits an empty one).
 */
export function encodeLeaseValue(attrs: LeaseAttrs): string {
  if (attrs.backendType === 'host-gw') return JSON.stringify({ PublicIP: attrs.publicIp, PublicIPv6: null, BackendType: 'host-gw' });
  return JSON.stringify({ PublicIP: attrs.publicIp, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: attrs.vni, VtepMAC: attrs.vtepMac } });
}
