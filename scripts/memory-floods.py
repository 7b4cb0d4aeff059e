#!/usr/bin/env python3
"""The two memory floods of issue 13 against a server binary, for before/after figures.

  scripts/memory-floods.py SERVER_BINARY [EXTRA_FLAGS...]

1. bodies: 300 connections each send a POST one byte short of its 1 MiB body and stay open.
2. sign-ins: 6,000 sign-ins that never open a hanging GET.
Each flood runs against a fresh server; prints the server's peak RSS (VmRSS, sampled) and
its RSS a second after the flood's sockets are closed.
"""
import socket
import subprocess
import sys
import time


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def start(binary, extra):
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", "0", "--request-timeout", "60"] + extra,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    return proc, int(line.rsplit(":", 1)[1])


def get(port, target):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data


def bodies(port, pid):
    get(port, "/sign_in?a")
    get(port, "/sign_in?b")
    body = b"x" * ((1 << 20) - 1)
    head = f"POST /message?peer_id=2&to=1 HTTP/1.0\r\nContent-Length: {1 << 20}\r\n\r\n".encode()
    socks, peak = [], 0
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(5)
        try:
            s.sendall(head + body)
        except OSError:
            pass
        socks.append(s)
        if i % 10 == 9:
            peak = max(peak, rss(pid))
    time.sleep(0.3)
    peak = max(peak, rss(pid))
    for s in socks:
        s.close()
    return peak


def sign_ins(port, pid):
    peak = 0
    for i in range(6000):
        get(port, f"/sign_in?idle{i}")
        if i % 250 == 249:
            peak = max(peak, rss(pid))
    return max(peak, rss(pid))


def main():
    binary, extra = sys.argv[1], sys.argv[2:]
    for name, flood in (("300 near-1 MiB bodies", bodies), ("6,000 sign-ins", sign_ins)):
        proc, port = start(binary, extra)
        start_rss = rss(proc.pid)
        t = time.time()
        peak = flood(port, proc.pid)
        took = time.time() - t
        time.sleep(1)
        print(f"{name}: RSS start {start_rss / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, "
              f"after {rss(proc.pid) / 2**20:.1f} MiB ({took:.1f} s)")
        proc.terminate()
        proc.wait()


main()
