#!/usr/bin/env python3
"""Checks docker-compose.yml without a Docker engine: what `docker compose up` needs, and that
nothing is published beyond this machine.

- the services redis, dashboard, producer and consumer exist;
- every published port is bound to a literal 127.0.0.1, and no service uses the host network;
- each build context exists, with its Dockerfile, the stage named by `target`, and a
  .dockerignore that keeps target/ and .git out;
- every `depends_on` names a service, and `service_healthy` only ones with a health check;
  dashboard, producer and consumer wait for a healthy redis;
- each Dockerfile is a multi-stage build;
- redis is a Redis 7 or newer image and keeps AOF on, its health check and a named volume on /data;
- the dashboard listens on 0.0.0.0 on the port it publishes, and has a health check;
- a REDIS_URL given to a service points at the redis service, not at the container itself.

Usage: .ci/check-compose.py [path/to/docker-compose.yml]   (needs PyYAML)
"""

import re
import shlex
import sys
from pathlib import Path

import yaml

REQUIRED_SERVICES = ("redis", "dashboard", "producer", "consumer")
NEEDS_HEALTHY_REDIS = ("dashboard", "producer", "consumer")
LOCAL_IP = "127.0.0.1"

errors = []


def fail(message):
    errors.append(message)


def interpolate(value):
    """Compose's variable syntax, resolved as if no variable were set (so the check does not
    depend on who runs it): ${VAR:-default} and ${VAR-default} give the default, ${VAR},
    ${VAR:+alt}, ${VAR:?error} and $VAR give "", and $$ is a literal $."""
    pattern = re.compile(r"\$(?:\$|\{[A-Za-z_]\w*(?::?([-+?])([^}]*))?\}|[A-Za-z_]\w*)")

    def replace(match):
        if match.group(0) == "$$":
            return "$"
        return match.group(2) if match.group(1) == "-" else ""

    return pattern.sub(replace, value)


def listify(value):
    """A command or a test in list or string form, as a list of words."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(word) for word in value]


def environment(service):
    """The service's environment as a dict (map or KEY=VALUE list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {key: value for key, value in pairs}
    return env


def published_ports(name, service):
    """Checks that every port binding is on 127.0.0.1; returns the container ports."""
    targets = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            local = str(port.get("host_ip", "")) == LOCAL_IP
            target = str(port.get("target", ""))
        else:
            # IP:HOST:CONTAINER[/PROTOCOL]; without the IP, docker binds every interface. The IP
            # must be written out: a variable could make it 0.0.0.0.
            spec = interpolate(str(port)).split("/", 1)[0]
            local = str(port).startswith(LOCAL_IP + ":") and spec.count(":") == 2
            target = spec.rsplit(":", 1)[-1]
        if not local:
            fail(
                f"services.{name}.ports: {port!r} is not bound to {LOCAL_IP}; write it as "
                f"\"{LOCAL_IP}:HOST:CONTAINER\" (or host_ip: {LOCAL_IP}) to keep it local"
            )
        targets.append(target)
    if service.get("network_mode") == "host":
        fail(f"services.{name}: network_mode host exposes every port it listens on; remove it")
    return targets


def dockerfile_stages(path):
    stages = set()
    for line in path.read_text().splitlines():
        match = re.match(r"\s*FROM\s+(?:--\S+\s+)*\S+\s+AS\s+(\S+)\s*$", line, re.IGNORECASE)
        if match:
            stages.add(match.group(1).lower())
    return stages


def check_build(name, service, base):
    build = service.get("build")
    if build is None:
        if not service.get("image"):
            fail(f"services.{name}: neither build nor image")
        return
    if isinstance(build, str):
        build = {"context": build}
    context = base / interpolate(str(build.get("context", ".")))
    if not context.is_dir():
        fail(f"services.{name}.build.context: {context} is not a directory")
        return
    if "dockerfile_inline" in build:
        return
    dockerfile = context / interpolate(str(build.get("dockerfile", "Dockerfile")))
    if not dockerfile.is_file():
        fail(f"services.{name}.build: no Dockerfile at {dockerfile}")
        return
    stages = dockerfile_stages(dockerfile)
    if len(stages) < 2:
        fail(f"services.{name}.build: {dockerfile} is not a multi-stage build (named FROM ... AS stages)")
    target = build.get("target")
    if target and str(target).lower() not in stages:
        fail(f"services.{name}.build.target: {dockerfile} has no stage `AS {target}`")
    ignore = context / ".dockerignore"
    if not ignore.is_file():
        fail(f"services.{name}.build: no .dockerignore in {context} (target/ and .git would be sent)")
    else:
        entries = {line.strip().strip("/") for line in ignore.read_text().splitlines()}
        for needed in ("target", ".git"):
            if needed not in entries:
                fail(f"{ignore}: add {needed}/ (it should not be part of the build context)")


def check_depends_on(name, service, services):
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        depends = {dep: {"condition": "service_started"} for dep in depends}
    for dep, spec in depends.items():
        if dep not in services:
            fail(f"services.{name}.depends_on: no service {dep!r}")
            continue
        condition = (spec or {}).get("condition", "service_started")
        if condition == "service_healthy" and "healthcheck" not in services[dep]:
            fail(f"services.{name}.depends_on.{dep}: service_healthy, but {dep} has no healthcheck")
    if name in NEEDS_HEALTHY_REDIS:
        condition = (depends.get("redis") or {}).get("condition")
        if condition != "service_healthy":
            fail(f"services.{name}.depends_on: needs redis with condition service_healthy")


def check_redis_url(name, service):
    url = environment(service).get("REDIS_URL")
    if url is None:
        return
    match = re.match(r"rediss?://(?:[^@/]*@)?(\[[^\]]*\]|[^:/?]+)", interpolate(str(url)))
    if match and match.group(1) in ("localhost", "127.0.0.1", "[::1]"):
        fail(
            f"services.{name}.environment.REDIS_URL: {match.group(1)} is the container itself; "
            "use the service name (redis://redis:6379)"
        )


def check_redis(service, volumes):
    image = interpolate(str(service.get("image", "")))
    match = re.match(r"(?:docker\.io/)?(?:library/)?redis:(\d+)", image)
    if not match or int(match.group(1)) < 7:
        fail(f"services.redis.image: {image!r} is not a Redis 7 or newer image (redis:7...)")
    command = [interpolate(word) for word in listify(service.get("command"))]
    if "--appendonly" not in command or command[command.index("--appendonly") + 1 :][:1] != ["yes"]:
        fail("services.redis.command: needs --appendonly yes")
    if "healthcheck" not in service:
        fail("services.redis: needs a healthcheck")
    mounts = [str(volume).split(":") for volume in service.get("volumes") or []]
    if not any(len(m) >= 2 and m[1] == "/data" and m[0] in volumes for m in mounts):
        fail("services.redis.volumes: needs a named volume (top-level volumes) on /data")


def check_dashboard(service, targets):
    command = [interpolate(word) for word in listify(service.get("command"))]
    listen = None
    for index, word in enumerate(command):
        if word == "--listen" and index + 1 < len(command):
            listen = command[index + 1]
        elif word.startswith("--listen="):
            listen = word.split("=", 1)[1]
    if listen is None:
        fail("services.dashboard.command: needs --listen 0.0.0.0:PORT")
    else:
        host, _, port = listen.rpartition(":")
        if host != "0.0.0.0":
            fail(
                f"services.dashboard.command: --listen {listen}: in a container it must listen "
                "on 0.0.0.0 (the 127.0.0.1 host binding keeps it local)"
            )
        if port not in targets:
            fail(f"services.dashboard: listens on port {port} but publishes {targets}")
    if "healthcheck" not in service:
        fail("services.dashboard: needs a healthcheck (on /health)")


def main():
    root = Path(__file__).resolve().parent.parent
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "docker-compose.yml"
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services") or {}
    for name in REQUIRED_SERVICES:
        if name not in services:
            fail(f"services: {name} is missing")
    targets = {}
    for name, service in services.items():
        targets[name] = published_ports(name, service)
        check_build(name, service, path.parent)
        check_depends_on(name, service, services)
        check_redis_url(name, service)
    if "redis" in services:
        check_redis(services["redis"], doc.get("volumes") or {})
    if "dashboard" in services:
        check_dashboard(services["dashboard"], targets["dashboard"])
    if errors:
        for error in dict.fromkeys(errors):  # services sharing a build context repeat some
            print(f"{path.name}: {error}", file=sys.stderr)
        return 1
    print(f"{path.name}: services {sorted(services)}; ports local only; builds, targets and "
          "dependencies consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
