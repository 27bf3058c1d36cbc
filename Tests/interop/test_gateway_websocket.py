"""WebSocket (`Connection: Upgrade`) tunnelling through the gateway, with a stdlib-only RFC 6455 echo upstream:
the handshake passes through with its upgrade headers, then frames flow both ways unchanged."""
import base64
import hashlib
import os
import signal
import socket
import struct

from gatehouse_testlib import accept_forever, start_gateway_process

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def recv_until(sock, marker):
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_frame(sock):
    header = b""
    while len(header) < 2:
        header += sock.recv(2 - len(header))
    opcode = header[0] & 0x0F
    masked = header[1] & 0x80
    length = header[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", sock.recv(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", sock.recv(8))[0]
    mask = sock.recv(4) if masked else None
    payload = b""
    while len(payload) < length:
        payload += sock.recv(length - len(payload))
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def frame(payload, opcode=1, mask=True):
    head = bytes([0x80 | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([(0x80 if mask else 0) | length])
    elif length < 65536:
        head += bytes([(0x80 if mask else 0) | 126]) + struct.pack("!H", length)
    else:
        head += bytes([(0x80 if mask else 0) | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def echo_upstream():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    seen = {}

    def serve(conn):
        request = recv_until(conn, b"\r\n\r\n").decode()
        lines = request.split("\r\n")
        headers = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip() for line in lines[1:] if ":" in line}
        seen.update(headers)
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        while True:
            opcode, payload = read_frame(conn)
            if opcode == 8:
                conn.sendall(frame(b"", opcode=8, mask=False))
                conn.close()
                return
            conn.sendall(frame(payload, opcode=opcode, mask=False))

    accept_forever(listener, serve)
    return listener, seen


def test_websocket_echo_through_the_gateway(tmp_path):
    listener, seen = echo_upstream()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""listeners: [{{port: {port}}}]
limits: {{drain_timeout: 3s}}
clusters: [{{name: ws, targets: ['http://127.0.0.1:{listener.getsockname()[1]}']}}]
routes: [{{match: {{path_prefix: /ws}}, cluster: ws}}]
""")
    gateway = start_gateway_process(config)
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        # The handshake and the first frame in one write: bytes after the upgrade request must not be lost.
        client.sendall(
            (f"GET /ws/chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode() + frame(b"first")
        )
        response = recv_until(client, b"\r\n\r\n")
        head = response.split(b"\r\n\r\n")[0].decode()
        assert head.startswith("HTTP/1.1 101"), head
        expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert f"Sec-WebSocket-Accept: {expected}".lower() in head.lower()
        assert "upgrade: websocket" in head.lower()
        assert seen.get("upgrade") == "websocket" and "upgrade" in seen.get("connection", "").lower()
        assert seen.get("x-request-id")  # the gateway's headers reach the upstream on the handshake
        client.settimeout(5)
        rest = response.split(b"\r\n\r\n", 1)[1]
        if rest:
            client = _Prefixed(client, rest)
        assert read_frame(client) == (1, b"first")
        for message in [b"hello", b"x" * 70000, "ünïcode".encode()]:
            client.sendall(frame(message))
            assert read_frame(client) == (1, message)
        client.sendall(frame(b"", opcode=8))
        assert read_frame(client)[0] == 8
        # Plain requests still work on new connections.
        other = socket.create_connection(("127.0.0.1", port), timeout=5)
        other.sendall(b"GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert recv_until(other, b"\r\n\r\n").startswith(b"HTTP/1.1 404")
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(15) == 0
        listener.close()


class _Prefixed:
    """A socket with some bytes already read."""

    def __init__(self, sock, prefix):
        self.sock = sock
        self.prefix = prefix

    def recv(self, n):
        if self.prefix:
            data, self.prefix = self.prefix[:n], self.prefix[n:]
            return data
        return self.sock.recv(n)

    def sendall(self, data):
        self.sock.sendall(data)
