"""The gateway's TLS listener: TLS 1.2+ only, ALPN offering h2 and http/1.1, HTTP/2 downstream to an
HTTP/1.1 upstream. Uses certs/generate.sh (a development CA) and curl, which is built with HTTP/2 here."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from gatehouse_testlib import start_gateway_process, unread_bytes, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def certs():
    directory = tempfile.mkdtemp(prefix="gatehouse-certs-")
    script = os.path.join(ROOT, "certs", "generate.sh")
    # generate.sh writes into certs/dev next to itself; copy the script so the repository stays clean.
    shutil.copy(script, os.path.join(directory, "generate.sh"))
    subprocess.run(["bash", os.path.join(directory, "generate.sh")], check=True, capture_output=True)
    yield os.path.join(directory, "dev")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def upstream():
    import http.server
    import threading

    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = f"{self.command} {self.path} proto={self.headers.get('X-Forwarded-Proto')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """A `gatehouse gateway` process whose stdout is drained so the pipe never fills."""

    def __init__(self, config):
        self.proc = start_gateway_process(config)
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stderr_text(self):
        return "(stderr not captured)"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


def start_gateway(tmp_path, certs, upstream_port, http2=True, limits="{}"):
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""listeners:
  - port: {port}
    tls: {{certificate: {certs}/server.pem, private_key: {certs}/server.key, http2: {str(http2).lower()}}}
limits: {limits}
clusters: [{{name: be, targets: ['http://127.0.0.1:{upstream_port}']}}]
routes: [{{match: {{path_prefix: /}}, cluster: be}}]
"""
    )
    return Gateway(config), port


def curl(port, certs, *args):
    result = subprocess.run(
        ["curl", "-s", "--cacert", f"{certs}/ca.pem", "-w", "\n%{http_version} %{http_code}", *args, f"https://localhost:{port}/hello?x=1"],
        capture_output=True, text=True, timeout=20,
    )
    body, _, status = result.stdout.rpartition("\n")
    return body, status


def test_http2_and_http11_over_tls(tmp_path, certs, upstream):
    server, port = start_gateway(tmp_path, certs, upstream)
    try:
        body, status = curl(port, certs, "--http2")
        assert status == "2 200", (status, body, server.stderr_text())
        assert body == "GET /hello?x=1 proto=https"
        body, status = curl(port, certs, "--http1.1")
        assert status == "1.1 200"
        assert body == "GET /hello?x=1 proto=https"
        # TLS 1.1 is refused.
        _, status = curl(port, certs, "--tlsv1.1", "--tls-max", "1.1")
        assert status.endswith("000")
        # Without the CA the certificate is not trusted (it is a development CA, not a public one).
        result = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"https://localhost:{port}/"], capture_output=True, text=True)
        assert result.stdout == "000"
    finally:
        assert server.stop() == 0


def test_http2_can_be_turned_off(tmp_path, certs, upstream):
    server, port = start_gateway(tmp_path, certs, upstream, http2=False)
    try:
        body, status = curl(port, certs, "--http2")
        assert status == "1.1 200", status  # ALPN offers only http/1.1
    finally:
        assert server.stop() == 0


def test_head_over_http2_completes(tmp_path, certs, upstream):
    """The HTTP/2 stream of a HEAD ends with the response headers (no body), so the client does not wait for more."""
    server, port = start_gateway(tmp_path, certs, upstream)
    try:
        start = time.monotonic()
        result = subprocess.run(
            ["curl", "-s", "-I", "--http2", "--max-time", "5", "--cacert", f"{certs}/ca.pem",
             "-w", "\n%{http_version} %{http_code} %{size_download}", f"https://localhost:{port}/hello"],
            capture_output=True, text=True, timeout=20,
        )
        elapsed = time.monotonic() - start
        head, _, summary = result.stdout.rpartition("\n")
        assert result.returncode == 0, (result.returncode, result.stdout)  # 28 = timed out waiting for the stream's end
        assert summary == "2 200 0", (summary, head)
        assert elapsed < 3, elapsed
    finally:
        assert server.stop() == 0


def test_idle_tls_and_http2_connections_are_closed_and_drained(tmp_path, certs, upstream):
    """A TLS handshake that never starts, and an HTTP/2 connection that goes quiet, are closed after the idle
    timeout."""
    import ssl

    gateway, port = start_gateway(tmp_path, certs, upstream, limits="{idle_timeout: 1s, drain_timeout: 10s}")
    try:
        def closed_within(sock, seconds):
            sock.settimeout(seconds)
            try:
                return sock.recv(1) == b""
            except (socket.timeout, TimeoutError):
                return False
            except (ConnectionResetError, ssl.SSLError):
                return True

        raw = socket.create_connection(("127.0.0.1", port))  # no handshake at all
        start = time.monotonic()
        assert closed_within(raw, 3), "a connection that never handshakes must be closed"
        assert time.monotonic() - start < 2.5

        context = ssl.create_default_context(cafile=f"{certs}/ca.pem")
        context.set_alpn_protocols(["h2"])
        h2 = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
        assert h2.selected_alpn_protocol() == "h2"
        h2.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # preface + empty SETTINGS
        start = time.monotonic()
        while True:  # read the server's SETTINGS (and ack) until the connection is closed for idleness
            h2.settimeout(4)
            try:
                if h2.recv(4096) == b"":
                    break
            except (socket.timeout, TimeoutError):
                raise AssertionError("an idle HTTP/2 connection must be closed")
            except (ConnectionResetError, ssl.SSLError):
                break
        assert time.monotonic() - start < 3.5

    finally:
        if gateway.proc.poll() is None:
            gateway.stop()


def listener_refuses(port: int) -> bool:
    """True once nothing accepts connections on `port` any more (the gateway closes its listeners as it starts to
    drain, before it tells open connections to quiesce)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


# When our acknowledgement of the server's SETTINGS reaches the gateway, relative to SIGTERM:
# - "read_before_sigterm": the gateway has read it (an established, idle connection);
# - "sent_right_after_sigterm": we send it right after SIGTERM (the timing that found the race: the drain and our
#   ACK race each other);
# - "sent_after_drain_began": we hold it until the gateway has closed its listener, so the drain reaches the
#   connection before our ACK does (before the fix: GOAWAY, PING, then GOAWAY(PROTOCOL_ERROR) for our ACK).
ACK_TIMINGS = ["read_before_sigterm", "sent_right_after_sigterm", "sent_after_drain_began"]


@pytest.mark.parametrize("ack_timing", ACK_TIMINGS)
def test_sigterm_sends_goaway_to_idle_http2_connections(tmp_path, certs, upstream, ack_timing):
    """With the default (long) idle timeout, an open HTTP/2 connection gets GOAWAY on SIGTERM, is closed once the
    client has seen it, and does not hold the shutdown for the drain timeout. A client that acknowledges the server's
    SETTINGS while the drain starts is never told PROTOCOL_ERROR (RFC 9113 §6.5.3, §6.8)."""
    import ssl
    import struct

    gateway, port = start_gateway(tmp_path, certs, upstream, limits="{drain_timeout: 20s}")
    try:
        context = ssl.create_default_context(cafile=f"{certs}/ca.pem")
        context.set_alpn_protocols(["h2"])
        h2 = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
        assert h2.selected_alpn_protocol() == "h2"
        h2.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        # Read frames as a client would, acknowledging PINGs and SETTINGS, until the server closes the connection.
        settings_ack = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
        state = {"buffered": b"", "goaways": [], "settings_acked": False, "hold_ack": ack_timing != "read_before_sigterm", "ack_due": False}

        def pump() -> bool:
            """One read and the complete frames it brings; False once the server closed the connection."""
            try:
                data = h2.recv(4096)
            except (ConnectionResetError, ssl.SSLError) as error:
                state["end"] = repr(error)
                data = b""
            if not data:
                return False
            buffered = state["buffered"] + data
            while len(buffered) >= 9:
                length = int.from_bytes(buffered[:3], "big")
                if len(buffered) < 9 + length:
                    break
                kind, flags = buffered[3], buffered[4]
                payload = buffered[9 : 9 + length]
                buffered = buffered[9 + length :]
                state.setdefault("frames", []).append((kind, flags, length))
                if kind == 0x7:
                    state["goaways"].append(struct.unpack(">II", payload[:8]))
                elif kind == 0x6 and not flags & 0x1:
                    h2.sendall(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload)  # PING ACK
                elif kind == 0x4 and not flags & 0x1:
                    if state["hold_ack"]:
                        state["ack_due"] = True
                    else:
                        h2.sendall(settings_ack)
                elif kind == 0x4:
                    state["settings_acked"] = True
            state["buffered"] = buffered
            return True

        h2.settimeout(5)
        while not (state["settings_acked"] and (state["ack_due"] or not state["hold_ack"])):
            assert pump(), "the server closed the connection before acknowledging our SETTINGS"
        client_port = h2.getsockname()[1]
        if ack_timing == "read_before_sigterm":
            # The connection is established on the server's side once it has acknowledged our SETTINGS, and idle
            # once it has read everything we sent (our acknowledgement of its SETTINGS too).
            wait_until(lambda: unread_bytes(port, client_port) == 0, timeout=5, interval=0.005, what="the gateway to read our SETTINGS ACK")
        start = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        if ack_timing == "sent_after_drain_began":
            wait_until(lambda: listener_refuses(port), timeout=5, interval=0.002, what="the gateway to close its listener")
        if state["hold_ack"]:
            h2.sendall(settings_ack)
        while pump():
            pass
        state["closed_after"] = time.monotonic() - start
        h2.close()  # as a client does on the server's close_notify (the TLS handler waits for the peer's close)
        goaways = state["goaways"]
        assert goaways, "the server must announce the shutdown with GOAWAY"
        assert all(code == 0 for _, code in goaways), f"only NO_ERROR GOAWAYs: {goaways} after frames {state['frames']}"
        # RFC 9113 §6.8: GOAWAY with 2^31-1 and a PING, then the final GOAWAY with the last stream (none: 0).
        assert [last & 0x7FFFFFFF for last, _ in goaways] == [2**31 - 1, 0], f"graceful GOAWAY sequence: {goaways} in frames {state['frames']}, end: {state.get('end')}"
        assert gateway.proc.wait(8) == 0
        assert time.monotonic() - start < 4, f"an idle HTTP/2 connection must not hold the drain (closed after {state['closed_after']:.2f}s)"
    finally:
        if gateway.proc.poll() is None:
            gateway.stop()
