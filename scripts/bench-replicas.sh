#!/usr/bin/env bash
# Replicated authorization servers: client_credentials tokens/s and introspections/s on SQLite (one server),
# PostgreSQL with one replica, and PostgreSQL with two replicas (the load split across both: two wrk processes with
# half the connections each, their requests/s summed), in the same run, alternating the three configurations over
# ROUNDS rounds and printing each round and the medians (other work on a shared machine moves single runs).
#
#   scripts/build-release.sh                        # once
#   scripts/bench-replicas.sh
#   ROUNDS=5 DURATION=10 scripts/bench-replicas.sh
#
# Servers are `gatehouse demo --auth-only` (config/demo; for PostgreSQL its storage section is replaced as in
# scripts/bench-storage.sh, one throw-away server on loopback with fsync off, shared by both replicas). Tokens are
# CLIENT's: demo-service (default) gets opaque tokens, one row each; demo-jwt gets self-contained JWTs, no row.
# Introspection asks for one hot token of that client (as a gateway does), so it mostly measures the server's token
# cache, the store only on a miss.
# Env: GATEHOUSE_BIN (default .build/release/gatehouse), CONNS (64, split across replicas), DURATION (s, 8),
#      WARMUP (s, 2), ROUNDS (3), PORT (19100; replicas use PORT and PORT+1), POOL_SIZE (16), CLIENT (demo-service),
#      CLIENT_SECRET (CLIENT-secret).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${GATEHOUSE_BIN:-$root/.build/release/gatehouse}
CONNS=${CONNS:-64}; DURATION=${DURATION:-8}; WARMUP=${WARMUP:-2}; ROUNDS=${ROUNDS:-3}; PORT=${PORT:-19100}
CLIENT=${CLIENT:-demo-service}; CLIENT_SECRET=${CLIENT_SECRET:-$CLIENT-secret}
[ -x "$BIN" ] || { echo "error: no gatehouse binary at $BIN (scripts/build-release.sh)" >&2; exit 1; }
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null

work=$(mktemp -d -t bench-replicas.XXXXXX)
pids=()
. "$root/scripts/bench-storage.sh"
stop_servers() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
cleanup() { stop_servers; bench_storage_stop; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

STORAGE=postgres bench_storage_setup "$work"
pg_config=$BENCH_CONFIG_DIR
pg_label=$BENCH_STORAGE

start_server() {  # PORT CONFIG_DIR DATA_DIR
    # Each replica its own admin port too (the demo opens the authorization server's admin listener).
    (cd "$root" && exec "$BIN" demo --auth-only --data-dir "$3" --auth-port "$1" --auth-admin-port $(($1 + 50)) --config-dir "$2" --log-level warning) >"$3.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.05; done
    echo "error: server on $1 did not start" >&2; tail -n 20 "$3.log" >&2; exit 1
}

wrk_rps() {  # LUA URL CONNECTIONS SECONDS [env...] -> requests/s (fails on any non-200 or inactive answer)
    local lua=$1 url=$2 conns=$3 seconds=$4 out
    out=$(wrk -t1 -c"$conns" -d"${seconds}s" -s "$lua" "$url" 2>&1)
    if grep -Eq 'non-200 responses: [1-9]|non-200 or inactive: [1-9]' <<<"$out"; then echo "error: bad answers: $out" >&2; exit 1; fi
    awk '/Requests\/sec/ {print $2}' <<<"$out"
}

# Runs LUA against the first COUNT servers at once (CONNS split), prints the summed requests/s.
load() {  # LUA PATH COUNT SECONDS
    local lua=$1 path=$2 count=$3 seconds=$4 i
    local per=$((CONNS / count)) runs=()
    for i in $(seq 0 $((count - 1))); do
        wrk_rps "$lua" "http://127.0.0.1:$((PORT + i))$path" "$per" "$seconds" >"$work/rps.$i" &
        runs+=($!)
    done
    for run in "${runs[@]}"; do wait "$run" || { echo "error: a wrk run failed" >&2; exit 1; }; done
    local total=0
    for i in $(seq 0 $((count - 1))); do total=$(awk -v a="$total" -v b="$(cat "$work/rps.$i")" 'BEGIN {printf "%.0f", a + b}'); done
    echo "$total"
}

measure() {  # LABEL CONFIG_DIR COUNT ROUND
    local label=$1 config=$2 count=$3 round=$4 i
    for i in $(seq 0 $((count - 1))); do start_server $((PORT + i)) "$config" "$work/data-$round-$label-$i"; done
    local token
    token=$(curl -sf -u "$CLIENT:$CLIENT_SECRET" -d grant_type=client_credentials -d scope=orders:read "http://127.0.0.1:$PORT/token" \
        | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
    [ -n "$token" ] || { echo "error: no token from $label" >&2; exit 1; }
    export BENCH_CLIENT_ID=$CLIENT BENCH_CLIENT_SECRET=$CLIENT_SECRET
    load "$root/bench/token.lua" /token "$count" "$WARMUP" >/dev/null
    local tokens; tokens=$(load "$root/bench/token.lua" /token "$count" "$DURATION")
    export BENCH_CLIENT_ID=gatehouse-gateway BENCH_CLIENT_SECRET=gatehouse-gateway-secret BENCH_BODY="token=$token" BENCH_ACCEPT=
    load "$root/bench/form-post.lua" /introspect "$count" "$WARMUP" >/dev/null
    local introspections; introspections=$(load "$root/bench/form-post.lua" /introspect "$count" "$DURATION")
    unset BENCH_CLIENT_ID BENCH_CLIENT_SECRET BENCH_BODY BENCH_ACCEPT
    stop_servers
    printf '%s\t%s\t%s\t%s\n' "$round" "$label" "$tokens" "$introspections" | tee -a "$work/results.tsv"
}

echo "== replicated authorization servers: wrk -t1, $CONNS connections in all, ${DURATION}s per figure after ${WARMUP}s warm-up; $(nproc) CPUs =="
echo "postgres: $pg_label; client: $CLIENT"
printf 'round\tconfiguration\ttokens/s\tintrospections/s\n'
for round in $(seq 1 "$ROUNDS"); do
    # Alternate the order each round, so no configuration always runs first (or last) on a busy machine.
    if [ $((round % 2)) -eq 1 ]; then order="sqlite pg1 pg2"; else order="pg2 pg1 sqlite"; fi
    for configuration in $order; do
        case $configuration in
        sqlite) measure sqlite "$root/config/demo" 1 "$round" ;;
        pg1) measure postgres-1-replica "$pg_config" 1 "$round" ;;
        pg2) measure postgres-2-replicas "$pg_config" 2 "$round" ;;
        esac
    done
done
echo
echo "medians over $ROUNDS rounds:"
python3 - "$work/results.tsv" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
for label in ("sqlite", "postgres-1-replica", "postgres-2-replicas"):
    mine = [r for r in rows if r[1] == label]
    tokens = statistics.median(float(r[2]) for r in mine)
    intro = statistics.median(float(r[3]) for r in mine)
    print(f"  {label:<22} tokens/s {tokens:>8.0f}   introspections/s {intro:>8.0f}   ({len(mine)} rounds)")
PY
