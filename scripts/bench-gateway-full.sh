#!/usr/bin/env bash
# The gateway with every policy (config/bench/gateway-full.yaml: opaque-token exchange at the authorization
# server, cached; outlier detection, retries, timeouts, health check) against the plain proxy
# (config/bench/gateway.yaml), both next to nginx, in one run of ../shared/bench/proxy-bench.sh each,
# alternating ROUNDS times. Both gateways get the same `Authorization: Bearer <opaque token>` header; the
# plain one forwards it, the full one exchanges it once and forwards the JWT.
#
#   scripts/build-release.sh                        # once
#   scripts/bench-gateway-full.sh
#
# Needs port 9000 free (the demo authorization server the config names). Env: GATEHOUSE_BIN (default
# .build/release/gatehouse), ROUNDS (2), DURATION (s, 8), CONNS (64), PEERS (nginx).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${GATEHOUSE_BIN:-$root/.build/release/gatehouse}
ROUNDS=${ROUNDS:-2}
bench=${PROXY_BENCH:-$root/../shared/bench/proxy-bench.sh}
[ -x "$BIN" ] || { echo "error: no gatehouse binary at $BIN (scripts/build-release.sh)" >&2; exit 1; }
[ -f "$bench" ] || { echo "error: no peer harness at $bench" >&2; exit 1; }

work=$(mktemp -d -t bench-full.XXXXXX)
auth_pid=
cleanup() { [ -n "$auth_pid" ] && kill "$auth_pid" 2>/dev/null && wait "$auth_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

(cd "$root" && exec "$BIN" demo --auth-only --data-dir "$work/data" --auth-port 9000 --log-level warning) >"$work/auth.log" 2>&1 &
auth_pid=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:9000/healthz >/dev/null && break; sleep 0.1; done
token=$(curl -sf -u demo-service:demo-service-secret -d grant_type=client_credentials -d scope=orders:read http://127.0.0.1:9000/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
[ -n "$token" ] || { echo "error: no token from the authorization server on :9000" >&2; tail "$work/auth.log" >&2; exit 1; }

export PEERS=${PEERS:-nginx} GATEWAY_PORT=18084 GATEWAY_HEADERS="Authorization: Bearer $token"
# A short unmeasured run first: the first run after a build is slow (page cache, binary loading).
DURATION=2 GATEWAY_CMD="$BIN gateway --config $root/config/bench/gateway.yaml --log-level warning" bash "$bench" >/dev/null 2>&1 || true
for round in $(seq 1 "$ROUNDS"); do
    for config in gateway gateway-full; do
        echo "== round $round: config/bench/$config.yaml"
        GATEWAY_CMD="$BIN gateway --config $root/config/bench/$config.yaml --log-level warning" bash "$bench" | tee -a "$work/$config.txt"
    done
done
# Medians over the rounds: requests/s and CPU per request of each gateway, and nginx's in the same runs.
summary() {  # CONFIG
    awk -v name="$1" '
        $1 == "nginx" && $3 == "rps" { n[++i] = $2; nc[i] = $9 }
        $1 == "gateway" && $3 == "rps" { g[++j] = $2; gc[j] = $9 }
        function median(a, k,   t, x, y, c) { c = 0; for (x in a) t[++c] = a[x]; for (x = 1; x <= c; x++) for (y = x + 1; y <= c; y++) if (t[y] < t[x]) { k = t[x]; t[x] = t[y]; t[y] = k }; return c % 2 ? t[(c + 1) / 2] : (t[c / 2] + t[c / 2 + 1]) / 2 }
        END { printf "%-13s median %9.0f req/s  %5.1f CPU-us/req   nginx %9.0f req/s  %5.1f CPU-us/req   ratio %.2f\n", name, median(g), median(gc), median(n), median(nc), median(g) / median(n) }
    ' "$work/$1.txt"
}
echo "== medians over $ROUNDS rounds"
summary gateway
summary gateway-full
