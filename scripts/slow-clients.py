#!/usr/bin/env python3
"""Slowloris against a running `reelsmith serve`: one client address (127.0.0.3) opens N
connections that each send half a request head and then nothing; then another address
(127.0.0.2) asks for /health. Prints how many connections the server kept and whether the other
client was served. Usage: scripts/slow-clients.py PORT [N] (run `ulimit -n 8192` first for N > 1000).
"""
import socket
import sys
import time

port = int(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1500


def connect_from(address, timeout, request):
    """A connection from the loopback `address` that has sent `request`."""
    s = socket.socket()
    s.bind((address, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.sendall(request)
    return s


held, failed = [], 0
for _ in range(n):
    try:
        held.append(connect_from("127.0.0.3", 0.2, b"GET /health HTTP/1.1\r\nX-Slow: "))
    except OSError:
        failed += 1
time.sleep(0.5)
still_open = 0
for s in held:
    s.setblocking(False)
    try:
        if s.recv(1) != b"":
            still_open += 1
    except BlockingIOError:
        still_open += 1
    except OSError:
        pass
start = time.time()
try:
    c = connect_from("127.0.0.2", 3, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    other = "%r in %.3f s" % (c.recv(15), time.time() - start)
except OSError as e:
    other = "failed: %r after %.1f s" % (e, time.time() - start)
print("opened %d (%d failed to connect), still open after 0.5 s: %d; another client: %s" % (len(held), failed, still_open, other))
