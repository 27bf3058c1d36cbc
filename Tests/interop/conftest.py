"""Pytest fixtures for the Gatehouse interop / browser / durability tests.

The fixtures start the real `gatehouse auth` binary themselves (never the demo),
on a free port (`--port 0`), with a temporary data directory and a temporary
YAML configuration whose redirect URIs point at a small callback HTTP server
that the fixtures also start on loopback. See gatehouse_testlib.py.

Binary: $GATEHOUSE_BIN if set, else <repo>/.build/debug/gatehouse.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest

pytest.register_assert_rewrite("gatehouse_testlib")

from gatehouse_testlib import (  # noqa: E402
    AuthEnv,
    CallbackServer,
    Credentials,
    GatehouseServer,
    gatehouse_binary,
    write_config,
)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gatehouse_bin() -> Path:
    path = gatehouse_binary()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"gatehouse binary not found or not executable at {path} "
            f"(build it with `swift build`, or set GATEHOUSE_BIN)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def callback_server():
    cb = CallbackServer()
    yield cb
    cb.close()


@pytest.fixture(scope="module")
def auth_env(gatehouse_bin, callback_server, tmp_path_factory):
    """One `gatehouse auth` for the whole test module (tmp data dir + tmp config)."""
    root = tmp_path_factory.mktemp("gatehouse")
    data_dir = root / "data"
    data_dir.mkdir()
    creds = Credentials()
    config_path = write_config(root / "auth.yaml", callback_server, creds)
    server = GatehouseServer(gatehouse_bin, config_path, data_dir).start()
    env = AuthEnv(server, callback_server, creds, config_path, data_dir)
    yield env
    # The log check runs here, after the module's last test whatever the order or selection (`-k`, random order),
    # with the server stopped (graceful, asserted) so that all of its output has been drained.
    server.stop(check=True)
    assert server.stdout, "captured stdout is empty: log capture is broken"
    assert env.sensitive, (
        "no test of this module recorded a token, code or password (auth_env.remember): "
        "the check that none of them reached the logs would prove nothing"
    )
    env.assert_no_secrets_in_logs()


@pytest.fixture
def gatehouse_factory(gatehouse_bin, callback_server, tmp_path):
    """For tests that start/kill/restart servers themselves (e.g. durability).

    Returns a function start(data_dir=None) -> GatehouseServer; every server started is
    stopped (SIGTERM, then SIGKILL) at teardown."""
    creds = Credentials()
    config_path = write_config(tmp_path / "auth.yaml", callback_server, creds)
    default_data = tmp_path / "data"
    default_data.mkdir()
    started: list[GatehouseServer] = []

    def start(data_dir: Optional[Path] = None) -> GatehouseServer:
        srv = GatehouseServer(gatehouse_bin, config_path, data_dir or default_data).start()
        started.append(srv)
        return srv

    start.creds = creds  # type: ignore[attr-defined]
    start.config_path = config_path  # type: ignore[attr-defined]
    start.data_dir = default_data  # type: ignore[attr-defined]
    yield start
    for srv in started:
        srv.stop(check=False)
