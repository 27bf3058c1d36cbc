#!/usr/bin/env bash
# Installs what the interop/browser tests (Tests/interop) and the load/compose checks need.
# Idempotent: apt-get runs only when a package is missing, pip only when an import fails.
#   apt:  chromium chromium-driver python3-selenium docker-compose wrk sqlite3 postgresql (+ python3-pip), and openssl, curl
#   apt:  haproxy nginx-light (test_deploy_manifests.py runs haproxy -c and the demo backend's nginx config)
#   apt:  chromium chromium-driver python3-selenium docker-compose wrk sqlite3 redis-server (GatehouseRedisTests start
#         their own servers; redis-benchmark for scripts/bench-redis.sh) (+ python3-pip), and openssl, curl
#         and ca-certificates (test_gateway_tls.py makes its certificates with certs/generate.sh and drives curl)
#   pip:  Tests/interop/requirements.txt for the interpreter that runs the interop tests
#         ($INTEROP_PYTHON, default /usr/bin/python3 — the system Python, because
#          python3-selenium is a Debian package for it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${INTEROP_PYTHON:-/usr/bin/python3}"
APT_PACKAGES=(chromium chromium-driver python3-selenium docker-compose wrk sqlite3 python3-pip openssl curl ca-certificates)
# Metrics (issue 13): a real Prometheus scrapes both admin listeners; promtool checks and unit-tests the alert rules.
APT_PACKAGES+=(prometheus)
# The PostgreSQL store's tests start their own server (initdb + postgres on a temporary directory, run as
# `nobody` through runuser when the tests run as root, which PostgreSQL refuses).
APT_PACKAGES+=(postgresql)
# The Redis client's tests start their own redis-server on a free port.
APT_PACKAGES+=(redis-server)
# scripts/cluster.sh (and test_cluster_script.py) put HAProxy in front of the replicas; test_deploy_manifests.py runs
# `haproxy -c` on config/haproxy/haproxy.cfg, and nginx serving the compose/Kubernetes demo
# backend's configuration (nginx-light is enough: it only uses `return` and `map`).
APT_PACKAGES+=(haproxy nginx-light)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-test-deps: not root and no sudo; cannot apt-get install" >&2
  fi
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-test-deps: apt-get install ${missing[*]}"
  # `env` carries DEBIAN_FRONTEND through sudo, which resets the environment; no prompt may wait on stdin (CI).
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
else
  echo "install-test-deps: apt packages already installed"
fi

# PyJWT without its `cryptography` backend imports fine but cannot verify ES256/RS256/EdDSA (test_jwt_interop.py
# then fails with "algorithm not supported"): Debian's python3-jwt does not pull python3-cryptography in.
PY_CHECK='import authlib, jwt, jwt.algorithms, requests, pytest, selenium, h2, yaml, kubernetes_validate, opentelemetry.proto.collector.trace.v1.trace_service_pb2; assert jwt.algorithms.has_crypto, "PyJWT lacks its cryptography backend"'
if "$PY" -c "$PY_CHECK" >/dev/null 2>&1; then
  echo "install-test-deps: python packages already importable by $PY"
else
  echo "install-test-deps: pip install -r Tests/interop/requirements.txt for $PY"
  PIP_FLAGS=(--quiet --disable-pip-version-check)
  # PEP 668: Debian's system Python refuses pip installs without this flag.
  if "$PY" -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
    PIP_FLAGS+=(--break-system-packages)
  fi
  PIP_ROOT_USER_ACTION=ignore $SUDO "$PY" -m pip install "${PIP_FLAGS[@]}" -r "$ROOT/Tests/interop/requirements.txt"
  "$PY" -c "$PY_CHECK"
fi
