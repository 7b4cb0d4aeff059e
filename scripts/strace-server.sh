#!/usr/bin/env bash
# Syscalls per request: strace -c attached to a server under a fixed relay run (1 pair, 3 s).
# Divide each count by the successful accept4 calls (one request per connection).
# Usage: scripts/strace-server.sh [SERVER_BINARY]   (needs strace; prints the strace table)
set -u
cd "$(dirname "$0")/.."
SRV=${1:-target/release/peerconnection_server}
LOAD=target/release/peerconnection_load
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
RUST_LOG=warn "$SRV" --bind 127.0.0.1 --port 0 --timeout 600 >"$tmp/server.out" 2>/dev/null &
SP=$!
for _ in $(seq 50); do grep -q listening "$tmp/server.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(grep -o '[0-9]*$' "$tmp/server.out")
strace -f -c -e trace=network,read,write,epoll_ctl,close,accept4,sendto,recvfrom,epoll_wait \
  -o "$tmp/strace.txt" -p "$SP" &
ST=$!
sleep 0.5
"$LOAD" --scenario relay --port "$PORT" --pairs 1 --duration 3 2>/dev/null
sleep 0.2
kill -INT "$ST"; wait "$ST" 2>/dev/null
kill "$SP"; wait "$SP" 2>/dev/null
cat "$tmp/strace.txt"
