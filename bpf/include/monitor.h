/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Events for `twill monitor`: drops and sampled path decisions, written to the twill_events ring
 * buffer only while twill_monitor asks for them.
 *
 * The cost when nobody listens is twill_monitoring(): one lookup of a single-entry array, which the
 * verifier inlines into a bounds check and a pointer, a load of its flags and a branch. Everything
 * else (the ring buffer, the copy of the headers, the sampling) is in the subprograms below, which
 * are called only when that branch is taken, so the hot paths carry a call instruction, not their
 * bodies.
 */
#ifndef TWILL_MONITOR_H
#define TWILL_MONITOR_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "maps.bpf.h"

static __always_inline struct twill_monitor *twill_get_monitor(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&twill_monitor, &zero);
}

/* Whether a monitor asks for TWILL_MONITOR_DROPS or _TRACE. */
static __always_inline int twill_monitoring(__u32 flag)
{
	struct twill_monitor *m = twill_get_monitor();
	return m && (m->flags & flag);
}

#define TWILL_EVENT_WHAT(kind, hook, reason) (((__u32)(kind) << 16) | ((__u32)(hook) << 8) | (__u32)(reason))

/* The outer addresses of what twill-rx decapped: the packet no longer carries them. */
struct twill_tunnel_addrs {
	__u8 family;
	__u8 src[16];
	__u8 dst[16];
};

/*
 * The fields every event has. A subprogram of its own also puts struct twill_event into the
 * objects' BTF (the ring buffer's definition names no value type), where
 * test/integration/btf-layout.test.ts compares it with maps/layout.ts.
 */
static __noinline int twill_event_init(struct twill_event *ev, __u32 what)
{
	ev->time_ns = bpf_ktime_get_ns();
	ev->kind = what >> 16;
	ev->hook = what >> 8;
	ev->reason = what;
	ev->tunnel_family = 0;
	__builtin_memset(ev->tunnel_src, 0, sizeof(ev->tunnel_src) + sizeof(ev->tunnel_dst));
	ev->captured = 0;
	return 0;
}

/*
 * A trace decision is kept with probability 1/trace_sample (bpf_get_prandom_u32: no state shared
 * between CPUs). Returns the record to fill, or 0 (not sampled, or no room: counted in `lost`).
 */
static __always_inline struct twill_event *twill_event_reserve(__u32 what)
{
	struct twill_monitor *m = twill_get_monitor();
	if (!m)
		return 0;
	if ((what >> 16) == TWILL_EVENT_TRACE && m->trace_sample > 1 && bpf_get_prandom_u32() % m->trace_sample)
		return 0;
	struct twill_event *ev = bpf_ringbuf_reserve(&twill_events, sizeof(*ev), 0);
	if (!ev) {
		__sync_fetch_and_add(&m->lost, 1);
		return 0;
	}
	twill_event_init(ev, what);
	return ev;
}

/*
 * Bytes to copy of a packet of `len` (> 0) bytes: 1..TWILL_EVENT_HEADERS. bpf_skb_load_bytes
 * wants a size the verifier knows is at least 1, and a `!= 0` test teaches 6.1's verifier no
 * lower bound (newer ones learn it), so the bound is built as (len - 1, at most HEADERS - 1) + 1.
 * 64-bit and behind a barrier, so that the register the helper gets is the one bounded (clang
 * would bound a zero-extended copy, which leaves the verifier nothing on the original).
 */
static __always_inline __u64 twill_capture_len(__u64 len)
{
	__u64 last = len - 1;
	if (last > TWILL_EVENT_HEADERS - 1)
		last = TWILL_EVENT_HEADERS - 1;
	asm volatile("" : "+r"(last));
	return last + 1;
}

static __noinline int twill_emit_skb(struct __sk_buff *skb, __u32 what, __u32 peer_slot, const struct twill_tunnel_addrs *tunnel)
{
	struct twill_event *ev = twill_event_reserve(what);
	if (!ev)
		return 0;
	ev->ifindex = skb->ifindex;
	ev->len = skb->len;
	ev->peer_slot = peer_slot;
	if (tunnel) {
		ev->tunnel_family = tunnel->family;
		__builtin_memcpy(ev->tunnel_src, tunnel->src, 16);
		__builtin_memcpy(ev->tunnel_dst, tunnel->dst, 16);
	}
	if (skb->len > 0) {
		__u64 n = twill_capture_len(skb->len);
		if (bpf_skb_load_bytes(skb, 0, ev->headers, n) == 0)
			ev->captured = n;
	}
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/*
 * The packet's first bytes into ev->headers by direct access, 128 at once or else in halving
 * chunks: bpf_xdp_load_bytes would do it in one call but came in Linux 5.18, and the datapath
 * loads from 5.12 (README, *Kernels*). Only decap.bpf.c has an XDP program: elsewhere this is
 * unused, and says so.
 */
#define TWILL_XDP_COPY(size) \
	if (data + off + (size) <= data_end) { \
		__builtin_memcpy(ev->headers + off, data + off, size); \
		off += (size); \
	}

static __noinline __attribute__((unused)) int twill_emit_xdp(struct xdp_md *ctx, __u32 what, __u32 peer_slot)
{
	struct twill_event *ev = twill_event_reserve(what);
	if (!ev)
		return 0;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 off = 0;
	ev->ifindex = ctx->ingress_ifindex;
	ev->len = data_end - data;
	ev->peer_slot = peer_slot;
	if (data + TWILL_EVENT_HEADERS <= data_end) {
		__builtin_memcpy(ev->headers, data, TWILL_EVENT_HEADERS);
		off = TWILL_EVENT_HEADERS;
	} else {
		TWILL_XDP_COPY(64)
		TWILL_XDP_COPY(32)
		TWILL_XDP_COPY(16)
		TWILL_XDP_COPY(8)
		TWILL_XDP_COPY(4)
		TWILL_XDP_COPY(2)
		TWILL_XDP_COPY(1)
	}
	ev->captured = off;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/*
 * Counts a drop under twill_stats' counter `reason` (TWILL_DROP_REASON) and reports it while a
 * monitor listens; `slot` is the peer's, where one was found. Returns TC_ACT_SHOT, the verdict of
 * every such drop, for the caller to return.
 */
static __always_inline int twill_drop(struct __sk_buff *skb, struct twill_stats *stats, __u8 hook, __u8 reason, __u16 slot)
{
	twill_count_drop(stats, reason);
	if (twill_monitoring(TWILL_MONITOR_DROPS))
		twill_emit_skb(skb, TWILL_EVENT_WHAT(TWILL_EVENT_DROP, hook, reason), slot, 0);
	return TC_ACT_SHOT;
}

/* A fast-path decision (`fast`, or the twill_path_stats reason it left the packet to the stack for). */
static __always_inline void twill_trace(struct __sk_buff *skb, __u8 hook, __u8 reason, __u16 slot)
{
	if (twill_monitoring(TWILL_MONITOR_TRACE))
		twill_emit_skb(skb, TWILL_EVENT_WHAT(TWILL_EVENT_TRACE, hook, reason), slot, 0);
}

#endif
