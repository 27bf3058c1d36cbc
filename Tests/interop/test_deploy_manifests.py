"""The deployment files checked offline (no Docker engine, no Kubernetes cluster on this machine):

- deploy/kubernetes: every manifest parses and is listed in kustomization.yaml; selectors match pod labels; Services,
  PDBs and the HPA point at existing workloads; every referenced ConfigMap/Secret key exists; every probe names a
  container port; the Gatehouse containers' ports and probes are the admin/traffic ports of the ConfigMap they run
  with; the gateway's grace period covers preStop + drain_timeout (deploy_checks.check_kubernetes).
- docker-compose.yml: every bind mount exists and is read-only, every secret is declared and made by
  scripts/compose-secrets.sh, every long-running service has a health check, dependencies wait on health; the ports
  in haproxy.cfg, the health checks and prometheus.yml are those of config/compose/*.yaml (deploy_checks.check_compose);
  `haproxy -c` and `nginx -t` accept their configurations.
- The probes against the real processes: the real `gatehouse` binary is started with each ConfigMap's and each compose
  configuration (rewritten only where a container address cannot work here: loopback ports, the temporary PostgreSQL
  and Redis this test starts, temporary secret files, a loopback issuer), and every probe path the manifests name is
  requested on the admin port: 200. The HPA's metric is in the gateway's /metrics. The demo backend's nginx
  configuration answers its health check.
- The checks can fail: broken copies of the manifests (a missing key, a wrong port, a short grace period ...) are
  fed to the same functions, which must report them.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import kubernetes_validate
import pytest
import requests
import yaml

import deploy_checks as dc
from gatehouse_testlib import GatehouseServer, GatewayProcess, free_port, gatehouse_binary, wait_until

ROOT = dc.REPO_ROOT


# --------------------------------------------------------------------------------------------------------------
# parsed files
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubernetes():
    manifests, kustomization, problems = dc.load_kubernetes()
    assert problems == [], "\n".join(problems)
    return manifests


@pytest.fixture(scope="module")
def compose():
    return dc.load_compose()


@pytest.fixture(scope="module")
def haproxy():
    return dc.parse_haproxy(dc.HAPROXY_CONFIG.read_text())


@pytest.fixture(scope="module")
def prometheus():
    return yaml.safe_load(dc.PROMETHEUS_CONFIG.read_text())


def workload(manifests, kind, name):
    found = [m for m in manifests if m.kind == kind and m.name == name]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
    return found[0]


def container(manifest, name):
    return next(c for c in manifest.doc["spec"]["template"]["spec"]["containers"] if c["name"] == name)


# --------------------------------------------------------------------------------------------------------------
# static checks: the real files have no problem
# --------------------------------------------------------------------------------------------------------------


def test_kubernetes_manifests_are_consistent(kubernetes):
    kinds = {m.kind for m in kubernetes}
    # The premise: the objects the checks are about are there.
    for kind in ("Namespace", "Secret", "ConfigMap", "Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert kind in kinds, f"no {kind} in deploy/kubernetes"
    assert workload(kubernetes, "Deployment", "gatehouse-auth").doc["spec"]["replicas"] >= 2
    assert workload(kubernetes, "Deployment", "gatehouse-gateway").doc["spec"]["replicas"] >= 2
    assert dc.check_kubernetes(kubernetes) == []


# The oldest Kubernetes these manifests are meant for (HPA autoscaling/v2 and PDB policy/v1 are GA; the preStop pause
# is an exec `sleep`, not the 1.30+ sleep action) and the newest whose schemas kubernetes-validate carries.
SCHEMA_VERSIONS = ("1.28.0", "1.37.0")


def schema_problems(manifests) -> list[str]:
    problems = []
    for version in SCHEMA_VERSIONS:
        for m in manifests:
            try:
                kubernetes_validate.validate(m.doc, version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
                problems.append(f"{m.label()} (Kubernetes {version}): {str(error).splitlines()[0]}")
    return problems


def test_kubernetes_manifests_match_the_api_schema(kubernetes):
    """Each object against the API's OpenAPI schema (kubernetes-validate's copy, strict: an unknown field fails)."""
    assert len(kubernetes) >= 15
    assert schema_problems(kubernetes) == []


def test_kubernetes_schema_check_reports_a_broken_copy(kubernetes):
    broken = copy.deepcopy(kubernetes)
    probe = _pod(broken, "gatehouse-gateway")["containers"][0]["readinessProbe"]
    probe["httpGet"]["portt"] = probe["httpGet"].pop("port")
    _one(broken, "HorizontalPodAutoscaler").doc["spec"]["minReplicas"] = "two"
    problems = schema_problems(broken)
    assert any("Deployment/gatehouse-gateway" in p and "'port' is a required property" in p for p in problems), problems
    assert any("HorizontalPodAutoscaler/gatehouse-gateway" in p and "'two' is not of type 'integer'" in p for p in problems), problems


def test_kubernetes_gateway_grace_covers_the_drain(kubernetes):
    gateway = workload(kubernetes, "Deployment", "gatehouse-gateway")
    _, config = dc.gatehouse_container_config(kubernetes, gateway, container(gateway, "gateway"))
    grace = gateway.doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pause = dc._pre_stop_seconds(container(gateway, "gateway"))
    print(f"gateway: preStop {pause:g} s + drain_timeout {config.drain_seconds:g} s <= grace {grace} s")
    assert config.drain_seconds > 0 and pause > 0
    assert grace >= pause + config.drain_seconds


def test_kubernetes_hpa_scales_the_gateway_on_a_metric_it_exports(kubernetes):
    hpa = next(m for m in kubernetes if m.kind == "HorizontalPodAutoscaler")
    assert hpa.doc["spec"]["scaleTargetRef"]["name"] == "gatehouse-gateway"
    names = [m["pods"]["metric"]["name"] for m in hpa.doc["spec"]["metrics"] if m["type"] == "Pods"]
    assert names == ["gatehouse_gateway_in_flight_requests"]
    # That the gateway really exports it: test_gateway_probes_answer reads its /metrics.


def test_compose_is_consistent(compose, haproxy, prometheus):
    services = compose["services"]
    for name in ("auth-1", "auth-2", "gateway-1", "gateway-2", "postgres", "redis", "migrate", "backend", "lb"):
        assert name in services, f"no service {name}"
    assert set(services["prometheus"]["profiles"]) == {"observability"}
    assert dc.check_compose(compose, ROOT, haproxy, prometheus) == []


def test_backend_nginx_config_is_valid_and_the_same_in_kubernetes(kubernetes, compose, tmp_path):
    conf = ROOT / "config" / "compose" / "backend-nginx.conf"
    assert dc.configmap_text(kubernetes, "demo-backend", "nginx.conf") == conf.read_text()
    # Both start nginx on that file: compose through its bind mount, Kubernetes through the ConfigMap volume.
    backend = compose["services"]["backend"]
    path = backend["entrypoint"][backend["entrypoint"].index("-c") + 1]
    assert dc.compose_host_path(backend, path, ROOT) == ROOT / "config" / "compose" / "backend-nginx.conf"
    deployment = workload(kubernetes, "Deployment", "demo-backend")
    c = container(deployment, "backend")
    path = c["command"][c["command"].index("-c") + 1]
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in deployment.doc["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "demo-backend"
    assert [i["path"] for i in volume["configMap"]["items"]] == [path[len(mount["mountPath"]) + 1:]]
    result = subprocess.run(["nginx", "-t", "-e", "stderr", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_compose_secrets_script_makes_every_secret_compose_declares(compose, tmp_path):
    env = dict(os.environ, SECRETS_DIR=str(tmp_path / "secrets"), CERTS_DIR=str(tmp_path / "certs"))
    result = subprocess.run(["bash", str(ROOT / "scripts" / "compose-secrets.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    declared = compose["secrets"]
    assert declared, "compose declares no secrets"
    for name, spec in declared.items():
        relative = Path(spec["file"]).relative_to("secrets")
        made = tmp_path / "secrets" / relative
        assert made.is_file() and made.stat().st_size > 0, f"compose-secrets.sh did not make {spec['file']} (secret {name})"
    assert (tmp_path / "secrets").stat().st_mode & 0o077 == 0, "secrets/ must be private to its owner"
    # Compose requires no variable: everything secret is one of these files.
    assert re.findall(r"\$\{(\w+)", dc.COMPOSE_FILE.read_text()) == []
    # A second run keeps what is there (idempotent: the database's password must not change under it).
    before = (tmp_path / "secrets" / "postgres_password").read_text()
    subprocess.run(["bash", str(ROOT / "scripts" / "compose-secrets.sh")], env=env, check=True, capture_output=True, timeout=60)
    assert (tmp_path / "secrets" / "postgres_password").read_text() == before


def test_prometheus_accepts_its_configuration(compose, tmp_path):
    """`promtool check config` on config/prometheus/prometheus.yml with its rule file at the path compose mounts it."""
    mounts = {v.split(":")[1]: ROOT / v.split(":")[0] for v in compose["services"]["prometheus"]["volumes"] if v.startswith(".")}
    text = dc.PROMETHEUS_CONFIG.read_text()
    assert "/etc/prometheus/alerts.yml" in text and "/etc/prometheus/alerts.yml" in mounts
    (tmp_path / "prometheus.yml").write_text(text.replace("/etc/prometheus/alerts.yml", str(mounts["/etc/prometheus/alerts.yml"])))
    result = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_haproxy_accepts_its_configuration(haproxy, tmp_path):
    env = dict(os.environ, CERTS_DIR=str(tmp_path / "certs"))
    subprocess.run(["bash", str(ROOT / "certs" / "generate.sh")], env=env, check=True, capture_output=True, timeout=60)
    bundle = tmp_path / "haproxy_tls"
    bundle.write_text((tmp_path / "certs" / "server-chain.pem").read_text() + (tmp_path / "certs" / "server.key").read_text())
    assert set(haproxy.cert_files) == {"/run/secrets/haproxy_tls"}
    text = dc.HAPROXY_CONFIG.read_text().replace("/run/secrets/haproxy_tls", str(bundle))
    (tmp_path / "haproxy.cfg").write_text(text)
    result = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr
    # The certificate names the issuer's and the gateway's host (the lb's aliases).
    san = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "certs" / "server.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "DNS:auth.gatehouse.test" in san and "DNS:gateway.gatehouse.test" in san


# --------------------------------------------------------------------------------------------------------------
# the checks can fail: broken copies are reported
# --------------------------------------------------------------------------------------------------------------


def _pod(manifests, deployment):
    return _one(manifests, "Deployment", deployment).doc["spec"]["template"]["spec"]


def _edit_config(manifests, configmap, key, old, new):
    data = _one(manifests, "ConfigMap", configmap).doc["data"]
    assert old in data[key]
    data[key] = data[key].replace(old, new)


def _one(manifests, kind, name=None):
    return next(m for m in manifests if m.kind == kind and (name is None or m.name == name))


def _k8s_mutations():
    def secret_key(ms):
        volume = next(v for v in _pod(ms, "gatehouse-auth")["volumes"] if v["name"] == "secrets")
        volume["secret"]["items"][0]["key"] = "no-such-key"
        return "Secret gatehouse-secrets has no key 'no-such-key'"

    def env_secret_key(ms):
        _pod(ms, "gatehouse-auth")["containers"][0]["env"] = [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "gatehouse-secrets", "key": "other-key"}}}
        ]
        return "env X: Secret gatehouse-secrets has no key 'other-key'"

    def config_key(ms):
        cm = _one(ms, "ConfigMap", "gatehouse-gateway")
        cm.doc["data"] = {"other.yaml": cm.doc["data"]["gateway.yaml"]}
        return "has no key 'gateway.yaml'"

    def probe_port(ms):
        _pod(ms, "gatehouse-gateway")["containers"][0]["readinessProbe"]["httpGet"]["port"] = "metrics"
        return "readinessProbe port 'metrics' is none of the container's ports"

    def admin_port(ms):
        _edit_config(ms, "gatehouse-auth", "auth.yaml", "port: 9902", "port: 9999")
        return "has admin port 9999"

    def grace(ms):
        _pod(ms, "gatehouse-gateway")["terminationGracePeriodSeconds"] = 25
        return "terminationGracePeriodSeconds 25 < preStop 10 s + drain_timeout 20 s"

    def drain(ms):
        _edit_config(ms, "gatehouse-gateway", "gateway.yaml", "drain_timeout: 20s", "drain_timeout: 1m")
        return "drain_timeout 60 s"

    def selector(ms):
        pdb = _one(ms, "PodDisruptionBudget", "gatehouse-gateway")
        pdb.doc["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "gateway"}
        return "matches no workload's pods"

    def hpa_target(ms):
        hpa = _one(ms, "HorizontalPodAutoscaler")
        hpa.doc["spec"]["scaleTargetRef"]["name"] = "gateway"
        return "scaleTargetRef Deployment/gateway does not exist"

    def deployment_selector(ms):
        auth = _one(ms, "Deployment", "gatehouse-auth")
        auth.doc["spec"]["template"]["metadata"]["labels"] = {"app": "auth"}
        return "does not match its pod labels"

    def secret_file(ms):
        volume = next(v for v in _pod(ms, "gatehouse-gateway")["volumes"] if v["name"] == "secrets")
        volume["secret"]["items"] = [i for i in volume["secret"]["items"] if i["key"] != "redis-password"]
        return "reads /run/secrets/gatehouse/redis-password, which no mounted Secret provides"

    def real_secret(ms):
        secret = _one(ms, "Secret")
        secret.doc["stringData"]["redis-password"] = "hunter2"
        return "redis-password is not a CHANGE-ME placeholder"

    def keys_not_shared(ms):
        volume = next(v for v in _pod(ms, "gatehouse-auth")["volumes"] if v["name"] == "data")
        volume.pop("persistentVolumeClaim")
        volume["emptyDir"] = {}
        return "the data directory /var/lib/gatehouse (signing keys) is not one ReadWriteMany claim"

    def keys_claim_missing(ms):
        ms.remove(_one(ms, "PersistentVolumeClaim", "gatehouse-auth-keys"))
        return "PersistentVolumeClaim gatehouse-auth-keys does not exist"

    def root_filesystem(ms):
        _pod(ms, "gatehouse-gateway")["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
        return "needs readOnlyRootFilesystem: true"

    return [secret_key, env_secret_key, config_key, probe_port, admin_port, grace, drain, selector, hpa_target, deployment_selector, secret_file, real_secret,
            keys_not_shared, keys_claim_missing, root_filesystem]


@pytest.mark.parametrize("mutate", _k8s_mutations(), ids=lambda f: f.__name__)
def test_kubernetes_check_reports_a_broken_copy(kubernetes, mutate):
    broken = copy.deepcopy(kubernetes)
    expected = mutate(broken)
    problems = dc.check_kubernetes(broken)
    assert any(expected in p for p in problems), f"expected a problem containing {expected!r}, got {problems}"


def test_kubernetes_load_reports_an_unparsable_or_unlisted_file(tmp_path):
    directory = tmp_path / "k8s"
    shutil.copytree(dc.KUBERNETES_DIR, directory)
    (directory / "hpa.yaml").write_text("apiVersion: autoscaling/v2\nkind: [unclosed\n")
    (directory / "extra.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n")
    _, _, problems = dc.load_kubernetes(directory)
    assert any(p.startswith("hpa.yaml: does not parse") for p in problems), problems
    assert any("extra.yaml: not listed in kustomization.yaml" in p for p in problems), problems


def _compose_mutations():
    def healthcheck(c, h):
        del c["services"]["redis"]["healthcheck"]
        return "service redis: no healthcheck"

    def missing_mount(c, h):
        c["services"]["backend"]["volumes"] = ["./config/compose/no-such.conf:/etc/nginx/gatehouse/backend-nginx.conf:ro"]
        return "mounts ./config/compose/no-such.conf, which does not exist"

    def keys_per_replica(c, h):
        c["services"]["auth-2"]["volumes"] = ["./config:/srv/gatehouse/config:ro", "auth-keys-2:/var/lib/gatehouse"]
        c["volumes"]["auth-keys-2"] = None
        return "the authorization servers do not share one data directory"

    def writable_mount(c, h):
        c["services"]["auth-1"]["volumes"] = ["./config:/srv/gatehouse/config", "auth-keys:/var/lib/gatehouse"]
        return "bind mount ./config is not read-only"

    def undeclared_secret(c, h):
        del c["secrets"]["redis_password"]
        return "secret redis_password is not declared"

    def secret_not_given(c, h):
        c["services"]["gateway-2"]["secrets"] = ["redis_password", "gatehouse_ca"]
        return "reads /run/secrets/gateway_client_secret, which is not one of its secrets"

    def haproxy_check_port(c, h):
        backend = h.backends["be_gateway"]
        backend.servers[1] = (backend.servers[1][0], backend.servers[1][1], backend.servers[1][2], 9999)
        return "check port 9999"

    def haproxy_server(c, h):
        backend = h.backends["be_auth"]
        backend.servers[0] = ("auth-3", "auth-3", 9000, 9902)
        return "server auth-3 -> auth-3, no Gatehouse service"

    def healthcheck_port(c, h):
        c["services"]["gateway-1"]["healthcheck"]["test"] = ["CMD", "curl", "-fsS", "http://127.0.0.1:9902/readyz"]
        return "healthcheck (9902, '/readyz') is not /readyz on the admin port 9901"

    def one_shot_not_waited(c, h):
        c["services"]["auth-2"]["depends_on"]["migrate"] = {"condition": "service_started"}
        return "a one-shot must be waited on"

    def grace(c, h):
        c["services"]["gateway-1"]["stop_grace_period"] = "10s"
        return "stop_grace_period 10 s < drain_timeout 20 s"

    def unpublished_bind(c, h):
        c["services"]["lb"]["ports"] = [p for p in c["services"]["lb"]["ports"] if "9443" not in str(p)]
        return "binds :9443, which the lb service does not publish"

    return [healthcheck, missing_mount, keys_per_replica, writable_mount, undeclared_secret, secret_not_given, haproxy_check_port, haproxy_server,
            healthcheck_port, one_shot_not_waited, grace, unpublished_bind]


@pytest.mark.parametrize("mutate", _compose_mutations(), ids=lambda f: f.__name__)
def test_compose_check_reports_a_broken_copy(compose, haproxy, prometheus, mutate):
    broken, broken_haproxy = copy.deepcopy(compose), copy.deepcopy(haproxy)
    expected = mutate(broken, broken_haproxy)
    problems = dc.check_compose(broken, ROOT, broken_haproxy, prometheus)
    assert any(expected in p for p in problems), f"expected a problem containing {expected!r}, got {problems}"


def test_compose_check_reports_an_unscraped_admin_listener(compose, haproxy, prometheus):
    broken = copy.deepcopy(prometheus)
    for job in broken["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [t for t in static["targets"] if t != "auth-2:9902"]
    problems = dc.check_compose(compose, ROOT, haproxy, broken)
    assert "prometheus.yml: does not scrape auth-2:9902" in problems


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
    config = dc.compose_server_config(s, ROOT)
    port, path = dc._healthcheck_url(s)
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
        auth_config = dc.compose_server_config(compose["services"]["auth-1"], ROOT)
    assert (ports["http"], ports["admin"]) == (config.traffic_port, config.admin_port)
    assert config.raw.get("redis"), "the deployed gateway shares its limits through Redis"
    assert any(limit.get("scope") == "cluster" for route in config.raw["routes"] for limit in route.get("rate_limits", []))
    auth, _, gateway_secret = _start_auth(auth_config, tmp_path / "auth", postgres)
    directory = tmp_path / "gateway"
    directory.mkdir()
    raw = copy.deepcopy(config.raw)
    values = {n: redis["password"] for n in REDIS_NAMES} | {n: gateway_secret for n in GATEWAY_SECRET_NAMES}
    raw = _replace_files(raw, _write_secrets(config, directory, values))
    admin = free_port()
    raw["listeners"] = [{"host": "127.0.0.1", "port": free_port()}]
    raw["admin"] = {"host": "127.0.0.1", "port": admin}
    raw["redis"]["url"] = redis["url"]
    raw["authorization_server"]["issuer"] = auth.issuer
    raw["authorization_server"].pop("ca_file", None)  # only for an https issuer
    (directory / "gateway.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    gateway = GatewayProcess(directory / "gateway.yaml", admin_port=admin).start()
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
        auth.stop()


def test_backend_health_check_answers(tmp_path):
    """The demo backend's nginx configuration, started for real on a free port: /healthz (compose health check and the
    Kubernetes probes) and the echo."""
    port = free_port()
    text = (ROOT / "config" / "compose" / "backend-nginx.conf").read_text()
    assert "listen 8081;" in text
    text = text.replace("listen 8081;", f"listen 127.0.0.1:{port};").replace("/tmp/", f"{tmp_path}/")
    (tmp_path / "nginx.conf").write_text(text)
    proc = subprocess.Popen(["nginx", "-e", "stderr", "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def healthy() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            assert proc.poll() is None, f"nginx exited: {proc.stderr.read()}"
            return False

    try:
        wait_until(healthy, timeout=15, interval=0.05, what="the demo backend's /healthz")
        echo = requests.get(f"http://127.0.0.1:{port}/api/orders?x=1", headers={"Authorization": "Bearer abc.def", "X-Request-Id": "r1"}, timeout=5)
        assert echo.status_code == 200
        assert echo.json() == {"service": "demo-backend", "method": "GET", "path": "/api/orders?x=1", "request_id": "r1",
                               "authorization": "Bearer abc.def"}
        odd = requests.get(f"http://127.0.0.1:{port}/x", headers={"Authorization": 'Bearer "quoted"'}, timeout=5)
        assert odd.json()["authorization"].startswith("(not echoed")
    finally:
        proc.terminate()
        proc.wait(10)


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
    text = dc.HAPROXY_CONFIG.read_text().replace("/run/secrets/haproxy_tls", str(bundle))
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
    config = dc.compose_server_config(compose["services"]["auth-1"], ROOT)
    first, admin1, _ = _start_auth(config, tmp_path / "auth-1", postgres)
    second, admin2, _ = _start_auth(config, tmp_path / "auth-2", postgres)
    proc, ports, ca = _haproxy_on_loopback(tmp_path / "lb", {"auth-1": (first.port, admin1), "auth-2": (second.port, admin2)})
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
    auth_config = dc.compose_server_config(compose["services"]["auth-1"], ROOT)
    config = dc.compose_server_config(compose["services"]["gateway-1"], ROOT)
    issuer_port = int(auth_config.raw["issuer"].rsplit(":", 1)[1])
    assert config.raw["authorization_server"]["issuer"] == auth_config.raw["issuer"]
    lb_ports = {issuer_port: free_port()}
    issuer = f"https://localhost:{lb_ports[issuer_port]}"
    gateway_secret = os.urandom(16).hex()
    auth, auth_admin, _ = _start_auth(auth_config, tmp_path / "auth", postgres, issuer=issuer, gateway_secret=gateway_secret)
    directory = tmp_path / "gateway"
    directory.mkdir()
    raw = copy.deepcopy(config.raw)
    values = {n: redis["password"] for n in REDIS_NAMES} | {n: gateway_secret for n in GATEWAY_SECRET_NAMES}
    mapping = _write_secrets(config, directory, values)
    gateway_port, gateway_admin = free_port(), free_port()
    lb = None
    gateway = None
    try:
        lb, ports, ca = _haproxy_on_loopback(
            tmp_path / "lb", {"auth-1": (auth.port, auth_admin), "gateway-1": (gateway_port, gateway_admin)}, lb_ports
        )
        # The CA file the compose gateway reads as the secret gatehouse_ca is the dev CA.
        assert config.raw["authorization_server"]["ca_file"] == "/run/secrets/gatehouse_ca"
        Path(mapping["/run/secrets/gatehouse_ca"]).write_text(ca.read_text())
        raw = _replace_files(raw, mapping)
        raw["listeners"] = [{"host": "127.0.0.1", "port": gateway_port}]
        raw["admin"] = {"host": "127.0.0.1", "port": gateway_admin}
        raw["redis"]["url"] = redis["url"]
        raw["authorization_server"]["issuer"] = issuer
        (directory / "gateway.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        gateway = GatewayProcess(directory / "gateway.yaml", admin_port=gateway_admin).start()
        gateway.wait_ready(timeout=30)
        # Discovery went through HAProxy's TLS frontend: the gateway's view names the issuer it verified.
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
