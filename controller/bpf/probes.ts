import { unsupportedBy } from './attach-fallback.js';
import { ENODEV } from './errno.js';
import { BpfError } from './errors.js';
import { raw } from './libbpf-raw.js';
import { BPF_TCX } from './link-kind.js';

/*
 * Feature probes: what the running kernel supports, asked of the kernel itself (libbpf's probes
 * load a tiny program or map; BTF is looked up in the kernel's own type information).
 */

let tcx: boolean | undefined;
/**
 * Whether BPF_TCX link attach exists (Linux 6.6+). Probed once with a BPF_PROG_QUERY for
 * BPF_TCX_INGRESS on loopback: kernels without tcx reject the attach type with EINVAL, kernels
 * with it answer (or say ENODEV if ifindex 1 were missing). No program is loaded. Any other
 * failure (no CAP_NET_ADMIN, say) is thrown: it would fail a clsact attach as well.
 */
export function probeTcx(): boolean {
  if (tcx === undefined) {
    const attachFlags = [0];
    const count = [0];
    const rc = raw.progQuery(1, BPF_TCX.ingress, 0, attachFlags, null, count) as number;
    if (rc >= 0 || rc === -ENODEV) tcx = true;
    else if (unsupportedBy('tcx-link', -rc) === 'tcx') tcx = false;
    else throw new BpfError('bpf_prog_query', -rc, 'BPF_TCX_INGRESS on ifindex 1, the tcx probe');
  }
  return tcx;
}

/** libbpf_probe_bpf_helper: 1 the verifier accepts the helper in that program type, 0 not, -errno the probe failed. */
export function probeHelper(progType: number, helperId: number): number {
  return raw.probeHelper(progType, helperId, null) as number;
}

/** libbpf_probe_bpf_map_type: 1 yes, 0 no, -errno the probe failed. */
export function probeMapType(mapType: number): number {
  return raw.probeMapType(mapType, null) as number;
}

const BTF_KIND_FUNC = 12;

/** Parsed BTF (the kernel's, or a module's split on top of it); free() it. */
export class Btf {
  private constructor(private readonly handle: unknown) {}

  /** undefined when libbpf cannot parse the file */
  static parse(path: string): Btf | undefined {
    const h: unknown = raw.btfParse(path, null);
    return h ? new Btf(h) : undefined;
  }

  /** A module's BTF, which refers to types of its base (vmlinux). */
  static parseSplit(path: string, base: Btf): Btf | undefined {
    const h: unknown = raw.btfParseSplit(path, base.handle);
    return h ? new Btf(h) : undefined;
  }

  hasFunction(name: string): boolean {
    return (raw.btfFindByNameKind(this.handle, name, BTF_KIND_FUNC) as number) > 0;
  }

  free(): void {
    raw.btfFree(this.handle);
  }
}

const CLONE_NEWNET = 0x40000000;

/** setns(fd, CLONE_NEWNET) for the calling thread only; false when the kernel refused. */
export function setThreadNetns(fd: number): boolean {
  return (raw.setns(fd, CLONE_NEWNET) as number) === 0;
}
