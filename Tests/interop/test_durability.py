"""Durability: a token the server has answered with survives `kill -9` of the server
(storage.sqlite.synchronous: full), and the server restarts cleanly on the same data dir. An opaque token survives
as its committed row; a self-contained client_credentials JWT has no row and survives as long as the key that signed
it (synced to disk before it signs): after the restart it still introspects active.
"""

from __future__ import annotations

import time

import requests

import jwt

from gatehouse_testlib import Credentials, GatehouseServer, free_port, jwt_client_yaml, token_rows, write_config


def _client_credentials(server, creds) -> str:
    r = requests.post(
        server.token_url,
        data={"grant_type": "client_credentials", "scope": "orders:read"},
        auth=("demo-service", creds.service_secret),
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_token_survives_kill_9(gatehouse_factory):
    creds = gatehouse_factory.creds
    data_dir = gatehouse_factory.data_dir

    first = gatehouse_factory(data_dir)
    issued_at = time.time()
    token = _client_credentials(first, creds)
    code = first.kill9()  # right after the response: no graceful shutdown, no checkpoint
    assert code == -9, f"expected the process to die from SIGKILL, got {code}"

    second = gatehouse_factory(data_dir)  # restart on the same data dir (WAL recovery)
    assert requests.get(second.url("/healthz")).status_code == 200

    rows = token_rows(second.db_path, token)
    assert len(rows) == 1, f"token row lost after kill -9: {rows}"
    row = rows[0]
    assert row["revoked"] == 0, row
    assert row["kind"] == "access", row
    assert row["client_id"] == "demo-service", row
    assert row["expires_at"] > issued_at, row

    # the restarted server keeps working on the recovered database
    token2 = _client_credentials(second, creds)
    assert token2 != token
    assert len(token_rows(second.db_path, token2)) == 1

    second.stop(check=True)
    # and after a graceful stop, the database still has both tokens
    assert token_rows(second.db_path, token)[0]["revoked"] == 0
    assert len(token_rows(second.db_path, token2)) == 1
    logs = first.logs + second.logs
    assert token not in logs and token2 not in logs, "an issued access token appears in the server's logs"
    assert creds.service_secret not in logs, "the client secret appears in the server's logs"


def test_self_contained_jwt_survives_kill_9_without_a_row(gatehouse_bin, callback_server, tmp_path):
    creds = Credentials()
    extra = jwt_client_yaml(creds) + f"""\
  - id: gatehouse-gateway
    type: confidential
    secret: {creds.gateway_secret}
    grants: ['urn:ietf:params:oauth:grant-type:token-exchange']
    introspect: true
"""
    config = write_config(tmp_path / "auth.yaml", callback_server, creds, extra_clients=extra)
    data_dir = tmp_path / "data"
    data_dir.mkdir()

    # One port for both runs: the issuer follows the port in these tests, and a token names its issuer (`iss`).
    port = free_port()
    first = GatehouseServer(gatehouse_bin, config, data_dir, port=port).start()
    try:
        r = requests.post(first.token_url, data={"grant_type": "client_credentials"}, auth=("demo-jwt", creds.service_secret + "-jwt"), timeout=10)
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        assert jwt.decode(token, options={"verify_signature": False})["jti"].startswith("sc.")
        code = first.kill9()  # right after the response
        assert code == -9, f"expected the process to die from SIGKILL, got {code}"
    finally:
        first.stop(check=False)

    second = GatehouseServer(gatehouse_bin, config, data_dir, port=port).start()
    try:
        assert token_rows(second.db_path, token) == [], "a self-contained JWT has no row"
        r = requests.post(second.url("/introspect"), data={"token": token}, auth=("gatehouse-gateway", creds.gateway_secret), timeout=10)
        assert r.status_code == 200, r.text
        info = r.json()
        assert info["active"] is True and info["client_id"] == "demo-jwt" and info["scope"] == "orders:read", info
    finally:
        second.stop(check=True)
    logs = first.logs + second.logs
    assert token not in logs, "an issued access token appears in the server's logs"
