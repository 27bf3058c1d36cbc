#!/usr/bin/env bash
# Development-only TLS material for Gatehouse: a throw-away CA and a server certificate for
# localhost (and auth.gatehouse.test, gateway.gatehouse.test: the compose load balancer's names) signed by it.
# Written to certs/dev/ (gitignored).
#
#   certs/generate.sh            # create certs/dev/ if it is not there yet (idempotent)
#   certs/generate.sh --force    # replace whatever is in certs/dev/
#   CERTS_DIR=/tmp/x certs/generate.sh   # write somewhere else
#
# Files: ca.key ca.pem (CA, EC P-256, 10 years, name-constrained to loopback names and gatehouse.test),
#        server.key server.pem (EC P-256, 825 days, SAN localhost + the two compose names, no IP, serverAuth),
#        server-chain.pem (server.pem followed by ca.pem). Keys are mode 600.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${CERTS_DIR:-$here/dev}
force=0
for arg in "$@"; do
    case $arg in
    --force) force=1 ;;
    -h | --help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
    esac
done

banner() {
    cat >&2 <<'BANNER'
################################################################################
##                                                                            ##
##   DEVELOPMENT ONLY — never use in production                               ##
##                                                                            ##
##   These certificates come from a throw-away CA whose private key sits      ##
##   unencrypted on this disk. Never add ca.pem to a system trust store you   ##
##   use for anything else, and never deploy server.key anywhere.             ##
##                                                                            ##
################################################################################
BANNER
}

command -v openssl >/dev/null 2>&1 || { echo "error: openssl not found (apt-get install openssl)" >&2; exit 1; }

banner

files=(ca.key ca.pem server.key server.pem server-chain.pem)
if [ "$force" -eq 0 ]; then
    present=0
    for f in "${files[@]}"; do [ -e "$out/$f" ] && present=$((present + 1)); done
    if [ "$present" -eq "${#files[@]}" ]; then
        echo "certs: $out already holds a development CA and server certificate; kept them (--force replaces them)." >&2
        exit 0
    elif [ "$present" -gt 0 ]; then
        echo "error: $out holds only some of: ${files[*]}; run with --force to regenerate all of them." >&2
        exit 1
    fi
fi

umask 077
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat >"$work/openssl.cnf" <<'CNF'
[ req ]
distinguished_name = dn
prompt             = no
[ dn ]
CN = unused

[ ca_ext ]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
# Even if this CA is trusted by mistake, it can only vouch for loopback names and gatehouse.test (a name under
# the reserved .test TLD, RFC 6761: never a real host), which docker-compose.yml's load balancer answers to.
nameConstraints        = critical, permitted;DNS:localhost, permitted;DNS:gatehouse.test, permitted;IP:127.0.0.0/255.0.0.0, permitted;IP:::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff

[ server_ext ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
# Names only, no IP address: BoringSSL (swift-nio-ssl: the gateway's client when it verifies an authorization server
# with `ca_file`) refuses a certificate whose IP address entries fall under the CA's IP name constraints (checked:
# CERTIFICATE_VERIFY_FAILED with IP:127.0.0.1 here, accepted without), so clients use https://localhost.
subjectAltName         = DNS:localhost, DNS:auth.gatehouse.test, DNS:gateway.gatehouse.test
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
CNF

serial() { echo "0x$(openssl rand -hex 16)"; }

# CA: EC P-256, 10 years.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca.key" 2>/dev/null
openssl req -config "$work/openssl.cnf" -new -x509 -sha256 -days 3650 -set_serial "$(serial)" \
    -key "$work/ca.key" -extensions ca_ext \
    -subj "/O=Gatehouse development/CN=Gatehouse Development CA (DEVELOPMENT ONLY)" \
    -out "$work/ca.pem"

# Server: EC P-256, 825 days (the most that Apple platforms accept for a TLS server certificate).
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/server.key" 2>/dev/null
openssl req -config "$work/openssl.cnf" -new -sha256 -key "$work/server.key" \
    -subj "/O=Gatehouse development/CN=localhost" -out "$work/server.csr"
openssl x509 -req -sha256 -days 825 -set_serial "$(serial)" -in "$work/server.csr" \
    -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -extfile "$work/openssl.cnf" -extensions server_ext -out "$work/server.pem" 2>/dev/null
cat "$work/server.pem" "$work/ca.pem" >"$work/server-chain.pem"

openssl verify -CAfile "$work/ca.pem" "$work/server.pem" >/dev/null

for f in "${files[@]}"; do
    mv -f "$work/$f" "$out/$f"
done
chmod 600 "$out/ca.key" "$out/server.key"
chmod 644 "$out/ca.pem" "$out/server.pem" "$out/server-chain.pem"

echo "certs: wrote $out/{$(IFS=,; echo "${files[*]}")}" >&2
openssl x509 -in "$out/server.pem" -noout -subject -enddate -ext subjectAltName >&2
banner
