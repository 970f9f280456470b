/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map definitions shared by every twill program. Each is pinned by name under the
 * node's pin directory (libbpf's pin_root_path), so the encap, decap and pod objects and
 * every later loader reuse one set of maps, and the maps outlive the agent.
 */
#ifndef TWILL_MAPS_BPF_H
#define TWILL_MAPS_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "twill_maps.h"
#include "vxlan.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct twill_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWILL_MAX_SUBNETS);
	__type(key, struct twill_subnet_key);
	__type(value, struct twill_remote);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_subnets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWILL_MAX_PEERS);
	__type(key, struct twill_peer_key);
	__type(value, struct twill_peer);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWILL_MAX_PEERS);
	__type(key, struct twill_peer_key);
	__type(value, struct twill_next_hop);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_next_hops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct twill_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TWILL_MAX_STATS_SLOTS);
	__type(key, __u32);
	__type(value, struct twill_peer_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_peer_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWILL_MAX_ENDPOINTS);
	__type(key, struct twill_endpoint_key);
	__type(value, struct twill_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TWILL_PATH_DIRECTIONS);
	__type(key, __u32);
	__type(value, struct twill_path_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_path_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct twill_config6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_config6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWILL_MAX_SUBNETS);
	__type(key, struct twill_subnet6_key);
	__type(value, struct twill_remote6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_subnets6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWILL_MAX_PEERS);
	__type(key, struct twill_peer6_key);
	__type(value, struct twill_peer6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_peers6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWILL_MAX_PEERS);
	__type(key, struct twill_peer6_key);
	__type(value, struct twill_next_hop);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_next_hops6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWILL_MAX_ENDPOINTS);
	__type(key, struct twill_endpoint6_key);
	__type(value, struct twill_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_endpoints6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct twill_monitor);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_monitor SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, TWILL_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_events SEC(".maps");

static __always_inline struct twill_config *twill_get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&twill_config, &zero);
}

static __always_inline struct twill_stats *twill_get_stats(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&twill_stats, &zero);
}

/* An out-of-range slot finds nothing and is simply not counted. */
static __always_inline struct twill_peer_stats *twill_get_peer_stats(__u16 slot)
{
	__u32 key = slot;
	return bpf_map_lookup_elem(&twill_peer_stats, &key);
}

static __always_inline struct twill_path_stats *twill_get_path_stats(__u32 direction)
{
	return bpf_map_lookup_elem(&twill_path_stats, &direction);
}

static __always_inline struct twill_endpoint *twill_get_endpoint(__u32 addr)
{
	struct twill_endpoint_key key;
	*(__u32 *)key.ip = addr;
	return bpf_map_lookup_elem(&twill_endpoints, &key);
}

/* The peer whose PublicIP is `addr` (network order): VXLAN from it is accepted. */
static __always_inline struct twill_peer *twill_get_peer(__u32 addr)
{
	struct twill_peer_key key = {};
	*(__u32 *)key.public_ip = addr;
	return bpf_map_lookup_elem(&twill_peers, &key);
}

/* The remote lease whose subnet holds `addr` (network order), if there is one. */
static __always_inline struct twill_remote *twill_get_remote(const struct twill_config *cfg, __u32 addr)
{
	struct twill_subnet_key key = {};
	*(__u32 *)key.subnet = addr & prefix_mask(cfg->subnet_len);
	return bpf_map_lookup_elem(&twill_subnets, &key);
}

/* Whether `addr` (network order) is in this node's own subnet. */
static __always_inline int twill_in_own_subnet(const struct twill_config *cfg, __u32 addr)
{
	__u32 mask = prefix_mask(cfg->subnet_len);
	return (addr & mask) == (ipv4_u32(cfg->subnet) & mask);
}

/* twill_config6, only once the agent has enabled it. */
static __always_inline struct twill_config6 *twill_get_config6(void)
{
	__u32 zero = 0;
	struct twill_config6 *c = bpf_map_lookup_elem(&twill_config6, &zero);
	return c && (c->flags & TWILL_CONFIG6_ENABLED) ? c : 0;
}

/* `dst` = `addr` (16 bytes, network order) masked to its first `len` bits. */
static __always_inline void ipv6_prefix(__u32 dst[4], const __u32 addr[4], __u8 len)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int bits = (int)len - 32 * i;
		dst[i] = addr[i] & prefix_mask(bits <= 0 ? 0 : bits >= 32 ? 32 : bits);
	}
}

static __always_inline int ipv6_eq(const __u32 a[4], const __u32 b[4])
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

static __always_inline int twill_in_own_subnet6(const struct twill_config6 *cfg6, const __u32 addr[4])
{
	__u32 a[4], own[4];
	ipv6_prefix(a, addr, cfg6->subnet6_len);
	ipv6_prefix(own, (const __u32 *)cfg6->subnet6, cfg6->subnet6_len);
	return ipv6_eq(a, own);
}

/* The remote IPv6 lease whose subnet holds `addr`, if there is one. */
static __always_inline struct twill_remote6 *twill_get_remote6(const struct twill_config6 *cfg6, const __u32 addr[4])
{
	struct twill_subnet6_key key;
	ipv6_prefix((__u32 *)key.subnet6, addr, cfg6->subnet6_len);
	return bpf_map_lookup_elem(&twill_subnets6, &key);
}

static __always_inline struct twill_peer6 *twill_get_peer6(const __u32 addr[4])
{
	struct twill_peer6_key key;
	__builtin_memcpy(key.public_ip6, addr, sizeof(key.public_ip6));
	return bpf_map_lookup_elem(&twill_peers6, &key);
}

/*
 * Whether a peer may send as `addr` (network order): from inside its own lease, or as itself, its
 * PublicIP `public_ip` (the outer source): the reply to a pod's connection to that node's
 * NodePort is un-NATed there to the node's address and reaches the pod in VXLAN. A peer entry
 * written before it carried its length (0) has the network's SubnetLen.
 * TWILL_BENCH_NO_PEER_SOURCE_CHECK: the "without" build of scripts/send-ab.sh peer-source-check,
 * which measures what the check costs; never shipped.
 */
static __always_inline int twill_peer_owns(const struct twill_config *cfg, const struct twill_peer *peer, __u32 addr, __u32 public_ip)
{
#ifdef TWILL_BENCH_NO_PEER_SOURCE_CHECK
	return 1;
#endif
	__u32 mask = prefix_mask(peer->subnet_len ? peer->subnet_len : cfg->subnet_len);
	return (addr & mask) == (ipv4_u32(peer->subnet) & mask) || addr == public_ip;
}

static __always_inline int twill_peer6_owns(const struct twill_peer6 *peer, const __u32 addr[4], const __u32 public_ip6[4])
{
	if (ipv6_eq(addr, public_ip6))
		return 1;
	__u32 a[4], own[4];
	ipv6_prefix(a, addr, peer->subnet6_len);
	ipv6_prefix(own, (const __u32 *)peer->subnet6, peer->subnet6_len);
	return ipv6_eq(a, own);
}

/* A peer's packet dropped for its inner source, counted on its row too (twill_peer_stats). */
static __always_inline void twill_count_source_drop(__u16 slot)
{
	struct twill_peer_stats *p = twill_get_peer_stats(slot);
	if (p)
		p->source_drops++;
}

static __always_inline struct twill_endpoint *twill_get_endpoint6(const __u32 addr[4])
{
	struct twill_endpoint6_key key;
	__builtin_memcpy(key.ip6, addr, sizeof(key.ip6));
	return bpf_map_lookup_elem(&twill_endpoints6, &key);
}

/*
 * Counts a drop under the twill_stats counter `reason` names (TWILL_DROP_REASON: its index in
 * 8-byte words, which is also what the drop's event reports). Per-CPU slot: a plain increment is
 * race-free. The bound costs nothing for a constant reason and keeps any other inside the value.
 */
static __always_inline void twill_count_drop(struct twill_stats *stats, __u8 reason)
{
	if (stats && reason < sizeof(*stats) / sizeof(__u64))
		((__u64 *)stats)[reason]++;
}

#endif
