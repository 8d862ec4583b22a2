"""docker-compose.yml wires the system the way the docs promise: Kafka and Redis private to the compose
network, only the API published (on the host's loopback), apps pointed at the compose service names,
and training/Feast setup finished before the worker and API start."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def test_services_present(services: dict[str, Any]) -> None:
    assert {"kafka", "redis", "init", "worker", "archiver", "learner", "api"} <= set(services)
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["redis"]["image"] == "redis:7-alpine"
    for name in ("init", "worker", "archiver", "learner", "api"):
        assert services[name].get("build") in (".", {"context": "."}), name


def test_kafka_is_single_node_kraft(services: dict[str, Any]) -> None:
    env = _env(services["kafka"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_kafka_and_redis_publish_no_ports(services: dict[str, Any]) -> None:
    for name in ("kafka", "redis", "init", "worker", "archiver", "learner"):
        assert "ports" not in services[name], f"{name} must not be reachable from the host"


def test_api_port_bound_to_loopback(services: dict[str, Any]) -> None:
    ports = services["api"]["ports"]
    assert ports == ["127.0.0.1:8000:8000"]


def test_apps_point_at_compose_services(services: dict[str, Any]) -> None:
    for name in ("init", "worker", "archiver", "api"):
        env = _env(services[name])
        assert env["STREAMREC_KAFKA_BOOTSTRAP"] == "kafka:9092", name
        assert env["STREAMREC_REDIS_URL"] == "redis://redis:6379/0", name
    assert _env(services["api"])["STREAMREC_API_HOST"] == "0.0.0.0"


def test_commands(services: dict[str, Any]) -> None:
    def text(cmd: str | list[str]) -> str:
        return cmd if isinstance(cmd, str) else " ".join(cmd)

    assert "streamrec train --no-apply && streamrec feast apply && streamrec feast materialize" in text(services["init"]["command"])
    assert text(services["worker"]["command"]) == "streamrec stream"
    assert text(services["api"]["command"]) == "streamrec serve"
    assert text(services["archiver"]["command"]) == "streamrec archive"
    assert text(services["learner"]["command"]) == "streamrec learn"


def test_start_order(services: dict[str, Any]) -> None:
    init = _depends(services["init"])
    assert init == {"kafka": "service_healthy", "redis": "service_healthy"}
    for name in ("worker", "api"):
        deps = _depends(services[name])
        assert deps["init"] == "service_completed_successfully", name
        assert deps["kafka"] == deps["redis"] == "service_healthy", name
    archiver = _depends(services["archiver"])
    assert archiver == {"kafka": "service_healthy", "init": "service_completed_successfully"}
    assert _env(services["archiver"])["STREAMREC_DATA_DIR"] == "/data"  # the volume Feast's registry points at
    learner = _depends(services["learner"])  # reads the archive, writes versions the API hot-swaps
    assert learner == {"archiver": "service_healthy", "redis": "service_healthy",
                       "init": "service_completed_successfully"}
    assert _env(services["learner"])["STREAMREC_DATA_DIR"] == "/data"


def test_healthchecks(services: dict[str, Any]) -> None:
    for name in ("kafka", "redis", "worker", "archiver", "learner", "api"):
        assert services[name]["healthcheck"]["test"], name


def test_dockerfile_installs_the_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "pip install" in text and " ." in text


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_validates() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("docker compose is not installed")
    done = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
