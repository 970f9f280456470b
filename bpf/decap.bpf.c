// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * twill_decap: XDP on the underlay interface, ahead of GRO.
 *
 * Strips flannel's VXLAN header from packets addressed to our PublicIP and VXLAN port,
 * but only from a known peer with our VNI, and only for our subnet; every such packet
 * that is refused is dropped and counted by reason. Anything that is not VXLAN for us
 * passes untouched. Decapped frames continue up the underlay interface as ordinary
 * IPv4 (GRO aggregates the inner TCP; conntrack sees replies of NATed flows) and the
 * stack routes them to the pod.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.bpf.h"
#include "vxlan.h"

static __always_inline int drop(struct twill_stats *stats, __u64 *counter)
{
	if (stats)
		(*counter)++;
	return XDP_DROP;
}

#define DROP(reason) drop(stats, stats ? &stats->reason : 0)

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

SEC("xdp")
int twill_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->protocol != IPPROTO_UDP || ip->ihl < 5)
		return XDP_PASS;

	struct twill_config *cfg = twill_get_config();
	if (!cfg || ip->daddr != ipv4_u32(cfg->public_ip))
		return XDP_PASS;

	/* Options move the UDP header; find it to tell VXLAN with options from other UDP. */
	__u32 ihl_bytes = ip->ihl * 4;
	udp = (void *)ip + ihl_bytes;
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;                     /* truncated and not identifiable: the stack drops it */
	if (udp->dest != bpf_htons(cfg->vxlan_port))
		return XDP_PASS;
	/* A non-first fragment has no UDP header: what looks like one is payload. Let the stack reassemble or discard it. */
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return XDP_PASS;

	/* From here on the packet claims to be VXLAN for us: it is decapped or counted. */
	struct twill_stats *stats = twill_get_stats();

	if (ip->frag_off & bpf_htons(IP_MF))
		return DROP(drop_fragment);
	if (ihl_bytes != sizeof(struct iphdr))
		return DROP(drop_ip_options);

	struct twill_peer_key pk = {};
	*(__u32 *)pk.public_ip = ip->saddr;
	struct twill_peer *peer = bpf_map_lookup_elem(&twill_peers, &pk);
	if (!peer)
		return DROP(drop_unknown_source);

	struct vxlanhdr *vx = (void *)(udp + 1);
	struct ethhdr *ieth = (void *)(vx + 1);
	struct iphdr *iip = (void *)(ieth + 1);
	if ((void *)(vx + 1) > data_end)
		return DROP(drop_malformed);
	if (!(vx->vx_flags & bpf_htonl(VXLAN_FLAG_I)))
		return DROP(drop_malformed);
	if (vx->vx_vni != bpf_htonl(cfg->vni << 8))
		return DROP(drop_bad_vni);
	if ((void *)(ieth + 1) > data_end)
		return DROP(drop_malformed);
	if (ieth->h_proto != bpf_htons(ETH_P_IP))
		return DROP(drop_inner_not_ipv4);
	if ((void *)(iip + 1) > data_end)
		return DROP(drop_malformed);
	if (iip->version != 4 || iip->ihl < 5)
		return DROP(drop_malformed);

	/* The outer lengths must cover what they claim to carry: no reading past a short packet. */
	__u32 outer_len = bpf_ntohs(ip->tot_len);
	__u32 frame_len = data_end - (void *)ip;
	if (outer_len > frame_len || outer_len < VXLAN_OVERHEAD + bpf_ntohs(iip->tot_len) ||
	    bpf_ntohs(udp->len) != outer_len - sizeof(struct iphdr) || bpf_ntohs(iip->tot_len) < iip->ihl * 4)
		return DROP(drop_malformed);

	__u32 mask = prefix_mask(cfg->subnet_len);
	if ((iip->daddr & mask) != (ipv4_u32(cfg->subnet) & mask))
		return DROP(drop_inner_dst);

	propagate_ce(ip, iip);
	__builtin_memcpy(ieth->h_dest, cfg->underlay_mac, ETH_ALEN);

	__u64 inner_len = data_end - (void *)ieth;
	if (bpf_xdp_adjust_head(ctx, (int)((void *)ieth - data)))
		return DROP(drop_malformed);
	if (stats) {
		stats->decap_packets++;
		stats->decap_bytes += inner_len;
	}
	struct twill_peer_stats *peer_stats = twill_get_peer_stats(peer->stats_slot);
	if (peer_stats) {
		peer_stats->decap_packets++;
		peer_stats->decap_bytes += inner_len;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
