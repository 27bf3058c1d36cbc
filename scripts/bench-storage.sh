# Sourced by the token benchmarks: the storage they run on, from STORAGE=sqlite (default) or STORAGE=postgres.
# With postgres, a throw-away server is started (scripts/postgres-temp.sh) and the demo configuration is copied
# with its storage section replaced by `storage: {postgres: {url, password: {file}, pool_size: $POOL_SIZE (16)}}`.
#   bench_storage_setup WORKDIR   sets BENCH_CONFIG_DIR (the --config-dir to pass) and BENCH_STORAGE (a label)
#   bench_storage_stop            stops the server (call from the EXIT trap)
#   bench_storage_count SQL       runs a count query on whichever store the server used (DATA_DIR for SQLite)
bench_storage_setup() {
    local work=$1
    BENCH_CONFIG_DIR=$root/config/demo
    BENCH_STORAGE=sqlite
    case "${STORAGE:-sqlite}" in
    sqlite) ;;
    postgres)
        eval "$("$root/scripts/postgres-temp.sh" start "$work/pg")"
        mkdir -p "$work/config"
        cp "$root"/config/demo/* "$work/config/"
        # The demo's own storage section out, the PostgreSQL one in (other edits a caller makes keep working).
        awk '/^storage:/ {skip=1; next} skip && /^[^ #]/ {skip=0} !skip' "$root/config/demo/auth.yaml" >"$work/config/auth.yaml"
        cat >>"$work/config/auth.yaml" <<YAML
storage:
  postgres:
    url: $PGTEMP_URL
    password: {file: $PGTEMP_PASSWORD_FILE}
    pool_size: ${POOL_SIZE:-16}
YAML
        BENCH_CONFIG_DIR=$work/config
        BENCH_STORAGE="postgres (loopback, fsync off, pool_size ${POOL_SIZE:-16})"
        ;;
    *) echo "error: STORAGE must be sqlite or postgres" >&2; exit 2 ;;
    esac
}

bench_storage_stop() {
    if [ -n "${PGTEMP_DIR:-}" ]; then "$root/scripts/postgres-temp.sh" stop "$PGTEMP_DIR"; PGTEMP_DIR=; fi
}

bench_storage_count() {
    local sql=$1 data=$2
    if [ -n "${PGTEMP_DIR:-}" ]; then
        local as=(); [ "$(id -u)" -eq 0 ] && as=(runuser -u nobody --)
        "${as[@]}" "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)/psql" -h "$PGTEMP_DIR" -p "$PGTEMP_PORT" \
            -U gatehouse -d gatehouse -At -c "$sql"
    else
        sqlite3 "$data/auth.sqlite" "$sql"
    fi
}
