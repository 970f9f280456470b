#!/usr/bin/python3
"""Collects UDP datagrams on PORT until one equal to STOP arrives or SECONDS pass; prints them, one per line."""
import socket
import sys
import time

port, stop, seconds = int(sys.argv[1]), sys.argv[2].encode(), float(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)  # dual-stack: IPv4 too
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", port))
print("listening", flush=True)
deadline = time.time() + seconds
while time.time() < deadline:
    s.settimeout(max(0.01, deadline - time.time()))
    try:
        data, _ = s.recvfrom(65535)
    except socket.timeout:
        break
    print(data.decode(errors="replace"), flush=True)
    if data == stop:
        break
