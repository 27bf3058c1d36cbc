#!/usr/bin/env bash
# A throw-away PostgreSQL server on loopback, for benchmarks and trying the PostgreSQL store by hand
# (Debian's postgresql package; the Swift tests start their own the same way).
#
#   eval "$(scripts/postgres-temp.sh start DIR)"   # initdb into DIR, start on a free port; prints
#                                                  #   PGTEMP_DIR=… PGTEMP_PORT=… PGTEMP_URL=… PGTEMP_PASSWORD_FILE=…
#   scripts/postgres-temp.sh stop DIR              # stop it and remove DIR
#   scripts/postgres-temp.sh pause DIR             # stop the server process only (a database outage; data kept)
#   scripts/postgres-temp.sh resume DIR            # start it again on the same port
#
# The server listens on 127.0.0.1 only, with SCRAM-SHA-256 password authentication for TCP (user gatehouse,
# database gatehouse, a random password in DIR/password) and fsync off (a benchmark of the store's own work,
# not of the disk). PostgreSQL refuses to run as root: under root every command runs as `nobody`.
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|pause|resume DIR" >&2; exit 2; }
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -x "$bin/initdb" ] || { echo "error: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as=()
if [ "$(id -u)" -eq 0 ]; then as=(runuser -u nobody --); fi

start_server() {
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-k $dir -p $(cat "$dir/port") -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
}

case "$cmd" in
start)
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown nobody "$dir"
        # nobody must be able to pass through the parent (a mktemp -d directory is 0700): traversal only, no listing.
        chmod o+x "$(dirname "$dir")"
    fi
    chmod 700 "$dir"
    head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$dir/password"
    [ "$(id -u)" -eq 0 ] && chown nobody "$dir/password"
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U gatehouse --pwfile="$dir/password" --auth-local=trust \
        --auth-host=scram-sha-256 --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    echo "$port" >"$dir/port"
    start_server
    "${as[@]}" "$bin/psql" -h "$dir" -p "$port" -U gatehouse -d postgres -q -c "CREATE DATABASE gatehouse" >/dev/null
    echo "PGTEMP_DIR=$dir PGTEMP_PORT=$port PGTEMP_URL=postgres://gatehouse@127.0.0.1:$port/gatehouse PGTEMP_PASSWORD_FILE=$dir/password"
    ;;
pause)
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    ;;
resume)
    start_server
    ;;
stop)
    [ -d "$dir/data" ] && "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop|pause|resume DIR" >&2; exit 2 ;;
esac
