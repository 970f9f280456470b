import { z } from 'zod';
import { formatCidr, parseCidr, parseIpv4, type Cidr } from '../net/ipv4.js';
import { formatCidr6, formatIpv6, parseCidr6, parseIpv6, sameCidr6, type Cidr6 } from '../net/ipv6.js';
import { VNI_MAX } from '../net/vxlan.js';

/*
 * flannel's lease records (pkg/subnet/subnet.go MakeSubnetKey, pkg/lease/lease.go LeaseAttrs):
 * key `<prefix>/subnets/10.244.1.0-24`, dual stack `10.244.1.0-24&fc00:0:0:1::-64`, IPv6 only
 * `0.0.0.0-0&fc00:0:0:1::-64` (flannel's zero IP4Net); value {"PublicIP","PublicIPv6",
 * "BackendType","BackendData","BackendV6Data"}.
 */

/** The IPv4 part of an IPv6-only lease: flannel's zero IP4Net, as its key and PublicIP say. */
export const NO_SUBNET: Cidr = Object.freeze({ ip: 0, len: 0 });
export const NO_PUBLIC_IP = '0.0.0.0';

export interface Lease {
  /** NO_SUBNET (0.0.0.0/0) in an IPv6-only lease */
  subnet: Cidr;
  subnet6?: Cidr6;
  /** NO_PUBLIC_IP in an IPv6-only lease */
  publicIp: string;
  /** canonical text (formatIpv6), when the record names one */
  publicIpv6?: string;
  backendType: string;
  vni?: number;
  vtepMac?: string;
  /** BackendV6Data.VtepMAC, lower case */
  vtepMac6?: string;
  /** etcd lease id ("0" for a reservation: a key with no TTL) */
  etcdLease: string;
  /** etcd mod revision of the record */
  modRevision: string;
  /** etcd's create revision of the record ('0' when not from etcd) */
  createRevision: string;
}

/**
 * The key leases are held under in memory (LeaseWatcher.leases): one per etcd record, so both
 * parts count. Every IPv6-only lease has the same IPv4 part: only its IPv6 one tells them apart.
 */
export const leaseKey = (l: Pick<Lease, 'subnet' | 'subnet6'>) => `${l.subnet.ip}/${l.subnet.len}${l.subnet6 ? `&${l.subnet6.ip}/${l.subnet6.len}` : ''}`;

/** Whether a re-read record says the same as the one held: what the datapath and the PublicIP rule depend on. */
export const sameLease = (a: Lease, b: Lease) =>
  a.subnet.ip === b.subnet.ip &&
  a.subnet.len === b.subnet.len &&
  sameCidr6(a.subnet6, b.subnet6) &&
  a.publicIp === b.publicIp &&
  a.publicIpv6 === b.publicIpv6 &&
  a.vtepMac === b.vtepMac &&
  a.vtepMac6 === b.vtepMac6 &&
  a.backendType === b.backendType &&
  a.vni === b.vni &&
  a.createRevision === b.createRevision;

export const isReservation = (l: Pick<Lease, 'etcdLease'>) => l.etcdLease === '0' || l.etcdLease === '';

/** flannel's MakeSubnetKey: the IPv6 part only when there is one. */
export function subnetKey(subnet: Cidr, subnet6?: Cidr6): string {
  const v4 = formatCidr(subnet).replace('/', '-');
  return subnet6 ? `${v4}&${formatCidr6(subnet6).replace(/\/(\d+)$/, '-$1')}` : v4;
}

/** Both parts of a lease key (flannel's ParseSubnetKey: lower-case hex only); undefined when the key is not one. */
export function parseSubnetKeyParts(key: string): { subnet: Cidr; subnet6?: Cidr6 } | undefined {
  const m = /^(\d+\.\d+\.\d+\.\d+)-(\d{1,2})(?:&([0-9a-f:]+)-(\d{1,3}))?$/.exec(key);
  const subnet = m ? parseCidr(`${m[1]}/${m[2]}`, true) : undefined;
  if (!m || !subnet) return undefined;
  if (m[3] === undefined) return { subnet };
  const subnet6 = parseCidr6(`${m[3]}/${m[4]}`, true);
  return subnet6 && { subnet, subnet6 };
}

const macRe = /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/;
const leaseValueSchema = z.object({
  PublicIP: z
    .string({ error: 'PublicIP must be a string' })
    .refine((s) => parseIpv4(s) !== undefined, { error: (i) => `PublicIP ${JSON.stringify(i.input)} is not an IPv4 address` }),
  PublicIPv6: z
    .string({ error: 'PublicIPv6 must be a string or null' })
    .refine((s) => parseIpv6(s) !== undefined, { error: (i) => `PublicIPv6 ${JSON.stringify(i.input)} is not an IPv6 address` })
    .nullable()
    .optional(),
  BackendType: z.string({ error: 'BackendType must be a string' }).optional().default(''),
  BackendData: z.unknown().optional(),
  BackendV6Data: z.unknown().optional(),
});
/** flannel's vxlanLeaseAttrs, in BackendData (IPv4) or BackendV6Data (IPv6) */
const vxlanDataSchema = (field: 'BackendData' | 'BackendV6Data') =>
  z.object(
    {
      VNI: z
        .number({ error: `${field}.VNI must be a number` })
        .int()
        .min(0)
        .max(VNI_MAX)
        .optional(),
      VtepMAC: z
        .string({ error: `${field}.VtepMAC must be a string` })
        .regex(macRe, { error: (i) => `${field}.VtepMAC ${JSON.stringify(i.input)} is not a MAC address` }),
    },
    { error: `${field} must be an object` },
  );
const vxlanData = { BackendData: vxlanDataSchema('BackendData'), BackendV6Data: vxlanDataSchema('BackendV6Data') };

export type LeaseParse = { ok: true; lease: Lease } | { ok: false; reason: string };

/** Never throws: a bad record is reported and ignored, the way flannel skips it. */
export function parseLeaseKV(key: string, value: string, etcdLease = '0', modRevision = '0', createRevision = '0'): LeaseParse {
  const parts = parseSubnetKeyParts(key.split('/').pop() ?? '');
  if (!parts) return { ok: false, reason: `key ${key}: not a subnet key like 10.244.1.0-24 or 10.244.1.0-24&fc00:0:0:1::-64` };
  const { subnet, subnet6 } = parts;
  let doc: unknown;
  try {
    doc = JSON.parse(value);
  } catch {
    return { ok: false, reason: `lease ${key}: value is not JSON` };
  }
  const v = leaseValueSchema.safeParse(doc);
  if (!v.success) return { ok: false, reason: `lease ${key}: ${v.error.issues.map((i) => i.message).join('; ')}` };
  const lease: Lease = { subnet, publicIp: v.data.PublicIP, backendType: v.data.BackendType, etcdLease, modRevision, createRevision };
  if (subnet6) lease.subnet6 = subnet6;
  if (v.data.PublicIPv6) lease.publicIpv6 = formatIpv6(parseIpv6(v.data.PublicIPv6)!);
  if (v.data.BackendType === 'vxlan') {
    // An IPv6-only lease has no BackendData (flannel's newSubnetAttrs, pkg/backend/vxlan/vxlan.go); every other one must.
    const v6Only = subnet.len === 0 && subnet6 !== undefined;
    for (const field of ['BackendData', 'BackendV6Data'] as const) {
      const raw = v.data[field];
      if (raw === undefined || raw === null) {
        if (field === 'BackendData' && !v6Only) return { ok: false, reason: `lease ${key}: BackendData missing` };
        if (field === 'BackendV6Data' && v6Only) return { ok: false, reason: `lease ${key}: BackendV6Data missing in an IPv6-only lease` };
        continue;
      }
      const d = vxlanData[field].safeParse(typeof raw === 'string' ? safeJson(raw) : raw);
      if (!d.success) return { ok: false, reason: `lease ${key}: ${d.error.issues.map((i) => i.message).join('; ')}` };
      if (field === 'BackendData') lease.vtepMac = d.data.VtepMAC.toLowerCase();
      else lease.vtepMac6 = d.data.VtepMAC.toLowerCase();
      lease.vni ??= d.data.VNI;
    }
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

/**
 * What our own record says: flannel's LeaseAttrs for the backend in use. `publicIp` is
 * NO_PUBLIC_IP in an IPv6-only network (flannel's zero IP4); `vtepMac` names the IPv4 VTEP and
 * `vtepMac6` the IPv6 one, each present when that family is enabled.
 */
export type LeaseAttrs = { publicIp: string; publicIpv6?: string } & (
  { backendType: 'vxlan'; vni: number; vtepMac?: string; vtepMac6?: string } | { backendType: 'host-gw' }
);

/**
 * Our own record, byte for byte as flanneld writes it: Go's encoding/json over LeaseAttrs
 * (pkg/lease/lease.go) keeps the struct's field order, writes PublicIPv6 (a *ip.IP6) as null
 * when absent, and omits an empty BackendData/BackendV6Data (`json:",omitempty"`), as host-gw's
 * always are. vxlan fills each from its device (newSubnetAttrs in pkg/backend/vxlan/vxlan.go).
 */
export function encodeLeaseValue(attrs: LeaseAttrs): string {
  const vxlan = attrs.backendType === 'vxlan' ? attrs : undefined;
  // Go prints addresses canonically and MACs in lower case, whatever text they were given in.
  const data = (mac: string | undefined) => (vxlan && mac ? { VNI: vxlan.vni, VtepMAC: mac.toLowerCase() } : undefined);
  const ipv6 = attrs.publicIpv6 && parseIpv6(attrs.publicIpv6);
  return JSON.stringify({
    PublicIP: attrs.publicIp,
    PublicIPv6: ipv6 === undefined || ipv6 === '' ? null : formatIpv6(ipv6),
    BackendType: attrs.backendType,
    BackendData: data(vxlan?.vtepMac),
    BackendV6Data: attrs.publicIpv6 ? data(vxlan?.vtepMac6) : undefined,
  });
}
