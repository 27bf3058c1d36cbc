#!/usr/bin/env bash
# Cluster rate-limit benchmark: GCRA decisions/s through GatehouseRedis's client against a local redis-server,
# with 1 and with 4 pooled connections, pipelined from 2 event loops; then redis-benchmark running the same
# script with EVALSHA on the same machine, as the reference of what the server itself can do.
#
#   scripts/build-release.sh                                  # once (or CONFIG=debug for a quick look)
#   scripts/bench-redis.sh
#   DURATION=10 IN_FLIGHT=64 scripts/bench-redis.sh
#
# Prints, per pool size: decisions/s and writes (flushes = round trips) per decision; several decisions sent
# during one event-loop tick share one write. Starts its own redis-server on $PORT (temporary dir, no
# persistence) and stops it at the end.
# Env: CONFIG (release), DURATION (s, 5), IN_FLIGHT (decisions outstanding per event loop, 32), PORT (16399).
# The limiter inside the gateway, proxying, against the local limiter: scripts/bench-cluster-limits.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG=${CONFIG:-release}; DURATION=${DURATION:-5}; IN_FLIGHT=${IN_FLIGHT:-32}; PORT=${PORT:-16399}
BIN=$root/.build/$CONFIG/gatehouse
[ -x "$BIN" ] || { echo "build it first: swift build -c $CONFIG --product gatehouse" >&2; exit 1; }

dir=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null 2>&1 &
server=$!
trap 'kill -9 $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do redis-cli -p "$PORT" PING >/dev/null 2>&1 && break; sleep 0.05; done

echo "== GatehouseRedis ($CONFIG build), 2 event loops x $IN_FLIGHT decisions in flight, ${DURATION}s each"
for pool in 1 4; do
  before=$(redis-cli -p "$PORT" INFO stats | awk -F: '/^total_commands_processed/ {print $2+0}')
  "$BIN" bench-redis "$PORT" "$pool" "$DURATION" "$IN_FLIGHT"
  after=$(redis-cli -p "$PORT" INFO stats | awk -F: '/^total_commands_processed/ {print $2+0}')
  echo "   redis commands processed: $((after - before)) (each decision is EVALSHA plus TIME, GET and SET inside it)"
done

# The same Lua source the client loads (GCRAScript.source), for redis-benchmark's EVALSHA.
lua=$(awk '/public static let source = """/ {on=1; next} on && /^        """/ {exit} on {sub(/^        /, ""); print}' \
  "$root/Sources/GatehouseRedis/RateLimit/GCRAScript.swift")
sha=$(redis-cli -p "$PORT" SCRIPT LOAD "$lua")
echo "== redis-benchmark EVALSHA (same script, 50 clients, pipeline 1 and 16, one key per client group)"
redis-benchmark -p "$PORT" -q -n 200000 -c 50 -r 1000 EVALSHA "$sha" 1 'rl:rb:__rand_int__' 1 1000000 0 1 | tr '\r' '\n' | tail -1
redis-benchmark -p "$PORT" -q -n 500000 -c 50 -P 16 -r 1000 EVALSHA "$sha" 1 'rl:rb:__rand_int__' 1 1000000 0 1 | tr '\r' '\n' | tail -1
