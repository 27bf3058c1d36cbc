"""`gatehouse demo` with its two admin listeners and access logs, for the observability tests.

`ObservedDemo` copies config/demo into a temporary directory, gives its clients and users fresh secrets
(`secrets`: the demo's name for each -> this run's value), adds `access_log: {path: FILE}` to both servers' YAML, starts `gatehouse demo` on free ports (auth, gateway, backend, gateway admin, auth admin) and waits until the
gateway is ready and both admin listeners answer. `stop()` sends SIGTERM and waits for a graceful exit, after which
the access logs are complete (flushed on drain).
"""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path
from typing import Optional

import requests

from gatehouse_testlib import REPO_ROOT, DemoProcess, free_port, wait_until


class ObservedDemo:
    def __init__(self, root: Path):
        self.root = root
        self.config_dir = root / "config"
        shutil.copytree(REPO_ROOT / "config" / "demo", self.config_dir)
        # Fresh secrets instead of the demo's well-known ones (which its banner prints as help): a secret found in
        # the output then can only have leaked.
        self.secrets = {
            name: f"{name}-{secrets.token_hex(16)}"
            for name in ("demo-service-secret", "demo-web-secret", "demo-jwt-secret", "gatehouse-gateway-secret", "alice-password", "bob-password")
        }
        for file in ("auth.yaml", "gateway.yaml"):
            text = (self.config_dir / file).read_text()
            for old, new in self.secrets.items():
                text = re.sub(rf"(secret|password): {re.escape(old)}\b", rf"\1: {new}", text)
            (self.config_dir / file).write_text(text)
        self.gateway_log = root / "gateway-access.log"
        self.auth_log = root / "auth-access.log"
        with open(self.config_dir / "gateway.yaml", "a") as f:
            f.write(f"\naccess_log:\n  path: {self.gateway_log}\n")
        with open(self.config_dir / "auth.yaml", "a") as f:
            f.write(f"\naccess_log:\n  path: {self.auth_log}\n")
        self.ports = {name: free_port() for name in ("auth", "gateway", "backend", "admin", "auth_admin")}
        assert len(set(self.ports.values())) == len(self.ports), self.ports
        self.process = DemoProcess(root / "data", self.ports, config_dir=self.config_dir)
        self.proc = self.process.proc
        try:
            self.process.wait_listening({"auth", "gateway", "demo-backend", "auth-admin"})
            wait_until(lambda: self._status(self.gateway_admin + "/readyz") == 200, timeout=20, interval=0.05, what="the gateway's /readyz")
            wait_until(lambda: self._status(self.auth_admin + "/readyz") == 200, timeout=20, interval=0.05, what="the auth server's /readyz")
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _status(url: str) -> Optional[int]:
        try:
            return requests.get(url, timeout=2).status_code
        except requests.RequestException:
            return None

    @property
    def auth(self) -> str:
        return f"http://127.0.0.1:{self.ports['auth']}"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def gateway_admin(self) -> str:
        return f"http://127.0.0.1:{self.ports['admin']}"

    @property
    def auth_admin(self) -> str:
        return f"http://127.0.0.1:{self.ports['auth_admin']}"

    @property
    def logs(self) -> str:
        return self.process.logs

    def stop(self) -> Optional[int]:
        return self.process.stop()


def metric_families(text: str) -> dict[str, str]:
    """`# TYPE` lines of a scrape: family name -> type."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M)}


def sample_value(text: str, name: str, labels: dict[str, str]) -> Optional[float]:
    """The value of the sample `name{labels}` (labels exactly these) in a scrape, or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if found == labels:
            return float(m.group(3))
    return None
