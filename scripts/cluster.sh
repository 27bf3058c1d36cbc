#!/usr/bin/env bash
# The scale-out topology on loopback, without Docker (issue 14): PostgreSQL and redis-server from Debian's packages
# on temporary data directories, two authorization servers sharing that database (and one signing-key directory),
# the demo backend, two gateways sharing Redis for a `scope: cluster` rate limit, and HAProxy in front of both
# pairs, health-checking every server's admin /readyz.
#
#   scripts/cluster.sh up       # start everything, wait until all is ready, print the addresses
#   scripts/cluster.sh status   # each process, its pid and its health; exit 1 if any is down
#   scripts/cluster.sh down     # stop everything and remove the directory
#
# State (configs rendered from config/cluster/, logs, pids, data) lives in $CLUSTER_DIR (default: a new temporary
# directory, recorded in $CLUSTER_STATE_FILE — default ${TMPDIR:-/tmp}/gatehouse-cluster.state — so that status and
# down find it). Ports are free loopback ports picked at `up` (in $CLUSTER_DIR/ports.env).
# Env: GATEHOUSE_BIN (default .build/debug/gatehouse, else .build/release/gatehouse), CLUSTER_DIR, CLUSTER_STATE_FILE.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_FILE=${CLUSTER_STATE_FILE:-${TMPDIR:-/tmp}/gatehouse-cluster.state}
# Start order; `down` stops in reverse.
SERVICES=(postgres redis auth1 auth2 backend gateway1 gateway2 haproxy)

die() { echo "cluster.sh: $*" >&2; exit 1; }

binary() {
    if [ -n "${GATEHOUSE_BIN:-}" ]; then echo "$GATEHOUSE_BIN"; return; fi
    for candidate in "$root/.build/debug/gatehouse" "$root/.build/release/gatehouse"; do
        [ -x "$candidate" ] && { echo "$candidate"; return; }
    done
    die "no gatehouse binary: swift build (or set GATEHOUSE_BIN)"
}

# The cluster's directory: $CLUSTER_DIR, else the one the state file records.
cluster_dir() {
    if [ -n "${CLUSTER_DIR:-}" ]; then echo "$CLUSTER_DIR"; return; fi
    [ -f "$STATE_FILE" ] && cat "$STATE_FILE"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# The HTTP status of a GET (000 when nothing answers).
http_status() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

wait_for() {  # name url [expected status] — polls up to 60 s; fails with the service's log tail
    local name=$1 url=$2 want=${3:-200}
    for _ in $(seq 600); do
        [ "$(http_status "$url")" = "$want" ] && return 0
        if [ -f "$dir/run/$name.pid" ] && ! alive "$dir/run/$name.pid"; then break; fi
        sleep 0.1
    done
    echo "cluster.sh: $name did not answer $want at $url" >&2
    tail -n 30 "$dir/logs/$name.log" >&2 2>/dev/null || true
    exit 1
}

start() {  # name command… — in its own session, log and pid under $dir
    local name=$1; shift
    setsid "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/run/$name.pid"
}

render() {  # template output NAME PORT ADMIN_PORT
    sed -e "s|@NAME@|$3|g" -e "s|@PORT@|$4|g" -e "s|@ADMIN_PORT@|$5|g" \
        -e "s|@AUTH_LB_PORT@|$AUTH_LB_PORT|g" -e "s|@GATEWAY_LB_PORT@|$GATEWAY_LB_PORT|g" \
        -e "s|@AUTH1_PORT@|$AUTH1_PORT|g" -e "s|@AUTH1_ADMIN_PORT@|$AUTH1_ADMIN_PORT|g" \
        -e "s|@AUTH2_PORT@|$AUTH2_PORT|g" -e "s|@AUTH2_ADMIN_PORT@|$AUTH2_ADMIN_PORT|g" \
        -e "s|@GW1_PORT@|$GW1_PORT|g" -e "s|@GW1_ADMIN_PORT@|$GW1_ADMIN_PORT|g" \
        -e "s|@GW2_PORT@|$GW2_PORT|g" -e "s|@GW2_ADMIN_PORT@|$GW2_ADMIN_PORT|g" \
        -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
        -e "s|@HAPROXY_STATS_PORT@|$HAPROXY_STATS_PORT|g" -e "s|@PG_URL@|$PGTEMP_URL|g" \
        -e "s|@PG_PASSWORD_FILE@|$PGTEMP_PASSWORD_FILE|g" -e "s|@KEY_DIR@|$dir/keys|g" -e "s|@DIR@|$dir|g" \
        "$root/config/cluster/$1" >"$2"
}

health_url() {  # name → the URL whose 200 means healthy
    case $1 in
    auth1) echo "http://127.0.0.1:$AUTH1_ADMIN_PORT/readyz" ;;
    auth2) echo "http://127.0.0.1:$AUTH2_ADMIN_PORT/readyz" ;;
    gateway1) echo "http://127.0.0.1:$GW1_ADMIN_PORT/readyz" ;;
    gateway2) echo "http://127.0.0.1:$GW2_ADMIN_PORT/readyz" ;;
    backend) echo "http://127.0.0.1:$BACKEND_PORT/healthz" ;;
    haproxy) echo "http://127.0.0.1:$HAPROXY_STATS_PORT/healthz" ;;
    esac
}

up() {
    local bin; bin=$(binary)
    for tool in haproxy redis-server redis-cli curl; do command -v "$tool" >/dev/null || die "$tool is not installed (scripts/install-test-deps.sh)"; done
    dir=$(cluster_dir || true)
    if [ -n "$dir" ] && [ -d "$dir/run" ]; then
        for name in "${SERVICES[@]}"; do alive "$dir/run/$name.pid" && die "already up in $dir (scripts/cluster.sh down first)"; done
    fi
    dir=${CLUSTER_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-cluster.XXXXXX")}
    mkdir -p "$dir"/{logs,run,conf,keys,auth1,auth2,redis}
    echo "$dir" >"$STATE_FILE"
    # If anything fails from here on (an error, an unset variable, a wait that times out), stop what was started.
    trap 'if [ -z "${up_done:-}" ]; then echo "cluster.sh: up failed; stopping what was started" >&2; down_dir "$dir"; fi' EXIT
    if [ "$(id -u)" -eq 0 ]; then
        # PostgreSQL runs as nobody (postgres-temp.sh), which must be able to reach its directory under ours.
        local up_to=$dir
        while [ "$up_to" != / ]; do
            [ -n "$(find "$up_to" -maxdepth 0 -perm -o+x 2>/dev/null)" ] || [ "$up_to" = "$dir" ] \
                || die "nobody cannot traverse $up_to (PostgreSQL runs as nobody under root): chmod o+x it or pick another CLUSTER_DIR"
            up_to=$(dirname "$up_to")
        done
        chmod o+x "$dir"
    fi

    read -r AUTH_LB_PORT GATEWAY_LB_PORT AUTH1_PORT AUTH1_ADMIN_PORT AUTH2_PORT AUTH2_ADMIN_PORT GW1_PORT GW1_ADMIN_PORT \
        GW2_PORT GW2_ADMIN_PORT BACKEND_PORT REDIS_PORT HAPROXY_STATS_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(13):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
    )
    cat >"$dir/ports.env" <<EOF
AUTH_LB_PORT=$AUTH_LB_PORT GATEWAY_LB_PORT=$GATEWAY_LB_PORT AUTH1_PORT=$AUTH1_PORT AUTH1_ADMIN_PORT=$AUTH1_ADMIN_PORT
AUTH2_PORT=$AUTH2_PORT AUTH2_ADMIN_PORT=$AUTH2_ADMIN_PORT GW1_PORT=$GW1_PORT GW1_ADMIN_PORT=$GW1_ADMIN_PORT GW2_PORT=$GW2_PORT
GW2_ADMIN_PORT=$GW2_ADMIN_PORT BACKEND_PORT=$BACKEND_PORT REDIS_PORT=$REDIS_PORT HAPROXY_STATS_PORT=$HAPROXY_STATS_PORT
EOF

    # PostgreSQL (its own pid file is in its data directory; postgres-temp.sh stops it).
    local pg; pg=$("$root/scripts/postgres-temp.sh" start "$dir/postgres") || die "PostgreSQL did not start"
    eval "$pg"
    echo "PGTEMP_URL=$PGTEMP_URL PGTEMP_PASSWORD_FILE=$PGTEMP_PASSWORD_FILE" >>"$dir/ports.env"
    start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir/redis"
    for _ in $(seq 100); do [ "$(redis-cli -p "$REDIS_PORT" PING 2>/dev/null)" = PONG ] && break; sleep 0.1; done
    [ "$(redis-cli -p "$REDIS_PORT" PING 2>/dev/null)" = PONG ] || die "redis-server did not start (see $dir/logs/redis.log)"

    render auth.yaml "$dir/conf/auth1.yaml" auth1 "$AUTH1_PORT" "$AUTH1_ADMIN_PORT"
    render auth.yaml "$dir/conf/auth2.yaml" auth2 "$AUTH2_PORT" "$AUTH2_ADMIN_PORT"
    render gateway.yaml "$dir/conf/gateway1.yaml" gateway1 "$GW1_PORT" "$GW1_ADMIN_PORT"
    render gateway.yaml "$dir/conf/gateway2.yaml" gateway2 "$GW2_PORT" "$GW2_ADMIN_PORT"
    render haproxy.cfg "$dir/conf/haproxy.cfg" haproxy 0 0

    # One replica first: it migrates the database and creates the signing key the other then loads.
    start auth1 "$bin" auth --config "$dir/conf/auth1.yaml" --data-dir "$dir/auth1"
    wait_for auth1 "$(health_url auth1)"
    start auth2 "$bin" auth --config "$dir/conf/auth2.yaml" --data-dir "$dir/auth2"
    start backend "$bin" demo-backend --port "$BACKEND_PORT" --issuer "http://127.0.0.1:$AUTH_LB_PORT" --audience "http://127.0.0.1:$GATEWAY_LB_PORT"
    start haproxy haproxy -f "$dir/conf/haproxy.cfg" -db
    wait_for auth2 "$(health_url auth2)"
    wait_for backend "$(health_url backend)"
    wait_for haproxy "$(health_url haproxy)"
    # The gateways read the authorization server's metadata through HAProxy.
    wait_for haproxy "http://127.0.0.1:$AUTH_LB_PORT/.well-known/oauth-authorization-server"
    start gateway1 "$bin" gateway --config "$dir/conf/gateway1.yaml"
    start gateway2 "$bin" gateway --config "$dir/conf/gateway2.yaml"
    wait_for gateway1 "$(health_url gateway1)"
    wait_for gateway2 "$(health_url gateway2)"
    wait_for haproxy "http://127.0.0.1:$GATEWAY_LB_PORT/public/ready"
    up_done=1

    cat <<EOF
Gatehouse cluster up (state in $dir)
  HAProxy → authorization servers  http://127.0.0.1:$AUTH_LB_PORT   (issuer; replicas :$AUTH1_PORT and :$AUTH2_PORT, admin :$AUTH1_ADMIN_PORT and :$AUTH2_ADMIN_PORT)
  HAProxy → gateways               http://127.0.0.1:$GATEWAY_LB_PORT   (/public/ no token, /api/ bearer token; replicas :$GW1_PORT and :$GW2_PORT, admin :$GW1_ADMIN_PORT and :$GW2_ADMIN_PORT)
  HAProxy stats                    http://127.0.0.1:$HAPROXY_STATS_PORT/stats
  demo backend                     http://127.0.0.1:$BACKEND_PORT
  PostgreSQL                       $PGTEMP_URL (password in $PGTEMP_PASSWORD_FILE)
  Redis                            redis://127.0.0.1:$REDIS_PORT
Try: curl -s -u demo-service:demo-service-secret -d grant_type=client_credentials http://127.0.0.1:$AUTH_LB_PORT/token
EOF
}

load_ports() {
    [ -f "$dir/ports.env" ] || die "no cluster state in $dir"
    # shellcheck disable=SC1091
    . "$dir/ports.env"
}

status() {
    dir=$(cluster_dir || true)
    [ -n "$dir" ] && [ -d "$dir" ] || { echo "no cluster (no CLUSTER_DIR and no $STATE_FILE)"; exit 1; }
    load_ports
    local healthy=0
    printf '%-9s %-8s %-8s %s\n' SERVICE PID STATE HEALTH
    for name in "${SERVICES[@]}"; do
        local pid="-" state=stopped health="-"
        case $name in
        postgres)
            if [ -f "$dir/postgres/data/postmaster.pid" ]; then pid=$(head -n1 "$dir/postgres/data/postmaster.pid"); fi
            if [ "$pid" != "-" ] && kill -0 "$pid" 2>/dev/null; then
                state=running
                health=$(PGPASSWORD=$(cat "$PGTEMP_PASSWORD_FILE") psql "$PGTEMP_URL" -tAc 'SELECT 1' 2>/dev/null | grep -qx 1 && echo "SELECT 1 ok" || echo "no answer")
            fi
            ;;
        redis)
            if alive "$dir/run/redis.pid"; then
                pid=$(cat "$dir/run/redis.pid"); state=running
                health="PING $(redis-cli -p "$REDIS_PORT" PING 2>/dev/null || echo failed)"
            fi
            ;;
        *)
            if alive "$dir/run/$name.pid"; then
                pid=$(cat "$dir/run/$name.pid"); state=running
                health="$(health_url "$name") $(http_status "$(health_url "$name")")"
            fi
            ;;
        esac
        printf '%-9s %-8s %-8s %s\n' "$name" "$pid" "$state" "$health"
        case $health in *" 200" | "SELECT 1 ok" | "PING PONG") ;; *) healthy=1 ;; esac
    done
    return $healthy
}

stop_pid_file() {  # name: SIGTERM, up to 15 s, then SIGKILL
    local file="$dir/run/$1.pid"
    alive "$file" || return 0
    local pid; pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || true
    [ -n "${CLUSTER_VERBOSE:-}" ] && echo "stopping $1 ($pid)" >&2
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    echo "cluster.sh: $1 ($pid) ignored SIGTERM for 15 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

down_dir() {
    local dir=$1 name i
    for (( i=${#SERVICES[@]}-1; i>=0; i-- )); do
        name=${SERVICES[$i]}
        if [ "$name" = postgres ]; then
            local postmaster=""
            [ -f "$dir/postgres/data/postmaster.pid" ] && postmaster=$(head -n1 "$dir/postgres/data/postmaster.pid")
            [ -d "$dir/postgres" ] && "$root/scripts/postgres-temp.sh" stop "$dir/postgres"
            # pg_ctl returns once the pid file is gone, a moment before the postmaster itself has exited.
            if [ -n "$postmaster" ]; then
                for _ in $(seq 100); do kill -0 "$postmaster" 2>/dev/null || break; sleep 0.1; done
            fi
        else
            stop_pid_file "$name"
        fi
    done
    rm -rf "$dir"
    if [ -f "$STATE_FILE" ] && [ "$(cat "$STATE_FILE")" = "$dir" ]; then rm -f "$STATE_FILE"; fi
}

down() {
    dir=$(cluster_dir || true)
    [ -n "$dir" ] || { echo "no cluster (no CLUSTER_DIR and no $STATE_FILE)"; return 0; }
    [ -d "$dir" ] || { rm -f "$STATE_FILE"; echo "no cluster in $dir"; return 0; }
    down_dir "$dir"
    echo "Gatehouse cluster down ($dir removed)"
}

case ${1:-} in
up) up ;;
status) status ;;
down) down ;;
*) echo "usage: $0 up|status|down" >&2; exit 2 ;;
esac
