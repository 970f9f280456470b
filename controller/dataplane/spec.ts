import { z } from 'zod';
import { backendSchema, decapHookSchema, podSourceCheckSchema } from '../config/choices.js';
import { parseCidr, parseIpv4 } from '../net/ipv4.js';
import { FLANNEL_VXLAN_PORT, VNI_MAX } from '../net/vxlan.js';

/** The overlay device the stack routes remote subnets to (a BPF node's flannel.<VNI>). */
export const OVERLAY_DEVICE = 'twill0';
/** The receive-only, flow-based vxlan device that holds the VXLAN port. */
export const TUNNEL_DEVICE = 'twill-rx';
/**
 * The prefix of the headroom ports (controller/dataplane/headroom.ts): one down vxlan device per
 * pod bridge, there only so the bridge gives every pod veth the headroom VXLAN needs.
 */
export const HEADROOM_DEVICE_PREFIX = 'twill-hr';

// Through controller/net's parsers, the ones the rest of twill reads addresses with: octets in range.
const ipv4 = z.string().refine((t) => parseIpv4(t) !== undefined, 'an IPv4 address');
const cidr = z.string().refine((t) => parseCidr(t) !== undefined, 'an IPv4 CIDR like 10.244.1.0/24');
const mac = z.string().regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, 'a MAC address like 0a:58:0a:f4:01:01');

/** Where and as whom a node's datapath runs; validated before anything is touched. */
export const dataplaneSpecSchema = z
  .object({
    pinDir: z.string().startsWith('/sys/fs/bpf/', 'a directory under /sys/fs/bpf'),
    underlayIface: z.string().min(1).max(15),
    /** The IPv4 identity; all three absent in an IPv6-only network (twill_config6 carries the node's identity there). */
    publicIp: ipv4.optional(),
    /** the VtepMAC twill_config keeps (an IPv6-only node's lease publishes none, but a restart keeps it) */
    vtepMac: mac,
    subnet: cidr.optional(),
    network: cidr.optional(),
    /**
     * flannel's backend: vxlan (per-peer VXLAN, or direct routes for peers flagged so in the maps),
     * or host-gw (every peer routed directly: no VXLAN port, no tunnel device, no XDP).
     */
    backend: backendSchema.default('vxlan'),
    vni: z.number().int().min(0).max(VNI_MAX).default(1),
    port: z.number().int().min(1).max(65535).default(FLANNEL_VXLAN_PORT),
    /** Underlay MTU; the overlay device gets the backend's overhead less (backendOverhead: 50 for VXLAN, none for host-gw). */
    mtu: z.number().int().min(576).max(65535).optional(),
    overlayDevice: z.string().min(1).max(15).default(OVERLAY_DEVICE),
    /** the receive-only flow-based vxlan device that holds the VXLAN port (GRO, reassembled fragments) */
    tunnelDevice: z.string().min(1).max(15).default(TUNNEL_DEVICE),
    /**
     * Where decap runs: XDP ahead of GRO (NICs with native XDP), or tc ingress after GRO (veth
     * underlays, where XDP costs a copy per packet and disables the sending peer's segmentation
     * offload, and drivers without native XDP). auto picks by the underlay's driver.
     */
    decapHook: decapHookSchema.default('auto'),
    /** Pod traffic to and from remote pods bypasses the host stack where it needs nothing from it. */
    fastPath: z.boolean().default(true),
    /** drop: every pod veth checks the source of what its pod sends, whether or not the fast path is on */
    podSourceCheck: podSourceCheckSchema.default('drop'),
  })
  .refine((s) => [s.publicIp, s.subnet, s.network].every((v) => v === undefined) || [s.publicIp, s.subnet, s.network].every((v) => v !== undefined), {
    message: 'publicIp, subnet and network come together (all absent: an IPv6-only node)',
    path: ['publicIp'],
  });

export type DataplaneSpec = z.output<typeof dataplaneSpecSchema>;

export const VXLAN_OVERHEAD = 50;
/** Outer IPv6 + UDP + VXLAN + inner Ethernet. */
export const VXLAN6_OVERHEAD = 70;

/** What the backend adds to every packet on the underlay: the pods' and the overlay device's MTU is the underlay's less this. */
export const backendOverhead = (backend: DataplaneSpec['backend']) => (backend === 'host-gw' ? 0 : VXLAN_OVERHEAD);

class SpecError extends Error {
  override name = 'SpecError';
}

export function parseDataplaneSpec(input: unknown): DataplaneSpec {
  const res = dataplaneSpecSchema.safeParse(input);
  if (!res.success) {
    const problems = res.error.issues.map((i) => `${i.path.join('.') || 'spec'}: ${i.message}`);
    throw new SpecError(`invalid dataplane spec: ${problems.join('; ')}`);
  }
  return res.data;
}

/**
 * Pin layout of one node: maps by name at the top (libbpf pin_root_path), links beside them.
 * bpffs holds only BPF objects, so the record of what is attached where lives under /run,
 * which, like bpffs, starts empty after a reboot.
 */
export const pinPaths = (pinDir: string) => ({
  encapLink: `${pinDir}/links/encap`,
  /** the decap hook: an XDP link, or the tcx ingress link when decap runs in tc */
  decapLink: `${pinDir}/links/decap`,
  /** with decap in XDP: the tcx ingress link that delivers the decapped packets into pods */
  deliverLink: `${pinDir}/links/deliver`,
  /** tcx ingress of the tunnel device: judges what the kernel decapped there */
  tunnelLink: `${pinDir}/links/tunnel-rx`,
  /** one tcx ingress link per pod veth, named after the veth */
  podLinks: `${pinDir}/links/pods`,
  /** the send half of the fast path, pinned so pods that appear later can be attached */
  podProgram: `${pinDir}/progs/twill_from_pod`,
  attachState: `/run/twill/dataplane/${pinDir.replace(/^\/sys\/fs\/bpf\//, '')}/attach.json`,
});
