"""Prometheus metrics of both servers, scraped by a real Prometheus (Debian `prometheus`), and the contract between
the servers' metric names and what the alert rules and the Grafana dashboard query.

1. A real Prometheus scrapes the gateway's and the authorization server's admin listeners of a `gatehouse demo`
   every second; after known traffic its HTTP API (`/api/v1/query`) shows the series with those labels and values.
2. Every metric name the alert rules (config/prometheus/alerts.yml) and the dashboard (config/grafana/gatehouse.json)
   query is one the two `/metrics` export (families without samples still have their `# TYPE` line).
3. `promtool check rules` and `promtool test rules` on the rules and their unit tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from gatehouse_testlib import REPO_ROOT, free_port, wait_until
from observability_demo import ObservedDemo, metric_families, sample_value

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTS = REPO_ROOT / "config" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO_ROOT / "config" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO_ROOT / "config" / "grafana" / "gatehouse.json"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    demo = ObservedDemo(tmp_path_factory.mktemp("metrics-demo"))
    yield demo
    code = demo.stop()
    assert code == 0, f"demo exited with {code} after SIGTERM\n{demo.logs[-3000:]}"


class Prometheus:
    """`prometheus` on a free loopback port with a temporary TSDB, scraping `targets` (job -> host:port) every 1 s."""

    def __init__(self, root: Path, targets: dict[str, str]):
        self.port = free_port()
        rules = root / "alerts.yml"
        shutil.copy(ALERTS, rules)
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n" for job, target in targets.items()
        )
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {rules}\n"
            f"scrape_configs:\n{jobs}"
        )
        self.proc = subprocess.Popen(
            [
                PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            wait_until(self._ready, timeout=30, interval=0.1, what="prometheus /-/ready")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}"
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def query(self, expr: str) -> list[dict]:
        r = requests.get(f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expr}, timeout=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str):
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _token(demo: ObservedDemo, auth, data) -> requests.Response:
    return requests.post(demo.auth + "/token", auth=auth, data=data, timeout=10)


def test_a_real_prometheus_finds_the_series_of_known_traffic(demo, tmp_path):
    prometheus = Prometheus(tmp_path, {"gatehouse-gateway": f"127.0.0.1:{demo.ports['admin']}", "gatehouse-auth": f"127.0.0.1:{demo.ports['auth_admin']}"})
    try:
        # Before any traffic both targets are up.
        wait_until(lambda: prometheus.value('sum(up{job=~"gatehouse-.*"})') == 2, timeout=20, interval=0.2, what="both admin listeners scraped (up == 1)")

        for i in range(7):
            assert requests.get(f"{demo.gateway}/public/hello-{i}", timeout=10).status_code == 200
        for _ in range(3):
            assert requests.get(f"{demo.gateway}/nowhere", timeout=10).status_code == 404
        for _ in range(2):
            assert requests.get(f"{demo.gateway}/api/orders", timeout=10).status_code == 401
        r = _token(demo, ("demo-service", demo.secrets["demo-service-secret"]), {"grant_type": "client_credentials", "scope": "orders:read"})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        # Separate connections (no session): the second request is a token-cache hit, not the connection's memo.
        for _ in range(2):
            r = requests.get(f"{demo.gateway}/api/orders", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 200, r.text
        r = _token(demo, ("demo-service", "not-the-secret"), {"grant_type": "client_credentials", "scope": "orders:read"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text

        expected = {
            'gatehouse_gateway_requests_total{route="public",method="GET",code="2xx"}': 7,
            'gatehouse_gateway_requests_total{route="-",method="GET",code="4xx"}': 3,
            'gatehouse_gateway_requests_total{route="api",method="GET",code="4xx"}': 2,
            'gatehouse_gateway_requests_total{route="api",method="GET",code="2xx"}': 2,
            'gatehouse_gateway_request_duration_seconds_count{route="public"}': 7,
            'gatehouse_gateway_upstream_requests_total{cluster="demo-backend",target="127.0.0.1:%d",outcome="ok"}' % demo.ports["backend"]: 9,
            'gatehouse_gateway_upstream_duration_seconds_count{cluster="demo-backend"}': 9,
            'gatehouse_gateway_token_cache_total{result="miss"}': 1,
            'gatehouse_gateway_token_exchanges_total{result="ok"}': 1,
            'gatehouse_gateway_token_exchange_duration_seconds_count': 1,
            'gatehouse_gateway_in_flight_requests': 0,
            'gatehouse_auth_tokens_issued_total{grant_type="client_credentials"}': 1,
            'gatehouse_auth_tokens_issued_total{grant_type="%s"}' % TOKEN_EXCHANGE: 1,
            'gatehouse_auth_token_errors_total{error="invalid_client"}': 1,
            'gatehouse_auth_requests_total{endpoint="token",code="2xx"}': 2,
            'gatehouse_auth_requests_total{endpoint="token",code="4xx"}': 1,
            'gatehouse_auth_request_duration_seconds_count{endpoint="token"}': 3,
        }

        def values() -> dict:
            return {expr: prometheus.value(f"sum({expr})") for expr in expected}

        last = {}

        def all_seen() -> bool:
            nonlocal last
            last = values()
            return last == {k: float(v) for k, v in expected.items()}

        try:
            wait_until(all_seen, timeout=30, interval=0.5, what="the series of the known traffic in Prometheus")
        except AssertionError:
            pytest.fail(f"Prometheus shows {last}, expected {expected}", pytrace=False)

        # Label sets are the bounded ones: no path, token or client address ever became a label value.
        series = prometheus.query('{__name__=~"gatehouse_.*"}')
        assert series, "no gatehouse series at all"
        label_values = {v for s in series for k, v in s["metric"].items() if k not in ("__name__", "instance", "job")}
        for leaked in [token, "hello-0", "/nowhere", "/api/orders", "not-the-secret"]:
            assert not any(leaked in v for v in label_values), f"{leaked!r} became a label value"
        cache_hits = prometheus.value('sum(gatehouse_gateway_token_cache_total{result="hit"})')
        assert cache_hits is not None and cache_hits >= 1, cache_hits
        # The token grant's store calls are timed by operation.
        assert prometheus.value('sum(gatehouse_auth_store_duration_seconds_count{operation="insert_tokens"})') >= 1
    finally:
        prometheus.stop()


def _queried_metric_names() -> set[str]:
    rules = ALERTS.read_text()
    # The whole file: the expressions, and the names the descriptions tell an operator to look at.
    assert rules.count("expr:") >= 10, f"found {rules.count('expr:')} rule expressions in {ALERTS}"
    exprs = [rules]
    dashboard = json.loads(DASHBOARD.read_text())
    panel_exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    templating = [v.get("definition", "") for v in dashboard["templating"]["list"]]
    assert len(panel_exprs) >= 20, f"found {len(panel_exprs)} panel queries in {DASHBOARD}"
    names = set()
    for text in exprs + panel_exprs + templating:
        names |= set(re.findall(r"\b(gatehouse_[a-z0-9_]+)", text))
    return names


def test_every_metric_the_rules_and_dashboard_query_is_exported(demo):
    names = _queried_metric_names()
    assert len(names) >= 15, names
    families = {}
    for url in (demo.gateway_admin + "/metrics", demo.auth_admin + "/metrics"):
        r = requests.get(url, timeout=5)
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        families.update(metric_families(r.text))
    assert families, "no # TYPE line in either scrape"
    missing = []
    for name in sorted(names):
        if name in families:
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if families.get(base) == "histogram":
            continue
        missing.append(name)
    assert not missing, f"queried but not exported: {missing}"


def test_the_admin_listeners_answer_health_and_readiness(demo):
    for base in (demo.gateway_admin, demo.auth_admin):
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
        r = requests.get(base + "/readyz", timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "ready", r.text
        assert requests.get(base + "/nope", timeout=5).status_code == 404
        assert requests.post(base + "/metrics", timeout=5).status_code == 405
    scrape = requests.get(demo.auth_admin + "/metrics", timeout=5).text
    assert sample_value(scrape, "gatehouse_auth_login_failures_total", {}) is not None


def test_promtool_checks_and_unit_tests_the_alert_rules():
    check = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 10 rules found" in check.stdout, check.stdout
    test = subprocess.run([PROMTOOL, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, timeout=120, cwd=str(ALERT_TESTS.parent))
    assert test.returncode == 0, test.stdout + test.stderr
    # Every alert of the rules is fired by at least one test case.
    alerts = set(re.findall(r"- alert: (\S+)", ALERTS.read_text()))
    tested = set(re.findall(r"alertname: (\S+)", ALERT_TESTS.read_text()))
    assert alerts and alerts <= tested, f"alerts without a unit test: {alerts - tested}"
