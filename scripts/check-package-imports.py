#!/usr/bin/env python3
"""Every module a target imports is declared in Package.swift, and every dependency it declares is imported.

Reads Package.swift's targets (name, path Sources/<name> or Tests/<name> unless a `path:` says otherwise, dependencies: target names in quotes and
`.product(name: ...)`), scans each target's Swift files for `import` lines (`@testable`, `public`, `internal`, `@_exported`
too), and reports both kinds of mismatch. The toolchain's own modules (Foundation, Glibc, Testing, ...) need no
declaration. Exit status 1 when anything is wrong. Used by scripts/test.sh.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SYSTEM = {"Foundation", "FoundationEssentials", "FoundationNetworking", "Glibc", "Musl", "Darwin", "Dispatch", "Testing", "XCTest",
          "Synchronization", "_Concurrency", "os", "CoreFoundation"}

text = (ROOT / "Package.swift").read_text()
targets = {}
problems_early = []
for match in re.finditer(r"\.(executableTarget|target|testTarget)\(\s*name:\s*\"([^\"]+)\"(.*?)\n        \)", text, re.S):
    kind, name, body = match.groups()
    deps = set()
    dep_match = re.search(r"dependencies:\s*\[(.*?)\]\s*(,\s*(path|swiftSettings|resources|exclude|plugins)|\s*$|,\s*\n)", body, re.S)
    if dep_match:
        block = dep_match.group(1)
        deps |= set(re.findall(r"\.product\(name:\s*\"([^\"]+)\"", block))
        deps |= set(re.findall(r"(?<![:\w])\"(Gatehouse\w*)\"", block))
    path_match = re.search(r"\bpath:\s*\"([^\"]+)\"", body)  # a target outside the default folder (GatehouseTestSupport)
    folder = ROOT / path_match.group(1) if path_match else ROOT / ("Tests" if kind == "testTarget" else "Sources") / name
    targets[name] = (folder, deps)
    if kind != "testTarget" and "GatehouseTestSupport" in deps:
        problems_early.append(f"{name}: depends on GatehouseTestSupport, which only test targets may link")

problems = problems_early
for name, (folder, deps) in sorted(targets.items()):
    imported = set()
    for file in folder.rglob("*.swift"):
        for line in file.read_text().splitlines():
            m = re.match(r"\s*(?:@testable\s+|@_exported\s+|public\s+|internal\s+|package\s+)*import\s+(?:struct\s+|class\s+|enum\s+|func\s+)?([A-Za-z_][A-Za-z0-9_]*)", line)
            if m:
                imported.add(m.group(1))
    imported -= SYSTEM
    for module in sorted(imported - deps - {name}):
        problems.append(f"{name}: imports {module}, which Package.swift does not declare for it")
    for module in sorted(deps - imported):
        problems.append(f"{name}: declares {module}, which none of its files imports")

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"check-package-imports: {len(targets)} targets, every import declared and every declared dependency imported")
