"""HTTP/2 to HTTP/1.1 conversion at the gateway, read as raw bytes at the upstream (issue 10): a body is always
framed whatever the method and whether content-length was sent, :authority and host must agree, cookie fields are
joined, content-length must be one number, field values carry no surrounding whitespace. Clients are the `h2`
library (hyper's HTTP/2 state machine), so frames are exactly what the test sends."""
import signal
import socket
import ssl
import threading

import h2.config
import h2.connection
import h2.events
import pytest

from gatehouse_testlib import start_gateway_process
from test_gateway_framing import raw_bytes_upstream
from test_gateway_tls import certs  # noqa: F401  (the module's development CA fixture)


@pytest.fixture
def gateway(tmp_path, certs):  # noqa: F811
    listener, received = raw_bytes_upstream()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"listeners: [{{port: {port}, tls: {{certificate: {certs}/server.pem, private_key: {certs}/server.key}}}}]\n"
        f"clusters: [{{name: be, targets: ['http://127.0.0.1:{listener.getsockname()[1]}']}}]\n"
        "routes: [{match: {path_prefix: /}, cluster: be}]\n"
    )
    process = start_gateway_process(config)
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    yield port, received, certs
    while OPEN_CLIENTS:  # an open HTTP/2 connection would hold the drain until its timeout
        OPEN_CLIENTS.pop().sock.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    listener.close()


OPEN_CLIENTS = []


class H2Client:
    def __init__(self, port, certs):
        OPEN_CLIENTS.append(self)
        context = ssl.create_default_context(cafile=f"{certs}/ca.pem")
        context.set_alpn_protocols(["h2"])
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        self.sock.sendall(self.conn.data_to_send())

    def request(self, headers, body_chunks=(), end_with_headers=None):
        stream = self.conn.get_next_available_stream_id()
        end = end_with_headers if end_with_headers is not None else not body_chunks
        self.conn.send_headers(stream, headers, end_stream=end)
        for index, chunk in enumerate(body_chunks):
            self.conn.send_data(stream, chunk, end_stream=index == len(body_chunks) - 1)
        self.flush()
        return stream

    def response(self, stream, timeout=5):
        """(status, body) of a stream, or ('reset', error code)."""
        self.sock.settimeout(timeout)
        status, body = None, b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return status, body
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    status = dict(event.headers)[b":status"].decode()
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    body += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    self.flush()
                    return status, body
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                    return "reset", event.error_code
            self.flush()


def base(method, path, authority="localhost"):
    return [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)]


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS"])
def test_a_body_on_a_method_without_content_length_is_chunk_framed_not_smuggled(gateway, method):
    port, received, certs = gateway
    client = H2Client(port, certs)
    smuggled = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    stream = client.request(base(method, "/carrier"), body_chunks=[smuggled])
    status, _ = client.response(stream)
    assert status == "200", status
    second = client.request(base("GET", "/next"))
    status, body = client.response(second)
    assert status == "200", status
    raw = b"".join(bytes(r) for r in received)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(method.encode() + b" /carrier HTTP/1.1\r\n"), raw
    assert b"\r\ntransfer-encoding: chunked" in head.lower(), raw
    framed = b"%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n"
    assert rest.startswith(framed), raw  # the body arrived as body bytes, chunk-framed and ended
    after = rest[len(framed):]
    assert after.startswith(b"GET /next HTTP/1.1\r\n") and after.count(b" HTTP/1.1\r\n") == 1, raw  # then the next stream only


def test_a_request_without_body_or_length_gets_no_framing(gateway):
    port, received, certs = gateway
    client = H2Client(port, certs)
    stream = client.request(base("GET", "/plain"))
    assert client.response(stream)[0] == "200"
    stream = client.request(base("POST", "/empty"))
    assert client.response(stream)[0] == "200"
    get, post = bytes(received[0]).split(b"\r\n\r\n")[:2]
    assert b"content-length" not in get.lower() and b"transfer-encoding" not in get.lower(), get
    assert b"\r\ncontent-length: 0" in post.lower(), post


def test_authority_and_host_must_agree(gateway):
    port, received, certs = gateway
    client = H2Client(port, certs)
    stream = client.request(base("GET", "/mismatch", authority="localhost") + [("host", "admin.internal")])
    status, body = client.response(stream)
    assert status == "400" and b"request_id" in body, (status, body)
    client = H2Client(port, certs)
    stream = client.request(base("GET", "/agree", authority="localhost") + [("host", "LOCALHOST")])
    assert client.response(stream)[0] == "200"
    raw = b"".join(bytes(r) for r in received).lower()
    assert b"/mismatch" not in raw and raw.count(b"\r\nhost: ") == 1, raw


def test_cookie_fields_are_joined(gateway):
    port, received, certs = gateway
    client = H2Client(port, certs)
    stream = client.request(base("GET", "/cookies") + [("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")])
    assert client.response(stream)[0] == "200"
    raw = bytes(received[0]).lower()
    assert raw.count(b"\r\ncookie:") == 1 and b"\r\ncookie: a=1; b=2; c=3\r\n" in raw, raw


@pytest.mark.parametrize("headers", [
    [("content-length", "5, 5")],
    [("content-length", "5"), ("content-length", "6")],
    [("x-padded", " value")],
    [("x-padded", "value\t")],
])
def test_malformed_fields_are_refused_before_the_upstream(gateway, headers):
    port, received, certs = gateway
    client = H2Client(port, certs)
    stream = client.request(base("POST", "/bad") + headers, body_chunks=[b"hello"])
    status, _ = client.response(stream)
    assert status in ("400", "reset"), status  # refused by the gateway, or by NIO's HTTP/2 layer as malformed
    assert all(len(r) == 0 for r in received), received
