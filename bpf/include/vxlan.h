/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* flannel's VXLAN wire format, as the kernel vxlan driver writes it. */
#ifndef TWILL_VXLAN_H
#define TWILL_VXLAN_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/ipv6.h>

struct vxlanhdr {
	__be32 vx_flags;
	__be32 vx_vni;      /* VNI in the upper 24 bits */
};

#define VXLAN_FLAG_I 0x08000000u   /* "VNI present", the only flag flannel sets */
#define VXLAN_VNI_SHIFT 8          /* vx_vni holds the VNI above one reserved byte */

/* The outer TTL of VXLAN: the kernel's default (ip_default_ttl), as flannel.1's packets get it. */
#define VXLAN_OUTER_TTL 64

/* Outer IPv4 + UDP + VXLAN + inner Ethernet: what encap adds and decap strips. */
#define VXLAN_OVERHEAD (sizeof(struct iphdr) + sizeof(struct udphdr) + sizeof(struct vxlanhdr) + ETH_HLEN)

/* Outer IPv6 + UDP + VXLAN + inner Ethernet: flannel's IPv6 VXLAN. */
#define VXLAN6_OVERHEAD (sizeof(struct ipv6hdr) + sizeof(struct udphdr) + sizeof(struct vxlanhdr) + ETH_HLEN)

/* The kernel's udp_flow_src_port() range for VXLAN: the local port range 32768..60999. */
#define VXLAN_SPORT_MIN 32768u
#define VXLAN_SPORT_MAX 61000u

#define IP_MF     0x2000
#define IP_OFFSET 0x1FFF
#define IP_DF     0x4000

#define IPV4_VERSION 4
#define IPV6_VERSION 6
/* ihl counts 32-bit words: 5 is the 20-byte header without options. */
#define IPV4_IHL_MIN 5
#define IPV4_IHL_BYTES(ihl) ((ihl) * 4)
/* The first byte of an IPv4 header without options: version 4, ihl 5 (0x45). */
#define IPV4_VERSION_IHL_PLAIN ((IPV4_VERSION << 4) | IPV4_IHL_MIN)

#define INET_ECN_MASK  3
#define INET_ECN_ECT_0 2
#define INET_ECN_CE    3

/* From the socket headers, which the BPF target does not have. */
#ifndef AF_INET
#define AF_INET 2
#endif

static __always_inline __u32 ipv4_u32(const __u8 a[4])
{
	return *(const __u32 *)a;
}

/* Network-order mask for a prefix length 0..32. */
static __always_inline __u32 prefix_mask(__u8 len)
{
	return len == 0 ? 0 : __builtin_bswap32(~0u << (32 - (len > 32 ? 32 : len)));
}

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

#endif
