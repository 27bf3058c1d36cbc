"""Helpers for the Gatehouse interop / browser / durability tests (conftest.py and the tests import them).

GatehouseServer runs one real `gatehouse auth` process (`--port 0`, temporary data dir and
config), learns its port from the `{"event":"listening",...}` stdout line, drains its
stdout/stderr into buffers, and stops it with SIGTERM (SIGKILL after 10 s).
CallbackServer is the OAuth clients' loopback redirect target. drive_authorization walks
/authorize -> /login -> /consent with plain HTTP.

Binary: $GATEHOUSE_BIN if set, else <repo>/.build/debug/gatehouse.
"""

from __future__ import annotations

import base64
import hashlib
import html.parser
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTEN_TIMEOUT = float(os.environ.get("GATEHOUSE_LISTEN_TIMEOUT", "30"))  # seconds to wait for the {"event":"listening"} line
HEALTH_TIMEOUT = 15.0  # seconds to wait for GET /healthz to answer 200
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def gatehouse_binary() -> Path:
    env = os.environ.get("GATEHOUSE_BIN")
    return Path(env) if env else REPO_ROOT / ".build" / "debug" / "gatehouse"


def token_hash(token: str) -> str:
    """base64url (no padding) of SHA-256 of the token string — the `tokens.token_hash` column."""
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)  # 64 chars, within 43..128
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest())
        .rstrip(b"=")
        .decode("ascii")
    )
    return verifier, challenge


def run_gatehouse(*args: str, timeout: float = 60.0, binary: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Runs one `gatehouse` command (e.g. `keys rotate`) to completion, text mode, output captured."""
    return subprocess.run(
        [str(binary or gatehouse_binary()), *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe_run(result: subprocess.CompletedProcess) -> str:
    return (
        f"command: {' '.join(map(str, result.args))}\nexit: {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def token_rows(db_path: Path, token: str) -> list[dict]:
    """All rows of table `tokens` whose token_hash matches `token`."""
    conn = sqlite3.connect(str(db_path), timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        # `subject` stores the user's stable id; `username` joins it back for readable assertions.
        rows = conn.execute(
            "SELECT tokens.*, users.username AS username FROM tokens "
            "LEFT JOIN users ON users.id = tokens.subject WHERE token_hash = ?",
            (token_hash(token),),
        ).fetchall()
        return [dict(r) for r in rows]
    finally:
        conn.close()


class _Form:
    def __init__(self, attrs: dict):
        self.attrs = attrs
        self.inputs: dict[str, str] = {}
        self.input_types: dict[str, str] = {}
        self.buttons: list[dict] = []


class FormParser(html.parser.HTMLParser):
    """Collects <form> elements with their <input>s and <button>s, and all element ids."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.ids: set[str] = set()
        self._current: Optional[_Form] = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "form":
            self._current = _Form(a)
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and "name" in a:
            self._current.inputs[a["name"]] = a.get("value", "")
            self._current.input_types[a["name"]] = a.get("type", "text").lower()
        elif tag == "button" and self._current is not None:
            self._current.buttons.append(a)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def parse_form(html_text: str, form_id: str) -> _Form:
    parser = FormParser()
    parser.feed(html_text)
    for f in parser.forms:
        if f.attrs.get("id") == form_id:
            return f
    raise AssertionError(
        f"no <form id={form_id!r}> in page; forms: {[f.attrs for f in parser.forms]}\n"
        f"page:\n{html_text[:2000]}"
    )


def page_ids(html_text: str) -> set[str]:
    parser = FormParser()
    parser.feed(html_text)
    return parser.ids


def hidden_fields(form: _Form) -> dict[str, str]:
    return {k: v for k, v in form.inputs.items() if form.input_types.get(k) == "hidden"}


# --------------------------------------------------------------------------
# callback server (the OAuth client's redirect_uri target)
# --------------------------------------------------------------------------


@dataclass
class CallbackHit:
    path: str
    query: dict  # first value of each query parameter
    raw_path: str


class CallbackServer:
    """A tiny loopback HTTP server that records each request and answers 200 "ok"."""

    def __init__(self):
        self.hits: list[CallbackHit] = []
        self._cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                parsed = urllib.parse.urlsplit(self.path)
                query = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
                with outer._cond:
                    outer.hits.append(CallbackHit(parsed.path, query, self.path))
                    outer._cond.notify_all()
                body = b"ok"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):  # keep pytest output quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="callback-server", daemon=True)
        self._thread.start()

    @property
    def web_redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    @property
    def spa_redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/spa/callback"

    def wait_for(self, predicate: Callable[[CallbackHit], bool], timeout: float = 15.0) -> CallbackHit:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for hit in self.hits:
                    if predicate(hit):
                        return hit
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"callback server got no matching request within {timeout}s; got: {[h.raw_path for h in self.hits]}"
                    )
                self._cond.wait(remaining)

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


@dataclass
class Credentials:
    """Random secrets/passwords so that log scanning is meaningful."""

    service_secret: str = field(default_factory=lambda: "demo-service-secret-" + secrets.token_hex(8))
    web_secret: str = field(default_factory=lambda: "demo-web-secret-" + secrets.token_hex(8))
    alice_password: str = field(default_factory=lambda: "alice-password-" + secrets.token_hex(8))
    bob_password: str = field(default_factory=lambda: "bob-password-" + secrets.token_hex(8))
    # only registered when a test passes a client using it in `extra_clients` (e.g. the token-exchange gateway)
    gateway_secret: str = field(default_factory=lambda: "demo-gateway-secret-" + secrets.token_hex(8))

    def all(self) -> list[str]:
        return [self.service_secret, self.web_secret, self.alice_password, self.bob_password, self.gateway_secret]


def jwt_client_yaml(creds: "Credentials", client_id: str = "demo-jwt", scopes: str = "orders:read") -> str:
    """A `clients:` item (for `extra_clients`) registered with access_token_format: jwt: its client_credentials tokens
    are self-contained JWTs (no row). Its secret is the service secret + "-jwt"."""
    return f"""\
  - id: {client_id}
    type: confidential
    secret: {creds.service_secret}-jwt
    grants: [client_credentials]
    scopes: [{scopes}]
    default_scopes: [orders:read]
    access_token_format: jwt
"""


def write_config(
    path: Path,
    callback: CallbackServer,
    creds: Credentials,
    *,
    refresh_token_reuse_grace: str = "1s",
    synchronous: str = "full",
    jwt_audience: Optional[str] = None,
    signing: Optional[dict] = None,
    extra_clients: str = "",
    access_token_lifetime: str = "1h",
    tokens_extra: Optional[dict] = None,
) -> Path:
    """Writes a config of the contract's shape. The listen port / issuer say 9000;
    the tests always pass `--port 0`, so the issuer must follow the real port.

    Optional (omitted unless given, so the default config is unchanged): `jwt_audience` (tokens.jwt_audience),
    `signing` (a flat mapping written as the `signing:` section, e.g. {"algorithm": "RS256", "jwks_max_age": "2s"}),
    `extra_clients` (YAML list items, indented by two spaces like the others, appended to `clients:`),
    `access_token_lifetime` (tokens.access_token_lifetime, default 1h), `tokens_extra` (further `tokens:` keys, e.g.
    {"jwt_max_lifetime": "5s", "exchange_reuse_period": "0s"})."""
    tokens_lines = f"  jwt_audience: {jwt_audience}\n" if jwt_audience is not None else ""
    for key, value in (tokens_extra or {}).items():
        tokens_lines += f"  {key}: {value}\n"
    signing_section = (
        "signing: {" + ", ".join(f"{k}: {v}" for k, v in signing.items()) + "}\n" if signing is not None else ""
    )
    if extra_clients and not extra_clients.endswith("\n"):
        extra_clients += "\n"
    text = f"""\
issuer: http://127.0.0.1:9000
listen: {{host: 127.0.0.1, port: 9000}}
storage:
  sqlite: {{file: auth.sqlite, synchronous: {synchronous}}}
tokens:
  access_token_lifetime: {access_token_lifetime}
  implicit_access_token_lifetime: 15m
  authorization_code_lifetime: 60s
  refresh_token_idle_lifetime: 14d
  refresh_token_absolute_lifetime: 90d
  refresh_token_reuse_grace: {refresh_token_reuse_grace}
{tokens_lines}{signing_section}pkce: {{require_for_confidential_clients: true}}
login:
  max_failures_before_delay: 5
  base_delay: 1s
  max_delay: 15m
  failure_window: 15m
  bcrypt_cost: 10
  session_lifetime: 8h
clients:
  - id: demo-service
    type: confidential
    secret: {creds.service_secret}
    grants: [client_credentials]
    scopes: [orders:read, orders:write]
    default_scopes: [orders:read, orders:write]
  - id: demo-web
    type: confidential
    secret: {creds.web_secret}
    grants: [authorization_code, refresh_token, password]
    scopes: [orders:read, orders:write]
    default_scopes: [orders:read, orders:write]
    redirect_uris: [{callback.web_redirect_uri}]
  - id: demo-spa
    type: public
    grants: [authorization_code, refresh_token, implicit]
    scopes: [orders:read, orders:write]
    default_scopes: [orders:read, orders:write]
    redirect_uris: [{callback.spa_redirect_uri}]
{extra_clients}users:
  - username: alice
    password: {creds.alice_password}
  - username: bob
    password: {creds.bob_password}
"""
    path.write_text(text)
    return path


# --------------------------------------------------------------------------
# the gatehouse process
# --------------------------------------------------------------------------


class _Drain(threading.Thread):
    """Reads a pipe line by line into a buffer so the pipe never fills."""

    def __init__(self, stream, name: str, on_line: Optional[Callable[[str], None]] = None):
        super().__init__(name=name, daemon=True)
        self._stream = stream
        self._on_line = on_line
        self._lock = threading.Lock()
        self._lines: list[str] = []

    def run(self):
        for raw in iter(self._stream.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            with self._lock:
                self._lines.append(line)
            if self._on_line is not None:
                try:
                    self._on_line(line)
                except Exception:  # never let a parse problem stop draining
                    pass
        self._stream.close()

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)


class _SupervisedProcess:
    """What GatehouseServer and GatewayProcess share: the process and its output drains (`_spawn`), the first
    `{"event":"listening"}` line that is theirs (`_is_own_listening_line`), and a checked SIGTERM stop."""

    _name = "gatehouse"

    def __init__(self):
        self.proc: Optional[subprocess.Popen] = None
        self.listening: Optional[dict] = None
        self._listening_event = threading.Event()
        self._stdout: Optional[_Drain] = None
        self._stderr: Optional[_Drain] = None
        self.exit_code: Optional[int] = None
        self.needed_sigkill = False

    def _is_own_listening_line(self, event: dict) -> bool:
        return True

    def _on_stdout_line(self, line: str):
        line = line.strip()
        if not line.startswith("{"):
            return
        obj = json.loads(line)
        if isinstance(obj, dict) and obj.get("event") == "listening" and self._is_own_listening_line(obj) and not self._listening_event.is_set():
            self.listening = obj
            self._listening_event.set()

    def _spawn(self, command: list[str], cwd: Path):
        """Starts `command` with stdout and stderr drained (stdout watched for the listening line)."""
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(cwd))
        self._stdout = _Drain(self.proc.stdout, f"{self._name}-stdout", self._on_stdout_line)
        self._stderr = _Drain(self.proc.stderr, f"{self._name}-stderr")
        self._stdout.start()
        self._stderr.start()

    @property
    def stdout(self) -> str:
        return self._stdout.text() if self._stdout else ""

    @property
    def stderr(self) -> str:
        return self._stderr.text() if self._stderr else ""

    @property
    def logs(self) -> str:
        return self.stdout + self.stderr

    def _join_drains(self, timeout: float = 5.0):
        for d in (self._stdout, self._stderr):
            if d is not None:
                d.join(timeout)

    def stop(self, check: bool = True) -> Optional[int]:
        """SIGTERM, wait up to 10 s, then SIGKILL. Idempotent.

        With check=True, asserts the process exited by itself after SIGTERM and
        with status 0 (graceful shutdown)."""
        if self.proc is None:
            return None
        if self.exit_code is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.needed_sigkill = True
                    self.proc.kill()
                    self.proc.wait(10)
            self.exit_code = self.proc.returncode
            self._join_drains()
        if check:
            assert self.proc.poll() is not None, f"{self._name} process is still running"
            assert not self.needed_sigkill, (
                f"{self._name} did not exit within {STOP_TIMEOUT}s of SIGTERM (had to SIGKILL it)\n"
                f"--- stderr (tail) ---\n{self.stderr[-4000:]}"
            )
            assert self.exit_code == 0, (
                f"{self._name} exited with status {self.exit_code} after SIGTERM (expected graceful exit 0)\n"
                f"--- stderr (tail) ---\n{self.stderr[-4000:]}"
            )
        return self.exit_code


class GatehouseServer(_SupervisedProcess):
    """One `gatehouse auth` process."""

    def __init__(self, binary: Path, config: Path, data_dir: Path, extra_args: tuple[str, ...] = (), port: Optional[int] = 0):
        super().__init__()
        self.binary = binary
        self.config = config
        self.data_dir = data_dir
        self.extra_args = extra_args
        # 0: a free port chosen by the server (the default); None: no --port, the file's listen port and issuer stand
        # (replicas behind one issuer)
        self.requested_port = port

    # -- lifecycle ---------------------------------------------------------

    def _is_own_listening_line(self, event: dict) -> bool:
        # The server's own line; with an `admin:` section the admin listener's ("service":"auth-admin") may come first.
        return event.get("service", "auth") == "auth"

    def start(self) -> "GatehouseServer":
        cmd = [
            str(self.binary), "auth",
            "--config", str(self.config),
            "--data-dir", str(self.data_dir),
            *(("--port", str(self.requested_port)) if self.requested_port is not None else ()),
            *self.extra_args,
        ]
        self._spawn(cmd, self.data_dir)

        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not self._listening_event.wait(0.1):
            if self.proc.poll() is not None:
                self._join_drains()
                pytest.fail(
                    f"gatehouse exited with code {self.proc.returncode} before printing the listening line.\n"
                    f"command: {' '.join(cmd)}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                self._force_kill()
                pytest.fail(
                    f"no {{\"event\":\"listening\"}} JSON line on stdout within {LISTEN_TIMEOUT}s "
                    f"(note: stdout to a pipe is block-buffered; the server must flush after that line).\n"
                    f"command: {' '.join(cmd)}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}",
                    pytrace=False,
                )

        info = self.listening
        assert info.get("service") == "auth", f"listening line: {info}"
        assert isinstance(info.get("port"), int) and info["port"] > 0, f"listening line: {info}"
        self._wait_healthy()
        return self

    def _wait_healthy(self):
        deadline = time.monotonic() + HEALTH_TIMEOUT
        last = None
        for _ in polling(max(0.0, deadline - time.monotonic()), 0.1):
            if self.proc.poll() is not None:
                break
            try:
                r = requests.get(self.url("/healthz"), timeout=2)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                last = repr(e)
        self.stop(check=False)
        pytest.fail(
            f"GET /healthz did not answer 200 within {HEALTH_TIMEOUT}s (last: {last}).\n--- stderr ---\n{self.stderr}",
            pytrace=False,
        )

    def _force_kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._join_drains()

    def kill9(self) -> int:
        """SIGKILL (kill -9) without any grace."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.exit_code = self.proc.returncode
        self._join_drains()
        return self.exit_code

    # -- accessors ---------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self.listening["port"])

    @property
    def issuer(self) -> str:
        return self.listening["issuer"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def token_url(self) -> str:
        return self.url("/token")

    @property
    def authorize_url(self) -> str:
        return self.url("/authorize")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "auth.sqlite"


@dataclass
class AuthEnv:
    """Everything a test needs: the running server, the callback server, the secrets."""

    server: GatehouseServer
    callback: CallbackServer
    creds: Credentials
    config_path: Path
    data_dir: Path
    # strings that must never appear in the server's logs (tokens, codes, ...)
    sensitive: list[str] = field(default_factory=list)

    def remember(self, *values):
        for v in values:
            if v:
                self.sensitive.append(str(v))

    def assert_no_secrets_in_logs(self):
        logs = self.server.logs
        leaked = [v for v in (self.creds.all() + self.sensitive) if v and v in logs]
        assert not leaked, f"secret material found in the server's stdout/stderr: {[v[:12] + '…' for v in leaked]}"


# --------------------------------------------------------------------------
# driving /authorize -> /login -> /consent without a browser
# --------------------------------------------------------------------------


@dataclass
class AuthorizationResult:
    location: str  # the final Location header (the client's redirect_uri + query)
    query: dict  # its query parameters (first value of each)
    responses: list  # every requests.Response of the flow, in order
    consent_shown: bool


def _location(resp: requests.Response) -> str:
    assert "Location" in resp.headers, (
        f"{resp.request.method} {resp.url} -> {resp.status_code} without a Location header:\n{resp.text[:1500]}"
    )
    return urllib.parse.urljoin(resp.url, resp.headers["Location"])


def _expect_303(resp: requests.Response):
    assert resp.status_code == 303, (
        f"{resp.request.method} {resp.url} -> expected 303, got {resp.status_code}:\n{resp.text[:1500]}"
    )


def _is_server_path(url: str, server: "GatehouseServer", path: str) -> bool:
    u = urllib.parse.urlsplit(url)
    return u.port == server.port and u.path == path


def drive_authorization(
    http: requests.Session,
    server: "GatehouseServer",
    authorize_url: str,
    username: str,
    password: str,
    decision: str = "approve",
) -> AuthorizationResult:
    """GET authorize -> 303 /login -> POST credentials -> 303 /consent -> POST decision.

    Never follows the final redirect to the client: returns its Location."""
    responses = []
    r = http.get(authorize_url, allow_redirects=False)
    responses.append(r)
    _expect_303(r)
    loc = _location(r)
    assert _is_server_path(loc, server, "/login"), f"authorize should send a fresh browser to /login, went to {loc}"
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query).get("request"), loc

    r = http.get(loc, allow_redirects=False)
    responses.append(r)
    assert r.status_code == 200, f"GET {loc} -> {r.status_code}: {r.text[:1500]}"
    form = parse_form(r.text, "login-form")
    assert form.attrs.get("method", "").lower() == "post", form.attrs
    for name in ("username", "password", "csrf_token", "request"):
        assert name in form.inputs, f"login form lacks input {name!r}: {form.inputs.keys()}"
    ids = page_ids(r.text)
    for element_id in ("username", "password", "login-submit"):
        assert element_id in ids, f"login page lacks element id {element_id!r}"
    data = hidden_fields(form)
    assert data.get("csrf_token"), "empty csrf_token on the login form"
    data.update(username=username, password=password)
    action = urllib.parse.urljoin(r.url, form.attrs.get("action") or "/login")
    r = http.post(action, data=data, allow_redirects=False)
    responses.append(r)
    _expect_303(r)
    loc = _location(r)

    consent_shown = False
    if _is_server_path(loc, server, "/consent"):
        consent_shown = True
        r = http.get(loc, allow_redirects=False)
        responses.append(r)
        assert r.status_code == 200, f"GET {loc} -> {r.status_code}: {r.text[:1500]}"
        form = parse_form(r.text, "consent-form")
        assert form.attrs.get("method", "").lower() == "post", form.attrs
        for name in ("csrf_token", "request"):
            assert name in form.inputs, f"consent form lacks input {name!r}: {form.inputs.keys()}"
        ids = page_ids(r.text)
        assert "consent-approve" in ids and "consent-deny" in ids, "consent page lacks consent-approve/consent-deny"
        data = hidden_fields(form)
        data["decision"] = decision
        action = urllib.parse.urljoin(r.url, form.attrs.get("action") or "/consent")
        r = http.post(action, data=data, allow_redirects=False)
        responses.append(r)
        _expect_303(r)
        loc = _location(r)

    query = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query).items()}
    return AuthorizationResult(loc, query, responses, consent_shown)


def assert_oauth_error(resp: requests.Response, status, error):
    """RFC 6749 §5.2 error response: status, JSON body with error + error_description, no-store."""
    statuses = status if isinstance(status, (tuple, list, set)) else (status,)
    errors = error if isinstance(error, (tuple, list, set)) else (error,)
    assert resp.status_code in statuses, f"expected HTTP {statuses}, got {resp.status_code}: {resp.text[:500]}"
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.startswith("application/json"), f"Content-Type {ctype!r}"
    body = resp.json()
    assert body.get("error") in errors, f"expected error in {errors}, got {body}"
    assert isinstance(body.get("error_description"), str) and body["error_description"], f"no error_description: {body}"
    assert "no-store" in resp.headers.get("Cache-Control", ""), f"Cache-Control: {resp.headers.get('Cache-Control')!r}"
    assert resp.headers.get("X-Request-Id"), "missing X-Request-Id header"
    return body


def polling(timeout: float, interval: float):
    """The tries of a poll loop whose body is more than a predicate: yields the seconds elapsed before each try,
    every `interval` seconds, until `timeout` seconds have passed; the caller breaks out when its condition holds
    and asserts after the loop (as `wait_until` does for a plain predicate). The one place tests pause between tries."""
    start = time.monotonic()
    while True:
        yield time.monotonic() - start
        if time.monotonic() - start >= timeout:
            return
        time.sleep(interval)  # the polling interval


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01, what: str = "condition") -> None:
    """Polls `predicate` until it holds; fails, naming `what`, after `timeout` seconds."""
    for _ in polling(timeout, interval):
        if predicate():
            return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def unread_bytes(port: int, peer_port: int) -> Optional[int]:
    """Bytes the kernel holds for the loopback connection local `port` <-> `peer_port` that the process owning it has
    not read yet (rx_queue in /proc/net/tcp and tcp6), or None while there is no such connection. Lets a test assert
    that a server has read what a client sent, instead of sleeping until it probably has."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            if int(local.rsplit(":", 1)[1], 16) == port and int(remote.rsplit(":", 1)[1], 16) == peer_port:
                return int(queues.split(":")[1], 16)
    return None


def start_gateway_process(config: Path) -> subprocess.Popen:
    """`gatehouse gateway --config FILE`, returned once it printed its listening line. stderr is discarded and
    stdout stays open for later JSON events (reload notices), so callers that need them read `proc.stdout`."""
    proc = subprocess.Popen(
        [str(gatehouse_binary()), "gateway", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    deadline = time.monotonic() + LISTEN_TIMEOUT
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line).get("event") == "listening":
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    pytest.fail(f"gatehouse gateway never printed its listening line (exit {proc.poll()})", pytrace=False)


# --------------------------------------------------------------------------
# gateway tests with token validation: free ports, an echo backend, a managed gateway process
# --------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port that was free a moment ago (for processes whose port must be known before they start)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EchoRequest:
    """One request as the echo backend received it."""

    method: str
    path: str
    headers: list  # (name, value) pairs in arrival order

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class EchoBackend:
    """A threaded HTTP/1.1 keep-alive backend on 127.0.0.1 port 0 that records every request (method, path,
    headers) and answers 200 with them as JSON: {"path":..., "headers": [[name, value], ...]}."""

    def __init__(self, name: str = "backend"):
        self.name = name
        self.requests: list[EchoRequest] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                import socket

                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                seen = EchoRequest(self.command, self.path, list(self.headers.items()))
                with outer._lock:
                    outer.requests.append(seen)
                body = json.dumps({"backend": outer.name, "method": seen.method, "path": seen.path, "headers": seen.headers}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _any

            def log_message(self, fmt, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # bursts of connections from the gateway's pools

            def handle_error(self, request, client_address):
                pass

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"echo-{name}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[EchoRequest]:
        with self._lock:
            return list(self.requests)

    def by_request_id(self, request_id: str) -> list[EchoRequest]:
        return [r for r in self.snapshot() if r.header("X-Request-Id") == request_id]

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


def accept_forever(listener: socket.socket, serve: Callable[[socket.socket], None]) -> None:
    """Runs `serve(conn)` on a thread for every connection `listener` accepts, until the listener is closed."""
    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


class RawUpstream:
    """A raw TCP upstream: accepts connections and hands each to `behaviour(conn)` in its own thread."""

    def __init__(self, behaviour: Callable[[socket.socket], None]):
        self.behaviour = behaviour
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[bytes] = []
        self._closed = False
        self._probes: dict[int, threading.Event] = {}  # local port of a `sync` probe -> set when it is accepted
        self.thread = threading.Thread(target=self._accept_loop, name="raw-upstream", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self):
        while not self._closed:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self.lock:
                probe = self._probes.pop(peer[1], None)
                if probe is None:
                    self.connections += 1
            if probe is not None:
                conn.close()
                probe.set()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def sync(self, timeout: float = 5.0) -> int:
        """Returns `connections` once every connection made to this upstream before the call has been accepted and
        counted. The kernel hands completed connections to accept() in order, so a probe connected now is accepted
        after all of them; it is not counted and gets no `behaviour`. Replaces "sleep and hope the count caught up"
        where a test asserts that something did NOT connect."""
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind(("127.0.0.1", 0))
            accepted = threading.Event()
            with self.lock:
                self._probes[probe.getsockname()[1]] = accepted
            probe.connect(("127.0.0.1", self.port))
            assert accepted.wait(timeout), f"the upstream did not accept a probe connection within {timeout}s"
        finally:
            probe.close()
        with self.lock:
            return self.connections

    def _serve(self, conn: socket.socket):
        try:
            self.behaviour(conn)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def read_head(self, conn: socket.socket) -> bytes:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        with self.lock:
            self.requests.append(data)
        return data

    def close(self):
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class GatewayProcess(_SupervisedProcess):
    """One `gatehouse gateway --config FILE --log-level LEVEL` process: stdout/stderr drained into buffers (so tests
    can scan them), the port from the `{"event":"listening","service":"gateway","ports":[N]}` line, the admin
    listener (if the config has one) at `admin_port`, SIGTERM on stop. Binary: `binary`, else gatehouse_binary()."""

    _name = "gateway"

    def __init__(self, config: Path, admin_port: Optional[int] = None, log_level: str = "info", binary: Optional[Path] = None):
        super().__init__()
        self.binary = binary or gatehouse_binary()
        self.config = config
        self.admin_port = admin_port
        self.log_level = log_level

    @property
    def command(self) -> list[str]:
        return [str(self.binary), "gateway", "--config", str(self.config), "--log-level", self.log_level]

    def start(self) -> "GatewayProcess":
        self._spawn(self.command, self.config.parent)
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not self._listening_event.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(check=False)
                pytest.fail(
                    f"gateway exited ({self.proc.returncode}) or printed no listening line within {LISTEN_TIMEOUT}s.\n"
                    f"command: {' '.join(self.command)}\nconfig:\n{self.config.read_text()}\n"
                    f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}",
                    pytrace=False,
                )
        info = self.listening
        assert info.get("service") == "gateway", f"listening line: {info}"
        ports = info.get("ports")
        assert isinstance(ports, list) and ports and all(isinstance(p, int) and p > 0 for p in ports), f"listening line: {info}"
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.listening["ports"][0])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin_url(self, path: str) -> str:
        assert self.admin_port, "this gateway has no admin listener"
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def readyz(self) -> Optional[int]:
        """Status of GET /readyz, or None while the admin listener does not answer."""
        try:
            return requests.get(self.admin_url("/readyz"), timeout=2).status_code
        except requests.RequestException:
            return None

    def wait_ready(self, timeout: float = 15.0):
        for _ in polling(timeout, 0.05):
            if self.readyz() == 200:
                return
            if self.proc.poll() is not None:
                break
        pytest.fail(f"gateway /readyz did not answer 200 within {timeout}s\n--- stderr ---\n{self.stderr[-4000:]}", pytrace=False)

    def token_cache(self) -> dict:
        r = requests.get(self.admin_url("/token-cache"), timeout=5)
        assert r.status_code == 200, f"GET /token-cache -> {r.status_code}: {r.text[:300]}"
        return r.json()

    def terminate(self):
        """SIGTERM without waiting (stop() afterwards collects the exit)."""
        self.proc.send_signal(signal.SIGTERM)

    def kill(self):
        """SIGKILL now (counts as needing SIGKILL, so a later stop(check=True) fails)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self.needed_sigkill = True
        self._join_drains()



# --------------------------------------------------------------------------
# `gatehouse demo` as a managed process
# --------------------------------------------------------------------------


class DemoProcess:
    """`gatehouse demo` on the given ports (`auth`, `gateway`, `backend`, `admin`, and `auth_admin` — a free port when
    left out), with config/demo or `config_dir`. Records every JSON event on stdout; `wait_listening` waits for services."""

    def __init__(self, data_dir: Path, ports: dict, config_dir: Optional[Path] = None):
        self.ports = ports
        ports.setdefault("auth_admin", free_port())
        self.command = [
            str(gatehouse_binary()), "demo", "--data-dir", str(data_dir), "--auth-port", str(ports["auth"]),
            "--gateway-port", str(ports["gateway"]), "--backend-port", str(ports["backend"]), "--admin-port", str(ports["admin"]),
            "--auth-admin-port", str(ports["auth_admin"]), "--config-dir", str(config_dir or REPO_ROOT / "config" / "demo"),
        ]
        self.listening: dict[str, dict] = {}
        self.events: list[str] = []  # every JSON event on stdout, in order ("listening", "reloaded", ...)
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(data_dir.parent))
        self._out = _Drain(self.proc.stdout, "demo-stdout", self._on_line)
        self._err = _Drain(self.proc.stderr, "demo-stderr")
        self._out.start()
        self._err.start()

    def _on_line(self, line: str):
        line = line.strip()
        if line.startswith("{"):
            obj = json.loads(line)
            self.events.append(obj.get("event"))
            if obj.get("event") == "listening":
                with self._cond:
                    self.listening[obj.get("service")] = obj
                    self._cond.notify_all()

    def wait_listening(self, services: set[str]):
        deadline = time.monotonic() + LISTEN_TIMEOUT
        with self._cond:
            while not services <= set(self.listening):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    pytest.fail(
                        f"demo did not start {services - set(self.listening)} (exit {self.proc.poll()})\n"
                        f"--- stdout ---\n{self.logs[-4000:]}",
                        pytrace=False,
                    )
                self._cond.wait(min(remaining, 0.2))

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
