// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * twill_encap: TC egress of the overlay device (twill0). The stack path.
 *
 * The node routes the cluster network to twill0, so everything that reaches this
 * program has been through the host stack already: node-originated traffic, and pod
 * traffic the fast path left to the stack (Services, conntrack-known flows, --fast-path=false),
 * TTL decremented and conntrack/kube-proxy NAT applied. It wraps the frame in flannel's VXLAN
 * header for the lease that covers the destination and hands it to the kernel to resolve the
 * underlay next hop. A peer on our L2 segment (TWILL_REMOTE_DIRECT) gets the packet as it is,
 * routed to its PublicIP: this is what makes the one route of the cluster network to twill0
 * serve host-gw and DirectRouting peers too, without a kernel route per peer.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "encap.h"
#include "monitor.h"

/* Counted, and reported while a monitor listens, with the peer's slot where one was found. */
static __always_inline int encap_drop(struct __sk_buff *skb, struct twill_stats *stats, __u8 reason, __u16 slot)
{
	return twill_drop(skb, stats, TWILL_HOOK_ENCAP, reason, slot);
}

/*
 * IPv6 to a remote pod. The route of the IPv6Network to twill0 carries an MTU of the underlay's
 * less VXLAN6_OVERHEAD, so the stack answers a packet too big with ICMPv6 Packet Too Big before it
 * gets here; the check here only keeps a packet that slipped past (a route without that MTU) off
 * the wire, counted.
 */
static __always_inline int encap6(struct __sk_buff *skb, const struct twill_config *cfg, struct twill_stats *stats)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *inner = data + ETH_HLEN;
	struct twill_config6 *cfg6 = twill_get_config6();

	if (!cfg6 || cfg6->tunnel_ifindex == 0)
		return encap_drop(skb, stats, TWILL_DROP_REASON(drop_ipv6_off), 0);
	if ((void *)(inner + 1) > data_end)
		return encap_drop(skb, stats, TWILL_DROP_REASON(drop_not_ip), 0);
	__u32 daddr[4];
	__builtin_memcpy(daddr, &inner->daddr, sizeof(daddr));
	struct twill_remote6 *remote = twill_get_remote6(cfg6, daddr);
	if (!remote)
		return encap_drop(skb, stats, TWILL_DROP_REASON(drop_no_peer), 0);
	__u32 mtu_len = 0;
	if (bpf_check_mtu(skb, cfg->underlay_ifindex, &mtu_len, VXLAN6_OVERHEAD, 0))
		return encap_drop(skb, stats, TWILL_DROP_REASON(drop_too_big), remote->stats_slot);
	long ret = vxlan6_send(skb, cfg, cfg6, remote, stats);
	if (ret != TC_ACT_REDIRECT)
		return encap_drop(skb, stats, TWILL_DROP_REASON(drop_encap_error), remote->stats_slot);
	return ret;
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

	if ((void *)(eth + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_IPV6))
		return encap6(skb, cfg, stats);
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return encap_drop(skb, stats, TWILL_DROP_REASON(drop_not_ip), 0);
	inner = (void *)(eth + 1);
	if ((void *)(inner + 1) > data_end)
		return encap_drop(skb, stats, TWILL_DROP_REASON(drop_not_ip), 0);

	struct twill_remote *remote = twill_get_remote(cfg, inner->daddr);
	if (!remote)
		return encap_drop(skb, stats, TWILL_DROP_REASON(drop_no_peer), 0);

	/* Checked before the headers grow: for GSO packets the helper checks each segment. */
	int direct = remote->flags & TWILL_REMOTE_DIRECT;
	__u32 mtu_len = 0;
	if (bpf_check_mtu(skb, cfg->underlay_ifindex, &mtu_len, direct ? 0 : VXLAN_OVERHEAD, 0))
		return encap_drop(skb, stats, TWILL_DROP_REASON(drop_too_big), remote->stats_slot);
	if (direct)
		return underlay_send(skb, cfg, remote);

	if (vxlan_encap(skb, cfg, remote, inner->tos, encap_source_port(skb, inner, data_end), stats) != ENCAP_OK)
		return encap_drop(skb, stats, TWILL_DROP_REASON(drop_encap_error), remote->stats_slot);
	return underlay_send(skb, cfg, remote);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
