#!/usr/bin/python3
"""An echo flow for twill's loss counting. Runs inside a namespace the test made, as root.

usage: pinger.py ADDR [INTERVAL_MS] [GRACE_MS]

Sends an ICMP (IPv4) or ICMPv6 echo request to ADDR every INTERVAL_MS (20), each with its own
sequence number, and records when each was sent and when its reply came. Prints "first reply"
once the first reply is in. On SIGINT or SIGTERM it stops sending, waits for the replies of what
it already sent, GRACE_MS (1500) at most, then prints one JSON line and exits 0:
  {"target": ADDR, "intervalMs": ..., "graceMs": ..., "packets": [[seq, sentAtMs, answeredAtMs or null], ...]}
Times are Unix epoch milliseconds. A packet with no reply by then is lost: nothing is left in
flight when the flow stops, so an outage in its last second counts like any other.
"""
import json
import os
import select
import signal
import socket
import struct
import sys
import time

MAGIC = b"twillpng"

target = sys.argv[1]
interval = float(sys.argv[2] if len(sys.argv) > 2 else 20) / 1000
grace = float(sys.argv[3] if len(sys.argv) > 3 else 1500) / 1000
v6 = ":" in target
ident = os.getpid() & 0xFFFF
if v6:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    ECHO, REPLY = 128, 129
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ECHO, REPLY = 8, 0
sock.setblocking(False)
dest = socket.getaddrinfo(target, None, sock.family, socket.SOCK_RAW)[0][4]
target_addr = dest[0]

stopping = False


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def now_ms():
    return time.time() * 1000


sent_at = []  # by sequence number
answered_at = []
outstanding = 0
first = False


def send(seq):
    payload = MAGIC + struct.pack("!Q", seq) + bytes(40)
    header = struct.pack("!BBHHH", ECHO, 0, 0, ident, seq & 0xFFFF)
    if not v6:  # the kernel sums ICMPv6 itself (the pseudo-header needs the source it picks)
        header = struct.pack("!BBHHH", ECHO, 0, checksum(header + payload), ident, seq & 0xFFFF)
    sent_at.append(round(now_ms(), 3))
    answered_at.append(None)
    try:
        sock.sendto(header + payload, dest)
    except OSError:
        pass  # no route, no buffer...: sent as far as the flow goes, and never answered


def receive():
    global outstanding, first
    while True:
        try:
            data, src = sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return
        if src[0] != target_addr:
            continue
        icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
        if len(icmp) < 24 or icmp[0] != REPLY or struct.unpack("!H", icmp[4:6])[0] != ident or icmp[8:16] != MAGIC:
            continue
        seq = struct.unpack("!Q", icmp[16:24])[0]
        if seq < len(answered_at) and answered_at[seq] is None:
            answered_at[seq] = round(now_ms(), 3)
            outstanding -= 1
            if not first:
                first = True
                print("first reply", flush=True)


next_send = time.monotonic()
while not stopping:
    t = time.monotonic()
    if t >= next_send:
        send(len(sent_at))
        outstanding += 1
        # Paced from the schedule, but a process held up does not send a burst to catch up.
        next_send = max(next_send + interval, t)
    try:
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
    except InterruptedError:
        continue
    if ready:
        receive()

deadline = time.monotonic() + grace
while outstanding > 0 and time.monotonic() < deadline:
    ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
    if ready:
        receive()

packets = [[seq, sent_at[seq], answered_at[seq]] for seq in range(len(sent_at))]
print(json.dumps({"target": target, "intervalMs": interval * 1000, "graceMs": grace * 1000, "packets": packets}, separators=(",", ":")), flush=True)
