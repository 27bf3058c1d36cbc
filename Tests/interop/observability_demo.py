"""`gatehouse demo` with its two admin listeners and access logs, for the observability tests.

`ObservedDemo` copies config/demo into a temporary directory, adds `access_log: {path: FILE}` to both servers'
YAML, starts `gatehouse demo` on free ports (auth, gateway, backend, gateway admin, auth admin) and waits until the
gateway is ready and both admin listeners answer. `stop()` sends SIGTERM and waits for a graceful exit, after which
the access logs are complete (flushed on drain).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

import pytest
import requests

from gatehouse_testlib import LISTEN_TIMEOUT, REPO_ROOT, STOP_TIMEOUT, _Drain, free_port, gatehouse_binary, wait_until


class ObservedDemo:
    def __init__(self, root: Path):
        self.root = root
        self.config_dir = root / "config"
        shutil.copytree(REPO_ROOT / "config" / "demo", self.config_dir)
        self.gateway_log = root / "gateway-access.log"
        self.auth_log = root / "auth-access.log"
        with open(self.config_dir / "gateway.yaml", "a") as f:
            f.write(f"\naccess_log:\n  path: {self.gateway_log}\n")
        with open(self.config_dir / "auth.yaml", "a") as f:
            f.write(f"\naccess_log:\n  path: {self.auth_log}\n")
        self.ports = {name: free_port() for name in ("auth", "gateway", "backend", "admin", "auth_admin")}
        assert len(set(self.ports.values())) == len(self.ports), self.ports
        self.listening: dict[str, dict] = {}
        self._cond = threading.Condition()
        data_dir = root / "data"
        self.command = [
            str(gatehouse_binary()), "demo", "--data-dir", str(data_dir), "--config-dir", str(self.config_dir),
            "--auth-port", str(self.ports["auth"]), "--gateway-port", str(self.ports["gateway"]),
            "--backend-port", str(self.ports["backend"]), "--admin-port", str(self.ports["admin"]),
            "--auth-admin-port", str(self.ports["auth_admin"]),
        ]
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(root))
        self._out = _Drain(self.proc.stdout, "demo-stdout", self._on_line)
        self._err = _Drain(self.proc.stderr, "demo-stderr")
        self._out.start()
        self._err.start()
        try:
            self._wait_listening({"auth", "gateway", "demo-backend", "auth-admin"})
            wait_until(lambda: self._status(self.gateway_admin + "/readyz") == 200, timeout=20, interval=0.05, what="the gateway's /readyz")
            wait_until(lambda: self._status(self.auth_admin + "/readyz") == 200, timeout=20, interval=0.05, what="the auth server's /readyz")
        except BaseException:
            self.stop()
            raise

    def _on_line(self, line: str):
        line = line.strip()
        if line.startswith("{"):
            obj = json.loads(line)
            if obj.get("event") == "listening":
                with self._cond:
                    self.listening[obj.get("service")] = obj
                    self._cond.notify_all()

    def _wait_listening(self, services: set[str]):
        deadline = time.monotonic() + LISTEN_TIMEOUT
        with self._cond:
            while not services <= set(self.listening):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    pytest.fail(f"demo did not start {services - set(self.listening)} (exit {self.proc.poll()})\n{self.logs[-4000:]}", pytrace=False)
                self._cond.wait(min(remaining, 0.2))

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
        return self._out.text() + self._err.text()

    def stop(self) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.join(5)
        self._err.join(5)
        return self.proc.returncode


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
