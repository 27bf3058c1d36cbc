"""Interop tests of the JWT features (issue 3) against a real `gatehouse auth` process, verified with PyJWT
(a third-party JOSE library that knows nothing about Gatehouse):

- `GET /.well-known/jwks.json` (RFC 7517; kid = RFC 7638 thumbprint, public members only, Cache-Control public
  with max-age = signing.jwks_max_age);
- token exchange (RFC 8693) of an opaque access token for an RFC 9068 JWT (`typ: at+jwt`) at POST /token;
- POST /introspect (RFC 7662) and its signed form (RFC 9701, `Accept: application/token-introspection+jwt`);
- POST /revoke (RFC 7009), through Authlib's `OAuth2Session.revoke_token`;
- the signing algorithms ES256 (default), RS256, EdDSA;
- `gatehouse keys rotate|list`: a new key is published before it signs, so a verifier never meets an unknown kid;
- the key files are owner-only and the private key never reaches the logs.

Every test starts its own server(s) on a free port with its own temporary data dir and config
(`jwt_env` fixture) and stops them at teardown.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session

from gatehouse_testlib import (
    polling,
    Credentials,
    GatehouseServer,
    assert_oauth_error,
    describe_run,
    run_gatehouse,
    token_rows,
    write_config,
)

EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
INTROSPECTION_JWT = "application/token-introspection+jwt"

GATEWAY = "demo-gateway"  # confidential, token-exchange grant, introspect: true
BATCH = "demo-batch"  # client_credentials with its own `audience: [..]`
AUDIENCE = "http://127.0.0.1:8080"  # tokens.jwt_audience
BATCH_AUDIENCES = ["https://api-one.example", "https://api-two.example"]
SCOPE = "orders:read orders:write"
REQUIRED = ["exp", "iat", "iss", "aud", "sub"]


def _extra_clients(creds: Credentials) -> str:
    return f"""\
  - id: {GATEWAY}
    type: confidential
    secret: {creds.gateway_secret}
    grants: ['{EXCHANGE_GRANT}']
    introspect: true
  - id: {BATCH}
    type: confidential
    secret: {creds.service_secret}-batch
    grants: [client_credentials]
    scopes: [orders:read]
    default_scopes: [orders:read]
    audience: [{", ".join(BATCH_AUDIENCES)}]
"""


# --------------------------------------------------------------------------
# fixture: servers with the gateway client, each with its own data dir
# --------------------------------------------------------------------------


@dataclass
class JwtEnv:
    server: GatehouseServer
    creds: Credentials
    config_path: Path
    data_dir: Path
    sensitive: list = field(default_factory=list)  # tokens etc. that must not show up in the logs

    @property
    def issuer(self) -> str:
        return self.server.issuer

    @property
    def jwks_url(self) -> str:
        return self.issuer + "/.well-known/jwks.json"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    def remember(self, *values):
        self.sensitive.extend(str(v) for v in values if v)

    # -- token endpoint ------------------------------------------------------

    def _token(self, auth, data) -> dict:
        r = requests.post(self.server.token_url, data=data, auth=auth, timeout=10)
        assert r.status_code == 200, f"POST /token {data.get('grant_type')} -> {r.status_code}: {r.text[:500]}"
        body = r.json()
        self.remember(body.get("access_token"), body.get("refresh_token"))
        return body

    def password_token(self, username: str = "alice", scope: str = SCOPE) -> dict:
        password = {"alice": self.creds.alice_password, "bob": self.creds.bob_password}[username]
        return self._token(
            ("demo-web", self.creds.web_secret),
            {"grant_type": "password", "username": username, "password": password, "scope": scope},
        )

    def client_credentials_token(self, client: str = "demo-service", scope: str = SCOPE) -> dict:
        secret = self.creds.service_secret + ("-batch" if client == BATCH else "")
        return self._token((client, secret), {"grant_type": "client_credentials", "scope": scope})

    def exchange_response(self, subject_token: str, auth=None, **extra) -> requests.Response:
        data = {
            "grant_type": EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": JWT_TOKEN_TYPE,
            **extra,
        }
        return requests.post(self.server.token_url, data=data, auth=auth or (GATEWAY, self.creds.gateway_secret), timeout=10)

    def exchange(self, subject_token: str, **extra) -> str:
        r = self.exchange_response(subject_token, **extra)
        assert r.status_code == 200, f"token exchange -> {r.status_code}: {r.text[:500]}"
        assert "no-store" in r.headers.get("Cache-Control", ""), r.headers
        body = r.json()
        assert body.get("issued_token_type") == JWT_TOKEN_TYPE, body
        assert str(body.get("token_type", "")).lower() == "bearer", body
        assert isinstance(body.get("expires_in"), int) and body["expires_in"] > 0, body
        assert "refresh_token" not in body, body
        token = body["access_token"]
        assert token.count(".") == 2, f"exchange did not return a compact JWS: {token[:80]}"
        self.remember(token)
        return token

    # -- introspection / JWKS --------------------------------------------------

    def introspect(self, token: str, accept: Optional[str] = None, auth=None) -> requests.Response:
        headers = {"Accept": accept} if accept else {}
        return requests.post(
            self.server.url("/introspect"),
            data={"token": token},
            auth=auth or (GATEWAY, self.creds.gateway_secret),
            headers=headers,
            timeout=10,
        )

    def jwks(self) -> requests.Response:
        r = requests.get(self.jwks_url, timeout=10)
        assert r.status_code == 200, f"GET /.well-known/jwks.json -> {r.status_code}: {r.text[:300]}"
        return r

    def jwks_kids(self) -> list[str]:
        return [k.get("kid") for k in self.jwks().json()["keys"]]

    def stop_and_check_logs(self, extra_forbidden: tuple = ()):
        """Graceful stop (asserted), then no secret, token or private key material in stdout/stderr."""
        self.server.stop(check=True)
        logs = self.server.logs
        assert self.server.stdout, "captured stdout is empty: log capture is broken"
        forbidden = self.creds.all() + self.sensitive + list(extra_forbidden)
        leaked = [v for v in forbidden if v and v in logs]
        assert not leaked, f"secret material in the server's stdout/stderr: {[v[:16] + '…' for v in leaked]}"


@pytest.fixture
def jwt_env(gatehouse_bin, callback_server, tmp_path):
    """start(name="main", signing=None) -> JwtEnv: a server with its own tmp data dir and config (demo clients
    plus the token-exchange gateway). All servers are stopped at teardown."""
    started: list[JwtEnv] = []

    def start(name: str = "main", signing: Optional[dict] = None) -> JwtEnv:
        root = tmp_path / name
        data_dir = root / "data"
        data_dir.mkdir(parents=True)
        creds = Credentials()
        config = write_config(
            root / "auth.yaml",
            callback_server,
            creds,
            jwt_audience=AUDIENCE,
            signing=signing,
            extra_clients=_extra_clients(creds),
        )
        server = GatehouseServer(gatehouse_bin, config, data_dir).start()
        env = JwtEnv(server, creds, config, data_dir)
        started.append(env)
        return env

    yield start
    for env in started:
        env.server.stop(check=False)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def rfc7638_thumbprint(jwk: dict) -> str:
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def assert_jwks_document(resp: requests.Response, algorithm: str, max_age: int) -> list[dict]:
    cache = resp.headers.get("Cache-Control", "")
    directives = {d.strip().split("=", 1)[0].lower(): d.strip() for d in cache.split(",") if d.strip()}
    assert "public" in directives, f"JWKS Cache-Control should be public: {cache!r}"
    assert directives.get("max-age") == f"max-age={max_age}", f"JWKS Cache-Control should be max-age={max_age}: {cache!r}"
    assert "no-store" not in directives, cache
    assert resp.headers.get("Content-Type", "").startswith(("application/json", "application/jwk-set+json")), resp.headers
    keys = resp.json()["keys"]
    assert keys, "empty JWKS"
    expected_kty = {"ES256": ("EC", "P-256"), "RS256": ("RSA", None), "EdDSA": ("OKP", "Ed25519")}[algorithm]
    for key in keys:
        leaked = PRIVATE_JWK_MEMBERS & set(key)
        assert not leaked, f"private members {leaked} published in the JWKS: kid {key.get('kid')}"
        assert key.get("kty") == expected_kty[0], key
        if expected_kty[1]:
            assert key.get("crv") == expected_kty[1], key
        assert key.get("alg") == algorithm, key
        assert key.get("use", "sig") == "sig", key
        assert key.get("kid") == rfc7638_thumbprint(key), f"kid is not the RFC 7638 thumbprint: {key}"
    kids = [k["kid"] for k in keys]
    assert len(set(kids)) == len(kids), f"duplicate kids in the JWKS: {kids}"
    return keys


def assert_metadata(env: JwtEnv, algorithm: str):
    """RFC 8414 metadata names the new endpoints and the signing algorithm."""
    meta = requests.get(env.server.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    assert meta.get("jwks_uri") == env.jwks_url, meta
    assert meta.get("introspection_endpoint") == env.issuer + "/introspect", meta
    assert meta.get("revocation_endpoint") == env.issuer + "/revoke", meta
    assert EXCHANGE_GRANT in meta.get("grant_types_supported", []), meta
    assert meta.get("introspection_signing_alg_values_supported") == [algorithm], meta


def verify_access_jwt(env: JwtEnv, token: str, algorithm: str = "ES256", client: Optional[jwt.PyJWKClient] = None) -> dict:
    """PyJWT verification as a resource server would do it: key from the JWKS by kid, signature, exp/iat/iss/aud."""
    client = client or jwt.PyJWKClient(env.jwks_url)
    signing_key = client.get_signing_key_from_jwt(token)
    header = jwt.get_unverified_header(token)
    assert header.get("typ") == "at+jwt", f"header typ should be at+jwt (RFC 9068): {header}"
    assert header.get("alg") == algorithm, header
    assert header.get("kid") and header["kid"] == signing_key.key_id, header
    return jwt.decode(
        token, signing_key.key, algorithms=[algorithm], audience=AUDIENCE, issuer=env.issuer, options={"require": REQUIRED}
    )


def assert_common_claims(env: JwtEnv, claims: dict, subject_token: dict):
    assert claims["iss"] == env.issuer
    assert claims["aud"] == AUDIENCE, f"a single audience should be a string: {claims['aud']!r}"
    for name in ("exp", "iat", "nbf"):
        assert isinstance(claims.get(name), int), (name, claims)
    now = time.time()
    assert claims["iat"] <= now + 2 and claims["nbf"] <= claims["iat"] + 1, claims
    assert claims["iat"] < claims["exp"] <= claims["iat"] + 3600 + 1, f"exp beyond jwt_max_lifetime (1h): {claims}"
    assert claims["exp"] <= now + subject_token["expires_in"] + 2, "the JWT outlives the opaque token it stands for"
    assert isinstance(claims.get("jti"), str) and claims["jti"], claims
    assert set(claims["scope"].split()) == set(subject_token["scope"].split()), (claims, subject_token)


# --------------------------------------------------------------------------
# 1. ES256 (default): exchange, JWKS, PyJWT verification, RFC 9701 introspection
# --------------------------------------------------------------------------


def test_exchanged_jwt_verifies_with_pyjwt(jwt_env):
    env = jwt_env()  # no `signing:` section: ES256, jwks_max_age 5m by default
    srv = env.server

    keys = assert_jwks_document(env.jwks(), "ES256", max_age=300)
    assert len(keys) == 1, f"a fresh server should publish exactly one key: {keys}"
    assert_metadata(env, "ES256")

    # A user's token (password grant) ...
    user_token = env.password_token("alice")
    user_row = token_rows(srv.db_path, user_token["access_token"])
    assert user_row and user_row[0]["username"] == "alice", user_row
    user_jwt = env.exchange(user_token["access_token"])
    claims = verify_access_jwt(env, user_jwt)
    assert_common_claims(env, claims, user_token)
    assert claims["sub"] == user_row[0]["subject"], f"sub should be alice's stable id {user_row[0]['subject']!r}: {claims}"
    assert claims["client_id"] == "demo-web", claims
    assert isinstance(claims.get("auth_time"), int) and claims["auth_time"] <= claims["iat"], (
        f"a token from a password sign-in should carry auth_time: {claims}"
    )
    assert jwt.get_unverified_header(user_jwt)["kid"] == keys[0]["kid"]

    # ... and a client's own token (client_credentials): sub is the client id.
    service_token = env.client_credentials_token("demo-service", scope="orders:read")
    service_jwt = env.exchange(service_token["access_token"])
    service_claims = verify_access_jwt(env, service_jwt)
    assert_common_claims(env, service_claims, service_token)
    assert service_claims["sub"] == "demo-service" and service_claims["client_id"] == "demo-service", service_claims
    assert service_claims["scope"] == "orders:read", service_claims
    assert service_claims["jti"] != claims["jti"]

    # Wrong audience / issuer are refused by the verifier.
    key = jwt.PyJWKClient(env.jwks_url).get_signing_key_from_jwt(user_jwt).key
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(user_jwt, key, algorithms=["ES256"], audience="https://other-api.example", issuer=env.issuer, options={"require": REQUIRED})
    with pytest.raises(jwt.InvalidIssuerError):
        jwt.decode(user_jwt, key, algorithms=["ES256"], audience=AUDIENCE, issuer="http://127.0.0.1:1", options={"require": REQUIRED})
    # Not an HMAC/"none" free-for-all: the token only verifies as ES256.
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(user_jwt, key, algorithms=["RS256"], audience=AUDIENCE, issuer=env.issuer)

    # A client with its own `audience: [a, b]`: aud is that list.
    batch_token = env.client_credentials_token(BATCH, scope="orders:read")
    batch_jwt = env.exchange(batch_token["access_token"])
    batch_key = jwt.PyJWKClient(env.jwks_url).get_signing_key_from_jwt(batch_jwt).key
    batch_claims = jwt.decode(
        batch_jwt, batch_key, algorithms=["ES256"], audience=BATCH_AUDIENCES[1], issuer=env.issuer, options={"require": REQUIRED}
    )
    assert batch_claims["aud"] == BATCH_AUDIENCES and batch_claims["sub"] == BATCH, batch_claims
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(batch_jwt, batch_key, algorithms=["ES256"], audience=AUDIENCE, issuer=env.issuer)

    # Exchange is only for a confidential client registered for it.
    r = env.exchange_response(user_token["access_token"], auth=("demo-service", env.creds.service_secret))
    assert_oauth_error(r, 400, "unauthorized_client")
    r = env.exchange_response("not-a-gatehouse-token")
    assert_oauth_error(r, 400, "invalid_request")

    # RFC 7662 JSON introspection.
    r = env.introspect(user_token["access_token"])
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    assert "no-store" in r.headers.get("Cache-Control", ""), r.headers
    info = r.json()
    assert info["active"] is True, info
    assert info["sub"] == claims["sub"] and info["client_id"] == "demo-web" and info.get("username") == "alice", info
    assert set(info["scope"].split()) == set(SCOPE.split()), info
    # A client without `introspect: true` may not introspect.
    r = env.introspect(user_token["access_token"], auth=("demo-web", env.creds.web_secret))
    assert_oauth_error(r, 401, "invalid_client")

    # RFC 9701 signed introspection response, verified with PyJWT (aud = the caller).
    r = env.introspect(user_token["access_token"], accept=INTROSPECTION_JWT)
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Type", "").startswith(INTROSPECTION_JWT), r.headers
    assert "no-store" in r.headers.get("Cache-Control", ""), r.headers
    signed = r.text.strip()
    env.remember(signed)
    header = jwt.get_unverified_header(signed)
    assert header.get("typ") == "token-introspection+jwt", header
    signing_key = jwt.PyJWKClient(env.jwks_url).get_signing_key_from_jwt(signed)
    assert header.get("kid") == signing_key.key_id and header.get("alg") == "ES256", header
    response_claims = jwt.decode(
        signed, signing_key.key, algorithms=["ES256"], audience=GATEWAY, issuer=env.issuer, options={"require": ["iss", "aud", "iat"]}
    )
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(signed, signing_key.key, algorithms=["ES256"], audience="demo-web", issuer=env.issuer)
    inner = response_claims["token_introspection"]
    assert inner["active"] is True and inner["sub"] == claims["sub"] and inner["client_id"] == "demo-web", inner
    assert inner.get("username") == "alice", inner
    # ... also for an inactive token.
    r = env.introspect("not-a-gatehouse-token", accept=INTROSPECTION_JWT)
    assert r.status_code == 200, r.text
    inactive = jwt.decode(r.text.strip(), signing_key.key, algorithms=["ES256"], audience=GATEWAY, issuer=env.issuer)
    assert inactive["token_introspection"] == {"active": False}, inactive

    env.stop_and_check_logs()


# --------------------------------------------------------------------------
# 2. RS256 and EdDSA
# --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
def test_each_algorithm_verifies_with_pyjwt(jwt_env, algorithm):
    env = jwt_env(algorithm, signing={"algorithm": algorithm})
    keys = assert_jwks_document(env.jwks(), algorithm, max_age=300)
    assert len(keys) == 1, keys
    assert_metadata(env, algorithm)
    if algorithm == "RS256":
        n = base64.urlsafe_b64decode(keys[0]["n"] + "=" * (-len(keys[0]["n"]) % 4))
        assert len(n) * 8 >= 2048, f"RSA key of {len(n) * 8} bits"

    user_token = env.password_token("bob", scope="orders:read")
    claims = verify_access_jwt(env, env.exchange(user_token["access_token"]), algorithm=algorithm)
    assert_common_claims(env, claims, user_token)
    assert claims["client_id"] == "demo-web" and claims["scope"] == "orders:read", claims

    service_token = env.client_credentials_token()
    service_jwt = env.exchange(service_token["access_token"])
    claims = verify_access_jwt(env, service_jwt, algorithm=algorithm)
    assert claims["sub"] == "demo-service", claims
    assert jwt.get_unverified_header(service_jwt)["kid"] == keys[0]["kid"]

    # The signed introspection response uses the same key and algorithm.
    r = env.introspect(service_token["access_token"], accept=INTROSPECTION_JWT)
    assert r.status_code == 200, r.text
    signed = r.text.strip()
    key = jwt.PyJWKClient(env.jwks_url).get_signing_key_from_jwt(signed)
    inner = jwt.decode(signed, key.key, algorithms=[algorithm], audience=GATEWAY, issuer=env.issuer)["token_introspection"]
    assert inner["active"] is True and inner["sub"] == "demo-service", inner

    env.stop_and_check_logs()


# --------------------------------------------------------------------------
# 3. rotation: published before it signs, no verification failure
# --------------------------------------------------------------------------


JWKS_MAX_AGE = 2
RESCAN = 1


def _keys_list(env: JwtEnv) -> list[tuple[str, str, str]]:
    result = run_gatehouse("keys", "list", "--config", env.config_path, "--data-dir", env.data_dir)
    assert result.returncode == 0, describe_run(result)
    rows = []
    for line in result.stdout.splitlines():
        if line.strip():
            parts = line.split("\t")
            assert len(parts) >= 3, f"unexpected `keys list` line {line!r}\n{describe_run(result)}"
            rows.append((parts[0], parts[1], parts[2]))
    assert "BEGIN" not in result.stdout + result.stderr, "keys list printed key material"
    return rows


def test_rotation_publishes_before_signing(jwt_env):
    env = jwt_env(signing={"jwks_max_age": f"{JWKS_MAX_AGE}s", "rescan_interval": f"{RESCAN}s"})
    keys = assert_jwks_document(env.jwks(), "ES256", max_age=JWKS_MAX_AGE)
    assert len(keys) == 1, keys
    k1 = keys[0]["kid"]
    subject = env.password_token("alice")["access_token"]

    token_a = env.exchange(subject)
    assert jwt.get_unverified_header(token_a)["kid"] == k1
    verify_access_jwt(env, token_a)

    rotate = run_gatehouse("keys", "rotate", "--config", env.config_path, "--data-dir", env.data_dir)
    assert rotate.returncode == 0, describe_run(rotate)
    assert "BEGIN" not in rotate.stdout + rotate.stderr, "keys rotate printed key material"
    rotated_at = time.monotonic()

    # The new key is published (at the server's next rescan) ...
    k2 = None
    appeared = None
    for _ in polling(max(0.0, 5.0 - (time.monotonic() - rotated_at)), 0.1):  # the 5 s bound is asserted below
        fetched_at = time.monotonic()
        kids = env.jwks_kids()
        new = [k for k in kids if k != k1]
        if new:
            assert len(new) == 1 and k1 in kids, f"JWKS after one rotation: {kids}"
            k2, appeared = new[0], fetched_at
            break
    assert k2, f"the rotated key did not appear in the JWKS within 5 s (rescan_interval {RESCAN}s); JWKS: {env.jwks_kids()}"
    assert k2 in rotate.stdout, f"`keys rotate` should name the new kid {k2}:\n{describe_run(rotate)}"

    # ... but does not sign yet.
    # Each exchange below uses a fresh opaque token: the server reuses the JWT it minted for the same subject
    # token for up to exchange_reuse_period (30 s), which would keep returning the K1-signed JWT.
    published_by = time.monotonic()  # K2 was in the JWKS by now (the fetch that showed it has returned)
    last_k1_asked = time.monotonic()
    at_publication = env.exchange(env.password_token("alice")["access_token"])
    assert jwt.get_unverified_header(at_publication)["kid"] == k1, "the new key signed as soon as it was published"
    states = {kid: state for kid, _, state in _keys_list(env)}
    assert states.get(k1, "").startswith("signing") and states.get(k2, "").startswith("next"), states

    # Keep exchanging (and fetching the JWKS, as a verifier would) until the new key signs.
    first_signed = None
    token_b = None
    jwks_log: list[tuple[float, list[str]]] = []  # (time fetched, kids)
    verifier = jwt.PyJWKClient(env.jwks_url, cache_jwk_set=False)
    # The polling interval (0.5 s): the lead asserted below does not depend on it — K2 signed after the last K1
    # token was asked for, and was published before `published_by`, so their difference bounds the lead from below.
    for _ in polling(max(0.0, 15.0 - (time.monotonic() - rotated_at)), 0.5):
        jwks_log.append((time.monotonic(), env.jwks_kids()))
        asked = time.monotonic()
        token = env.exchange(env.password_token("alice")["access_token"])
        received = time.monotonic()
        kid = jwt.get_unverified_header(token)["kid"]
        assert kid in (k1, k2), f"unknown kid {kid}"
        verify_access_jwt(env, token, client=verifier)  # no verification failure at any point
        if kid == k2:
            first_signed, token_b = received, token
            break
        last_k1_asked = asked
    assert token_b, f"the rotated key did not start signing within 15 s of `keys rotate` (expected ~{JWKS_MAX_AGE + RESCAN + 5} s)"
    assert appeared < first_signed
    assert all(k2 in kids for t, kids in jwks_log if t >= appeared), f"K2 vanished from the JWKS: {jwks_log}"
    # A verifier that fetched the JWKS just before K2 was published may use that copy for max-age seconds:
    # K2 must not sign before every such copy has expired.
    assert last_k1_asked - published_by >= JWKS_MAX_AGE, (
        f"the last K1 token was asked for {last_k1_asked - published_by:.1f}s after K2 was published: "
        f"K2 may have signed before jwks_max_age ({JWKS_MAX_AGE}s) had passed"
    )

    # Both the old and the new token verify against a fresh JWKS (the old key is retained).
    fresh = jwt.PyJWKClient(env.jwks_url)
    assert verify_access_jwt(env, token_a, client=fresh)["sub"] == verify_access_jwt(env, token_b, client=fresh)["sub"]
    assert set(env.jwks_kids()) == {k1, k2}
    assert_jwks_document(env.jwks(), "ES256", max_age=JWKS_MAX_AGE)

    rows = _keys_list(env)
    states = {kid: state for kid, _, state in rows}
    assert len(rows) == 2 and all(alg == "ES256" for _, alg, _ in rows), rows
    assert states[k2].startswith("signing"), rows
    assert states[k1].startswith("retired"), rows

    env.stop_and_check_logs()


# --------------------------------------------------------------------------
# 4. key files are private
# --------------------------------------------------------------------------


def _pem_blocks(key_file: Path) -> list[str]:
    text = key_file.read_text()
    try:
        values = list(_strings(json.loads(text)))
    except ValueError:
        values = [text]
    blocks = [m.group(0) for v in values for m in re.finditer(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", v, re.S)]
    return blocks


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def test_key_files_are_private(jwt_env):
    # A permissive umask must not loosen the key files' permissions.
    old_umask = os.umask(0)
    try:
        env = jwt_env(signing={"jwks_max_age": "2s", "rescan_interval": "1s"})
        rotate = run_gatehouse("keys", "rotate", "--config", env.config_path, "--data-dir", env.data_dir)
    finally:
        os.umask(old_umask)
    assert rotate.returncode == 0, describe_run(rotate)

    # Some signing so the logs have had the chance to show key material.
    env.exchange(env.client_credentials_token()["access_token"])

    keys_dir = env.keys_dir
    assert keys_dir.is_dir(), f"no key directory at {keys_dir}: {sorted(p.name for p in env.data_dir.iterdir())}"
    mode = stat.S_IMODE(keys_dir.stat().st_mode)
    assert mode == 0o700, f"{keys_dir} has mode {oct(mode)}, expected 0o700"
    # The empty lock file replicas sharing the directory take before creating a key: owner-only like the keys.
    lock = keys_dir / ".rotation.lock"
    assert lock.is_file() and lock.stat().st_size == 0 and stat.S_IMODE(lock.stat().st_mode) == 0o600, lock
    files = sorted(p for p in keys_dir.iterdir() if p != lock)
    assert len(files) == 2, f"expected two key files (initial + rotated): {[f.name for f in files]}"
    pems = []
    for path in files:
        assert path.is_file() and not path.is_symlink(), path
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path.name} has mode {oct(mode)}, expected 0o600"
        blocks = _pem_blocks(path)
        assert blocks and all("PRIVATE KEY" in b for b in blocks), f"{path.name} holds no private key PEM"
        pems.extend(blocks)

    # Neither the PEMs nor any line of their base64 body appear in the logs (or the CLI's output).
    body_lines = [line for pem in pems for line in pem.splitlines() if line and not line.startswith("-----") and len(line) >= 16]
    cli_output = rotate.stdout + rotate.stderr
    assert not [l for l in body_lines if l in cli_output], "keys rotate printed private key material"
    env.stop_and_check_logs(extra_forbidden=tuple(pems) + tuple(body_lines))
    assert "PRIVATE KEY" not in env.server.logs


# --------------------------------------------------------------------------
# 5. revocation (RFC 7009) through Authlib, seen by introspection
# --------------------------------------------------------------------------


def test_revoking_refresh_token_deactivates_its_access_token(jwt_env):
    env = jwt_env()
    srv = env.server
    revoke_url = srv.url("/revoke")
    client = OAuth2Session("demo-web", env.creds.web_secret, scope=SCOPE)
    token = client.fetch_token(srv.token_url, username="alice", password=env.creds.alice_password)
    access, refresh = token["access_token"], token.get("refresh_token")
    env.remember(access, refresh)
    assert refresh, token

    r = env.introspect(access)
    assert r.status_code == 200 and r.json()["active"] is True, r.text
    r = env.introspect(refresh)
    assert r.status_code == 200 and r.json()["active"] is True and r.json().get("token_type") == "refresh_token", r.text

    # Another client cannot revoke alice's tokens: 200, nothing happens (RFC 7009 §2.1).
    other = OAuth2Session("demo-service", env.creds.service_secret)
    resp = other.revoke_token(revoke_url, token=refresh, token_type_hint="refresh_token")
    assert resp.status_code == 200, resp.text
    assert env.introspect(access).json()["active"] is True
    # An unknown token: 200 as well.
    resp = client.revoke_token(revoke_url, token="not-a-gatehouse-token")
    assert resp.status_code == 200, resp.text

    # The owner revokes the refresh token: the whole grant dies, including the access token.
    resp = client.revoke_token(revoke_url, token=refresh, token_type_hint="refresh_token")
    assert resp.status_code == 200, resp.text
    assert "no-store" in resp.headers.get("Cache-Control", ""), resp.headers
    for tok in (access, refresh):
        r = env.introspect(tok)
        assert r.status_code == 200, r.text
        assert r.json() == {"active": False}, r.text
    r = env.introspect(access, accept=INTROSPECTION_JWT)
    assert r.status_code == 200, r.text
    key = jwt.PyJWKClient(env.jwks_url).get_signing_key_from_jwt(r.text.strip())
    signed = jwt.decode(r.text.strip(), key.key, algorithms=["ES256"], audience=GATEWAY, issuer=env.issuer)
    assert signed["token_introspection"] == {"active": False}, signed

    # A revoked access token can no longer be exchanged, the refresh token no longer refreshes.
    assert_oauth_error(env.exchange_response(access), 400, "invalid_request")
    r = requests.post(
        srv.token_url, data={"grant_type": "refresh_token", "refresh_token": refresh}, auth=("demo-web", env.creds.web_secret), timeout=10
    )
    assert_oauth_error(r, 400, "invalid_grant")
    for row in token_rows(srv.db_path, access) + token_rows(srv.db_path, refresh):
        assert row["revoked"] == 1, row

    # Revoking an access token alone (plain requests) deactivates just that token.
    fresh = env.password_token("bob")
    r = requests.post(revoke_url, data={"token": fresh["access_token"], "token_type_hint": "access_token"}, auth=("demo-web", env.creds.web_secret), timeout=10)
    assert r.status_code == 200, r.text
    assert env.introspect(fresh["access_token"]).json() == {"active": False}
    assert env.introspect(fresh["refresh_token"]).json()["active"] is True

    env.stop_and_check_logs()
