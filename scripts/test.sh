#!/usr/bin/env bash
# Runs every test of the repository, in order, stopping at the first failure:
#   1. scripts/install-test-deps.sh   apt + pip test dependencies (idempotent; quiet when all is there)
#   2. check-package-imports.py       every imported module declared in Package.swift, none declared unused
#   2. swift build                    debug build; produces .build/debug/gatehouse
#   3. swift test --no-parallel       Swift Testing suites (Tests/Gatehouse*Tests), one test at a time
#   4. docker-compose config -q       offline validation of docker-compose.yml (no engine needed)
#   5. scripts/test-interop.sh        Authlib interop, headless Chromium login, kill -9 durability
#
#   scripts/test.sh
# Env: INTEROP_PYTHON, GATEHOUSE_BIN, CHROMEDRIVER, CHROMIUM are passed on to the interop tests
# (see Tests/interop/README.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The toolchain lives in /opt/swift on these machines; a non-login shell may not have it on PATH.
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
  export PATH="$PATH:/opt/swift/usr/bin"
fi

started=$SECONDS
passed=()
joined() { local IFS='|'; local s="${passed[*]:-none}"; echo "${s//|/, }"; }

# step NAME COMMAND...: prints a header, runs the command, stops everything if it fails.
step() {
  local name="$1"
  shift
  local t0=$SECONDS
  echo
  echo "== $name =="
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo >&2
    echo "test.sh: FAILED at step '$name' (exit $rc): $*" >&2
    echo "test.sh: passed before it: $(joined)" >&2
    exit "$rc"
  fi
  echo "-- $name: ok ($((SECONDS - t0)) s)"
  passed+=("$name")
}

# docker-compose.yml requires no variable; the secret files under secrets/ need not exist for the validation.
compose_config() {
  docker-compose -f docker-compose.yml config -q
}

step "install test deps" bash scripts/install-test-deps.sh
step "package imports" python3 scripts/check-package-imports.py
step "swift build" swift build
# Serially: the suites start real servers (PostgreSQL, Redis, HTTP) and several check timing against them (a
# Redis command timeout, a refused connect, a key's TTL); run side by side on two cores they starve each other and
# fail for reasons that are not theirs. Serially the whole run takes about 40 s.
step "swift test" swift test --no-parallel
step "docker-compose config" compose_config
step "interop tests" bash scripts/test-interop.sh

echo
echo "test.sh: all ${#passed[@]} steps passed in $((SECONDS - started)) s ($(joined))"
