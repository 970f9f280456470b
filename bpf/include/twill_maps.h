/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every struct that crosses between the BPF programs and user space.
 * maps/layout.ts mirrors these field by field; test/integration/btf-layout.test.ts
 * compares both against the BTF of the built objects, so the two cannot drift.
 *
 * Addresses are __u8[4] and MACs __u8[6] in network byte order: keys are compared
 * as bytes, there is no padding to zero, and `bpftool map dump` prints them as
 * readable arrays with their field names.
 *
 * Pinned maps are reused across upgrades by name, and libbpf refuses a pinned map
 * whose sizes differ: a layout change bumps LAYOUT_VERSION in maps/layout.ts (its one
 * home: the attach state records it), and the loader replaces a pinned map of another
 * layout before loading (the agent refills it).
 */
#ifndef TWILL_MAPS_H
#define TWILL_MAPS_H

#include <linux/types.h>

/* Single-entry array "twill_config": this node's identity and the cluster shape. */
struct twill_config {
	__u8  public_ip[4];      /* outer source address; VXLAN is accepted only to it */
	__u8  vtep_mac[6];       /* inner source MAC of what we send (our lease's VtepMAC) */
	__u8  underlay_mac[6];   /* decapped frames are re-addressed to this MAC so the stack takes them as PACKET_HOST */
	__u8  subnet[4];         /* our lease's subnet: decap only delivers into it */
	__u8  network[4];        /* the cluster network (flannel's Network) */
	__u8  subnet_len;        /* flannel's SubnetLen, the same on every node */
	__u8  network_len;
	__u16 vxlan_port;        /* host byte order; 8472 unless Backend.Port says otherwise; 0: no VXLAN at all (host-gw) */
	__u32 vni;               /* host byte order */
	__u32 underlay_ifindex;  /* where encapsulated packets leave */
	__u32 flags;             /* TWILL_CONFIG_* bits */
};

/* twill_config.flags */
#define TWILL_CONFIG_FAST_PATH 0x1u  /* pod traffic to and from remote pods may bypass the host stack */
#define TWILL_CONFIG_POD_SOURCE_CHECK 0x2u  /* --pod-source-check drop: a pod sends only from its own addresses */

/* Hash "twill_subnets": remote subnet base address -> where its VTEP lives. */
struct twill_subnet_key {
	__u8 subnet[4];
};

struct twill_remote {
	__u8  public_ip[4];      /* the peer's PublicIP, outer destination */
	__u8  vtep_mac[6];       /* the peer's VtepMAC, inner destination (a kernel VXLAN peer drops any other) */
	__u16 flags;             /* TWILL_REMOTE_* bits */
	__u16 stats_slot;        /* the peer's index in twill_peer_stats (the same as in twill_peers) */
};

/*
 * twill_remote.flags. DIRECT: the peer shares our L2 segment (the host-gw backend, or VXLAN with
 * DirectRouting where its PublicIP is on-link): its pods' packets go to its PublicIP as they are,
 * as flannel's route `<subnet> via <PublicIP>` sends them, not in VXLAN; and plain IPv4 from its
 * subnet is what it sends us.
 */
#define TWILL_REMOTE_DIRECT 0x1u

/* Hash "twill_peers": PublicIP of every known peer; decap drops VXLAN from anyone else. */
struct twill_peer_key {
	__u8 public_ip[4];
};

struct twill_peer {
	__u8 subnet[4];
	__u8 vtep_mac[6];
	__u8 subnet_len;
	__u8 flags;              /* reserved, 0 */
	__u16 stats_slot;        /* the peer's index in twill_peer_stats */
};

/*
 * Hash "twill_next_hops": per peer PublicIP (key: twill_peer_key), the MAC of the underlay next
 * hop toward it (the peer itself when on-link, else its gateway), copied by the agent from the
 * kernel's neighbour entry for that next hop while the kernel holds it confirmed or is verifying
 * it (controller/dataplane/next-hops.ts). A hit lets the programs write the outer Ethernet header
 * and bpf_redirect() to the underlay; a miss takes bpf_redirect_neigh(). Packets that bypass the
 * kernel's entry never make it verify that entry again, so the agent removes a next hop whose
 * entry went STALE: the next packet then goes through the entry, the kernel verifies it (and
 * finds the peer's new MAC, if it changed), and the agent writes it again.
 */
struct twill_next_hop {
	__u8  mac[6];
	__u16 flags;             /* reserved, 0 */
};

/*
 * Per-CPU array "twill_peer_stats": traffic per peer, indexed by the stats_slot the agent
 * stores in the peer's twill_subnets and twill_peers entries. The programs already hold
 * those entries, so counting costs one array lookup, not a hash lookup. The agent zeroes
 * a slot before giving it to a new peer. Slot 0 is never given out: it collects what
 * entries written without a slot carry (a build before per-peer counters, a full array).
 */
struct twill_peer_stats {
	__u64 encap_packets;     /* segments for a GSO packet, as the wire sees them */
	__u64 encap_bytes;       /* inner frame bytes, before encapsulation */
	__u64 decap_packets;
	__u64 decap_bytes;       /* inner frame bytes, after decapsulation */
	__u64 source_drops;      /* (since layout 7) from the peer with an inner source outside its subnet: drop_peer_source */
};

/* Per-CPU single-entry array "twill_stats"; user space sums the CPUs. */
struct twill_stats {
	__u64 encap_packets;
	__u64 encap_bytes;
	__u64 decap_packets;
	__u64 decap_bytes;
	__u64 drop_no_peer;          /* encap: destination in the network but no lease covers it */
	__u64 drop_not_ip;           /* encap: not a whole IPv4 or IPv6 packet (ARP, a cut header) was routed to the overlay device; drop_not_ipv4 before layout 8 */
	__u64 drop_too_big;          /* encap: would exceed the underlay MTU once encapsulated */
	__u64 drop_encap_error;      /* encap: a helper refused (headroom, GSO type, ...) */
	__u64 drop_unknown_source;   /* decap: VXLAN from an address that holds no lease */
	__u64 drop_bad_vni;
	__u64 drop_malformed;        /* decap: truncated or inconsistent VXLAN / inner headers */
	__u64 drop_ip_options;       /* decap: outer IPv4 with options (no VTEP sends them) */
	__u64 drop_fragment;         /* unused since layout 3: fragmented VXLAN is reassembled by the stack, then decapped */
	__u64 drop_inner_not_ipv4;
	__u64 drop_inner_dst;        /* decap: inner destination outside our subnet (v4 or v6) */
	__u64 drop_inner_not_ipv6;   /* decap (since layout 4): IPv6 VXLAN whose inner frame is not IPv6 */
	__u64 drop_pod_source;       /* from a pod (since layout 7): a source that is none of the pod's addresses */
	__u64 drop_peer_source;      /* decap (since layout 7): a peer's inner source outside that peer's subnet */
	__u64 drop_ipv6_off;         /* encap (since layout 8): IPv6 while this node carries none (no IPv6Network, no IPv6 lease); drop_not_ipv4 before */
};

/*
 * Hash "twill_endpoints": this node's pods, by address. The fast path delivers into a pod with
 * it (receive side) and accepts from a pod's veth only what that pod may send (send side).
 */
struct twill_endpoint_key {
	__u8 ip[4];
};

struct twill_endpoint {
	__u32 ifindex;           /* the pod's host-side veth (its peer is the pod's interface) */
	__u8  mac[6];            /* the pod's MAC: inner destination of what is delivered into it */
	__u8  gateway_mac[6];    /* the pod's gateway (its bridge): source of what is delivered, destination of what it routes */
	__u16 mtu;               /* the pod's link: a larger packet for it goes to the stack, which fragments or answers */
	__u16 encap_mtu;         /* the largest packet from the pod that fits the underlay once encapsulated */
	__u32 flags;             /* reserved, 0 */
};

/*
 * Per-CPU array "twill_path_stats", one entry per direction (TWILL_PATH_SEND, TWILL_PATH_RECEIVE):
 * packets the fast path carried past the host stack, and packets it handed to the stack, by
 * reason. A GSO packet counts as its segments. Not every reason applies to both directions.
 */
struct twill_path_stats {
	__u64 fast;              /* bypassed the host stack */
	__u64 not_ip;            /* send: not a whole IPv4 or IPv6 packet (ARP, ...) from a pod; not_ipv4 before layout 8 */
	__u64 not_remote;        /* send: destination in no remote lease (this node, a Service, outside) */
	__u64 no_endpoint;       /* receive: destination is not a local pod */
	__u64 source;            /* send: not from the veth's own pod or not to its gateway; receive: not from a peer's VTEP */
	__u64 conntrack;         /* the node's conntrack knows the flow (NAT to undo, state to keep) */
	__u64 ttl;               /* TTL 1 or 0: the stack answers with ICMP time exceeded */
	__u64 fragment;          /* IP fragment or IP options; receive: also VXLAN the stack reassembled for twill-rx */
	__u64 protocol;          /* neither TCP, UDP nor ICMP echo (ICMP errors are related to a flow) */
	__u64 too_big;           /* does not fit the underlay once encapsulated: the stack fragments or answers */
	__u64 disabled;          /* --fast-path=false */
	__u64 error;             /* a helper refused: handed to the stack unchanged */
	__u64 ipv6_off;          /* send (since layout 8): IPv6 from a pod while this node carries none; not_ipv4 before */
};

/*
 * Hash "twill_endpoints6": this node's pods by IPv6 address, for the IPv6 fast path. The value is
 * a twill_endpoint, whose encap_mtu here is the largest packet that fits the underlay once in IPv6
 * VXLAN (the underlay's MTU less 70).
 */
struct twill_endpoint6_key {
	__u8 ip6[16];
};

#define TWILL_PATH_SEND    0
#define TWILL_PATH_RECEIVE 1
#define TWILL_PATH_DIRECTIONS 2

/*
 * IPv6 (flannel's dual stack: inner IPv6 in VXLAN over an IPv6 underlay, same VNI and port as
 * IPv4, the peer's BackendV6Data.VtepMAC as inner destination). Addresses are __u8[16] in
 * network order. The drop counters are twill_stats', shared with IPv4 where the reason is the same.
 *
 * Single-entry array "twill_config6": this node's IPv6 identity. flags 0 (the agent has not
 * written it, or the cluster has no IPv6Network): IPv6 is neither encapsulated nor accepted.
 */
struct twill_config6 {
	__u8  public_ip6[16];    /* our PublicIPv6: IPv6 VXLAN is accepted only to it */
	__u8  subnet6[16];       /* our lease's IPv6Subnet: decap only delivers into it */
	__u8  network6[16];      /* the cluster's IPv6Network */
	__u8  vtep_mac6[6];      /* inner source MAC of what we send (our lease's BackendV6Data.VtepMAC) */
	__u8  subnet6_len;       /* flannel's IPv6SubnetLen, the same on every node */
	__u8  network6_len;
	__u32 tunnel_ifindex;    /* the flow-based vxlan device (twill-rx) IPv6 VXLAN leaves and arrives through */
	__u32 flags;             /* TWILL_CONFIG6_* bits */
};

#define TWILL_CONFIG6_ENABLED 0x1u

/* Hash "twill_subnets6": remote IPv6 subnet base address -> where its VTEP lives. */
struct twill_subnet6_key {
	__u8 subnet6[16];
};

struct twill_remote6 {
	__u8  public_ip6[16];    /* the peer's PublicIPv6, outer destination */
	__u8  vtep_mac6[6];      /* the peer's v6 VtepMAC, inner destination */
	__u16 flags;             /* reserved, 0 */
	__u16 stats_slot;        /* the peer's index in twill_peer_stats (the same as its IPv4 entries', if any) */
};

/* Hash "twill_peers6": PublicIPv6 of every known peer; IPv6 VXLAN from anyone else is dropped. */
struct twill_peer6_key {
	__u8 public_ip6[16];
};

struct twill_peer6 {
	__u8  subnet6[16];
	__u8  vtep_mac6[6];
	__u8  subnet6_len;
	__u8  flags;             /* reserved, 0 */
	__u16 stats_slot;
};

/*
 * Hash "twill_next_hops6": twill_next_hops for IPv6 VXLAN, per peer PublicIPv6 (key:
 * twill_peer6_key), copied from the kernel's IPv6 neighbour entries under the same rules.
 */

/*
 * `twill monitor` (layout 5: two maps added, none changed, so pins of layout 4 are kept and the
 * two new maps are created beside them).
 *
 * Single-entry array "twill_monitor": whether anybody listens. Only `twill monitor` sets flags,
 * and clears them when it ends; while they are 0 the programs write no event, and what a drop or
 * a fast-path decision costs is this array's lookup (inlined by the verifier) and one branch.
 * owner_pid/owner_start name the monitor that set them, so that the agent (and the next monitor)
 * can tell a monitor killed with SIGKILL from a live one and clear what it left on.
 */
struct twill_monitor {
	__u32 flags;             /* TWILL_MONITOR_* bits */
	__u32 trace_sample;      /* TRACE: keep one decision in trace_sample, chosen at random (0 and 1: every one) */
	__u32 owner_pid;         /* the monitor that set flags */
	__u32 owner_pidns;       /* inode of its pid namespace: its pid means something only there */
	__u64 owner_start;       /* its start time, field 22 of /proc/<pid>/stat: a reused pid is not taken for it */
	__u64 lost;              /* events the ring buffer had no room for */
};

#define TWILL_MONITOR_DROPS 0x1u /* every counted drop */
#define TWILL_MONITOR_TRACE 0x2u /* fast-path and stack-path decisions of twill_from_pod, twill_decap_tc and twill_tunnel_rx */

/* twill_event.kind */
#define TWILL_EVENT_DROP  1
#define TWILL_EVENT_TRACE 2

/* twill_event.hook: the program (and so the attach point) that saw the packet */
#define TWILL_HOOK_ENCAP     1   /* twill_encap, tc egress of twill0: the stack path's send */
#define TWILL_HOOK_FROM_POD  2   /* twill_from_pod, tcx ingress of a pod's veth: the fast path's send */
#define TWILL_HOOK_XDP_DECAP 3   /* twill_decap, XDP on the underlay */
#define TWILL_HOOK_TC_DECAP  4   /* twill_decap_tc, tcx ingress of the underlay */
#define TWILL_HOOK_TUNNEL_RX 5   /* twill_tunnel_rx, tc ingress of twill-rx */

/*
 * The reason an event carries is the counter the program bumped for it, as its index in 8-byte
 * words: of twill_stats for a drop, of twill_path_stats for a decision (0 there is `fast`). User
 * space names it from the same struct layout `twill maps` prints, so the two always agree.
 */
#define TWILL_DROP_REASON(field) ((__u8)(__builtin_offsetof(struct twill_stats, field) / 8))
#define TWILL_PATH_REASON(field) ((__u8)(__builtin_offsetof(struct twill_path_stats, field) / 8))

#define TWILL_EVENT_HEADERS 128  /* outer Ethernet, IPv6, UDP, VXLAN, inner Ethernet, IPv6 and ports fit */

/*
 * Ring buffer "twill_events": one record per drop or sampled decision while twill_monitor asks.
 * The packet's first bytes travel as they are, and user space reads the outer and inner
 * addresses out of them: parsing costs nothing in the datapath.
 */
struct twill_event {
	__u64 time_ns;           /* bpf_ktime_get_ns() */
	__u32 ifindex;           /* the device the hook runs on */
	__u32 len;               /* the packet's bytes at the hook (a GSO packet: all its segments) */
	__u8  kind;              /* TWILL_EVENT_* */
	__u8  hook;              /* TWILL_HOOK_* */
	__u8  reason;            /* TWILL_DROP_REASON / TWILL_PATH_REASON */
	__u8  tunnel_family;     /* 4 or 6: tunnel_src/dst hold outer addresses the packet no longer has (twill-rx decapped it); 0: none */
	__u16 peer_slot;         /* the peer's twill_peer_stats slot; 0: not known */
	__u16 captured;          /* bytes of the packet in headers */
	__u8  tunnel_src[16];    /* IPv4 in the first 4 bytes */
	__u8  tunnel_dst[16];
	__u8  headers[TWILL_EVENT_HEADERS];  /* the packet from its Ethernet header, as the hook saw it */
};

#define TWILL_EVENTS_BYTES (256 * 1024)

#define TWILL_MAX_ENDPOINTS 8192
#define TWILL_MAX_SUBNETS 65536
#define TWILL_MAX_PEERS   65536
/* Per-CPU memory is slots x 40 B x CPUs; 8192 covers Kubernetes' 5000-node limit. */
#define TWILL_MAX_STATS_SLOTS 8192

#endif
