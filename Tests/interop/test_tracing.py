"""Trace context and span export, end to end (issue 13: "Trace context", "Spans and export").

- An OTLP/HTTP receiver in this process (decoding with opentelemetry-proto) gets the spans of one request through
  `gatehouse demo` with a fresh opaque token: gateway, authorization server and demo backend spans share one trace
  id, and every parent id names the span that made the call.
- Trace headers through `gatehouse gateway` to a recording upstream: W3C, B3 single and multi, X-Amzn-Trace-Id in;
  invalid ones replaced; what the upstream got (one span id per attempt, the client's copies never forwarded) and
  what the response carried (`traceresponse`, `X-Amzn-Trace-Id`); an untrusted sampled flag ignored.
- The exporter's queue: a collector that stalls or is down costs requests no latency (p50/p99 measured with and
  without), and the spans it could not take are counted (`GET /tracing` on the admin listener).
"""

from __future__ import annotations

import re
import socket
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from gatehouse_testlib import free_port, wait_until
from test_gateway_e2e import gateway_config, one_cluster_config, start_gateway, upstreams  # noqa: F401 (fixtures)
from test_gateway_auth import _start_demo, remember

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3


# --------------------------------------------------------------------------
# an OTLP/HTTP receiver
# --------------------------------------------------------------------------


class ReceivedSpan:
    def __init__(self, service: str, span):
        self.service = service
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_id = span.parent_span_id.hex() or None
        self.name = span.name
        self.kind = span.kind
        self.start = span.start_time_unix_nano
        self.end = span.end_time_unix_nano
        self.attributes = {}
        for kv in span.attributes:
            value = kv.value
            field = value.WhichOneof("value")
            self.attributes[kv.key] = getattr(value, field) if field else None

    def __repr__(self):
        return f"<{self.service} {self.name} kind={self.kind} trace={self.trace_id} span={self.span_id} parent={self.parent_id}>"


class OTLPReceiver:
    """`POST /v1/traces` with `application/x-protobuf`: decodes every ExportTraceServiceRequest. `stall()` makes it
    hold every request until `release()` (a collector that has stopped answering)."""

    def __init__(self):
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.content_types: set[str] = set()
        self.cond = threading.Condition()
        self.stalled = threading.Event()
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.stalled.is_set():
                    receiver.released.wait(60)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.cond:
                    receiver.requests += 1
                    receiver.content_types.add(self.headers.get("Content-Type", ""))
                    for resource_spans in request.resource_spans:
                        service = next((kv.value.string_value for kv in resource_spans.resource.attributes if kv.key == "service.name"), "")
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                receiver.spans.append(ReceivedSpan(service, span))
                    receiver.cond.notify_all()
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                ok = self.path == "/v1/traces"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stall(self):
        self.stalled.set()

    def release(self):
        self.released.set()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.cond:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"OTLP receiver: {what} not seen within {timeout}s; spans: {self.spans}", pytrace=False)
                self.cond.wait(min(remaining, 0.2))

    def close(self):
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = OTLPReceiver()
    yield r
    r.close()


# --------------------------------------------------------------------------
# 1. one request through `gatehouse demo`: one trace over three services
# --------------------------------------------------------------------------


def test_one_request_through_the_demo_is_one_trace(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base)
    demo = _start_demo(tmp_path)
    try:
        issuer = f"http://127.0.0.1:{demo.ports['auth']}"
        gateway = f"http://127.0.0.1:{demo.ports['gateway']}"
        # A fresh opaque token: the gateway's cache has never seen it, so it asks the authorization server.
        issued = requests.post(issuer + "/token", data={"grant_type": "client_credentials", "scope": "orders:read"}, auth=("demo-service", "demo-service-secret"), timeout=10)
        assert issued.status_code == 200, issued.text
        opaque = issued.json()["access_token"]
        remember(opaque)
        client_trace, client_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        r = requests.get(
            gateway + "/api/orders", headers={"Authorization": f"Bearer {opaque}", "traceparent": f"00-{client_trace}-{client_span}-01"}, timeout=10
        )
        assert r.status_code == 200, r.text
        m = TRACEPARENT.match(r.headers.get("traceresponse", ""))
        assert m and m.group(1) == client_trace and m.group(3) == "01", r.headers
        gateway_server_span = m.group(2)
        # What the backend received: the gateway's traceparent (same trace, the attempt's span), not the client's.
        echoed = {k.lower(): v for k, v in r.json()["headers"].items()}
        upstream = TRACEPARENT.match(echoed.get("traceparent", ""))
        assert upstream and upstream.group(1) == client_trace and upstream.group(2) not in (client_span, gateway_server_span), echoed

        def complete():
            services = {(s.service, s.kind) for s in receiver.trace(client_trace)}
            return {("gatehouse-gateway", SPAN_KIND_SERVER), ("gatehouse-gateway", SPAN_KIND_CLIENT), ("gatehouse-auth", SPAN_KIND_SERVER),
                    ("gatehouse-demo-backend", SPAN_KIND_SERVER)} <= services

        receiver.wait_for(complete, timeout=15, what="the gateway, authorization-server and backend spans of the request")
        spans = receiver.trace(client_trace)
        by_id = {s.span_id: s for s in spans}
        assert len(by_id) == len(spans), f"span ids repeat: {spans}"

        [server] = [s for s in spans if s.service == "gatehouse-gateway" and s.kind == SPAN_KIND_SERVER]
        assert server.span_id == gateway_server_span and server.parent_id == client_span, server
        assert server.attributes.get("http.request.method") == "GET" and server.attributes.get("http.response.status_code") == 200, server.attributes
        assert server.attributes.get("url.path") == "/api/orders" and server.attributes.get("gatehouse.route"), server.attributes
        assert server.attributes.get("gatehouse.client_id") == "demo-service", server.attributes
        assert server.attributes.get("gatehouse.token.outcome") == "exchange", server.attributes
        assert server.attributes.get("gatehouse.upstream.target", "").endswith(str(demo.ports["backend"])), server.attributes

        gateway_clients = [s for s in spans if s.service == "gatehouse-gateway" and s.kind == SPAN_KIND_CLIENT]
        assert all(s.parent_id == server.span_id for s in gateway_clients), gateway_clients
        [attempt] = [s for s in gateway_clients if "gatehouse.upstream.target" in s.attributes]
        [exchange_call] = [s for s in gateway_clients if s.attributes.get("gatehouse.operation") == "token_exchange"]
        assert attempt.span_id == upstream.group(2), (attempt, echoed.get("traceparent"))

        [auth] = [s for s in spans if s.service == "gatehouse-auth" and s.kind == SPAN_KIND_SERVER]
        assert auth.parent_id == exchange_call.span_id, (auth, exchange_call)
        assert auth.attributes.get("oauth.grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange", auth.attributes
        assert auth.attributes.get("gatehouse.outcome") == "issued", auth.attributes

        backend = [s for s in spans if s.service == "gatehouse-demo-backend"]
        assert backend and all(s.parent_id == attempt.span_id for s in backend), (backend, attempt)

        # Each child lies within its parent's time.
        for child in spans:
            parent = by_id.get(child.parent_id)
            if parent is not None and parent.service == child.service:
                assert parent.start <= child.start and child.end <= parent.end, (parent, child)
        # Never a token or a secret in a span.
        for span in spans:
            for value in span.attributes.values():
                assert opaque not in str(value) and "secret" not in str(value), (span, span.attributes)
        assert receiver.content_types == {"application/x-protobuf"}, receiver.content_types

        # A token the authorization server does not know: the span says it was refused.
        refused_trace = "5ae7651916cd43dd8448eb211c80319d"
        r = requests.get(gateway + "/api/orders", headers={"Authorization": "Bearer not-a-token-of-ours", "traceparent": f"00-{refused_trace}-{client_span}-01"}, timeout=10)
        assert r.status_code == 401, r.text
        receiver.wait_for(lambda: any(s.kind == SPAN_KIND_SERVER and s.service == "gatehouse-gateway" for s in receiver.trace(refused_trace)), timeout=15,
                          what="the refused request's server span")
        [refused] = [s for s in receiver.trace(refused_trace) if s.kind == SPAN_KIND_SERVER and s.service == "gatehouse-gateway"]
        assert refused.attributes.get("gatehouse.token.outcome") == "refused" and refused.attributes.get("http.response.status_code") == 401, refused.attributes
    finally:
        demo.stop()


# --------------------------------------------------------------------------
# 2. trace headers through the gateway
# --------------------------------------------------------------------------

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def traced_gateway(start_gateway, upstream, **tracing):
    config = one_cluster_config([upstream.url], tracing=tracing) if tracing else one_cluster_config([upstream.url])
    return start_gateway(config)


def get(gw, path: str = "/x", headers: Optional[dict] = None) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{gw.port}{path}", headers=headers or {}, timeout=10)


def assert_no_client_copies(seen, *values: str):
    """None of the client's trace header values reached the upstream (ids, not one-character flags)."""
    for name, value in seen.headers:
        for sent in values:
            assert len(sent) < 8 or sent != value, f"the client's {name}: {value} was forwarded: {seen.headers}"


def test_w3c_is_continued_and_every_format_sent_upstream(start_gateway, upstreams):
    up = upstreams("one")
    gw = traced_gateway(start_gateway, up, sample_ratio=0, propagate=["w3c", "b3", "b3multi", "xray"])
    client_parent = f"00-{TRACE}-{PARENT}-01"
    r = get(gw, headers={"traceparent": client_parent, "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "b3": f"{TRACE}-{PARENT}-0"})
    assert r.status_code == 200
    seen = up.seen[-1]
    m = TRACEPARENT.match(seen.header("traceparent") or "")
    assert m and m.group(1) == TRACE and m.group(3) == "01", seen.headers  # the trusted parent's decision stands
    attempt = m.group(2)
    assert attempt not in (PARENT, "0" * 16), seen.headers
    assert seen.header("tracestate") == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", seen.headers
    response = TRACEPARENT.match(r.headers.get("traceresponse", ""))
    assert response and response.group(1) == TRACE and response.group(3) == "01", r.headers
    server = response.group(2)
    assert server not in (PARENT, attempt), (server, attempt)
    # B3 single and multi, X-Ray: the same trace id and the gateway's attempt span, never the client's.
    assert seen.header("b3") == f"{TRACE}-{attempt}-1-{server}", seen.headers
    assert (seen.header("X-B3-TraceId"), seen.header("X-B3-SpanId"), seen.header("X-B3-ParentSpanId"), seen.header("X-B3-Sampled")) == (TRACE, attempt, server, "1")
    assert seen.header("X-Amzn-Trace-Id") == f"Root=1-{TRACE[:8]}-{TRACE[8:]};Parent={attempt};Sampled=1", seen.headers
    assert len([n for n, _ in seen.headers if n.lower() == "traceparent"]) == 1, seen.headers
    assert_no_client_copies(seen, client_parent, f"{TRACE}-{PARENT}-0")
    # xray is propagated: the response carries the root too.
    assert r.headers.get("X-Amzn-Trace-Id", "").startswith(f"Root=1-{TRACE[:8]}-{TRACE[8:]}"), r.headers

    # A second request on the same trace gets a new server span and a new attempt span.
    r2 = get(gw, headers={"traceparent": client_parent})
    m2 = TRACEPARENT.match(up.seen[-1].header("traceparent") or "")
    assert m2 and m2.group(1) == TRACE and m2.group(2) != attempt, up.seen[-1].headers
    assert TRACEPARENT.match(r2.headers["traceresponse"]).group(2) != server
    gw.stop()


def test_b3_single_and_multi_and_xray_are_continued(start_gateway, upstreams):
    up = upstreams("one")
    gw = traced_gateway(start_gateway, up, sample_ratio=0)
    b3_trace = "80f198ee56343ba864fe8b2a57d3eff7"
    # b3-propagation's single-header example.
    r = get(gw, headers={"b3": f"{b3_trace}-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"})
    m = TRACEPARENT.match(up.seen[-1].header("traceparent") or "")
    assert m and m.group(1) == b3_trace and m.group(3) == "01", up.seen[-1].headers
    assert up.seen[-1].header("b3") is None, up.seen[-1].headers  # w3c only by default: the client's b3 is not forwarded
    assert r.headers["traceresponse"].startswith(f"00-{b3_trace}-")
    # Multiple headers; a 64-bit trace id is left-padded.
    r = get(gw, headers={"X-B3-TraceId": "a3ce929d0e0e4736", "X-B3-SpanId": "00f067aa0ba902b7", "X-B3-Sampled": "0"})
    seen = up.seen[-1]
    m = TRACEPARENT.match(seen.header("traceparent") or "")
    assert m and m.group(1) == "0000000000000000a3ce929d0e0e4736" and m.group(3) == "00", seen.headers
    assert not any(n.lower().startswith("x-b3-") for n, _ in seen.headers), seen.headers
    # AWS X-Ray's example header: the 32 hex digits after "1-" are the trace id; the response carries the root.
    xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    r = get(gw, headers={"X-Amzn-Trace-Id": xray})
    seen = up.seen[-1]
    m = TRACEPARENT.match(seen.header("traceparent") or "")
    assert m and m.group(1) == "5759e988bd862e3fe1be46a994272793" and m.group(3) == "01", seen.headers
    assert seen.header("X-Amzn-Trace-Id") is None, seen.headers
    assert r.headers.get("X-Amzn-Trace-Id", "").startswith("Root=1-5759e988-bd862e3fe1be46a994272793;"), r.headers
    # W3C wins over B3 and X-Ray when all come.
    r = get(gw, headers={"traceparent": f"00-{TRACE}-{PARENT}-00", "b3": f"{b3_trace}-e457b5a2e4d86bd1-1", "X-Amzn-Trace-Id": xray})
    assert TRACEPARENT.match(up.seen[-1].header("traceparent")).group(1) == TRACE
    gw.stop()


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
        {"traceparent": f"00-{TRACE}-0000000000000000-01"},
        {"traceparent": f"00-{TRACE.upper()}-{PARENT}-01"},
        {"traceparent": f"ff-{TRACE}-{PARENT}-01"},
        {"traceparent": f"00-{TRACE}-{PARENT}-01-extra"},
        {"traceparent": f"00-{TRACE[:-1]}-{PARENT}-01"},
        {"b3": f"{TRACE}-{PARENT}-x"},
        {"X-B3-TraceId": TRACE, "X-B3-Sampled": "1"},
        {"X-Amzn-Trace-Id": "Root=1-5759e98-bd862e3fe1be46a994272793;Sampled=1"},
    ],
)
def test_invalid_context_is_replaced(start_gateway, upstreams, headers):
    up = upstreams("one")
    gw = traced_gateway(start_gateway, up, sample_ratio=0)
    r = get(gw, headers=headers)
    seen = up.seen[-1]
    m = TRACEPARENT.match(seen.header("traceparent") or "")
    assert m and m.group(1) not in (TRACE, TRACE.upper(), "0" * 32) and m.group(3) == "00", seen.headers  # a new trace, sampled by the ratio (0)
    assert_no_client_copies(seen, *headers.values())
    response = TRACEPARENT.match(r.headers.get("traceresponse", ""))
    assert response and response.group(1) == m.group(1), r.headers
    gw.stop()


def test_answers_of_the_gateway_itself_carry_traceresponse(start_gateway, upstreams):
    up = upstreams("one")
    gw = start_gateway(one_cluster_config([up.url], prefix="/api/"))
    r = get(gw, "/elsewhere", headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert r.status_code == 404
    m = TRACEPARENT.match(r.headers.get("traceresponse", ""))
    assert m and m.group(1) == TRACE and m.group(2) != PARENT, r.headers
    assert r.headers.get("X-Request-Id"), r.headers
    # A malformed request (refused before its head is read) still gets a trace.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 400"), head
    assert re.search(r"\r\ntraceresponse: 00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", head), head
    gw.stop()


def test_an_untrusted_sampled_flag_forces_nothing(start_gateway, upstreams):
    up = upstreams("one")
    # No trusted proxies: with `trusted_proxies`, nobody's context is continued.
    gw = traced_gateway(start_gateway, up, sample_ratio=0, incoming="trusted_proxies")
    r = get(gw, headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    m = TRACEPARENT.match(up.seen[-1].header("traceparent") or "")
    assert m and m.group(1) != TRACE and m.group(3) == "00", up.seen[-1].headers
    assert r.headers["traceresponse"].endswith("-00") and TRACE not in r.headers["traceresponse"], r.headers
    gw.stop()
    # `trust` (the default) continues it, and a sampled parent is followed whatever the ratio.
    up2 = upstreams("two")
    gw = traced_gateway(start_gateway, up2, sample_ratio=0)
    r = get(gw, headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert r.headers["traceresponse"].startswith(f"00-{TRACE}-") and r.headers["traceresponse"].endswith("-01"), r.headers
    gw.stop()


def test_each_attempt_gets_its_own_span_id(start_gateway, upstreams, receiver):
    """An idempotent request retried on another target: each attempt is a client span of its own, and the upstream
    that answered saw the second attempt's span id in traceparent."""
    up = upstreams("good")
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens: an attempt there is refused
    config = gateway_config(
        [{"name": "backend", "targets": [f"http://127.0.0.1:{dead_port}", up.url], "load_balancing": "round_robin", "retries": {"attempts": 2}}],
        [{"name": "all", "match": {"path_prefix": "/"}, "cluster": "backend"}],
        tracing={"sample_ratio": 1, "otlp_endpoint": receiver.base + "/v1/traces"},
    )
    gw = start_gateway(config)
    traces = {}
    for i in range(6):
        trace = f"{i + 1:032x}"
        r = get(gw, headers={"traceparent": f"00-{trace}-{PARENT}-01"})
        assert r.status_code == 200, r.text
        traces[trace] = TRACEPARENT.match(up.seen[-1].header("traceparent")).group(2)
    receiver.wait_for(lambda: all(len(receiver.trace(t)) >= 2 for t in traces), timeout=10, what="every request's spans")
    retried = 0
    for trace, seen_by_upstream in traces.items():
        attempts = [s for s in receiver.trace(trace) if s.kind == SPAN_KIND_CLIENT]
        assert len({a.span_id for a in attempts}) == len(attempts), attempts
        assert attempts[-1].span_id == seen_by_upstream or any(a.span_id == seen_by_upstream for a in attempts), (attempts, seen_by_upstream)
        if len(attempts) == 2:
            retried += 1
            failed = [a for a in attempts if a.attributes.get("error.type") == "connect_failed"]
            assert len(failed) == 1 and failed[0].span_id != seen_by_upstream, attempts
    assert retried >= 1, "no request was retried: the test proves nothing"
    gw.stop()


# --------------------------------------------------------------------------
# 3. the exporter's queue: a slow or absent collector costs requests nothing
# --------------------------------------------------------------------------


def latencies(port: int, count: int) -> list[float]:
    session = requests.Session()
    out = []
    for i in range(count):
        started = time.perf_counter()
        r = session.get(f"http://127.0.0.1:{port}/q{i}", timeout=10)
        out.append(time.perf_counter() - started)
        assert r.status_code == 200
    session.close()
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def tracing_stats(admin_port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{admin_port}/tracing", timeout=5).json()


@pytest.mark.parametrize("collector", ["stalled", "down"])
def test_a_slow_or_absent_collector_costs_requests_nothing(start_gateway, upstreams, receiver, collector):
    up = upstreams("one")
    baseline_gw = start_gateway(one_cluster_config([up.url]), name="baseline.yaml")
    latencies(baseline_gw.port, 50)  # warm up
    baseline = latencies(baseline_gw.port, 400)
    baseline_gw.stop()

    if collector == "stalled":
        receiver.stall()
        endpoint = receiver.base + "/v1/traces"
    else:
        endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"  # nothing listens
    admin_port = free_port()
    gw = start_gateway(
        one_cluster_config([up.url], tracing={"sample_ratio": 1, "otlp_endpoint": endpoint}, admin={"host": "127.0.0.1", "port": admin_port}),
        name="traced.yaml",
    )
    latencies(gw.port, 50)
    # Enough sampled requests (a server and an attempt span each) to overflow the 2048-span queue.
    traced = latencies(gw.port, 1200)
    base_p50, base_p99 = percentile(baseline, 0.5), percentile(baseline, 0.99)
    p50, p99 = percentile(traced, 0.5), percentile(traced, 0.99)
    print(f"\n[{collector} collector] p50 {p50 * 1e3:.2f} ms (untraced {base_p50 * 1e3:.2f} ms), p99 {p99 * 1e3:.2f} ms (untraced {base_p99 * 1e3:.2f} ms)")
    # Generous: a request never waits for the collector (a stalled export lasts 10 s; a request waiting on it would
    # take seconds).
    assert p50 < base_p50 * 3 + 0.005, (p50, base_p50)
    assert p99 < base_p99 * 5 + 0.050, (p99, base_p99)
    assert max(traced) < 1.0, max(traced)

    wait_until(lambda: tracing_stats(admin_port)["dropped"] > 0, timeout=15, what="dropped spans counted")
    stats = tracing_stats(admin_port)
    assert stats["exporting"] is True and stats["recorded"] >= 2 * 1250, stats
    assert stats["exported"] == 0, stats
    if collector == "down":
        assert stats["failed_exports"] > 0, stats
    receiver.release()
    gw.stop()


def test_spans_reach_a_collector_with_the_configured_endpoint(start_gateway, upstreams, receiver):
    up = upstreams("one")
    admin_port = free_port()
    gw = start_gateway(
        one_cluster_config(
            [up.url], tracing={"sample_ratio": 1, "otlp_endpoint": receiver.base + "/v1/traces", "service_name": "edge-gw"}, admin={"host": "127.0.0.1", "port": admin_port}
        )
    )
    r = get(gw, "/hello?secret=shh")
    trace = TRACEPARENT.match(r.headers["traceresponse"]).group(1)
    receiver.wait_for(lambda: len(receiver.trace(trace)) >= 2, timeout=10, what="the request's spans")
    spans = receiver.trace(trace)
    assert {s.service for s in spans} == {"edge-gw"}, spans
    [server] = [s for s in spans if s.kind == SPAN_KIND_SERVER]
    assert server.attributes["url.path"] == "/hello" and "shh" not in str(server.attributes), server.attributes
    wait_until(lambda: tracing_stats(admin_port)["exported"] >= 2, timeout=10, what="exported count")
    assert tracing_stats(admin_port)["dropped"] == 0
    gw.stop()
