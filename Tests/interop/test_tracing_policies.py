"""The gateway's server span reports what the route's policies decided (issue 13: "the rate-limit, breaker and
admission decisions"), read from the spans an OTLP receiver got: a request allowed, delayed and refused by a rate
limit (with the limit's name), a breaker closed, open and open with its fallback answering, and a request admitted
at once, one that waited in the admission queue (with the wait) and one shed. The configurations are those of
`test_gateway_fault_tolerance.py`, with `tracing.sample_ratio: 1.0` and an exporter.
"""

from __future__ import annotations

import secrets
import threading

import requests

from gatehouse_testlib import wait_until
from test_gateway_e2e import gateway_config, http_session
from test_gateway_fault_tolerance import ControlledUpstream, Gateway
from test_tracing import SPAN_KIND_SERVER, OTLPReceiver


def _breaker(**extra) -> dict:
    settings = {"window": "10s", "buckets": 10, "min_requests": 2, "error_rate": "50%", "open_for": "30s", "max_open_for": "60s", "half_open_requests": 1}
    settings.update(extra)
    return settings


def test_the_server_span_carries_the_rate_limit_breaker_and_admission_decisions(tmp_path):
    receiver = OTLPReceiver()
    plain, flaky, held = ControlledUpstream(), ControlledUpstream(), ControlledUpstream()
    no_retries = {"retries": {"attempts": 0}, "outlier_detection": {"consecutive_failures": 0}}
    fallback = {"status": 200, "content_type": "application/json", "body": '{"degraded":true}'}
    config = gateway_config(
        [
            {"name": "plain", "targets": [plain.url]},
            {"name": "flaky", "targets": [flaky.url], **no_retries},
            {"name": "held", "targets": [held.url], **no_retries, "admission": {"max_in_flight": 1, "queue": {"size": 1, "timeout": "20s"}}},
        ],
        [
            {"name": "limited", "match": {"path_prefix": "/limited"}, "cluster": "plain",
             "rate_limits": [{"name": "per-route", "key": "route", "rate": "1/h", "burst": 1}]},
            {"name": "shaped", "match": {"path_prefix": "/shaped"}, "cluster": "plain",
             "rate_limits": [{"name": "shaping", "key": "route", "rate": "5/s", "burst": 1, "max_delay": "1s"}]},
            {"name": "flaky", "match": {"path_prefix": "/flaky"}, "cluster": "flaky", "circuit_breaker": _breaker()},
            {"name": "degraded", "match": {"path_prefix": "/degraded"}, "cluster": "flaky", "circuit_breaker": _breaker(fallback=fallback)},
            {"name": "held", "match": {"path_prefix": "/held"}, "cluster": "held"},
        ],
        tracing={"sample_ratio": 1.0, "otlp_endpoint": receiver.base + "/v1/traces"},
    )
    gw = Gateway(tmp_path, config)
    traces: dict[str, str] = {}
    results: dict[str, int] = {}

    def send(path: str, session=None) -> int:
        traces[path] = secrets.token_hex(16)
        headers = {"traceparent": f"00-{traces[path]}-{secrets.token_hex(8)}-01"}
        status = (session or http_session()).get(gw.url(path), headers=headers, timeout=30).status_code
        results[path] = status
        return status

    def in_background(path: str) -> threading.Thread:
        thread = threading.Thread(target=send, args=(path,))
        thread.start()
        return thread

    try:
        s = http_session()
        assert [send("/limited/1", s), send("/limited/2", s)] == [200, 429]
        assert [send("/shaped/1", s), send("/shaped/2", s)] == [200, 200]
        flaky.mode = "fail"
        assert [send("/flaky/1", s), send("/flaky/2", s), send("/flaky/3", s)] == [500, 500, 503]
        assert [send("/degraded/1", s), send("/degraded/2", s), send("/degraded/3", s)] == [500, 500, 200]
        assert flaky.count == 4, "the premise: the open breakers answered without the upstream"
        # One slot: the first request holds it, the second waits in the queue (size 1), the third is shed.
        held.mode = "hang"
        holder = in_background("/held/holder")
        wait_until(lambda: held.count == 1, 5, what="the slot held")
        waiter = in_background("/held/waiter")
        wait_until(lambda: gw.admin("/admission")["clusters"][0]["queued"] == 1, 5, what="one request queued")
        assert send("/held/shed", s) == 503
        held.release()
        holder.join(30)
        waiter.join(30)
        assert results["/held/holder"] == 200 and results["/held/waiter"] == 200, results

        def server_span(path: str):
            spans = [x for x in receiver.trace(traces[path]) if x.service == "gatehouse-gateway" and x.kind == SPAN_KIND_SERVER]
            return spans[0] if spans else None

        receiver.wait_for(lambda: all(server_span(path) for path in traces), timeout=15, what="every request's server span")
        attributes = {path: server_span(path).attributes for path in traces}
    finally:
        gw.stop()
        for upstream in (plain, flaky, held):
            upstream.close()
        receiver.close()

    def decision(path: str, policy: str):
        return attributes[path].get(f"gatehouse.{policy}.decision")

    # Rate limits: allowed, refused (naming the limit), delayed by shaping (with the time it was held back).
    assert decision("/limited/1", "rate_limit") == "allowed" and "gatehouse.rate_limit.limit" not in attributes["/limited/1"]
    assert decision("/limited/2", "rate_limit") == "limited" and attributes["/limited/2"]["gatehouse.rate_limit.limit"] == "per-route"
    assert decision("/shaped/1", "rate_limit") == "allowed"
    assert decision("/shaped/2", "rate_limit") == "delayed", attributes["/shaped/2"]
    assert 100 <= attributes["/shaped/2"]["gatehouse.rate_limit.delay_ms"] <= 1000, attributes["/shaped/2"]
    # Breakers: closed while counting failures, open (503 without the upstream), open with the fallback answering.
    assert [decision(f"/flaky/{i}", "circuit_breaker") for i in (1, 2, 3)] == ["closed", "closed", "open"]
    assert attributes["/flaky/3"]["http.response.status_code"] == 503 and "gatehouse.circuit_breaker.fallback" not in attributes["/flaky/3"]
    assert decision("/degraded/3", "circuit_breaker") == "open" and attributes["/degraded/3"]["gatehouse.circuit_breaker.fallback"] is True
    # Admission: a slot at once, a slot after waiting (the wait: at least until the shed request had its answer),
    # and shed; with the request's priority class.
    assert decision("/held/holder", "admission") == "admitted" and "gatehouse.admission.wait_ms" not in attributes["/held/holder"]
    assert decision("/held/waiter", "admission") == "queued" and attributes["/held/waiter"]["gatehouse.admission.wait_ms"] > 0, attributes["/held/waiter"]
    assert decision("/held/shed", "admission") == "shed" and attributes["/held/shed"]["http.response.status_code"] == 503
    assert {attributes[p]["gatehouse.priority"] for p in ("/held/holder", "/held/waiter", "/held/shed")} == {"normal"}
    # A policy the route does not have is not reported.
    assert all(decision("/limited/1", policy) is None for policy in ("circuit_breaker", "admission"))
    assert decision("/held/holder", "rate_limit") is None
