import { describe, expect, it } from 'vitest';
import { unsupportedBy } from '../../controller/bpf/attach-fallback.js';
import { describeLink, linkKindMismatch } from '../../controller/bpf/link-kind.js';

// errno values (asm-generic/errno-base.h, errno.h) and the kernel's internal ENOTSUPP
const EPERM = 1;
const ENOENT = 2;
const ENODEV = 19;
const EBUSY = 16;
const EEXIST = 17;
const EINVAL = 22;
const ENOSPC = 28;
const EOPNOTSUPP = 95;
const ENOTSUPP = 524;
const OTHER_ERRORS = [EPERM, ENOENT, EBUSY, EEXIST, ENODEV, ENOSPC, ENOTSUPP];

describe('which attach failures mean "not supported" (and so try the older way)', () => {
  it('a tcx link: EINVAL, the attach type unknown before Linux 6.6; nothing else', () => {
    expect(unsupportedBy('tcx-link', EINVAL)).toBe('tcx');
    for (const errno of [...OTHER_ERRORS, EOPNOTSUPP]) expect(unsupportedBy('tcx-link', errno), `errno ${errno}`).toBeUndefined();
  });

  it('an XDP link: EINVAL, no XDP links before 5.9; EOPNOTSUPP, a driver without native XDP', () => {
    expect(unsupportedBy('xdp-link', EINVAL)).toBe('xdp-link');
    expect(unsupportedBy('xdp-link', EOPNOTSUPP)).toBe('native-xdp');
    for (const errno of OTHER_ERRORS) expect(unsupportedBy('xdp-link', errno), `errno ${errno}`).toBeUndefined();
  });

  it('a netlink XDP attachment in driver mode: EOPNOTSUPP only', () => {
    expect(unsupportedBy('xdp-native', EOPNOTSUPP)).toBe('native-xdp');
    for (const errno of [...OTHER_ERRORS, EINVAL]) expect(unsupportedBy('xdp-native', errno), `errno ${errno}`).toBeUndefined();
  });

  it('a hook held by another program (EBUSY) is an error, never a reason to replace it through netlink', () => {
    expect(unsupportedBy('xdp-link', EBUSY)).toBeUndefined();
  });
});

describe('the kind of a pinned link', () => {
  // enum bpf_link_type / bpf_attach_type (uapi/linux/bpf.h)
  const XDP = { type: 6 };
  const TCX_INGRESS = { type: 11, attachType: 46 };
  const TCX_EGRESS = { type: 11, attachType: 47 };
  const CGROUP = { type: 3 };

  it('accepts the kind twill pins there', () => {
    expect(linkKindMismatch(XDP, { type: 'xdp' })).toBeUndefined();
    expect(linkKindMismatch(TCX_INGRESS, { type: 'tcx', direction: 'ingress' })).toBeUndefined();
    expect(linkKindMismatch(TCX_EGRESS, { type: 'tcx', direction: 'egress' })).toBeUndefined();
  });

  it('names what it is instead: another link type, or tcx in the other direction', () => {
    expect(linkKindMismatch(XDP, { type: 'tcx', direction: 'egress' })).toBe('xdp');
    expect(linkKindMismatch(TCX_EGRESS, { type: 'tcx', direction: 'ingress' })).toBe('tcx egress');
    expect(linkKindMismatch(TCX_INGRESS, { type: 'xdp' })).toBe('tcx ingress');
    expect(linkKindMismatch(CGROUP, { type: 'xdp' })).toBe('cgroup');
    expect(describeLink({ type: 99 })).toBe('link type 99');
    expect(describeLink({ type: 11, attachType: 3 })).toBe('tcx attach type 3');
  });
});
