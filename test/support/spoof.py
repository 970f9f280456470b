#!/usr/bin/python3
"""Sends UDP datagrams from any source address, for twill's anti-spoofing tests. Runs inside a
namespace the test made (a pod's), at layer 2, so the kernel neither checks nor picks the source.

usage: spoof.py IFACE DST_MAC SRC DST COUNT TAG
COUNT datagrams to [DST]:9999 (IPv4 or IPv6, as DST is), from SRC, in Ethernet frames to DST_MAC
(the pod's gateway) out of IFACE; each carries the text "twill-spoof:TAG".
"""
import sys
from scapy.all import Ether, IP, IPv6, UDP, Raw, conf, sendp

conf.verb = 0
iface, dst_mac, src, dst, count, tag = sys.argv[1:7]
l3 = IPv6(src=src, dst=dst, hlim=64) if ":" in dst else IP(src=src, dst=dst, ttl=64)
frame = Ether(dst=dst_mac) / l3 / UDP(sport=40001, dport=9999) / Raw(("twill-spoof:" + tag).encode())
sendp([frame] * int(count), iface=iface)
