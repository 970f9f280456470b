// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * twill_decap: strips flannel's VXLAN header from packets addressed to our PublicIP and
 * VXLAN port, but only from a known peer with our VNI, and only for our subnet; every such
 * packet that is refused is dropped and counted by reason. Anything that is not VXLAN for us
 * passes untouched (fragments too: the stack reassembles them first).
 *
 * Two hooks share one classifier:
 *  - twill_decap (XDP, ahead of GRO): for NICs with native XDP, where XDP runs on the driver's
 *    buffers and GRO then aggregates the inner TCP flow;
 *  - twill_decap_tc (tcx ingress, after GRO): for veth underlays and drivers without native
 *    XDP, where an XDP program makes the kernel copy every packet (and, on a veth, strips
 *    segmentation offload from the sending peer), so that GSO super-packets are decapped whole.
 *
 * The receive half of the fast path runs in twill_decap_tc for IPv4, which is attached in both
 * cases, and in twill_tunnel_rx for IPv6, which twill-rx's socket decaps: an inner packet for a
 * local pod that may bypass the stack (fastpath.h) is handed straight to the pod's interface
 * (bpf_redirect_peer) with the MACs the pod expects, instead of being routed through the node and
 * its bridge; one delivery tail (local_delivery) serves both families. With decap in XDP,
 * twill_decap_tc sees the inner packets after GRO, and takes only those that come from a peer's
 * VTEP. What the fast path does not take, the stack routes.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <linux/pkt_cls.h>
#include <linux/if_packet.h>
#include "maps.bpf.h"
#include "vxlan.h"
#include "fastpath.h"
#include "monitor.h"

enum verdict { NOT_OURS, REFUSED, DECAP };

/* Counts a refusal under twill_stats' counter `reason` and names it in *why, for the caller's drop event. */
static __always_inline enum verdict refuse(struct twill_stats *stats, __u8 *why, __u8 reason)
{
	twill_count_drop(stats, reason);
	*why = reason;
	return REFUSED;
}

/* RFC 6040 decapsulation: a CE mark on the outer header survives onto an ECN-capable inner one. */
static __always_inline void propagate_ce(const struct iphdr *outer, struct iphdr *inner)
{
	__u8 in_ecn = inner->tos & INET_ECN_MASK;
	if ((outer->tos & INET_ECN_MASK) != INET_ECN_CE || in_ecn == 0 || in_ecn == INET_ECN_CE)
		return;
	/* Incremental checksum update (RFC 1624) of the 16-bit word holding version/ihl/tos. */
	__u16 old = bpf_htons(((__u16)(*(__u8 *)inner) << 8) | inner->tos);
	inner->tos |= INET_ECN_CE;
	__u16 new = bpf_htons(((__u16)(*(__u8 *)inner) << 8) | inner->tos);
	__u32 sum = (__u16)~inner->check + (__u16)~old + new;
	inner->check = csum_fold32(sum);
}

/*
 * The checks both hooks make. `data` is the outer Ethernet header; `frame_len` the bytes from
 * the outer IP header to the end of the packet (for a GSO super-packet, all its segments).
 * On DECAP the inner IP header has had any outer CE mark applied. *peer_slot is the sender's
 * counter slot once it is known to be a peer; on REFUSED *why is the drop's twill_stats reason.
 */
static __always_inline enum verdict classify(void *data, void *data_end, __u32 frame_len, struct ethhdr **inner_eth, __u16 *peer_slot, __u8 *why)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return NOT_OURS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP || ip->ihl < IPV4_IHL_MIN)
		return NOT_OURS;

	struct twill_config *cfg = twill_get_config();
	if (!cfg || ip->daddr != ipv4_u32(cfg->public_ip) || cfg->vxlan_port == 0)
		return NOT_OURS;

	/* Options move the UDP header; find it to tell VXLAN with options from other UDP. */
	__u32 ihl_bytes = IPV4_IHL_BYTES(ip->ihl);
	udp = (void *)ip + ihl_bytes;
	if ((void *)(udp + 1) > data_end)
		return NOT_OURS;                     /* truncated and not identifiable: the stack drops it */
	if (udp->dest != bpf_htons(cfg->vxlan_port))
		return NOT_OURS;
	/*
	 * A fragment (flannel's vxlan device does not set DF, so a kernel peer's VXLAN can arrive
	 * in pieces): the stack reassembles it and twill-rx's tunnel socket decaps it (twill_tunnel_rx).
	 */
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return NOT_OURS;

	/* From here on the packet claims to be VXLAN for us: it is decapped or counted. */
	struct twill_stats *stats = twill_get_stats();

	if (ihl_bytes != sizeof(struct iphdr))
		return refuse(stats, why, TWILL_DROP_REASON(drop_ip_options));

	struct twill_peer *peer = twill_get_peer(ip->saddr);
	if (!peer)
		return refuse(stats, why, TWILL_DROP_REASON(drop_unknown_source));
	*peer_slot = peer->stats_slot;

	struct vxlanhdr *vx = (void *)(udp + 1);
	struct ethhdr *ieth = (void *)(vx + 1);
	struct iphdr *iip = (void *)(ieth + 1);
	if ((void *)(vx + 1) > data_end)
		return refuse(stats, why, TWILL_DROP_REASON(drop_malformed));
	if (!(vx->vx_flags & bpf_htonl(VXLAN_FLAG_I)))
		return refuse(stats, why, TWILL_DROP_REASON(drop_malformed));
	if (vx->vx_vni != bpf_htonl(cfg->vni << VXLAN_VNI_SHIFT))
		return refuse(stats, why, TWILL_DROP_REASON(drop_bad_vni));
	if ((void *)(ieth + 1) > data_end)
		return refuse(stats, why, TWILL_DROP_REASON(drop_malformed));
	if (ieth->h_proto != bpf_htons(ETH_P_IP))
		return refuse(stats, why, TWILL_DROP_REASON(drop_inner_not_ipv4));
	if ((void *)(iip + 1) > data_end)
		return refuse(stats, why, TWILL_DROP_REASON(drop_malformed));
	if (iip->version != IPV4_VERSION || iip->ihl < IPV4_IHL_MIN)
		return refuse(stats, why, TWILL_DROP_REASON(drop_malformed));

	/* The outer lengths must cover what they claim to carry: no reading past a short packet. */
	__u32 outer_len = bpf_ntohs(ip->tot_len);
	if (outer_len > frame_len || outer_len < VXLAN_OVERHEAD + bpf_ntohs(iip->tot_len) ||
	    bpf_ntohs(udp->len) != outer_len - sizeof(struct iphdr) || bpf_ntohs(iip->tot_len) < IPV4_IHL_BYTES(iip->ihl))
		return refuse(stats, why, TWILL_DROP_REASON(drop_malformed));

	if (!twill_in_own_subnet(cfg, iip->daddr))
		return refuse(stats, why, TWILL_DROP_REASON(drop_inner_dst));
	/* A node speaks for its own pods only: no other node's pod, no address outside the network. */
	if (!twill_peer_owns(cfg, peer, iip->saddr, ip->saddr)) {
		twill_count_source_drop(peer->stats_slot);
		return refuse(stats, why, TWILL_DROP_REASON(drop_peer_source));
	}

	propagate_ce(ip, iip);
	/* The inner frame is addressed to the sender's idea of our VTEP; the underlay device takes only its own MAC. */
	__builtin_memcpy(ieth->h_dest, cfg->underlay_mac, ETH_ALEN);
	*inner_eth = ieth;
	return DECAP;
}

static __always_inline void count_decap(__u16 peer_slot, __u64 inner_len)
{
	struct twill_stats *stats = twill_get_stats();
	if (stats) {
		stats->decap_packets++;
		stats->decap_bytes += inner_len;
	}
	struct twill_peer_stats *peer_stats = twill_get_peer_stats(peer_slot);
	if (peer_stats) {
		peer_stats->decap_packets++;
		peer_stats->decap_bytes += inner_len;
	}
}

SEC("xdp")
int twill_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *ieth;
	__u16 slot = 0;
	__u8 why = 0;

	switch (classify(data, data_end, data_end - data - ETH_HLEN, &ieth, &slot, &why)) {
	case NOT_OURS:
		return XDP_PASS;
	case REFUSED:
		if (twill_monitoring(TWILL_MONITOR_DROPS))
			twill_emit_xdp(ctx, TWILL_EVENT_WHAT(TWILL_EVENT_DROP, TWILL_HOOK_XDP_DECAP, why), slot);
		return XDP_DROP;
	default:
		break;
	}
	__u64 inner_len = data_end - (void *)ieth;
	if (bpf_xdp_adjust_head(ctx, (int)((void *)ieth - data))) {
		twill_count_drop(twill_get_stats(), TWILL_DROP_REASON(drop_malformed));
		if (twill_monitoring(TWILL_MONITOR_DROPS))
			twill_emit_xdp(ctx, TWILL_EVENT_WHAT(TWILL_EVENT_DROP, TWILL_HOOK_XDP_DECAP, TWILL_DROP_REASON(drop_malformed)), slot);
		return XDP_DROP;
	}
	count_decap(slot, inner_len);
	return XDP_PASS;
}

/* The pod an IPv4 packet is for, if it is this node's. */
static __always_inline struct twill_endpoint *ipv4_endpoint(const struct iphdr *ip)
{
	return twill_get_endpoint(ip->daddr);
}

static __always_inline struct twill_endpoint *ipv6_endpoint(const struct ipv6hdr *ip6)
{
	__u32 daddr[4];
	__builtin_memcpy(daddr, &ip6->daddr, sizeof(daddr));
	return twill_get_endpoint6(daddr);
}

/*
 * Direct access reaches only the linear part: the ports (or the echo header) must be in it. What
 * twill-rx decapped may not have them there; IPv4 comes from twill_decap_tc, which pulled
 * DECAP_HEADERS (more than this) before anything else.
 */
static __always_inline void ipv6_pull_headers(struct __sk_buff *skb)
{
	__u32 headers = ETH_HLEN + sizeof(struct ipv6hdr) + sizeof(struct udphdr);
	if ((void *)(long)skb->data + headers > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, skb->len < headers ? skb->len : headers);
}

/*
 * The receive half of the fast path, for both families, as Cilium's local_delivery() is: on a
 * decapped frame at skb->data (Ethernet, then IPv4, or IPv6 when `v6`), delivers it into the
 * local pod it is for (bpf_redirect_peer) with the MACs the pod expects, or returns TC_ACT_OK for
 * the stack to route it, counted by reason in `ps` and traced as `hook` saw it. `v6` is a
 * constant in each caller: the compiler keeps only that family's branches, which are where the
 * families differ (the endpoint's key, may_bypass, the hop count).
 */
static __always_inline int local_delivery(struct __sk_buff *skb, const struct twill_config *cfg, bool v6, struct twill_path_stats *ps, __u8 hook, __u16 slot)
{
	if (v6)
		ipv6_pull_headers(skb);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	__u32 n = segments(skb);

	if (l3 + (v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) > data_end)
		return TC_ACT_OK;
	if (!(cfg->flags & TWILL_CONFIG_FAST_PATH))
		return path_stack(skb, ps, hook, TWILL_PATH_REASON(disabled), slot, n);
	struct twill_endpoint *ep = v6 ? ipv6_endpoint(l3) : ipv4_endpoint(l3);
	if (!ep)
		return path_stack(skb, ps, hook, TWILL_PATH_REASON(no_endpoint), slot, n);
	__u32 why = v6 ? may_bypass6(skb, l3, data_end, ps, n) : may_bypass(skb, l3, data_end, ps, n);
	if (why)
		return path_stacked(skb, hook, why, slot);
	/* Bigger than the pod's link: the stack forwards it as a router does (ICMP if DF, else fragments). */
	if (!fits(skb, ep->mtu, ep->ifindex, 0))
		return path_stack(skb, ps, hook, TWILL_PATH_REASON(too_big), slot, n);
	/* The node would have routed it into the pod: one hop (IPv6 has no header checksum to fix), from the pod's gateway. */
	if (v6)
		((struct ipv6hdr *)l3)->hop_limit--;
	else
		ip_decrease_ttl(l3);
	__builtin_memcpy(eth->h_dest, ep->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, ep->gateway_mac, ETH_ALEN);
	path_fast(skb, ps, hook, slot, n);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/*
 * An IPv4 packet for our subnet that did not arrive as VXLAN here: with decap in XDP, the inner
 * packet XDP unwrapped (GRO has aggregated it since); or a plain packet routed to us. It may take
 * the fast path if it comes from a remote pod through that peer's VTEP, whose MAC the inner frame
 * keeps as its source, or from a peer on our L2 segment (host-gw, DirectRouting), which routes
 * its pods' packets to us unencapsulated. The latter is the source check the stack's rp_filter
 * makes of a host-gw route, no more: the sender's MAC is not known here. Any other plain packet
 * from the underlay is left to the stack, as before.
 */
static __always_inline int deliver_decapped(struct __sk_buff *skb, const struct twill_config *cfg)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || !twill_in_own_subnet(cfg, ip->daddr))
		return TC_ACT_OK;
	struct twill_path_stats *ps = twill_get_path_stats(TWILL_PATH_RECEIVE);
	struct twill_remote *remote = twill_get_remote(cfg, ip->saddr);
	if (!remote || (!(remote->flags & TWILL_REMOTE_DIRECT) && !mac_eq(eth->h_source, remote->vtep_mac)))
		return path_stack(skb, ps, TWILL_HOOK_TC_DECAP, TWILL_PATH_REASON(source), remote ? remote->stats_slot : 0, segments(skb));
	return local_delivery(skb, cfg, false, ps, TWILL_HOOK_TC_DECAP, remote->stats_slot);
}

/* The outer headers of IPv6 VXLAN, and what follows them, as judge6 reads them. */
struct v6_outer {
	struct ethhdr eth;
	struct ipv6hdr ip6;
	struct udphdr udp;
} __attribute__((packed));

struct v6_inner {
	struct vxlanhdr vx;
	struct ethhdr eth;
	struct ipv6hdr ip6;
} __attribute__((packed));

/* A drop in twill_decap_tc, counted and (while a monitor listens) reported. */
static __always_inline int decap_drop(struct __sk_buff *skb, struct twill_stats *stats, __u8 reason, __u16 slot)
{
	return twill_drop(skb, stats, TWILL_HOOK_TC_DECAP, reason, slot);
}

/*
 * IPv6 VXLAN on the underlay, judged as twill_tunnel_rx judges it and then decapped here, with no
 * trip through the stack and twill-rx's socket. Fragments (an extension header after the IPv6
 * header) pass untouched: only the packet the stack reassembles can be judged, which twill-rx's
 * socket decapsulates and twill_tunnel_rx judges. Every refusal is counted. Everything that is not
 * IPv6 VXLAN for us, neighbour discovery and router advertisements included, passes untouched.
 * The outer UDP checksum is not verified here (the stack's UDP would have): the inner transport's
 * checksum, which the pod's stack verifies, covers what the pod receives.
 */
static __always_inline int judge6(struct __sk_buff *skb, const struct twill_config *cfg)
{
	struct twill_config6 *cfg6 = twill_get_config6();
	struct v6_outer o;
	struct v6_inner in;

	if (!cfg6 || cfg->vxlan_port == 0 || bpf_skb_load_bytes(skb, 0, &o, sizeof(o)))
		return TC_ACT_OK;
	__u32 saddr[4], daddr[4];
	__builtin_memcpy(saddr, &o.ip6.saddr, sizeof(saddr));
	__builtin_memcpy(daddr, &o.ip6.daddr, sizeof(daddr));
	if (o.ip6.nexthdr != IPPROTO_UDP || o.udp.dest != bpf_htons(cfg->vxlan_port) || !ipv6_eq(daddr, (const __u32 *)cfg6->public_ip6))
		return TC_ACT_OK;

	/* From here on the packet claims to be IPv6 VXLAN for us. */
	struct twill_stats *stats = twill_get_stats();
	struct twill_peer6 *peer = twill_get_peer6(saddr);
	if (!peer)
		return decap_drop(skb, stats, TWILL_DROP_REASON(drop_unknown_source), 0);
	__u16 slot = peer->stats_slot;
	/* payload_len 0 is a jumbogram (BIG TCP after GRO): its length is the skb's. */
	__u32 plen = bpf_ntohs(o.ip6.payload_len);
	if (bpf_skb_load_bytes(skb, sizeof(o), &in, sizeof(in)) || !(in.vx.vx_flags & bpf_htonl(VXLAN_FLAG_I)) ||
	    (plen && (plen > skb->len - ETH_HLEN - sizeof(struct ipv6hdr) || bpf_ntohs(o.udp.len) != plen)) ||
	    (in.eth.h_proto == bpf_htons(ETH_P_IPV6) && in.ip6.version != IPV6_VERSION))
		return decap_drop(skb, stats, TWILL_DROP_REASON(drop_malformed), slot);
	if (in.vx.vx_vni != bpf_htonl(cfg->vni << VXLAN_VNI_SHIFT))
		return decap_drop(skb, stats, TWILL_DROP_REASON(drop_bad_vni), slot);
	if (in.eth.h_proto != bpf_htons(ETH_P_IPV6))
		return decap_drop(skb, stats, TWILL_DROP_REASON(drop_inner_not_ipv6), slot);
	__builtin_memcpy(daddr, &in.ip6.daddr, sizeof(daddr));
	if (!twill_in_own_subnet6(cfg6, daddr))
		return decap_drop(skb, stats, TWILL_DROP_REASON(drop_inner_dst), slot);
	__u32 inner_saddr[4];
	__builtin_memcpy(inner_saddr, &in.ip6.saddr, sizeof(inner_saddr));
	if (!twill_peer6_owns(peer, inner_saddr, saddr)) {
		twill_count_source_drop(slot);
		return decap_drop(skb, stats, TWILL_DROP_REASON(drop_peer_source), slot);
	}
	/*
	 * Judged whole: decapped here as IPv4 is, outer IPv6, UDP, VXLAN and inner Ethernet removed
	 * and the outer Ethernet header (IPv6, for this device) kept. Without NO_CSUM_RESET the helper
	 * drops a device's CHECKSUM_UNNECESSARY, which spoke for the outer UDP checksum that goes: the
	 * pod's stack then checks the inner one.
	 */
	if (bpf_skb_adjust_room(skb, -(__s32)VXLAN6_OVERHEAD, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
		return decap_drop(skb, stats, TWILL_DROP_REASON(drop_malformed), slot);
	count_decap(slot, skb->len);
	return local_delivery(skb, cfg, true, twill_get_path_stats(TWILL_PATH_RECEIVE), TWILL_HOOK_TC_DECAP, slot);
}

/* Outer Ethernet + IPv4 + UDP + VXLAN + inner Ethernet + inner IPv4 + ports: what the classifier and the fast path read. */
#define DECAP_HEADERS (ETH_HLEN + VXLAN_OVERHEAD + sizeof(struct iphdr) + sizeof(struct udphdr))

SEC("tc")
int twill_decap_tc(struct __sk_buff *skb)
{
	/*
	 * The config first: with ALU32 code generation (-mcpu=v3) clang may carry a packet pointer
	 * across a helper call in a 32-bit register, which the verifier then takes for a scalar.
	 */
	struct twill_config *cfg = twill_get_config();
	if (cfg && skb->protocol == bpf_htons(ETH_P_IPV6))
		return judge6(skb, cfg);
	if (!cfg || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	/* Direct access reaches only the linear part; a GSO super-packet's headers are there already. */
	if ((void *)(long)skb->data + DECAP_HEADERS > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, skb->len < DECAP_HEADERS ? skb->len : DECAP_HEADERS);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *ieth;
	__u16 slot = 0;
	__u8 why = 0;

	switch (classify(data, data_end, skb->len - ETH_HLEN, &ieth, &slot, &why)) {
	case NOT_OURS:
		return deliver_decapped(skb, cfg);
	case REFUSED:
		if (twill_monitoring(TWILL_MONITOR_DROPS))
			twill_emit_skb(skb, TWILL_EVENT_WHAT(TWILL_EVENT_DROP, TWILL_HOOK_TC_DECAP, why), slot, 0);
		return TC_ACT_SHOT;
	default:
		break;
	}
	/*
	 * Remove outer IPv4, UDP, VXLAN and the inner Ethernet header, keeping the outer Ethernet
	 * header (addressed to this device). FIXED_GSO: a super-packet's gso_size is already the
	 * inner segment size.
	 */
	if (bpf_skb_adjust_room(skb, -(__s32)VXLAN_OVERHEAD, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
		return decap_drop(skb, twill_get_stats(), TWILL_DROP_REASON(drop_malformed), slot);
	count_decap(slot, skb->len);  /* the inner frame, as XDP counts it: the kept outer Ethernet header stands in for the inner one */
	return local_delivery(skb, cfg, false, twill_get_path_stats(TWILL_PATH_RECEIVE), TWILL_HOOK_TC_DECAP, slot);
}


/*
 * A drop in twill_tunnel_rx, counted, and reported with the outer addresses the tunnel key kept:
 * the packet itself starts at the inner Ethernet header. Returns TC_ACT_SHOT.
 */
static __always_inline int tunnel_drop(struct __sk_buff *skb, struct twill_stats *stats, const struct bpf_tunnel_key *key, bool v6, __u8 reason, __u16 slot)
{
	twill_count_drop(stats, reason);
	if (twill_monitoring(TWILL_MONITOR_DROPS)) {
		struct twill_tunnel_addrs t = {};
		if (v6) {
			t.family = 6;
			__builtin_memcpy(t.src, key->remote_ipv6, 16);
			__builtin_memcpy(t.dst, key->local_ipv6, 16);
		} else {
			__u32 src = bpf_htonl(key->remote_ipv4), dst = bpf_htonl(key->local_ipv4);
			t.family = 4;
			__builtin_memcpy(t.src, &src, 4);
			__builtin_memcpy(t.dst, &dst, 4);
		}
		twill_emit_skb(skb, TWILL_EVENT_WHAT(TWILL_EVENT_DROP, TWILL_HOOK_TUNNEL_RX, reason), slot, &t);
	}
	return TC_ACT_SHOT;
}

/*
 * The outer half of twill_tunnel_rx's judgement, per family: sent to our PublicIP by a peer.
 * 0, with the peer in *peer, or the twill_stats reason to drop it for.
 */
static __always_inline __u8 ipv4_tunnel_peer(struct __sk_buff *skb, const struct twill_config *cfg, struct bpf_tunnel_key *key, struct twill_peer **peer)
{
	if (bpf_skb_get_tunnel_key(skb, key, sizeof(*key), 0) || key->local_ipv4 != bpf_ntohl(ipv4_u32(cfg->public_ip)))
		return TWILL_DROP_REASON(drop_malformed);
	*peer = twill_get_peer(bpf_htonl(key->remote_ipv4));
	return *peer ? 0 : TWILL_DROP_REASON(drop_unknown_source);
}

static __always_inline __u8 ipv6_tunnel_peer(const struct twill_config6 *cfg6, const struct bpf_tunnel_key *key, struct twill_peer6 **peer)
{
	if (!cfg6)
		return TWILL_DROP_REASON(drop_unknown_source);
	if (!ipv6_eq(key->local_ipv6, (const __u32 *)cfg6->public_ip6))
		return TWILL_DROP_REASON(drop_malformed);
	*peer = twill_get_peer6(key->remote_ipv6);
	return *peer ? 0 : TWILL_DROP_REASON(drop_unknown_source);
}

/* The inner half, per family: an inner frame of the outer family, for our subnet, from the peer's. 0 or the reason. */
static __always_inline __u8 ipv4_tunnel_inner(const struct ethhdr *eth, const void *data_end, const struct twill_config *cfg, const struct twill_peer *peer,
					     const struct bpf_tunnel_key *key)
{
	const struct iphdr *ip = (const void *)(eth + 1);
	if ((const void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TWILL_DROP_REASON(drop_inner_not_ipv4);
	if (!twill_in_own_subnet(cfg, ip->daddr))
		return TWILL_DROP_REASON(drop_inner_dst);
	return twill_peer_owns(cfg, peer, ip->saddr, bpf_htonl(key->remote_ipv4)) ? 0 : TWILL_DROP_REASON(drop_peer_source);
}

static __always_inline __u8 ipv6_tunnel_inner(const struct ethhdr *eth, const void *data_end, const struct twill_config6 *cfg6, const struct twill_peer6 *peer,
					     const struct bpf_tunnel_key *key)
{
	const struct ipv6hdr *ip6 = (const void *)(eth + 1);
	if ((const void *)(ip6 + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return TWILL_DROP_REASON(drop_inner_not_ipv6);
	__u32 addr[4];
	__builtin_memcpy(addr, &ip6->daddr, sizeof(addr));
	if (!twill_in_own_subnet6(cfg6, addr))
		return TWILL_DROP_REASON(drop_inner_dst);
	__builtin_memcpy(addr, &ip6->saddr, sizeof(addr));
	return twill_peer6_owns(peer, addr, key->remote_ipv6) ? 0 : TWILL_DROP_REASON(drop_peer_source);
}

/*
 * twill_tunnel_rx's judgement, as classify() judges what twill_decap_tc decaps: from a peer, to
 * our PublicIP, with our VNI, of the outer family, for our subnet and from the peer's. 0, or the
 * twill_stats reason to drop it for; *slot is the sender's counter slot once it is known to be a
 * peer.
 */
static __always_inline __u8 tunnel_refusal(struct __sk_buff *skb, const struct twill_config *cfg, const struct twill_config6 *cfg6, struct bpf_tunnel_key *key,
					   bool v6, __u16 *slot)
{
	void *data, *data_end;
	__u8 why;

	/*
	 * One branch per family, each with its own peer pointer checked where it is used: a single
	 * "v6 ? peer6 : peer" is compiled into one pointer that older verifiers (6.1) cannot prove
	 * non-NULL on either path.
	 */
	if (v6) {
		struct twill_peer6 *peer6 = 0;
		why = ipv6_tunnel_peer(cfg6, key, &peer6);
		if (why || !peer6)
			return why ? why : TWILL_DROP_REASON(drop_unknown_source);
		*slot = peer6->stats_slot;
		if (key->tunnel_id != cfg->vni)
			return TWILL_DROP_REASON(drop_bad_vni);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		why = ipv6_tunnel_inner(data, data_end, cfg6, peer6, key);
	} else {
		struct twill_peer *peer = 0;
		why = ipv4_tunnel_peer(skb, cfg, key, &peer);
		if (why || !peer)
			return why ? why : TWILL_DROP_REASON(drop_unknown_source);
		*slot = peer->stats_slot;
		if (key->tunnel_id != cfg->vni)
			return TWILL_DROP_REASON(drop_bad_vni);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		why = ipv4_tunnel_inner(data, data_end, cfg, peer, key);
	}
	if (why == TWILL_DROP_REASON(drop_peer_source))
		twill_count_source_drop(*slot);
	return why;
}

/*
 * twill_tunnel_rx: tc ingress of twill-rx, the flow-based vxlan device that holds the VXLAN UDP
 * port for twill (no FDB, no neighbours, no routes), for both families. What the kernel decapped
 * there is judged (tunnel_refusal) and counted as decapped, then:
 *  - IPv4: only fragments get here, once the stack reassembled them (a kernel peer's flannel.1
 *    does not set DF): twill_decap_tc decaps all other IPv4 VXLAN itself, and its socket gives
 *    the underlay UDP-tunnel GRO ahead of that hook. They are left to the stack, counted as
 *    `fragment`, as they were before.
 *  - IPv6: only fragments get here too, once reassembled (twill_decap_tc's judge6 decaps the
 *    rest); the fast path delivers them into the local pod (local_delivery) or leaves them to
 *    the stack, as before.
 * What is left to the stack goes as a packet for this host, which routes it to the pod.
 */
SEC("tc")
int twill_tunnel_rx(struct __sk_buff *skb)
{
	struct twill_stats *stats = twill_get_stats();
	struct twill_config *cfg = twill_get_config();
	struct bpf_tunnel_key key = {};
	__u16 slot = 0;

	if (!cfg)
		return TC_ACT_SHOT;
	/* The device's IPv6 socket decapped it (a flow-based device listens on both families). */
	bool v6 = !bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6);
	__u8 why = tunnel_refusal(skb, cfg, v6 ? twill_get_config6() : 0, &key, v6, &slot);
	if (why)
		return tunnel_drop(skb, stats, &key, v6, why, slot);
	count_decap(slot, skb->len);
	struct twill_path_stats *ps = twill_get_path_stats(TWILL_PATH_RECEIVE);
	int ret = v6 ? local_delivery(skb, cfg, true, ps, TWILL_HOOK_TUNNEL_RX, slot)
		     : path_stack(skb, ps, TWILL_HOOK_TUNNEL_RX, TWILL_PATH_REASON(fragment), slot, 1);
	if (ret != TC_ACT_OK)
		return ret;
	/* Addressed to the sender's idea of our VTEP, not to this device: the stack must take it as ours. */
	bpf_skb_change_type(skb, PACKET_HOST);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
