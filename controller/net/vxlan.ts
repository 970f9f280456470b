/*
 * VXLAN numbers flannel's config and twill's datapath share (the BPF side names them in
 * bpf/include/vxlan.h).
 */

/** flannel's VXLAN UDP port, Linux's original default rather than IANA's 4789: Backend.Port's default. */
export const FLANNEL_VXLAN_PORT = 8472;

/** A VNI is 24 bits. */
export const VNI_MAX = 0xffffff;
