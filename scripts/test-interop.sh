#!/usr/bin/env bash
# Runs the Python interop, browser and durability tests against the built gatehouse binary.
#   scripts/test-interop.sh [extra pytest args]      e.g. -k authlib, -x, -v
# Env: GATEHOUSE_BIN (default .build/debug/gatehouse), INTEROP_PYTHON (default /usr/bin/python3).
# Needs: `swift build` done first, and scripts/install-test-deps.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${INTEROP_PYTHON:-/usr/bin/python3}"
BIN="${GATEHOUSE_BIN:-$ROOT/.build/debug/gatehouse}"

if [ ! -x "$BIN" ]; then
  echo "error: gatehouse binary not found (or not executable) at $BIN" >&2
  echo "       build it first with 'swift build', or point GATEHOUSE_BIN at it." >&2
  exit 2
fi
if ! "$PY" -c 'import authlib, jwt, requests, pytest, selenium, h2' 2>/dev/null; then
  echo "error: $PY lacks the test dependencies; run scripts/install-test-deps.sh" >&2
  exit 2
fi

export GATEHOUSE_BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
export PYTHONDONTWRITEBYTECODE=1
cd "$ROOT/Tests/interop"
exec "$PY" -m pytest -q -ra "$@" .
