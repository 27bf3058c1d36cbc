"""Message framing across the gateway: a chunked body is re-framed (never smuggled), a HEAD response never
gains a body, and an upgrade request answered without 101 closes the connection."""
import contextlib
import signal
import socket
import threading

from gatehouse_testlib import accept_forever, start_gateway_process, unread_bytes, wait_until


def raw_upstream(handler):
    """A raw-socket upstream: `handler(conn, request_bytes)` answers; every request's bytes are recorded."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    seen = []

    def serve(conn):
        buffer = b""
        conn.settimeout(5)
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    head, rest = buffer.split(b"\r\n\r\n", 1)
                    lines = head.decode("latin-1").split("\r\n")
                    headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
                    body = b""
                    if headers.get("transfer-encoding") == "chunked":
                        while True:
                            while b"\r\n" not in rest:
                                rest += conn.recv(65536)
                            size_line, rest = rest.split(b"\r\n", 1)
                            size = int(size_line, 16)
                            while len(rest) < size + 2:
                                rest += conn.recv(65536)
                            body, rest = body + rest[:size], rest[size + 2:]
                            if size == 0:
                                break
                    elif "content-length" in headers:
                        length = int(headers["content-length"])
                        while len(rest) < length:
                            rest += conn.recv(65536)
                        body, rest = rest[:length], rest[length:]
                    buffer = rest
                    seen.append((lines[0], headers, body))
                    handler(conn, lines[0])
        except OSError:
            return

    accept_forever(listener, serve)
    return listener, seen


def start_gateway(tmp_path, upstream_port, extra="", routes=None):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "gateway.yaml"
    routes = routes or "routes: [{match: {path_prefix: /ok}, cluster: be}]\n"
    config.write_text(f"listeners: [{{port: {port}}}]\nclusters: [{{name: be, targets: ['http://127.0.0.1:{upstream_port}']}}]\n"
                      + routes + extra)
    return start_gateway_process(config), port


def read_all(sock, timeout=3):
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except socket.timeout:
        return data, False


def ok(conn, request_line):
    body = b"done"
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n" + body)


def test_chunked_body_on_a_get_is_reframed_not_smuggled(tmp_path):
    listener, seen = raw_upstream(ok)
    gateway, port = start_gateway(tmp_path, listener.getsockname()[1])
    try:
        smuggled = b"DELETE /ok/admin HTTP/1.1\r\nHost: x\r\n\r\n"
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /ok/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n")
        data, _ = read_all(client, timeout=2)
        assert data.startswith(b"HTTP/1.1 200")
        assert data.count(b"HTTP/1.1") == 1, data
        assert [line for line, _, _ in seen] == ["GET /ok/x HTTP/1.1"], seen  # no DELETE reached the upstream
        assert seen[0][1].get("transfer-encoding") == "chunked"
        assert seen[0][2] == smuggled  # it arrived as what it was: body bytes
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(15) == 0
        listener.close()


def test_head_response_gains_no_body(tmp_path):
    def chunked_head(conn, request_line):
        if request_line.startswith("HEAD"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: head\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget")

    listener, seen = raw_upstream(chunked_head)
    gateway, port = start_gateway(tmp_path, listener.getsockname()[1])
    try:
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"HEAD /ok/x HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_all(client, timeout=1)
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n"), head
        assert b"0\r\n\r\n" not in head.split(b"\r\n\r\n", 1)[1]
        client.sendall(b"GET /ok/y HTTP/1.1\r\nHost: x\r\n\r\n")
        data, _ = read_all(client, timeout=1)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"get"), data  # the connection did not desync
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(15) == 0
        listener.close()


def test_upgrade_answered_without_101_closes_the_connection(tmp_path):
    listener, seen = raw_upstream(ok)
    gateway, port = start_gateway(tmp_path, listener.getsockname()[1])
    try:
        for path in ["/ok/ws", "/nowhere"]:  # the upstream answers 200; the gateway answers 404
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".encode())
            data, closed = read_all(client, timeout=3)
            assert data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.1 404"), data
            assert closed, f"{path}: the connection must close (its parser stopped at the upgrade)"
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(15) == 0
        listener.close()


def test_a_malformed_pipelined_request_does_not_fail_the_one_in_flight(tmp_path):
    client_port = []
    premise = {}

    def ok_once_all_was_read(conn, request_line):
        # The first request stays unanswered (in flight) until the gateway has read every byte the client sent, the
        # malformed request included; whether that happened is asserted below.
        try:
            wait_until(lambda: unread_bytes(port, client_port[0]) == 0, timeout=5, interval=0.005, what="the gateway to read the pipelined bytes")
            premise["read while in flight"] = True
        except AssertionError:
            premise["read while in flight"] = False
        ok(conn, request_line)

    listener, seen = raw_upstream(ok_once_all_was_read)
    gateway, port = start_gateway(tmp_path, listener.getsockname()[1])
    try:
        client = socket.create_connection(("127.0.0.1", port))
        client_port.append(client.getsockname()[1])
        client.sendall(b"POST /ok/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /ok/b HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n")
        data, closed = read_all(client, timeout=7)
        assert premise.get("read while in flight") is True, f"the gateway had not read the malformed request while the first was in flight: {premise}"
        first, _, rest = data.partition(b"done")
        assert first.startswith(b"HTTP/1.1 200"), data  # the complete request in flight is answered first
        assert rest.startswith(b"HTTP/1.1 400"), data  # then the malformed one
        assert closed
        assert [line for line, _, _ in seen] == ["POST /ok/a HTTP/1.1"]
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(15) == 0
        listener.close()


def test_http10_client_gets_a_chunked_upstream_response_delimited_by_close(tmp_path):
    def chunked(conn, request_line):  # chunked, and the upstream keeps its connection open
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n")

    def dechunk(body):
        out = b""
        while True:
            size_line, body = body.split(b"\r\n", 1)
            size = int(size_line, 16)
            out, body = out + body[:size], body[size + 2:]
            if size == 0:
                return out, body

    listener, seen = raw_upstream(chunked)
    gateway, port = start_gateway(tmp_path, listener.getsockname()[1])
    try:
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /ok/old HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        data, closed = read_all(client, timeout=3)
        head, _, body = data.partition(b"\r\n\r\n")
        headers = [line.lower() for line in head.split(b"\r\n")[1:]]
        assert head.startswith(b"HTTP/1.0 200"), data
        assert not any(line.startswith(b"transfer-encoding:") for line in headers), data  # HTTP/1.0 has no chunking
        assert b"connection: close" in headers, data
        assert body == b"hello world", data
        assert closed, f"the body can only end with the connection: {data!r}"

        client = socket.create_connection(("127.0.0.1", port))
        for path in [b"/ok/a", b"/ok/b"]:  # an HTTP/1.1 client keeps chunking and its connection
            client.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            data, closed = read_all(client, timeout=1)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower(), data
            assert dechunk(body) == (b"hello world", b""), data
            assert not closed, data
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(15) == 0
        listener.close()


# --- Issue 10: the framing the upstream receives is the gateway's own; every path into the encoder is read raw. ---

@contextlib.contextmanager
def proxied(tmp_path, upstream, extra="", routes=None):
    """A gateway in front of `upstream` (a (listener, record) pair): yields (port, record); stops both after."""
    listener, record = upstream
    gateway, port = start_gateway(tmp_path, listener.getsockname()[1], extra=extra, routes=routes)
    try:
        yield port, record
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(15) == 0
        listener.close()


def request(port, raw, timeout=2):
    """Sends raw bytes on a new connection; (response bytes, whether the gateway closed)."""
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(raw)
    return read_all(client, timeout=timeout)


def raw_bytes_upstream(answer=b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"):
    """An upstream that records every byte it receives per connection and answers each `\\r\\n\\r\\n` with `answer`."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    received = []  # one bytearray per connection

    def serve(conn, buffer):
        conn.settimeout(10)
        answered = 0
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while buffer.count(b"\r\n\r\n") > answered:
                    answered += 1
                    conn.sendall(answer)
        except OSError:
            return

    def recorded(conn):
        buffer = bytearray()
        received.append(buffer)
        serve(conn, buffer)

    accept_forever(listener, recorded)
    return listener, received


def test_connection_naming_content_length_is_refused_and_nothing_reaches_the_upstream(tmp_path):
    """The smuggling report: `Connection: content-length` once dropped the length while the body still went out."""
    with proxied(tmp_path, raw_bytes_upstream()) as (port, received):
        smuggled = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
        for method, nominated in [(b"GET", b"content-length"), (b"POST", b"Content-Length"), (b"GET", b"keep-alive, Transfer-Encoding"), (b"GET", b"host")]:
            data, closed = request(port, method + b" /ok/carrier HTTP/1.1\r\nHost: x\r\nConnection: " + nominated + b"\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled, timeout=3)
            assert data.startswith(b"HTTP/1.1 400"), (nominated, data)
            assert b"request_id" in data and closed, data
        assert received == [] or all(len(b) == 0 for b in received), received  # the upstream saw no byte at all
        # The premise: the same request without the nomination does reach the upstream, framed by its length.
        data, _ = request(port, b"GET /ok/carrier HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled, timeout=2)
        assert data.startswith(b"HTTP/1.1 200") and data.count(b"HTTP/1.1 ") == 1, data
        raw = bytes(received[0])
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"\r\ncontent-length: %d" % len(smuggled) in head.lower(), raw
        assert body == smuggled, raw  # body bytes, framed: the upstream answered one request


def test_a_body_less_post_is_framed_with_a_zero_length_not_left_hanging(tmp_path):
    with proxied(tmp_path, raw_bytes_upstream()) as (port, received):
        data, _ = request(port, b"POST /ok/empty HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
        assert data.startswith(b"HTTP/1.1 200"), data  # answered, not a 504 after the per-try timeout
        raw = bytes(received[0]).lower()
        assert b"\r\ncontent-length: 0\r\n" in raw and b"transfer-encoding" not in raw, raw
        assert raw.endswith(b"\r\n\r\n"), raw


def test_connection_cannot_strip_the_forwarding_headers_the_gateway_sets(tmp_path):
    with proxied(tmp_path, raw_bytes_upstream()) as (port, received):
        data, _ = request(port, b"GET /ok/x HTTP/1.1\r\nHost: x\r\nConnection: X-Forwarded-For, Via, X-Request-Id, Forwarded\r\n\r\n", timeout=2)
        assert data.startswith(b"HTTP/1.1 200"), data
        raw = bytes(received[0]).lower()
        for header in [b"x-forwarded-for: 127.0.0.1", b"via: 1.1 gatehouse", b"x-request-id: ", b"forwarded: for=127.0.0.1"]:
            assert b"\r\n" + header in raw, (header, raw)
        assert b"\r\nconnection:" not in raw, raw


def test_untrusted_client_headers_and_underscore_lookalikes_never_reach_the_upstream(tmp_path):
    with proxied(tmp_path, raw_bytes_upstream()) as (port, received):
        spoofed = [b"X-Real-IP: 10.0.0.1", b"True-Client-IP: 10.0.0.2", b"X-Client-IP: 10.0.0.3", b"X-Original-URL: /admin",
                   b"X-Rewrite-URL: /admin", b"X-Forwarded-Port: 443", b"X-Forwarded-Prefix: /admin", b"X-HTTP-Method-Override: DELETE",
                   b"X_Forwarded_For: 10.9.9.9", b"X_Real_IP: 10.0.0.4", b"Proxy-Authorization: Basic Zm9vOmJhcg==", b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"]
        data, _ = request(port, b"GET /ok/x HTTP/1.1\r\nHost: x\r\n" + b"\r\n".join(spoofed) + b"\r\nX-Custom_Name: kept\r\nX-Keep: yes\r\n\r\n", timeout=2)
        assert data.startswith(b"HTTP/1.1 200"), data
        raw = bytes(received[0]).lower()
        assert b"\r\nx-keep: yes\r\n" in raw and b"\r\nx-custom_name: kept\r\n" in raw, raw  # the premise: headers do pass
        for header in spoofed:
            assert b"\r\n" + header.split(b":")[0].lower() + b":" not in raw, (header, raw)


def test_the_untrusted_header_list_is_configurable_and_trusted_proxies_keep_theirs(tmp_path):
    with proxied(tmp_path, raw_bytes_upstream(), extra="request_hygiene: {strip_from_untrusted: [X-Tenant], underscore_headers: drop}\n") as (port, received):
        data, _ = request(port, b"GET /ok/x HTTP/1.1\r\nHost: x\r\nX-Tenant: evil\r\nX-Real-IP: 10.0.0.1\r\nX_Anything: 1\r\n\r\n", timeout=2)
        assert data.startswith(b"HTTP/1.1 200"), data
        raw = bytes(received[0]).lower()
        assert b"\r\nx-tenant:" not in raw and b"\r\nx_anything:" not in raw, raw
        assert b"\r\nx-real-ip: 10.0.0.1\r\n" in raw, raw  # replaced the default list
    with proxied(tmp_path, raw_bytes_upstream(), extra="trusted_proxies: [127.0.0.1/32]\n") as (port, received):
        data, _ = request(port, b"GET /ok/x HTTP/1.1\r\nHost: x\r\nX-Real-IP: 203.0.113.9\r\nX_Forwarded_For: 10.9.9.9\r\n\r\n", timeout=2)
        assert data.startswith(b"HTTP/1.1 200"), data
        raw = bytes(received[0]).lower()
        assert b"\r\nx-real-ip: 203.0.113.9\r\n" in raw, raw  # a trusted proxy's value passes
        assert b"x_forwarded_for" not in raw, raw  # look-alikes never do


def test_request_trailers_lose_the_fields_a_trailer_must_not_carry(tmp_path):
    with proxied(tmp_path, raw_bytes_upstream()) as (port, received):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"POST /ok/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n"
                       b"X-Checksum: abc\r\nAuthorization: Bearer stolen\r\nX-Forwarded-For: 10.1.1.1\r\nHost: evil\r\nX-Real-IP: 1.2.3.4\r\n\r\n")
        data, _ = read_all(client, timeout=2)
        assert data.startswith(b"HTTP/1.1 200"), data
        raw = bytes(received[0])
        head, _, rest = raw.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower(), raw
        assert rest.startswith(b"4\r\nbody\r\n0\r\n"), raw
        trailers = rest[len(b"4\r\nbody\r\n0\r\n"):].lower()
        assert trailers == b"x-checksum: abc\r\n\r\n", raw


def test_h2c_upgrade_is_never_forwarded_and_websocket_is_per_route(tmp_path):
    routes = "routes:\n  - {match: {path_prefix: /ok}, cluster: be}\n  - {match: {path_prefix: /plain}, cluster: be, upgrades: []}\n"
    with proxied(tmp_path, raw_bytes_upstream(), routes=routes) as (port, received):
        data, closed = request(port, b"GET /ok/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", timeout=3)
        assert data.startswith(b"HTTP/1.1 200") and closed, data
        data, closed = request(port, b"GET /plain/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", timeout=3)
        assert data.startswith(b"HTTP/1.1 200") and closed, data
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /ok/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        read_all(client, timeout=3)
        # The upstream connection may be reused between the three: split what arrived into request heads.
        heads = [h for h in b"".join(bytes(r) for r in received).lower().split(b"\r\n\r\n") if h]
        assert len(heads) == 3, heads
        by_path = {h.split(b" ")[1]: h + b"\r\n" for h in heads}
        h2c, plain, websocket = by_path[b"/ok/x"], by_path[b"/plain/ws"], by_path[b"/ok/ws"]
        for raw in (h2c, plain):
            assert b"\r\nupgrade:" not in raw and b"\r\nhttp2-settings:" not in raw and b"\r\nconnection:" not in raw, raw
        assert b"\r\nupgrade: websocket\r\n" in websocket and b"\r\nconnection: upgrade\r\n" in websocket, websocket  # the premise


def test_a_websocket_tunnel_closes_after_its_idle_timeout(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    upstream_closed = threading.Event()

    def serve():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        conn.settimeout(30)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        upstream_closed.set()

    threading.Thread(target=serve, daemon=True).start()
    routes = "routes: [{match: {path_prefix: /ok}, cluster: be, timeouts: {tunnel_idle: 1s}}]\n"
    with proxied(tmp_path, (listener, None), routes=routes) as (port, _):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /ok/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        client.settimeout(10)
        head = client.recv(65536)
        assert head.startswith(b"HTTP/1.1 101"), head
        started = __import__("time").monotonic()
        assert client.recv(65536) == b"", "the idle tunnel must be closed by the gateway"
        waited = __import__("time").monotonic() - started
        assert 0.5 <= waited < 8, waited
        assert upstream_closed.wait(10), "the upstream side of the tunnel must close too"


def test_path_parameters_cannot_climb_out_of_a_public_prefix(tmp_path):
    routes = "routes:\n  - {name: public, match: {path_prefix: /public}, cluster: be}\n  - {name: api, match: {path_prefix: /api}, cluster: be, upgrades: []}\n"
    with proxied(tmp_path, raw_upstream(ok), routes=routes) as (port, seen):
        data, _ = request(port, b"GET /public/..;/api/orders HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2)
        assert data.startswith(b"HTTP/1.1 200"), data
        assert seen[-1][0] == "GET /api/orders HTTP/1.1", seen  # resolved as the backend would, before routing
        for target in [b"/public/%252e%252e/api", b"/public/%252fapi", b"/public/%C0%AE%C0%AE/api", b"/public/%E0%80%AE/api"]:
            data, closed = request(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2)
            assert data.startswith(b"HTTP/1.1 400") and closed, (target, data)
        assert len(seen) == 1, seen


def test_absolute_form_authority_wins_over_host(tmp_path):
    routes = "routes:\n  - {match: {host: api.example, path_prefix: /ok}, cluster: be}\n"
    with proxied(tmp_path, raw_bytes_upstream(), routes=routes) as (port, received):
        data, _ = request(port, b"GET http://api.example/ok/x HTTP/1.1\r\nHost: other.example\r\n\r\n", timeout=2)
        assert data.startswith(b"HTTP/1.1 200"), data  # routed on the target's authority
        raw = bytes(received[0]).lower()
        assert raw.startswith(b"get /ok/x http/1.1\r\n"), raw
        assert b"\r\nhost: api.example\r\n" in raw and b"other.example" not in raw, raw
        data, _ = request(port, b"GET http://other.example/ok/x HTTP/1.1\r\nHost: api.example\r\n\r\n", timeout=2)
        assert data.startswith(b"HTTP/1.1 404"), data
