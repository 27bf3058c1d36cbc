"""End-to-end tests of the admin verbs (`gatehouse clients add|list|remove`, `gatehouse users add|remove`)
against a real `gatehouse auth` sharing the same data directory, and of `gatehouse auth`'s refusal of bad
configuration files.

Every test has its own temporary data directory and (where it needs one) its own server, which is stopped
at teardown. Binary: $GATEHOUSE_BIN if set, else <repo>/.build/debug/gatehouse.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest
import requests

from gatehouse_testlib import GatehouseServer, assert_oauth_error, polling, token_rows

CLI_TIMEOUT = 60.0  # seconds for one admin command (bcrypt at cost 10 in a debug build is well below this)
CLIENT_CACHE_POLL = 10.0  # seconds to wait for a removed client to stop working
CLIENT_CACHE_BOUND = 7.0  # the server caches clients for 5 s (integer clock): it must stop well within this
BASE64URL_43 = re.compile(r"^[A-Za-z0-9_-]{43}$")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def run_cli(binary: Path, *args: str, stdin: Optional[str] = None, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Runs one `gatehouse` command to completion (text mode, captured output)."""
    return subprocess.run(
        [str(binary), *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=str(cwd) if cwd else None,
    )


def describe(result: subprocess.CompletedProcess) -> str:
    return (
        f"command: {' '.join(map(str, result.args))}\nexit: {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def run_ok(binary: Path, *args: str, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    result = run_cli(binary, *args, stdin=stdin)
    assert result.returncode == 0, describe(result)
    return result


def sha256_b64url(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode("utf-8")).digest()).rstrip(b"=").decode("ascii")


def db_bytes(data_dir: Path) -> bytes:
    """The raw bytes of auth.sqlite plus its -wal and -journal files (whichever exist)."""
    blob = b""
    for name in ("auth.sqlite", "auth.sqlite-wal", "auth.sqlite-journal"):
        path = data_dir / name
        if path.exists():
            blob += path.read_bytes()
    return blob


def db_query(data_dir: Path, sql: str, params: tuple = ()) -> list[dict]:
    conn = sqlite3.connect(str(data_dir / "auth.sqlite"), timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def write_server_config(path: Path, clients_yaml: str = "", extra: str = "") -> Path:
    """A server configuration; with no `clients_yaml` the server has no clients of its own."""
    text = f"""\
issuer: http://127.0.0.1:9000
listen: {{host: 127.0.0.1, port: 9000}}
storage:
  sqlite: {{file: auth.sqlite, synchronous: full}}
tokens:
  access_token_lifetime: 1h
  refresh_token_idle_lifetime: 14d
  refresh_token_absolute_lifetime: 90d
login:
  max_failures_before_delay: 5
  bcrypt_cost: 10
{clients_yaml}{extra}"""
    path.write_text(text)
    return path


def client_credentials(server: GatehouseServer, client_id: str, secret: str, scope: str = "orders:read") -> requests.Response:
    return requests.post(
        server.token_url,
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(client_id, secret),
        timeout=15,
    )


def password_grant(server: GatehouseServer, client_id: str, secret: str, username: str, password: str) -> requests.Response:
    return requests.post(
        server.token_url,
        data={"grant_type": "password", "username": username, "password": password, "scope": "orders:read"},
        auth=(client_id, secret),
        timeout=30,
    )


def refresh_grant(server: GatehouseServer, client_id: str, secret: str, refresh_token: str) -> requests.Response:
    return requests.post(
        server.token_url,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(client_id, secret),
        timeout=15,
    )


def assert_token_response(resp: requests.Response) -> dict:
    assert resp.status_code == 200, f"expected 200 from /token, got {resp.status_code}: {resp.text[:500]}"
    body = resp.json()
    assert body.get("access_token"), body
    assert str(body.get("token_type", "")).lower() == "bearer", body
    return body


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def start_server(gatehouse_bin, tmp_path):
    """start(config_path, data_dir) -> a running GatehouseServer; every one is stopped at teardown."""
    started: list[GatehouseServer] = []

    def start(config_path: Path, data_dir: Path) -> GatehouseServer:
        srv = GatehouseServer(gatehouse_bin, config_path, data_dir)
        started.append(srv)  # before start(): a failed start still gets cleaned up
        return srv.start()

    yield start
    for srv in started:
        srv.stop(check=False)


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------


def add_svc2(gatehouse_bin: Path, data_dir: Path) -> str:
    """`clients add ... svc2` and returns the printed secret, checking the output's shape."""
    result = run_ok(
        gatehouse_bin, "clients", "add", "--data-dir", str(data_dir),
        "--id", "svc2", "--grant", "client_credentials", "--scope", "orders:read",
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("client_secret:")]
    assert len(lines) == 1, f"expected exactly one 'client_secret:' line\n{describe(result)}"
    match = re.fullmatch(r"client_secret: (\S+)", lines[0])
    assert match, f"malformed secret line {lines[0]!r}"
    secret = match.group(1)
    assert BASE64URL_43.match(secret), f"secret {secret!r} is not 43 base64url characters"
    # printed exactly once: nowhere else on stdout or stderr
    assert result.stdout.count(secret) == 1, describe(result)
    assert secret not in result.stderr, describe(result)
    return secret


def test_clients_add_prints_secret_once_and_stores_only_its_hash(gatehouse_bin, data_dir, tmp_path, start_server):
    # A running server on the same data dir keeps the database in WAL mode with a live -wal file,
    # so the grep below covers both the main file and the write-ahead log.
    server = start_server(write_server_config(tmp_path / "auth.yaml"), data_dir)

    secret = add_svc2(gatehouse_bin, data_dir)

    rows = db_query(data_dir, "SELECT * FROM clients WHERE id = ?", ("svc2",))
    assert len(rows) == 1, rows
    assert rows[0]["secret_hash"] == sha256_b64url(secret), (
        f"clients.secret_hash should be base64url(SHA-256(secret)); got {rows[0]['secret_hash']!r}"
    )
    raw = db_bytes(data_dir)
    assert raw, "no database bytes found"
    assert secret.encode("ascii") not in raw, "the client secret itself is stored in the database files"

    # a second, independent add gets a different secret
    other = run_ok(
        gatehouse_bin, "clients", "add", "--data-dir", str(data_dir),
        "--id", "svc3", "--grant", "client_credentials", "--scope", "orders:read",
    )
    other_secret = re.search(r"^client_secret: (\S+)$", other.stdout, re.M).group(1)
    assert other_secret != secret

    server.stop(check=True)


def test_cli_client_gets_tokens_until_removed(gatehouse_bin, data_dir, tmp_path, start_server):
    server = start_server(write_server_config(tmp_path / "auth.yaml"), data_dir)

    secret = add_svc2(gatehouse_bin, data_dir)

    # the server (another process) sees the new client and accepts the printed secret
    body = assert_token_response(client_credentials(server, "svc2", secret))
    first_token = body["access_token"]
    assert body.get("scope", "orders:read") == "orders:read", body
    rows = token_rows(server.db_path, first_token)
    assert len(rows) == 1 and rows[0]["client_id"] == "svc2" and rows[0]["revoked"] == 0, rows

    # a wrong secret is refused
    assert_oauth_error(client_credentials(server, "svc2", secret[:-1] + ("A" if secret[-1] != "A" else "B")), 401, "invalid_client")

    listing = run_ok(gatehouse_bin, "clients", "list", "--data-dir", str(data_dir))
    listed = [line.split("\t") for line in listing.stdout.splitlines() if line.strip()]
    svc2 = [fields for fields in listed if fields[0] == "svc2"]
    assert len(svc2) == 1, describe(listing)
    assert "confidential" in svc2[0] and "grants=client_credentials" in svc2[0] and "scopes=orders:read" in svc2[0], describe(listing)
    assert secret not in listing.stdout and sha256_b64url(secret) not in listing.stdout, "list must not show secrets"

    removed = run_ok(gatehouse_bin, "clients", "remove", "--data-dir", str(data_dir), "svc2")
    removed_at = time.monotonic()
    assert "svc2" in removed.stdout, describe(removed)

    # the server caches clients for 5 s: poll until the client is refused
    last = None
    refused_after = None
    for _ in polling(max(0.0, CLIENT_CACHE_POLL - (time.monotonic() - removed_at)), 0.25):  # the cache's bound is asserted below
        last = client_credentials(server, "svc2", secret)
        if last.status_code != 200:
            refused_after = time.monotonic() - removed_at
            break
    assert refused_after is not None, (
        f"removed client svc2 still gets tokens {CLIENT_CACHE_POLL}s after `clients remove`: {last.status_code} {last.text[:300]}"
    )
    assert_oauth_error(last, 401, "invalid_client")
    assert refused_after <= CLIENT_CACHE_BOUND, f"removed client was refused only after {refused_after:.1f}s"

    # and stays refused
    assert_oauth_error(client_credentials(server, "svc2", secret), 401, "invalid_client")

    # the token issued before the removal is revoked in the store
    rows = token_rows(server.db_path, first_token)
    assert len(rows) == 1 and rows[0]["revoked"] == 1, f"token issued before `clients remove` is not revoked: {rows}"

    listing = run_ok(gatehouse_bin, "clients", "list", "--data-dir", str(data_dir))
    assert not any(line.split("\t")[0] == "svc2" for line in listing.stdout.splitlines()), describe(listing)

    # removing it again is an error
    again = run_cli(gatehouse_bin, "clients", "remove", "--data-dir", str(data_dir), "svc2")
    assert again.returncode != 0, describe(again)
    assert "svc2" in again.stderr, describe(again)

    server.stop(check=True)


REFUSALS = [
    pytest.param(
        ["--id", "c1", "--grant", "bogus_grant"],
        ["unknown grant", "bogus_grant"],
        id="unknown-grant",
    ),
    pytest.param(
        ["--id", "c1", "--public", "--grant", "client_credentials"],
        ["public", "client_credentials"],
        id="public-client-credentials",
    ),
    pytest.param(
        ["--id", "c1", "--grant", "authorization_code"],
        ["--redirect-uri"],
        id="authorization-code-without-redirect-uri",
    ),
    pytest.param(
        ["--id", "c1", "--grant", "authorization_code", "--redirect-uri", "http://app.example.com/callback"],
        ["http://app.example.com/callback", "https"],
        id="non-https-non-loopback-redirect-uri",
    ),
]


@pytest.mark.parametrize("args,fragments", REFUSALS)
def test_clients_add_refusals(gatehouse_bin, data_dir, args, fragments):
    result = run_cli(gatehouse_bin, "clients", "add", "--data-dir", str(data_dir), *args)
    assert result.returncode != 0, describe(result)
    first = result.stderr.splitlines()[0] if result.stderr.strip() else ""
    assert first.startswith("Error: "), f"expected a leading 'Error: ...' line\n{describe(result)}"
    for fragment in fragments:
        assert fragment in first, f"error message should mention {fragment!r}\n{describe(result)}"
    assert "client_secret" not in result.stdout, describe(result)
    if (data_dir / "auth.sqlite").exists():
        assert db_query(data_dir, "SELECT id FROM clients WHERE id = 'c1'") == [], "a refused client was stored"


def test_clients_add_refuses_duplicate_id(gatehouse_bin, data_dir):
    secret = add_svc2(gatehouse_bin, data_dir)
    hash_before = db_query(data_dir, "SELECT secret_hash FROM clients WHERE id = 'svc2'")[0]["secret_hash"]

    result = run_cli(
        gatehouse_bin, "clients", "add", "--data-dir", str(data_dir),
        "--id", "svc2", "--grant", "client_credentials", "--scope", "orders:write",
    )
    assert result.returncode != 0, describe(result)
    first = result.stderr.splitlines()[0] if result.stderr.strip() else ""
    assert first.startswith("Error: ") and "svc2" in first and "already exists" in first, describe(result)
    assert "client_secret" not in result.stdout, describe(result)

    rows = db_query(data_dir, "SELECT * FROM clients WHERE id = 'svc2'")
    assert len(rows) == 1, rows
    assert rows[0]["secret_hash"] == hash_before == sha256_b64url(secret), "the duplicate add changed the stored secret"
    assert rows[0]["scopes"] == "orders:read", rows


# --------------------------------------------------------------------------
# users
# --------------------------------------------------------------------------


def web_client_yaml(secret: str) -> str:
    return f"""\
clients:
  - id: web
    type: confidential
    secret: {secret}
    grants: [password, refresh_token]
    scopes: [orders:read, orders:write]
    default_scopes: [orders:read, orders:write]
"""


def test_users_add_and_remove(gatehouse_bin, data_dir, tmp_path, start_server):
    web_secret = "web-secret-" + secrets.token_hex(12)
    carol_password = "carol-password-" + secrets.token_hex(12)
    server = start_server(write_server_config(tmp_path / "auth.yaml", web_client_yaml(web_secret)), data_dir)

    # unknown user before it exists: invalid_grant
    assert_oauth_error(password_grant(server, "web", web_secret, "carol", carol_password), 400, "invalid_grant")

    added = run_ok(gatehouse_bin, "users", "add", "--data-dir", str(data_dir), "carol", "--password-stdin", stdin=carol_password + "\n")
    assert carol_password not in added.stdout + added.stderr, describe(added)

    rows = db_query(data_dir, "SELECT * FROM users WHERE username = 'carol'")
    assert len(rows) == 1, rows
    password_hash = rows[0]["password_hash"]
    assert password_hash.startswith("$2"), f"users.password_hash is not bcrypt: {password_hash!r}"
    assert carol_password not in password_hash
    assert carol_password.encode() not in db_bytes(data_dir), "carol's password is stored in the database files"

    body = assert_token_response(password_grant(server, "web", web_secret, "carol", carol_password))
    access_token, refresh_token = body["access_token"], body.get("refresh_token")
    assert refresh_token, f"password grant for a client with refresh_token should return a refresh token: {body}"
    rows = token_rows(server.db_path, access_token)
    assert len(rows) == 1 and rows[0]["username"] == "carol" and rows[0]["revoked"] == 0, rows
    carol_id = rows[0]["subject"]

    # a wrong password is refused
    assert_oauth_error(password_grant(server, "web", web_secret, "carol", carol_password + "x"), 400, "invalid_grant")

    removed = run_ok(gatehouse_bin, "users", "remove", "--data-dir", str(data_dir), "carol")
    assert "carol" in removed.stdout, describe(removed)
    assert db_query(data_dir, "SELECT * FROM users WHERE username = 'carol'") == []

    # the password grant fails at once (users are not cached)
    assert_oauth_error(password_grant(server, "web", web_secret, "carol", carol_password), 400, "invalid_grant")

    # every token carol had is revoked, and the refresh token no longer works
    tokens = db_query(data_dir, "SELECT token_hash, revoked FROM tokens WHERE subject = ?", (carol_id,))
    assert tokens, "carol's tokens disappeared instead of being revoked"
    assert all(t["revoked"] == 1 for t in tokens), f"carol's tokens after `users remove`: {tokens}"
    assert_oauth_error(refresh_grant(server, "web", web_secret, refresh_token), 400, "invalid_grant")

    # removing an unknown (or already removed) user is an error
    for name in ("carol", "nobody"):
        result = run_cli(gatehouse_bin, "users", "remove", "--data-dir", str(data_dir), name)
        assert result.returncode != 0, describe(result)
        assert name in result.stderr, describe(result)

    server.stop(check=True)


def test_users_add_without_password_on_stdin_is_refused(gatehouse_bin, data_dir):
    result = run_cli(gatehouse_bin, "users", "add", "--data-dir", str(data_dir), "dave", "--password-stdin", stdin="")
    assert result.returncode != 0, describe(result)
    assert "password" in result.stderr, describe(result)
    if (data_dir / "auth.sqlite").exists():
        assert db_query(data_dir, "SELECT * FROM users WHERE username = 'dave'") == []


# --------------------------------------------------------------------------
# configuration refusals
# --------------------------------------------------------------------------


def run_auth_expecting_failure(gatehouse_bin: Path, config: Path, data_dir: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [str(gatehouse_bin), "auth", "--config", str(config), "--data-dir", str(data_dir), "--port", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        stdout, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate(timeout=10)
        pytest.fail(f"gatehouse auth with a bad configuration did not exit within 30s\n--- stderr ---\n{stderr}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_auth_refuses_unknown_config_key(gatehouse_bin, data_dir, tmp_path):
    config = tmp_path / "bad-key.yaml"
    write_server_config(config)
    config.write_text(config.read_text().replace("listen: {host: 127.0.0.1, port: 9000}", "listen: {host: 127.0.0.1, prot: 9000}"))
    assert "prot: 9000" in config.read_text()

    result = run_auth_expecting_failure(gatehouse_bin, config, data_dir, dict(os.environ))
    assert result.returncode == 1, describe(result)
    assert f"Error: {config}: listen.prot: unknown key" in result.stderr, describe(result)
    assert '"event":"listening"' not in result.stdout, describe(result)


def test_auth_refuses_missing_secret_env_var(gatehouse_bin, data_dir, tmp_path):
    config = write_server_config(
        tmp_path / "missing-env.yaml",
        """\
clients:
  - id: web
    type: confidential
    secret: {env: MISSING_VAR}
    grants: [password]
    scopes: [orders:read]
    default_scopes: [orders:read]
""",
    )
    env = {k: v for k, v in os.environ.items() if k != "MISSING_VAR"}
    result = run_auth_expecting_failure(gatehouse_bin, config, data_dir, env)
    assert result.returncode == 1, describe(result)
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert error_lines, describe(result)
    assert "MISSING_VAR" in error_lines[0] and str(config) in error_lines[0], describe(result)
    assert "clients[0].secret" in error_lines[0], describe(result)
    assert '"event":"listening"' not in result.stdout, describe(result)


def test_cli_jwt_client_removed_and_added_again_does_not_revive_its_old_tokens(gatehouse_bin, data_dir, tmp_path, start_server):
    """A client with access_token_format: jwt gets self-contained client_credentials JWTs (no row). `clients remove`
    makes them inactive (within the server's 5 s client cache), and registering the same id again does not bring
    them back: the new registration has a new incarnation, which the old tokens' jti does not name."""
    introspector_secret = secrets.token_urlsafe(24)
    clients = f"""\
clients:
  - id: introspector
    type: confidential
    secret: {introspector_secret}
    grants: [client_credentials]
    scopes: [orders:read]
    introspect: true
"""
    server = start_server(write_server_config(tmp_path / "auth.yaml", clients), data_dir)

    def add() -> str:
        result = run_ok(
            gatehouse_bin, "clients", "add", "--data-dir", str(data_dir), "--id", "svc-jwt", "--grant", "client_credentials",
            "--scope", "orders:read", "--access-token-format", "jwt",
        )
        match = re.search(r"^client_secret: (\S+)$", result.stdout, re.MULTILINE)
        assert match, describe(result)
        return match.group(1)

    def active(token: str) -> bool:
        r = requests.post(server.url("/introspect"), data={"token": token}, auth=("introspector", introspector_secret), timeout=15)
        assert r.status_code == 200, r.text
        return r.json()["active"] is True

    def poll(condition, what: str, bound: float = CLIENT_CACHE_POLL) -> float:
        start = time.monotonic()
        for _ in polling(bound, 0.25):
            if condition():
                return time.monotonic() - start
        raise AssertionError(f"{what}: not within {bound}s")

    first_secret = add()
    body = assert_token_response(client_credentials(server, "svc-jwt", first_secret))
    old = body["access_token"]
    assert old.count(".") == 2 and token_rows(server.db_path, old) == [], "a self-contained JWT has no row"
    assert active(old)

    run_ok(gatehouse_bin, "clients", "remove", "--data-dir", str(data_dir), "svc-jwt")
    assert poll(lambda: not active(old), "a removed client's JWT turning inactive") <= CLIENT_CACHE_BOUND

    second_secret = add()
    poll(lambda: client_credentials(server, "svc-jwt", second_secret).status_code == 200, "the re-added client getting tokens")
    new = assert_token_response(client_credentials(server, "svc-jwt", second_secret))["access_token"]
    assert active(new), "the new registration's token is active"
    assert not active(old), "registering the id again revived a token of the removed registration"
    server.stop(check=True)
    assert old not in server.logs and new not in server.logs
