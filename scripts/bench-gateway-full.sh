#!/usr/bin/env bash
# The gateway with every policy (config/bench/gateway-full.yaml: opaque-token exchange at the authorization
# server, cached; outlier detection, retries, timeouts, health check) against the plain proxy
# (config/bench/gateway.yaml), both next to nginx, in one run of ../shared/bench/proxy-bench.sh each,
# alternating ROUNDS times. Both gateways get the same `Authorization: Bearer <opaque token>` header; the
# plain one forwards it, the full one exchanges it once and forwards the JWT.
#
#   swift build -c release --product gatehouse      # once
#   scripts/bench-gateway-full.sh
#
# Needs port 9000 free (the demo authorization server the config names). Env: GATEHOUSE_BIN (default
# .build/release/gatehouse), ROUNDS (2), DURATION (s, 8), CONNS (64), PEERS (nginx).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${GATEHOUSE_BIN:-$root/.build/release/gatehouse}
ROUNDS=${ROUNDS:-2}
bench=${PROXY_BENCH:-$root/../shared/bench/proxy-bench.sh}
[ -x "$BIN" ] || { echo "error: no gatehouse binary at $BIN (swift build -c release --product gatehouse)" >&2; exit 1; }
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
for round in $(seq 1 "$ROUNDS"); do
    for config in gateway gateway-full; do
        echo "== round $round: config/bench/$config.yaml"
        GATEWAY_CMD="$BIN gateway --config $root/config/bench/$config.yaml --log-level warning" bash "$bench"
    done
done
