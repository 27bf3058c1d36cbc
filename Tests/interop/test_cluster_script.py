"""`scripts/cluster.sh up|status|down` (issue 14): the whole topology on loopback — PostgreSQL, Redis, two
authorization servers, the demo backend, two gateways, HAProxy — started by the script into a temporary
CLUSTER_DIR, used through HAProxy, and stopped: afterwards none of its processes is left and the directory is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from gatehouse_testlib import REPO_ROOT, gatehouse_binary

SCRIPT = REPO_ROOT / "scripts" / "cluster.sh"
SERVICES = ["postgres", "redis", "auth1", "auth2", "backend", "gateway1", "gateway2", "haproxy"]


def run(env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


def pids_of(cluster_dir: Path) -> dict[str, int]:
    pids = {name: int((cluster_dir / "run" / f"{name}.pid").read_text()) for name in SERVICES if (cluster_dir / "run" / f"{name}.pid").exists()}
    postmaster = cluster_dir / "postgres" / "data" / "postmaster.pid"
    if postmaster.exists():
        pids["postgres"] = int(postmaster.read_text().splitlines()[0])
    return pids


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie whose parent has not reaped it is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def ports(cluster_dir: Path) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", (cluster_dir / "ports.env").read_text()))


def test_cluster_up_serves_through_haproxy_then_down_stops_everything():
    for tool in ("haproxy", "redis-server", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/install-test-deps.sh)", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="gatehouse-cluster-test-"))
    base.chmod(0o711)  # under root PostgreSQL runs as nobody, which must pass through to its directory
    cluster_dir = base / "cluster"
    env = dict(os.environ, CLUSTER_DIR=str(cluster_dir), CLUSTER_STATE_FILE=str(base / "state"), GATEHOUSE_BIN=str(gatehouse_binary()))
    pids: dict[str, int] = {}
    try:
        up = run(env, "up")
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}"
        assert "Gatehouse cluster up" in up.stdout, up.stdout
        assert (base / "state").read_text().strip() == str(cluster_dir)
        p = ports(cluster_dir)
        pids = pids_of(cluster_dir)
        assert sorted(pids) == sorted(SERVICES), pids
        assert all(running(pid) for pid in pids.values()), pids
        auth_lb = f"http://127.0.0.1:{p['AUTH_LB_PORT']}"
        gateway_lb = f"http://127.0.0.1:{p['GATEWAY_LB_PORT']}"
        for address in (auth_lb, gateway_lb):
            assert address in up.stdout, up.stdout

        s = requests.Session()
        s.trust_env = False
        # A token from one replica (through HAProxy, round robin), used through the gateways: each /api/ call is
        # exchanged by a gateway at whichever replica HAProxy picks, so it crosses replicas.
        r = s.post(f"{auth_lb}/token", data={"grant_type": "client_credentials"}, auth=("demo-service", "demo-service-secret"), timeout=10)
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        for replica in ("AUTH1_PORT", "AUTH2_PORT"):
            # Introspected at each replica directly: both know the token (one PostgreSQL).
            intro = s.post(
                f"http://127.0.0.1:{p[replica]}/introspect", data={"token": token}, auth=("gatehouse-gateway", "gatehouse-gateway-secret"), timeout=10
            )
            assert intro.status_code == 200 and intro.json().get("active") is True, (replica, intro.status_code, intro.text)
        for _ in range(4):
            r = s.get(f"{gateway_lb}/api/orders", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 200, (r.status_code, r.text)
            assert r.headers["RateLimit-Policy"] == '"per-client";q=100;w=1', r.headers
        # Without a token the gateway refuses (RFC 6750), with one it reaches the backend, which verified the JWT.
        assert s.get(f"{gateway_lb}/api/orders", timeout=10).status_code == 401
        # Each gateway directly, too: both take the token (exchanged at the replicas behind HAProxy).
        for gateway in ("GW1_PORT", "GW2_PORT"):
            r = s.get(f"http://127.0.0.1:{p[gateway]}/api/orders", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 200, (gateway, r.status_code, r.text)
        # Every allowed request was one decision of the shared limit, at one gateway or the other.
        decided = [s.get(f"http://127.0.0.1:{p[a]}/rate-limits", timeout=5).json()["routes"] for a in ("GW1_ADMIN_PORT", "GW2_ADMIN_PORT")]
        allowed = [next(l for r_ in routes if r_["route"] == "api" for l in r_["limits"])["allowed"] for routes in decided]
        assert all(a >= 1 for a in allowed) and sum(allowed) == 6, decided

        status = run(env, "status", timeout=60)
        assert status.returncode == 0, f"status:\n{status.stdout}\n{status.stderr}"
        for name in SERVICES:
            line = next((l for l in status.stdout.splitlines() if l.startswith(name + " ")), "")
            assert " running " in line, status.stdout
        assert status.stdout.count(" 200") == 6, status.stdout  # auth ×2, backend, gateways ×2, haproxy
    finally:
        down = run(env, "down", timeout=120)
        leftover = {name: pid for name, pid in pids.items() if running(pid)}
        shutil.rmtree(base, ignore_errors=True)
    assert down.returncode == 0, f"down:\n{down.stdout}\n{down.stderr}"
    assert pids, "up recorded no processes to check"
    assert not leftover, f"still running after down: {leftover}"
    assert not cluster_dir.exists()
    # status after down: no cluster.
    assert run(env, "status", timeout=30).returncode == 1
