#!/usr/bin/python3
"""A TCP transfer with an integrity check, for tests.

  tcp-transfer.py sink PORT [6]         accept one connection (on IPv6 with 6), read to EOF, print "<bytes> <sha256>"
  tcp-transfer.py send HOST PORT BYTES  send BYTES pseudo-random bytes, print "<bytes> <sha256>"
  tcp-transfer.py stream HOST PORT      print "streaming", send 16 KiB every 10 ms until SIGTERM or
                                        SIGINT, then finish cleanly and print "<bytes> <sha256>"
"""
import hashlib
import random
import signal
import socket
import sys
import time

mode = sys.argv[1]
if mode == "sink":
    # One dual-stack socket: IPv4 arrives as ::ffff:a.b.c.d, IPv6 as itself.
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", int(sys.argv[2])))
    srv.listen(1)
    print("listening", flush=True)
    conn, _ = srv.accept()
    conn.settimeout(30)
    h, n = hashlib.sha256(), 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    print(n, h.hexdigest(), flush=True)
elif mode == "stream":
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    host, port = sys.argv[2], int(sys.argv[3])
    rng = random.Random(port)
    s = socket.create_connection((host, port), timeout=30)
    print("streaming", flush=True)
    h, sent = hashlib.sha256(), 0
    while not stop:
        chunk = rng.randbytes(16384)
        s.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
        time.sleep(0.01)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    print(sent, h.hexdigest(), flush=True)
else:
    host, port, total = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(total)
    s = socket.create_connection((host, port), timeout=30)
    h, sent = hashlib.sha256(), 0
    while sent < total:
        chunk = rng.randbytes(min(65536, total - sent))
        s.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # wait for the sink to close: everything was read
    print(sent, h.hexdigest(), flush=True)
