"""PostgreSQL stopped under load and started again, with two `gatehouse auth` replicas on it (a real server on a
temporary data directory, `scripts/postgres-temp.sh`; the outage is `pg_ctl stop -m fast`, which cuts every
session, then a start on the same port).

Checked: every request is answered — 200, or 503 with `Retry-After` and an RFC 6749 `temporarily_unavailable` JSON
body — never a 500, another error or a hang; every token acknowledged to a client introspects active afterwards
(opaque tokens, whose rows must have committed, and self-contained client_credentials JWTs, which have no row and
must verify at either replica);
every refresh-token chain goes on after the outage (a rotation cut by the outage is not half done); service resumes
without a restart (same processes); `/readyz` on each admin listener goes 503 while the database is down and 200
after."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from auth_replicas_lib import ReplicaSet, TempPostgres
from gatehouse_testlib import CallbackServer, Credentials, jwt_client_yaml, wait_until

REQUEST_TIMEOUT = 15  # seconds: far beyond the store's deadline (connect 2 s + statement 2 s); a hang fails here


@pytest.fixture
def cluster(tmp_path):
    pg = TempPostgres()
    cb = CallbackServer()
    creds = Credentials()
    extra = f"""\
  - id: gatehouse-gateway
    type: confidential
    secret: {creds.gateway_secret}
    grants: ['urn:ietf:params:oauth:grant-type:token-exchange']
    introspect: true
""" + jwt_client_yaml(creds)
    replicas = ReplicaSet(tmp_path / "cluster", pg, cb, creds=creds, extra_clients=extra, admin=True, refresh_token_reuse_grace="0s")
    try:
        replicas.start()
        yield replicas
    finally:
        replicas.close()
        cb.close()
        pg.close()


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.statuses: dict[int, int] = {}
        self.failures: list[str] = []
        self.acknowledged: list[str] = []

    def check(self, what: str, r: requests.Response) -> bool:
        """True for a 200; a well-formed 503 is counted; anything else is a failure."""
        with self.lock:
            self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
        if r.status_code == 200:
            return True
        problem = None
        if r.status_code != 503:
            problem = f"status {r.status_code}"
        elif not (r.headers.get("Retry-After") or "").isdigit():
            problem = f"503 without a Retry-After: {dict(r.headers)}"
        elif not r.headers.get("Content-Type", "").startswith("application/json"):
            problem = f"503 body is not JSON: {r.headers.get('Content-Type')}"
        else:
            body = r.json()
            if body.get("error") != "temporarily_unavailable" or not body.get("error_description"):
                problem = f"503 body {body}"
            elif "trace" in r.text.lower() or "postgres" in r.text.lower():
                problem = f"503 body leaks internals: {r.text[:200]}"
        if problem:
            with self.lock:
                self.failures.append(f"{what}: {problem}: {r.text[:200]}")
        return False

    def fail(self, what: str, error: BaseException):
        with self.lock:
            self.failures.append(f"{what}: {error!r}")


def test_postgres_outage_under_load(cluster):
    creds = cluster.creds
    a, b = cluster[0], cluster[1]
    pids = [a.proc.pid, b.proc.pid]
    rec = Recorder()
    stop = threading.Event()
    ready: dict[int, list[int]] = {0: [], 1: []}

    jwts: list[str] = []

    def cc_worker(index: int, client: str = "demo-service", secret: str = creds.service_secret):
        http = requests.Session()
        server = cluster[index % 2]
        while not stop.is_set():
            try:
                r = http.post(server.token_url, data={"grant_type": "client_credentials"}, auth=(client, secret), timeout=REQUEST_TIMEOUT)
                if rec.check("client_credentials", r):
                    with rec.lock:
                        rec.acknowledged.append(r.json()["access_token"])
                        if client == "demo-jwt":
                            jwts.append(r.json()["access_token"])
            except requests.RequestException as error:
                rec.fail("client_credentials", error)

    chains: dict[int, str] = {}

    # one refresh-token family per worker, made before the load (a password grant waits for bcrypt)
    for index in range(4):
        r = requests.post(a.token_url, data={"grant_type": "password", "username": "alice", "password": creds.alice_password},
                          auth=("demo-web", creds.web_secret), timeout=REQUEST_TIMEOUT)
        assert r.status_code == 200, r.text
        chains[index] = r.json()["refresh_token"]

    def refresh_worker(index: int):
        http = requests.Session()
        current = chains[index]
        turn = 0
        while not stop.is_set():
            turn += 1
            try:
                r = http.post(cluster[turn % 2].token_url, data={"grant_type": "refresh_token", "refresh_token": current},
                              auth=("demo-web", creds.web_secret), timeout=REQUEST_TIMEOUT)
                if rec.check("refresh_token", r):
                    body = r.json()
                    if "refresh_token" not in body:
                        rec.fail("refresh_token", AssertionError(f"a rotation answered without a successor: {body}"))
                        return
                    current = body["refresh_token"]
                    with rec.lock:
                        rec.acknowledged.append(body["access_token"])
                else:
                    stop.wait(0.05)  # a client's pause before retrying the same refresh token after a 503 (ends at once when the run stops)
            except requests.RequestException as error:
                rec.fail("refresh_token", error)
            chains[index] = current
        chains[index] = current

    def readyz_poller():
        while not stop.is_set():
            for index in (0, 1):
                try:
                    ready[index].append(requests.get(cluster.admin_url(index, "/readyz"), timeout=REQUEST_TIMEOUT).status_code)
                except requests.RequestException as error:
                    rec.fail("readyz", error)
            stop.wait(0.1)  # the sampling interval; the test asserts what the samples saw (503 during the outage, then 200)

    threads = [threading.Thread(target=cc_worker, args=(i,), daemon=True) for i in range(4)]
    threads += [threading.Thread(target=cc_worker, args=(i, "demo-jwt", creds.service_secret + "-jwt"), daemon=True) for i in range(2)]
    threads += [threading.Thread(target=refresh_worker, args=(i,), daemon=True) for i in range(4)]
    threads.append(threading.Thread(target=readyz_poller, daemon=True))
    for t in threads:
        t.start()
    try:
        wait_until(lambda: rec.statuses.get(200, 0) >= 200, timeout=30, interval=0.05, what="traffic before the outage")
        before = dict(rec.statuses)
        cluster.pg.pause()
        # down: the token endpoint answers 503 (not a hang) and readiness reports it, on both replicas
        wait_until(lambda: rec.statuses.get(503, 0) >= 20, timeout=30, interval=0.05, what="503s during the outage")
        wait_until(lambda: 503 in ready[0][-3:] and 503 in ready[1][-3:], timeout=15, interval=0.1, what="/readyz 503 on both replicas")
        cluster.pg.resume()
        resumed_ok = rec.statuses.get(200, 0)
        wait_until(lambda: rec.statuses.get(200, 0) >= resumed_ok + 200, timeout=30, interval=0.05, what="200s after the database returned")
        wait_until(lambda: ready[0][-1:] == [200] and ready[1][-1:] == [200], timeout=15, interval=0.1, what="/readyz 200 again")
    finally:
        stop.set()
        for t in threads:
            t.join(REQUEST_TIMEOUT + 5)
    assert all(not t.is_alive() for t in threads), "a request hung"
    assert not rec.failures, f"{len(rec.failures)} bad answers (first 5): {rec.failures[:5]}"
    assert before.get(200, 0) >= 200 and rec.statuses.get(503, 0) >= 20, rec.statuses
    assert set(rec.statuses) <= {200, 503}, rec.statuses
    # no restart: the same processes serve
    assert [a.proc.pid, b.proc.pid] == pids and a.proc.poll() is None and b.proc.poll() is None

    # every acknowledged access token is active (asked at both replicas, alternately)
    tokens = list(rec.acknowledged)
    print(f"answers by status {rec.statuses}; {len(tokens)} tokens acknowledged ({len(jwts)} self-contained JWTs); /readyz seen {set(ready[0])}, {set(ready[1])}")
    assert len(tokens) >= 400, len(tokens)

    def active(pair) -> bool:
        index, value = pair
        r = requests.post(cluster[index % 2].url("/introspect"), data={"token": value}, auth=("gatehouse-gateway", creds.gateway_secret), timeout=REQUEST_TIMEOUT)
        return r.status_code == 200 and r.json().get("active") is True

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(active, enumerate(tokens)))
    lost = results.count(False)
    assert lost == 0, f"{lost} of {len(tokens)} acknowledged tokens are not active"
    # self-contained JWTs were among them (asked at both replicas above), and none of them has a row
    assert len(jwts) >= 100, len(jwts)
    assert int(cluster.pg.sql("SELECT count(*) FROM tokens WHERE client_id = 'demo-jwt'")) == 0

    # every refresh chain goes on (grace 0 s: a half-done rotation would have revoked its family)
    assert len(chains) == 4
    for value in chains.values():
        r = requests.post(b.token_url, data={"grant_type": "refresh_token", "refresh_token": value}, auth=("demo-web", creds.web_secret), timeout=REQUEST_TIMEOUT)
        assert r.status_code == 200, f"a refresh chain broke across the outage: {r.status_code} {r.text[:200]}"
