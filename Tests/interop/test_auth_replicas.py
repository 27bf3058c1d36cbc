"""Replicated authorization servers: two `gatehouse auth` processes on one real PostgreSQL server (started by the test
on a temporary data directory with `scripts/postgres-temp.sh`), one issuer, one shared signing-key directory.

What is checked (see each test's docstring):
 1. tokens cross replicas: issued on one, introspected, exchanged, refreshed and revoked at the other;
 2. concurrent redemption of one code across replicas: exactly one winner, and the replay revokes what it issued;
 3. concurrent rotation of one refresh token across replicas: one new refresh token, and the family rule holds
    (a reuse after the grace revokes the family on both replicas);
 4. replicas started together create one signing key; a rotation made on one replica is published by both before
    either signs with the new key, and JWTs signed with it verify at the other replica and at a gateway (JWKS);
    automatic rotation across replicas creates one key per rotation;
 5. a browser sign-in started on one replica is finished on the other (session cookie, CSRF token, pending
    request, consent and sign-out all cross);
 6. `gatehouse clients|users` changes made with the CLI against the shared database reach both replicas.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest
import requests

from auth_replicas_lib import ReplicaSet, TempPostgres
from gatehouse_testlib import (
    CallbackServer,
    Credentials,
    EchoBackend,
    gatehouse_binary,
    GatewayProcess,
    assert_oauth_error,
    describe_run,
    drive_authorization,
    free_port,
    hidden_fields,
    parse_form,
    pkce_pair,
    run_gatehouse,
    wait_until,
)

EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
AUDIENCE = "http://127.0.0.1:8080"


def extra_clients(creds) -> str:
    return f"""\
  - id: gatehouse-gateway
    type: confidential
    secret: {creds.gateway_secret}
    grants: ['{EXCHANGE_GRANT}']
    introspect: true
  - id: demo-jwt
    type: confidential
    secret: {creds.service_secret}-jwt
    grants: [client_credentials]
    scopes: [orders:read, orders:write]
    default_scopes: [orders:read]
    access_token_format: jwt
"""


@pytest.fixture
def pg(tmp_path):
    server = TempPostgres()
    yield server
    server.close()


@pytest.fixture
def cb():
    callback = CallbackServer()
    yield callback
    callback.close()


@pytest.fixture
def replicas(tmp_path, pg, cb):
    creds = Credentials()
    set_ = ReplicaSet(
        tmp_path / "cluster", pg, cb, creds=creds, extra_clients=extra_clients(creds), tokens_extra={"jwt_audience": AUDIENCE},
        signing={"jwks_max_age": "1s", "rescan_interval": "1s"},
    )
    set_.start()
    yield set_
    set_.close()


def http() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


def token(server, auth, data) -> requests.Response:
    return requests.post(server.token_url, data=data, auth=auth, timeout=10)


def cc(server, creds, client="demo-service") -> dict:
    secret = creds.service_secret if client == "demo-service" else creds.service_secret + "-jwt"
    r = token(server, (client, secret), {"grant_type": "client_credentials"})
    assert r.status_code == 200, r.text
    return r.json()


def introspect(server, creds, value) -> dict:
    r = requests.post(server.url("/introspect"), data={"token": value}, auth=("gatehouse-gateway", creds.gateway_secret), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def password_grant(server, creds, username="alice") -> dict:
    r = token(server, ("demo-web", creds.web_secret), {"grant_type": "password", "username": username, "password": creds.alice_password})
    assert r.status_code == 200, r.text
    return r.json()


def on(server, url: str) -> str:
    """The same URL (absolute, or a path) on `server`: a load balancer sending the next request elsewhere."""
    parts = urllib.parse.urlsplit(url)
    return f"http://127.0.0.1:{server.port}{parts.path}" + (f"?{parts.query}" if parts.query else "")


# --------------------------------------------------------------------------
# 1. tokens cross replicas
# --------------------------------------------------------------------------


def test_tokens_cross_replicas(replicas):
    a, b = replicas[0], replicas[1]
    creds = replicas.creds

    issued = cc(a, creds)
    info = introspect(b, creds, issued["access_token"])
    assert info["active"] is True and info["client_id"] == "demo-service", info

    # exchanged at B for a JWT that both replicas' key sets verify
    r = token(b, ("gatehouse-gateway", creds.gateway_secret), {
        "grant_type": EXCHANGE_GRANT, "subject_token": issued["access_token"],
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "requested_token_type": "urn:ietf:params:oauth:token-type:jwt",
    })
    assert r.status_code == 200, r.text
    exchanged = r.json()["access_token"]
    for server in (a, b):
        key = jwt.PyJWKClient(server.url("/.well-known/jwks.json")).get_signing_key_from_jwt(exchanged)
        claims = jwt.decode(exchanged, key.key, algorithms=["ES256"], audience=AUDIENCE, issuer=replicas.issuer)
        assert claims["client_id"] == "demo-service"

    # a JWT access token from B introspects at A
    direct = cc(b, creds, client="demo-jwt")["access_token"]
    assert introspect(a, creds, direct)["active"] is True

    # a refresh token from A rotates at B
    user = password_grant(a, creds)
    r = token(b, ("demo-web", creds.web_secret), {"grant_type": "refresh_token", "refresh_token": user["refresh_token"]})
    assert r.status_code == 200, r.text
    assert r.json()["refresh_token"] != user["refresh_token"]
    assert introspect(a, creds, r.json()["access_token"])["active"] is True

    # revoked at B: inactive at B at once, at A within its token cache's 5 s
    assert introspect(a, creds, issued["access_token"])["active"] is True  # A has it cached now
    r = requests.post(b.url("/revoke"), data={"token": issued["access_token"]}, auth=("demo-service", creds.service_secret), timeout=10)
    assert r.status_code == 200, r.text
    revoked_at = time.monotonic()
    assert introspect(b, creds, issued["access_token"])["active"] is False
    wait_until(lambda: introspect(a, creds, issued["access_token"])["active"] is False, timeout=8, interval=0.2, what="revocation at the other replica")
    assert time.monotonic() - revoked_at <= 7


def test_self_contained_jwt_has_no_row_and_its_revocation_crosses_replicas(replicas, pg):
    """A client_credentials JWT (client registered with access_token_format: jwt) is self-contained: issuing it writes
    no `tokens` row, the other replica introspects it from its signature, and /revoke at one replica lists its jti
    (one `jwt_revocations` row) so that the other answers inactive within its 5 s cache."""
    a, b = replicas[0], replicas[1]
    creds = replicas.creds
    rows_before = int(pg.sql("SELECT count(*) FROM tokens"))
    issued = [cc(a, creds, client="demo-jwt")["access_token"] for _ in range(20)]
    assert int(pg.sql("SELECT count(*) FROM tokens")) == rows_before, "a self-contained JWT wrote a tokens row"
    jti = jwt.decode(issued[0], options={"verify_signature": False})["jti"]
    assert jti.startswith("sc."), jti

    for value in issued:
        info = introspect(b, creds, value)
        assert info["active"] is True and info["client_id"] == "demo-jwt" and info["sub"] == "demo-jwt", info
    info = introspect(b, creds, issued[0])
    assert info["jti"] == jti and info["iss"] == replicas.issuer and info["aud"] == [AUDIENCE] and info["scope"] == "orders:read", info

    # the phantom-token exchange at B takes it as the subject token
    r = token(b, ("gatehouse-gateway", creds.gateway_secret), {
        "grant_type": EXCHANGE_GRANT, "subject_token": issued[1],
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
    })
    assert r.status_code == 200, r.text
    exchanged = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert exchanged["client_id"] == "demo-jwt" and exchanged["act"] == {"sub": "gatehouse-gateway"}, exchanged

    # revoked at A (by its own client): inactive at A at once, at B within its 5 s cache (B has it cached now)
    assert int(pg.sql("SELECT count(*) FROM jwt_revocations")) == 0
    r = requests.post(a.url("/revoke"), data={"token": issued[0]}, auth=("demo-jwt", creds.service_secret + "-jwt"), timeout=10)
    assert r.status_code == 200, r.text
    revoked_at = time.monotonic()
    assert pg.sql(f"SELECT client_id FROM jwt_revocations WHERE jti = '{jti}'") == "demo-jwt"
    assert introspect(a, creds, issued[0])["active"] is False
    wait_until(lambda: introspect(b, creds, issued[0])["active"] is False, timeout=8, interval=0.2, what="revocation at the other replica")
    assert time.monotonic() - revoked_at <= 7
    assert introspect(b, creds, issued[2])["active"] is True, "only the revoked token is affected"
    assert int(pg.sql("SELECT count(*) FROM jwt_revocations")) == 1
    assert int(pg.sql("SELECT count(*) FROM tokens")) == rows_before


# --------------------------------------------------------------------------
# 2. one code, many redemptions across replicas
# --------------------------------------------------------------------------


def authorization_code(replicas, start_on, username="alice") -> tuple[str, str]:
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code", "client_id": "demo-web", "redirect_uri": replicas.callback.web_redirect_uri,
        "scope": "orders:read", "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
    }
    with http() as browser:
        result = drive_authorization(browser, start_on, start_on.authorize_url + "?" + urllib.parse.urlencode(params), username, replicas.creds.alice_password)
    assert result.query.get("code"), result.location
    return result.query["code"], verifier


def test_concurrent_code_redemption_across_replicas_has_one_winner(replicas):
    creds = replicas.creds
    code, verifier = authorization_code(replicas, replicas[0])
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": replicas.callback.web_redirect_uri, "code_verifier": verifier}
    barrier = threading.Barrier(20)

    def redeem(index: int) -> requests.Response:
        barrier.wait(10)
        return token(replicas[index % 2], ("demo-web", creds.web_secret), data)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(redeem, range(20)))
    winners = [r for r in results if r.status_code == 200]
    assert len(winners) == 1, [(r.status_code, r.text[:120]) for r in results]
    for r in results:
        if r.status_code != 200:
            assert_oauth_error(r, 400, "invalid_grant")
    # the replays revoked what the winning redemption issued, on both replicas
    issued = winners[0].json()
    for server in (replicas[0], replicas[1]):
        wait_until(lambda: introspect(server, creds, issued["access_token"])["active"] is False, timeout=8, interval=0.2, what="the replayed code's token revoked")
        r = token(server, ("demo-web", creds.web_secret), {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})
        assert_oauth_error(r, 400, "invalid_grant")


# --------------------------------------------------------------------------
# 3. one refresh token, many rotations across replicas
# --------------------------------------------------------------------------


def test_concurrent_refresh_rotation_across_replicas_keeps_one_line(replicas, pg):
    creds = replicas.creds
    original = password_grant(replicas[0], creds)["refresh_token"]
    barrier = threading.Barrier(20)

    def rotate(index: int) -> requests.Response:
        barrier.wait(10)
        return token(replicas[index % 2], ("demo-web", creds.web_secret), {"grant_type": "refresh_token", "refresh_token": original})

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(rotate, range(20)))
    # exactly one response carries the successor; the others got an access token only (within the 1 s grace) or,
    # later than the grace, a refusal that revoked the family
    successors = [r.json()["refresh_token"] for r in results if r.status_code == 200 and "refresh_token" in r.json()]
    assert len(successors) == 1, [(r.status_code, r.text[:160]) for r in results]
    for r in results:
        if r.status_code != 200:
            assert_oauth_error(r, 400, "invalid_grant")
    successor = successors[0]
    family_revoked = any(r.status_code != 200 for r in results)

    if not family_revoked:
        # the family goes on from the successor ...
        assert introspect(replicas[1], creds, successor)["active"] is True
        # ... until the original is reused after the grace (the server's clock, from the row's rotated_at)
        rotated_at = int(pg.sql("SELECT max(rotated_at) FROM tokens WHERE rotated_at IS NOT NULL"))
        wait_until(lambda: time.time() > rotated_at + 2.2, timeout=10, interval=0.1, what="the reuse grace to pass")
        r = token(replicas[1], ("demo-web", creds.web_secret), {"grant_type": "refresh_token", "refresh_token": original})
        assert_oauth_error(r, 400, "invalid_grant")
    # the family is revoked on both replicas: the successor is refused everywhere
    for server in (replicas[0], replicas[1]):
        r = token(server, ("demo-web", creds.web_secret), {"grant_type": "refresh_token", "refresh_token": successor})
        assert_oauth_error(r, 400, "invalid_grant")
        wait_until(lambda: introspect(server, creds, successor)["active"] is False, timeout=8, interval=0.2, what="the successor inactive")


# --------------------------------------------------------------------------
# 4. signing keys shared across replicas
# --------------------------------------------------------------------------


def key_file(path: Path) -> dict:
    return json.loads(path.read_text())


def test_key_rotation_on_one_replica_is_published_by_all_before_it_signs(replicas, tmp_path):
    """Both replicas were started at once: one key. `gatehouse keys rotate` for replica A (its config's shared key
    directory): the new key appears in both JWKS well before it signs (publish lead = jwks_max_age 1 s + rescan 1 s
    + 5 s); meanwhile both replicas keep signing with the old key; afterwards both sign with the new one, and its
    JWTs verify at the other replica's JWKS and at a gateway that discovered replica A."""
    creds = replicas.creds
    files = replicas.key_files()
    assert len(files) == 1, f"replicas started together created {len(files)} keys"
    (k1,) = replicas.jwks_kids(0)
    assert replicas.jwks_kids(1) == [k1]

    backend = EchoBackend()
    gw = None
    try:
        admin_port = free_port()
        config = {
            "listeners": [{"host": "127.0.0.1", "port": 0}],
            "admin": {"host": "127.0.0.1", "port": admin_port},
            "authorization_server": {
                "issuer": replicas.issuer, "client_id": "gatehouse-gateway", "client_secret": creds.gateway_secret, "exchange": "token_exchange",
                "cache": {"max_ttl": "1s", "negative_ttl": "1s", "capacity": 1000},
                "jwks": {"min_ttl": "1s", "max_ttl": "2s", "unknown_kid_interval": "1s"},
                "discovery_retry": {"initial": "50ms", "max": "500ms"}, "clock_skew": "0s",
            },
            "clusters": [{"name": "backend", "targets": [backend.url]}],
            "routes": [{"name": "jwt", "match": {"path_prefix": "/jwt/"}, "cluster": "backend", "auth": {"mode": "jwt", "scopes_all_of": ["orders:read"]}}],
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(json.dumps(config))
        gw = GatewayProcess(path, admin_port=admin_port)
        gw.start()
        gw.wait_ready()

        rotate = run_gatehouse("keys", "rotate", "--config", str(replicas.configs[0]), "--data-dir", str(replicas.data_dirs[0]))
        assert rotate.returncode == 0, describe_run(rotate)
        files = replicas.key_files()
        assert len(files) == 2, files
        new = next(key_file(f) for f in files if key_file(f)["kid"] != k1)
        k2, activates_at = new["kid"], new["activates_at"]
        assert activates_at - new["created_at"] >= 7, new

        published: dict[int, float] = {}
        signed: list[tuple[float, int, str]] = []
        while time.time() < activates_at + 3:
            for index in (0, 1):
                if index not in published and k2 in replicas.jwks_kids(index):
                    published[index] = time.time()
                value = cc(replicas[index], creds, client="demo-jwt")["access_token"]
                signed.append((time.time(), index, jwt.get_unverified_header(value)["kid"]))
            time.sleep(0.05)  # the sampling interval of this observation window (JWKS and signing kid side by side); the asserts below check what it saw
        assert set(published) == {0, 1}, "the new key never appeared in a replica's JWKS"
        both_published = max(published.values())
        assert both_published < activates_at - 2, f"published at {both_published}, signs from {activates_at}"
        first_k2 = min(t for t, _, kid in signed if kid == k2)
        assert first_k2 >= both_published, "a replica signed with the new key before both published it"
        assert all(kid == k1 for t, _, kid in signed if t < activates_at - 1), "the old key stopped signing early"
        assert {index for t, index, kid in signed if kid == k2} == {0, 1}, "both replicas sign with the new key after its activation"

        # a JWT signed by B with the new key: verified against A's key set, and accepted by the gateway
        value = cc(replicas[1], creds, client="demo-jwt")["access_token"]
        assert jwt.get_unverified_header(value)["kid"] == k2
        key = jwt.PyJWKClient(replicas[0].url("/.well-known/jwks.json")).get_signing_key_from_jwt(value)
        jwt.decode(value, key.key, algorithms=["ES256"], audience=AUDIENCE, issuer=replicas.issuer)
        r = requests.get(gw.url("/jwt/after-rotation"), headers={"Authorization": f"Bearer {value}"}, timeout=10)
        assert r.status_code == 200, r.text
        # the old key stays published (tokens it signed are still valid)
        assert k1 in replicas.jwks_kids(0) and k1 in replicas.jwks_kids(1)
    finally:
        if gw is not None:
            gw.stop(check=False)
        backend.close()


def test_automatic_rotation_across_replicas_creates_one_key_per_rotation(tmp_path, pg, cb):
    """rotation_period 3 s on both replicas (each rescans every second): every rotation is decided under the key
    directory's lock, so consecutive keys activate at least a rotation period apart (two replicas creating a key
    for one rotation would leave two keys activating within a second of each other)."""
    replicas = ReplicaSet(tmp_path / "cluster", pg, cb, signing={"jwks_max_age": "1s", "rescan_interval": "1s", "rotation_period": "3s"})
    replicas.start()
    try:
        wait_until(lambda: len(replicas.key_files()) >= 4, timeout=60, interval=0.2, what="three automatic rotations")
        keys = sorted((key_file(f) for f in replicas.key_files()), key=lambda k: k["activates_at"])
        gaps = [later["activates_at"] - earlier["activates_at"] for earlier, later in zip(keys, keys[1:])]
        assert all(gap >= 3 for gap in gaps), f"keys activating too close together (a rotation made twice): {gaps}"
        pending = [k for k in keys if k["activates_at"] > time.time()]
        assert len(pending) <= 1, pending
    finally:
        replicas.close()


# --------------------------------------------------------------------------
# 5. a browser sign-in across replicas
# --------------------------------------------------------------------------


def test_login_started_on_one_replica_finishes_on_the_other(replicas):
    a, b = replicas[0], replicas[1]
    creds = replicas.creds
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code", "client_id": "demo-web", "redirect_uri": replicas.callback.web_redirect_uri,
        "scope": "orders:read", "state": "st", "code_challenge": challenge, "code_challenge_method": "S256",
    }
    browser = http()
    # /authorize at A: an anonymous session (cookie) and a pending request
    r = browser.get(a.authorize_url + "?" + urllib.parse.urlencode(params), allow_redirects=False)
    assert r.status_code == 303, r.text
    login = r.headers["Location"]
    assert login.startswith("/login?request="), login
    # the sign-in page from B: B knows the session and the request
    r = browser.get(on(b, login), allow_redirects=False)
    assert r.status_code == 200, r.text
    form = hidden_fields(parse_form(r.text, "login-form"))
    # a wrong CSRF token is refused (at A)
    wrong = ("A" if form["csrf_token"][0] != "A" else "B") + form["csrf_token"][1:]
    bad = dict(form, csrf_token=wrong, username="alice", password=creds.alice_password)
    r = browser.post(on(a, "/login"), data=bad, allow_redirects=False)
    assert r.status_code != 303 and "expired" in r.text, r.status_code
    # the form B rendered is posted to A: the CSRF token validates there, the session is signed in
    r = browser.post(on(a, "/login"), data=dict(form, username="alice", password=creds.alice_password), allow_redirects=False)
    assert r.status_code == 303, r.text
    consent = r.headers["Location"]
    assert consent.startswith("/consent?request="), consent
    # the consent page from B, approved at A
    r = browser.get(on(b, consent), allow_redirects=False)
    assert r.status_code == 200, r.text
    form = hidden_fields(parse_form(r.text, "consent-form"))
    r = browser.post(on(a, "/consent"), data=dict(form, decision="approve"), allow_redirects=False)
    assert r.status_code == 303, r.text
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["Location"]).query)
    code = query["code"][0]
    assert query["state"] == ["st"]
    # the same consent form posted again (at B): the request was completed once, no second code
    r = browser.post(on(b, "/consent"), data=dict(form, decision="approve"), allow_redirects=False)
    assert r.status_code != 303 or "code=" not in r.headers.get("Location", ""), r.headers
    r = token(b, ("demo-web", creds.web_secret), {
        "grant_type": "authorization_code", "code": code, "redirect_uri": replicas.callback.web_redirect_uri, "code_verifier": verifier,
    })
    assert r.status_code == 200, r.text

    # signed in and consented: a new request at B goes straight back to the client with a code
    r = browser.get(b.authorize_url + "?" + urllib.parse.urlencode(dict(params, state="st2")), allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].startswith(replicas.callback.web_redirect_uri + "?code="), r.headers.get("Location")

    # sign-out page from A, submitted at B: the session ends on every replica
    r = browser.get(on(a, "/logout"), allow_redirects=False)
    assert r.status_code == 200, r.text
    form = hidden_fields(parse_form(r.text, "logout-form"))
    r = browser.post(on(b, "/logout"), data=form, allow_redirects=False)
    assert r.status_code == 200, r.text
    for server in (a, b):
        r = browser.get(server.authorize_url + "?" + urllib.parse.urlencode(dict(params, state="st3")), allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"].startswith("/login?request="), r.headers.get("Location")
    # nothing of the session's secrets in the database: only hashes of cookie and request ids
    cookie = browser.cookies.get("gatehouse_session")
    assert cookie
    rows = replicas.pg.sql("SELECT id_hash FROM browser_sessions")
    assert rows and cookie not in rows


# --------------------------------------------------------------------------
# 6. CLI changes reach both replicas
# --------------------------------------------------------------------------


def test_cli_client_and_user_changes_reach_both_replicas(replicas):
    config, data = str(replicas.configs[0]), str(replicas.data_dirs[0])
    added = run_gatehouse("clients", "add", "--config", config, "--data-dir", data, "--id", "svc-cli", "--grant", "client_credentials",
                          "--scope", "orders:read", "--default-scope", "orders:read")
    assert added.returncode == 0, describe_run(added)
    secret = next(line.split(": ", 1)[1] for line in added.stdout.splitlines() if line.startswith("client_secret:"))
    for server in (replicas[0], replicas[1]):
        r = token(server, ("svc-cli", secret), {"grant_type": "client_credentials"})
        assert r.status_code == 200, r.text

    password = "carol-" + secrets.token_hex(8)
    user = subprocess.run(
        [str(gatehouse_binary()), "users", "add", "--config", config, "--data-dir", data, "--bcrypt-cost", "4", "--password-stdin", "carol"],
        input=password + "\n", capture_output=True, text=True, timeout=60,
    )
    assert user.returncode == 0, describe_run(user)
    for server in (replicas[0], replicas[1]):
        r = token(server, ("demo-web", replicas.creds.web_secret), {"grant_type": "password", "username": "carol", "password": password})
        assert r.status_code == 200, r.text

    removed = run_gatehouse("clients", "remove", "--config", config, "--data-dir", data, "svc-cli")
    assert removed.returncode == 0, describe_run(removed)
    # each replica caches clients for 5 s
    for server in (replicas[0], replicas[1]):
        wait_until(lambda: token(server, ("svc-cli", secret), {"grant_type": "client_credentials"}).status_code == 401, timeout=8, interval=0.25,
                   what="the removed client refused")
