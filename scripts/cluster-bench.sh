#!/usr/bin/env bash
# Cluster figures for the README: the same load against a standalone server (no --redis,
# the baseline), one server with --redis, and three servers with --redis sharing one
# redis-server, all on loopback, in one run of this script. Prints every RESULT line, then a
# table of medians. CPU columns are CPU seconds per second (1.00 = one core busy), from
# /proc/PID/stat over the measured part of each run.
# Usage: scripts/cluster-bench.sh [RUNS] [STORM_MEMBERS] [STORM_RUNS]
#   (defaults 3, 3000, 1; STORM_MEMBERS=0 skips the storm)
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
STORM_MEMBERS=${2:-3000}
STORM_RUNS=${3:-1}
REDIS_PORT=${REDIS_PORT:-16390}
B=target/release
command -v redis-server >/dev/null || { echo "redis-server is not installed (make deps)"; exit 1; }
cargo build --release --bin peerconnection_server --bin peerconnection_load >/dev/null 2>&1 \
  || { echo "build failed"; exit 1; }
tmp=$(mktemp -d)
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  PIDS=()
}
trap 'stop_all; rm -rf "$tmp"' EXIT

# start CONFIG: standalone | redis1 | redis3. Sets SERVERS (comma list), CPU (--cpu-pid args).
start() {
  local n=1 redis=()
  CPU=()
  case $1 in
    redis1) n=1 ;;
    redis3) n=3 ;;
  esac
  if [ "$1" != standalone ]; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
    PIDS+=($!)
    CPU+=(--cpu-pid "redis:$!")
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis=(--redis "redis://127.0.0.1:$REDIS_PORT")
  fi
  SERVERS=""
  for i in $(seq "$n"); do
    RUST_LOG=warn "$B/peerconnection_server" --bind 127.0.0.1 --port 0 --timeout 600 \
      --metrics "${redis[@]}" >"$tmp/server$i.out" 2>"$tmp/server$i.err" &
    PIDS+=($!)
    CPU+=(--cpu-pid "servers:$!")
    for _ in $(seq 50); do grep -q listening "$tmp/server$i.out" 2>/dev/null && break; sleep 0.1; done
    port=$(grep -o '[0-9]*$' "$tmp/server$i.out")
    SERVERS="${SERVERS:+$SERVERS,}127.0.0.1:$port"
    if [ "$1" != standalone ]; then
      for _ in $(seq 100); do
        curl -s "http://127.0.0.1:$port/metrics" | grep -q 'cluster_up 1' && break
        sleep 0.1
      done
    fi
  done
}

# run NAME LOAD-ARGS...: one RESULT line, prefixed with NAME.
run() {
  local name=$1
  shift
  local line
  line=$("$B/peerconnection_load" --server "$SERVERS" "${CPU[@]}" "$@" 2>/dev/null | grep '^RESULT')
  echo "$name $line" | tee -a "$tmp/results"
}

for config in standalone redis1 redis3; do
  start "$config"
  if [ "$STORM_MEMBERS" -gt 0 ]; then
    for _ in $(seq "$STORM_RUNS"); do
      run "storm/$config" --scenario storm --members "$STORM_MEMBERS" --duration 120
    done
  fi
  for _ in $(seq "$RUNS"); do
    run "relay10/$config" --scenario relay --pairs 10 --duration 3
    run "relay1/$config" --scenario relay --pairs 1 --duration 3
    if [ "$config" = redis3 ]; then
      run "relay10-same/$config" --scenario relay --pairs 10 --duration 3 --pair-placement same
      run "relay1-same/$config" --scenario relay --pairs 1 --duration 3 --pair-placement same
      run "relay10-random/$config" --scenario relay --pairs 10 --duration 3 --spread random
    fi
  done
  stop_all
done

# The table: the median of each field over the runs of each row.
echo
echo "medians (runs: relay $RUNS, storm $STORM_RUNS); cpu in cores (CPU s per s)"
awk '
function field(line, key,   m) { if (match(line, " " key "=[^ ]*")) return substr(line, RSTART + length(key) + 2, RLENGTH - length(key) - 2); return "-" }
function median(list,   a, n, i, j, t) {
  n = split(list, a, " ")
  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
  if (n == 0) return "-"
  return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
  row = $1
  if (!(row in seen)) { seen[row] = 1; order[++rows] = row }
  failed[row] += ($0 ~ / failed=1/)
  split("seconds notifications_per_s messages_per_s p50_us p99_us cpu_servers cpu_redis duplicates lost", keys, " ")
  for (k in keys) { v = field($0, keys[k]); if (v != "-" && v != "unknown") vals[row, keys[k]] = vals[row, keys[k]] " " v }
}
END {
  printf "%-22s %8s %10s %9s %8s %8s %8s %8s %6s\n", "run", "seconds", "notices/s", "msgs/s", "p50_us", "p99_us", "cpu_srv", "cpu_redis", "failed"
  for (r = 1; r <= rows; r++) {
    row = order[r]
    printf "%-22s %8s %10s %9s %8s %8s %8s %8s %6s\n", row, median(vals[row, "seconds"]), median(vals[row, "notifications_per_s"]), median(vals[row, "messages_per_s"]), median(vals[row, "p50_us"]), median(vals[row, "p99_us"]), median(vals[row, "cpu_servers"]), median(vals[row, "cpu_redis"]), failed[row]
  }
}' "$tmp/results"
