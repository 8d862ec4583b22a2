"""The Docker image starts, checked without a Docker engine: the build context Docker would send
(`.dockerignore` applied with Docker's own matching rules, from the `docker` SDK) is installed
non-editable into a fresh venv, as the Dockerfile does, and every compose service's command, read
from docker-compose.yml, runs from it against a real broker and Redis on loopback: init trains and
loads the online store, the worker applies a click, the API answers /health, /recommend and /ui."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from docker.utils.build import exclude_paths

from streamrec import feature_schema as s
from streamrec.artifacts import load_current
from infra import process, stack
from streamrec.settings import Settings
from tests.conftest import make_settings, read_session, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("init", "worker", "api")


def dockerignore_patterns(root: Path) -> list[str]:
    """.dockerignore lines the way docker-py reads them (docker/api/build.py): stripped, no blanks or comments."""
    path = root / ".dockerignore"
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#")]


def build_context(root: Path, dest: Path) -> Path:
    """Copy what Docker would send as the build context (and so what `COPY . .` copies) to dest."""
    kept = exclude_paths(str(root), dockerignore_patterns(root))
    for rel in sorted(kept):
        src = root / rel
        if src.is_dir() and not src.is_symlink():
            (dest / rel).mkdir(parents=True, exist_ok=True)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)
    return dest


def fresh_venv(path: Path) -> Path:
    """A venv that sees .venv's third-party packages (one site-packages line in a .pth) but not its
    editable streamrec: lines of a .pth are plain sys.path entries, so .venv's own .pth files (the
    `__editable__` finder among them) are not processed."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(site) / "project_venv_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The image's `pip install -r` puts the dependencies' console scripts on PATH; the .pth brings
    # their code only, so write the one the services run (`streamrec feast ...` calls `feast`).
    feast = path / "bin" / "feast"
    feast.write_text(f"#!{python}\nimport sys\nfrom feast.cli.cli import cli\nsys.exit(cli())\n")
    feast.chmod(0o755)
    return python


def clean_env(venv: Path) -> dict[str, str]:
    """A minimal environment: the fresh venv's bin first, nothing that would point Python at the repo."""
    return {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


def compose_services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` with the test's shell having none of them set."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def service_env(service: dict[str, Any], settings: Settings, ctx: Path) -> dict[str, str]:
    """The compose service's environment, with compose-network names and container paths mapped onto
    the test stack: Kafka/Redis on loopback, /data in tmp, /app/feature_repo in the copied context."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    env = {k: interpolate(str(v)) for k, v in env.items()}
    loopback = {
        "kafka:9092": settings.kafka_bootstrap,
        "redis://redis:6379/0": settings.redis_url,
        "0.0.0.0": "127.0.0.1",
        "/app/feature_repo": str(ctx / "feature_repo"),
        "/data": str(settings.data_dir),
        "http://worker:6066/metrics": f"http://127.0.0.1:{settings.worker_web_port}/metrics",
    }
    env = {k: loopback.get(v, v) for k, v in env.items()}
    leftovers = {k: v for k, v in env.items() if re.search(r"\b(kafka|redis|worker|api):\d+|^/data|^/app", v)}
    assert not leftovers, f"compose environment this test does not know how to map onto loopback: {leftovers}"
    # The test stack's own names (topics, consumer group, ports) the compose defaults would share.
    test_own = {k: v for k, v in settings.to_env().items() if k not in env}
    return {**test_own, **env}


def command(service: dict[str, Any], venv: Path) -> list[str]:
    cmd = service["command"]
    argv = cmd.split() if isinstance(cmd, str) else list(cmd)
    found = shutil.which(argv[0], path=str(venv / "bin")) or shutil.which(argv[0])
    assert found, f"{argv[0]} not found in the image's venv"
    return [found, *argv[1:]]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(context copy, venv) with the context installed as the Dockerfile installs it."""
    base = tmp_path_factory.mktemp("image")
    ctx = build_context(ROOT, base / "app")
    venv = base / "venv"
    python = fresh_venv(venv)
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--quiet",
                           "--disable-pip-version-check", str(ctx)],
                          capture_output=True, text=True, timeout=600, cwd=base, env=clean_env(venv))
    assert done.returncode == 0, f"pip install of the build context failed:\n{done.stdout}\n{done.stderr}"
    yield ctx, venv


def test_context_holds_every_package_and_leaves_tests_out(image: tuple[Path, Path]) -> None:
    ctx, _ = image
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in include:
        package = pattern.rstrip("*")
        assert (ctx / package / "__init__.py").exists(), \
            f"{package}/ (pyproject packages.find) is not in the Docker build context: check .dockerignore"
    for left_out in ("tests", ".git", ".venv", ".streamrec"):
        assert not (ctx / left_out).exists(), f"{left_out} should not be in the build context"


def test_packages_resolve_inside_the_fresh_venv(image: tuple[Path, Path], tmp_path: Path) -> None:
    ctx, venv = image
    probe = ("import json, bench, serving, streamrec, training, streaming, candidates, feature_repo;"
             "print(json.dumps({m.__name__: m.__file__ for m in (bench, serving, streamrec, training, streaming,"
             " candidates, feature_repo)}))")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=clean_env(venv))
    assert done.returncode == 0, f"the installed image cannot import its packages:\n{done.stderr}"
    for name, file in json.loads(done.stdout).items():
        assert Path(file).resolve().is_relative_to(venv.resolve()), f"{name} imported from {file}, not the image's venv"
    static = Path(json.loads(done.stdout)["serving"]).parent / "ui" / "static"
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in static.iterdir()}, "live page files not installed"


def test_every_compose_service_starts_from_the_image(image: tuple[Path, Path], tmp_path_factory, monkeypatch) -> None:
    ctx, venv = image
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        monkeypatch.delenv(name, raising=False)  # process.start_detached inherits os.environ
    services = compose_services()
    settings = make_settings(tmp_path_factory.mktemp("compose-data"))
    try:
        stack.up(settings)
        stack.ensure_topics(settings)

        # init: runs to completion, exit 0 (compose: service_completed_successfully).
        init_env = {**clean_env(venv), **service_env(services["init"], settings, ctx)}
        started = time.monotonic()
        done = subprocess.run(command(services["init"], venv), capture_output=True, text=True, timeout=600,
                              cwd=ctx, env=init_env)
        init_s = time.monotonic() - started
        assert done.returncode == 0, f"compose service init failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        print(f"init took {init_s:.0f}s")

        def start(name: str) -> int:
            env = {**clean_env(venv), **service_env(services[name], settings, ctx)}
            return process.start_detached(f"image-{name}", command(services[name], venv), settings, env=env, cwd=ctx)

        def alive(name: str) -> None:
            if process.is_running(f"image-{name}", settings) is None:
                raise AssertionError(f"compose service {name} died:\n{process.log_tail(f'image-{name}', settings, 60)}")

        # worker: applies a click to the online store.
        start("worker")
        item = int(load_current(settings.models_dir).item_ids[0])
        session_id = f"image-{uuid.uuid4().hex[:8]}"
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        producer.send(settings.clicks_topic, key=session_id.encode(),
                      value=json.dumps({"session_id": session_id, "item_id": item, "ts": time.time()}).encode())
        producer.flush(10)
        producer.close()

        def applied() -> bool:
            alive("worker")
            return (read_session(settings, session_id) or {}).get(s.CLICK_COUNT) == 1

        wait_for(applied, 120, "the image's worker to apply the click", interval_s=0.5)

        # api: /health, /recommend (with the click's session), /ui and its static files.
        start("api")
        base = f"http://127.0.0.1:{settings.api_port}"

        def healthy() -> bool:
            alive("api")
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 180, "the image's API to answer /health", interval_s=0.5)
        answer = httpx.post(f"{base}/recommend", json={"session_id": session_id, "k": 5}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"], answer.text
        page = httpx.get(f"{base}/ui", timeout=10, follow_redirects=True)
        assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:500]
        for asset in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text):
            got = httpx.get(httpx.URL(str(page.url)).join(asset), timeout=10)
            assert got.status_code == 200, f"/ui asset {asset}: {got.status_code}"
    finally:
        for name in ("api", "worker"):
            process.stop(f"image-{name}", settings)
        stack.down(settings)
