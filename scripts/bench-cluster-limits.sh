#!/usr/bin/env bash
# The cluster rate limiter against the local one (issue 14), in the same run: config/bench/gateway-local-limit.yaml
# and config/bench/gateway-cluster-limit.yaml (one per-IP limit far above the load; `scope: cluster` decides each
# request with one EVALSHA on a redis-server this script starts on 127.0.0.1:16398), alternating ROUNDS times through
# ../shared/bench/proxy-bench.sh (wrk, the gateway on one event loop, nginx as the backend). Prints per run the
# requests/s and the gateway's CPU per request, and for the cluster runs Redis's EVALSHA calls and the gateway's
# Redis writes (round trips; pipelined decisions share one) per request; then the medians and the ratio.
#
#   scripts/build-release.sh          # once
#   scripts/bench-cluster-limits.sh   # ROUNDS=3 DURATION=8 CONNS=64
#
# Env: GATEHOUSE_BIN (default .build/release/gatehouse), ROUNDS (3), DURATION (s, 8), CONNS (64), PEERS (nginx),
# CLUSTER_CONFIG (default config/bench/gateway-cluster-limit.yaml: another file for the cluster runs, e.g. another
# pool_size; it must keep the ports and the redis URL).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${GATEHOUSE_BIN:-$root/.build/release/gatehouse}
ROUNDS=${ROUNDS:-3}
bench=${PROXY_BENCH:-$root/../shared/bench/proxy-bench.sh}
[ -x "$BIN" ] || { echo "error: no gatehouse binary at $BIN (scripts/build-release.sh)" >&2; exit 1; }
[ -f "$bench" ] || { echo "error: no proxy harness at $bench" >&2; exit 1; }
# The harness's ports are fixed: another benchmark running now would meet this one there.
for port in 18080 18081 18084 18094 16398; do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "error: 127.0.0.1:$port is in use (another benchmark running?)" >&2; exit 1; fi
done
work=$(mktemp -d -t bench-cluster.XXXXXX)
redis-server --port 16398 --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >/dev/null 2>&1 &
redis=$!
poller=
trap 'kill $redis 2>/dev/null; [ -n "$poller" ] && kill $poller 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ "$(redis-cli -p 16398 PING 2>/dev/null)" = PONG ] && break; sleep 0.05; done
[ "$(redis-cli -p 16398 PING 2>/dev/null)" = PONG ] || { echo "error: redis-server on 127.0.0.1:16398 did not answer PING within 5 s" >&2; exit 1; }

evalsha_calls() { redis-cli -p 16398 INFO commandstats | tr -d '\r' | awk -F'[=,:]' '/^cmdstat_evalsha:/ {print $3; found=1} END {if (!found) print 0}'; }

# nginx runs beside as the harness's reference (an empty PEERS would mean every peer).
export PEERS=${PEERS:-nginx} GATEWAY_PORT=18084
for round in $(seq 1 "$ROUNDS"); do
    for scope in local cluster; do
        echo "== round $round: scope $scope"
        before=$(evalsha_calls)
        # The gateway's last /rate-limits while it runs (its Redis writes), read after wrk has finished.
        ( while :; do curl -s -m 1 http://127.0.0.1:18094/rate-limits >"$work/stats.tmp" 2>/dev/null && [ -s "$work/stats.tmp" ] && mv "$work/stats.tmp" "$work/stats.json"; sleep 0.3; done ) &
        poller=$!
        rm -f "$work/stats.json"
        config=$root/config/bench/gateway-$scope-limit.yaml
        [ "$scope" = cluster ] && config=${CLUSTER_CONFIG:-$config}
        GATEWAY_CMD="$BIN gateway --config $config --log-level warning" bash "$bench" | tee "$work/out.txt"
        kill $poller 2>/dev/null; wait $poller 2>/dev/null || true; poller=
        line=$(awk '$1 == "gateway" && $3 == "rps"' "$work/out.txt")
        rps=$(awk '{print $2}' <<<"$line"); cpu=$(awk '{print $9}' <<<"$line")
        calls=$(( $(evalsha_calls) - before ))
        decisions=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(l["allowed"]+l["limited"]+l["delayed"] for r in d["routes"] for l in r["limits"]))' "$work/stats.json" 2>/dev/null || echo 0)
        writes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("redis",{}).get("writes",0))' "$work/stats.json" 2>/dev/null || echo 0)
        echo "$scope $rps $cpu $decisions $calls $writes" >>"$work/results.txt"
        awk -v s="$scope" -v d="$decisions" -v c="$calls" -v w="$writes" 'BEGIN {
            if (d > 0) printf "%s: %d decisions, EVALSHA per request %.3f, Redis writes (round trips) per request %.3f\n", s, d, c / d, w / d }'
    done
done
median() {  # SCOPE COLUMN
    awk -v s="$1" -v c="$2" '$1 == s { v[++n] = $c } END { for (x = 1; x <= n; x++) for (y = x + 1; y <= n; y++) if (v[y] < v[x]) { t = v[x]; v[x] = v[y]; v[y] = t }; print (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) }' "$work/results.txt"
}
echo "== medians over $ROUNDS rounds (requests/s, gateway CPU µs per request, EVALSHA and Redis writes per request)"
cat "$work/results.txt" | awk '{print "   run:", $0}'
for scope in local cluster; do
    printf "%-8s %9.0f req/s  %6.1f CPU-us/req\n" "$scope" "$(median $scope 2)" "$(median $scope 3)"
done
awk '$1 == "cluster" && $4 > 0 { e[++n] = $5 / $4; w[n] = $6 / $4 } END { for (i = 1; i <= n; i++) printf "cluster run %d: %.3f EVALSHA, %.3f writes per request\n", i, e[i], w[i] }' "$work/results.txt"
awk -v a="$(median cluster 2)" -v b="$(median local 2)" 'BEGIN { printf "ratio (cluster / local requests/s) %.3f\n", a / b }'
