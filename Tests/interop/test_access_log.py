"""The access logs of both servers (`access_log: {path}`), from a real `gatehouse demo` run:

- one JSON line per request, at the gateway and at the authorization server, with the fields of the shape;
- SIGUSR1 reopens the files (log rotation: the moved file keeps the old lines, the new one gets the next);
- nothing is lost at shutdown (SIGTERM drains, then the logs are flushed);
- no token, code, client secret, refresh token, password, cookie or `Authorization` value used during the run
  appears in the access logs or the server logs. The check first asserts that it collected secrets and that the
  logs it searches are not empty.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import urllib.parse
from types import SimpleNamespace

import requests

from gatehouse_testlib import drive_authorization, pkce_pair, wait_until
from observability_demo import ObservedDemo
from test_tracing import SPAN_KIND_SERVER, OTLPReceiver

FIELDS = {
    "time", "service", "request_id", "trace_id", "span_id", "route", "method", "path", "status", "bytes_in", "bytes_out",
    "duration_ms", "upstream", "attempts", "client_id", "token", "policy", "cause",
}


def _lines(path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _basic(client: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client}:{secret}".encode()).decode()


def test_access_logs_have_one_line_per_request_rotate_and_hold_no_secrets(tmp_path):
    demo = ObservedDemo(tmp_path)
    used: list[str] = []  # every secret this run sends or receives

    def remember(*values):
        used.extend(str(v) for v in values if v)

    try:
        # client_credentials (Basic), then through the gateway: the opaque token is exchanged for a JWT.
        service_secret, web_secret = demo.secrets["demo-service-secret"], demo.secrets["demo-web-secret"]
        password = demo.secrets["alice-password"]
        remember(service_secret, _basic("demo-service", service_secret))
        r = requests.post(demo.auth + "/token", headers={"Authorization": _basic("demo-service", service_secret)},
                          data={"grant_type": "client_credentials", "scope": "orders:read"}, timeout=10)
        assert r.status_code == 200, r.text
        service_token = r.json()["access_token"]
        remember(service_token, "Bearer " + service_token)
        r = requests.get(demo.gateway + "/api/orders", headers={"Authorization": f"Bearer {service_token}"}, timeout=10)
        assert r.status_code == 200, r.text
        api_traceresponse = r.headers["traceresponse"].split("-")  # 00-<trace id>-<the gateway's server span>-<flags>
        forwarded = r.json()["headers"]["authorization"]
        assert forwarded.startswith("Bearer ey"), forwarded
        remember(forwarded.removeprefix("Bearer "))  # the JWT the gateway exchanged it for
        # A token in a query string: the access log's path never carries the query.
        query_secret = "query-secret-" + secrets.token_hex(8)
        remember(query_secret)
        assert requests.get(demo.gateway + f"/public/q?access_token={query_secret}", timeout=10).status_code == 200
        bad = "made-up-token-" + secrets.token_hex(8)
        remember(bad)
        assert requests.get(demo.gateway + "/api/orders", headers={"Authorization": f"Bearer {bad}"}, timeout=10).status_code == 401

        # password grant (client_secret_post), then a refresh.
        remember(web_secret, password)
        r = requests.post(demo.auth + "/token", data={"grant_type": "password", "username": "alice", "password": password,
                                                      "scope": "orders:read", "client_id": "demo-web", "client_secret": web_secret}, timeout=10)
        assert r.status_code == 200, r.text
        remember(r.json()["access_token"], r.json()["refresh_token"])
        r = requests.post(demo.auth + "/token", auth=("demo-web", web_secret),
                          data={"grant_type": "refresh_token", "refresh_token": r.json()["refresh_token"]}, timeout=10)
        assert r.status_code == 200, r.text
        remember(r.json()["access_token"], r.json()["refresh_token"])

        # Rotation: move the gateway's log away, SIGUSR1, and the next lines go to a new file at the configured path.
        wait_until(lambda: len(_lines(demo.gateway_log)) >= 3, timeout=10, interval=0.05, what="the gateway's first lines on disk")
        rotated = demo.gateway_log.with_name("gateway-access.log.1")
        os.rename(demo.gateway_log, rotated)
        demo.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: "access logs reopened" in demo.logs, timeout=10, interval=0.05, what="the reopen notice")

        # Authorization code + PKCE through the login page, with a wrong password first.
        verifier, challenge = pkce_pair()
        remember(verifier)
        browser = requests.Session()
        server = SimpleNamespace(port=demo.ports["auth"])
        params = {"response_type": "code", "client_id": "demo-spa", "redirect_uri": "http://127.0.0.1:8081/spa/callback",
                  "scope": "orders:read", "state": "s-" + secrets.token_hex(4), "code_challenge": challenge, "code_challenge_method": "S256"}
        authorize_url = demo.auth + "/authorize?" + urllib.parse.urlencode(params)
        wrong = "wrong-password-" + secrets.token_hex(8)
        remember(wrong)
        r = browser.get(authorize_url, allow_redirects=False)
        login = browser.get(urllib.parse.urljoin(r.url, r.headers["Location"]), allow_redirects=False)
        csrf = login.text.split('name="csrf_token" value="')[1].split('"')[0]
        request_id = login.text.split('name="request" value="')[1].split('"')[0]
        remember(csrf)
        r = browser.post(demo.auth + "/login", data={"username": "alice", "password": wrong, "csrf_token": csrf, "request": request_id}, allow_redirects=False)
        assert r.status_code == 200 and "wrong" in r.text, r.status_code
        result = drive_authorization(browser, server, authorize_url, "alice", password)
        code = result.query["code"]
        remember(code)
        remember(*[c.value for c in browser.cookies])
        r = requests.post(demo.auth + "/token", data={"grant_type": "authorization_code", "client_id": "demo-spa", "code": code,
                                                      "redirect_uri": "http://127.0.0.1:8081/spa/callback", "code_verifier": verifier}, timeout=10)
        assert r.status_code == 200, r.text
        remember(r.json()["access_token"], r.json().get("refresh_token"))
        r = requests.get(demo.gateway + "/public/after-rotation", timeout=10)
        assert r.status_code == 200
        # The gateway's own credentials at the authorization server travel on every exchange.
        gateway_secret = demo.secrets["gatehouse-gateway-secret"]
        remember(gateway_secret, _basic("gatehouse-gateway", gateway_secret))
    finally:
        code = demo.stop()
    assert code == 0, f"demo exited with {code}\n{demo.logs[-3000:]}"

    # Every line, including those of the last moment before SIGTERM, is on disk.
    old_gateway = _lines(rotated)
    new_gateway = _lines(demo.gateway_log)
    auth = _lines(demo.auth_log)
    assert old_gateway and new_gateway and auth, (len(old_gateway), len(new_gateway), len(auth))
    for line in old_gateway + new_gateway + auth:
        assert FIELDS <= set(line), f"missing {FIELDS - set(line)} in {line}"
    api = [l for l in old_gateway if l["route"] == "api" and l["status"] == 200]
    assert len(api) == 1 and api[0]["client_id"] == "demo-service" and api[0]["token"] == "valid" and api[0]["attempts"] == 1, api
    assert api[0]["upstream"] == f"127.0.0.1:{demo.ports['backend']}" and api[0]["service"] == "gatehouse-gateway", api
    # The line names the request's trace and the gateway's server span, as the response's traceresponse did.
    assert (api[0]["trace_id"], api[0]["span_id"]) == (api_traceresponse[1], api_traceresponse[2]), (api[0], api_traceresponse)
    assert all(len(l["trace_id"]) == 32 and len(l["span_id"]) == 16 for l in old_gateway + new_gateway), old_gateway
    assert [l["path"] for l in old_gateway if l["path"].startswith("/public/q")] == ["/public/q"]
    refused = [l for l in old_gateway if l["route"] == "api" and l["status"] == 401]
    assert len(refused) == 1 and refused[0]["token"] == "refused" and refused[0]["cause"] == "rejected_bearer", refused
    assert [l["path"] for l in new_gateway] == ["/public/after-rotation"], new_gateway
    routes = [l["route"] for l in auth]
    assert routes.count("token") >= 4 and "login" in routes and "authorize" in routes, routes
    assert all(l["service"] == "gatehouse-auth" for l in auth)

    # No secret anywhere: the access logs, and everything the demo wrote to stdout and stderr.
    assert len(used) >= 15, used
    searched = rotated.read_text() + demo.gateway_log.read_text() + demo.auth_log.read_text() + demo.logs
    assert len(searched) > 2000 and demo.logs, "the logs searched are (nearly) empty: the check would prove nothing"
    leaked = sorted({v for v in used if v in searched})
    assert not leaked, f"secrets in the logs: {[v[:10] + '…' for v in leaked]}"


def test_the_authorization_servers_lines_name_the_trace_and_the_span_it_exported(tmp_path, monkeypatch):
    """Each of the authorization server's access-log lines carries the request's trace id and the id of the server
    span it exported for the request (the span an OTLP receiver got, with the line's request id): through the
    router (client_credentials), through the in-memory fast path (a repeated token exchange), and for the gateway's
    own exchange call. An unsampled caller's line keeps the trace id and names no span (none was exported)."""
    receiver = OTLPReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base)
    demo = ObservedDemo(tmp_path)
    traces = {name: secrets.token_hex(16) for name in ("sampled", "unsampled", "exchange-1", "exchange-2", "gateway")}
    caller_span = secrets.token_hex(8)
    try:
        service = ("demo-service", demo.secrets["demo-service-secret"])
        gateway_client = ("gatehouse-gateway", demo.secrets["gatehouse-gateway-secret"])
        session = requests.Session()

        def post_token(name: str, flags: str, auth, data) -> dict:
            headers = {"X-Request-Id": f"as-{name}", "traceparent": f"00-{traces[name]}-{caller_span}-{flags}"}
            r = session.post(demo.auth + "/token", headers=headers, auth=auth, data=data, timeout=10)
            assert r.status_code == 200 and r.headers["X-Request-Id"] == f"as-{name}", (r.status_code, r.text)
            return r.json()

        credentials = {"grant_type": "client_credentials", "scope": "orders:read"}
        opaque = post_token("sampled", "01", service, credentials)["access_token"]
        post_token("unsampled", "00", service, credentials)
        exchange = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": opaque,
                    "subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "requested_token_type": "urn:ietf:params:oauth:token-type:jwt"}
        post_token("exchange-1", "01", gateway_client, exchange)
        post_token("exchange-2", "01", gateway_client, exchange)  # everything cached now: answered from memory
        # A fresh token through the gateway: its exchange call to the authorization server continues the trace.
        r = requests.post(demo.auth + "/token", auth=service, data=credentials, timeout=10)
        assert r.status_code == 200, r.text
        r = requests.get(demo.gateway + "/api/orders", headers={"Authorization": f"Bearer {r.json()['access_token']}",
                                                                 "traceparent": f"00-{traces['gateway']}-{caller_span}-01"}, timeout=10)
        assert r.status_code == 200, r.text

        def auth_spans(name: str) -> list:
            return [s for s in receiver.trace(traces[name]) if s.service == "gatehouse-auth" and s.kind == SPAN_KIND_SERVER]

        exported = ("sampled", "exchange-1", "exchange-2", "gateway")
        receiver.wait_for(lambda: all(auth_spans(name) for name in exported), timeout=15, what="the authorization server's spans")
    finally:
        code = demo.stop()
        receiver.close()
    assert code == 0, f"demo exited with {code}\n{demo.logs[-3000:]}"

    lines = _lines(demo.auth_log)
    assert lines and all(FIELDS <= set(line) for line in lines), lines
    by_request = {line["request_id"]: line for line in lines}
    for name in ("sampled", "exchange-1", "exchange-2"):
        line = by_request[f"as-{name}"]
        [span] = auth_spans(name)
        assert (line["trace_id"], line["span_id"]) == (traces[name], span.span_id), (name, line, span)
        assert span.parent_id == caller_span and span.attributes.get("gatehouse.request_id") == f"as-{name}", (span, span.attributes)
    assert auth_spans("exchange-2")[0].attributes.get("gatehouse.path_taken") == "memory", "the premise: the fast path answered"
    assert "gatehouse.path_taken" not in auth_spans("sampled")[0].attributes, "the premise: the router answered"
    # The unsampled caller: the trace is named, no span (none was exported for it).
    unsampled = by_request["as-unsampled"]
    assert (unsampled["trace_id"], unsampled["span_id"]) == (traces["unsampled"], ""), unsampled
    assert not receiver.trace(traces["unsampled"]), receiver.trace(traces["unsampled"])
    # The gateway's exchange call: the line's span is the server span whose parent is the gateway's client span.
    [via_gateway] = [line for line in lines if line["trace_id"] == traces["gateway"]]
    [span] = auth_spans("gateway")
    gateway_call = next(s for s in receiver.trace(traces["gateway"]) if s.span_id == span.parent_id)
    assert via_gateway["span_id"] == span.span_id and via_gateway["route"] == "token", (via_gateway, span)
    assert gateway_call.service == "gatehouse-gateway" and gateway_call.attributes.get("gatehouse.operation") == "token_exchange", gateway_call
