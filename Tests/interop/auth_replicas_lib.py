"""Replicated authorization servers for the interop tests: a real PostgreSQL server on a temporary data directory
(`scripts/postgres-temp.sh`, Debian's `postgresql`) and several `gatehouse auth` processes sharing it, one issuer
(the first replica's URL, as a load balancer's would be) and one signing-key directory (a shared volume).

Everything listens on loopback and is stopped by `close()`."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

import requests

from gatehouse_testlib import (
    REPO_ROOT,
    CallbackServer,
    Credentials,
    GatehouseServer,
    free_port,
    gatehouse_binary,
    write_config,
)

PG_SCRIPT = REPO_ROOT / "scripts" / "postgres-temp.sh"


class TempPostgres:
    """`scripts/postgres-temp.sh start DIR`: a PostgreSQL server of its own (SCRAM password in a file)."""

    def __init__(self):
        # Its own directory under /tmp, not pytest's: the server runs as `nobody` under root and must traverse every
        # parent (pytest's base directory is 0700).
        self.parent = Path(tempfile.mkdtemp(prefix="gatehouse-pg-"))
        self.dir = self.parent / "pg"
        out = subprocess.run(["bash", str(PG_SCRIPT), "start", str(self.dir)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"postgres-temp.sh start failed: {out.stderr[-2000:]}"
        values = dict(part.split("=", 1) for part in shlex.split(out.stdout.strip()))
        self.port = int(values["PGTEMP_PORT"])
        self.url = values["PGTEMP_URL"]
        self.password_file = Path(values["PGTEMP_PASSWORD_FILE"])

    def _script(self, command: str):
        out = subprocess.run(["bash", str(PG_SCRIPT), command, str(self.dir)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"postgres-temp.sh {command} failed: {out.stderr[-2000:]}"

    def pause(self):
        """Stops the server process (fast shutdown: sessions are cut); the data stays."""
        self._script("pause")

    def resume(self):
        """Starts it again on the same port."""
        self._script("resume")

    def sql(self, statement: str) -> str:
        """Runs one statement with psql (over the socket directory, as the server's OS user) and returns its output."""
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))
        assert binaries, "psql not found"
        command = [str(binaries[-1]), "-h", str(self.dir), "-p", str(self.port), "-U", "gatehouse", "-d", "gatehouse", "-At", "-c", statement]
        out = subprocess.run(["runuser", "-u", "nobody", "--", *command], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"psql failed: {out.stderr[-2000:]}"
        return out.stdout.strip()

    def close(self):
        subprocess.run(["bash", str(PG_SCRIPT), "stop", str(self.dir)], capture_output=True, timeout=120)
        shutil.rmtree(self.parent, ignore_errors=True)


class ReplicaSet:
    """`count` `gatehouse auth` replicas on one PostgreSQL database: each its own listen port and data directory,
    all with the issuer `http://127.0.0.1:<first replica's port>` and `signing.key_directory` on one directory."""

    def __init__(
        self,
        root: Path,
        pg: TempPostgres,
        callback: CallbackServer,
        *,
        count: int = 2,
        creds: Optional[Credentials] = None,
        signing: Optional[dict] = None,
        extra_clients: str = "",
        tokens_extra: Optional[dict] = None,
        admin: bool = False,
        pool_size: int = 8,
        statement_timeout: str = "2s",
        extra_yaml: str = "",
        refresh_token_reuse_grace: str = "1s",
    ):
        self.root = root
        self.pg = pg
        self.callback = callback
        self.creds = creds or Credentials()
        self.key_directory = root / "shared-keys"
        self.ports = [free_port() for _ in range(count)]
        self.admin_ports = [free_port() for _ in range(count)] if admin else []
        self.issuer = f"http://127.0.0.1:{self.ports[0]}"
        self.servers: list[GatehouseServer] = []
        self.configs: list[Path] = []
        self.data_dirs: list[Path] = []
        for index in range(count):
            directory = root / f"replica{index}"
            directory.mkdir(parents=True, exist_ok=True)
            config = write_config(
                directory / "auth.yaml", callback, self.creds, signing={"key_directory": str(self.key_directory), **(signing or {})},
                extra_clients=extra_clients, tokens_extra=tokens_extra, refresh_token_reuse_grace=refresh_token_reuse_grace,
            )
            text = config.read_text()
            text = text.replace("issuer: http://127.0.0.1:9000", f"issuer: {self.issuer}")
            text = text.replace("listen: {host: 127.0.0.1, port: 9000}", f"listen: {{host: 127.0.0.1, port: {self.ports[index]}}}")
            storage = (
                f"  postgres: {{url: \"{pg.url}\", password: {{file: {pg.password_file}}}, pool_size: {pool_size}, "
                f"statement_timeout: {statement_timeout}}}"
            )
            text, replaced = re.subn(r"  sqlite: \{[^}]*\}", storage, text)
            assert replaced == 1, text
            if admin:
                text += f"admin: {{host: 127.0.0.1, port: {self.admin_ports[index]}}}\n"
            text += extra_yaml
            config.write_text(text)
            self.configs.append(config)
            data = directory / "data"
            data.mkdir(exist_ok=True)
            self.data_dirs.append(data)

    def start(self) -> "ReplicaSet":
        """Starts every replica at once (they migrate the empty database and create the first key concurrently)."""
        self.servers = [GatehouseServer(gatehouse_binary(), config, data, port=None) for config, data in zip(self.configs, self.data_dirs)]
        errors: list[BaseException] = []

        def start(server: GatehouseServer):
            try:
                server.start()
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=start, args=(server,)) for server in self.servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        if errors:
            self.close()
            raise errors[0]
        for server in self.servers:
            assert server.issuer == self.issuer, f"replica issuer {server.issuer} != {self.issuer}"
        return self

    def __getitem__(self, index: int) -> GatehouseServer:
        return self.servers[index]

    def admin_url(self, index: int, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_ports[index]}{path}"

    def jwks_kids(self, index: int) -> list[str]:
        r = requests.get(self.servers[index].url("/.well-known/jwks.json"), timeout=5)
        assert r.status_code == 200, r.text
        return [key["kid"] for key in r.json()["keys"]]

    def close(self):
        for server in self.servers:
            if server.proc is not None and server.proc.poll() is None:
                server.stop(check=False)

    def key_files(self) -> list[Path]:
        return sorted(self.key_directory.glob("*.json"))
