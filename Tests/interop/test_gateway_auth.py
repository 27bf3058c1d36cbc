"""End-to-end tests of the gateway's per-route bearer-token validation, with real processes only: the real
`gatehouse auth` (temporary data dir, `--port 0` unless a test needs the port up front), the real
`gatehouse gateway --config F` (listener on port 0, admin listener on a free port), and a Python echo backend on
port 0 that records the headers it received. Everything listens on loopback and is stopped at the end.

What is checked (see each test's docstring):
 1. every grant's token passes a route requiring its scope and gets 403 insufficient_scope on one requiring another;
 2. missing / malformed / unknown / wrong-kind tokens get the RFC 6750 answers (status, WWW-Authenticate, JSON
    body whose request_id is the X-Request-Id header);
 3. a token revoked at the AS (RFC 7009) is refused within authorization_server.cache.max_ttl;
 4. an expired JWT is refused (clock_skew 0s);
 5. `gatehouse keys rotate` at the AS while traffic runs: no failed request, new-kid JWTs reach the backend;
 6. readiness waits for discovery; with the AS stopped a cached token still passes, an uncached one gets 503 +
    Retry-After; the gateway recovers when the AS is back; a valid JWT signed with a rotated key the gateway cannot
    fetch (AS down) is 503 too, not 401, and passes once the AS is back;
 7. 1,000 concurrent requests with one new token make exactly one exchange;
 8. the JWT the backend receives verifies with PyJWT against the AS's JWKS;
 9. no opaque token or JWT appears in the gateway's stdout/stderr;
10. the demo backend's own verifier (`gatehouse demo`) refuses missing, tampered, wrong-audience, foreign-key and
    `alg: none` tokens and takes the gateway-issued JWT.
"""

from __future__ import annotations

import base64
import glob
import json
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gatehouse_testlib import (  # noqa: I001
    polling,
    DemoProcess,
    LISTEN_TIMEOUT,
    REPO_ROOT,
    STOP_TIMEOUT,
    CallbackServer,
    Credentials,
    EchoBackend,
    GatehouseServer,
    GatewayProcess,
    describe_run,
    drive_authorization,
    free_port,
    gatehouse_binary,
    pkce_pair,
    run_gatehouse,
    wait_until,
    write_config,
)

EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
GATEWAY_CLIENT = "gatehouse-gateway"
# Exchanges tokens in tests: its JWTs carry act.sub = test-exchanger, so the gateway takes them from clients (it
# refuses only JWTs minted for its own backends, act.sub = GATEWAY_CLIENT).
EXCHANGER_CLIENT = "test-exchanger"
JWT_CLIENT = "test-jwt-client"  # access_token_format: jwt (RFC 9068 JWTs straight from the token endpoint)
PARTNER_CLIENT = "demo-partner"  # client_credentials, its tokens' JWTs carry aud = PARTNER_AUDIENCE
AUDIENCE = "http://127.0.0.1:8080"  # the AS's tokens.jwt_audience
PARTNER_AUDIENCE = "https://partner.example"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]

# Every token and JWT this module handles (the gateway logs must contain none of them) and every gateway started.
SENSITIVE: list[str] = []
GATEWAYS: list[GatewayProcess] = []
OTHER_LOGS: list[Callable[[], str]] = []  # further processes whose logs must not contain tokens (the demo)


def remember(*values):
    for v in values:
        if v:
            SENSITIVE.append(str(v))


# --------------------------------------------------------------------------
# the authorization server
# --------------------------------------------------------------------------


def _extra_clients(creds: Credentials) -> str:
    return f"""\
  - id: {GATEWAY_CLIENT}
    type: confidential
    secret: {creds.gateway_secret}
    grants: ['{EXCHANGE_GRANT}']
    introspect: true
  - id: {PARTNER_CLIENT}
    type: confidential
    secret: {creds.service_secret}-partner
    grants: [client_credentials]
    scopes: [orders:read]
    default_scopes: [orders:read]
    audience: [{PARTNER_AUDIENCE}]
  - id: {EXCHANGER_CLIENT}
    type: confidential
    secret: {creds.gateway_secret}-exchanger
    grants: ['{EXCHANGE_GRANT}']
  - id: {JWT_CLIENT}
    type: confidential
    secret: {creds.service_secret}-jwt
    grants: [client_credentials]
    scopes: [orders:read, orders:write]
    access_token_format: jwt
"""


@dataclass
class AuthServer:
    server: GatehouseServer
    creds: Credentials
    callback: CallbackServer
    config_path: Path
    data_dir: Path

    @property
    def issuer(self) -> str:
        return self.server.issuer

    def _token(self, auth, data) -> dict:
        r = requests.post(self.server.token_url, data=data, auth=auth, timeout=10)
        assert r.status_code == 200, f"POST /token {data.get('grant_type')} -> {r.status_code}: {r.text[:500]}"
        body = r.json()
        remember(body.get("access_token"), body.get("refresh_token"))
        return body

    def client_credentials(self, scope: str = "orders:read", client: str = "demo-service") -> dict:
        secret = self.creds.service_secret + {PARTNER_CLIENT: "-partner", JWT_CLIENT: "-jwt"}.get(client, "")
        return self._token((client, secret), {"grant_type": "client_credentials", "scope": scope})

    def cc_token(self, scope: str = "orders:read", client: str = "demo-service") -> str:
        return self.client_credentials(scope, client)["access_token"]

    def password(self, username: str = "alice", scope: str = "orders:read") -> dict:
        pw = {"alice": self.creds.alice_password, "bob": self.creds.bob_password}[username]
        return self._token(
            ("demo-web", self.creds.web_secret), {"grant_type": "password", "username": username, "password": pw, "scope": scope}
        )

    def refresh(self, refresh_token: str) -> dict:
        return self._token(("demo-web", self.creds.web_secret), {"grant_type": "refresh_token", "refresh_token": refresh_token})

    def authorization_code(self, username: str = "bob", scope: str = "orders:read") -> dict:
        """demo-spa (public) with PKCE S256, through /authorize -> /login -> /consent."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(8)
        params = {
            "response_type": "code", "client_id": "demo-spa", "redirect_uri": self.callback.spa_redirect_uri,
            "scope": scope, "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
        }
        with requests.Session() as browser:
            result = drive_authorization(
                browser, self.server, self.server.authorize_url + "?" + urllib.parse.urlencode(params), username, self._pw(username)
            )
        assert result.query.get("state") == state and result.query.get("code"), result.location
        remember(result.query["code"])
        r = requests.post(
            self.server.token_url,
            data={
                "grant_type": "authorization_code", "client_id": "demo-spa", "code": result.query["code"],
                "redirect_uri": self.callback.spa_redirect_uri, "code_verifier": verifier,
            },
            timeout=10,
        )
        assert r.status_code == 200, f"code redemption -> {r.status_code}: {r.text[:500]}"
        body = r.json()
        remember(body.get("access_token"), body.get("refresh_token"))
        return body

    def implicit(self, username: str = "alice", scope: str = "orders:read") -> dict:
        """demo-spa, response_type=token: the access token comes back in the redirect's fragment."""
        state = secrets.token_urlsafe(8)
        params = {
            "response_type": "token", "client_id": "demo-spa", "redirect_uri": self.callback.spa_redirect_uri,
            "scope": scope, "state": state,
        }
        with requests.Session() as browser:
            result = drive_authorization(
                browser, self.server, self.server.authorize_url + "?" + urllib.parse.urlencode(params), username, self._pw(username)
            )
        fragment = urllib.parse.urlsplit(result.location).fragment
        values = {k: v[0] for k, v in urllib.parse.parse_qs(fragment).items()}
        assert values.get("access_token") and values.get("state") == state, f"implicit redirect: {result.location[:300]}"
        assert str(values.get("token_type", "")).lower() == "bearer", values
        remember(values["access_token"])
        return values

    def _pw(self, username: str) -> str:
        return {"alice": self.creds.alice_password, "bob": self.creds.bob_password}[username]

    def exchange_response(self, subject_token: str, *, as_gateway: bool = False, **extra) -> requests.Response:
        data = {
            "grant_type": EXCHANGE_GRANT, "subject_token": subject_token, "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": JWT_TOKEN_TYPE, **extra,
        }
        auth = (GATEWAY_CLIENT, self.creds.gateway_secret) if as_gateway else (EXCHANGER_CLIENT, self.creds.gateway_secret + "-exchanger")
        return requests.post(self.server.token_url, data=data, auth=auth, timeout=10)

    def exchange(self, subject_token: str, *, as_gateway: bool = False, **extra) -> str:
        """The JWT for an opaque access token, from the AS itself: exchanged by test-exchanger (a delegated JWT the
        gateway takes from clients), or with `as_gateway` by the gateway's own client (a backend JWT it refuses)."""
        r = self.exchange_response(subject_token, as_gateway=as_gateway, **extra)
        assert r.status_code == 200, f"token exchange -> {r.status_code}: {r.text[:500]}"
        token = r.json()["access_token"]
        assert token.count(".") == 2, token[:80]
        remember(token)
        return token

    def revoke(self, token: str, client: str, secret: str) -> requests.Response:
        return requests.post(self.server.url("/revoke"), data={"token": token, "token_type_hint": "access_token"}, auth=(client, secret), timeout=10)

    @property
    def jwks_uri(self) -> str:
        meta = requests.get(self.server.url("/.well-known/oauth-authorization-server"), timeout=10).json()
        return meta["jwks_uri"]

    def jwks_kids(self) -> list[str]:
        return [k["kid"] for k in requests.get(self.jwks_uri, timeout=10).json()["keys"]]


def start_auth_server(root: Path, callback: CallbackServer, *, port: int = 0, data_dir: Optional[Path] = None, **config) -> AuthServer:
    """A `gatehouse auth` with the demo-like clients plus gatehouse-gateway and demo-partner."""
    root.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or root / "data"
    data_dir.mkdir(exist_ok=True)
    creds = config.pop("creds", None) or Credentials()
    config_path = root / "auth.yaml"
    if not config_path.exists():
        write_config(config_path, callback, creds, jwt_audience=AUDIENCE, extra_clients=_extra_clients(creds), **config)
    server = GatehouseServer(gatehouse_binary(), config_path, data_dir, port=port).start()
    return AuthServer(server, creds, callback, config_path, data_dir)


# --------------------------------------------------------------------------
# the gateway
# --------------------------------------------------------------------------


def route(name: str, prefix: str, mode: Optional[str] = None, **auth) -> dict:
    r = {"name": name, "match": {"path_prefix": prefix}, "cluster": "backend"}
    if mode is not None:
        r["auth"] = {"mode": mode, **auth}
    return r


MAIN_ROUTES = [
    route("public", "/public/", "none"),
    route("plain", "/plain/"),  # no auth section at all
    route("read", "/read/", "any", scopes_all_of=["orders:read"], audiences=[AUDIENCE]),
    route("write", "/write/", "any", scopes_all_of=["orders:write"]),
    route("both", "/both/", "any", scopes_all_of=["orders:read", "orders:write"]),
    route("any-of", "/any-of/", "any", scopes_any_of=["orders:write", "orders:admin"]),
    route("jwt-read", "/jwt-read/", "jwt", scopes_all_of=["orders:read"]),
    route("jwt-write", "/jwt-write/", "jwt", scopes_all_of=["orders:write"]),
    route("opaque", "/opaque/", "opaque"),
    route("realm", "/realm/", "any", realm="Orders API"),
    route("partner", "/partner/", "any", audiences=[PARTNER_AUDIENCE]),
    route("foreign-iss", "/foreign-iss/", "any", issuers=["https://issuer.example"]),
]


def gateway_config(
    auth: "AuthServer | str",
    secret: Optional[str],
    backend: EchoBackend,
    admin_port: int,
    routes: list[dict],
    *,
    max_ttl: str = "2s",
    negative_ttl: str = "2s",
    jwks: Optional[dict] = None,
    clock_skew: str = "0s",
    forward_header: str = "Authorization",
    discovery_retry: Optional[dict] = None,
    pool_max_connections: int = 64,
) -> dict:
    issuer = auth if isinstance(auth, str) else auth.issuer
    secret = secret if secret is not None else auth.creds.gateway_secret
    return {
        "listeners": [{"host": "127.0.0.1", "port": 0}],
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "authorization_server": {
            "issuer": issuer,
            "client_id": GATEWAY_CLIENT,
            "client_secret": secret,
            "exchange": "token_exchange",
            "cache": {"max_ttl": max_ttl, "negative_ttl": negative_ttl, "capacity": 10000},
            "jwks": jwks or {"min_ttl": "1s", "max_ttl": "5s", "unknown_kid_interval": "1s"},
            "discovery_retry": discovery_retry or {"initial": "50ms", "max": "500ms"},
            "clock_skew": clock_skew,
            "forward_header": forward_header,
        },
        "clusters": [{"name": "backend", "targets": [backend.url], "pool": {"max_connections": pool_max_connections, "max_idle": pool_max_connections}}],
        "routes": routes,
    }


def start_gateway(directory: Path, config: dict, name: str = "gateway", *, wait_ready: bool = True) -> GatewayProcess:
    """Writes `config` (JSON is YAML) and starts `gatehouse gateway --log-level debug` (the most talkative level the
    secrets check covers)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    gw = GatewayProcess(path, admin_port=config["admin"]["port"], log_level="debug")
    GATEWAYS.append(gw)
    gw.start()
    if wait_ready:
        gw.wait_ready()
    return gw


# --------------------------------------------------------------------------
# requests and assertions
# --------------------------------------------------------------------------


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


HTTP = session()


@dataclass
class Sent:
    response: requests.Response
    request_id: str
    backend: EchoBackend

    @property
    def status(self) -> int:
        return self.response.status_code

    def upstream(self) -> list:
        """The requests the backend received for this one (by X-Request-Id)."""
        return self.backend.by_request_id(self.request_id)

    def only_upstream(self):
        seen = self.upstream()
        assert len(seen) == 1, f"the backend received {len(seen)} requests for {self.request_id}, expected 1"
        return seen[0]

    def describe(self) -> str:
        r = self.response
        return f"{r.request.method} {r.request.path_url} -> {r.status_code} {dict(r.headers)} {r.text[:400]}"


def send(gw: GatewayProcess, backend: EchoBackend, path: str, token: Optional[str] = None, *, headers: Optional[dict] = None, method: str = "GET", http: requests.Session = HTTP) -> Sent:
    request_id = "t-" + uuid.uuid4().hex
    h = {"X-Request-Id": request_id}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    r = http.request(method, gw.url(path), headers=h, timeout=15)
    return Sent(r, request_id, backend)


_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))\s*(?:,|$)')


def parse_challenge(value: str) -> tuple[str, dict]:
    """`Bearer realm="x", error="y"` -> ("Bearer", {"realm": "x", "error": "y"}); asserts the syntax."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _AUTH_PARAM.match(rest, pos)
        assert m and m.end() > pos, f"unparseable WWW-Authenticate {value!r} at {rest[pos:]!r}"
        name = m.group(1).lower()
        assert name not in params, f"parameter {name} twice in {value!r}"
        params[name] = re.sub(r"\\(.)", r"\1", m.group(2)) if m.group(2) is not None else m.group(3)
        pos = m.end()
    return scheme, params


def assert_bearer_error(sent: Sent, status: int, error: Optional[str], *, realm: str = "gatehouse", scope: Optional[str] = None, token: Optional[str] = None) -> dict:
    """RFC 6750 §3: status, `WWW-Authenticate: Bearer realm=..[, error=..][, scope=..]`, and the gateway's JSON body
    {"error", "message", "request_id" == X-Request-Id}. Nothing reached the backend; the token is not echoed."""
    r = sent.response
    assert r.status_code == status, f"expected {status}: {sent.describe()}"
    challenge = r.headers.get("WWW-Authenticate")
    assert challenge, f"no WWW-Authenticate: {sent.describe()}"
    scheme, params = parse_challenge(challenge)
    assert scheme == "Bearer", challenge
    assert params.get("realm") == realm, f"realm should be {realm!r}: {challenge!r}"
    if error is None:
        assert "error" not in params and "error_description" not in params, (
            f"a request without credentials gets a bare challenge (RFC 6750 §3.1): {challenge!r}"
        )
    else:
        assert params.get("error") == error, f"expected error={error!r}: {challenge!r}"
    if scope is not None:
        assert params.get("scope") == scope, f"expected scope={scope!r}: {challenge!r}"
    ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith("application/json"), f"Content-Type {ctype!r}: {sent.describe()}"
    body = r.json()
    assert body.get("error") == (error or "unauthorized"), body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert body.get("request_id") and body["request_id"] == r.headers.get("X-Request-Id"), (body, r.headers.get("X-Request-Id"))
    assert body["request_id"] == sent.request_id, "the client's well-formed X-Request-Id should be kept"
    assert not sent.upstream(), f"a refused request reached the backend: {sent.describe()}"
    if token:
        assert token not in r.text and token not in challenge, "the error response echoes the token"
    return body


def bearer_jwt_of(seen) -> str:
    value = seen.header("Authorization")
    assert value and value.startswith("Bearer "), f"the backend got Authorization {value!r}"
    return value[len("Bearer "):]


def unverified(token: str) -> tuple[dict, dict]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def assert_forwarded_jwt(sent: Sent, opaque: Optional[str], *, client_id: str, scope_has: str = "orders:read") -> str:
    """200, and the backend got exactly `Authorization: Bearer <at+jwt>` standing for the token (never the opaque one)."""
    assert sent.status == 200, sent.describe()
    seen = sent.only_upstream()
    values = seen.header_values("Authorization")
    assert len(values) == 1, f"the backend got {len(values)} Authorization headers: {values}"
    token = bearer_jwt_of(seen)
    remember(token)
    if opaque is not None:
        assert token != opaque, "the opaque token was forwarded instead of a JWT"
        for _, v in seen.headers:
            assert opaque not in v, "the client's opaque token reached the backend"
    header, claims = unverified(token)
    assert header.get("typ") == "at+jwt", header
    assert claims.get("client_id") == client_id, claims
    assert scope_has in claims.get("scope", "").split(), claims
    return token


# --------------------------------------------------------------------------
# module fixtures: one AS, one backend, the main gateway
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cb(callback_server):
    return callback_server  # conftest's, under the short name these tests use


@pytest.fixture(scope="module")
def backend():
    b = EchoBackend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def main_as(gatehouse_bin, cb, tmp_path_factory):
    env = start_auth_server(tmp_path_factory.mktemp("gw-auth-main"), cb)
    yield env
    env.server.stop(check=False)


@pytest.fixture(scope="module")
def main_gw(main_as, backend, tmp_path_factory):
    """Routes MAIN_ROUTES; cache max_ttl 2s, negative_ttl 2s; JWT in Authorization."""
    gw = start_gateway(tmp_path_factory.mktemp("gw-main"), gateway_config(main_as, None, backend, free_port(), MAIN_ROUTES))
    yield gw
    gw.stop(check=False)


# --------------------------------------------------------------------------
# 1. every grant: its scope passes, another scope is 403 insufficient_scope
# --------------------------------------------------------------------------


GRANTS = ["client_credentials", "password", "authorization_code", "refresh_token", "implicit"]


def _token_for(grant: str, env: AuthServer) -> tuple[str, str]:
    """(opaque access token with scope orders:read from `grant`, client_id it was issued to)."""
    if grant == "client_credentials":
        return env.client_credentials("orders:read")["access_token"], "demo-service"
    if grant == "password":
        return env.password("alice", "orders:read")["access_token"], "demo-web"
    if grant == "authorization_code":
        body = env.authorization_code("bob", "orders:read")
        return body["access_token"], "demo-spa"
    if grant == "refresh_token":
        first = env.password("bob", "orders:read")
        assert first.get("refresh_token"), first
        refreshed = env.refresh(first["refresh_token"])
        assert refreshed["access_token"] != first["access_token"]
        return refreshed["access_token"], "demo-web"
    if grant == "implicit":
        values = env.implicit("alice", "orders:read")
        assert values.get("scope", "orders:read").split() == ["orders:read"], values
        return values["access_token"], "demo-spa"
    raise AssertionError(grant)


@pytest.mark.parametrize("grant", GRANTS)
def test_grant_token_passes_its_scope_and_fails_another(main_as, main_gw, backend, grant):
    """An orders:read token from each grant: 200 on /read/ (any mode, scopes_all_of [orders:read]) with the exchanged
    JWT forwarded; 403 insufficient_scope scope="orders:write" on /write/; the same for the JWT form of the token on
    the jwt-mode routes; scopes_any_of and multi-scope requirements report the scopes they need."""
    opaque, client_id = _token_for(grant, main_as)
    assert opaque.count(".") != 2, "expected an opaque access token from the AS"

    ok = send(main_gw, backend, f"/read/{grant}", opaque)
    forwarded = assert_forwarded_jwt(ok, opaque, client_id=client_id)
    # A second request is served from the cache with the same JWT.
    again = send(main_gw, backend, f"/read/{grant}/again", opaque)
    assert assert_forwarded_jwt(again, opaque, client_id=client_id) == forwarded

    assert_bearer_error(send(main_gw, backend, f"/write/{grant}", opaque), 403, "insufficient_scope", scope="orders:write", token=opaque)
    assert_bearer_error(
        send(main_gw, backend, f"/both/{grant}", opaque), 403, "insufficient_scope", scope="orders:read orders:write", token=opaque
    )
    assert_bearer_error(
        send(main_gw, backend, f"/any-of/{grant}", opaque), 403, "insufficient_scope", scope="orders:admin orders:write", token=opaque
    )

    # The JWT standing for the same token, verified locally on jwt-mode routes.
    token_jwt = main_as.exchange(opaque)
    ok = send(main_gw, backend, f"/jwt-read/{grant}", token_jwt)
    assert ok.status == 200, ok.describe()
    assert ok.only_upstream().header_values("Authorization") == [f"Bearer {token_jwt}"], "a jwt-mode route forwards the client's JWT itself"
    assert_bearer_error(send(main_gw, backend, f"/jwt-write/{grant}", token_jwt), 403, "insufficient_scope", scope="orders:write", token=token_jwt)
    # ... and on an any-mode route.
    ok = send(main_gw, backend, f"/read/{grant}/jwt", token_jwt)
    assert ok.status == 200 and ok.only_upstream().header_values("Authorization") == [f"Bearer {token_jwt}"], ok.describe()


def test_token_with_both_scopes_passes_every_scope_route(main_as, main_gw, backend):
    """Control for test 1: a token carrying orders:read and orders:write passes /read/, /write/, /both/, /any-of/ and
    the jwt-mode routes, so the 403s above come from the scope check and nothing else."""
    opaque = main_as.cc_token("orders:read orders:write")
    for path in ("/read/x", "/write/x", "/both/x", "/any-of/x"):
        assert_forwarded_jwt(send(main_gw, backend, path, opaque), opaque, client_id="demo-service", scope_has="orders:write")
    token_jwt = main_as.exchange(opaque)
    for path in ("/jwt-read/x", "/jwt-write/x"):
        sent = send(main_gw, backend, path, token_jwt)
        assert sent.status == 200, sent.describe()
    # The scheme is case-insensitive (RFC 9110 §11.1).
    sent = send(main_gw, backend, "/read/lowercase", headers={"Authorization": f"bearer {opaque}"})
    assert_forwarded_jwt(sent, opaque, client_id="demo-service", scope_has="orders:write")
    # scopes_any_of is satisfied by one of its scopes.
    write_only = main_as.cc_token("orders:write")
    assert_forwarded_jwt(send(main_gw, backend, "/any-of/w", write_only), write_only, client_id="demo-service", scope_has="orders:write")


# --------------------------------------------------------------------------
# 2. RFC 6750 error responses
# --------------------------------------------------------------------------


def test_missing_token_gets_bare_challenge(main_gw, backend):
    """No credentials (or a non-Bearer scheme): 401, `WWW-Authenticate: Bearer realm="gatehouse"` without error,
    JSON {"error":"unauthorized","message",request_id}; the route's own realm when it has one."""
    assert_bearer_error(send(main_gw, backend, "/read/none"), 401, None)
    assert_bearer_error(send(main_gw, backend, "/jwt-read/none"), 401, None)
    assert_bearer_error(send(main_gw, backend, "/opaque/none"), 401, None)
    assert_bearer_error(send(main_gw, backend, "/read/basic", headers={"Authorization": "Basic ZGVtbzpkZW1v"}), 401, None)
    sent = send(main_gw, backend, "/realm/none")
    assert_bearer_error(sent, 401, None, realm="Orders API")
    assert sent.response.headers["WWW-Authenticate"] == 'Bearer realm="Orders API"', sent.response.headers["WWW-Authenticate"]
    sent = send(main_gw, backend, "/read/none-exact")
    assert sent.response.headers["WWW-Authenticate"] == 'Bearer realm="gatehouse"', sent.response.headers["WWW-Authenticate"]
    # Without a client request id the gateway makes one, and the body carries the same.
    r = HTTP.get(main_gw.url("/read/no-id"), timeout=10)
    assert r.status_code == 401 and r.headers.get("X-Request-Id") and r.json()["request_id"] == r.headers["X-Request-Id"], (r.headers, r.text)


def _raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Sends one raw HTTP/1.1 request (with Connection: close) and reads the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def test_malformed_credentials_get_400_invalid_request(main_as, main_gw, backend):
    """Two Authorization headers, or a bearer value that is not a b64token: 400 with error="invalid_request" in the
    challenge and the body; nothing reaches the backend."""
    token = main_as.cc_token()
    rid = "t-" + uuid.uuid4().hex
    status, headers, body = _raw_exchange(
        main_gw.port,
        (
            f"GET /read/two HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: {rid}\r\nAuthorization: Bearer {token}\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    assert status == 400, (status, headers, body)
    scheme, params = parse_challenge(headers.get("www-authenticate", ""))
    assert scheme == "Bearer" and params.get("realm") == "gatehouse" and params.get("error") == "invalid_request", headers
    doc = json.loads(body)
    assert doc["error"] == "invalid_request" and doc["request_id"] == rid == headers.get("x-request-id"), (doc, headers)
    assert token.encode() not in body
    assert not backend.by_request_id(rid), "a request with two Authorization headers reached the backend"

    for value in ("Bearer abc def", "Bearer tok%en", "Bearer ===", 'Bearer "quoted"', "Bearer a,b"):
        sent = send(main_gw, backend, "/read/malformed", headers={"Authorization": value})
        assert_bearer_error(sent, 400, "invalid_request")


def test_unknown_and_unacceptable_tokens_get_401_invalid_token(main_as, main_gw, backend):
    """Unknown opaque tokens, JWT-shaped garbage, a JWT on an opaque-only route, an opaque token on a jwt-only route,
    a wrong audience and a wrong issuer: 401 error="invalid_token". Unknown tokens are cached negatively (a repeat
    makes no new exchange)."""
    unknown = "unknown-" + secrets.token_urlsafe(24)
    before = main_gw.token_cache()
    sent = send(main_gw, backend, "/read/unknown", unknown)
    negative_cached_at = time.monotonic()
    body = assert_bearer_error(sent, 401, "invalid_token", token=unknown)
    assert body["error"] == "invalid_token"
    after_first = main_gw.token_cache()
    assert after_first["exchanges"] == before["exchanges"] + 1, (before, after_first)
    assert_bearer_error(send(main_gw, backend, "/read/unknown-again", unknown), 401, "invalid_token", token=unknown)
    after_second = main_gw.token_cache()
    assert after_second["exchanges"] == after_first["exchanges"], f"negative result not cached: {after_first} -> {after_second}"
    assert after_second["negative_hits"] == after_first["negative_hits"] + 1, (after_first, after_second)

    # An AS-looking token that was never issued (right shape, wrong secret part).
    real = main_as.cc_token()
    forged = real[:-6] + ("AAAAAA" if not real.endswith("AAAAAA") else "BBBBBB")
    assert_bearer_error(send(main_gw, backend, "/read/forged", forged), 401, "invalid_token", token=forged)

    garbage_jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    assert_bearer_error(send(main_gw, backend, "/read/garbage-jwt", garbage_jwt), 401, "invalid_token", token=garbage_jwt)
    assert_bearer_error(send(main_gw, backend, "/jwt-read/garbage-jwt", garbage_jwt), 401, "invalid_token", token=garbage_jwt)

    token_jwt = main_as.exchange(real)
    assert_bearer_error(send(main_gw, backend, "/opaque/jwt", token_jwt), 401, "invalid_token", token=token_jwt)
    assert_bearer_error(send(main_gw, backend, "/jwt-read/opaque", real), 401, "invalid_token", token=real)
    # the same tokens are fine where their kind is accepted
    assert send(main_gw, backend, "/opaque/ok", real).status == 200
    assert send(main_gw, backend, "/jwt-read/ok", token_jwt).status == 200

    # Audience: a partner token (aud https://partner.example) is refused on /read/ (audiences [AUDIENCE]) ...
    partner = main_as.cc_token("orders:read", client=PARTNER_CLIENT)
    assert_bearer_error(send(main_gw, backend, "/read/partner", partner), 401, "invalid_token", token=partner)
    partner_jwt = main_as.exchange(partner)
    assert unverified(partner_jwt)[1]["aud"] in (PARTNER_AUDIENCE, [PARTNER_AUDIENCE])
    assert_bearer_error(send(main_gw, backend, "/read/partner-jwt", partner_jwt), 401, "invalid_token", token=partner_jwt)
    # ... and taken on /partner/, where a normal token is refused.
    assert_forwarded_jwt(send(main_gw, backend, "/partner/x", partner), partner, client_id=PARTNER_CLIENT)
    assert_bearer_error(send(main_gw, backend, "/partner/normal", real), 401, "invalid_token", token=real)
    # Issuer: a route that accepts only another issuer refuses this AS's tokens.
    assert_bearer_error(send(main_gw, backend, "/foreign-iss/x", real), 401, "invalid_token", token=real)
    assert_bearer_error(send(main_gw, backend, "/foreign-iss/jwt", token_jwt), 401, "invalid_token", token=token_jwt)

    # Forged JWTs, on the jwt-mode and the any-mode route.
    header_b64, payload_b64, signature_b64 = token_jwt.split(".")
    header = json.loads(_b64url_decode(header_b64))
    payload = json.loads(_b64url_decode(payload_b64))
    forged_jwts = {
        "tampered payload": f"{header_b64}.{_b64url(json.dumps(dict(payload, scope='orders:read orders:write')).encode())}.{signature_b64}",
        "alg none": f"{_b64url(json.dumps({'alg': 'none', 'typ': 'at+jwt'}).encode())}.{payload_b64}.",
        "foreign key, AS kid": jwt.encode(payload, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": header["kid"], "typ": "at+jwt"}),
        "HS256 keyed with the AS public key": _hs256_with_public_key(main_as, header["kid"], payload),
    }
    # An AS-signed JWT of another type: the RFC 9701 introspection response (typ token-introspection+jwt).
    r = requests.post(
        main_as.server.url("/introspect"), data={"token": real}, auth=(GATEWAY_CLIENT, main_as.creds.gateway_secret),
        headers={"Accept": "application/token-introspection+jwt"}, timeout=10,
    )
    assert r.status_code == 200, r.text
    forged_jwts["introspection response JWT"] = r.text.strip()
    for what, forged_jwt in forged_jwts.items():
        remember(forged_jwt)
        for path in ("/jwt-read/forged", "/read/forged-jwt"):
            sent = send(main_gw, backend, path, forged_jwt)
            assert sent.status == 401, f"{what} on {path}: {sent.describe()}"
            assert_bearer_error(sent, 401, "invalid_token", token=forged_jwt)

    # The negative result expires after negative_ttl (2s): the unknown token is asked about again.
    wait_until(lambda: time.monotonic() - negative_cached_at > 2.3, timeout=5, interval=0.05, what="negative_ttl (2 s) to pass")
    before = main_gw.token_cache()
    assert_bearer_error(send(main_gw, backend, "/read/unknown-later", unknown), 401, "invalid_token", token=unknown)
    assert main_gw.token_cache()["exchanges"] == before["exchanges"] + 1, "a negative result outlived negative_ttl"


def _hs256_with_public_key(env: AuthServer, kid: str, payload: dict) -> str:
    """Algorithm confusion: HS256 with the AS's published public key (its JWK JSON) as the HMAC secret."""
    import hashlib
    import hmac

    keys = requests.get(env.jwks_uri, timeout=10).json()["keys"]
    secret = json.dumps(next(k for k in keys if k["kid"] == kid), separators=(",", ":")).encode()
    signing_input = f"{_b64url(json.dumps({'alg': 'HS256', 'kid': kid, 'typ': 'at+jwt'}).encode())}.{_b64url(json.dumps(payload).encode())}"
    return signing_input + "." + _b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def test_backend_jwt_is_refused_at_the_front_door(main_as, main_gw, backend):
    """The JWT the gateway forwards to a backend (exchanged as the gateway's client: act.sub = gatehouse-gateway) is
    not a client credential: presented at the gateway it is 401 invalid_token on jwt and any routes, and it lives no
    longer than the authorization server's exchange_jwt_lifetime (default 120 s). A JWT exchanged by another party
    for the same token passes (the premise: the refusal is about whose backend JWT it is)."""
    opaque = main_as.cc_token()
    backend_jwt = assert_forwarded_jwt(send(main_gw, backend, "/read/backend-jwt", opaque), opaque, client_id="demo-service")
    claims = unverified(backend_jwt)[1]
    assert claims.get("act") == {"sub": GATEWAY_CLIENT}, claims
    assert claims["exp"] - claims["iat"] <= 120, claims
    for path in ["/jwt-read/echoed", "/read/echoed"]:
        assert_bearer_error(send(main_gw, backend, path, backend_jwt), 401, "invalid_token", token=backend_jwt)
    own = main_as.exchange(opaque, as_gateway=True)  # what the gateway itself gets for it, asked directly
    assert_bearer_error(send(main_gw, backend, "/jwt-read/own", own), 401, "invalid_token", token=own)
    delegated = main_as.exchange(opaque)
    assert unverified(delegated)[1].get("act") == {"sub": EXCHANGER_CLIENT}
    ok = send(main_gw, backend, "/jwt-read/delegated", delegated)
    assert ok.status == 200, ok.describe()


def test_a_jwt_format_client_gets_jwts_the_gateway_accepts(main_as, main_gw, backend):
    """A client registered with access_token_format: jwt gets an RFC 9068 JWT from the token endpoint (typ at+jwt, no
    act), which the gateway verifies locally on jwt and any routes and forwards as it came."""
    body = main_as.client_credentials("orders:read", client=JWT_CLIENT)
    token = body["access_token"]
    assert token.count(".") == 2, token[:40]
    header, claims = unverified(token)
    assert header.get("typ") == "at+jwt" and "act" not in claims and claims.get("client_id") == JWT_CLIENT, (header, claims)
    for path in ["/jwt-read/direct", "/read/direct"]:
        ok = send(main_gw, backend, path, token)
        assert ok.status == 200 and ok.only_upstream().header_values("Authorization") == [f"Bearer {token}"], ok.describe()
    assert_bearer_error(send(main_gw, backend, "/opaque/direct", token), 401, "invalid_token", token=token)


def test_public_routes_pass_client_authorization_unchanged(main_as, main_gw, backend):
    """mode none (and a route without auth): no token needed, and a client's Authorization passes unchanged."""
    sent = send(main_gw, backend, "/public/x")
    assert sent.status == 200 and sent.only_upstream().header("Authorization") is None, sent.describe()
    token = main_as.cc_token()
    for path in ("/public/with-token", "/plain/with-token"):
        sent = send(main_gw, backend, path, token)
        assert sent.status == 200, sent.describe()
        assert sent.only_upstream().header_values("Authorization") == [f"Bearer {token}"]
    sent = send(main_gw, backend, "/public/basic", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert sent.status == 200 and sent.only_upstream().header_values("Authorization") == ["Basic Zm9vOmJhcg=="]


# --------------------------------------------------------------------------
# forward_header: X-Gateway-JWT
# --------------------------------------------------------------------------


def test_forward_header_carries_bare_jwt_and_is_stripped_everywhere(main_as, backend, tmp_path):
    """forward_header X-Gateway-JWT: the backend gets the JWT there without "Bearer " and no Authorization at all on
    auth routes; a client-sent X-Gateway-JWT never reaches the backend (auth routes, mode none, no auth section),
    while on mode-none routes the client's Authorization still passes unchanged."""
    gw = start_gateway(tmp_path, gateway_config(main_as, None, backend, free_port(), MAIN_ROUTES, forward_header="X-Gateway-JWT"))
    try:
        opaque = main_as.cc_token()
        forged = "eyJhbGciOiJub25lIn0.eyJzY29wZSI6ImFkbWluIn0."
        sent = send(gw, backend, "/read/fwd", opaque, headers={"X-Gateway-JWT": forged})
        assert sent.status == 200, sent.describe()
        seen = sent.only_upstream()
        values = seen.header_values("X-Gateway-JWT")
        assert len(values) == 1 and values[0] != forged, f"X-Gateway-JWT at the backend: {values}"
        forwarded = values[0]
        remember(forwarded)
        assert not forwarded.startswith("Bearer") and forwarded.count(".") == 2, forwarded[:40]
        assert unverified(forwarded)[0].get("typ") == "at+jwt"
        assert seen.header_values("Authorization") == [], "the client's Authorization must not be forwarded on an auth route"

        token_jwt = main_as.exchange(opaque)
        sent = send(gw, backend, "/jwt-read/fwd", token_jwt, headers={"X-Gateway-JWT": forged})
        assert sent.status == 200, sent.describe()
        seen = sent.only_upstream()
        assert seen.header_values("X-Gateway-JWT") == [token_jwt] and seen.header_values("Authorization") == []

        for path in ("/public/fwd", "/plain/fwd"):
            sent = send(gw, backend, path, opaque, headers={"X-Gateway-JWT": forged})
            assert sent.status == 200, sent.describe()
            seen = sent.only_upstream()
            assert seen.header_values("X-Gateway-JWT") == [], f"{path}: a client-sent X-Gateway-JWT reached the backend"
            assert seen.header_values("Authorization") == [f"Bearer {opaque}"], f"{path}: Authorization should pass unchanged"
        # A refused request does not reach the backend either.
        assert_bearer_error(send(gw, backend, "/read/fwd-none", headers={"X-Gateway-JWT": forged}), 401, None)
    finally:
        gw.stop(check=True)


# --------------------------------------------------------------------------
# 3. revocation takes effect within cache.max_ttl
# --------------------------------------------------------------------------


def test_revoked_token_is_refused_within_max_ttl(main_as, main_gw, backend):
    """Revoke an access token at the AS (RFC 7009): the gateway (cache.max_ttl 2s) keeps answering from its cache
    for at most max_ttl, then refuses it with 401 invalid_token, and never lets it through again."""
    max_ttl = 2.0
    slack = 1.0
    token = main_as.cc_token()
    assert_forwarded_jwt(send(main_gw, backend, "/read/revoke-0", token), token, client_id="demo-service")
    r = main_as.revoke(token, "demo-service", main_as.creds.service_secret)
    assert r.status_code == 200, r.text
    revoked_at = time.monotonic()
    # The AS itself refuses it at once.
    assert main_as.exchange_response(token).status_code == 400

    timeline: list[tuple[float, int]] = []
    first_refusal = None
    i = 0
    while time.monotonic() - revoked_at < max_ttl + slack + 2.0:
        i += 1
        sent = send(main_gw, backend, f"/read/revoke-{i}", token)
        t = time.monotonic() - revoked_at
        timeline.append((round(t, 3), sent.status))
        if sent.status == 200:
            assert first_refusal is None, f"the revoked token passed again after being refused: {timeline}"
            assert t <= max_ttl + slack, f"the revoked token still passed {t:.2f}s after revocation (max_ttl {max_ttl}s): {timeline}"
        else:
            assert_bearer_error(sent, 401, "invalid_token", token=token)
            if first_refusal is None:
                first_refusal = t
        time.sleep(0.05)  # the sampling interval of the timeline; its length is the cache's max TTL, which must really pass
    assert first_refusal is not None, f"the revoked token was never refused: {timeline}"
    assert first_refusal <= max_ttl + slack, f"refused only {first_refusal:.2f}s after revocation: {timeline}"


# --------------------------------------------------------------------------
# 4. an expired JWT is refused
# --------------------------------------------------------------------------


def test_expired_jwt_is_refused(cb, backend, tmp_path):
    """AS access_token_lifetime 4s; gateway clock_skew 0s and cache.max_ttl 60s (so only the JWT's exp can end the
    cached result). The JWT and its opaque token pass before exp and get 401 invalid_token after."""
    env = start_auth_server(tmp_path / "auth", cb, access_token_lifetime="4s")
    gw = None
    try:
        gw = start_gateway(
            tmp_path / "gw",
            gateway_config(
                env, None, backend, free_port(),
                [route("jwt", "/jwt/", "jwt", scopes_all_of=["orders:read"]), route("any", "/any/", "any", scopes_all_of=["orders:read"])],
                max_ttl="60s", clock_skew="0s",
            ),
        )
        opaque = env.cc_token()
        token_jwt = env.exchange(opaque)
        exp = unverified(token_jwt)[1]["exp"]
        assert exp - time.time() >= 1.0, f"the JWT expires too soon to test ({exp - time.time():.2f}s)"
        sent = send(gw, backend, "/jwt/before", token_jwt)
        assert sent.status == 200, sent.describe()
        assert sent.only_upstream().header_values("Authorization") == [f"Bearer {token_jwt}"]
        sent = send(gw, backend, "/any/before", opaque)
        forwarded = assert_forwarded_jwt(sent, opaque, client_id="demo-service")
        forwarded_exp = unverified(forwarded)[1]["exp"]
        assert forwarded_exp <= exp + 1, (forwarded_exp, exp)
        assert time.time() < exp, "the requests before expiry took too long"

        wait_until(lambda: time.time() >= max(exp, forwarded_exp) + 0.3, timeout=10, interval=0.05, what="the JWT's exp")
        sent = send(gw, backend, "/jwt/after", token_jwt)
        assert_bearer_error(sent, 401, "invalid_token", token=token_jwt)
        sent = send(gw, backend, "/any/after", opaque)
        assert_bearer_error(sent, 401, "invalid_token", token=opaque)
    finally:
        if gw:
            gw.stop(check=False)
        env.server.stop(check=False)


# --------------------------------------------------------------------------
# 5. key rotation at the AS: no failed request
# --------------------------------------------------------------------------


def test_key_rotation_causes_no_failed_request(cb, backend, tmp_path):
    """AS signing.jwks_max_age 1s, rescan_interval 1s (a new key signs ~7 s after `keys rotate`). Two gateways: one
    follows the JWKS max-age (jwks.min_ttl 1s), one keeps its key set for an hour (jwks.min_ttl 1h) and so depends
    on the unknown-kid refetch. Traffic through both during the rotation: a long-lived opaque token, a fresh opaque
    token per request (exchanged by the gateway), a fresh JWT per request (jwt-mode route) and a JWT signed before
    the rotation. Every response must be 200, and JWTs with the new kid must reach the backend through every path."""
    env = start_auth_server(tmp_path / "auth", cb, signing={"jwks_max_age": "1s", "rescan_interval": "1s"})
    gws: dict[str, GatewayProcess] = {}
    stop = threading.Event()
    failures: list[str] = []
    counts: dict[str, int] = {}
    lock = threading.Lock()
    threads: list[threading.Thread] = []
    try:
        routes = [route("read", "/read/", "any", scopes_all_of=["orders:read"]), route("jwt", "/jwt/", "jwt", scopes_all_of=["orders:read"])]
        gws["follows-max-age"] = start_gateway(
            tmp_path / "gw1", gateway_config(env, None, backend, free_port(), routes, max_ttl="1s", jwks={"min_ttl": "1s", "max_ttl": "2s", "unknown_kid_interval": "1s"})
        )
        gws["keeps-key-set"] = start_gateway(
            tmp_path / "gw2", gateway_config(env, None, backend, free_port(), routes, max_ttl="1s", jwks={"min_ttl": "1h", "max_ttl": "24h", "unknown_kid_interval": "1s"})
        )
        (k1,) = env.jwks_kids()
        stable_opaque = env.cc_token()
        stable_jwt = env.exchange(env.cc_token())
        assert jwt.get_unverified_header(stable_jwt)["kid"] == k1

        def worker(gw_name: str, kind: str):
            gw = gws[gw_name]
            http = session()
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if kind == "stable-opaque":
                        path, token = "/read/", stable_opaque
                    elif kind == "fresh-opaque":
                        path, token = "/read/", env.cc_token()
                    elif kind == "fresh-jwt":
                        path, token = "/jwt/", env.exchange(env.cc_token())
                    else:
                        path, token = "/jwt/", stable_jwt
                    sent = send(gw, backend, f"{path}{gw_name}/{kind}/{n}", token, http=http)
                    with lock:
                        counts[f"{gw_name}/{kind}"] = counts.get(f"{gw_name}/{kind}", 0) + 1
                    if sent.status != 200:
                        with lock:
                            failures.append(f"{gw_name}/{kind}: {sent.describe()}")
                except Exception as e:  # noqa: BLE001 - any failure counts
                    with lock:
                        failures.append(f"{gw_name}/{kind}: {e!r}")
                stop.wait(0.03)

        for gw_name in gws:
            for kind in ("stable-opaque", "fresh-opaque", "fresh-jwt", "stable-jwt"):
                t = threading.Thread(target=worker, args=(gw_name, kind), daemon=True)
                threads.append(t)
                t.start()

        # Traffic on every path before the rotation (what the one-second pause stood for): every worker has had at
        # least 3 answers. (That old-key JWTs reached the backend on the fresh paths is asserted at the end.)
        workers = [f"{g}/{k}" for g in gws for k in ("stable-opaque", "fresh-opaque", "fresh-jwt", "stable-jwt")]

        def answered_at_least(n: int, since: Optional[dict[str, int]] = None) -> bool:
            with lock:
                return all(counts.get(w, 0) - (since or {}).get(w, 0) >= n for w in workers)

        wait_until(lambda: answered_at_least(3), timeout=15, interval=0.05, what="every worker's first answers before the rotation")
        rotate = run_gatehouse("keys", "rotate", "--config", env.config_path, "--data-dir", env.data_dir)
        assert rotate.returncode == 0, describe_run(rotate)
        rotated_at = time.monotonic()

        def new_kid() -> Optional[str]:
            kids = [k for k in env.jwks_kids() if k != k1]
            return kids[0] if kids else None

        wait_until(lambda: new_kid() is not None, timeout=6, interval=0.05, what="the new key in the JWKS")
        k2 = new_kid()

        def seen_kids(gw_name: str, kind: str) -> set[str]:
            kids = set()
            for req in backend.snapshot():
                if req.path.startswith(f"/read/{gw_name}/{kind}/") or req.path.startswith(f"/jwt/{gw_name}/{kind}/"):
                    value = req.header("Authorization") or ""
                    if value.startswith("Bearer "):
                        kids.add(jwt.get_unverified_header(value[7:])["kid"])
            return kids

        def all_paths_saw_k2() -> bool:
            return all(k2 in seen_kids(g, kind) for g in gws for kind in ("fresh-opaque", "fresh-jwt"))

        wait_until(all_paths_saw_k2, timeout=20, interval=0.2, what=f"JWTs signed with the new kid {k2} at the backend")
        # More traffic after the switch, through every path: each worker answered at least 10 more times.
        with lock:
            at_switch = dict(counts)
        wait_until(lambda: answered_at_least(10, since=at_switch), timeout=15, interval=0.05, what="10 more answers per worker after the switch")
        stop.set()
        for t in threads:
            t.join(15)
        assert not failures, f"{len(failures)} failed requests during rotation (first 5): {failures[:5]}"
        assert all(counts.get(f"{g}/{k}", 0) >= 10 for g in gws for k in ("stable-opaque", "fresh-opaque", "fresh-jwt", "stable-jwt")), counts
        for g in gws:
            assert seen_kids(g, "stable-jwt") == {k1}, "the JWT signed before the rotation should keep verifying"
            assert {k1, k2} <= seen_kids(g, "fresh-opaque") | seen_kids(g, "fresh-jwt"), (g, seen_kids(g, "fresh-opaque"))
        assert time.monotonic() - rotated_at >= 5, "the new key signed earlier than its publication lead"
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        for gw in gws.values():
            gw.stop(check=False)
        env.server.stop(check=False)


# --------------------------------------------------------------------------
# 6. readiness, AS down, AS back
# --------------------------------------------------------------------------


def test_readiness_and_authorization_server_outage(cb, backend, tmp_path):
    """The gateway starts before the AS: /readyz 503 and token routes 503 + Retry-After until discovery. With the AS
    up: ready. With the AS stopped: a token used once (cached, max_ttl 60s) still passes; a new opaque token gets
    503 + Retry-After + temporarily_unavailable (never 200, never at the backend); a new JWT still verifies with
    the cached key set. With the AS back on the same port: the new token passes."""
    as_port = free_port()
    issuer = f"http://127.0.0.1:{as_port}"
    creds = Credentials()
    routes = [route("any", "/any/", "any", scopes_all_of=["orders:read"]), route("jwt", "/jwt/", "jwt"), route("public", "/public/", "none")]
    gw = start_gateway(
        tmp_path / "gw",
        gateway_config(issuer, creds.gateway_secret, backend, free_port(), routes, max_ttl="60s", discovery_retry={"initial": "100ms", "max": "200ms"}),
        wait_ready=False,
    )
    env = None
    try:
        # Not discovered: not ready, and tokens cannot be checked.
        wait_until(lambda: gw.readyz() is not None, timeout=10, interval=0.05, what="the admin listener")
        for _ in range(5):
            assert gw.readyz() == 503, "ready before the authorization server was discovered"
            time.sleep(0.05)  # the sampling pace: 5 looks over ~250 ms span discovery retries (100-200 ms); no AS listens, so none can succeed
        assert gw.token_cache()["discovered"] is False
        _assert_unavailable(send(gw, backend, "/any/undiscovered", "some-opaque-token"))
        _assert_unavailable(send(gw, backend, "/jwt/undiscovered", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"))
        assert send(gw, backend, "/public/undiscovered").status == 200, "mode none needs no authorization server"

        env = start_auth_server(tmp_path / "auth", cb, port=as_port, creds=creds)
        assert env.issuer == issuer
        wait_until(lambda: gw.readyz() == 200, timeout=10, interval=0.05, what="/readyz 200 after the AS started")
        assert gw.token_cache()["discovered"] is True

        cached = env.cc_token()
        assert_forwarded_jwt(send(gw, backend, "/any/cached-1", cached), cached, client_id="demo-service")
        new_opaque = env.cc_token()
        new_jwt = env.exchange(env.cc_token())
        env.server.stop(check=True)

        assert_forwarded_jwt(send(gw, backend, "/any/cached-2", cached), cached, client_id="demo-service")
        for i in range(3):
            _assert_unavailable(send(gw, backend, f"/any/new-{i}", new_opaque))
        sent = send(gw, backend, "/jwt/new", new_jwt)
        assert sent.status == 200, f"a valid JWT should verify with the cached key set: {sent.describe()}"
        assert gw.readyz() == 200

        # The AS comes back on the same port with the same data: the new token passes (failures were not cached).
        env = start_auth_server(tmp_path / "auth", cb, port=as_port, creds=creds, data_dir=env.data_dir)
        sent = send(gw, backend, "/any/new-after", new_opaque)
        assert_forwarded_jwt(sent, new_opaque, client_id="demo-service")
    finally:
        gw.stop(check=False)
        if env:
            env.server.stop(check=False)


def _assert_unavailable(sent: Sent):
    r = sent.response
    assert r.status_code == 503, f"expected 503 when the token cannot be checked: {sent.describe()}"
    retry_after = r.headers.get("Retry-After")
    assert retry_after and retry_after.isdigit() and int(retry_after) >= 1, f"Retry-After {retry_after!r}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert body.get("error") == "temporarily_unavailable", body
    assert body.get("request_id") == r.headers.get("X-Request-Id") == sent.request_id, (body, r.headers)
    assert not sent.upstream(), "a token that could not be checked reached the backend"


def test_jwt_signed_with_unfetchable_new_key_is_503_while_as_down(cb, backend, tmp_path):
    """A gateway that keeps its key set (jwks.min_ttl 1h) learns a rotated key only through the unknown-kid refetch.
    A valid JWT signed by the AS's new key, presented while the AS is unreachable, cannot be checked: 503 with
    Retry-After and temporarily_unavailable (not 401 invalid_token: nothing is wrong with the token), and that
    failure is not cached, so once the AS is back the token passes within unknown_kid_interval (1s) plus slack —
    not only after negative_ttl (10s here)."""
    as_port = free_port()
    env = start_auth_server(tmp_path / "auth", cb, port=as_port, signing={"jwks_max_age": "1s", "rescan_interval": "1s"})
    gw = None
    try:
        gw = start_gateway(
            tmp_path / "gw",
            gateway_config(
                env, None, backend, free_port(), [route("jwt", "/jwt/", "jwt", scopes_all_of=["orders:read"])],
                negative_ttl="10s", jwks={"min_ttl": "1h", "max_ttl": "24h", "unknown_kid_interval": "1s"},
            ),
        )
        (k1,) = env.jwks_kids()
        old_jwt = env.exchange(env.cc_token())
        assert send(gw, backend, "/jwt/old", old_jwt).status == 200  # the gateway holds the key set {k1}
        rotate = run_gatehouse("keys", "rotate", "--config", env.config_path, "--data-dir", env.data_dir)
        assert rotate.returncode == 0, describe_run(rotate)
        new_jwt = None
        for _ in polling(15, 0.25):  # each try mints a token; the 15 s bound is asserted below
            candidate = env.exchange(env.cc_token())
            if jwt.get_unverified_header(candidate)["kid"] != k1:
                new_jwt = candidate
                break
        assert new_jwt, "the rotated key did not start signing within 15 s"
        key = jwt.PyJWKClient(env.jwks_uri).get_signing_key_from_jwt(new_jwt)
        jwt.decode(new_jwt, key.key, algorithms=["ES256"], audience=AUDIENCE, issuer=env.issuer)  # a genuine token
        env.server.stop(check=True)

        for i in range(3):
            sent = send(gw, backend, f"/jwt/new-{i}", new_jwt)
            assert sent.status != 200, sent.describe()
            _assert_unavailable(sent)
            time.sleep(0.2)  # the pace: the three tries span unknown_kid_interval's refetch and its rate limit
        assert send(gw, backend, "/jwt/old-again", old_jwt).status == 200, "a JWT with a known key still verifies locally"

        env = start_auth_server(tmp_path / "auth", cb, port=as_port, creds=env.creds, data_dir=env.data_dir)
        back_at = time.monotonic()
        statuses = []
        for _ in polling(2.5, 0.2):  # the 2.5 s bound (unknown_kid_interval 1 s + slack) is asserted below
            sent = send(gw, backend, "/jwt/new-after", new_jwt)
            statuses.append(sent.status)
            if sent.status == 200:
                break
        assert statuses[-1] == 200, f"the token still failed {time.monotonic() - back_at:.1f}s after the AS came back: {statuses}"
    finally:
        if gw:
            gw.stop(check=False)
        env.server.stop(check=False)


# --------------------------------------------------------------------------
# 7. 1,000 concurrent requests with one new token: one exchange
# --------------------------------------------------------------------------


def _read_http_response(f) -> tuple[int, bytes]:
    line = f.readline()
    if not line:
        raise EOFError("connection closed before a status line")
    status = int(line.split(b" ")[1])
    length = None
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = f.read(length) if length is not None else f.read()
    return status, body


def _count_token_posts(logs: str) -> int:
    n = 0
    for line in logs.splitlines():
        if line.startswith("{") and '"msg":"request"' in line:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("method") == "POST" and obj.get("path") == "/token":
                n += 1
    return n


def test_concurrent_requests_share_one_exchange(main_as, backend, tmp_path):
    """1,000 connections each send a request with the same never-seen token before any response is read: all get
    200, the gateway makes exactly one exchange (and one verification), and the AS logs exactly one POST /token."""
    n = 1000
    gw = start_gateway(tmp_path, gateway_config(main_as, None, backend, free_port(), MAIN_ROUTES, max_ttl="60s", pool_max_connections=32))
    sockets: list[socket.socket] = []
    try:
        token = main_as.cc_token()
        assert send(gw, backend, "/public/warm").status == 200  # upstream pool warm, key set loaded
        before = gw.token_cache()
        as_posts_before = _count_token_posts(main_as.server.logs)
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
            sockets.append(s)
        for i, s in enumerate(sockets):
            s.sendall(
                (
                    f"GET /read/burst/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: burst-{i}\r\n"
                    f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
                ).encode()
            )
        statuses: dict[int, int] = {}
        bad = []
        for i, s in enumerate(sockets):
            with s.makefile("rb") as f:
                status, body = _read_http_response(f)
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200 and len(bad) < 3:
                bad.append((i, status, body[:300]))
        assert statuses == {200: n}, f"statuses {statuses}; first failures {bad}"
        after = gw.token_cache()
        assert after["exchanges"] - before["exchanges"] == 1, f"exchanges {before['exchanges']} -> {after['exchanges']}"
        assert after["verifications"] - before["verifications"] == 1, (before, after)
        assert after["misses"] - before["misses"] == 1, (before, after)
        assert (after["hits"] - before["hits"]) + (after["coalesced"] - before["coalesced"]) == n - 1, (before, after)
        burst = [r for r in backend.snapshot() if r.path.startswith("/read/burst/")]
        assert len(burst) == n and len({r.header("Authorization") for r in burst}) == 1, "every request forwarded with the same JWT"
        remember(burst[0].header("Authorization")[7:])
        # The AS's access-log lines reach us through a pipe drained by a thread: a marker request, sent after the
        # burst and so logged after any POST /token it caused, shows that the log has caught up.
        marker = "log-drain-" + secrets.token_hex(8)
        requests.get(main_as.server.url("/healthz"), headers={"X-Request-Id": marker}, timeout=10)
        wait_until(lambda: marker in main_as.server.logs, 10, interval=0.05, what="the AS's access-log line for the marker request")
        assert _count_token_posts(main_as.server.logs) - as_posts_before == 1, "the AS should have seen exactly one POST /token"
    finally:
        for s in sockets:
            s.close()
        gw.stop(check=True)


# --------------------------------------------------------------------------
# 8. PyJWT verifies what the backend received
# --------------------------------------------------------------------------


def test_backend_jwt_verifies_with_pyjwt(main_as, main_gw, backend):
    """The JWT the backend got (for an opaque token) verifies with PyJWT against the JWKS named by the AS metadata:
    signature by kid, typ at+jwt, aud, iss, exp/iat/sub present; its claims describe the client's token."""
    opaque = main_as.password("alice", "orders:read")["access_token"]
    forwarded = assert_forwarded_jwt(send(main_gw, backend, "/read/pyjwt", opaque), opaque, client_id="demo-web")
    meta = requests.get(main_as.server.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    assert meta["issuer"] == main_as.issuer
    client = jwt.PyJWKClient(meta["jwks_uri"])
    key = client.get_signing_key_from_jwt(forwarded)
    header = jwt.get_unverified_header(forwarded)
    assert header["typ"] == "at+jwt" and header["kid"] == key.key_id and header["alg"] == "ES256", header
    claims = jwt.decode(forwarded, key.key, algorithms=["ES256"], audience=AUDIENCE, issuer=main_as.issuer, options={"require": REQUIRED_CLAIMS})
    assert claims["client_id"] == "demo-web" and claims["scope"] == "orders:read", claims
    assert claims["exp"] > time.time(), claims
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(forwarded, key.key, algorithms=["ES256"], audience="https://other.example", issuer=main_as.issuer)
    with pytest.raises(jwt.InvalidIssuerError):
        jwt.decode(forwarded, key.key, algorithms=["ES256"], audience=AUDIENCE, issuer="http://127.0.0.1:1")


# --------------------------------------------------------------------------
# 10. the demo backend's own verifier
# --------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _start_demo(tmp_path: Path) -> DemoProcess:
    """`gatehouse demo` with config/demo on free ports, once its three services listen and the gateway is ready."""
    ports = {"auth": free_port(), "gateway": free_port(), "backend": free_port(), "admin": free_port()}
    assert len(set(ports.values())) == 4, ports
    demo = DemoProcess(tmp_path / "demo-data", ports)
    OTHER_LOGS.append(lambda: demo.logs)
    try:
        demo.wait_listening({"auth", "gateway", "demo-backend"})
        wait_until(lambda: _status(f"http://127.0.0.1:{ports['admin']}/readyz") == 200, timeout=15, interval=0.05, what="demo gateway /readyz")
    except BaseException:
        demo.stop()
        raise
    return demo


def test_demo_backend_verifies_gateway_jwts(tmp_path):
    """`gatehouse demo` with config/demo: /public/ needs no token; /api/orders through the gateway forwards a JWT the
    backend verifies itself (verified_token). Straight to the backend: no token 401; the gateway's JWT 200; a
    tampered payload 401; a JWT signed with the AS's own key but a wrong aud 401 (the same re-signing with the right
    aud is 200, so the 401 is the audience check); a JWT signed by a foreign key under the AS's kid 401; alg none 401."""
    demo = _start_demo(tmp_path)
    ports = demo.ports
    data_dir = tmp_path / "demo-data"  # where _start_demo keeps the demo's store and keys
    try:
        issuer = f"http://127.0.0.1:{ports['auth']}"
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        direct = f"http://127.0.0.1:{ports['backend']}"

        r = HTTP.get(gateway + "/public/hello", timeout=10)
        assert r.status_code == 200, r.text
        assert "verified_token" not in r.json()
        r = HTTP.get(gateway + "/api/orders", timeout=10)
        assert r.status_code == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer"), (r.status_code, r.headers)

        tr = HTTP.post(issuer + "/token", data={"grant_type": "client_credentials", "scope": "orders:read"}, auth=("demo-service", "demo-service-secret"), timeout=10)
        assert tr.status_code == 200, tr.text
        opaque = tr.json()["access_token"]
        remember(opaque)
        r = HTTP.get(gateway + "/api/orders", headers={"Authorization": f"Bearer {opaque}"}, timeout=10)
        assert r.status_code == 200, r.text
        echo = r.json()
        auth_header = {k.lower(): v for k, v in echo["headers"].items()}.get("authorization", "")
        assert auth_header.startswith("Bearer ") and opaque not in auth_header, auth_header[:60]
        gateway_jwt = auth_header[7:]
        remember(gateway_jwt)
        verified = echo.get("verified_token")
        assert verified and verified["iss"] == issuer and AUDIENCE in verified["aud"] and verified["client_id"] == "demo-service", verified
        assert verified["scope"] == "orders:read", verified

        def backend_status(token: Optional[str]) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            resp = HTTP.get(direct + "/api/orders", headers=headers, timeout=10)
            if resp.status_code == 200:
                assert resp.json().get("verified_token"), resp.text
            else:
                assert resp.status_code == 401, (resp.status_code, resp.text)
                assert "invalid_token" in resp.headers.get("WWW-Authenticate", "") or token is None, resp.headers
            return resp.status_code

        assert backend_status(None) == 401
        assert backend_status(gateway_jwt) == 200

        header_b64, payload_b64, signature_b64 = gateway_jwt.split(".")
        header = json.loads(_b64url_decode(header_b64))
        payload = json.loads(_b64url_decode(payload_b64))
        tampered_payload = dict(payload, scope="orders:read orders:write")
        tampered = f"{header_b64}.{_b64url(json.dumps(tampered_payload, separators=(',', ':')).encode())}.{signature_b64}"
        assert backend_status(tampered) == 401
        tampered_sub = f"{header_b64}.{_b64url(json.dumps(dict(payload, sub='mallory'), separators=(',', ':')).encode())}.{signature_b64}"
        assert backend_status(tampered_sub) == 401

        # The AS's own signing key (from the demo's data dir), so only the claims differ.
        key_files = sorted(glob.glob(str(data_dir / "keys" / "*")))
        as_key = None
        for path in key_files:
            doc = json.loads(Path(path).read_text())
            if doc.get("kid") == header["kid"]:
                as_key = serialization.load_pem_private_key(doc["private_key_pem"].encode(), password=None)
        assert as_key is not None, f"no key file for kid {header['kid']} in {key_files}"
        sign_header = {"kid": header["kid"], "typ": "at+jwt"}
        resigned_ok = jwt.encode(dict(payload), as_key, algorithm="ES256", headers=sign_header)
        assert backend_status(resigned_ok) == 200, "control: re-signing the same claims with the AS key should verify"
        wrong_aud = jwt.encode(dict(payload, aud=["https://not-this-backend.example"]), as_key, algorithm="ES256", headers=sign_header)
        assert backend_status(wrong_aud) == 401
        # ... and the gateway refuses it too (its /api/ route accepts only http://127.0.0.1:8080).
        r = HTTP.get(gateway + "/api/orders", headers={"Authorization": f"Bearer {wrong_aud}"}, timeout=10)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers.get("WWW-Authenticate", ""), (r.status_code, r.headers)

        foreign_key = ec.generate_private_key(ec.SECP256R1())
        foreign = jwt.encode(dict(payload), foreign_key, algorithm="ES256", headers=sign_header)
        assert backend_status(foreign) == 401
        foreign_kid = jwt.encode(dict(payload), foreign_key, algorithm="ES256", headers={"kid": "foreign-key", "typ": "at+jwt"})
        assert backend_status(foreign_kid) == 401

        none_header = _b64url(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
        alg_none = f"{none_header}.{payload_b64}."
        assert backend_status(alg_none) == 401
        r = HTTP.get(gateway + "/api/orders", headers={"Authorization": f"Bearer {alg_none}"}, timeout=10)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers.get("WWW-Authenticate", ""), (r.status_code, r.headers)
        r = HTTP.get(gateway + "/api/orders", headers={"Authorization": f"Bearer {tampered}"}, timeout=10)
        assert r.status_code == 401, (r.status_code, r.text)
    finally:
        code = demo.stop()
    assert code == 0, f"demo exited with {code}\n{demo.logs[-3000:]}"


def test_demo_reload_keeps_its_port_and_issuer_overrides(tmp_path):
    """`gatehouse demo` on non-default ports: a SIGHUP re-reads config/demo/gateway.yaml, which names the default
    backend port (8081) and issuer (port 9000). The reload must apply the demo's overrides again: afterwards the
    gateway still reaches the backend on --backend-port, and a new token is exchanged with the authorization server
    on --auth-port and names its issuer."""
    demo = _start_demo(tmp_path)
    ports = demo.ports
    assert not set(ports.values()) & {8080, 8081, 9000, 9901}, ports  # the file's own ports would hide the bug
    try:
        issuer = f"http://127.0.0.1:{ports['auth']}"
        gateway = f"http://127.0.0.1:{ports['gateway']}"

        def fresh_token_through_gateway(client: requests.Session) -> requests.Response:
            tr = client.post(issuer + "/token", data={"grant_type": "client_credentials", "scope": "orders:read"}, auth=("demo-service", "demo-service-secret"), timeout=10)
            assert tr.status_code == 200, tr.text
            opaque = tr.json()["access_token"]
            remember(opaque)
            return client.get(gateway + "/api/orders", headers={"Authorization": f"Bearer {opaque}"}, timeout=10)

        r = fresh_token_through_gateway(HTTP)
        assert r.status_code == 200 and r.json()["verified_token"]["iss"] == issuer, (r.status_code, r.text[:300])

        demo.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: demo.events.count("reloaded") + demo.events.count("reload_failed") >= 1, 15, interval=0.05, what="the demo gateway's reload")
        assert demo.events.count("reloaded") == 1, demo.events

        # New connections: a kept-alive one would go on with the configuration it started with.
        after = session()
        r = after.get(gateway + "/public/hello", timeout=10)
        assert r.status_code == 200, f"the demo backend on port {ports['backend']} is no longer routed to: {r.status_code} {r.text[:300]}"
        r = fresh_token_through_gateway(after)
        assert r.status_code == 200, f"a new token is no longer checked with the issuer {issuer}: {r.status_code} {r.text[:300]}"
        assert r.json()["verified_token"]["iss"] == issuer, r.text[:300]
        after.close()
    finally:
        code = demo.stop()
    assert code == 0, f"demo exited with {code}\n{demo.logs[-3000:]}"


def _status(url: str) -> Optional[int]:
    try:
        return HTTP.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


# --------------------------------------------------------------------------
# 9. no token in the gateway's output (last: stops the module's processes)
# --------------------------------------------------------------------------

# --------------------------------------------------------------------------
# framing of the gateway's own token errors on keep-alive connections
# --------------------------------------------------------------------------


def test_head_request_refused_for_its_token_gets_no_body(main_gw, backend):
    """A 401 to HEAD carries Content-Length but no body: the next response on the connection must parse."""
    with socket.create_connection(("127.0.0.1", main_gw.port), timeout=10) as s:
        s.sendall(b"HEAD /read/x HTTP/1.1\r\nHost: gw\r\n\r\nGET /public/after HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        f = s.makefile("rb")
        status_line = f.readline()
        assert b" 401 " in status_line, status_line
        head = b""
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            head += line
        assert b"content-length:" in head.lower() and b"www-authenticate: bearer" in head.lower(), head
        # No body follows: the very next bytes are the second response's status line.
        status, body = _read_http_response(f)
        assert status == 200, (status, body[:200])
        assert json.loads(body)["path"] == "/public/after"


def test_malformed_request_pipelined_behind_a_refused_token_is_answered(main_gw, backend):
    """The token check is pending (an unknown token) while garbage follows: 401 first, then 400 and the close."""
    unknown = "never-issued-" + secrets.token_urlsafe(24)
    with socket.create_connection(("127.0.0.1", main_gw.port), timeout=10) as s:
        s.sendall(f"GET /read/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {unknown}\r\n\r\n".encode() + b"NOT HTTP AT ALL\r\n\r\n")
        f = s.makefile("rb")
        first, _ = _read_http_response(f)
        second, body = _read_http_response(f)
        assert (first, second) == (401, 400), (first, second, body[:200])
        assert f.read() == b""  # closed after the 400



def test_zz_no_token_in_gateway_logs(main_as, main_gw, backend):
    """Neither the opaque tokens nor the JWTs of this module appear in any gateway's stdout/stderr (log level debug),
    nor in the demo's or the AS's output."""
    opaque = main_as.cc_token()
    assert_forwarded_jwt(send(main_gw, backend, "/read/secrets", opaque), opaque, client_id="demo-service")
    assert_bearer_error(send(main_gw, backend, "/write/secrets", opaque), 403, "insufficient_scope", scope="orders:write")
    unknown = "unknown-" + secrets.token_urlsafe(24)
    remember(unknown)
    assert_bearer_error(send(main_gw, backend, "/read/secrets-unknown", unknown), 401, "invalid_token")
    main_gw.stop(check=True)
    main_as.server.stop(check=True)

    tokens = sorted(set(SENSITIVE))
    assert opaque in tokens and any(t.count(".") == 2 for t in tokens), "the registry of tokens is empty"
    assert main_gw in GATEWAYS and all(g.exit_code is not None for g in GATEWAYS), "every gateway should be stopped by now"
    for gw in GATEWAYS:
        logs = gw.logs
        assert '"event":"listening"' in logs, "gateway output was not captured"
        leaked = [t for t in tokens if t in logs]
        assert not leaked, f"{len(leaked)} tokens in the output of the gateway {gw.config}: {[t[:12] + '…' for t in leaked[:5]]}"
    for logs in [main_as.server.logs] + [f() for f in OTHER_LOGS]:
        leaked = [t for t in tokens if t in logs]
        assert not leaked, f"{len(leaked)} tokens in the AS/demo output: {[t[:12] + '…' for t in leaked[:5]]}"

