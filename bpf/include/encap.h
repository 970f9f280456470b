/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Wrapping a frame in flannel's VXLAN, shared by the overlay device's egress (twill_encap: the
 * stack path) and the pods' veths (twill_from_pod: the fast path), so both put the same bytes
 * on the wire.
 */
#ifndef TWILL_ENCAP_H
#define TWILL_ENCAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.bpf.h"
#include "vxlan.h"

struct vxlan_encap_hdr {
	struct ethhdr outer_eth;
	struct iphdr ip;
	struct udphdr udp;
	struct vxlanhdr vxlan;
	struct ethhdr inner_eth;
} __attribute__((packed));

_Static_assert(sizeof(struct vxlan_encap_hdr) == ETH_HLEN + VXLAN_OVERHEAD, "encap header size");

static __always_inline __u16 ipv4_header_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < (int)sizeof(*ip) / 2; i++)
		sum += w[i];
	return csum_fold32(sum);
}

/* The outer header carries the inner ECN codepoint, CE downgraded to ECT(0) (RFC 6040). */
static __always_inline __u8 outer_tos(__u8 inner_tos)
{
	__u8 ecn = inner_tos & INET_ECN_MASK;
	return ecn == INET_ECN_CE ? INET_ECN_ECT_0 : ecn;
}

/* Mixing constants: 2^32 / the golden ratio, and murmur3's 32-bit finaliser (fmix32). */
#define HASH_GOLDEN_RATIO_32 0x9e3779b1u
#define MURMUR3_FMIX32_C1    0x85ebca6bu
#define MURMUR3_FMIX32_C2    0xc2b2ae35u

/* Folds a flow hash into 32768..60999, like the kernel's udp_flow_src_port(), for RSS and ECMP entropy. */
static __always_inline __u16 sport_of_hash(__u32 h)
{
	return (__u16)((((__u64)h * (VXLAN_SPORT_MAX - VXLAN_SPORT_MIN)) >> 32) + VXLAN_SPORT_MIN);
}

/* murmur3's finaliser (fmix32): spreads a mix of the flow's fields over all 32 bits. */
static __always_inline __u32 flow_mix(__u32 h)
{
	h ^= h >> 16;
	h *= MURMUR3_FMIX32_C1;
	h ^= h >> 13;
	h *= MURMUR3_FMIX32_C2;
	h ^= h >> 16;
	return h;
}

/*
 * The outer UDP source port from the inner flow. The skb's own hash is used when the sender set
 * one (TCP sockets do); otherwise the 5-tuple is mixed here, which costs a few instructions where
 * bpf_get_hash_recalc() would run the flow dissector and siphash.
 */
static __always_inline __u16 encap_source_port(const struct __sk_buff *skb, const struct iphdr *ip, const void *data_end)
{
	__u32 h = skb->hash;
	if (!h) {
		const __u32 *ports = (const void *)(ip + 1);
		h = ip->saddr ^ ((ip->daddr << 16) | (ip->daddr >> 16)) ^ ip->protocol;
		if ((ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) && ip->ihl == IPV4_IHL_MIN && !(ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) &&
		    (const void *)(ports + 1) <= data_end)
			h ^= *ports * HASH_GOLDEN_RATIO_32;
		h = flow_mix(h);
	}
	return sport_of_hash(h);
}

/* The same for an IPv6 packet, whose ports are left out: its addresses carry the entropy. */
static __always_inline __u16 encap6_source_port(const struct __sk_buff *skb, const struct ipv6hdr *ip6)
{
	__u32 h = skb->hash;
	if (!h) {
		const __u32 *s = ip6->saddr.in6_u.u6_addr32, *d = ip6->daddr.in6_u.u6_addr32;
		h = flow_mix(s[0] ^ s[1] ^ s[2] ^ s[3] ^ ((d[3] << 16) | (d[3] >> 16)) ^ d[2] ^ (d[1] * HASH_GOLDEN_RATIO_32) ^ d[0] ^ ip6->nexthdr);
	}
	return sport_of_hash(h);
}

static __always_inline void count_encap(struct twill_stats *stats, __u16 slot, __u32 packets, __u32 inner_len)
{
	if (stats) {
		stats->encap_packets += packets;
		stats->encap_bytes += inner_len;
	}
	struct twill_peer_stats *peer_stats = twill_get_peer_stats(slot);
	if (peer_stats) {
		peer_stats->encap_packets += packets;
		peer_stats->encap_bytes += inner_len;
	}
}

enum encap_result {
	ENCAP_OK,
	ENCAP_UNCHANGED,   /* no room could be made: the packet is as it was */
	ENCAP_BROKEN,      /* headers half-written: the packet must be dropped */
};

/*
 * Puts outer Ethernet (MACs left to the neighbour layer), IPv4, UDP, VXLAN and inner Ethernet
 * in front of the IPv4 packet that follows the Ethernet header at skb->data. `inner_tos` and
 * `sport` are taken from the inner packet by the caller, before it moves. Counts the packet on
 * success.
 */
static __always_inline enum encap_result vxlan_encap(struct __sk_buff *skb, const struct twill_config *cfg, const struct twill_remote *remote,
						      __u8 inner_tos, __u16 sport, struct twill_stats *stats)
{
	__u32 packets = skb->gso_segs > 1 ? skb->gso_segs : 1;
	__u32 inner_len = skb->len;

	/*
	 * FIXED_GSO keeps gso_size (the inner MSS) unchanged; the ENCAP flags mark the skb as
	 * a UDP tunnel with an inner Ethernet header so the underlay device (or software GSO)
	 * segments it and fixes every segment's outer lengths.
	 */
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
		      BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN) |
		      BPF_F_ADJ_ROOM_ENCAP_L2_ETH;
	if (bpf_skb_adjust_room(skb, VXLAN_OVERHEAD, BPF_ADJ_ROOM_MAC, flags)) {
		/*
		 * The tunnel flags are refused (-EALREADY) for an skb still marked as encapsulated:
		 * on a veth underlay, a packet decapped by XDP here and routed back out (a NodePort
		 * reply, say) is the very skb its sender encapsulated. A single packet needs no tunnel
		 * GSO metadata, so it is grown plainly; a GSO one cannot be.
		 */
		if (skb->gso_segs > 1 || bpf_skb_adjust_room(skb, VXLAN_OVERHEAD, BPF_ADJ_ROOM_MAC, 0))
			return ENCAP_UNCHANGED;
	}

	struct vxlan_encap_hdr h = {};
	h.outer_eth.h_proto = bpf_htons(ETH_P_IP);
	struct iphdr ip = {
		.version = IPV4_VERSION,
		.ihl = IPV4_IHL_MIN,
		.tos = outer_tos(inner_tos),
		.tot_len = bpf_htons(skb->len - ETH_HLEN),
		.frag_off = bpf_htons(IP_DF),
		.ttl = VXLAN_OUTER_TTL,
		.protocol = IPPROTO_UDP,
		.saddr = ipv4_u32(cfg->public_ip),
		.daddr = ipv4_u32(remote->public_ip),
	};
	ip.check = ipv4_header_csum(&ip);
	h.ip = ip;
	h.udp.source = bpf_htons(sport);
	h.udp.dest = bpf_htons(cfg->vxlan_port);
	h.udp.len = bpf_htons(skb->len - ETH_HLEN - sizeof(struct iphdr));
	h.udp.check = 0;                               /* legal for IPv4, as the kernel's VXLAN sends it */
	h.vxlan.vx_flags = bpf_htonl(VXLAN_FLAG_I);
	h.vxlan.vx_vni = bpf_htonl(cfg->vni << VXLAN_VNI_SHIFT);
	__builtin_memcpy(h.inner_eth.h_dest, remote->vtep_mac, ETH_ALEN);
	__builtin_memcpy(h.inner_eth.h_source, cfg->vtep_mac, ETH_ALEN);
	h.inner_eth.h_proto = bpf_htons(ETH_P_IP);

	if (bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0))
		return ENCAP_BROKEN;

	count_encap(stats, remote->stats_slot, packets, inner_len);
	return ENCAP_OK;
}

/*
 * IPv6 VXLAN through the kernel: the frame at skb->data (Ethernet, then IPv6) leaves through the
 * flow-based vxlan device (twill-rx) with a tunnel key for the peer, and the kernel's vxlan driver
 * encapsulates it. vxlan6_send() takes this way for what vxlan6_encap() cannot send itself.
 *
 * Why a GSO packet goes this way: IPv6 VXLAN must carry a valid UDP checksum (a kernel receiver,
 * flannel-v6.<VNI> included, drops a zero one unless udp6zerocsumrx is set, which flannel does
 * not set). adjust_room's ENCAP flags mark a GSO packet SKB_GSO_UDP_TUNNEL, never _CSUM, and
 * __skb_udp_tunnel_segment() (net/ipv4/udp_offload.c) fills in each segment's outer UDP checksum
 * only when need_csum = gso_type & SKB_GSO_UDP_TUNNEL_CSUM: every segment would keep the checksum
 * written before segmentation, wrong for all of them. The vxlan driver, with TUNNEL_CSUM in the
 * key (bpf_skb_set_tunnel_key's default), marks the packet _CSUM, so every segment is right.
 * Cilium encapsulates the same way (set_tunnel_key + redirect to a collect-md device).
 *
 * The inner MACs are ours to set: the driver sends the frame as it is. The outer source is our
 * PublicIPv6 (the key's local address, Linux 6.0+, as bpf_skb_get_tunnel_key in twill_tunnel_rx
 * already needs), not the route's preferred source: a peer accepts VXLAN only from the address
 * in our lease, which need not be the underlay's. Counts the packet on success.
 */
static __always_inline long vxlan6_encap_redirect(struct __sk_buff *skb, const struct twill_config *cfg, const struct twill_config6 *cfg6,
						   const struct twill_remote6 *remote, struct twill_stats *stats)
{
	__u32 packets = skb->gso_segs > 1 ? skb->gso_segs : 1;
	__u32 inner_len = skb->len;
	struct bpf_tunnel_key key = {};

	__builtin_memcpy(key.remote_ipv6, remote->public_ip6, sizeof(key.remote_ipv6));
	__builtin_memcpy(key.local_ipv6, cfg6->public_ip6, sizeof(key.local_ipv6));
	key.tunnel_id = cfg->vni;
	key.tunnel_ttl = VXLAN_OUTER_TTL;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6))
		return -1;
	if (bpf_skb_store_bytes(skb, 0, remote->vtep_mac6, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, cfg6->vtep_mac6, ETH_ALEN, 0))
		return -1;
	count_encap(stats, remote->stats_slot, packets, inner_len);
	return bpf_redirect(cfg6->tunnel_ifindex, 0);
}

struct vxlan6_encap_hdr {
	struct ethhdr outer_eth;
	struct ipv6hdr ip6;
	struct udphdr udp;
	struct vxlanhdr vxlan;
	struct ethhdr inner_eth;
} __attribute__((packed));

_Static_assert(sizeof(struct vxlan6_encap_hdr) == ETH_HLEN + VXLAN6_OVERHEAD, "IPv6 encap header size");

/* One's-complement sum of `words` 16-bit words at `p`, unfolded, in memory order (RFC 1071: any byte order works if kept). */
static __always_inline __u32 csum_words(const void *p, int words)
{
	const __u16 *w = p;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < words; i++)
		sum += w[i];
	return sum;
}

/* The IPv6 pseudo-header of an upper-layer packet of `len` bytes (RFC 8200 8.1), unfolded. */
static __always_inline __u32 ipv6_pseudo_sum(const void *saddr, const void *daddr, __u32 len, __u8 nexthdr)
{
	return csum_words(saddr, 8) + csum_words(daddr, 8) + bpf_htons(len >> 16) + bpf_htons(len & 0xffff) + bpf_htons(nexthdr);
}

/*
 * IPv6 VXLAN written by the program, with a valid outer UDP checksum computed without reading the
 * payload. The inner packet's own checksum (TCP, UDP with one, ICMPv6) covers everything behind
 * its IPv6 header together with its pseudo-header, so those bytes sum, once that checksum is
 * final, to the complement of the pseudo-header, whether the checksum is written already or left
 * for the device to finish (CHECKSUM_PARTIAL). The outer checksum then needs only the bytes in
 * front of the inner transport header: the kernel's local checksum offload (lco_csum(),
 * Documentation/networking/checksum-offloads.rst), which its own UDP tunnels use. A pod that sends
 * a wrong inner checksum makes the outer one wrong too, and the receiving kernel drops what the
 * receiving socket would have dropped.
 *
 * Left unchanged, for vxlan6_encap_redirect(): GSO packets (see above), inner packets with
 * extension headers or another transport, a UDP datagram without a checksum, a payload length
 * that is not the packet's, and a packet the helper will not grow.
 */
static __always_inline enum encap_result vxlan6_encap(struct __sk_buff *skb, const struct twill_config *cfg, const struct twill_config6 *cfg6,
						       const struct twill_remote6 *remote, struct twill_stats *stats)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const struct ipv6hdr *ip6 = data + ETH_HLEN;

	if (skb->gso_size || (void *)(ip6 + 1) > data_end)
		return ENCAP_UNCHANGED;
	struct ipv6hdr inner = *ip6;
	__u32 l4_len = bpf_ntohs(inner.payload_len);
	if (l4_len == 0 || l4_len != skb->len - ETH_HLEN - sizeof(inner))
		return ENCAP_UNCHANGED;
	if (inner.nexthdr == IPPROTO_UDP) {
		__u16 check;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(inner) + __builtin_offsetof(struct udphdr, check), &check, sizeof(check)) || !check)
			return ENCAP_UNCHANGED;
	} else if (inner.nexthdr != IPPROTO_TCP && inner.nexthdr != IPPROTO_ICMPV6) {
		return ENCAP_UNCHANGED;
	}
	__u16 sport = encap6_source_port(skb, &inner);
	__u32 inner_len = skb->len;

	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN) | BPF_F_ADJ_ROOM_ENCAP_L2_ETH;
	if (bpf_skb_adjust_room(skb, VXLAN6_OVERHEAD, BPF_ADJ_ROOM_MAC, flags))
		return ENCAP_UNCHANGED;

	__u32 udp_len = skb->len - ETH_HLEN - sizeof(struct ipv6hdr);
	/* Aligned, so that the checksum below reads its 16-bit words aligned (the verifier insists on the stack). */
	struct vxlan6_encap_hdr h __attribute__((aligned(8))) = {};
	h.outer_eth.h_proto = bpf_htons(ETH_P_IPV6);
	h.ip6.version = IPV6_VERSION;
	/* The traffic class is split across priority and flow_lbl[0]: only its ECN bits are carried, as IPv4's tos. */
	__u8 inner_tclass = (inner.priority << 4) | (inner.flow_lbl[0] >> 4);
	h.ip6.flow_lbl[0] = outer_tos(inner_tclass) << 4;
	h.ip6.payload_len = bpf_htons(udp_len);
	h.ip6.nexthdr = IPPROTO_UDP;
	h.ip6.hop_limit = VXLAN_OUTER_TTL;
	__builtin_memcpy(&h.ip6.saddr, cfg6->public_ip6, sizeof(h.ip6.saddr));
	__builtin_memcpy(&h.ip6.daddr, remote->public_ip6, sizeof(h.ip6.daddr));
	h.udp.source = bpf_htons(sport);
	h.udp.dest = bpf_htons(cfg->vxlan_port);
	h.udp.len = bpf_htons(udp_len);
	h.vxlan.vx_flags = bpf_htonl(VXLAN_FLAG_I);
	h.vxlan.vx_vni = bpf_htonl(cfg->vni << VXLAN_VNI_SHIFT);
	__builtin_memcpy(h.inner_eth.h_dest, remote->vtep_mac6, ETH_ALEN);
	__builtin_memcpy(h.inner_eth.h_source, cfg6->vtep_mac6, ETH_ALEN);
	h.inner_eth.h_proto = bpf_htons(ETH_P_IPV6);

	/* Outer pseudo-header, UDP + VXLAN + inner Ethernet, inner IPv6 header, and what the inner transport sums to. */
	__u32 sum = ipv6_pseudo_sum(cfg6->public_ip6, remote->public_ip6, udp_len, IPPROTO_UDP);
	sum += csum_words((const __u8 *)&h + __builtin_offsetof(struct vxlan6_encap_hdr, udp), (sizeof(h.udp) + sizeof(h.vxlan) + sizeof(h.inner_eth)) / 2);
	sum += csum_words(&inner, sizeof(inner) / 2);
	sum += csum_fold32(ipv6_pseudo_sum(&inner.saddr, &inner.daddr, l4_len, inner.nexthdr));
	__u16 check = csum_fold32(sum);
	h.udp.check = check ? check : 0xffff; /* 0 would mean "no checksum" (RFC 768) */

	if (bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0))
		return ENCAP_BROKEN;
	count_encap(stats, remote->stats_slot, 1, inner_len);
	return ENCAP_OK;
}

/*
 * With the next hop's MAC known (`hop`: its twill_next_hops or twill_next_hops6 entry), the outer
 * Ethernet header's addresses are written here and the packet redirected to the underlay: no
 * route and no neighbour lookup. -1 for a miss or a failed write, which changed nothing: the
 * caller's bpf_redirect_neigh() writes both MACs itself.
 */
static __always_inline long next_hop_redirect(struct __sk_buff *skb, const struct twill_config *cfg, const struct twill_next_hop *hop)
{
	if (!hop)
		return -1;
	__u8 macs[2 * ETH_ALEN];
	__builtin_memcpy(macs, hop->mac, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, cfg->underlay_mac, ETH_ALEN);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0))
		return -1;
	return bpf_redirect(cfg->underlay_ifindex, 0);
}

/*
 * IPv6 VXLAN toward `remote`: written here and sent to the next hop in twill_next_hops6, or
 * through the kernel's route and neighbour lookup; or, where vxlan6_encap() leaves the packet as
 * it was, encapsulated by the vxlan driver on twill-rx.
 */
static __always_inline long vxlan6_send(struct __sk_buff *skb, const struct twill_config *cfg, const struct twill_config6 *cfg6,
					 const struct twill_remote6 *remote, struct twill_stats *stats)
{
	switch (vxlan6_encap(skb, cfg, cfg6, remote, stats)) {
	case ENCAP_OK: {
		struct twill_peer6_key key;
		__builtin_memcpy(key.public_ip6, remote->public_ip6, sizeof(key.public_ip6));
		long ret = next_hop_redirect(skb, cfg, bpf_map_lookup_elem(&twill_next_hops6, &key));
		return ret >= 0 ? ret : bpf_redirect_neigh(cfg->underlay_ifindex, NULL, 0, 0);
	}
	case ENCAP_UNCHANGED:
		return vxlan6_encap_redirect(skb, cfg, cfg6, remote, stats);
	default:
		return -1;
	}
}

/*
 * Out of the underlay toward `remote`, encapsulated or (TWILL_REMOTE_DIRECT: a peer on our L2
 * segment) as it is: to the next hop in twill_next_hops, or else through bpf_redirect_neigh(),
 * toward the PublicIP itself for a direct peer, toward what the route to the outer destination
 * says for VXLAN. A direct packet is not counted in the encap counters, which count VXLAN.
 */
static __always_inline long underlay_send(struct __sk_buff *skb, const struct twill_config *cfg, const struct twill_remote *remote)
{
	struct twill_peer_key key;
	__builtin_memcpy(key.public_ip, remote->public_ip, sizeof(key.public_ip));
	long ret = next_hop_redirect(skb, cfg, bpf_map_lookup_elem(&twill_next_hops, &key));
	if (ret >= 0)
		return ret;
	if (remote->flags & TWILL_REMOTE_DIRECT) {
		struct bpf_redir_neigh nh = { .nh_family = AF_INET };
		nh.ipv4_nh = ipv4_u32(remote->public_ip);
		return bpf_redirect_neigh(cfg->underlay_ifindex, &nh, sizeof(nh), 0);
	}
	return bpf_redirect_neigh(cfg->underlay_ifindex, NULL, 0, 0);
}

#endif
