"""Message framing across the gateway: a chunked body is re-framed (never smuggled), a HEAD response never
gains a body, and an upgrade request answered without 101 closes the connection."""
import signal
import socket
import threading

from gatehouse_testlib import start_gateway_process


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

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, seen


def start_gateway(tmp_path, upstream_port):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "gateway.yaml"
    config.write_text(f"listeners: [{{port: {port}}}]\nclusters: [{{name: be, targets: ['http://127.0.0.1:{upstream_port}']}}]\n"
                      "routes: [{match: {path_prefix: /ok}, cluster: be}]\n")
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
    import time as _time

    def slow_ok(conn, request_line):
        _time.sleep(0.3)
        ok(conn, request_line)

    listener, seen = raw_upstream(slow_ok)
    gateway, port = start_gateway(tmp_path, listener.getsockname()[1])
    try:
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"POST /ok/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /ok/b HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n")
        data, closed = read_all(client, timeout=3)
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
