"""Cluster-wide rate limits (issue 14): `scope: cluster` limits shared by several gateway processes through one real
redis-server (started here on a free loopback port with a temporary directory, stopped at the end), and the local
fallback at `rate / cluster_instances` while Redis is down.

The load is many concurrent keep-alive clients (threads, `http.client`) hammering one key through both gateways; each
request's send time, gateway and status are recorded so that the assertions can look at windows of the run.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import requests

from gatehouse_testlib import free_port, wait_until
from test_gateway_e2e import gateway_config
from test_gateway_fault_tolerance import ControlledUpstream, Gateway as FaultToleranceGateway

RATE = 100  # per second
BURST = 100  # the default: one second's worth
CLIENTS_PER_GATEWAY = 8


class RedisServer:
    """A redis-server on a fixed free loopback port (so it can be stopped and started again at the same address),
    no persistence, in a temporary directory."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gatehouse-redis-"))
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self.cli("PING") == "PONG", 10, 0.05, "redis-server to answer PING")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args: str) -> str:
        result = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        return result.stdout.strip()

    def evalsha_calls(self) -> int:
        for line in self.cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_evalsha:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    def limit_keys(self) -> list[str]:
        return [k for k in self.cli("--scan", "--pattern", "gatehouse:rl:*").splitlines() if k]

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/install-test-deps.sh installs it)", pytrace=False)
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def upstream():
    u = ControlledUpstream()
    yield u
    u.close()


class Gateway(FaultToleranceGateway):
    """A gateway process with an admin listener, log level info (the fallback's transitions are logged at warning
    and notice)."""

    def __init__(self, tmp_path: Path, name: str, config: dict):
        super().__init__(tmp_path, config, name=name, log_level="info")

    @property
    def port(self) -> int:
        return self.process.port

    def limit(self) -> dict:
        return self.admin("/rate-limits")["routes"][0]["limits"][0]

    def fallback_gauge(self) -> Optional[float]:
        text = requests.get(self.process.admin_url("/metrics"), timeout=5).text
        for line in text.splitlines():
            if line.startswith("gatehouse_gateway_rate_limit_fallback{"):
                assert 'route="api"' in line and 'limit="cluster"' in line, line
                return float(line.rsplit(" ", 1)[1])
        return None


@pytest.fixture
def start_gateway(tmp_path):
    started: list[Gateway] = []

    def start(name: str, config: dict) -> Gateway:
        gateway = Gateway(tmp_path, name, config)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.process.proc.poll() is None:
            gateway.stop()


def cluster_config(upstream: ControlledUpstream, redis: RedisServer, instances: int = 2) -> dict:
    limit = {"name": "cluster", "key": "route", "rate": f"{RATE}/s", "burst": BURST, "scope": "cluster", "cluster_instances": instances}
    route = {"name": "api", "match": {"path_prefix": "/"}, "cluster": "backend", "rate_limits": [limit]}
    return gateway_config(
        [{"name": "backend", "targets": [upstream.url]}], [route], redis={"url": f"redis://127.0.0.1:{redis.port}", "timeout": "50ms", "pool_size": 2}
    )


@dataclass
class Record:
    sent: float  # monotonic
    gateway: int
    status: int


class Load:
    """Keep-alive clients hammering the gateways' ports (`targets`, changeable while running) until `stop()`."""

    def __init__(self, ports: list[int], clients_per_gateway: int = CLIENTS_PER_GATEWAY):
        self.ports = list(ports)
        self.active = set(range(len(ports)))  # gateway indices still being sent to
        self.records: list[Record] = []
        self.refusal: Optional[tuple[dict, bytes]] = None  # the headers and body of one 429, as a client saw them
        self.errors: list[str] = []
        self.answered = 0  # grows while answers arrive (increments may race; only its growth is read)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(index,), daemon=True, name=f"load-{index}-{n}")
            for index in range(len(ports))
            for n in range(clients_per_gateway)
        ]

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def stop_sending_to(self, index: int):
        """Takes gateway `index` out (as a load balancer would) and returns once its clients have finished their
        requests in flight and left: stopping it earlier could reset a keep-alive request just being sent, the
        client-side race of RFC 9112 §9.3.1, which says nothing about the gateway."""
        with self.lock:
            self.active.discard(index)
        for thread in self.threads:
            if thread.name.startswith(f"load-{index}-"):
                thread.join(15)
                assert not thread.is_alive(), f"{thread.name} still sending 15 s after gateway {index} was taken out"

    def _client(self, index: int):
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[index], timeout=10)
        local: list[Record] = []
        while not self.stopping.is_set():
            with self.lock:
                if index not in self.active:
                    break
            sent = time.monotonic()
            try:
                conn.request("GET", "/hammer")
                response = conn.getresponse()
                body = response.read()
                local.append(Record(sent, index, response.status))
                self.answered += 1
                if response.status == 429 and self.refusal is None:
                    self.refusal = ({k.lower(): v for k, v in response.getheaders()}, body)
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.ports[index], timeout=10)
            except (OSError, http.client.HTTPException) as error:
                with self.lock:
                    self.errors.append(f"gateway {index}: {error!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.ports[index], timeout=10)
        conn.close()
        with self.lock:
            self.records.extend(local)

    def hold(self, seconds: float, what: str):
        """Keeps the load running for `seconds` — the scenario's length, the thing measured — and asserts its premise
        as it goes: answers keep arriving in every half second, so a stalled load fails here, naming `what`, instead of
        passing as a quiet window."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            before = self.answered
            self.stopping.wait(min(0.5, left))
            assert self.answered > before, f"no request answered for {min(0.5, left):.2f} s during {what}"

    def stop(self) -> list[Record]:
        self.stopping.set()
        for t in self.threads:
            t.join(30)
        return sorted(self.records, key=lambda r: r.sent)


def counts(records: list[Record], start: float = float("-inf"), end: float = float("inf"), gateway: Optional[int] = None) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in records:
        if start <= r.sent < end and (gateway is None or r.gateway == gateway):
            out[r.status] = out.get(r.status, 0) + 1
    return out


def test_two_gateways_share_one_limit_within_two_percent(upstream, redis_server, start_gateway):
    config = cluster_config(upstream, redis_server)
    gateways = [start_gateway("gw-a", config), start_gateway("gw-b", config)]

    # The same headers and 429 as a local limit.
    probe = requests.get(f"http://127.0.0.1:{gateways[0].port}/first", timeout=5)
    assert probe.status_code == 200, probe.text
    assert probe.headers["RateLimit-Policy"] == '"cluster";q=100;w=1', probe.headers
    assert probe.headers["RateLimit"].startswith('"cluster";r=99;t='), probe.headers
    # Decided by Redis (a bucket one slot short is gone again 10 ms later: a full bucket is no key).
    assert redis_server.evalsha_calls() == 1

    load = Load([g.port for g in gateways]).start()
    started = time.monotonic()
    load.hold(10, "the 10 s run through both gateways")
    records = load.stop()
    records = [r for r in records if r.sent < started + 10]
    assert not load.errors, load.errors[:5]
    elapsed = records[-1].sent - records[0].sent
    total = counts(records)
    # (The request above took one slot well before the load: refilled 10 ms later, the bucket was full again.)
    allowed = total.get(200, 0)
    expected = BURST + RATE * 10
    per_gateway = [counts(records, gateway=i) for i in range(2)]
    print(
        f"\ncluster limit 100/s burst 100 through 2 gateways for {elapsed:.2f} s: {len(records)} requests, allowed {allowed}, "
        f"expected {expected} (burst + 100 x 10), error {100 * (allowed - expected) / expected:+.2f}%; by status {total}; per gateway {per_gateway}"
    )
    assert set(total) <= {200, 429}, total
    # Both gateways were hammered far beyond the limit, and both had requests allowed.
    assert total.get(429, 0) > allowed // 2, total
    assert all(c.get(200, 0) > 100 and c.get(429, 0) > 100 for c in per_gateway), per_gateway
    assert abs(allowed - expected) <= 0.02 * expected, (allowed, expected)

    # A refusal answered by Redis's decision: the local limit's 429.
    assert load.refusal is not None
    headers, raw = load.refusal
    body = json.loads(raw)
    assert body["error"] == "rate_limited" and body["request_id"] == headers["x-request-id"], body
    assert headers["retry-after"] == "1", headers
    assert headers["ratelimit-policy"] == '"cluster";q=100;w=1'
    assert headers["ratelimit"].startswith('"cluster";r=0;t='), headers

    stats = [g.limit() for g in gateways]
    assert all(s["scope"] == "cluster" and s["fallback"] is False and s["fallbacks"] == 0 for s in stats), stats
    assert redis_server.evalsha_calls() >= len(records)  # one script run per decision
    # Redis's decisions, counted where they were asked (both gateways' requests after the window included).
    assert sum(s["allowed"] for s in stats) >= allowed and sum(s["limited"] for s in stats) >= total[429], stats
    assert all(g.fallback_gauge() == 0 for g in gateways)


def test_redis_stopped_mid_run_falls_back_locally_and_returns(upstream, redis_server, start_gateway):
    config = cluster_config(upstream, redis_server, instances=2)
    gateways = [start_gateway("gw-a", config), start_gateway("gw-b", config)]
    assert all(g.fallback_gauge() == 0 for g in gateways)

    load = Load([g.port for g in gateways]).start()
    wait_until(lambda: len(redis_server.limit_keys()) == 1, 10, what="the limit's key in Redis")
    load.hold(2, "the stretch decided by Redis before the outage")

    redis_server.stop()
    stopped_at = time.monotonic()
    wait_until(lambda: all(g.fallback_gauge() == 1 for g in gateways), 10, what="the fallback gauge at 1 on both gateways")
    fell_back_at = time.monotonic()
    assert all(g.limit()["fallback"] is True for g in gateways)
    load.hold(5, "the five seconds decided locally")
    local_end = time.monotonic()

    redis_server.start()
    wait_until(lambda: all(g.fallback_gauge() == 0 for g in gateways), 15, 0.05, "the fallback gauge back at 0 on both gateways")
    recovered_at = time.monotonic()
    # Limits come from Redis again: the (restarted, empty) server holds the limit's key again.
    wait_until(lambda: len(redis_server.limit_keys()) == 1, 5, what="the limit's key in the restarted Redis")
    load.hold(2, "the load decided by Redis after its return")
    records = load.stop()
    assert not load.errors, load.errors[:5]

    total = counts(records)
    print(f"\nredis stopped at +{stopped_at - records[0].sent:.2f}s, fallback seen after {fell_back_at - stopped_at:.2f}s, "
          f"redis back after {recovered_at - local_end:.2f}s; by status {total}")
    # Every request answered, limited or not, never a 5xx.
    assert set(total) <= {200, 429}, total
    # While falling back, each gateway holds its share: at most burst/2 + rate/2 per second.
    window = local_end - fell_back_at
    for index in range(2):
        during = counts(records, fell_back_at, local_end, gateway=index)
        bound = BURST // 2 + RATE / 2 * window
        print(f"gateway {index} while falling back ({window:.2f} s): {during}, bound {bound:.0f}")
        assert during.get(429, 0) > 0, during  # limited locally, not fail-open
        assert 0.5 * RATE / 2 * window <= during.get(200, 0) <= bound + 2, (during, bound)
    # After the return, the cluster as a whole is limited by Redis again: ≤ burst + rate × window.
    after = counts(records, recovered_at + 0.5)
    after_window = records[-1].sent - (recovered_at + 0.5)
    assert after.get(200, 0) <= BURST + RATE * after_window + 2, (after, after_window)
    for g in gateways:
        stats = g.limit()
        assert stats["fallback"] is False and stats["fallbacks"] == 1, stats
        logs = g.process.stderr
        # Once per transition, not once per request.
        assert logs.count("falling back to the local limiter") == 1, logs[-3000:]
        assert logs.count("back on Redis") == 1, logs[-3000:]


def test_one_gateway_stopped_the_other_keeps_serving_and_the_limit_holds(upstream, redis_server, start_gateway):
    config = cluster_config(upstream, redis_server)
    gateways = [start_gateway("gw-a", config), start_gateway("gw-b", config)]
    load = Load([g.port for g in gateways]).start()
    started = time.monotonic()
    load.hold(5, "the first half of the run, through both gateways")
    load.stop_sending_to(1)  # the load balancer takes it out …
    gateways[1].stop()  # … and it stops
    assert gateways[1].process.proc.poll() is not None
    load.hold(started + 10 - time.monotonic(), "the second half of the run, through gateway A alone")
    records = load.stop()
    records = [r for r in records if r.sent < started + 10]
    assert not load.errors, load.errors[:5]

    total = counts(records)
    after = counts(records, started + 5.5, gateway=0)
    allowed = total.get(200, 0)
    expected = BURST + RATE * 10
    print(f"\none gateway stopped at +5 s: allowed {allowed}, expected {expected}, error {100 * (allowed - expected) / expected:+.2f}%; "
          f"by status {total}; gateway A after the stop {after}")
    assert set(total) <= {200, 429}, total
    assert after.get(200, 0) > 300 and after.get(429, 0) > 0, after  # A kept serving, and kept limiting
    assert abs(allowed - expected) <= 0.02 * expected, (allowed, expected)
    assert gateways[0].fallback_gauge() == 0
