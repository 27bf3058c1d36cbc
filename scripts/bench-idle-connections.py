#!/usr/bin/env python3
"""RSS of a proxy holding N idle keep-alive connections (default 10,000).

Starts a loopback backend (nginx, like shared/bench/proxy-bench.sh) and the gateway
(.build/release/gatehouse gateway --config config/bench/gateway.yaml), opens N client connections,
sends one GET on each (so every connection has served a request and sits idle in keep-alive),
then reads VmRSS of the proxy from /proc. With --nginx it measures an nginx proxy the same way.

    swift build -c release --product gatehouse
    python3 scripts/bench-idle-connections.py [--connections 10000] [--nginx]
"""
import argparse, os, resource, selectors, shutil, signal, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(n, soft), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--nginx", action="store_true", help="measure an nginx proxy instead of the gateway")
    args = parser.parse_args()
    limit = raise_nofile(args.connections * 2 + 1000)
    if limit < args.connections + 100:
        raise SystemExit(f"open-file limit {limit} is too low for {args.connections} connections")
    if not shutil.which("nginx"):
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], check=True, stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="idle-bench-")
    procs = []
    try:
        backend = os.path.join(work, "backend.conf")
        with open(backend, "w") as f:
            f.write(f"""daemon off; master_process off; worker_processes 1; pid {work}/b.pid; error_log {work}/b.err;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work}; uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:18080; location / {{ return 200 "ok"; }} }} }}
""")
        procs.append(subprocess.Popen(["nginx", "-c", backend], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(18080)
        if args.nginx:
            conf = os.path.join(work, "proxy.conf")
            with open(conf, "w") as f:
                f.write(f"""daemon off; master_process off; worker_processes 1; worker_rlimit_nofile {limit}; pid {work}/p.pid; error_log {work}/p.err;
events {{ worker_connections {args.connections + 1000}; }}
http {{ access_log off; keepalive_timeout 300s; keepalive_requests 1000000; client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work}; uwsgi_temp_path {work}; scgi_temp_path {work};
  upstream be {{ server 127.0.0.1:18080; keepalive 128; }}
  server {{ listen 127.0.0.1:18084; location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
            proxy = subprocess.Popen(["nginx", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            name = "nginx"
        else:
            binary = os.environ.get("GATEHOUSE_BIN", os.path.join(ROOT, ".build/release/gatehouse"))
            proxy = subprocess.Popen([binary, "gateway", "--config", os.path.join(ROOT, "config/bench/gateway.yaml"), "--log-level", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            name = "gateway"
        procs.append(proxy)
        wait_port(18084)
        before = rss_kb(proxy.pid)
        sel = selectors.DefaultSelector()
        sockets = []
        request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for _ in range(args.connections):
            s = socket.create_connection(("127.0.0.1", 18084))
            s.sendall(request)
            sockets.append(s)
        answered = 0
        for s in sockets:
            s.settimeout(10)
            data = s.recv(4096)
            if data.startswith(b"HTTP/1.1 200"):
                answered += 1
        time.sleep(1.0)
        after = rss_kb(proxy.pid)
        alive = sum(1 for s in sockets if s.fileno() >= 0)
        print(f"== idle keep-alive connections ({name}) ==")
        print(f"connections   {args.connections} opened, {answered} answered 200, {alive} held open")
        print(f"RSS before    {before} kB")
        print(f"RSS holding   {after} kB   (+{after - before} kB, {((after - before) * 1024) // max(1, args.connections)} bytes per connection)")
        for s in sockets:
            s.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
