#!/usr/bin/env bash
# Server figures for the README: join storms, held connections, relay, churn, and the same
# one-request-per-connection pattern against nginx as a baseline (needs nginx and wrk from
# Debian: apt-get install nginx-light wrk). Everything on 127.0.0.1; each run is bounded.
# Usage: scripts/bench-server.sh [RUNS]   (prints RESULT lines; medians are picked by hand)
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
B=target/release
cargo build --release --bins >/dev/null 2>&1 || { echo "build failed"; exit 1; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

start_server() {
  RUST_LOG=warn "$B/peerconnection_server" --bind 127.0.0.1 --port 0 --timeout 600 "$@" >"$tmp/server.out" &
  SERVER_PID=$!
  for _ in $(seq 50); do grep -q listening "$tmp/server.out" 2>/dev/null && break; sleep 0.1; done
  PORT=$(grep -o '[0-9]*$' "$tmp/server.out")
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null; }
load() { "$B/peerconnection_load" --port "$PORT" --server-pid "$SERVER_PID" "$@" 2>/dev/null; }

for n in 100 1000; do
  for _ in $(seq "$RUNS"); do start_server; load --scenario storm --members "$n"; stop_server; done
done
start_server; load --scenario storm --members 3000 --duration 60; stop_server
start_server; load --scenario hold --members 10000 --duration 3; stop_server
for p in 1 10 100; do
  for _ in $(seq "$RUNS"); do start_server; load --scenario relay --pairs "$p" --duration 3; stop_server; done
done
for _ in $(seq "$RUNS"); do start_server; load --scenario churn --concurrency 50 --duration 3; stop_server; done

# The same connection-per-request pattern: wrk (Connection: close, 50 connections, 1 thread)
# against nginx answering a fixed 200 and against our server answering a cheap request.
if command -v nginx >/dev/null && command -v wrk >/dev/null; then
  cat >"$tmp/nginx.conf" <<NGINX
worker_processes 1;
error_log $tmp/nginx-error.log;
pid $tmp/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp; uwsgi_temp_path $tmp; scgi_temp_path $tmp;
  server { listen 127.0.0.1:18089; location / { return 200 "ok"; } }
}
NGINX
  nginx -c "$tmp/nginx.conf" -g 'daemon off;' &
  NGINX_PID=$!
  sleep 0.5
  for _ in $(seq "$RUNS"); do
    echo "RESULT baseline=nginx $(wrk -t1 -c50 -d5s -H 'Connection: close' http://127.0.0.1:18089/ | grep -E 'Requests/sec')"
  done
  kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null
  start_server
  for _ in $(seq "$RUNS"); do
    echo "RESULT baseline=ours $(wrk -t1 -c50 -d5s -H 'Connection: close' "http://127.0.0.1:$PORT/sign_out?peer_id=999999" | grep -E 'Requests/sec')"
  done
  stop_server
else
  echo "nginx or wrk missing: no baseline"
fi
