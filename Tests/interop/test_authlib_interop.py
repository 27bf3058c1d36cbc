"""Interop tests: a third-party OAuth 2.0 client (Authlib's requests OAuth2Session)
against a real `gatehouse auth` process.

Tests in this module share one server (module-scoped `auth_env`); the last test checks
that nothing secret showed up in its logs, so keep it last.
"""

from __future__ import annotations

import base64
import secrets
import time
import urllib.parse

import pytest
import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from gatehouse_testlib import assert_oauth_error, drive_authorization, pkce_pair, token_rows, wait_until

SCOPE = "orders:read orders:write"


def _assert_bearer(token: dict):
    assert token.get("access_token"), token
    assert str(token.get("token_type", "")).lower() == "bearer", token
    assert token["token_type"] == "Bearer", f"token_type should be spelled 'Bearer': {token}"
    assert isinstance(token.get("expires_in"), int) and token["expires_in"] > 0, token


def _oauth_error(excinfo) -> str:
    return getattr(excinfo.value, "error", None)


# --------------------------------------------------------------------------
# metadata / basics
# --------------------------------------------------------------------------


def test_listening_line_and_issuer_follow_real_port(auth_env):
    srv = auth_env.server
    assert srv.listening["issuer"] == f"http://127.0.0.1:{srv.port}", srv.listening
    assert srv.port != 9000
    assert '"event":"listening"' in srv.stdout.replace(" ", ""), "listening line not captured from stdout"


def test_metadata_and_healthz(auth_env):
    srv = auth_env.server
    r = requests.get(srv.url("/healthz"))
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers.get("X-Request-Id")
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        r = requests.get(srv.url(path))
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        assert r.headers.get("X-Request-Id")
        meta = r.json()
        assert meta["issuer"] == srv.issuer
        assert meta["token_endpoint"] == srv.issuer + "/token"
        assert meta["authorization_endpoint"] == srv.issuer + "/authorize"
        assert "S256" in meta.get("code_challenge_methods_supported", []), meta
        for grant in ("authorization_code", "client_credentials", "refresh_token"):
            assert grant in meta.get("grant_types_supported", []), (grant, meta)


# --------------------------------------------------------------------------
# client_credentials
# --------------------------------------------------------------------------


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials(auth_env, auth_method):
    srv = auth_env.server
    client = OAuth2Session(
        "demo-service",
        auth_env.creds.service_secret,
        token_endpoint_auth_method=auth_method,
        scope=SCOPE,
    )
    token = client.fetch_token(srv.token_url, grant_type="client_credentials")
    auth_env.remember(token.get("access_token"))
    _assert_bearer(token)
    assert "refresh_token" not in token, f"client_credentials must not issue a refresh token: {token}"
    if "scope" in token:
        assert set(token["scope"].split()) <= set(SCOPE.split())

    rows = token_rows(srv.db_path, token["access_token"])
    assert len(rows) == 1, rows
    assert rows[0]["kind"] == "access" and rows[0]["client_id"] == "demo-service" and rows[0]["revoked"] == 0


def test_token_response_is_not_cacheable(auth_env):
    srv = auth_env.server
    r = requests.post(
        srv.token_url,
        data={"grant_type": "client_credentials", "scope": "orders:read"},
        auth=("demo-service", auth_env.creds.service_secret),
    )
    assert r.status_code == 200, r.text
    auth_env.remember(r.json().get("access_token"))
    assert "no-store" in r.headers.get("Cache-Control", "")
    assert r.headers.get("Content-Type", "").startswith("application/json")
    assert r.headers.get("X-Request-Id")
    assert r.json().get("scope", "orders:read").split() == ["orders:read"]


# --------------------------------------------------------------------------
# password grant + refresh rotation + reuse detection
# --------------------------------------------------------------------------


def test_password_grant_refresh_rotation_and_reuse_detection(auth_env):
    srv = auth_env.server
    client = OAuth2Session("demo-web", auth_env.creds.web_secret, scope=SCOPE)
    first = client.fetch_token(srv.token_url, username="alice", password=auth_env.creds.alice_password)
    auth_env.remember(first.get("access_token"), first.get("refresh_token"))
    _assert_bearer(first)
    assert first.get("refresh_token"), f"password grant for demo-web should issue a refresh token: {first}"
    old_access, old_refresh = first["access_token"], first["refresh_token"]
    rows = token_rows(srv.db_path, old_access)
    assert rows and rows[0]["username"] == "alice" and rows[0]["client_id"] == "demo-web", rows

    second = dict(client.refresh_token(srv.token_url, refresh_token=old_refresh))
    auth_env.remember(second.get("access_token"), second.get("refresh_token"))
    _assert_bearer(second)
    new_refresh = second.get("refresh_token")
    assert new_refresh and new_refresh != old_refresh, "refresh must rotate the refresh token"
    assert second["access_token"] != old_access

    # The config sets refresh_token_reuse_grace: 1s, a time-based rule whose time must really pass. The server
    # counts whole seconds from the row's rotated_at and allows a reuse while now - rotated_at <= 1, so a reuse is
    # refused from rotated_at + 2 on its clock (this machine's): wait for that, not for a guessed interval.
    (old_row,) = token_rows(srv.db_path, old_refresh)
    assert old_row["rotated_at"] is not None, f"the used refresh token is not marked rotated: {old_row}"
    refused_from = old_row["rotated_at"] + 2
    wait_until(lambda: time.time() >= refused_from + 0.05, timeout=5, interval=0.02, what="the refresh-token reuse grace (1 s) to pass")
    with pytest.raises(OAuthError) as excinfo:
        client.refresh_token(srv.token_url, refresh_token=old_refresh)
    assert _oauth_error(excinfo) == "invalid_grant", excinfo.value

    # Reuse of a rotated refresh token revokes the whole family: the newest one is dead too.
    with pytest.raises(OAuthError) as excinfo:
        client.refresh_token(srv.token_url, refresh_token=new_refresh)
    assert _oauth_error(excinfo) == "invalid_grant", excinfo.value
    for row in token_rows(srv.db_path, new_refresh):
        assert row["revoked"] == 1, row


# --------------------------------------------------------------------------
# authorization code + PKCE (S256)
# --------------------------------------------------------------------------


def _client_for(auth_env, kind: str) -> tuple[OAuth2Session, str, str]:
    cb = auth_env.callback
    if kind == "confidential":
        client = OAuth2Session(
            "demo-web",
            auth_env.creds.web_secret,
            scope=SCOPE,
            redirect_uri=cb.web_redirect_uri,
            code_challenge_method="S256",
        )
        return client, "alice", auth_env.creds.alice_password
    client = OAuth2Session(
        "demo-spa",
        token_endpoint_auth_method="none",
        scope="orders:read",
        redirect_uri=cb.spa_redirect_uri,
        code_challenge_method="S256",
    )
    return client, "bob", auth_env.creds.bob_password


@pytest.mark.parametrize("kind", ["confidential", "public"])
def test_authorization_code_pkce_and_code_replay(auth_env, kind):
    srv = auth_env.server
    client, username, password = _client_for(auth_env, kind)
    code_verifier = secrets.token_urlsafe(48)
    url, state = client.create_authorization_url(srv.authorize_url, code_verifier=code_verifier)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert q["code_challenge_method"] == ["S256"] and q["code_challenge"], url

    with requests.Session() as browser:
        result = drive_authorization(browser, srv, url, username, password)
        auth_env.remember(result.query.get("code"))

    # The session cookie (not Secure: the issuer is loopback http).
    set_cookies = [
        c for r in result.responses for c in r.raw.headers.getlist("Set-Cookie") if c.startswith("gatehouse_session=")
    ]
    assert set_cookies, "no response of the login flow set the gatehouse_session cookie"
    attrs = {a.strip().split("=", 1)[0].lower(): a.strip() for a in set_cookies[-1].split(";")[1:]}
    assert "httponly" in attrs, set_cookies[-1]
    assert attrs.get("samesite", "").lower() == "samesite=lax", set_cookies[-1]
    assert "secure" not in attrs, f"cookie must not be Secure on a loopback http issuer: {set_cookies[-1]}"

    loc = urllib.parse.urlsplit(result.location)
    expected = urllib.parse.urlsplit(client.redirect_uri)
    assert (loc.scheme, loc.netloc, loc.path) == (expected.scheme, expected.netloc, expected.path), result.location
    assert "error" not in result.query, result.query
    assert result.query.get("code"), result.query
    assert result.query.get("state") == state
    assert result.query.get("iss") == srv.issuer

    token = client.fetch_token(srv.token_url, authorization_response=result.location, code_verifier=code_verifier)
    auth_env.remember(token.get("access_token"), token.get("refresh_token"))
    _assert_bearer(token)
    access, refresh = token["access_token"], token.get("refresh_token")
    if kind == "confidential":
        assert refresh, f"demo-web has the refresh_token grant and should get a refresh token: {token}"
    rows = token_rows(srv.db_path, access)
    assert rows and rows[0]["revoked"] == 0 and rows[0]["username"] == username, rows

    # Replaying the same code fails ...
    replay = OAuth2Session(
        client.client_id,
        client.client_secret,
        token_endpoint_auth_method=client.token_endpoint_auth_method,
        redirect_uri=client.redirect_uri,
    )
    with pytest.raises(OAuthError) as excinfo:
        replay.fetch_token(srv.token_url, authorization_response=result.location, state=state, code_verifier=code_verifier)
    assert _oauth_error(excinfo) == "invalid_grant", excinfo.value

    # ... and revokes what the first redemption issued.
    for tok in filter(None, (access, refresh)):
        rows = token_rows(srv.db_path, tok)
        assert rows, "token row not found in auth.sqlite"
        assert all(row["revoked"] == 1 for row in rows), rows
    if refresh:
        with pytest.raises(OAuthError) as excinfo:
            replay.refresh_token(srv.token_url, refresh_token=refresh)
        assert _oauth_error(excinfo) == "invalid_grant", excinfo.value


def test_authorization_code_wrong_verifier_is_rejected(auth_env):
    srv = auth_env.server
    client, username, password = _client_for(auth_env, "public")
    code_verifier = secrets.token_urlsafe(48)
    url, state = client.create_authorization_url(srv.authorize_url, code_verifier=code_verifier)
    with requests.Session() as browser:
        result = drive_authorization(browser, srv, url, username, password)
    auth_env.remember(result.query.get("code"))
    assert result.query.get("code"), result.query
    with pytest.raises(OAuthError) as excinfo:
        client.fetch_token(srv.token_url, authorization_response=result.location, code_verifier=secrets.token_urlsafe(48))
    assert _oauth_error(excinfo) == "invalid_grant", excinfo.value


def test_consent_deny_redirects_with_access_denied(auth_env):
    srv = auth_env.server
    client, _, _ = _client_for(auth_env, "confidential")
    url, state = client.create_authorization_url(srv.authorize_url, code_verifier=secrets.token_urlsafe(48))
    with requests.Session() as browser:
        # bob has never approved demo-web, so consent is shown
        result = drive_authorization(browser, srv, url, "bob", auth_env.creds.bob_password, decision="deny")
    assert result.consent_shown
    assert result.query.get("error") == "access_denied", result.location
    assert result.query.get("state") == state
    assert "code" not in result.query


def test_authorize_with_bad_redirect_uri_never_redirects(auth_env):
    srv = auth_env.server
    _, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": "demo-web",
        "redirect_uri": "https://evil.example/callback",
        "scope": "orders:read",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    r = requests.get(srv.authorize_url, params=params, allow_redirects=False)
    assert r.status_code == 400, (r.status_code, r.headers.get("Location"))
    assert "Location" not in r.headers
    assert r.headers.get("Content-Type", "").startswith("text/html")
    params.update(client_id="no-such-client", redirect_uri=auth_env.callback.web_redirect_uri)
    r = requests.get(srv.authorize_url, params=params, allow_redirects=False)
    assert r.status_code == 400 and "Location" not in r.headers


# --------------------------------------------------------------------------
# error shapes at /token
# --------------------------------------------------------------------------


def test_wrong_client_secret_is_401_invalid_client(auth_env):
    srv = auth_env.server
    r = requests.post(
        srv.token_url,
        data={"grant_type": "client_credentials"},
        auth=("demo-service", "not-the-secret"),
    )
    assert_oauth_error(r, 401, "invalid_client")
    assert r.headers.get("WWW-Authenticate", "").startswith("Basic"), r.headers.get("WWW-Authenticate")
    assert r.json().get("request_id"), r.json()

    # Authlib sees the same error.
    client = OAuth2Session("demo-service", "not-the-secret", token_endpoint_auth_method="client_secret_post")
    with pytest.raises(OAuthError) as excinfo:
        client.fetch_token(srv.token_url, grant_type="client_credentials")
    assert _oauth_error(excinfo) == "invalid_client"


def test_unsupported_grant_type(auth_env):
    srv = auth_env.server
    r = requests.post(
        srv.token_url,
        data={"grant_type": "urn:example:no-such-grant"},
        auth=("demo-service", auth_env.creds.service_secret),
    )
    body = assert_oauth_error(r, 400, "unsupported_grant_type")
    assert body.get("request_id")


def test_wrong_password_is_invalid_grant(auth_env):
    srv = auth_env.server
    r = requests.post(
        srv.token_url,
        data={"grant_type": "password", "username": "bob", "password": "wrong-password", "scope": "orders:read"},
        auth=("demo-web", auth_env.creds.web_secret),
    )
    assert_oauth_error(r, 400, "invalid_grant")

    client = OAuth2Session("demo-web", auth_env.creds.web_secret, scope="orders:read")
    with pytest.raises(OAuthError) as excinfo:
        client.fetch_token(srv.token_url, username="nobody-such", password="whatever")
    assert _oauth_error(excinfo) == "invalid_grant"


def test_public_client_cannot_use_client_credentials(auth_env):
    srv = auth_env.server
    r = requests.post(srv.token_url, data={"grant_type": "client_credentials", "client_id": "demo-spa"})
    assert_oauth_error(r, (400, 401), ("unauthorized_client", "invalid_client"))


def test_client_not_allowed_grant_is_unauthorized_client(auth_env):
    srv = auth_env.server
    # demo-service only has client_credentials
    r = requests.post(
        srv.token_url,
        data={"grant_type": "password", "username": "alice", "password": auth_env.creds.alice_password},
        auth=("demo-service", auth_env.creds.service_secret),
    )
    assert_oauth_error(r, 400, "unauthorized_client")


def test_basic_auth_header_garbage_is_invalid_client(auth_env):
    srv = auth_env.server
    r = requests.post(
        srv.token_url,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic " + base64.b64encode(b"no-colon-here").decode()},
    )
    # a Basic header that does not decode to "id:secret" is a client authentication failure
    assert_oauth_error(r, (400, 401), ("invalid_client", "invalid_request"))
