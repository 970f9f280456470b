import koffi from 'koffi';
import { EEXIST, ENOENT } from './errno.js';
import { BpfError, check } from './errors.js';
import { closeFd, getFromPin, getInfo, pinFd } from './fd.js';
import { LinkCreateOpts, TcHook, TcOpts, XdpAttachOpts, raw } from './libbpf-raw.js';
import {
  BPF_TCX,
  BPF_XDP,
  LINK_TYPE_NETKIT,
  LINK_TYPE_TCX,
  LINK_TYPE_XDP,
  describeLinkKind,
  linkKindMismatch,
  type LinkInfo,
  type LinkKind,
  type TcxDirection,
} from './link-kind.js';
import type { ProgramRef } from './object.js';

/*
 * Links and attach points: tcx and XDP links (pinned, swapped atomically), and the legacy
 * attachments for kernels without them (clsact filters, netlink XDP). Which one is used when is
 * the caller's choice; attach-fallback.ts says which failures mean "not supported".
 */

const BPF_LINK_INFO_SIZE = 256; // larger than any kernel's struct bpf_link_info; zero tail is accepted

export class BpfLink {
  private closed = false;
  private constructor(
    readonly fd: number,
    private readonly what: string,
  ) {}

  /**
   * Opens a pinned link. With `expected`, a link of another type or direction is refused (and
   * left alone): twill would otherwise swap its program onto, or detach, someone else's hook.
   */
  static fromPin(pinPath: string, expected?: LinkKind): BpfLink {
    const link = new BpfLink(getFromPin(pinPath, 'link'), `link pinned at ${pinPath}`);
    if (!expected) return link;
    let found: string | undefined;
    try {
      found = linkKindMismatch(link.info(), expected);
    } catch (err) {
      link.close();
      throw err;
    }
    if (found === undefined) return link;
    link.close();
    throw new Error(
      `the link pinned at ${pinPath} is a ${found} link, not the ${describeLinkKind(expected)} link twill keeps there: refusing to reuse it (remove the pin if it is not in use)`,
    );
  }

  /**
   * An XDP link. 'any': driver (native) mode where the device has it (veth does), generic
   * otherwise; 'native': driver mode or an error (EOPNOTSUPP on a driver without XDP).
   */
  static attachXdp(prog: ProgramRef, ifindex: number, mode: 'any' | 'native' = 'any'): BpfLink {
    const what = `xdp ${mode === 'native' ? 'native ' : ''}${prog.name} on ifindex ${ifindex}`;
    const opts = { ...linkCreateOpts(), flags: mode === 'native' ? XDP_MODE.native : 0 };
    return new BpfLink(check(raw.linkCreate(prog.fd, ifindex, BPF_XDP, opts) as number, 'bpf_link_create', what), what);
  }

  /** A tcx link (Linux 6.6+); see probeTcx(). */
  static attachTcx(prog: ProgramRef, ifindex: number, dir: TcxDirection): BpfLink {
    const what = `tcx ${dir} ${prog.name} on ifindex ${ifindex}`;
    return new BpfLink(check(raw.linkCreate(prog.fd, ifindex, BPF_TCX[dir], null) as number, 'bpf_link_create', what), what);
  }
  /** Pinned, the link (and so the attachment) outlives the fd and the process. */
  pin(pinPath: string): void {
    this.assertOpen();
    pinFd(this.fd, pinPath, this.what);
  }

  /** Atomic: packets see either the old program or the new one, never none. */
  update(prog: ProgramRef): void {
    this.assertOpen();
    check(raw.linkUpdate(this.fd, prog.fd, null) as number, 'bpf_link_update', `${this.what} -> ${prog.name}`);
  }

  info(): LinkInfo {
    this.assertOpen();
    const b = getInfo(this.fd, BPF_LINK_INFO_SIZE, this.what);
    const type = b.readUInt32LE(0);
    const out: LinkInfo = { type, id: b.readUInt32LE(4), progId: b.readUInt32LE(8) };
    // The union starts at 16 (8-aligned); xdp: { ifindex }, tcx/netkit: { ifindex, attach_type }.
    if (type === LINK_TYPE_XDP || type === LINK_TYPE_TCX || type === LINK_TYPE_NETKIT) out.ifindex = b.readUInt32LE(16);
    if (type === LINK_TYPE_TCX || type === LINK_TYPE_NETKIT) out.attachType = b.readUInt32LE(20);
    return out;
  }

  /** Detaches the program from its hook; the link object (and its pin) stays, defunct. */
  detach(): void {
    this.assertOpen();
    check(raw.linkDetach(this.fd) as number, 'bpf_link_detach', this.what);
  }

  /** Closes the fd only: a pinned link stays attached. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`${this.what} is closed`);
  }
}

function linkCreateOpts() {
  return {
    sz: koffi.sizeof(LinkCreateOpts),
    flags: 0,
    iter_info: null,
    iter_info_len: 0,
    target_btf_id: 0,
    kprobe_multi: { flags: 0, cnt: 0, syms: null, addrs: null, cookies: null },
  };
}

const TC_POINT = { ingress: 1 /* BPF_TC_INGRESS */, egress: 2 /* BPF_TC_EGRESS */ } as const;
const BPF_TC_F_REPLACE = 1;

function tcHook(ifindex: number, dir: TcxDirection) {
  return { sz: koffi.sizeof(TcHook), ifindex, attach_point: TC_POINT[dir], parent: 0 };
}

/** clsact qdisc (kept if present) + a direct-action filter, for kernels without tcx; re-attaching replaces the filter atomically. */
export function tcClsactAttach(prog: ProgramRef, ifindex: number, dir: TcxDirection, opts: { handle?: number; priority?: number } = {}): void {
  const hook = tcHook(ifindex, dir);
  const rc = raw.tcHookCreate(hook) as number;
  if (rc < 0 && rc !== -EEXIST) check(rc, 'bpf_tc_hook_create', `clsact on ifindex ${ifindex}`);
  const o = { sz: koffi.sizeof(TcOpts), prog_fd: prog.fd, flags: BPF_TC_F_REPLACE, prog_id: 0, handle: opts.handle ?? 1, priority: opts.priority ?? 1 };
  check(raw.tcAttach(hook, o) as number, 'bpf_tc_attach', `${dir} ${prog.name} on ifindex ${ifindex}`);
}

/** Removes the filter (handle/priority as attached); a filter that is already gone is not an error. The clsact qdisc stays. */
export function tcClsactDetach(ifindex: number, dir: TcxDirection, opts: { handle?: number; priority?: number } = {}): void {
  const o = { sz: koffi.sizeof(TcOpts), prog_fd: 0, flags: 0, prog_id: 0, handle: opts.handle ?? 1, priority: opts.priority ?? 1 };
  const rc = raw.tcDetach(tcHook(ifindex, dir), o) as number;
  if (rc < 0 && rc !== -ENOENT) check(rc, 'bpf_tc_detach', `${dir} on ifindex ${ifindex}`);
}

const XDP_MODE = { native: 4 /* XDP_FLAGS_DRV_MODE */, generic: 2 /* XDP_FLAGS_SKB_MODE */ } as const;

function xdpAttachOpts() {
  return { sz: koffi.sizeof(XdpAttachOpts), old_prog_fd: 0 };
}

/** Netlink XDP attachment (no link object): replaces whatever program is in that mode. */
export function xdpAttachLegacy(prog: ProgramRef, ifindex: number, mode: 'native' | 'generic'): void {
  check(raw.xdpAttach(ifindex, prog.fd, XDP_MODE[mode], xdpAttachOpts()) as number, 'bpf_xdp_attach', `${mode} ${prog.name} on ifindex ${ifindex}`);
}

export function xdpDetachLegacy(ifindex: number, mode: 'native' | 'generic'): void {
  check(raw.xdpDetach(ifindex, XDP_MODE[mode], xdpAttachOpts()) as number, 'bpf_xdp_detach', `${mode} on ifindex ${ifindex}`);
}

/** if_nametoindex in the calling thread's network namespace. */
export function ifNameToIndex(name: string): number {
  const idx = raw.ifNameToIndex(name) as number;
  if (idx === 0) throw new BpfError('if_nametoindex', koffi.errno(), name);
  return idx;
}
