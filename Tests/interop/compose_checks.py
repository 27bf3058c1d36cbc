"""Offline consistency checks of docker-compose.yml against config/compose/*.yaml, config/haproxy/haproxy.cfg and
config/prometheus/prometheus.yml (the Kubernetes side and the shared parsing of Gatehouse configurations are in
deploy_checks.py). check_compose returns a list of problems; test_deploy_manifests.py asserts it is empty for the real
files and not for broken copies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from deploy_checks import REPO_ROOT, ServerConfig, check_demo_backend, check_pairing, demo_backend_options, duration_seconds, parse_server_config

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
HAPROXY_CONFIG = REPO_ROOT / "config" / "haproxy" / "haproxy.cfg"
PROMETHEUS_CONFIG = REPO_ROOT / "config" / "prometheus" / "prometheus.yml"


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

    for gateway_name, gateway in ((n, c) for n, c in configs.items() if c.kind == "gateway"):
        for auth_name, auth in ((n, c) for n, c in configs.items() if c.kind == "auth"):
            problems += check_pairing(auth, gateway, f"docker-compose.yml: {gateway_name} with {auth_name}")
    # The demo backend: its health check, its issuer and audience, its CA file (a secret or a bind-mounted file), and
    # the gateways' targets naming it.
    for name, service in services.items():
        command = service.get("command") or []
        options = demo_backend_options(command if isinstance(command, list) else [])
        if options is None:
            continue
        health = _healthcheck_url(service)
        secrets = {f"/run/secrets/{s if isinstance(s, str) else s.get('target') or s.get('source')}" for s in service.get("secrets", [])}

        def provided(path: str, service=service, secrets=secrets) -> bool:
            host = compose_host_path(service, path, root)
            return path in secrets or (host is not None and host.is_file())

        problems += check_demo_backend(
            options, f"docker-compose.yml: service {name}", [("healthcheck", *(health or (None, None)))],
            [c for c in configs.values() if c.kind == "auth"], [c for c in configs.values() if c.kind == "gateway"], name, provided,
        )
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
