// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * twill_encap: TC egress of the overlay device (twill0).
 *
 * The node routes the cluster network to twill0, so everything that reaches this
 * program has been through the host stack already: forwarded pod traffic (TTL
 * decremented, conntrack/kube-proxy NAT applied) and node-originated traffic alike.
 * It wraps the frame in flannel's VXLAN header for the lease that covers the
 * destination and hands it to the kernel to resolve the underlay next hop.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
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
	return ecn == INET_ECN_CE ? 2 : ecn;
}

SEC("tc")
int twill_encap(struct __sk_buff *skb)
{
	struct twill_stats *stats = twill_get_stats();
	struct twill_config *cfg = twill_get_config();
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *inner;

	if (!cfg || cfg->underlay_ifindex == 0)
		return TC_ACT_SHOT;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP)) {
		TWILL_COUNT(stats, drop_not_ipv4);
		return TC_ACT_SHOT;
	}
	inner = (void *)(eth + 1);
	if ((void *)(inner + 1) > data_end) {
		TWILL_COUNT(stats, drop_not_ipv4);
		return TC_ACT_SHOT;
	}

	struct twill_subnet_key key = {};
	*(__u32 *)key.subnet = inner->daddr & prefix_mask(cfg->subnet_len);
	struct twill_remote *remote = bpf_map_lookup_elem(&twill_subnets, &key);
	if (!remote) {
		TWILL_COUNT(stats, drop_no_peer);
		return TC_ACT_SHOT;
	}

	/* Checked before the headers grow: for GSO packets the helper checks each segment. */
	__u32 mtu_len = 0;
	if (bpf_check_mtu(skb, cfg->underlay_ifindex, &mtu_len, VXLAN_OVERHEAD, 0)) {
		TWILL_COUNT(stats, drop_too_big);
		return TC_ACT_SHOT;
	}

	__u8 tos = outer_tos(inner->tos);
	__u32 hash = bpf_get_hash_recalc(skb);
	__u16 sport = (__u16)((((__u64)hash * (VXLAN_SPORT_MAX - VXLAN_SPORT_MIN)) >> 32) + VXLAN_SPORT_MIN);
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
		 * GSO metadata, so it is grown plainly; a GSO one cannot be, and is counted.
		 */
		if (skb->gso_segs > 1 || bpf_skb_adjust_room(skb, VXLAN_OVERHEAD, BPF_ADJ_ROOM_MAC, 0)) {
			TWILL_COUNT(stats, drop_encap_error);
			return TC_ACT_SHOT;
		}
	}

	struct vxlan_encap_hdr h = {};
	h.outer_eth.h_proto = bpf_htons(ETH_P_IP);     /* MACs come from the neighbour layer */
	struct iphdr ip = {
		.version = 4,
		.ihl = 5,
		.tos = tos,
		.tot_len = bpf_htons(skb->len - ETH_HLEN),
		.frag_off = bpf_htons(IP_DF),
		.ttl = 64,
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
	h.vxlan.vx_vni = bpf_htonl(cfg->vni << 8);
	__builtin_memcpy(h.inner_eth.h_dest, remote->vtep_mac, ETH_ALEN);
	__builtin_memcpy(h.inner_eth.h_source, cfg->vtep_mac, ETH_ALEN);
	h.inner_eth.h_proto = bpf_htons(ETH_P_IP);

	if (bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0)) {
		TWILL_COUNT(stats, drop_encap_error);
		return TC_ACT_SHOT;
	}

	if (stats) {
		stats->encap_packets += packets;
		stats->encap_bytes += inner_len;
	}
	struct twill_peer_stats *peer_stats = twill_get_peer_stats(remote->stats_slot);
	if (peer_stats) {
		peer_stats->encap_packets += packets;
		peer_stats->encap_bytes += inner_len;
	}
	return bpf_redirect_neigh(cfg->underlay_ifindex, NULL, 0, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
