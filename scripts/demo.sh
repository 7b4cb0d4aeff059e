#!/usr/bin/env bash
# The demo call: a signaling server and two clients on this machine, Alice calling Bob.
# With a display (DISPLAY set) each client opens its window and signs in by itself
# (--autoconnect; Alice also --autocall, Bob --auto-answer so his window does not wait at the
# ringing screen), the two 640-wide windows side by side (Bob at 0,0, Alice at 660,0);
# without one (or with DEMO_HEADLESS=1) they run headless. Either way both print a STATS
# line a second and everything stops by itself after DEMO_SECONDS (default 20).
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
common=(--server 127.0.0.1 --port "$port" --ice-ip 127.0.0.1 --stats)
bob=()
alice=()
if [ -n "${DISPLAY:-}" ] && [ -z "${DEMO_HEADLESS:-}" ]; then
	common+=(--autoconnect)
	bob+=(--window-pos 0,0 --auto-answer)
	alice+=(--window-pos 660,0)
	echo "demo: server on 127.0.0.1:$port; Alice calls Bob for ${SECONDS_TOTAL} s in two windows on $DISPLAY"
else
	common+=(--headless)
	echo "demo: server on 127.0.0.1:$port; Alice calls Bob for ${SECONDS_TOTAL} s (headless: DISPLAY is not set)"
fi
"$BIN/peerconnection_client" "${common[@]}" "${bob[@]}" --name bob --duration $((SECONDS_TOTAL + 2)) | sed -u 's/^/bob:   /' &
pids+=($!)
sleep 0.5
"$BIN/peerconnection_client" "${common[@]}" "${alice[@]}" --name alice --autocall --duration "$SECONDS_TOTAL" | sed -u 's/^/alice: /'
wait "${pids[1]}" || true
echo "demo: done"
