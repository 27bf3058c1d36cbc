#!/usr/bin/env bash
# Two gateway builds on the same route, alternated: each run of ../shared/bench/proxy-bench.sh puts one build next to
# nginx, ROUNDS times A then B; prints the medians (requests/s, CPU µs per request) and the ratio B/A. For "before and
# after" figures: build the older commit in another checkout (scripts/build-release.sh there) and pass both binaries.
#
#   A_BIN=/tmp/old/.build/release/gatehouse scripts/bench-ab.sh      # B defaults to this checkout's release build
#
# Env: A_BIN (required), B_BIN (default .build/release/gatehouse), CONFIG (default config/bench/gateway.yaml),
#      ROUNDS (3), DURATION (s, 8), CONNS (64), PEERS (nginx).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/scripts/bench-median.sh"
A_BIN=${A_BIN:?set A_BIN to the other gatehouse binary}
B_BIN=${B_BIN:-$root/.build/release/gatehouse}
CONFIG=${CONFIG:-$root/config/bench/gateway.yaml}
ROUNDS=${ROUNDS:-3}
bench=${PROXY_BENCH:-$root/../shared/bench/proxy-bench.sh}
for bin in "$A_BIN" "$B_BIN"; do [ -x "$bin" ] || { echo "error: no gatehouse binary at $bin" >&2; exit 1; }; done
[ -f "$bench" ] || { echo "error: no peer harness at $bench" >&2; exit 1; }
for port in 18080 18084; do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "error: port $port is in use (another benchmark?)" >&2; exit 1; fi
done
work=$(mktemp -d -t bench-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT

export PEERS=${PEERS:-nginx} GATEWAY_PORT=18084
DURATION=2 GATEWAY_CMD="$B_BIN gateway --config $CONFIG --log-level warning" bash "$bench" >/dev/null 2>&1 || true  # warm-up
for round in $(seq 1 "$ROUNDS"); do
    for side in A B; do
        bin=$A_BIN; [ "$side" = B ] && bin=$B_BIN
        echo "== round $round: $side ($bin)"
        GATEWAY_CMD="$bin gateway --config $CONFIG --log-level warning" bash "$bench" | tee -a "$work/$side.txt"
    done
done
median_of() { gateway_median "$work/$1.txt" "$2"; }  # SIDE FIELD(rps|cpu)
a=$(median_of A rps); b=$(median_of B rps)
echo "== medians over $ROUNDS rounds"
printf "A  %9.0f req/s  %5.1f CPU-us/req\n" "$a" "$(median_of A cpu)"
printf "B  %9.0f req/s  %5.1f CPU-us/req\n" "$b" "$(median_of B cpu)"
awk -v a="$a" -v b="$b" 'BEGIN { printf "ratio (B / A) %.3f\n", b / a }'
