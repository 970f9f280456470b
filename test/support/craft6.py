#!/usr/bin/python3
"""Sends hand-made IPv6 VXLAN for twill's IPv6 tests, at layer 2 (so any source can be claimed).
Runs inside a namespace the test made.

usage: craft6.py KIND IFACE DST_MAC SRC DST INNER_DST VNI PORT VTEP_MAC
KIND picks what is wrong with the packet; "good" is a well-formed one (the control case);
"fragment" and "fragment-unknown-source" are a well-formed 1.9 KB one cut into 600-byte IPv6
fragments, from the peer and from an address with no lease.
The inner payload is UDP to [INNER_DST]:9999 with the text "twill-probe6:KIND", from $INNER_SRC
(fd76:b6:1:2::77 if unset): a packet from a peer is delivered only with a source in that peer's subnet.
"""
import os
import sys
from scapy.all import Ether, IPv6, IPv6ExtHdrFragment, IP, UDP, Raw, conf, fragment6, sendp
from scapy.layers.vxlan import VXLAN

conf.verb = 0
kind, iface, dst_mac, src, dst, inner_dst, vni, port, vtep_mac = sys.argv[1:10]
vni, port = int(vni), int(port)
# $PROBE_SUFFIX tells apart packets of one KIND that a test sends for different reasons.
PROBE = ("twill-probe6:" + kind + os.environ.get("PROBE_SUFFIX", "")).encode()
INNER_SRC = os.environ.get("INNER_SRC", "fd76:b6:1:2::77")
# The inner frame's source MAC: a made-up one unless $INNER_SRC_MAC claims a VTEP's.
INNER_SRC_MAC = os.environ.get("INNER_SRC_MAC", "0a:58:00:00:00:99")


def inner(to=inner_dst):
    return Ether(src=INNER_SRC_MAC, dst=vtep_mac) / IPv6(src=INNER_SRC, dst=to, hlim=63) / UDP(sport=40000, dport=9999) / Raw(PROBE)


def outer(payload, s=src, v=vni):
    return Ether(dst=dst_mac) / IPv6(src=s, dst=dst) / UDP(sport=45000, dport=port) / VXLAN(flags=0x08, vni=v) / payload


packets = {
    "good": outer(inner()),
    "unknown-source": outer(inner(), s="fd76:b6::99"),
    "bad-vni": outer(inner(), v=vni + 1),
    "inner-dst-elsewhere": outer(inner(to="fd76:b6:1:9::1")),
    "inner-ipv4": outer(Ether(src=INNER_SRC_MAC, dst=vtep_mac) / IP(src="10.76.2.77", dst="10.76.1.10") / UDP(dport=9999) / Raw(PROBE)),
    "truncated": Ether(dst=dst_mac) / IPv6(src=src, dst=dst) / UDP(sport=45000, dport=port) / Raw(b"\x08\x00\x00"),
}
if kind.startswith("fragment"):
    s = "fd76:b6::99" if kind == "fragment-unknown-source" else src
    big = IPv6(src=s, dst=dst) / IPv6ExtHdrFragment() / UDP(sport=45000, dport=port) / VXLAN(flags=0x08, vni=vni) / Ether(src=INNER_SRC_MAC, dst=vtep_mac) / IPv6(src=INNER_SRC, dst=inner_dst, hlim=63) / UDP(sport=40000, dport=9999) / Raw(PROBE * 100)
    sendp([Ether(dst=dst_mac) / f for f in fragment6(big, 600)], iface=iface)
else:
    sendp(packets[kind], iface=iface)
