#!/usr/bin/env bash
# Makes the secrets docker-compose.yml reads (secrets/, gitignored).
#
#   scripts/compose-secrets.sh            # create what is missing; keeps existing secrets
#   scripts/compose-secrets.sh --force    # new secrets (the database keeps its old password: recreate its volume)
#
# secrets/ (mode 0700: only you on this host) holds one file per compose secret, mode 0644 so that the
# containers' unprivileged users (gatehouse 10001, haproxy) can read the bind-mounted copy:
#   postgres_password        PostgreSQL's `gatehouse` user (the postgres service and both authorization servers)
#   redis_password           Redis `requirepass` (the redis service and both gateways)
#   gateway_client_secret    the gateways' client `gatehouse-gateway` at the authorization servers (both sides)
#   example_service_secret   the client `example-service` of config/compose/auth.yaml
#   haproxy_tls              HAProxy's certificate, key and CA (from certs/dev, made by certs/generate.sh)
#   gatehouse_ca.pem         the CA certificate alone (certs/dev/ca.pem): the gateways verify HAProxy with it
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# SECRETS_DIR and CERTS_DIR (certs/generate.sh's) move the outputs elsewhere (the manifest test uses them).
dir="${SECRETS_DIR:-$ROOT/secrets}"
certs="${CERTS_DIR:-$ROOT/certs/dev}"
force=0
case "${1:-}" in
--force) force=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

command -v openssl >/dev/null 2>&1 || { echo "error: openssl not found" >&2; exit 1; }
umask 077
mkdir -p "$dir"
chmod 700 "$dir"

random_secret() { openssl rand -base64 32 | tr -d '\n/+=' | cut -c1-40; }

for name in postgres_password redis_password gateway_client_secret example_service_secret; do
    if [ "$force" -eq 1 ] || [ ! -s "$dir/$name" ]; then
        random_secret >"$dir/$name"
        echo "compose-secrets: wrote $dir/$name" >&2
    fi
    chmod 644 "$dir/$name"
done

# HAProxy wants the certificate chain and the key in one file.
CERTS_DIR="$certs" "$ROOT/certs/generate.sh" >/dev/null 2>&1 || CERTS_DIR="$certs" "$ROOT/certs/generate.sh"
if [ "$force" -eq 1 ] || [ ! -s "$dir/haproxy_tls" ] || [ "$certs/server.pem" -nt "$dir/haproxy_tls" ]; then
    cat "$certs/server-chain.pem" "$certs/server.key" >"$dir/haproxy_tls"
    echo "compose-secrets: wrote $dir/haproxy_tls" >&2
fi
chmod 644 "$dir/haproxy_tls"
cp "$certs/ca.pem" "$dir/gatehouse_ca.pem"
chmod 644 "$dir/gatehouse_ca.pem"
