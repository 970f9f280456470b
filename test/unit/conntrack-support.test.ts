import { describe, expect, it } from 'vitest';
import { conntrackSupport } from '../../controller/dataplane/bpf-objects.js';

// modules.dep lines as Debian's kernels write them.
const withModule = 'kernel/net/netfilter/nf_conntrack.ko.xz: kernel/net/netfilter/nf_defrag_ipv6.ko.xz kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.xz\n';
const withoutModule = 'kernel/drivers/net/vxlan/vxlan.ko.xz: kernel/net/ipv4/udp_tunnel.ko.xz\nkernel/net/netfilter/nf_conntrack_ftp.ko.xz:\n';

describe('whether the programs may skip the conntrack check', () => {
  it('not when conntrack is built in or loaded', () => {
    expect(conntrackSupport(true, undefined)).toBe('present');
    expect(conntrackSupport(true, withoutModule)).toBe('present');
  });
  it('only when the kernel has no conntrack module at all', () => {
    expect(conntrackSupport(false, withoutModule)).toBe('absent');
  });
  it('not when the module exists but could not be loaded, or the module list cannot be read', () => {
    expect(conntrackSupport(false, withModule)).toBe('unavailable');
    expect(conntrackSupport(false, undefined)).toBe('unavailable');
  });
});
