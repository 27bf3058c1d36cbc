"""The gateway on a dual-stack listener (`host: "::"`): an IPv4 client arrives as the IPv4-mapped address
`::ffff:127.0.0.1`. A `trusted_proxies` entry for 127.0.0.1 must match it, and the address the gateway appends to
`X-Forwarded-For` (and writes into `Forwarded`) must read `127.0.0.1`, as it does on an IPv4 listener.

The upstream is a raw socket that records the request head as it arrived, so that the assertion sees the header
bytes the gateway wrote, not a server library's reading of them.
"""

from __future__ import annotations

import socket

import pytest
import requests

from gatehouse_testlib import GatewayProcess, RawUpstream


def header_values(head: bytes, name: str) -> list[str]:
    """The values of header `name` in a raw request head, in order."""
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return [line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip().lower() == name.lower()]


def dual_stack_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not dual_stack_available(), reason="this machine cannot bind a dual-stack IPv6 socket")
def test_ipv4_client_on_dual_stack_listener_is_a_trusted_proxy(tmp_path):
    def answer(conn: socket.socket):
        upstream.read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    upstream = RawUpstream(answer)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        'listeners: [{host: "::", port: 0}]\n'
        "trusted_proxies: [127.0.0.1/32]\n"
        f"clusters: [{{name: backend, targets: ['http://127.0.0.1:{upstream.port}']}}]\n"
        "routes:\n"
        "  - {match: {path_prefix: /}, cluster: backend}\n"
    )
    gateway = GatewayProcess(config, log_level="warning").start()
    try:
        session = requests.Session()
        session.trust_env = False
        # An IPv4 client: the listener on :: sees it as ::ffff:127.0.0.1.
        response = session.get(gateway.url("/x"), headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10)
        assert response.status_code == 200, response.text
        assert len(upstream.requests) == 1, upstream.requests
        head = upstream.requests[0]
        # Trusted: the client's list is appended to, not replaced; the peer is written as IPv4.
        assert header_values(head, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"], head
        assert header_values(head, "Forwarded")[-1].startswith("for=127.0.0.1;"), head
        session.close()
    finally:
        gateway.stop()
        upstream.close()
