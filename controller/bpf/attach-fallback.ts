import { EINVAL, EOPNOTSUPP } from './errno.js';

/*
 * Pure: when a failed attach means "this kernel or driver does not have that way of attaching"
 * (so the older way is tried) and when it is a real error (reported, nothing else tried). Every
 * errno not named here is a real error: a busy hook, a missing device, a missing capability or
 * a program of the wrong type must not be papered over by attaching some other way.
 *
 * The kernel facts (kernel/bpf/syscall.c, net/core/dev.c):
 * - BPF_LINK_CREATE (and BPF_PROG_QUERY) with an attach type the kernel does not know returns
 *   EINVAL: BPF_TCX_INGRESS/EGRESS before 6.6, BPF_XDP before 5.9; before 5.7 the command
 *   itself is unknown, EINVAL too.
 * - An XDP attachment in driver mode on a device whose driver has no ndo_bpf returns EOPNOTSUPP
 *   ("Underlying driver does not support XDP in native mode"), for a link as for netlink.
 * - EBUSY (a link or another program already holds the hook) is not "not supported": falling
 *   back to a netlink attachment there would silently replace someone else's program.
 */

export type AttachAttempt = 'tcx-link' | 'xdp-link' | 'xdp-native';
/** What the kernel or driver lacks, when that is what the failure means. */
export type Unsupported = 'tcx' | 'xdp-link' | 'native-xdp';

export function unsupportedBy(attempt: AttachAttempt, errno: number): Unsupported | undefined {
  switch (attempt) {
    case 'tcx-link':
      return errno === EINVAL ? 'tcx' : undefined;
    case 'xdp-link':
      if (errno === EINVAL) return 'xdp-link';
      return errno === EOPNOTSUPP ? 'native-xdp' : undefined;
    case 'xdp-native':
      return errno === EOPNOTSUPP ? 'native-xdp' : undefined;
  }
}
