"""Offline consistency checks of the deployment files: docker-compose.yml (+ config/compose, config/haproxy,
config/prometheus) and deploy/kubernetes. Each check_* function takes parsed data and returns a list of problems
(strings naming the file, the object and what is wrong); test_deploy_manifests.py asserts the list is empty for the
real files and non-empty for broken copies. Nothing here starts a process: the probes are requested against the real
binary by the test itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
HAPROXY_CONFIG = REPO_ROOT / "config" / "haproxy" / "haproxy.cfg"
PROMETHEUS_CONFIG = REPO_ROOT / "config" / "prometheus" / "prometheus.yml"

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def duration_seconds(value: Any) -> float:
    """A Gatehouse duration (`20s`, `1m`, `250ms`, or an integer number of seconds) in seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", str(value).strip())
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    number, unit = int(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


# --------------------------------------------------------------------------------------------------------------
# Gatehouse configuration files
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ServerConfig:
    """What the deployment files must agree with in one Gatehouse YAML file."""

    kind: str  # "auth" or "gateway"
    traffic_port: int
    admin_port: Optional[int]
    secret_files: list[str]
    drain_seconds: Optional[float] = None
    raw: dict = field(default_factory=dict)


def secret_file_paths(node: Any) -> list[str]:
    """Every file a configuration tree reads that the deployment must provide: `{file: PATH}` secrets and `ca_file`."""
    found: list[str] = []
    if isinstance(node, dict):
        if set(node) == {"file"} and isinstance(node["file"], str):
            found.append(node["file"])
        if isinstance(node.get("ca_file"), str):
            found.append(node["ca_file"])
        for value in node.values():
            found += secret_file_paths(value)
    elif isinstance(node, list):
        for value in node:
            found += secret_file_paths(value)
    return found


def parse_server_config(text: str) -> ServerConfig:
    raw = yaml.safe_load(text)
    admin = raw.get("admin")
    if "listeners" in raw:
        drain = duration_seconds(raw.get("limits", {}).get("drain_timeout", "30s"))  # the documented default
        return ServerConfig("gateway", int(raw["listeners"][0]["port"]), int(admin.get("port", 9901)) if admin else None,
                            secret_file_paths(raw), drain, raw)
    return ServerConfig("auth", int(raw.get("listen", {}).get("port", 9000)), int(admin.get("port", 9902)) if admin else None,
                        secret_file_paths(raw), None, raw)


# --------------------------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Manifest:
    file: str
    doc: dict

    @property
    def kind(self) -> str:
        return self.doc.get("kind", "")

    @property
    def name(self) -> str:
        return self.doc.get("metadata", {}).get("name", "")

    def label(self) -> str:
        return f"{self.file}: {self.kind}/{self.name}"


def load_kubernetes(directory: Path = KUBERNETES_DIR) -> tuple[list[Manifest], dict, list[str]]:
    """The manifests kustomization.yaml lists (parsed), the kustomization, and parse problems."""
    problems: list[str] = []
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    manifests: list[Manifest] = []
    listed = kustomization.get("resources", [])
    for name in listed:
        path = directory / name
        if not path.is_file():
            problems.append(f"kustomization.yaml: resource {name} does not exist")
            continue
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as error:
            problems.append(f"{name}: does not parse: {error}")
            continue
        manifests += [Manifest(name, d) for d in docs]
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml" and path.name not in listed:
            problems.append(f"{path.name}: not listed in kustomization.yaml (kubectl apply -k would skip it)")
    return manifests, kustomization, problems


def _find(manifests: list[Manifest], kind: str, name: str) -> Optional[Manifest]:
    return next((m for m in manifests if m.kind == kind and m.name == name), None)


def _pod_spec(m: Manifest) -> dict:
    return m.doc.get("spec", {}).get("template", {}).get("spec", {})


def _pod_labels(m: Manifest) -> dict:
    return m.doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _probe_port(container: dict, port: Any) -> Optional[int]:
    """The container port number a probe's `port` (name or number) names, or None."""
    for p in container.get("ports", []):
        if port == p.get("name") or port == p.get("containerPort"):
            return int(p["containerPort"])
    return None


def _pre_stop_seconds(container: dict) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if not pre_stop:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep"):
        return float(command[1])
    raise ValueError(f"preStop {pre_stop!r}: not a pause this check understands")


def configmap_text(manifests: list[Manifest], name: str, key: str) -> Optional[str]:
    m = _find(manifests, "ConfigMap", name)
    return None if m is None else (m.doc.get("data") or {}).get(key)


def gatehouse_container_config(manifests: list[Manifest], workload: Manifest, container: dict) -> Optional[tuple[str, ServerConfig]]:
    """For a container running `gatehouse auth|gateway --config PATH`: the ConfigMap key mounted at PATH, parsed."""
    args = container.get("args", [])
    if not args or args[0] not in ("auth", "gateway") or "--config" not in args:
        return None
    path = args[args.index("--config") + 1]
    volumes = {v["name"]: v for v in _pod_spec(workload).get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        volume = volumes.get(mount["name"], {})
        if path.startswith(prefix) and "configMap" in volume:
            file_name = path[len(prefix):]
            items = volume["configMap"].get("items")
            key = next((i["key"] for i in items if i["path"] == file_name), None) if items else file_name
            text = configmap_text(manifests, volume["configMap"]["name"], key) if key else None
            if text is None:
                return None
            return f"{volume['configMap']['name']}/{key}", parse_server_config(text)
    return None


def check_kubernetes(manifests: list[Manifest]) -> list[str]:
    problems: list[str] = []
    for m in manifests:
        if not m.doc.get("apiVersion") or not m.kind or not m.name:
            problems.append(f"{m.file}: a document without apiVersion, kind or metadata.name")
    workloads = [m for m in manifests if m.kind in WORKLOAD_KINDS]

    for w in workloads:
        selector = w.doc["spec"].get("selector", {}).get("matchLabels", {})
        if not _selects(selector, _pod_labels(w)):
            problems.append(f"{w.label()}: selector {selector} does not match its pod labels {_pod_labels(w)}")
        spec = _pod_spec(w)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claim_templates = {c["metadata"]["name"] for c in w.doc["spec"].get("volumeClaimTemplates", [])}
        security = spec.get("securityContext", {})
        if not security.get("runAsNonRoot") or not security.get("runAsUser"):
            problems.append(f"{w.label()}: the pod must run as a numeric non-root user (runAsNonRoot, runAsUser)")
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            where = f"{w.label()} container {container['name']}"
            csec = container.get("securityContext", {})
            if not csec.get("readOnlyRootFilesystem") or csec.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes and mount["name"] not in claim_templates:
                    problems.append(f"{where}: mounts volume {mount['name']}, which the pod does not define")
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                for kind, key_ref in (("Secret", ref.get("secretKeyRef")), ("ConfigMap", ref.get("configMapKeyRef"))):
                    if key_ref:
                        problems += _check_key(manifests, kind, key_ref["name"], key_ref["key"], f"{where} env {env['name']}")
            for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = container.get(probe_name)
                if probe and "httpGet" in probe and _probe_port(container, probe["httpGet"]["port"]) is None:
                    problems.append(f"{where}: {probe_name} port {probe['httpGet']['port']!r} is none of the container's ports")
            if container in spec.get("containers", []) and not container.get("readinessProbe"):
                problems.append(f"{where}: no readinessProbe")
            if container in spec.get("containers", []) and not container.get("livenessProbe"):
                problems.append(f"{where}: no livenessProbe")
            problems += _check_gatehouse_container(manifests, w, container, volumes, where)
        for name, volume in volumes.items():
            if "configMap" in volume:
                for item in volume["configMap"].get("items", []):
                    problems += _check_key(manifests, "ConfigMap", volume["configMap"]["name"], item["key"], f"{w.label()} volume {name}")
                if _find(manifests, "ConfigMap", volume["configMap"]["name"]) is None and not volume["configMap"].get("items"):
                    problems.append(f"{w.label()} volume {name}: ConfigMap {volume['configMap']['name']} does not exist")
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if _find(manifests, "PersistentVolumeClaim", claim) is None:
                    problems.append(f"{w.label()} volume {name}: PersistentVolumeClaim {claim} does not exist")
            if "secret" in volume:
                for item in volume["secret"].get("items", []):
                    problems += _check_key(manifests, "Secret", volume["secret"]["secretName"], item["key"], f"{w.label()} volume {name}")
                if _find(manifests, "Secret", volume["secret"]["secretName"]) is None and not volume["secret"].get("items"):
                    problems.append(f"{w.label()} volume {name}: Secret {volume['secret']['secretName']} does not exist")

    for s in (m for m in manifests if m.kind == "Service"):
        selector = s.doc["spec"].get("selector", {})
        matched = [w for w in workloads if _selects(selector, _pod_labels(w))]
        if not matched:
            problems.append(f"{s.label()}: selector {selector} matches no workload's pods")
        for port in s.doc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for w in matched:
                if not any(_probe_port(c, target) is not None for c in _pod_spec(w).get("containers", [])):
                    problems.append(f"{s.label()}: targetPort {target!r} is no container port of {w.kind}/{w.name}")

    for p in (m for m in manifests if m.kind == "PodDisruptionBudget"):
        selector = p.doc["spec"].get("selector", {}).get("matchLabels", {})
        if not any(_selects(selector, _pod_labels(w)) for w in workloads):
            problems.append(f"{p.label()}: selector {selector} matches no workload's pods")

    for h in (m for m in manifests if m.kind == "HorizontalPodAutoscaler"):
        ref = h.doc["spec"]["scaleTargetRef"]
        if _find(manifests, ref["kind"], ref["name"]) is None:
            problems.append(f"{h.label()}: scaleTargetRef {ref['kind']}/{ref['name']} does not exist")
        kinds = {metric["type"] for metric in h.doc["spec"].get("metrics", [])}
        if "Resource" not in kinds:
            problems.append(f"{h.label()}: no CPU (Resource) metric to fall back on")

    for secret in (m for m in manifests if m.kind == "Secret"):
        for key, value in (secret.doc.get("stringData") or {}).items():
            if "CHANGE-ME" not in str(value):
                problems.append(f"{secret.label()}: {key} is not a CHANGE-ME placeholder (no real secret in the repository)")
    return problems


def _check_key(manifests: list[Manifest], kind: str, name: str, key: str, where: str) -> list[str]:
    m = _find(manifests, kind, name)
    if m is None:
        return [f"{where}: {kind} {name} does not exist"]
    keys = set((m.doc.get("data") or {})) | set((m.doc.get("stringData") or {}))
    return [] if key in keys else [f"{where}: {kind} {name} has no key {key!r} (keys: {sorted(keys)})"]


def _check_gatehouse_container(manifests: list[Manifest], w: Manifest, container: dict, volumes: dict, where: str) -> list[str]:
    """Ports and probes of a `gatehouse auth|gateway` container against the configuration it runs with."""
    args = container.get("args", [])
    if not args or args[0] not in ("auth", "gateway"):
        return []
    found = gatehouse_container_config(manifests, w, container)
    if found is None:
        return [f"{where}: --config {args} is not a file of a mounted ConfigMap"]
    source, config = found
    problems: list[str] = []
    ports = {p.get("name"): int(p["containerPort"]) for p in container.get("ports", [])}
    if ports.get("http") != config.traffic_port:
        problems.append(f"{where}: containerPort http {ports.get('http')} but {source} listens on {config.traffic_port}")
    if config.admin_port is None:
        problems.append(f"{where}: {source} has no admin listener for the probes")
    elif ports.get("admin") != config.admin_port:
        problems.append(f"{where}: containerPort admin {ports.get('admin')} but {source} has admin port {config.admin_port}")
    for probe_name, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        http = (container.get(probe_name) or {}).get("httpGet", {})
        if http.get("path") != path or _probe_port(container, http.get("port")) != config.admin_port:
            problems.append(f"{where}: {probe_name} must be GET {path} on the admin port {config.admin_port}, is {http}")
    # Every {file: PATH} secret of the configuration is a file of a mounted Secret.
    for path in config.secret_files:
        if not _secret_mount_provides(container, volumes, manifests, path):
            problems.append(f"{where}: {source} reads {path}, which no mounted Secret provides")
    if config.kind == "auth" and w.doc["spec"].get("replicas", 1) > 1:
        # Replicas share their signing keys as files in the data directory (signing.key_directory inside it): it
        # must be one volume every replica mounts read-write, wherever it is scheduled.
        data_dir = args[args.index("--data-dir") + 1] if "--data-dir" in args else None
        mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"].rstrip("/") == (data_dir or "").rstrip("/")), None)
        volume = volumes.get(mount["name"], {}) if mount else {}
        claim = _find(manifests, "PersistentVolumeClaim", volume.get("persistentVolumeClaim", {}).get("claimName", ""))
        if claim is None or "ReadWriteMany" not in claim.doc["spec"].get("accessModes", []):
            problems.append(f"{where}: the data directory {data_dir} (signing keys) is not one ReadWriteMany claim shared by the replicas")
    if config.kind == "gateway":
        grace = _pod_spec(w).get("terminationGracePeriodSeconds", 30)
        pause = _pre_stop_seconds(container)
        if pause <= 0:
            problems.append(f"{where}: no preStop pause: the listeners would close before the endpoints are removed")
        if grace < pause + (config.drain_seconds or 0):
            problems.append(
                f"{where}: terminationGracePeriodSeconds {grace} < preStop {pause:g} s + drain_timeout {config.drain_seconds:g} s "
                f"({source}): requests still draining would be killed"
            )
    return problems


def _secret_mount_provides(container: dict, volumes: dict, manifests: list[Manifest], path: str) -> bool:
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        volume = volumes.get(mount["name"], {})
        if not path.startswith(prefix) or "secret" not in volume:
            continue
        file_name = path[len(prefix):]
        items = volume["secret"].get("items")
        if items:
            if any(i["path"] == file_name for i in items):
                return True
        elif _check_key(manifests, "Secret", volume["secret"]["secretName"], file_name, "") == []:
            return True
    return False


# --------------------------------------------------------------------------------------------------------------
# docker-compose
# --------------------------------------------------------------------------------------------------------------


@dataclass
class HAProxyBackend:
    name: str
    check_path: Optional[str]
    servers: list[tuple[str, str, int, Optional[int]]]  # (name, host, port, check port)


@dataclass
class HAProxyConfig:
    binds: list[int]
    cert_files: list[str]
    backends: dict[str, HAProxyBackend]


def parse_haproxy(text: str) -> HAProxyConfig:
    binds: list[int] = []
    certs: list[str] = []
    backends: dict[str, HAProxyBackend] = {}
    current: Optional[HAProxyBackend] = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] in ("global", "defaults", "frontend", "listen", "resolvers", "backend"):
            current = None
            if words[0] == "backend":
                current = backends.setdefault(words[1], HAProxyBackend(words[1], None, []))
            continue
        if words[0] == "bind":
            binds.append(int(words[1].rsplit(":", 1)[1]))
            if "crt" in words:
                certs.append(words[words.index("crt") + 1])
        elif current is not None and words[:2] == ["http-check", "send"] and "uri" in words:
            current.check_path = words[words.index("uri") + 1]
        elif current is not None and words[0] == "server":
            host, port = words[2].rsplit(":", 1)
            check_port = int(words[words.index("port") + 1]) if "port" in words else None
            current.servers.append((words[1], host, int(port), check_port))
    return HAProxyConfig(binds, certs, backends)


def load_compose(path: Path = COMPOSE_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def compose_server_config(service: dict, root: Path) -> Optional[ServerConfig]:
    """The Gatehouse configuration a compose service runs with (`--config` resolved through its bind mounts)."""
    command = service.get("command") or []
    if not isinstance(command, list) or "--config" not in command:
        return None
    host_path = compose_host_path(service, command[command.index("--config") + 1], root)
    return parse_server_config(host_path.read_text()) if host_path and host_path.is_file() else None


def compose_host_path(service: dict, container_path: str, root: Path) -> Optional[Path]:
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if len(parts) < 2 or not parts[0].startswith("."):
            continue
        source, target = parts[0], parts[1].rstrip("/")
        if container_path == target:
            return root / source
        if container_path.startswith(target + "/"):
            return root / source / container_path[len(target) + 1:]
    return None


def _healthcheck_url(service: dict) -> Optional[tuple[int, str]]:
    test = " ".join(service.get("healthcheck", {}).get("test", []))
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*)", test)
    return (int(match.group(1)), match.group(2)) if match else None


def check_compose(compose: dict, root: Path, haproxy: HAProxyConfig, prometheus: dict) -> list[str]:
    problems: list[str] = []
    services: dict = compose.get("services", {})
    declared_volumes = set((compose.get("volumes") or {}))
    declared_secrets = compose.get("secrets") or {}
    dependents: dict[str, list[str]] = {}
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            dependents.setdefault(dep, []).append((name, (spec or {}).get("condition")))

    configs: dict[str, ServerConfig] = {}
    key_volumes: dict[Optional[str], list[str]] = {}
    for name, service in services.items():
        where = f"docker-compose.yml: service {name}"
        # Health: every long-running service has one; a one-shot (restart "no") is waited on by its exit status.
        if service.get("restart") == "no":
            waiting = dependents.get(name, [])
            if not waiting or any(condition != "service_completed_successfully" for _, condition in waiting):
                problems.append(f"{where}: a one-shot must be waited on with condition service_completed_successfully (by {waiting})")
        elif not service.get("healthcheck", {}).get("test"):
            problems.append(f"{where}: no healthcheck")
        for dep, spec in (service.get("depends_on") or {}).items():
            condition = (spec or {}).get("condition")
            if dep not in services:
                problems.append(f"{where}: depends on unknown service {dep}")
            elif condition == "service_healthy" and not services[dep].get("healthcheck"):
                problems.append(f"{where}: waits for {dep} to be healthy, which has no healthcheck")
            elif condition not in ("service_healthy", "service_completed_successfully"):
                problems.append(f"{where}: depends on {dep} without condition service_healthy")
        for volume in service.get("volumes", []):
            parts = volume.split(":")
            if parts[0].startswith("."):
                if not (root / parts[0]).exists():
                    problems.append(f"{where}: mounts {parts[0]}, which does not exist")
                if parts[-1] != "ro":
                    problems.append(f"{where}: bind mount {parts[0]} is not read-only")
            elif parts[0] not in declared_volumes:
                problems.append(f"{where}: named volume {parts[0]} is not declared under volumes:")
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret.get("source")
            if source not in declared_secrets:
                problems.append(f"{where}: secret {source} is not declared under secrets:")
        config = compose_server_config(service, root)
        command = service.get("command") or []
        if isinstance(command, list) and command[:1] in (["auth"], ["gateway"], ["migrate"]) and config is None:
            problems.append(f"{where}: its --config file is not reachable through a bind mount")
        if config is None:
            continue
        provided = {f"/run/secrets/{s if isinstance(s, str) else s.get('target') or s.get('source')}" for s in service.get("secrets", [])}
        for path in config.secret_files:
            if path not in provided:
                problems.append(f"{where}: its configuration reads {path}, which is not one of its secrets")
        if command[0] == "auth":
            data_dir = command[command.index("--data-dir") + 1] if "--data-dir" in command else None
            volume = next((v.split(":")[0] for v in service.get("volumes", []) if v.split(":")[1] == data_dir), None)
            key_volumes.setdefault(volume, []).append(name)
            if volume is None or volume.startswith("."):
                problems.append(f"{where}: the data directory {data_dir} (signing keys) is not a named volume")
        if command[0] in ("auth", "gateway"):
            configs[name] = config
            health = _healthcheck_url(service)
            if health != (config.admin_port, "/readyz"):
                problems.append(f"{where}: healthcheck {health} is not /readyz on the admin port {config.admin_port}")
            if config.kind == "gateway":
                grace = duration_seconds(service.get("stop_grace_period", "10s"))
                if grace < (config.drain_seconds or 0):
                    problems.append(f"{where}: stop_grace_period {grace:g} s < drain_timeout {config.drain_seconds:g} s")

    if len(key_volumes) > 1:
        problems.append(f"docker-compose.yml: the authorization servers do not share one data directory (signing keys): {key_volumes}")

    # HAProxy: every server is a compose service; traffic and check ports are that service's configuration's.
    for backend in haproxy.backends.values():
        if backend.check_path != "/readyz":
            problems.append(f"haproxy.cfg backend {backend.name}: health check path {backend.check_path} is not /readyz")
        for server, host, port, check_port in backend.servers:
            config = configs.get(host)
            if config is None:
                problems.append(f"haproxy.cfg backend {backend.name}: server {server} -> {host}, no Gatehouse service of that name")
                continue
            if port != config.traffic_port or check_port != config.admin_port:
                problems.append(
                    f"haproxy.cfg backend {backend.name}: server {server} {host}:{port} check port {check_port}, but the service "
                    f"listens on {config.traffic_port} with admin {config.admin_port}"
                )
    lb = next((s for s in services.values() if "haproxy" in str(s.get("image", ""))), None)
    if lb is None:
        problems.append("docker-compose.yml: no HAProxy service")
    else:
        published = {int(str(p).rsplit(":", 1)[1]) for p in lb.get("ports", [])}
        for port in haproxy.binds:
            if port not in published:
                problems.append(f"haproxy.cfg binds :{port}, which the lb service does not publish")
        lb_secrets = {f"/run/secrets/{s if isinstance(s, str) else s['source']}" for s in lb.get("secrets", [])}
        for cert in haproxy.cert_files:
            if cert not in lb_secrets:
                problems.append(f"haproxy.cfg uses {cert}, which is not a secret of the lb service")
        aliases = set((lb.get("networks") or {}).get("default", {}).get("aliases", []))
        for name, config in configs.items():
            issuer = config.raw.get("issuer") or (config.raw.get("authorization_server") or {}).get("issuer")
            if issuer:
                host_port = issuer.split("://", 1)[1].split("/", 1)[0]
                host, _, port = host_port.partition(":")
                if host not in aliases or int(port or 443) not in haproxy.binds:
                    problems.append(f"service {name}: issuer {issuer} is not a name and port the load balancer answers at")
    # Prometheus scrapes every admin listener.
    targets = {t for job in prometheus.get("scrape_configs", []) for sc in job.get("static_configs", []) for t in sc.get("targets", [])}
    for name, config in configs.items():
        if f"{name}:{config.admin_port}" not in targets:
            problems.append(f"prometheus.yml: does not scrape {name}:{config.admin_port}")
    return problems
