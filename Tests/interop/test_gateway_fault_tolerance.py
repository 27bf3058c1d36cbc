"""Fault tolerance at the gateway (issue 12): per-route rate limits, circuit breakers, admission control with
priority classes, read at the client *and* at the upstream (what the upstream saw, how many requests it served at
once).

Each test starts its own `gatehouse gateway` (port 0, admin listener on a free port) in front of a controllable
upstream: a threaded HTTP/1.1 server whose behaviour (ok, fail with 500, reset, hang until released, slow) is
switched by the test, and which records every request it received and the peak of requests it served at once.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from gatehouse_testlib import GatewayProcess, free_port, wait_until
from test_gateway_e2e import gateway_config, http_session, to_yaml


class ControlledUpstream:
    """An upstream whose behaviour the test sets: `ok`, `fail` (500), `reset` (close without answering), `hang`
    (wait until `release()`), or `slow` (answer after `delay` seconds)."""

    def __init__(self):
        self.mode = "ok"
        self.delay = 0.0
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.headers: list[dict] = []
        self.active = 0
        self.peak = 0
        self.released = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_GET(self):  # noqa: N802
                upstream._serve(self)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                upstream._serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="controlled-upstream", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.paths)

    def release(self):
        self.released.set()

    def _serve(self, handler: BaseHTTPRequestHandler):
        with self.lock:
            self.paths.append(handler.path)
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
            self.active += 1
            self.peak = max(self.peak, self.active)
            mode, delay = self.mode, self.delay
        counted_out = False
        try:
            if mode == "reset":
                handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                handler.close_connection = True
                handler.connection.close()
                return
            if mode == "hang":
                self.released.wait(30)
            if mode == "slow":
                # The upstream's own service time is what these tests are about (a slow backend), not a wait
                # standing in for a condition; the tests that use it assert the time it took.
                time.sleep(delay)
            status = 500 if mode == "fail" else 200
            body = json.dumps({"path": handler.path, "mode": mode}).encode()
            # No longer "being served" once the answer is decided: counted down before the bytes leave, because the
            # gateway may hand the slot on (and send the next request) as soon as it has read them.
            with self.lock:
                self.active -= 1
            counted_out = True
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        finally:
            if not counted_out:
                with self.lock:
                    self.active -= 1

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    u = ControlledUpstream()
    yield u
    u.close()


class Gateway:
    """A gateway process with an admin listener on a free port, its config in `tmp_path/<name>.yaml`."""

    def __init__(self, tmp_path: Path, config: dict, name: str = "gateway", log_level: str = "warning"):
        self.admin_port = free_port()
        config = dict(config)
        config["admin"] = {"host": "127.0.0.1", "port": self.admin_port}
        self.path = tmp_path / f"{name}.yaml"
        self.path.write_text(to_yaml(config) + "\n")
        self.process = GatewayProcess(self.path, admin_port=self.admin_port, log_level=log_level).start()
        self.process.wait_ready()

    def url(self, path: str) -> str:
        return self.process.url(path)

    def admin(self, path: str) -> dict:
        r = requests.get(self.process.admin_url(path), timeout=5)
        assert r.status_code == 200, f"GET {path} -> {r.status_code}: {r.text[:300]}"
        return r.json()

    def reload(self, config: dict):
        config = dict(config)
        config["admin"] = {"host": "127.0.0.1", "port": self.admin_port}
        self.path.write_text(to_yaml(config) + "\n")
        before = self.process.stdout.count('"event":"reloaded"')
        self.process.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.process.stdout.count('"event":"reloaded"') > before, 10, what="the reloaded event")

    def stop(self):
        self.process.stop()


@pytest.fixture
def start_gateway(tmp_path):
    started: list[Gateway] = []

    def start(config: dict) -> Gateway:
        gateway = Gateway(tmp_path, config)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def assert_json_error(response: requests.Response, status: int, error: str):
    assert response.status_code == status, f"{response.status_code}: {response.text[:300]}"
    body = response.json()
    assert body["error"] == error, body
    assert body["request_id"] == response.headers["X-Request-Id"], (body, dict(response.headers))


# --------------------------------------------------------------------------
# rate limits
# --------------------------------------------------------------------------


def limited_route(limits: list[dict], **extra) -> dict:
    route = {"name": "api", "match": {"path_prefix": "/"}, "cluster": "backend", "rate_limits": limits}
    route.update(extra)
    return route


def test_over_the_limit_is_429_with_ietf_headers_and_never_reaches_the_upstream(upstream, start_gateway):
    gw = start_gateway(gateway_config([{"name": "backend", "targets": [upstream.url]}], [limited_route([{"name": "per-ip", "key": "ip", "rate": "1/m", "burst": 3}])]))
    s = http_session()
    seen = []
    for _ in range(3):
        r = s.get(gw.url("/x"))
        assert r.status_code == 200, r.text
        assert r.headers["RateLimit-Policy"] == '"per-ip";q=3;w=180'
        seen.append(r.headers["RateLimit"])
    # The remaining quota counts down; t is the time until the bucket is full again (one emission interval per
    # request spent: 60 s each at 1/m).
    assert [item.split(";")[1] for item in seen] == ["r=2", "r=1", "r=0"], seen
    refused = s.get(gw.url("/x"))
    assert_json_error(refused, 429, "rate_limited")
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60, refused.headers
    assert refused.headers["RateLimit-Policy"] == '"per-ip";q=3;w=180'
    name, remaining, reset = refused.headers["RateLimit"].split(";")
    assert (name, remaining) == ('"per-ip"', "r=0") and int(reset[2:]) >= 1, refused.headers
    assert upstream.count == 3, upstream.paths
    stats = gw.admin("/rate-limits")["routes"][0]["limits"][0]
    assert (stats["name"], stats["allowed"], stats["limited"], stats["tracked_keys"]) == ("per-ip", 3, 1, 1), stats


def test_limit_keys_by_header_fall_back_to_the_client_address(upstream, start_gateway):
    gw = start_gateway(
        gateway_config([{"name": "backend", "targets": [upstream.url]}], [limited_route([{"name": "per-key", "key": "header:X-Api-Key", "rate": "1/h", "burst": 1}])])
    )
    s = http_session()
    assert s.get(gw.url("/"), headers={"X-Api-Key": "alpha"}).status_code == 200
    assert s.get(gw.url("/"), headers={"X-Api-Key": "alpha"}).status_code == 429
    assert s.get(gw.url("/"), headers={"X-Api-Key": "beta"}).status_code == 200  # its own bucket
    # Without the header the request counts under the client's address: one bucket for every keyless request.
    assert s.get(gw.url("/")).status_code == 200
    assert s.get(gw.url("/")).status_code == 429
    assert upstream.count == 3


def test_an_untrusted_peer_cannot_escape_an_ip_limit_with_x_forwarded_for(upstream, start_gateway):
    gw = start_gateway(gateway_config([{"name": "backend", "targets": [upstream.url]}], [limited_route([{"name": "per-ip", "key": "ip", "rate": "1/h", "burst": 2}])]))
    s = http_session()
    statuses = [s.get(gw.url("/"), headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(5)]
    assert statuses == [200, 200, 429, 429, 429], statuses


def test_a_trusted_proxy_names_the_client_in_x_forwarded_for(upstream, start_gateway):
    gw = start_gateway(
        gateway_config(
            [{"name": "backend", "targets": [upstream.url]}],
            [limited_route([{"name": "per-ip", "key": "ip", "rate": "1/h", "burst": 1}])],
            trusted_proxies=["127.0.0.1/32"],
        )
    )
    s = http_session()
    assert s.get(gw.url("/"), headers={"X-Forwarded-For": "203.0.113.1"}).status_code == 200
    assert s.get(gw.url("/"), headers={"X-Forwarded-For": "203.0.113.1"}).status_code == 429
    assert s.get(gw.url("/"), headers={"X-Forwarded-For": "203.0.113.2"}).status_code == 200


def test_max_delay_shapes_instead_of_refusing(upstream, start_gateway):
    gw = start_gateway(
        gateway_config([{"name": "backend", "targets": [upstream.url]}], [limited_route([{"name": "shaped", "key": "route", "rate": "5/s", "burst": 1, "max_delay": "1s"}])])
    )
    s = http_session()
    started = time.monotonic()
    statuses = [s.get(gw.url("/")).status_code for _ in range(4)]
    elapsed = time.monotonic() - started
    assert statuses == [200, 200, 200, 200]
    # The three after the first each waited their 200 ms turn.
    assert elapsed >= 0.55, elapsed
    assert gw.admin("/rate-limits")["routes"][0]["limits"][0]["delayed"] == 3


def test_concurrent_clients_get_exactly_the_configured_budget(upstream, start_gateway):
    # 8 threads hammer one key for about 2 s: the allowed count lies within burst + rate × T of the run's length.
    gw = start_gateway(gateway_config([{"name": "backend", "targets": [upstream.url]}], [limited_route([{"name": "shared", "key": "route", "rate": "50/s", "burst": 10}])]))
    allowed = 0
    refused = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + 2.0

    def hammer():
        nonlocal allowed, refused
        s = http_session()
        while time.monotonic() < stop_at:
            code = s.get(gw.url("/")).status_code
            with lock:
                if code == 200:
                    allowed += 1
                elif code == 429:
                    refused += 1
                else:
                    raise AssertionError(code)

    first = time.monotonic()
    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    last = time.monotonic()
    assert refused > 0, "the premise: clients asked faster than the limit"
    assert allowed == upstream.count
    upper = 10 + 50 * (last - first)
    assert allowed <= upper + 1e-9, (allowed, upper)
    # At least burst + rate × (the part of the run during which requests certainly arrived) − 1.
    assert allowed >= 10 + 50 * (stop_at - first - 0.25) - 1, (allowed, stop_at - first)


def test_a_reload_keeps_the_state_of_an_unchanged_limit(upstream, start_gateway):
    config = gateway_config([{"name": "backend", "targets": [upstream.url]}], [limited_route([{"name": "per-ip", "key": "ip", "rate": "1/h", "burst": 1}])])
    gw = start_gateway(config)
    s = http_session()
    assert s.get(gw.url("/")).status_code == 200
    assert s.get(gw.url("/")).status_code == 429
    config["limits"] = {"idle_timeout": "61s"}  # an unrelated change
    gw.reload(config)
    # The reloaded configuration holds the same limiter: its counts and its spent bucket.
    kept = gw.admin("/rate-limits")["routes"][0]["limits"][0]
    assert (kept["allowed"], kept["limited"], kept["tracked_keys"]) == (1, 1, 1), kept
    assert s.get(gw.url("/")).status_code == 429
    config["routes"][0]["rate_limits"][0]["burst"] = 2  # the definition changes: a fresh bucket
    gw.reload(config)
    fresh = gw.admin("/rate-limits")["routes"][0]["limits"][0]
    assert (fresh["burst"], fresh["allowed"], fresh["tracked_keys"]) == (2, 0, 0), fresh
    # Each event loop picks the new configuration up at its next tick (within 100 ms).
    wait_until(lambda: s.get(gw.url("/")).status_code == 200, 2, what="a request allowed by the fresh bucket")


# --------------------------------------------------------------------------
# circuit breaker
# --------------------------------------------------------------------------


def breaker_route(**breaker) -> dict:
    settings = {"window": "10s", "buckets": 10, "min_requests": 4, "error_rate": "50%", "open_for": "1s", "max_open_for": "8s", "half_open_requests": 2}
    settings.update(breaker)
    return {"name": "flaky", "match": {"path_prefix": "/"}, "cluster": "backend", "circuit_breaker": settings}


def no_retries_cluster(upstream) -> dict:
    return {"name": "backend", "targets": [upstream.url], "retries": {"attempts": 0}, "outlier_detection": {"consecutive_failures": 0}}


def breaker_state(gw) -> dict:
    return gw.admin("/breakers")["routes"][0]


def test_breaker_opens_answers_without_the_upstream_then_half_opens_and_closes(upstream, start_gateway):
    gw = start_gateway(gateway_config([no_retries_cluster(upstream)], [breaker_route()]))
    s = http_session()
    upstream.mode = "fail"
    # Below min_requests nothing is decided, however many fail.
    for _ in range(3):
        assert s.get(gw.url("/")).status_code == 500
    assert breaker_state(gw)["state"] == "closed"
    assert s.get(gw.url("/")).status_code == 500  # the 4th: 100% failures at min volume → open
    state = breaker_state(gw)
    assert state["state"] == "open" and state["trips"] == 1, state
    served = upstream.count
    refused = s.get(gw.url("/"))
    assert_json_error(refused, 503, "circuit_open")
    assert 1 <= int(refused.headers["Retry-After"]) <= 1
    assert upstream.count == served, "an open breaker must not touch the upstream"
    # Half-open after open_for: exactly half_open_requests trials, all succeed → closed.
    upstream.mode = "ok"
    wait_until(lambda: breaker_state(gw)["state"] == "half_open", 5, what="half-open")
    assert s.get(gw.url("/")).status_code == 200
    assert s.get(gw.url("/")).status_code == 200
    assert breaker_state(gw)["state"] == "closed"
    assert upstream.count == served + 2


def test_a_failed_trial_reopens_with_a_doubled_interval(upstream, start_gateway):
    gw = start_gateway(gateway_config([no_retries_cluster(upstream)], [breaker_route(half_open_requests=1)]))
    s = http_session()
    upstream.mode = "reset"
    for _ in range(4):
        assert s.get(gw.url("/")).status_code == 502
    assert breaker_state(gw)["state"] == "open"
    wait_until(lambda: breaker_state(gw)["state"] == "half_open", 5, what="half-open")
    assert s.get(gw.url("/")).status_code == 502  # the trial fails
    state = breaker_state(gw)
    assert state["state"] == "open" and state["trips"] == 2, state
    assert 1.0 < state["next_half_open_in_seconds"] <= 2.0, state  # 2 s now, not 1 s


def test_half_open_admits_exactly_the_trial_budget(upstream, start_gateway):
    gw = start_gateway(gateway_config([no_retries_cluster(upstream)], [breaker_route(half_open_requests=2)]))
    s = http_session()
    upstream.mode = "fail"
    for _ in range(4):
        s.get(gw.url("/"))
    upstream.mode = "hang"
    wait_until(lambda: breaker_state(gw)["state"] == "half_open", 5, what="half-open")
    results: list[int] = []

    def call():
        results.append(http_session().get(gw.url("/"), timeout=30).status_code)

    trials = [threading.Thread(target=call) for _ in range(2)]
    for t in trials:
        t.start()
    wait_until(lambda: upstream.count == 6, 5, what="two trials at the upstream")
    # A third request while both trials are in flight is answered as open.
    assert_json_error(s.get(gw.url("/")), 503, "circuit_open")
    upstream.release()
    for t in trials:
        t.join(10)
    assert results == [200, 200]
    assert breaker_state(gw)["state"] == "closed"


def test_the_fallback_answers_while_open(upstream, start_gateway):
    fallback = {"status": 200, "content_type": "application/json", "body": '{"orders":[],"degraded":true}'}
    gw = start_gateway(gateway_config([no_retries_cluster(upstream)], [breaker_route(fallback=fallback)]))
    s = http_session()
    upstream.mode = "fail"
    for _ in range(4):
        s.get(gw.url("/"))
    served = upstream.count
    r = s.get(gw.url("/"))
    assert r.status_code == 200 and r.json() == {"orders": [], "degraded": True}, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert upstream.count == served


def test_the_breaker_imposes_no_timeout_of_its_own(upstream, start_gateway):
    route = breaker_route(slow_call={"duration": "100ms", "rate": "80%"})
    route["timeouts"] = {"per_try": "5s", "total": "5s"}
    gw = start_gateway(gateway_config([no_retries_cluster(upstream)], [route]))
    upstream.mode = "slow"
    upstream.delay = 1.5
    started = time.monotonic()
    r = http_session().get(gw.url("/"), timeout=10)
    assert r.status_code == 200, r.text
    assert time.monotonic() - started >= 1.5  # the premise: the call really was that slow
    assert breaker_state(gw)["slow_calls"] == 1


def test_retries_count_against_the_breaker_but_not_the_rate_limit(upstream, start_gateway):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    cluster = {"name": "backend", "targets": [f"http://127.0.0.1:{dead.getsockname()[1]}", upstream.url], "retries": {"attempts": 1}, "outlier_detection": {"consecutive_failures": 0}}
    route = breaker_route(min_requests=20)
    route["rate_limits"] = [{"name": "per-ip", "key": "ip", "rate": "1/h", "burst": 2}]
    gw = start_gateway(gateway_config([cluster], [route]))
    s = http_session()
    for _ in range(2):
        assert s.get(gw.url("/")).status_code == 200
    limits = gw.admin("/rate-limits")["routes"][0]["limits"][0]
    assert limits["allowed"] == 2, limits
    # Some tries went to the dead target first (round robin, per event loop) and were retried on the live one: the
    # breaker saw every try, the limit only the two requests.
    state = breaker_state(gw)
    assert upstream.count == 2
    assert state["failures"] >= 1 and state["requests"] == 2 + state["failures"], state
    dead.close()


# --------------------------------------------------------------------------
# admission control and priorities
# --------------------------------------------------------------------------


def admission_config(upstream, size: int = 2, timeout: str = "1s", max_in_flight: int = 2) -> dict:
    cluster = {
        "name": "backend", "targets": [upstream.url], "retries": {"attempts": 0},
        "admission": {"max_in_flight": max_in_flight, "queue": {"size": size, "timeout": timeout}},
    }
    routes = [
        {"name": "critical", "match": {"path_prefix": "/critical"}, "cluster": "backend", "priority": "critical"},
        {"name": "normal", "match": {"path_prefix": "/normal"}, "cluster": "backend"},
        {"name": "sheddable", "match": {"path_prefix": "/sheddable"}, "cluster": "backend", "priority": "sheddable"},
    ]
    return gateway_config([cluster], routes)


class Background:
    """Requests sent from threads, their responses collected by path."""

    def __init__(self, gw):
        self.gw = gw
        self.results: dict[str, requests.Response] = {}
        self.threads: list[threading.Thread] = []

    def send(self, path: str):
        def run():
            self.results[path] = http_session().get(self.gw.url(path), timeout=30)

        t = threading.Thread(target=run)
        t.start()
        self.threads.append(t)

    def join(self):
        for t in self.threads:
            t.join(30)


def test_admission_orders_the_queue_by_priority_and_sheds_the_lowest(upstream, start_gateway):
    # One slot, so that the order in which waiters are admitted is the order the upstream sees them.
    gw = start_gateway(admission_config(upstream, size=2, timeout="10s", max_in_flight=1))
    upstream.mode = "hang"
    bg = Background(gw)
    bg.send("/normal/hold")
    wait_until(lambda: upstream.count == 1, 5, what="a request holding the slot")
    bg.send("/sheddable/a")
    wait_until(lambda: gw.admin("/admission")["clusters"][0]["queued"] == 1, 5, what="one queued")
    bg.send("/sheddable/b")
    wait_until(lambda: gw.admin("/admission")["clusters"][0]["queued"] == 2, 5, what="two queued")
    # The queue is full: a critical newcomer displaces the newest sheddable waiter, which is answered at once.
    bg.send("/critical/c")
    wait_until(lambda: "/sheddable/b" in bg.results, 5, what="the displaced waiter's answer")
    assert_json_error(bg.results["/sheddable/b"], 503, "overloaded")
    assert int(bg.results["/sheddable/b"].headers["Retry-After"]) >= 1
    # A sheddable newcomer to a full queue of its own class or higher is refused.
    r = http_session().get(gw.url("/sheddable/d"), timeout=10)
    assert_json_error(r, 503, "overloaded")
    upstream.release()
    bg.join()
    assert upstream.peak <= 1, upstream.peak
    # Critical was admitted before the sheddable that had waited longer.
    assert upstream.paths == ["/normal/hold", "/critical/c", "/sheddable/a"], upstream.paths
    assert all(bg.results[p].status_code == 200 for p in ["/normal/hold", "/critical/c", "/sheddable/a"])
    shed = gw.admin("/admission")["clusters"][0]["shed"]
    assert shed == {"critical": 0, "normal": 0, "sheddable": 2}, shed


def test_a_waiter_past_the_queue_timeout_gets_503(upstream, start_gateway):
    gw = start_gateway(admission_config(upstream, size=4, timeout="300ms"))
    upstream.mode = "hang"
    bg = Background(gw)
    bg.send("/normal/1")
    bg.send("/normal/2")
    wait_until(lambda: upstream.count == 2, 5, what="both slots held")
    started = time.monotonic()
    r = http_session().get(gw.url("/critical/late"), timeout=10)
    waited = time.monotonic() - started
    assert_json_error(r, 503, "overloaded")
    assert 0.25 <= waited < 2.0, waited
    upstream.release()
    bg.join()
    assert upstream.count == 2


def test_a_client_that_leaves_the_queue_frees_its_place(upstream, start_gateway):
    gw = start_gateway(admission_config(upstream, size=1, timeout="20s"))
    upstream.mode = "hang"
    bg = Background(gw)
    bg.send("/normal/1")
    bg.send("/normal/2")
    wait_until(lambda: upstream.count == 2, 5, what="both slots held")
    s = socket.create_connection(("127.0.0.1", gw.process.port))
    s.sendall(b"GET /critical/gone HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: gw.admin("/admission")["clusters"][0]["queued"] == 1, 5, what="queued")
    s.close()
    wait_until(lambda: gw.admin("/admission")["clusters"][0]["queued"] == 0, 5, what="the place freed")
    upstream.release()
    bg.join()
    # The slot never went to the departed client: only the two holders reached the upstream, and both slots are free.
    assert upstream.paths == ["/normal/1", "/normal/2"] or sorted(upstream.paths) == ["/normal/1", "/normal/2"]
    wait_until(lambda: gw.admin("/admission")["clusters"][0]["in_flight"] == 0, 5, what="slots released")


def test_critical_traffic_keeps_succeeding_under_a_sheddable_flood(upstream, start_gateway):
    gw = start_gateway(admission_config(upstream, size=8, timeout="2s"))
    upstream.mode = "slow"
    upstream.delay = 0.05
    stop = threading.Event()
    sheddable_codes: list[int] = []

    def flood():
        s = http_session()
        while not stop.is_set():
            sheddable_codes.append(s.get(gw.url("/sheddable/x"), timeout=10).status_code)

    flooders = [threading.Thread(target=flood) for _ in range(16)]
    for t in flooders:
        t.start()
    wait_until(lambda: 503 in sheddable_codes, 10, what="the flood saturating the cluster (premise)")
    s = http_session()
    critical = [s.get(gw.url("/critical/y"), timeout=10).status_code for _ in range(10)]
    stop.set()
    for t in flooders:
        t.join(10)
    assert critical == [200] * 10, critical
    assert 503 in sheddable_codes and 200 in sheddable_codes, "the flood was shed, not starved or unserved"
    assert upstream.peak <= 2
