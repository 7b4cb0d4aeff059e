#!/bin/sh
# make cluster: Redis, three signaling servers sharing it, and HAProxy in front, all on
# loopback. Prints the address to point clients and browsers at; Ctrl-C stops everything.
set -eu
PORT=${PORT:-8888}
REDIS_PORT=${REDIS_PORT:-6390}
FIRST=${FIRST_SERVER_PORT:-8891}
SERVER=${SERVER:-target/release/peerconnection_server}
pids=""
stop() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids="$pids $!"
for i in 1 2 3; do
    port=$((FIRST + i - 1))
    "$SERVER" --bind 127.0.0.1 --port "$port" --metrics \
        --redis "redis://127.0.0.1:$REDIS_PORT" ${ARGS:-} 2>"target/cluster-server-$i.log" &
    pids="$pids $!"
    eval "export PC_S$i=127.0.0.1:$port"
done
export PC_BIND="127.0.0.1:$PORT"
haproxy -db -f deploy/haproxy.cfg &
pids="$pids $!"
sleep 1
echo "cluster: point clients and browsers at http://127.0.0.1:$PORT/"
echo "  (servers on ports $FIRST-$((FIRST + 2)), logs in target/cluster-server-*.log; Redis on $REDIS_PORT; Ctrl-C stops)"
wait
