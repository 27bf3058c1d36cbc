"""Offline consistency checks of the deployment files: deploy/kubernetes here, docker-compose.yml (+ config/compose,
config/haproxy, config/prometheus) in compose_checks.py. Each check_* function takes parsed data and returns a list of problems
(strings naming the file, the object and what is wrong); test_deploy_manifests.py asserts the list is empty for the
real files and non-empty for broken copies. Nothing here starts a process: test_deploy_probes.py requests the probes from
the real binary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"

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

    gatehouse = [
        found for w in workloads for c in _pod_spec(w).get("containers", [])
        if (found := gatehouse_container_config(manifests, w, c)) is not None
    ]
    auths = [(source, config) for source, config in gatehouse if config.kind == "auth"]
    for source, config in (g for g in gatehouse if g[1].kind == "gateway"):
        for auth_source, auth in auths:
            problems += check_pairing(auth, config, f"{source} with {auth_source}")

    # The demo backend: its probes, its issuer and audience, its CA file, and the Service the gateways target.
    for w in workloads:
        spec = _pod_spec(w)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("containers", []):
            options = demo_backend_options(c.get("args", []))
            if options is None:
                continue
            probes = [(name, _probe_port(c, c[name]["httpGet"]["port"]), c[name]["httpGet"].get("path"))
                      for name in ("readinessProbe", "livenessProbe", "startupProbe") if "httpGet" in c.get(name, {})]
            services = [s.name for s in manifests if s.kind == "Service" and _selects(s.doc["spec"].get("selector", {}), _pod_labels(w))]
            problems += check_demo_backend(
                options, f"{w.label()} container {c['name']}", probes, [a for _, a in auths],
                [g for _, g in gatehouse if g.kind == "gateway"], services[0] if services else w.name,
                lambda path, c=c, volumes=volumes: _secret_mount_provides(c, volumes, manifests, path),
            )

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


def find_workload(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m.kind == kind and m.name == name]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
    return found[0]


def find_container(manifest: Manifest, name: str) -> dict:
    return next(c for c in _pod_spec(manifest)["containers"] if c["name"] == name)


def check_pairing(auth: ServerConfig, gateway: ServerConfig, where: str) -> list[str]:
    """A gateway configuration against the authorization server configuration it is deployed with: the issuer it
    discovers is the server's, its client is one of the server's clients allowed to exchange tokens, both read that
    client's secret from the same secret (file name), and the routes accept the audience of the JWTs it gets."""
    problems: list[str] = []
    settings = gateway.raw.get("authorization_server") or {}
    if settings.get("issuer") != auth.raw.get("issuer"):
        problems.append(f"{where}: the gateway discovers {settings.get('issuer')}, the authorization server is {auth.raw.get('issuer')}")
    client = next((c for c in auth.raw.get("clients", []) if c.get("id") == settings.get("client_id")), None)
    if client is None:
        problems.append(f"{where}: the gateway's client {settings.get('client_id')} is not a client of the authorization server")
    else:
        if "urn:ietf:params:oauth:grant-type:token-exchange" not in client.get("grants", []):
            problems.append(f"{where}: client {client['id']} may not exchange tokens")
        ours, theirs = settings.get("client_secret"), client.get("secret")
        if not (isinstance(ours, dict) and isinstance(theirs, dict) and Path(str(ours.get("file"))).name == Path(str(theirs.get("file"))).name):
            problems.append(f"{where}: the gateway's client secret {ours} and the authorization server's {theirs} are not the same secret")
    audience = (auth.raw.get("tokens") or {}).get("jwt_audience")
    for route in gateway.raw.get("routes", []):
        audiences = (route.get("auth") or {}).get("audiences")
        if audiences and audience not in audiences:
            problems.append(f"{where}: route {route.get('name')} accepts {audiences}, the exchanged JWTs are for {audience}")
    return problems


# --------------------------------------------------------------------------------------------------------------
# the demo backend (`gatehouse demo-backend`), in compose and in Kubernetes
# --------------------------------------------------------------------------------------------------------------

DEMO_BACKEND_SOURCE = REPO_ROOT / "Sources" / "GatehouseDemoBackend" / "DemoBackend.swift"
DEMO_BACKEND_COMMAND = REPO_ROOT / "Sources" / "gatehouse" / "DemoBackendCommand.swift"
LOGGING_OPTIONS = REPO_ROOT / "Sources" / "gatehouse" / "Gatehouse.swift"  # `LoggingOptions`, shared by every command


def demo_backend_token_free_paths() -> set[str]:
    """The paths the demo backend answers without a token, read from its source: the router's literal GET routes that
    its echo middleware lets through (`request.uri.path == "..."`). A probe must use one of these."""
    text = DEMO_BACKEND_SOURCE.read_text()
    routes = set(re.findall(r'router\.get\("(/[^"]*)"\)', text))
    exempt = set(re.findall(r'request\.uri\.path == "(/[^"]*)"', text))
    return routes & exempt


def demo_backend_options(args: list[str]) -> Optional[dict[str, str]]:
    """`demo-backend --name value ...` as {name: value} (defaults filled from DemoBackendCommand.swift's `var x: T =
    default` declarations); None when the arguments run another command."""
    if not args or args[0] != "demo-backend":
        return None
    text = DEMO_BACKEND_COMMAND.read_text() + LOGGING_OPTIONS.read_text()

    def kebab(name: str) -> str:
        return re.sub(r"([A-Z])", lambda m: "-" + m.group(1).lower(), name)

    options: dict[str, str] = {}
    known: set[str] = set()
    for name, _, default in re.findall(r"\bvar (\w+): [\w\[\]]+\??( = (\S+))?\n", text):
        known.add(kebab(name))
        if default and not default.startswith("["):
            options[kebab(name)] = default.strip('"')
    index = 1
    while index < len(args):
        word = args[index]
        if not word.startswith("--") or word[2:] not in known or index + 1 >= len(args):
            options.setdefault("?unknown", " ".join(args[index:index + 2]))
            index += 1
            continue
        options[word[2:]] = args[index + 1]
        index += 2
    return options


def check_demo_backend(options: dict[str, str], where: str, health: list[tuple[str, Optional[int], Optional[str]]],
                       auths: list[ServerConfig], gateways: list[ServerConfig], service_host: str,
                       file_provided) -> list[str]:
    """A `gatehouse demo-backend` container against what it is deployed with: every health check or probe requests a
    path the backend answers without a token, on the port it listens on (--port); the issuer and audience it verifies
    JWTs for are the authorization server's issuer and `tokens.jwt_audience`; a --ca-file is a file the container
    has (`file_provided(path)`) and only used with an https issuer; the gateways' targets naming `service_host` use its
    port."""
    problems: list[str] = []
    if "?unknown" in options:
        problems.append(f"{where}: unknown or incomplete option {options['?unknown']!r} (DemoBackendCommand.swift)")
    port = int(options.get("port") or 0)
    paths = demo_backend_token_free_paths()
    for what, probe_port, path in health:
        if probe_port != port or path not in paths:
            problems.append(f"{where}: {what} requests {path} on port {probe_port}; the backend listens on {port} and answers "
                            f"{sorted(paths)} without a token")
    for auth in auths:
        if options.get("issuer") != auth.raw.get("issuer"):
            problems.append(f"{where}: --issuer {options.get('issuer')}, the authorization server's issuer is {auth.raw.get('issuer')}")
        audience = (auth.raw.get("tokens") or {}).get("jwt_audience")
        if options.get("audience") != audience:
            problems.append(f"{where}: --audience {options.get('audience')}, the exchanged JWTs are for {audience}")
    ca_file = options.get("ca-file")
    if ca_file:
        if not str(options.get("issuer", "")).startswith("https://"):
            problems.append(f"{where}: --ca-file with an issuer that is not https")
        if not file_provided(ca_file):
            problems.append(f"{where}: --ca-file {ca_file} is not a file the container has")
    for gateway in gateways:
        for cluster in gateway.raw.get("clusters", []):
            for target in cluster.get("targets", []):
                host_port = str(target).split("://", 1)[-1].split("/", 1)[0]
                host, _, target_port = host_port.partition(":")
                if host == service_host and int(target_port or 80) != port:
                    problems.append(f"{where}: the gateway's cluster {cluster.get('name')} targets {target}, the backend listens on {port}")
    return problems
