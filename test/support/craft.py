#!/usr/bin/python3
"""Sends hand-made VXLAN packets for twill's tests. Runs inside a namespace the test made.

usage: craft.py KIND SRC DST INNER_DST VNI PORT VTEP_MAC
KIND picks what is wrong with the packet; "good" is a well-formed one (the control case).
The inner payload is UDP to INNER_DST:9999 with the text "twill-probe:KIND", from $INNER_SRC
(10.244.2.77 if unset): a packet from a peer is delivered only with a source in that peer's subnet.
"""
import os
import sys
from scapy.all import Ether, IP, UDP, Raw, ARP, IPOption_NOP, IPv6, conf, send  # noqa: E402
from scapy.layers.vxlan import VXLAN

conf.verb = 0
kind, src, dst, inner_dst, vni, port, vtep_mac = sys.argv[1:8]
# $PROBE_SUFFIX tells apart packets of one KIND that a test sends for different reasons.
PROBE = ("twill-probe:" + kind + os.environ.get("PROBE_SUFFIX", "")).encode()
INNER_SRC = os.environ.get("INNER_SRC", "10.244.2.77")
# The inner frame's source MAC: a made-up one unless $INNER_SRC_MAC claims a VTEP's.
INNER_SRC_MAC = os.environ.get("INNER_SRC_MAC", "0a:58:00:00:00:99")
vni, port = int(vni), int(port)

# In the cluster network but in another /24 than INNER_DST, whichever subnet the node leased (a
# fixed address would be the node's own now and then: leases are allocated at random).
a, b, c, _ = inner_dst.split(".")
ELSEWHERE = f"{a}.{b}.{int(c) ^ 128}.9"

inner_ip = IP(src=INNER_SRC, dst=inner_dst, ttl=63) / UDP(sport=40000, dport=9999) / Raw(PROBE)
inner = Ether(src=INNER_SRC_MAC, dst=vtep_mac) / inner_ip


def vxlan(v=vni, payload=inner, flags=0x08):
    return VXLAN(flags=flags, vni=v) / payload


outer = IP(src=src, dst=dst, flags="DF")
udp = UDP(sport=45000, dport=port)
packets = {
    "good": outer / udp / vxlan(),
    "bad-vni": outer / udp / vxlan(v=vni + 1),
    "wrong-port": outer / UDP(sport=45000, dport=port + 1) / vxlan(),
    "no-i-flag": outer / udp / vxlan(flags=0x00),
    "truncated-vxlan": outer / udp / Raw(b"\x08\x00\x00"),
    "truncated-inner-eth": outer / udp / Raw(bytes(VXLAN(flags=0x08, vni=vni))[:8] + bytes(inner)[:10]),
    "truncated-inner-ip": outer / udp / Raw(bytes(vxlan())[:8 + 14 + 12]),
    "ip-options": IP(src=src, dst=dst, flags="DF", options=[IPOption_NOP()] * 4) / udp / vxlan(),
    "inner-arp": outer / udp / vxlan(payload=Ether(src=INNER_SRC_MAC, dst=vtep_mac) / ARP(pdst=inner_dst)),
    "inner-ipv6": outer / udp / vxlan(payload=Ether(src=INNER_SRC_MAC, dst=vtep_mac, type=0x86DD) / IPv6(dst="fd00::1") / UDP(dport=9999) / Raw(PROBE)),
    "inner-len-oversize": outer / udp / vxlan(payload=Ether(src=INNER_SRC_MAC, dst=vtep_mac) / IP(src=INNER_SRC, dst=inner_dst, len=1400) / UDP(sport=40000, dport=9999) / Raw(PROBE)),
    "oversize": IP(src=src, dst=dst) / udp / vxlan(payload=Ether(src=INNER_SRC_MAC, dst=vtep_mac) / IP(src=INNER_SRC, dst=inner_dst) / UDP(sport=40000, dport=9999) / Raw(PROBE * 300)),
    "truncated-outer-udp": IP(src=src, dst=dst, flags="DF", proto=17) / Raw(b"\x1f\x40\x21"),
    "inner-dst-elsewhere": outer / udp / vxlan(payload=Ether(src=INNER_SRC_MAC, dst=vtep_mac) / IP(src=INNER_SRC, dst=ELSEWHERE) / UDP(dport=9999) / Raw(PROBE)),
}

if kind == "fragment":
    from scapy.all import fragment
    big = IP(src=src, dst=dst) / udp / vxlan(payload=Ether(src=INNER_SRC_MAC, dst=vtep_mac) / IP(src=INNER_SRC, dst=inner_dst) / UDP(sport=40000, dport=9999) / Raw(PROBE * 100))
    send(fragment(big, fragsize=600))
else:
    send(packets[kind])
