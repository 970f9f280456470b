// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * twill_from_pod: tcx ingress of a pod's host-side veth, that is, what the pod sends. The send
 * half of the fast path.
 *
 * A packet the pod routes (to its gateway's MAC) from its own address to a remote lease's
 * subnet, that may bypass the stack (fastpath.h), is encapsulated here exactly as twill_encap
 * would have done after the stack forwarded it (TTL decremented once, flannel's wire format),
 * or, for a peer on our L2 segment (host-gw, DirectRouting), routed to its PublicIP unchanged
 * but for the TTL, and handed straight to the underlay: no bridge, no br_netfilter, no FORWARD, no routing of
 * the node. IPv6 to a remote pod goes the same way as IPv6 VXLAN (from_pod6). Everything else
 * (same-node traffic, Services, traffic leaving the cluster, ARP, ICMP errors, fragments, flows
 * conntrack knows) continues into the bridge and the stack untouched, counted by reason in
 * twill_path_stats.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "encap.h"
#include "fastpath.h"

/* To the stack for `reason`, counted and (while a monitor traces) reported. */
static __always_inline int to_stack(struct __sk_buff *skb, struct twill_path_stats *ps, __u8 reason, __u32 n)
{
	return path_stack(skb, ps, TWILL_HOOK_FROM_POD, reason, 0, n);
}

/* A helper refused once the packet was half-changed: it cannot go to the stack any more. */
static __always_inline int encap_error(struct __sk_buff *skb, struct twill_stats *stats, __u16 slot)
{
	return twill_drop(skb, stats, TWILL_HOOK_FROM_POD, TWILL_DROP_REASON(drop_encap_error), slot);
}

/* Only the veth's own pod, routing through its gateway: a spoofed source is the stack's to judge. */
static __always_inline bool from_own_pod(const struct __sk_buff *skb, const struct ethhdr *eth, const struct twill_endpoint *ep)
{
	return ep && ep->ifindex == skb->ifindex && mac_eq(eth->h_dest, ep->gateway_mac);
}

/*
 * --pod-source-check drop: what a pod sends must come from one of its own addresses (its
 * endpoints, on this veth). Frames that are not IP (ARP) pass, and so do IPv6's link-local and
 * unspecified sources (neighbour discovery, duplicate address detection, MLD). The address is
 * read with bpf_skb_load_bytes, which also finds it outside the linear data.
 */
static __always_inline bool pod_source_ok(struct __sk_buff *skb, const struct ethhdr *eth)
{
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		__u32 saddr;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + __builtin_offsetof(struct iphdr, saddr), &saddr, sizeof(saddr)))
			return false;
		struct twill_endpoint *ep = twill_get_endpoint(saddr);
		return ep && ep->ifindex == skb->ifindex;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		__u32 saddr[4];
		if (bpf_skb_load_bytes(skb, ETH_HLEN + __builtin_offsetof(struct ipv6hdr, saddr), saddr, sizeof(saddr)))
			return false;
		if ((saddr[0] & bpf_htonl(0xffc00000)) == bpf_htonl(0xfe800000) || !(saddr[0] | saddr[1] | saddr[2] | saddr[3]))
			return true;
		struct twill_endpoint *ep = twill_get_endpoint6(saddr);
		return ep && ep->ifindex == skb->ifindex;
	}
	return true;
}

/*
 * IPv6 from a pod to a remote pod: the same checks as IPv4's, then IPv6 VXLAN as twill_encap
 * sends it (encap.h's vxlan6_send: written here, or by the kernel's vxlan driver on twill-rx).
 */
static __always_inline int from_pod6(struct __sk_buff *skb, const struct twill_config *cfg, struct twill_path_stats *ps, __u32 n)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct twill_config6 *cfg6 = twill_get_config6();

	if (!cfg6 || cfg6->tunnel_ifindex == 0)
		return to_stack(skb, ps, TWILL_PATH_REASON(ipv6_off), n);
	if ((void *)(ip6 + 1) > data_end)
		return to_stack(skb, ps, TWILL_PATH_REASON(not_ip), n);
	__u32 saddr[4], daddr[4];
	__builtin_memcpy(saddr, &ip6->saddr, sizeof(saddr));
	__builtin_memcpy(daddr, &ip6->daddr, sizeof(daddr));
	struct twill_remote6 *remote = twill_get_remote6(cfg6, daddr);
	if (!remote)
		return to_stack(skb, ps, TWILL_PATH_REASON(not_remote), n);
	struct twill_endpoint *ep = twill_get_endpoint6(saddr);
	if (!from_own_pod(skb, eth, ep))
		return to_stack(skb, ps, TWILL_PATH_REASON(source), n);
	__u32 why = may_bypass6(skb, ip6, data_end, ps, n);
	if (why)
		return path_stacked(skb, TWILL_HOOK_FROM_POD, why, 0);
	if (!fits(skb, ep->encap_mtu, cfg->underlay_ifindex, VXLAN6_OVERHEAD))
		return to_stack(skb, ps, TWILL_PATH_REASON(too_big), n);

	/* One hop, as the node's forwarding would have counted it (IPv6 has no header checksum). */
	ip6->hop_limit--;
	struct twill_stats *stats = twill_get_stats();
	long ret = vxlan6_send(skb, cfg, cfg6, remote, stats);
	if (ret != TC_ACT_REDIRECT)
		return encap_error(skb, stats, remote->stats_slot);
	path_fast(skb, ps, TWILL_HOOK_FROM_POD, remote->stats_slot, n);
	return ret;
}

SEC("tc")
int twill_from_pod(struct __sk_buff *skb)
{
	struct twill_path_stats *ps = twill_get_path_stats(TWILL_PATH_SEND);
	struct twill_config *cfg = twill_get_config();
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 n = segments(skb);

	if ((void *)(eth + 1) > data_end)
		return to_stack(skb, ps, TWILL_PATH_REASON(not_ip), n);
	if (cfg && (cfg->flags & TWILL_CONFIG_POD_SOURCE_CHECK) && !pod_source_ok(skb, eth))
		return twill_drop(skb, twill_get_stats(), TWILL_HOOK_FROM_POD, TWILL_DROP_REASON(drop_pod_source), 0);
	if (!cfg || !(cfg->flags & TWILL_CONFIG_FAST_PATH) || cfg->underlay_ifindex == 0)
		return to_stack(skb, ps, TWILL_PATH_REASON(disabled), n);
	if ((void *)(eth + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_IPV6))
		return from_pod6(skb, cfg, ps, n);
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return to_stack(skb, ps, TWILL_PATH_REASON(not_ip), n);

	/* Destination first: Services, this node and the outside world leave here, at one lookup. */
	struct twill_remote *remote = twill_get_remote(cfg, ip->daddr);
	if (!remote)
		return to_stack(skb, ps, TWILL_PATH_REASON(not_remote), n);

	struct twill_endpoint *ep = twill_get_endpoint(ip->saddr);
	if (!from_own_pod(skb, eth, ep))
		return to_stack(skb, ps, TWILL_PATH_REASON(source), n);

	__u32 why = may_bypass(skb, ip, data_end, ps, n);
	if (why)
		return path_stacked(skb, TWILL_HOOK_FROM_POD, why, 0);

	/*
	 * Too big for the underlay (once encapsulated): the stack sends "fragmentation needed" (DF)
	 * or fragments. encap_mtu is the underlay's MTU less the VXLAN overhead.
	 */
	int direct = remote->flags & TWILL_REMOTE_DIRECT;
	if (direct ? !fits(skb, ep->encap_mtu ? ep->encap_mtu + VXLAN_OVERHEAD : 0, cfg->underlay_ifindex, 0)
		   : !fits(skb, ep->encap_mtu, cfg->underlay_ifindex, VXLAN_OVERHEAD))
		return to_stack(skb, ps, TWILL_PATH_REASON(too_big), n);

	/* A peer on our L2 segment: routed to it as the node would (one hop), not encapsulated. */
	if (direct) {
		ip_decrease_ttl(ip);
		path_fast(skb, ps, TWILL_HOOK_FROM_POD, remote->stats_slot, n);
		return underlay_send(skb, cfg, remote);
	}

	struct twill_stats *stats = twill_get_stats();
	switch (vxlan_encap(skb, cfg, remote, ip->tos, encap_source_port(skb, ip, data_end), stats)) {
	case ENCAP_OK:
		break;
	case ENCAP_UNCHANGED:
		return to_stack(skb, ps, TWILL_PATH_REASON(error), n);
	default:
		return encap_error(skb, stats, remote->stats_slot);
	}

	/* One hop, as the node's forwarding would have counted it; the headers moved, so find them again. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	struct iphdr *inner = data + ETH_HLEN + VXLAN_OVERHEAD;
	if ((void *)(inner + 1) > data_end)
		return encap_error(skb, stats, remote->stats_slot);
	ip_decrease_ttl(inner);
	path_fast(skb, ps, TWILL_HOOK_FROM_POD, remote->stats_slot, n);
	return underlay_send(skb, cfg, remote);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
