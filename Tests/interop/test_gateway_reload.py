"""SIGHUP reload under load: configuration swaps while requests flow, and none of them fails; a broken file is
refused while the running configuration keeps serving."""
import http.client
import http.server
import json
import signal
import socket
import threading

from gatehouse_testlib import start_gateway_process, wait_until


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_reload_under_load_drops_nothing(tmp_path):
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "gateway.yaml"

    def write(routes):
        config.write_text(
            f"listeners: [{{port: {port}}}]\n"
            f"clusters: [{{name: be, targets: ['http://127.0.0.1:{upstream.server_address[1]}']}}]\n"
            f"routes: [{routes}]\n"
        )

    write("{match: {path_prefix: /a}, cluster: be}")
    gateway = start_gateway_process(config)
    events = []
    try:
        threading.Thread(target=lambda: [events.append(json.loads(l)["event"]) for l in gateway.stdout if l.startswith("{")], daemon=True).start()

        failures, successes = [], [0]
        stop = threading.Event()

        def client():
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            while not stop.is_set():
                try:
                    connection.request("GET", "/a/x")
                    response = connection.getresponse()
                    body = response.read()
                    if response.status != 200 or body != b"/a/x":
                        failures.append((response.status, body[:100]))
                    else:
                        successes[0] += 1
                except Exception as error:  # a dropped connection is a failure too
                    failures.append(repr(error))
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for round in range(10):
            # Requests flow on the running configuration before each swap.
            served = successes[0]
            wait_until(lambda: successes[0] >= served + 12, 10, what="requests served between reloads")
            # Alternate between two valid configurations that both route /a; the second adds /b.
            write("{match: {path_prefix: /a}, cluster: be}" + (", {match: {path_prefix: /b}, cluster: be}" if round % 2 == 0 else ""))
            gateway.send_signal(signal.SIGHUP)
            # Signals are not queued: two SIGHUPs before the first reload ran would make one reload. Each one is
            # waited for, so that the count below counts reloads, not the machine's speed.
            wait_until(lambda: events.count("reloaded") == round + 1, 10, what=f"reload {round + 1}")
        # A broken file is refused; /a keeps working.
        config.write_text("routes: [{match: {path_prefx: /a}, cluster: be}]\n")
        gateway.send_signal(signal.SIGHUP)
        wait_until(lambda: events.count("reload_failed") == 1, 10, what="the broken file's refusal")
        served = successes[0]
        wait_until(lambda: successes[0] > served, 10, what="requests served after the refused reload")
        stop.set()
        for thread in threads:
            thread.join(10)
        assert failures == [], failures[:5]
        assert successes[0] > 100, successes[0]
        assert events.count("reloaded") == 10, events
        assert events.count("reload_failed") == 1, events
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/a/still")
        assert connection.getresponse().status == 200
    finally:
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(15) == 0
        upstream.shutdown()
