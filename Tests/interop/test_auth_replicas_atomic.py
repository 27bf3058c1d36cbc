"""What must be all-or-nothing or counted once across replicated authorization servers: two `gatehouse auth`
processes on one real PostgreSQL server (a temporary data directory, `scripts/postgres-temp.sh`).

 1. The login throttle's counters are shared: failed sign-ins spread over both replicas are counted together, so the
    delay starts after `max_failures_before_delay` (5) failures in total, not 5 per replica; the database holds only
    SHA-256 hashes of the throttle keys.
 2. A code redemption whose database connection dies between marking the code and storing its tokens burns nothing:
    the client gets 503 `temporarily_unavailable`, the code is still unused, no token was stored, and the retry
    succeeds. The interleaving is forced with a lock the test holds (`LOCK TABLE tokens IN SHARE MODE` in a psql
    session of its own), and the connection is cut with `pg_terminate_backend` while the redemption waits on it.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from auth_replicas_lib import TempPostgres
from gatehouse_testlib import assert_oauth_error, wait_until
from test_auth_postgres_faults import cluster  # noqa: F401 - the fixture: two replicas (with admin listeners) on one PostgreSQL
from test_auth_replicas import authorization_code, introspect, token


def key_hash(key: str) -> str:
    """How the server names a throttle key in the database: base64url(SHA-256(key)), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).rstrip(b"=").decode()


def test_failed_sign_ins_on_two_replicas_are_counted_together(cluster):  # noqa: F811
    a, b = cluster[0], cluster[1]
    web = ("demo-web", cluster.creds.web_secret)

    def guess(server, password):
        return token(server, web, {"grant_type": "password", "username": "alice", "password": password})

    # Five failures, three at A and two at B: each replica alone has seen fewer than five.
    for attempt in range(5):
        r = guess(a if attempt % 2 == 0 else b, f"wrong-{attempt}")
        body = assert_oauth_error(r, 400, "invalid_grant")
        assert body["error_description"] == "the username or password is wrong", body
        assert "Retry-After" not in r.headers, f"attempt {attempt} was delayed: {r.headers}"
    # Counted together, that is five: the next attempt waits at either replica, even with the right password (with
    # counters per replica, B — two failures — would have let it through).
    for server in (b, a):
        r = guess(server, cluster.creds.alice_password)
        body = assert_oauth_error(r, 400, "invalid_grant")
        assert (r.headers.get("Retry-After") or "").isdigit(), f"not delayed: {r.status_code} {r.headers} {body}"

    rows = cluster.pg.sql("SELECT key_hash || ' ' || failures FROM login_throttle ORDER BY key_hash").splitlines()
    assert sorted(rows) == sorted([f"{key_hash('user:alice')} 5", f"{key_hash('ip:127.0.0.1')} 5"]), rows
    dump = cluster.pg.sql("SELECT string_agg(key_hash, ',') FROM login_throttle")
    assert "alice" not in dump and "127.0.0.1" not in dump, dump


class LockHolder:
    """A psql session of the test's own holding `LOCK TABLE tokens IN SHARE MODE` in an open transaction: every
    INSERT into `tokens` waits until `release()`."""

    def __init__(self, pg: TempPostgres):
        psql = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))[-1]
        command = [str(psql), "-h", str(pg.dir), "-p", str(pg.port), "-U", "gatehouse", "-d", "gatehouse", "-q", "-At"]
        self.proc = subprocess.Popen(
            ["runuser", "-u", "nobody", "--", *command], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.proc.stdin.write("BEGIN;\nLOCK TABLE tokens IN SHARE MODE;\n")
        self.proc.stdin.flush()
        held = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'tokens' AND l.mode = 'ShareLock' AND l.granted"
        wait_until(lambda: pg.sql(held) == "1", timeout=10, what="the test's lock on tokens")

    def release(self):
        if self.proc.poll() is None:
            self.proc.communicate("ROLLBACK;\n", timeout=30)


def test_a_connection_cut_between_the_codes_mark_and_its_tokens_burns_nothing(cluster):  # noqa: F811
    pg = cluster.pg
    web = ("demo-web", cluster.creds.web_secret)
    code, verifier = authorization_code(cluster, cluster[0])
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": cluster.callback.web_redirect_uri, "code_verifier": verifier}
    assert pg.sql("SELECT count(*) FROM tokens WHERE grant_type = 'authorization_code'") == "0"

    holder = LockHolder(pg)
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(token, cluster[1], web, data)
            # The redemption has marked the code (its UPDATE ran) and waits to store the tokens: cut its connection.
            stalled = "FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO tokens%'"
            wait_until(lambda: pg.sql(f"SELECT count(*) {stalled}") == "1", timeout=10, what="the redemption waiting to store its tokens")
            assert pg.sql(f"SELECT bool_and(pg_terminate_backend(pid)) {stalled}") == "t"
            r = pending.result(timeout=30)
    finally:
        holder.release()

    body = assert_oauth_error(r, 503, "temporarily_unavailable")
    assert (r.headers.get("Retry-After") or "").isdigit(), r.headers
    assert "postgres" not in r.text.lower() and "sqlstate" not in r.text.lower(), body
    # Nothing of the cut transaction stayed: the code is unused and no token was stored.
    assert pg.sql("SELECT count(*) FROM authorization_codes WHERE used_at IS NOT NULL") == "0"
    assert pg.sql("SELECT count(*) FROM tokens WHERE grant_type = 'authorization_code'") == "0"

    # The client's retry (at the same replica, its pool reconnecting by itself) is a first use, not a replay.
    r = token(cluster[1], web, data)
    assert r.status_code == 200, r.text
    issued = r.json()
    for server in (cluster[0], cluster[1]):
        assert introspect(server, cluster.creds, issued["access_token"])["active"] is True
    assert pg.sql("SELECT count(*) FROM tokens WHERE grant_type = 'authorization_code'") == "2"
    # And a second presentation now is the replay: it revokes what the code issued.
    assert_oauth_error(token(cluster[0], web, data), 400, "invalid_grant")
    wait_until(lambda: introspect(cluster[0], cluster.creds, issued["access_token"])["active"] is False, timeout=8, interval=0.2, what="revocation")
