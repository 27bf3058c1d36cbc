#!/usr/bin/env bash
# Heap allocations per proxied request, counted in the gateway process (LD_PRELOAD counter,
# scripts/bench/alloc_counter.c) over a measured wrk run after a warm-up: the plain proxy
# (config/bench/gateway.yaml) and the route with a cached opaque token (config/bench/gateway-full.yaml,
# the demo authorization server on :9000 exchanging the token once). The count covers both sides of an
# exchange (the downstream request and response, the upstream request and response). Further runs: the
# fault-tolerance route (config/bench/gateway-fault-tolerance.yaml), the access log to a file
# (config/bench/gateway-access-log.yaml; metrics are always on), and span export at sample_ratio 0.01 and 1.0
# (config/bench/gateway-tracing-001.yaml, gateway-tracing-1.yaml), and all of them together
# (config/bench/gateway-observability-001.yaml, gateway-observability-1.yaml). And one refused request: the token
# route without a token (401 from the gateway, keep-alive), the cost of a reply of the gateway's own. And the rate
# limit decided locally against the same limit decided by Redis (config/bench/gateway-local-limit.yaml,
# gateway-cluster-limit.yaml; a redis-server this script starts on 127.0.0.1:16398): one EVALSHA per request.
#
#   scripts/build-release.sh                # once
#   scripts/bench-allocations.sh
#   RUNS=limits scripts/bench-allocations.sh    # only the local and cluster limit runs
#
# Env: GATEHOUSE_BIN (default .build/release/gatehouse), REQUESTS_SECONDS (wrk duration, 5), CONNS (16),
# RUNS (all | limits).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${GATEHOUSE_BIN:-$root/.build/release/gatehouse}
SECONDS_RUN=${REQUESTS_SECONDS:-5}
CONNS=${CONNS:-16}
RUNS=${RUNS:-all}
case $RUNS in all|limits) ;; *) echo "error: RUNS is all or limits, not $RUNS" >&2; exit 1;; esac
[ -x "$BIN" ] || { echo "error: no gatehouse binary at $BIN (scripts/build-release.sh)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "error: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
command -v nginx >/dev/null || { echo "error: nginx is not installed (apt-get install nginx), it serves as the backend" >&2; exit 1; }

# Someone else's server on one of these ports would be measured instead (wait_port only waits for it to open).
for port in 18080 18084 18094 9000 16398; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "error: port $port is already in use (another benchmark?)" >&2; exit 1; fi
done

work=$(mktemp -d -t bench-alloc.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "error: nothing on port $1" >&2; exit 1; }

gcc -O2 -shared -fPIC -o "$work/alloc_counter.so" "$root/scripts/bench/alloc_counter.c" -ldl

mkdir -p "$work/nginx"
cat > "$work/backend.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $work/backend.pid; error_log $work/backend.err;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:18080; location / { default_type text/plain; return 200 "hello from the backend"; } } }
CONF
nginx -c "$work/backend.conf" -e "$work/backend.err" >/dev/null 2>&1 & pids+=($!)
wait_port 18080

redis-server --port 16398 --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do [ "$(redis-cli -p 16398 PING 2>/dev/null)" = PONG ] && break; sleep 0.05; done

(cd "$root" && exec "$BIN" demo --auth-only --data-dir "$work/data" --auth-port 9000 --log-level warning) >"$work/auth.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:9000/healthz >/dev/null && break; sleep 0.1; done
token=$(curl -sf -u demo-service:demo-service-secret -d grant_type=client_credentials -d scope=orders:read http://127.0.0.1:9000/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
[ -n "$token" ] || { echo "error: no token from the authorization server on :9000" >&2; exit 1; }

count() {  # PID -> allocations so far
    rm -f "$work/count"
    kill -USR2 "$1"
    for _ in $(seq 1 50); do [ -s "$work/count" ] && break; sleep 0.05; done
    awk '{print $2}' "$work/count"
}

measure() {  # CONFIG LABEL [HEADER]: HEADER is sent with every request (default: the bearer token)
    local header=${3:-"Authorization: Bearer $token"}
    ALLOC_COUNTER_FILE="$work/count" LD_PRELOAD="$work/alloc_counter.so" "$BIN" gateway --config "$root/config/bench/$1.yaml" --log-level warning >"$work/gw.log" 2>&1 &
    local pid=$!
    wait_port 18084
    wrk -t1 -c"$CONNS" -d2s -H "$header" http://127.0.0.1:18084/ >/dev/null  # warm-up: pools, caches
    local before after requests
    before=$(count "$pid")
    requests=$(wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" -H "$header" http://127.0.0.1:18084/ | awk '/requests in/ {print $1}')
    after=$(count "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    awk -v label="$2" -v a="$before" -v b="$after" -v n="$requests" 'BEGIN { printf "%-28s %10d requests %12d allocations  %6.2f allocations/request\n", label, n, b - a, (b - a) / n }'
}

if [ "$RUNS" = limits ]; then
    # A per-IP limit far above the load: every request is allowed, decided by the local GCRA or by one EVALSHA.
    measure gateway-local-limit "local rate limit"
    measure gateway-cluster-limit "cluster rate limit (Redis)"
    exit 0
fi
measure gateway "plain route"
measure gateway-full "cached opaque token route"
# A refused request: the token route without a token, answered 401 by the gateway itself (keep-alive), whose
# reply is prebuilt with the route (only the request id is written per request).
measure gateway-full "refused: no token (401)" "X-Bench: refused"
measure gateway-fault-tolerance "fault-tolerance route (limit, breaker, admission)"
rm -f /tmp/gatehouse-bench-access.log
measure gateway-access-log "plain route + access log"
echo "access log: $(wc -l < /tmp/gatehouse-bench-access.log) lines in /tmp/gatehouse-bench-access.log"
rm -f /tmp/gatehouse-bench-access.log
# Tracing: the plain route propagates trace context on every request (traceresponse, traceparent upstream) and
# exports nothing; these add span export at two sample ratios.
measure gateway-tracing-001 "tracing, sample 0.01"
measure gateway-tracing-1 "tracing, sample 1.0"
# Everything together (scripts/bench-observability.sh's configurations): metrics, the access log to a file and span
# export, at both sample ratios.
rm -f /tmp/gatehouse-bench-observability.log
measure gateway-observability-001 "access log + tracing 0.01"
rm -f /tmp/gatehouse-bench-observability.log
measure gateway-observability-1 "access log + tracing 1.0"
rm -f /tmp/gatehouse-bench-observability.log
measure gateway-local-limit "local rate limit"
measure gateway-cluster-limit "cluster rate limit (Redis)"
