"""The deployment files checked offline (no Docker engine, no Kubernetes cluster on this machine); the probes against
real processes are in test_deploy_probes.py.

- deploy/kubernetes: every manifest parses, is listed in kustomization.yaml and matches the API's schema; selectors
  match pod labels; Services, PDBs and the HPA point at existing workloads; every referenced ConfigMap/Secret key
  exists; every probe names a container port; the Gatehouse containers' ports and probes are the admin/traffic ports
  of the ConfigMap they run with; the gateway's grace period covers preStop + drain_timeout
  (deploy_checks.check_kubernetes).
- docker-compose.yml: every bind mount exists and is read-only, every secret is declared and made by
  scripts/compose-secrets.sh, every long-running service has a health check, dependencies wait on health; the ports
  in haproxy.cfg, the health checks and prometheus.yml are those of config/compose/*.yaml
  (compose_checks.check_compose); `haproxy -c` and `promtool check config` accept their configurations.
- The demo backend is `gatehouse demo-backend` in both: its probes request a path it answers without a token on the
  port it listens on, its issuer and audience are the authorization server's, its --ca-file is a file it is given
  (deploy_checks.check_demo_backend).
- The checks can fail: broken copies of the files (a missing key, a wrong port, a short grace period ...) are fed to
  the same functions, which must report them.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import compose_checks as cc
import deploy_checks as dc
from deploy_checks import find_container as container
from deploy_checks import find_workload as workload
from deploy_fixtures import compose, kubernetes  # noqa: F401 (fixtures)

ROOT = dc.REPO_ROOT


# --------------------------------------------------------------------------------------------------------------
# parsed files
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def haproxy():
    return cc.parse_haproxy(cc.HAPROXY_CONFIG.read_text())


@pytest.fixture(scope="module")
def prometheus():
    return yaml.safe_load(cc.PROMETHEUS_CONFIG.read_text())


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
    # That the gateway really exports it: test_deploy_probes.py::test_gateway_probes_answer reads its /metrics.


def test_compose_is_consistent(compose, haproxy, prometheus):
    services = compose["services"]
    for name in ("auth-1", "auth-2", "gateway-1", "gateway-2", "postgres", "redis", "migrate", "backend", "lb"):
        assert name in services, f"no service {name}"
    assert set(services["prometheus"]["profiles"]) == {"observability"}
    assert cc.check_compose(compose, ROOT, haproxy, prometheus) == []


def test_demo_backend_is_gatehouse_in_compose_and_kubernetes(kubernetes, compose):
    """Both stacks run Gatehouse's own echo backend, with the image the servers use; compose trusts the dev CA (the
    issuer is HAProxy's TLS frontend) through the secret the gateways read it from. The rest of its wiring is checked
    by check_compose / check_kubernetes (no problem reported above)."""
    backend = compose["services"]["backend"]
    assert backend["image"] == compose["services"]["gateway-1"]["image"] == "gatehouse:latest"
    options = dc.demo_backend_options(backend["command"])
    assert options is not None and "?unknown" not in options, backend["command"]
    assert options["ca-file"] == "/run/secrets/gatehouse_ca" and "gatehouse_ca" in backend["secrets"]
    assert options["issuer"].startswith("https://")
    assert cc._healthcheck_url(backend) == (int(options["port"]), "/healthz")
    assert dc.demo_backend_token_free_paths() == {"/healthz"}

    deployment = workload(kubernetes, "Deployment", "demo-backend")
    c = container(deployment, "backend")
    assert c["image"] == container(workload(kubernetes, "Deployment", "gatehouse-gateway"), "gateway")["image"]
    options = dc.demo_backend_options(c["args"])
    assert options is not None and "?unknown" not in options, c["args"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": int(options["port"])}
    assert c["readinessProbe"]["httpGet"] == c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # No nginx stand-in is left to configure.
    assert not any(m.kind == "ConfigMap" and m.name == "demo-backend" for m in kubernetes)


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
    assert re.findall(r"\$\{(\w+)", cc.COMPOSE_FILE.read_text()) == []
    # A second run keeps what is there (idempotent: the database's password must not change under it).
    before = (tmp_path / "secrets" / "postgres_password").read_text()
    subprocess.run(["bash", str(ROOT / "scripts" / "compose-secrets.sh")], env=env, check=True, capture_output=True, timeout=60)
    assert (tmp_path / "secrets" / "postgres_password").read_text() == before


def test_prometheus_accepts_its_configuration(compose, tmp_path):
    """`promtool check config` on config/prometheus/prometheus.yml with its rule file at the path compose mounts it."""
    mounts = {v.split(":")[1]: ROOT / v.split(":")[0] for v in compose["services"]["prometheus"]["volumes"] if v.startswith(".")}
    text = cc.PROMETHEUS_CONFIG.read_text()
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
    text = cc.HAPROXY_CONFIG.read_text().replace("/run/secrets/haproxy_tls", str(bundle))
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

    def audience(ms):
        _edit_config(ms, "gatehouse-auth", "auth.yaml", "jwt_audience: https://api.example.com", "jwt_audience: https://other.example.com")
        return "route api accepts ['https://api.example.com'], the exchanged JWTs are for https://other.example.com"

    def issuer(ms):
        _edit_config(ms, "gatehouse-gateway", "gateway.yaml", "issuer: https://auth.example.com", "issuer: https://login.example.com")
        return "the gateway discovers https://login.example.com, the authorization server is https://auth.example.com"

    def root_filesystem(ms):
        _pod(ms, "gatehouse-gateway")["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
        return "needs readOnlyRootFilesystem: true"

    def backend_probe_path(ms):
        _pod(ms, "demo-backend")["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/api/ready"
        return "readinessProbe requests /api/ready on port 8081; the backend listens on 8081 and answers ['/healthz'] without a token"

    def backend_port(ms):
        _set_option(_pod(ms, "demo-backend")["containers"][0]["args"], "--port", "9000")
        return "livenessProbe requests /healthz on port 8081; the backend listens on 9000"

    def backend_audience(ms):
        _edit_config(ms, "gatehouse-auth", "auth.yaml", "jwt_audience: https://api.example.com", "jwt_audience: https://other.example.com")
        return "--audience https://api.example.com, the exchanged JWTs are for https://other.example.com"

    def backend_ca_not_mounted(ms):
        _pod(ms, "demo-backend")["containers"][0]["args"] += ["--ca-file", "/run/secrets/gatehouse/ca.pem"]
        return "--ca-file /run/secrets/gatehouse/ca.pem is not a file the container has"

    return [secret_key, env_secret_key, config_key, probe_port, admin_port, grace, drain, selector, hpa_target, deployment_selector, secret_file, real_secret,
            keys_not_shared, keys_claim_missing, audience, issuer, root_filesystem, backend_probe_path, backend_port, backend_audience,
            backend_ca_not_mounted]


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


def _set_option(command: list, name: str, value: str) -> None:
    command[command.index(name) + 1] = value


def _compose_mutations():
    def healthcheck(c, h):
        del c["services"]["redis"]["healthcheck"]
        return "service redis: no healthcheck"

    def missing_mount(c, h):
        c["services"]["gateway-2"]["volumes"] = ["./config-no-such:/srv/gatehouse/config:ro"]
        return "mounts ./config-no-such, which does not exist"

    def backend_ca_not_given(c, h):
        c["services"]["backend"]["secrets"] = []
        return "service backend: --ca-file /run/secrets/gatehouse_ca is not a file the container has"

    def backend_health_port(c, h):
        c["services"]["backend"]["healthcheck"]["test"] = ["CMD", "curl", "-fsS", "http://127.0.0.1:8082/healthz"]
        return "service backend: healthcheck requests /healthz on port 8082; the backend listens on 8081"

    def backend_health_path(c, h):
        c["services"]["backend"]["healthcheck"]["test"] = ["CMD", "curl", "-fsS", "http://127.0.0.1:8081/readyz"]
        return "service backend: healthcheck requests /readyz on port 8081"

    def backend_audience(c, h):
        _set_option(c["services"]["backend"]["command"], "--audience", "https://backend.gatehouse.test")
        return "--audience https://backend.gatehouse.test, the exchanged JWTs are for https://gateway.gatehouse.test:8443"

    def backend_issuer(c, h):
        _set_option(c["services"]["backend"]["command"], "--issuer", "https://auth.gatehouse.test")
        return "--issuer https://auth.gatehouse.test, the authorization server's issuer is https://auth.gatehouse.test:9443"

    def backend_option(c, h):
        c["services"]["backend"]["command"] += ["--ca", "/run/secrets/gatehouse_ca"]
        return "unknown or incomplete option '--ca /run/secrets/gatehouse_ca'"

    def backend_port(c, h):
        _set_option(c["services"]["backend"]["command"], "--port", "8090")
        return "the gateway's cluster backend targets http://backend:8081, the backend listens on 8090"

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
            healthcheck_port, one_shot_not_waited, grace, unpublished_bind, backend_ca_not_given, backend_health_port, backend_health_path,
            backend_audience, backend_issuer, backend_option, backend_port]


@pytest.mark.parametrize("mutate", _compose_mutations(), ids=lambda f: f.__name__)
def test_compose_check_reports_a_broken_copy(compose, haproxy, prometheus, mutate):
    broken, broken_haproxy = copy.deepcopy(compose), copy.deepcopy(haproxy)
    expected = mutate(broken, broken_haproxy)
    problems = cc.check_compose(broken, ROOT, broken_haproxy, prometheus)
    assert any(expected in p for p in problems), f"expected a problem containing {expected!r}, got {problems}"


def test_compose_check_reports_an_unscraped_admin_listener(compose, haproxy, prometheus):
    broken = copy.deepcopy(prometheus)
    for job in broken["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [t for t in static["targets"] if t != "auth-2:9902"]
    problems = cc.check_compose(compose, ROOT, haproxy, broken)
    assert "prometheus.yml: does not scrape auth-2:9902" in problems


def test_pairing_check_reports_a_gateway_that_does_not_fit_its_authorization_server(compose):
    auth = cc.compose_server_config(compose["services"]["auth-1"], ROOT)
    gateway = cc.compose_server_config(compose["services"]["gateway-1"], ROOT)
    assert dc.check_pairing(auth, gateway, "compose") == []
    other_secret = copy.deepcopy(gateway)
    other_secret.raw["authorization_server"]["client_secret"] = {"file": "/run/secrets/example_service_secret"}
    assert any("are not the same secret" in p for p in dc.check_pairing(auth, other_secret, "compose"))
    unknown_client = copy.deepcopy(gateway)
    unknown_client.raw["authorization_server"]["client_id"] = "gateway"
    assert any("client gateway is not a client" in p for p in dc.check_pairing(auth, unknown_client, "compose"))
    no_exchange = copy.deepcopy(auth)
    next(c for c in no_exchange.raw["clients"] if c["id"] == "gatehouse-gateway")["grants"] = ["client_credentials"]
    assert any("may not exchange tokens" in p for p in dc.check_pairing(no_exchange, gateway, "compose"))
