import { z } from 'zod';

/** Where and as whom a node's datapath runs; validated before anything is touched. */
const ipv4 = z.string().regex(/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/, 'an IPv4 address');
const cidr = z.string().regex(/^(\d{1,3}\.){3}\d{1,3}\/(\d|[12]\d|3[0-2])$/, 'an IPv4 CIDR like 10.244.1.0/24');
const mac = z.string().regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, 'a MAC address like 0a:58:0a:f4:01:01');

export const dataplaneSpecSchema = z.object({
  pinDir: z.string().startsWith('/sys/fs/bpf/', 'a directory under /sys/fs/bpf'),
  underlayIface: z.string().min(1).max(15),
  publicIp: ipv4,
  vtepMac: mac,
  subnet: cidr,
  network: cidr,
  vni: z.number().int().min(0).max(0xffffff).default(1),
  port: z.number().int().min(1).max(65535).default(8472),
  /** Underlay MTU; the overlay device gets 50 bytes less (IPv4 VXLAN overhead). */
  mtu: z.number().int().min(576).max(65535).optional(),
  overlayDevice: z.string().min(1).max(15).default('twill0'),
  /**
   * Where decap runs: XDP ahead of GRO (real NICs), or tc ingress after GRO (veth underlays,
   * where XDP costs a copy per packet and disables the sending peer's segmentation offload).
   */
  decapHook: z.enum(['xdp', 'tc']).default('xdp'),
});

export type DataplaneSpec = z.output<typeof dataplaneSpecSchema>;
export type DataplaneSpecInput = z.input<typeof dataplaneSpecSchema>;

export const VXLAN_OVERHEAD = 50;

export class SpecError extends Error {
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
  decapLink: `${pinDir}/links/decap`,
  attachState: `/run/twill/dataplane/${pinDir.replace(/^\/sys\/fs\/bpf\//, '')}/attach.json`,
});
