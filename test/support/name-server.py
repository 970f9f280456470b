#!/usr/bin/python3
"""TCP server for service tests: answers every connection with NAME and the client address it saw, then closes."""
import socket
import sys

name, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(16)
print("listening", flush=True)
while True:
    conn, addr = srv.accept()
    conn.sendall(f"{name} {addr[0]}\n".encode())
    conn.close()
