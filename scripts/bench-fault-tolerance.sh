#!/usr/bin/env bash
# The cost of the fault-tolerance policies (issue 12): config/bench/gateway-fault-tolerance.yaml (a rate limit that
# never triggers, a closed breaker, admission control) against the plain proxy (config/bench/gateway.yaml), each
# next to nginx in one run of ../shared/bench/proxy-bench.sh, alternating ROUNDS times; prints the medians and the
# ratio of the two gateways.
#
#   scripts/build-release.sh                        # once
#   scripts/bench-fault-tolerance.sh
#
# Env: GATEHOUSE_BIN (default .build/release/gatehouse), ROUNDS (3), DURATION (s, 8), CONNS (64), PEERS (nginx).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/scripts/bench-median.sh"
BIN=${GATEHOUSE_BIN:-$root/.build/release/gatehouse}
ROUNDS=${ROUNDS:-3}
bench=${PROXY_BENCH:-$root/../shared/bench/proxy-bench.sh}
[ -x "$BIN" ] || { echo "error: no gatehouse binary at $BIN (scripts/build-release.sh)" >&2; exit 1; }
[ -f "$bench" ] || { echo "error: no peer harness at $bench" >&2; exit 1; }
work=$(mktemp -d -t bench-ft.XXXXXX)
trap 'rm -rf "$work"' EXIT

export PEERS=${PEERS:-nginx} GATEWAY_PORT=18084
DURATION=2 GATEWAY_CMD="$BIN gateway --config $root/config/bench/gateway.yaml --log-level warning" bash "$bench" >/dev/null 2>&1 || true
for round in $(seq 1 "$ROUNDS"); do
    for config in gateway gateway-fault-tolerance; do
        echo "== round $round: config/bench/$config.yaml"
        GATEWAY_CMD="$BIN gateway --config $root/config/bench/$config.yaml --log-level warning" bash "$bench" | tee -a "$work/$config.txt"
    done
done
median_of() { gateway_median "$work/$1.txt" "$2"; }  # CONFIG FIELD(rps|cpu)
plain=$(median_of gateway rps); policies=$(median_of gateway-fault-tolerance rps)
echo "== medians over $ROUNDS rounds"
printf "plain route            %9.0f req/s  %5.1f CPU-us/req\n" "$plain" "$(median_of gateway cpu)"
printf "fault-tolerance route  %9.0f req/s  %5.1f CPU-us/req\n" "$policies" "$(median_of gateway-fault-tolerance cpu)"
awk -v a="$policies" -v b="$plain" 'BEGIN { printf "ratio (policies / plain) %.3f\n", a / b }'
