#!/usr/bin/env bash
# The demo call: a signaling server and two headless clients on this machine, Alice calling
# Bob with the test pattern. Prints both clients' once-a-second STATS lines and stops by
# itself after DEMO_SECONDS (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
SECONDS_TOTAL=${DEMO_SECONDS:-20}
export RUST_LOG=${RUST_LOG:-warn}
log=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$log"; }
trap cleanup EXIT INT TERM

"$BIN/peerconnection_server" --bind 127.0.0.1 --port 0 >"$log/server.out" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$log/server.out" 2>/dev/null && break; sleep 0.1; done
port=$(grep -o '[0-9]*$' "$log/server.out")
echo "demo: server on 127.0.0.1:$port; Alice calls Bob for ${SECONDS_TOTAL} s (headless, test pattern)"
common=(--headless --server 127.0.0.1 --port "$port" --ice-ip 127.0.0.1 --stats)
"$BIN/peerconnection_client" "${common[@]}" --name bob --duration $((SECONDS_TOTAL + 2)) | sed -u 's/^/bob:   /' &
pids+=($!)
sleep 0.5
"$BIN/peerconnection_client" "${common[@]}" --name alice --autocall --duration "$SECONDS_TOTAL" | sed -u 's/^/alice: /'
wait "${pids[1]}" || true
echo "demo: done"
