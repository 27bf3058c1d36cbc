#!/usr/bin/env bash
# Micro-benchmark of the policy state machines: ns per rate-limit decision (1 key, 100,000 distinct keys, 2 threads
# on 1 key), resident bytes per tracked key, ns per breaker admit+record and per admission arrive+depart.
# Compiles scripts/bench/policies.swift together with Sources/GatehousePolicies (swiftc -O, whole module) into a
# temporary directory; nothing is built in .build.
#
#   scripts/bench-policies.sh [SCALE]     # SCALE multiplies the iteration counts (default 1)
#
# On a shared machine, run it under the build lock: flock /tmp/gatehouse-build.lock scripts/bench-policies.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if ! command -v swiftc >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swiftc ]; then
  export PATH="$PATH:/opt/swift/usr/bin"
fi
work=$(mktemp -d -t bench-policies.XXXXXX)
trap 'rm -rf "$work"' EXIT

mapfile -t sources < <(find "$root/Sources/GatehousePolicies" -name '*.swift' | sort)
swiftc -O -wmo -parse-as-library -module-name PolicyBench -o "$work/policy-bench" \
  "${sources[@]}" "$root/scripts/bench/policies.swift"
"$work/policy-bench" "${1:-1}"
