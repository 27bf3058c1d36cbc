"""The deployment files' probes and wiring against real processes (the offline checks are in
test_deploy_manifests.py): the real `gatehouse` binary is started with each Kubernetes ConfigMap's and each compose
configuration, rewritten only where a container address cannot work here (loopback ports, the PostgreSQL and Redis
this module starts, temporary secret files, a loopback issuer), and every probe path the manifests name is requested
on the admin port; the HPA's metric is in the gateway's /metrics; the real HAProxy runs haproxy.cfg in front of real
authorization servers and a gateway; `gatehouse demo-backend` runs with the compose service's options and verifies a
gateway-minted JWT against JWKS fetched over TLS through HAProxy, trusting the dev CA (--ca-file), and cannot without.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import pytest
import requests
import yaml

import compose_checks as cc
import deploy_checks as dc
from deploy_checks import find_container as container
from deploy_checks import find_workload as workload
from deploy_fixtures import compose, kubernetes  # noqa: F401 (fixtures)
from gatehouse_testlib import GatehouseServer, GatewayProcess, free_port, gatehouse_binary, wait_until

ROOT = dc.REPO_ROOT


# --------------------------------------------------------------------------------------------------------------
# the probes against the real processes
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server on loopback (scripts/postgres-temp.sh), stopped and removed at the end."""
    base = Path(tempfile.mkdtemp(prefix="gatehouse-deploy-pg-"))
    directory = base / "pg"
    script = ROOT / "scripts" / "postgres-temp.sh"
    result = subprocess.run(["bash", str(script), "start", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"postgres-temp.sh start failed: {result.stderr}"
    values = dict(item.split("=", 1) for item in result.stdout.split())
    try:
        yield {"url": values["PGTEMP_URL"], "password": Path(values["PGTEMP_PASSWORD_FILE"]).read_text().strip()}
    finally:
        subprocess.run(["bash", str(script), "stop", str(directory)], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def redis():
    """A real redis-server with a password, on a free loopback port, stopped at the end."""
    directory = Path(tempfile.mkdtemp(prefix="gatehouse-deploy-redis-"))
    password = os.urandom(12).hex()
    port = free_port()
    (directory / "redis.conf").write_text(f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {directory}\nrequirepass "{password}"\n')
    proc = subprocess.Popen(["redis-server", str(directory / "redis.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        result = subprocess.run(["redis-cli", "-p", str(port), "ping"], env=dict(os.environ, REDISCLI_AUTH=password),
                                capture_output=True, text=True, timeout=5)
        return result.stdout.strip() == "PONG"

    try:
        wait_until(answers, timeout=20, interval=0.05, what="redis-server to answer PING")
        yield {"url": f"redis://127.0.0.1:{port}", "password": password}
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def _k8s_config(kubernetes, deployment, container_name):
    m = workload(kubernetes, "Deployment", deployment)
    c = container(m, container_name)
    source, config = dc.gatehouse_container_config(kubernetes, m, c)
    probes = [(name, c[name]["httpGet"]["path"]) for name in ("readinessProbe", "livenessProbe", "startupProbe") if name in c]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    return config, probes, ports


def _compose_config(compose, service):
    s = compose["services"][service]
    config = cc.compose_server_config(s, ROOT)
    port, path = cc._healthcheck_url(s)
    return config, [("healthcheck", path)], {"admin": port, "http": config.traffic_port}


def _write_secrets(config: dc.ServerConfig, directory: Path, values: dict[str, str]) -> dict[str, str]:
    """Temporary files for every {file: PATH} of the configuration; returns PATH -> temporary path."""
    mapping = {}
    for path in config.secret_files:
        name = Path(path).name
        local = directory / name
        local.write_text(values.get(name, os.urandom(16).hex()) + "\n")
        mapping[path] = str(local)
    return mapping


def _replace_files(node, mapping):
    if isinstance(node, dict):
        if set(node) == {"file"}:
            return {"file": mapping[node["file"]]}
        return {k: (mapping[v] if k == "ca_file" else _replace_files(v, mapping)) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_files(v, mapping) for v in node]
    return node


PASSWORD_NAMES = ("postgres-password", "postgres_password")
REDIS_NAMES = ("redis-password", "redis_password")
GATEWAY_SECRET_NAMES = ("gateway-client-secret", "gateway_client_secret")


def _start_auth(config: dc.ServerConfig, directory: Path, postgres, issuer: Optional[str] = None,
                gateway_secret: Optional[str] = None) -> tuple[GatehouseServer, int, str]:
    """`gatehouse auth` with the configuration as deployed, except: loopback ports, the test's PostgreSQL, temporary
    secret files and a loopback issuer (so that a gateway here can discover it)."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = copy.deepcopy(config.raw)
    gateway_secret = gateway_secret or os.urandom(16).hex()
    values = {n: postgres["password"] for n in PASSWORD_NAMES} | {n: gateway_secret for n in GATEWAY_SECRET_NAMES}
    raw = _replace_files(raw, _write_secrets(config, directory, values))
    port, admin = free_port(), free_port()
    raw["issuer"] = issuer or f"http://127.0.0.1:{port}"
    raw["listen"] = {**raw["listen"], "host": "127.0.0.1", "port": port}
    raw["admin"] = {"host": "127.0.0.1", "port": admin}
    raw["storage"]["postgres"]["url"] = postgres["url"]
    (directory / "auth.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    data = directory / "data"
    data.mkdir()
    server = GatehouseServer(gatehouse_binary(), directory / "auth.yaml", data, port=port).start()
    return server, admin, gateway_secret


@pytest.mark.parametrize("origin", ["kubernetes", "compose"])
def test_auth_probes_answer(origin, kubernetes, compose, postgres, tmp_path):
    if origin == "kubernetes":
        config, probes, ports = _k8s_config(kubernetes, "gatehouse-auth", "auth")
    else:
        config, probes, ports = _compose_config(compose, "auth-1")
    # The deployed ports are the configuration's (the static checks say so too); here they are moved to free ones.
    assert (ports["http"], ports["admin"]) == (config.traffic_port, config.admin_port)
    assert config.raw["storage"].get("postgres"), "the deployed authorization server runs on PostgreSQL"
    server, admin, _ = _start_auth(config, tmp_path / "auth", postgres)
    try:
        for name, path in probes:
            r = requests.get(f"http://127.0.0.1:{admin}{path}", timeout=5)
            assert r.status_code == 200, f"{origin} {name} GET {path} -> {r.status_code} {r.text[:200]}"
        assert "gatehouse_auth" in requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).text
    finally:
        server.stop()


@pytest.mark.parametrize("origin", ["kubernetes", "compose"])
def test_gateway_probes_answer(origin, kubernetes, compose, postgres, redis, tmp_path):
    if origin == "kubernetes":
        config, probes, ports = _k8s_config(kubernetes, "gatehouse-gateway", "gateway")
        auth_config, _, _ = _k8s_config(kubernetes, "gatehouse-auth", "auth")
    else:
        config, probes, ports = _compose_config(compose, "gateway-1")
        auth_config = cc.compose_server_config(compose["services"]["auth-1"], ROOT)
    assert (ports["http"], ports["admin"]) == (config.traffic_port, config.admin_port)
    assert config.raw.get("redis"), "the deployed gateway shares its limits through Redis"
    assert any(limit.get("scope") == "cluster" for route in config.raw["routes"] for limit in route.get("rate_limits", []))
    auth, _, gateway_secret = _start_auth(auth_config, tmp_path / "auth", postgres)
    try:
        admin = free_port()
        gateway_yaml = _write_gateway_config(config, tmp_path / "gateway", redis, gateway_secret, auth.issuer, free_port(), admin)
        gateway = GatewayProcess(gateway_yaml, admin_port=admin).start()
        try:
            # Ready once the authorization server is discovered: poll, as the probes do.
            gateway.wait_ready(timeout=20)
            for name, path in probes:
                r = requests.get(gateway.admin_url(path), timeout=5)
                assert r.status_code == 200, f"{origin} {name} GET {path} -> {r.status_code} {r.text[:200]}"
            metrics = requests.get(gateway.admin_url("/metrics"), timeout=5).text
            assert re.search(r"^gatehouse_gateway_in_flight_requests \d+", metrics, re.M), "the HPA's metric is not exported"
        finally:
            gateway.stop()
    finally:
        auth.stop()


def _write_gateway_config(config: dc.ServerConfig, directory: Path, redis, gateway_secret: str, issuer: str, port: int, admin: int,
                          ca: Optional[Path] = None) -> Path:
    """The gateway's configuration as deployed, except: loopback ports, the test's Redis, temporary secret files, the
    test's issuer, and the CA file (dropped for an http issuer)."""
    directory.mkdir(parents=True, exist_ok=True)
    values = {n: redis["password"] for n in REDIS_NAMES} | {n: gateway_secret for n in GATEWAY_SECRET_NAMES}
    mapping = _write_secrets(config, directory, values)
    raw = copy.deepcopy(config.raw)
    ca_file = raw.get("authorization_server", {}).get("ca_file")
    if ca_file and ca is not None:
        Path(mapping[ca_file]).write_text(ca.read_text())
    raw = _replace_files(raw, mapping)
    if ca is None:
        raw["authorization_server"].pop("ca_file", None)  # only for an https issuer
    raw["listeners"] = [{"host": "127.0.0.1", "port": port}]
    raw["admin"] = {"host": "127.0.0.1", "port": admin}
    raw["redis"]["url"] = redis["url"]
    raw["authorization_server"]["issuer"] = issuer
    (directory / "gateway.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return directory / "gateway.yaml"


def _demo_backend(options: dict[str, str], tmp_path: Path, name: str) -> tuple[subprocess.Popen, int, Path]:
    """`gatehouse demo-backend` with `options` (those of a deployment, rewritten by the caller) on a free loopback port,
    once its /healthz answers. Returns the process, its port and its log file."""
    port = free_port()
    options = dict(options, host="127.0.0.1", port=str(port))
    args = [str(gatehouse_binary()), "demo-backend"]
    for key, value in options.items():
        args += [f"--{key}", value]
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def healthy() -> bool:
        assert proc.poll() is None, f"{name} exited: {log.read_text()}"
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(healthy, timeout=20, interval=0.05, what=f"{name}'s /healthz")
    except BaseException:
        proc.terminate()
        proc.wait(10)
        raise
    return proc, port, log


@pytest.mark.parametrize("origin", ["kubernetes", "compose"])
def test_backend_probes_answer(origin, kubernetes, compose, tmp_path):
    """The demo backend as deployed (its arguments, on a free port): every probe path the manifests name answers 200
    on the port it listens on, without a token; anything else outside /public/ needs one."""
    if origin == "kubernetes":
        c = container(workload(kubernetes, "Deployment", "demo-backend"), "backend")
        options = dc.demo_backend_options(c["args"])
        probes = [(name, c[name]["httpGet"]["path"]) for name in ("readinessProbe", "livenessProbe", "startupProbe") if name in c]
    else:
        service = compose["services"]["backend"]
        options = dc.demo_backend_options(service["command"])
        probes = [("healthcheck", cc._healthcheck_url(service)[1])]
    assert options is not None and "?unknown" not in options and probes
    options.pop("ca-file", None)  # no JWKS is fetched for a probe; the CA is exercised by the test below
    proc, port, log = _demo_backend(options, tmp_path, "backend")
    try:
        for name, path in probes:
            r = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            assert r.status_code == 200, f"{origin} {name} GET {path} -> {r.status_code} {r.text[:200]}"
        r = requests.get(f"http://127.0.0.1:{port}/api/orders", timeout=5)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), (r.status_code, r.text[:200])
    finally:
        proc.terminate()
        proc.wait(10)


def test_demo_backend_refuses_an_unreadable_ca_file(tmp_path):
    """--ca-file is checked at start: a missing file or one without a PEM certificate stops the command with its
    reason (exit status 64, the usage error), before anything listens."""
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    for path, reason in ((tmp_path / "missing.pem", "No such file or directory"), (not_pem, "no PEM certificate in the file")):
        result = subprocess.run(
            [str(gatehouse_binary()), "demo-backend", "--port", str(free_port()), "--issuer", "https://localhost:9443",
             "--audience", "https://gateway.gatehouse.test:8443", "--ca-file", str(path)],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 64, (result.returncode, result.stdout, result.stderr)
        assert f"--ca-file {path}: {reason}" in result.stderr, result.stderr
        assert "listening" not in result.stdout
    result = subprocess.run(
        [str(gatehouse_binary()), "demo-backend", "--port", str(free_port()), "--issuer", "http://127.0.0.1:9000",
         "--audience", "a", "--ca-file", str(not_pem)], capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 64 and "--ca-file is only used with an https --issuer" in result.stderr, result.stderr


def _haproxy_on_loopback(tmp_path: Path, servers: dict[str, tuple[int, int]], ports: Optional[dict[int, int]] = None) -> tuple[subprocess.Popen, dict[int, int], Path]:
    """The real haproxy.cfg run by the real HAProxy, changed only where a container address cannot work here: each
    `bind :PORT` on a free loopback port, each server NAME at 127.0.0.1 with the (traffic, admin) ports of `servers`
    (servers not given point at a closed port), the TLS bundle from a fresh certs/generate.sh. Returns the process, the
    map deployed port -> loopback port (`ports` may fix some in advance), and the CA file (certificates made before
    unless `tmp_path/certs` holds them already)."""
    env = dict(os.environ, CERTS_DIR=str(tmp_path / "certs"))
    subprocess.run(["bash", str(ROOT / "certs" / "generate.sh")], env=env, check=True, capture_output=True, timeout=60)
    bundle = tmp_path / "haproxy_tls"
    bundle.write_text((tmp_path / "certs" / "server-chain.pem").read_text() + (tmp_path / "certs" / "server.key").read_text())
    text = cc.HAPROXY_CONFIG.read_text().replace("/run/secrets/haproxy_tls", str(bundle))
    ports = dict(ports or {})

    def bind(match: re.Match) -> str:
        ports[int(match.group(1))] = ports.get(int(match.group(1))) or free_port()
        return f"bind 127.0.0.1:{ports[int(match.group(1))]}"

    text = re.sub(r"bind :(\d+)", bind, text)
    closed = free_port()

    def server(match: re.Match) -> str:
        traffic, admin = servers.get(match.group(1), (closed, closed))
        return f"server {match.group(1)} 127.0.0.1:{traffic} check port {admin}"

    text = re.sub(r"server (\S+) \S+:\d+ check port \d+", server, text)
    (tmp_path / "haproxy.cfg").write_text(text)
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, ports, tmp_path / "certs" / "ca.pem"


def _monitor_status(port: int) -> Optional[int]:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
    except requests.RequestException:
        return None


def test_haproxy_sends_traffic_only_to_ready_authorization_servers(compose, postgres, tmp_path):
    """HAProxy with the compose haproxy.cfg in front of two real authorization servers (the compose auth.yaml on a
    real PostgreSQL): its monitor says healthy once one is ready, https at the issuer's name reaches them, a stopped
    replica is taken out by the /readyz check while the other keeps answering, and with none left the monitor fails."""
    config = cc.compose_server_config(compose["services"]["auth-1"], ROOT)
    first, admin1, _ = _start_auth(config, tmp_path / "auth-1", postgres)
    try:
        second, admin2, _ = _start_auth(config, tmp_path / "auth-2", postgres)
    except BaseException:
        first.stop(check=False)
        raise
    try:
        proc, ports, ca = _haproxy_on_loopback(tmp_path / "lb", {"auth-1": (first.port, admin1), "auth-2": (second.port, admin2)})
    except BaseException:
        first.stop(check=False)
        second.stop(check=False)
        raise
    issuer_port = int(config.raw["issuer"].rsplit(":", 1)[1])
    host = config.raw["issuer"].split("://", 1)[1].split(":", 1)[0]

    def metadata() -> tuple[int, str]:
        result = subprocess.run(
            ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert", str(ca), "--resolve", f"{host}:{ports[issuer_port]}:127.0.0.1",
             f"https://{host}:{ports[issuer_port]}/.well-known/oauth-authorization-server"],
            capture_output=True, text=True, timeout=10,
        )
        body, _, status = result.stdout.rpartition("\n")
        return int(status or 0), body

    try:
        def healthy() -> bool:
            assert proc.poll() is None, f"haproxy exited: {proc.stderr.read()}"
            return _monitor_status(ports[8404]) == 200

        wait_until(healthy, timeout=20, interval=0.1, what="HAProxy's monitor to report healthy")
        issuers = set()
        for _ in range(4):
            status, body = metadata()
            assert status == 200, f"https through HAProxy: {status} {body[:200]}"
            issuers.add(yaml.safe_load(body)["issuer"])
        # Round robin: both replicas answered (each names its own loopback issuer here).
        assert issuers == {first.issuer, second.issuer}

        second.stop()
        # Every request is answered while the check notices (a refused connection is retried on the other server) ...
        for _ in range(10):
            status, body = metadata()
            assert status == 200, f"with one replica stopped: {status} {body[:200]}"
        # ... and once it has, only the live replica answers.
        def only_first() -> bool:
            return all(yaml.safe_load(metadata()[1])["issuer"] == first.issuer for _ in range(3))

        wait_until(only_first, timeout=20, interval=0.2, what="HAProxy to take the stopped replica out")
        assert _monitor_status(ports[8404]) == 200

        first.stop()
        wait_until(lambda: _monitor_status(ports[8404]) == 503, timeout=20, interval=0.1, what="HAProxy's monitor to fail with no replica")
    finally:
        proc.terminate()
        proc.wait(10)
        second.stop(check=False)
        first.stop(check=False)


def test_gateway_discovers_the_authorization_servers_through_haproxy(compose, postgres, redis, tmp_path):
    """The compose wiring end to end, on loopback: a gateway with the compose gateway.yaml discovers the authorization
    servers at an https issuer served by HAProxy (haproxy.cfg's TLS frontend, the dev certificate) and verifies it
    with its `ca_file`, and becomes ready; HAProxy then counts it up through its /readyz. The issuer's host is
    `localhost` here (the certificate names it too): this machine cannot make auth.gatehouse.test resolve to loopback,
    which compose does with the load balancer's network alias."""
    auth_config = cc.compose_server_config(compose["services"]["auth-1"], ROOT)
    config = cc.compose_server_config(compose["services"]["gateway-1"], ROOT)
    issuer_port = int(auth_config.raw["issuer"].rsplit(":", 1)[1])
    assert config.raw["authorization_server"]["issuer"] == auth_config.raw["issuer"]
    lb_ports = {issuer_port: free_port()}
    issuer = f"https://localhost:{lb_ports[issuer_port]}"
    gateway_secret = os.urandom(16).hex()
    auth, auth_admin, _ = _start_auth(auth_config, tmp_path / "auth", postgres, issuer=issuer, gateway_secret=gateway_secret)
    gateway_port, gateway_admin = free_port(), free_port()
    lb = None
    gateway = None
    try:
        lb, ports, ca = _haproxy_on_loopback(
            tmp_path / "lb", {"auth-1": (auth.port, auth_admin), "gateway-1": (gateway_port, gateway_admin)}, lb_ports
        )
        # The CA file the compose gateway reads as the secret gatehouse_ca is the dev CA.
        assert config.raw["authorization_server"]["ca_file"] == "/run/secrets/gatehouse_ca"
        gateway_yaml = _write_gateway_config(config, tmp_path / "gateway", redis, gateway_secret, issuer, gateway_port, gateway_admin, ca)
        gateway = GatewayProcess(gateway_yaml, admin_port=gateway_admin).start()
        gateway.wait_ready(timeout=30)
        # Discovery went through HAProxy's TLS frontend, the only way to the issuer here.
        assert gateway.token_cache()["discovered"] is True

        def lb_counts_gateway_up() -> bool:
            csv = requests.get(f"http://127.0.0.1:{ports[8404]}/stats;csv", timeout=2).text
            return any(line.startswith("be_gateway,gateway-1,") and ",UP," in line for line in csv.splitlines())

        wait_until(lb_counts_gateway_up, timeout=20, interval=0.2, what="HAProxy to count gateway-1 up by its /readyz")
        r = requests.get(f"http://127.0.0.1:{ports[8080]}/public/x", timeout=5)
        # No backend runs here: the gateway (not HAProxy, whose own error pages carry no request id) answers for it.
        assert r.status_code in (502, 503), f"{r.status_code} {r.text[:200]}"
        assert r.json()["request_id"] == r.headers["X-Request-Id"], (r.headers, r.text[:200])
    finally:
        if gateway is not None:
            gateway.stop()
        if lb is not None:
            lb.terminate()
            lb.wait(10)
        auth.stop()


def test_demo_backend_verifies_gateway_jwts_with_the_dev_ca(compose, postgres, redis, tmp_path):
    """The compose backend's wiring end to end, on loopback: the authorization server (compose auth.yaml) behind
    HAProxy's TLS frontend (haproxy.cfg, a fresh certs/generate.sh), a gateway (compose gateway.yaml, its backend
    target moved here) and `gatehouse demo-backend` with the compose service's options. A client's opaque token goes
    through the gateway, which exchanges it for a JWT; the backend fetches the JWKS over TLS at the issuer, trusting
    the dev CA (--ca-file), and verifies the JWT (verified_token). The same backend without --ca-file cannot fetch the
    keys (the certificate does not chain to the system's roots) and answers 503 keys_unavailable for the same JWT."""
    auth_config = cc.compose_server_config(compose["services"]["auth-1"], ROOT)
    config = cc.compose_server_config(compose["services"]["gateway-1"], ROOT)
    options = dc.demo_backend_options(compose["services"]["backend"]["command"])
    assert options is not None and options["ca-file"] == "/run/secrets/gatehouse_ca"
    assert options["issuer"] == auth_config.raw["issuer"] and options["audience"] == auth_config.raw["tokens"]["jwt_audience"]
    issuer_port = int(auth_config.raw["issuer"].rsplit(":", 1)[1])
    lb_ports = {issuer_port: free_port()}
    issuer = f"https://localhost:{lb_ports[issuer_port]}"  # the certificate names localhost (see the test above)
    gateway_secret = os.urandom(16).hex()
    auth, auth_admin, _ = _start_auth(auth_config, tmp_path / "auth", postgres, issuer=issuer, gateway_secret=gateway_secret)
    client_secret = (tmp_path / "auth" / "example_service_secret").read_text().strip()
    started: list[subprocess.Popen] = []
    gateway = None
    try:
        lb, ports, ca = _haproxy_on_loopback(tmp_path / "lb", {"auth-1": (auth.port, auth_admin)}, lb_ports)
        started.append(lb)
        wait_until(lambda: _monitor_status(ports[8404]) == 200, timeout=20, interval=0.1, what="HAProxy's monitor to report healthy")
        backend, backend_port, backend_log = _demo_backend(dict(options, issuer=issuer, **{"ca-file": str(ca)}), tmp_path, "backend")
        started.append(backend)
        without_ca = {k: v for k, v in options.items() if k != "ca-file"}
        untrusting, untrusting_port, untrusting_log = _demo_backend(dict(without_ca, issuer=issuer), tmp_path, "backend-without-ca")
        started.append(untrusting)

        raw = copy.deepcopy(config.raw)
        [backend_cluster] = [c for c in raw["clusters"] if c["name"] == "backend"]
        assert backend_cluster["targets"] == [f"http://backend:{options['port']}"]
        backend_cluster["targets"] = [f"http://127.0.0.1:{backend_port}"]
        gateway_port, gateway_admin = free_port(), free_port()
        gateway_yaml = _write_gateway_config(dataclasses.replace(config, raw=raw), tmp_path / "gateway", redis, gateway_secret, issuer,
                                             gateway_port, gateway_admin, ca)
        gateway = GatewayProcess(gateway_yaml, admin_port=gateway_admin).start()
        gateway.wait_ready(timeout=30)

        token = requests.post(f"http://127.0.0.1:{auth.port}/token", data={"grant_type": "client_credentials", "scope": "orders:read"},
                              auth=("example-service", client_secret), timeout=10)
        assert token.status_code == 200, token.text
        opaque = token.json()["access_token"]
        r = requests.get(f"http://127.0.0.1:{gateway_port}/api/orders", headers={"Authorization": f"Bearer {opaque}"}, timeout=10)
        assert r.status_code == 200, f"{r.status_code} {r.text[:300]}\n{backend_log.read_text()[-2000:]}"
        echo = r.json()
        verified = echo.get("verified_token")
        assert verified and verified["iss"] == issuer and options["audience"] in verified["aud"], echo
        assert verified["client_id"] == "example-service" and verified["scope"] == "orders:read", verified
        forwarded = {k.lower(): v for k, v in echo["headers"].items()}["authorization"]
        assert forwarded.startswith("Bearer ") and opaque not in forwarded
        jwt = forwarded[len("Bearer "):]

        # The same JWT: the backend with the CA accepts it straight, the one without cannot get the keys.
        assert requests.get(f"http://127.0.0.1:{backend_port}/api/orders", headers={"Authorization": forwarded}, timeout=10).status_code == 200
        refused = requests.get(f"http://127.0.0.1:{untrusting_port}/api/orders", headers={"Authorization": forwarded}, timeout=15)
        assert refused.status_code == 503, f"{refused.status_code} {refused.text[:300]}"
        assert refused.json()["error"] == "keys_unavailable", refused.text
        for log in (backend_log, untrusting_log):
            assert jwt not in log.read_text() and client_secret not in log.read_text()
    finally:
        if gateway is not None:
            gateway.stop()
        for proc in reversed(started):
            proc.terminate()
            proc.wait(10)
        auth.stop()
