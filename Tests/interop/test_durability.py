"""Durability: a token the server has answered with survives `kill -9` of the server
(storage.sqlite.synchronous: full), and the server restarts cleanly on the same data dir.
"""

from __future__ import annotations

import time

import requests

from gatehouse_testlib import token_rows


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
