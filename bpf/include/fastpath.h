/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the fast path may carry past the host stack, in either direction: TCP, UDP and ICMP echo
 * over IPv4 (unfragmented, without options) or IPv6 (no extension header), with TTL or hop limit
 * to spare, of a flow the node's conntrack has no entry for. A flow conntrack knows may carry NAT (kube-proxy's DNAT of a Service, SNAT of a
 * NodePort) or state that its rules check (--ctstate INVALID), and both directions of such a flow
 * must keep crossing the stack. Everything else goes to the stack too, counted by reason.
 */
#ifndef TWILL_FASTPATH_H
#define TWILL_FASTPATH_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <linux/in6.h>
#include "maps.bpf.h"
#include "vxlan.h"
#include "monitor.h"

/* <linux/icmp.h> drags in libc's headers, which a BPF target does not have. */
struct icmp_echo_hdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u16 id;
	__u16 sequence;
};
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO      8

/* may_bypass's answer when the packet may take the fast path */
#define PATH_FAST TWILL_PATH_REASON(fast)

/*
 * Adds `n` packets to the twill_path_stats counter `reason` names (TWILL_PATH_REASON: its index in
 * 8-byte words, which is also what the decision's trace reports) and returns the reason. Per-CPU
 * slot: a plain add is race-free; the bound costs nothing for a constant reason.
 */
static __always_inline __u8 path_count(struct twill_path_stats *ps, __u8 reason, __u32 n)
{
	if (ps && reason < sizeof(*ps) / sizeof(__u64))
		((__u64 *)ps)[reason] += n;
	return reason;
}

/* A packet left to the stack for `reason`, already counted (may_bypass's answer): traced, TC_ACT_OK. */
static __always_inline int path_stacked(struct __sk_buff *skb, __u8 hook, __u8 reason, __u16 slot)
{
	twill_trace(skb, hook, reason, slot);
	return TC_ACT_OK;
}

/* A packet left to the stack for `reason`: counted as its `n` segments, traced, TC_ACT_OK. */
static __always_inline int path_stack(struct __sk_buff *skb, struct twill_path_stats *ps, __u8 hook, __u8 reason, __u16 slot, __u32 n)
{
	return path_stacked(skb, hook, path_count(ps, reason, n), slot);
}

/* A packet the fast path carries (its verdict is the caller's): counted, traced. */
static __always_inline void path_fast(struct __sk_buff *skb, struct twill_path_stats *ps, __u8 hook, __u16 slot, __u32 n)
{
	twill_trace(skb, hook, path_count(ps, PATH_FAST, n), slot);
}

/* A GSO packet counts as the segments it stands for, as the wire and the pod see them. */
static __always_inline __u32 segments(const struct __sk_buff *skb)
{
	return skb->gso_segs > 1 ? skb->gso_segs : 1;
}

static __always_inline bool mac_eq(const __u8 *a, const __u8 *b)
{
	const __u16 *x = (const __u16 *)a, *y = (const __u16 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
}

#ifndef TWILL_NO_CONNTRACK
/*
 * The conntrack kfuncs (Linux 5.19+). libbpf matches these prototypes against the kernel's, and
 * refuses a forward-declared struct nf_conn ("func_proto incompatible"): it is defined, with the
 * one field CO-RE would relocate if it were read. bpf_ct_opts is the original 12-byte layout,
 * which later kernels still accept.
 */
struct nf_conn {
	unsigned long status;
} __attribute__((preserve_access_index));

struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 tuple__sz, struct bpf_ct_opts *opts,
					 __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

#define CT_ENOENT 2
#endif

/*
 * Whether this node's conntrack has an entry for the flow, in either direction (conntrack finds
 * a reply by its reply tuple). An answer other than "no such entry" counts as known: when in
 * doubt, the stack. Built without conntrack support only for kernels that have none, where no
 * NAT state can exist.
 */
static __always_inline bool conntrack_has(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 tuple_size, __u8 l4proto)
{
#ifdef TWILL_NO_CONNTRACK
	return false;
#else
	struct bpf_ct_opts opts = { .netns_id = BPF_F_CURRENT_NETNS, .l4proto = l4proto };
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, tuple, tuple_size, &opts, sizeof(opts));
	if (ct) {
		bpf_ct_release(ct);
		return true;
	}
	return opts.error != -CT_ENOENT;
#endif
}

#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY   129

/*
 * The half of may_bypass both families share, on what follows the IP header (`l3`, of `v6`'s
 * family; `v6` is a constant in each caller): ICMP echo may bypass the stack, as may TCP and UDP
 * of a flow conntrack has no entry for; anything else goes to the stack.
 */
static __always_inline __u32 transport_may_bypass(struct __sk_buff *skb, bool v6, const void *l3, __u8 proto, const void *l4, const void *data_end,
						  struct twill_path_stats *ps, __u32 n)
{
	if (proto == (v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP)) {
		/* Echo carries no NAT here (kube-proxy translates TCP, UDP and SCTP); errors relate to a flow. */
		const struct icmp_echo_hdr *icmp = l4;
		if ((const void *)(icmp + 1) <= data_end &&
		    (v6 ? icmp->type == ICMPV6_ECHO_REQUEST || icmp->type == ICMPV6_ECHO_REPLY : icmp->type == ICMP_ECHO || icmp->type == ICMP_ECHOREPLY))
			return PATH_FAST;
		return path_count(ps, TWILL_PATH_REASON(protocol), n);
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return path_count(ps, TWILL_PATH_REASON(protocol), n);
	const struct udphdr *ports = l4; /* source and destination ports sit alike in TCP and UDP */
	if ((const void *)(ports + 1) > data_end)
		return path_count(ps, TWILL_PATH_REASON(conntrack), n);   /* when in doubt, the stack */
	struct bpf_sock_tuple tuple = {};
	__u32 tuple_size;
	if (v6) {
		const struct ipv6hdr *ip6 = l3;
		__builtin_memcpy(tuple.ipv6.saddr, &ip6->saddr, sizeof(tuple.ipv6.saddr));
		__builtin_memcpy(tuple.ipv6.daddr, &ip6->daddr, sizeof(tuple.ipv6.daddr));
		tuple.ipv6.sport = ports->source;
		tuple.ipv6.dport = ports->dest;
		tuple_size = sizeof(tuple.ipv6);
	} else {
		const struct iphdr *ip = l3;
		tuple.ipv4.saddr = ip->saddr;
		tuple.ipv4.daddr = ip->daddr;
		tuple.ipv4.sport = ports->source;
		tuple.ipv4.dport = ports->dest;
		tuple_size = sizeof(tuple.ipv4);
	}
	if (!conntrack_has(skb, &tuple, tuple_size, proto))
		return PATH_FAST;
	return path_count(ps, TWILL_PATH_REASON(conntrack), n);
}

/*
 * The checks both directions make on an IPv4 packet whose addresses already qualify. `ip` is in
 * the linear part of the skb with at least its fixed header. PATH_FAST (0) if it may bypass the
 * stack, else the twill_path_stats reason it goes there for, counted.
 */
static __always_inline __u32 may_bypass(struct __sk_buff *skb, const struct iphdr *ip, const void *data_end, struct twill_path_stats *ps, __u32 n)
{
	/* Version 4 with a 20-byte header, not a fragment: the stack reassembles, and honours options. */
	if (*(const __u8 *)ip != IPV4_VERSION_IHL_PLAIN || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return path_count(ps, TWILL_PATH_REASON(fragment), n);
	if (ip->ttl <= 1)
		return path_count(ps, TWILL_PATH_REASON(ttl), n);
	return transport_may_bypass(skb, false, ip, ip->protocol, ip + 1, data_end, ps, n);
}

/*
 * may_bypass for IPv6: TCP, UDP or ICMPv6 echo directly after the fixed header (an extension
 * header, a fragment's included, is the stack's to handle), hop limit to spare, a flow unknown to
 * conntrack. Neighbour discovery and router advertisements never get here: they are not addressed
 * to a remote pod.
 */
static __always_inline __u32 may_bypass6(struct __sk_buff *skb, const struct ipv6hdr *ip6, const void *data_end, struct twill_path_stats *ps, __u32 n)
{
	if (ip6->version != IPV6_VERSION)
		return path_count(ps, TWILL_PATH_REASON(fragment), n);
	if (ip6->hop_limit <= 1)
		return path_count(ps, TWILL_PATH_REASON(ttl), n);
	switch (ip6->nexthdr) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_FRAGMENT:
	case IPPROTO_DSTOPTS:
		return path_count(ps, TWILL_PATH_REASON(fragment), n);
	}
	return transport_may_bypass(skb, true, ip6, ip6->nexthdr, ip6 + 1, data_end, ps, n);
}

/*
 * Whether the IP packet after the Ethernet header fits `mtu` (plus `overhead` once
 * encapsulated). A single packet is measured here; a GSO packet's segments by the kernel, and
 * so is any packet when the agent gave no MTU.
 */
static __always_inline bool fits(struct __sk_buff *skb, __u32 mtu, __u32 ifindex, __s32 overhead)
{
	if (mtu && !skb->gso_size)
		return skb->len - ETH_HLEN <= mtu;
	__u32 mtu_len = 0;
	return bpf_check_mtu(skb, ifindex, &mtu_len, overhead, 0) == 0;
}

/* What a router does to a packet it forwards (the kernel's ip_decrease_ttl: the TTL is the high byte of its checksummed word). */
static __always_inline void ip_decrease_ttl(struct iphdr *ip)
{
	__u32 check = ip->check;
	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

#endif
