#!/usr/bin/env python3
"""Relay with and without keep-alive: server CPU per relayed message.

  scripts/relay-keepalive.py [SERVER_BINARY] [MESSAGES]

One pair: bob posts a 200-byte message to alice, alice's hanging GET takes it, and again.
"close": every request on its own connection, HTTP/1.0, as the original client does.
"keep-alive": each member keeps one HTTP/1.1 connection for all its requests.
Prints messages/s (bounded by this Python client) and the server's CPU time (user +
system, from /proc) per relayed message, which the client's speed does not change.
"""
import os
import socket
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def read_response(sock, buf):
    """One response off `sock`; `buf` holds bytes already read. Returns (body, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed")
        rest += chunk
    return rest[:length], rest[length:]


def once(port, request):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    body, _ = read_response(s, b"")
    s.close()
    return body


def run(binary, mode, n):
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(proc.stdout.readline().rsplit(":", 1)[1])
    version = "HTTP/1.1" if mode == "keep-alive" else "HTTP/1.0"
    body = b"x" * 200
    post = (f"POST /message?peer_id=2&to=1 {version}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    wait = f"GET /wait?peer_id=1 {version}\r\n\r\n".encode()
    once(port, b"GET /sign_in?alice HTTP/1.0\r\n\r\n")
    once(port, b"GET /sign_in?bob HTTP/1.0\r\n\r\n")
    once(port, wait.replace(b"HTTP/1.1", b"HTTP/1.0"))  # bob's join
    start_cpu, start = cpu(proc.pid), time.time()
    if mode == "keep-alive":
        a = socket.create_connection(("127.0.0.1", port))
        b = socket.create_connection(("127.0.0.1", port))
        abuf = bbuf = b""
        for _ in range(n):
            a.sendall(wait)
            b.sendall(post)
            _, bbuf = read_response(b, bbuf)
            got, abuf = read_response(a, abuf)
            assert got == body
    else:
        for _ in range(n):
            a = socket.create_connection(("127.0.0.1", port))
            a.sendall(wait)
            once(port, post)
            got, _ = read_response(a, b"")
            assert got == body
            a.close()
    took, spent = time.time() - start, cpu(proc.pid) - start_cpu
    proc.terminate()
    proc.wait()
    return n / took, spent / n * 1e6


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/peerconnection_server"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    for mode in ("close", "keep-alive", "close", "keep-alive"):
        rate, cpu_us = run(binary, mode, n)
        print(f"{mode:10s}: {rate:8.0f} messages/s, server CPU {cpu_us:5.1f} us per relayed message")


main()
