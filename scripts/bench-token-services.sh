#!/usr/bin/env bash
# Benchmarks of the token services the gateway calls: introspection (RFC 7662, JSON), JWT introspection
# (RFC 9701) and token exchange (RFC 8693, an opaque token in, an ES256-signed JWT out), against
# `gatehouse demo` with the durable SQLite store.
#
#   scripts/build-release.sh                        # once
#   scripts/bench-token-services.sh
#
# For each service it runs `wrk -t1 -c$CONNS -d${DURATION}s --latency` with bench/form-post.lua and prints
# requests/s, p50, p99 and the server's CPU time per request. One token (client_credentials) is used for every
# request, as a gateway would for a hot token; every response is checked (non-200 or inactive is counted).
# Env: GATEHOUSE_BIN (default .build/release/gatehouse), CONNS (64), DURATION (s, 10), PORT (19010),
#      LOG_LEVEL (info), PIN=1 (server on CPU 0, wrk on CPU 1),
#      STORAGE=sqlite (default) or postgres (a throw-away local server, see scripts/bench-storage.sh), POOL_SIZE (16).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${GATEHOUSE_BIN:-$root/.build/release/gatehouse}
CONNS=${CONNS:-64}; DURATION=${DURATION:-10}; PORT=${PORT:-19010}
[ -x "$BIN" ] || { echo "error: no gatehouse binary at $BIN (scripts/build-release.sh)" >&2; exit 1; }
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
pin_server=(); pin_wrk=(); pinning="no pinning"
if [ -n "${PIN:-}" ] && command -v taskset >/dev/null; then pin_server=(taskset -c 0); pin_wrk=(taskset -c 1); pinning="server on CPU 0, wrk on CPU 1"; fi

work=$(mktemp -d -t bench-services.XXXXXX)
server_pid=
. "$root/scripts/bench-storage.sh"
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; bench_storage_stop; rm -rf "$work"; }
trap cleanup EXIT
bench_storage_setup "$work"

(cd "$root" && exec "${pin_server[@]}" "$BIN" demo --auth-only --data-dir "$work/data" --auth-port "$PORT" --config-dir "$BENCH_CONFIG_DIR" --log-level "${LOG_LEVEL:-info}") >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

token=$(curl -sf -u demo-service:demo-service-secret -d grant_type=client_credentials -d scope=orders:read "http://127.0.0.1:$PORT/token" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
[ -n "$token" ] || { echo "error: no token" >&2; tail "$work/server.log" >&2; exit 1; }

ticks() { awk '{print $14+$15}' "/proc/$server_pid/stat"; }
hz=$(getconf CLK_TCK)

run() {  # NAME BODY ACCEPT
    local name=$1 body=$2 accept=${3:-}
    BENCH_CLIENT_ID=gatehouse-gateway BENCH_CLIENT_SECRET=gatehouse-gateway-secret BENCH_BODY=$body BENCH_ACCEPT=$accept \
        "${pin_wrk[@]}" wrk -t1 -c"$CONNS" -d2s -s "$root/bench/form-post.lua" "http://127.0.0.1:$PORT$4" >/dev/null
    local t0; t0=$(ticks)
    BENCH_CLIENT_ID=gatehouse-gateway BENCH_CLIENT_SECRET=gatehouse-gateway-secret BENCH_BODY=$body BENCH_ACCEPT=$accept \
        "${pin_wrk[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$root/bench/form-post.lua" "http://127.0.0.1:$PORT$4" >"$work/wrk.txt"
    local t1; t1=$(ticks)
    local n rps p50 p99 bad
    n=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
    p50=$(awk '$1=="50%" {print $2}' "$work/wrk.txt")
    p99=$(awk '$1=="99%" {print $2}' "$work/wrk.txt")
    bad=$(awk -F': ' '/non-200 or inactive/ {print $3}' "$work/wrk.txt")
    printf '%-28s %10s req/s  p50 %-8s p99 %-8s  %6s CPU-us/req  bad %s\n' "$name" "$rps" "$p50" "$p99" \
        "$(( (t1 - t0) * 1000000 / hz / n ))" "$bad"
}

echo "== gatehouse token services on $BENCH_STORAGE (wrk -t1 -c$CONNS -d${DURATION}s; $pinning; $(nproc) CPUs; log level ${LOG_LEVEL:-info}) =="
run "introspection (JSON)" "token=$token" "" /introspect
run "introspection (RFC 9701 JWT)" "token=$token" "application/token-introspection+jwt" /introspect
run "token exchange (ES256, reused)" "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=$token&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt" "" /token

# Fresh signatures: the same server configuration with exchange_reuse_period: 0, so every exchange signs.
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
mkdir -p "$work/config-signed" && cp "$BENCH_CONFIG_DIR"/* "$work/config-signed/"
sed 's/exchange_reuse_period: .*/exchange_reuse_period: 0s/' "$BENCH_CONFIG_DIR/auth.yaml" >"$work/config-signed/auth.yaml"
(cd "$root" && exec "${pin_server[@]}" "$BIN" demo --auth-only --data-dir "$work/data" --auth-port "$PORT" --config-dir "$work/config-signed" --log-level "${LOG_LEVEL:-info}") >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
run "token exchange (ES256, signed)" "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=$token&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt" "" /token
