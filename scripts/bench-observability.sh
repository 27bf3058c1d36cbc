#!/usr/bin/env bash
# What observability costs the proxy: the plain route (config/bench/gateway.yaml: metrics always on, trace context
# propagated, nothing logged or exported) against the same route with the access log to a file and span export at
# sample_ratio 0.01 (config/bench/gateway-observability-001.yaml) and at 1.0 (gateway-observability-1.yaml), the
# admin listener's /metrics and /tracing scraped every second meanwhile. Each configuration runs in its own run of
# ../shared/bench/proxy-bench.sh next to nginx, in turn, ROUNDS times (A/B/C, A/B/C, …: drift on a shared machine
# hits all three alike); then the medians, and the median of each round's ratio to the plain route.
#
# The span "collector" is the harness's nginx backend on 18080, which answers POST /v1/traces with 200 (it accepts
# and discards the spans: what is measured is the gateway's side of the export).
#
#   scripts/build-release.sh                        # once
#   scripts/bench-observability.sh
#
# Env: GATEHOUSE_BIN (default .build/release/gatehouse), ROUNDS (3), DURATION (s, 8), CONNS (64), PEERS (nginx).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${GATEHOUSE_BIN:-$root/.build/release/gatehouse}
ROUNDS=${ROUNDS:-3}
bench=${PROXY_BENCH:-$root/../shared/bench/proxy-bench.sh}
log=/tmp/gatehouse-bench-observability.log  # the access_log path of the observability configurations
[ -x "$BIN" ] || { echo "error: no gatehouse binary at $BIN (scripts/build-release.sh)" >&2; exit 1; }
[ -f "$bench" ] || { echo "error: no peer harness at $bench" >&2; exit 1; }
command -v curl >/dev/null || { echo "error: curl is not installed" >&2; exit 1; }
# Someone else's server on a benchmark port would be measured instead (the harness only waits for the port to open).
for port in 18080 18081 18084 18094; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "error: port $port is already in use (another benchmark?)" >&2; exit 1; fi
done

work=$(mktemp -d -t bench-observability.XXXXXX)
scraper=
cleanup() { [ -n "$scraper" ] && kill "$scraper" 2>/dev/null && wait "$scraper" 2>/dev/null; rm -rf "$work" "$log"; }
trap cleanup EXIT

# A Prometheus-like scraper of the admin listener (when the configuration has one): /metrics every second, and the
# exporter's counts (/tracing) kept for the report.
scrape() {  # OUT
    while sleep 1; do
        curl -sf -o /dev/null http://127.0.0.1:18094/metrics 2>/dev/null || continue
        curl -sf http://127.0.0.1:18094/tracing -o "$1.tmp" 2>/dev/null && mv "$1.tmp" "$1"
    done
}

export PEERS=${PEERS:-nginx} GATEWAY_PORT=18084
configs=(gateway gateway-observability-001 gateway-observability-1)
# A short unmeasured run first: the first run after a build is slow (page cache, binary loading).
DURATION=2 GATEWAY_CMD="$BIN gateway --config $root/config/bench/gateway.yaml --log-level warning" bash "$bench" >/dev/null 2>&1 || true
for round in $(seq 1 "$ROUNDS"); do
    for config in "${configs[@]}"; do
        echo "== round $round: config/bench/$config.yaml"
        rm -f "$log" "$work/tracing.json"
        scrape "$work/tracing.json" & scraper=$!
        GATEWAY_CMD="$BIN gateway --config $root/config/bench/$config.yaml --log-level warning" bash "$bench" | tee -a "$work/$config.txt"
        kill "$scraper" 2>/dev/null; wait "$scraper" 2>/dev/null || true; scraper=
        if [ "$config" != gateway ]; then
            # The premise: the features were on (lines written, spans recorded and exported).
            echo "   access log: $(wc -l < "$log") lines; exporter: $(cat "$work/tracing.json" 2>/dev/null || echo 'no /tracing read')" | tee -a "$work/$config.txt"
        fi
    done
done

# Medians over the rounds: requests/s, p99 and CPU per request of each gateway configuration, nginx's in the same
# runs, and the median over rounds of (this configuration's req/s) / (the plain route's req/s in the same round).
summary() {  # CONFIG
    awk -v name="$1" '
        FNR == 1 { file++ }
        file == 1 && $1 == "gateway" && $3 == "rps" { base[++b] = $2 }
        file == 2 && $1 == "nginx" && $3 == "rps" { n[++i] = $2 }
        file == 2 && $1 == "gateway" && $3 == "rps" { g[++j] = $2; p99[j] = $7; gc[j] = $9; ratio[j] = $2 / base[j] }
        function median(a,   t, x, y, c, k) { c = 0; for (x in a) t[++c] = a[x] + 0; for (x = 1; x <= c; x++) for (y = x + 1; y <= c; y++) if (t[y] < t[x]) { k = t[x]; t[x] = t[y]; t[y] = k }; return c % 2 ? t[(c + 1) / 2] : (t[c / 2] + t[c / 2 + 1]) / 2 }
        END {
            rounds = ""; for (x = 1; x <= j; x++) rounds = rounds sprintf("%s%.0f", x > 1 ? " " : "", g[x])
            printf "%-26s median %7.0f req/s  %5.1f CPU-us/req  (rounds: %s)  nginx %7.0f req/s  ratio to plain %.3f\n", name, median(g), median(gc), rounds, median(n), median(ratio)
        }
    ' "$work/gateway.txt" "$work/$1.txt"
}
echo "== medians over $ROUNDS rounds (ratio: median of each round's req/s over the plain route's in that round)"
for config in "${configs[@]}"; do summary "$config"; done
