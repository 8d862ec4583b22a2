"""The optional `monitoring` compose profile, checked without a Docker engine: Prometheus' config and
every dashboard query pass promtool, every metric and label a query names is one the API or the
worker defines, and compose wires Prometheus and Grafana to the services, ports and files that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import serving.metrics
import streaming.metrics
from streamrec.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
MONITORING = ROOT / "infra" / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "streamrec.json"
DATASOURCE = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER = MONITORING / "grafana" / "provisioning" / "dashboards" / "streamrec.yml"
PROMTOOL = shutil.which("promtool") or ""
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool is not installed (Debian: prometheus)")

# Series Prometheus makes itself for each target, not defined by streamrec.
PROMETHEUS_OWN = {"up": {"job", "instance"}}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "or", "and", "unless",
                "bool", "offset",
                # aggregation operators, which may stand before `by (...)` rather than their "("
                "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk",
                "quantile", "count_values"}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load(PROMETHEUS_YML.read_text())


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a service: container path -> repo-relative source ("./..." short syntax)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            out[target] = source
    return out


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return exprs


def as_promql(expr: str) -> str:
    """Grafana's interval variables replaced by a plain duration, so promtool can parse the query."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "20s", expr)
    assert "$" not in expr, f"dashboard variable promtool cannot resolve: {expr}"
    return expr


def defined_series() -> dict[str, set[str]]:
    """Every series name the API's and the worker's metrics expose (with the _total / _bucket / _count /
    _sum suffixes prometheus_client adds), mapped to the label names it carries."""
    import prometheus_client.metrics  # noqa: F401 - the registry is filled by serving/streaming.metrics

    labels_of: dict[str, set[str]] = {}
    for module in (serving.metrics, streaming.metrics):
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                labels_of[metric._name] = set(metric._labelnames)  # noqa: SLF001 - no public accessor
    series: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        if family.name not in labels_of:
            continue  # process_*, python_gc_*: not ours
        labels = labels_of[family.name]
        if family.type == "counter":
            series[f"{family.name}_total"] = labels
        elif family.type == "histogram":
            series[f"{family.name}_bucket"] = labels | {"le"}
            series[f"{family.name}_count"] = series[f"{family.name}_sum"] = labels
        else:
            series[family.name] = labels
    return series


def names_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """(series names, label names) a PromQL expression uses: names are the identifiers that are not
    functions, keywords or label names; labels are those in {matchers} and by/on/ignoring/... lists."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals hold no names
    labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", bare))
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", bare):
        labels |= {name.strip() for name in group.split(",") if name.strip()}
    no_matchers = re.sub(r"\{[^}]*\}", "", bare)
    no_groups = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", no_matchers)
    no_ranges = re.sub(r"\[[^\]]*\]", "", no_groups)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", no_ranges):
        word = match.group()
        is_call = no_ranges[match.end():].lstrip().startswith("(")
        if word not in PROMQL_WORDS and not is_call and not re.fullmatch(r"\d.*", word):
            names.add(word)
    return names, labels


# --- Prometheus ----------------------------------------------------------------------------------

@needs_promtool
def test_prometheus_config_passes_promtool(prometheus_config: dict[str, Any], tmp_path: Path) -> None:
    """promtool wants the credentials file to exist: a copy of the config points at a temp one."""
    config = json.loads(json.dumps(prometheus_config))
    for job in config["scrape_configs"]:
        if "authorization" in job and "credentials_file" in job["authorization"]:
            key = tmp_path / f"{job['job_name']}.key"
            key.write_text("")
            job["authorization"]["credentials_file"] = str(key)
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    done = subprocess.run([PROMTOOL, "check", "config", str(copy)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_the_api_the_worker_the_archiver_and_the_learner_every_5s(prometheus_config: dict[str, Any],
                                                                        services: dict[str, Any]) -> None:
    assert prometheus_config["global"]["scrape_interval"] == "5s"
    targets = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
               for job in prometheus_config["scrape_configs"]}
    defaults = Settings.model_fields
    api_port = defaults["api_port"].default
    worker_port = defaults["worker_web_port"].default
    archiver_port = int(services["archiver"]["environment"]["STREAMREC_ARCHIVE_METRICS_PORT"])
    learner_port = int(services["learner"]["environment"]["STREAMREC_LEARN_METRICS_PORT"])
    assert targets == {"streamrec-api": [f"api:{api_port}"], "streamrec-worker": [f"worker:{worker_port}"],
                       "streamrec-archiver": [f"archiver:{archiver_port}"],
                       "streamrec-learner": [f"learner:{learner_port}"]}
    for target in (t for ts in targets.values() for t in ts):
        assert target.split(":")[0] in services, f"{target}: no such compose service"
    # The API listens on api_port inside its container (the published port maps onto it).
    assert services["api"]["ports"] == [f"127.0.0.1:{api_port}:{api_port}"]
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in prometheus_config["scrape_configs"])


def test_api_scrape_sends_the_key_the_prometheus_service_writes(prometheus_config: dict[str, Any],
                                                               services: dict[str, Any]) -> None:
    """/metrics needs the API key when one is set: Prometheus sends it as a Bearer token read from the
    file the service's entrypoint writes from STREAMREC_API_KEY (never a key in the repo)."""
    api_job = next(job for job in prometheus_config["scrape_configs"] if job["job_name"] == "streamrec-api")
    auth = api_job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer" and "credentials" not in auth
    prometheus = services["prometheus"]
    script = " ".join(prometheus["command"]) if isinstance(prometheus["command"], list) else prometheus["command"]
    assert prometheus["entrypoint"] == ["/bin/sh", "-c"]
    assert f'"$$STREAMREC_API_KEY" > {auth["credentials_file"]}' in script, script
    assert "exec /bin/prometheus --config.file=/etc/prometheus/prometheus.yml" in script
    assert _env(prometheus)["STREAMREC_API_KEY"] == _env(services["api"])["STREAMREC_API_KEY"]


# --- dashboard -----------------------------------------------------------------------------------

@needs_promtool
def test_every_dashboard_query_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each query as a recording rule: `promtool check rules` parses them with Prometheus' own parser."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": as_promql(expr)} for n, expr in enumerate(dashboard_exprs(dashboard))
    ]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_uses_only_metrics_and_labels_streamrec_defines(dashboard: dict[str, Any]) -> None:
    series = defined_series()
    assert "streamrec_recommend_seconds_bucket" in series and "streamrec_worker_consumer_lag" in series
    for expr in dashboard_exprs(dashboard):
        names, labels = names_and_labels(expr)
        assert names, f"no metric in {expr}"
        for name in names:
            assert name in series or name in PROMETHEUS_OWN, f"{name} (in {expr}) is not a streamrec metric"
        allowed = TARGET_LABELS.union(*(series.get(n) or PROMETHEUS_OWN[n] for n in names))
        assert labels <= allowed, f"labels {labels - allowed} in {expr} are not on {sorted(names)}"


def test_dashboard_covers_the_operations_view(dashboard: dict[str, Any]) -> None:
    """The figures of GET /ops/summary, each with the metric behind it."""
    exprs = " ".join(dashboard_exprs(dashboard))
    for needle in ('streamrec_worker_events_total{outcome="applied"}', "sum by (topic) (streamrec_worker_consumer_lag)",
                   "streamrec_worker_freshness_seconds_bucket", "streamrec_recommend_seconds_bucket",
                   "streamrec_recommend_degraded_total", "streamrec_recommend_seconds_count",
                   'streamrec_worker_events_total{outcome="dead_lettered"}', "streamrec_dependency_up"):
        assert needle in exprs, needle
    assert all(panel["type"] == "timeseries" for panel in dashboard["panels"])


def test_grafana_reads_the_provisioned_datasource_and_dashboards(dashboard: dict[str, Any],
                                                                services: dict[str, Any]) -> None:
    datasource = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]
    assert datasource["uid"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    uids |= {t["datasource"]["uid"] for panel in dashboard["panels"] for t in panel["targets"]}
    assert uids == {datasource["uid"]}
    provider = yaml.safe_load(DASHBOARD_PROVIDER.read_text())["providers"][0]
    mounts = _mounts(services["grafana"])
    assert mounts[provider["options"]["path"]] == "./infra/monitoring/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./infra/monitoring/grafana/provisioning"


# --- compose -------------------------------------------------------------------------------------

def test_monitoring_services_only_in_their_profile(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name in ("prometheus", "grafana"):
            assert service["profiles"] == ["monitoring"], name
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", service["image"]), f"{name}: pin the image tag"
            assert service["restart"] == "unless-stopped", name
        else:
            assert "profiles" not in service, f"{name} must start with a plain `docker compose up`"


def test_monitoring_ports_on_loopback_only(services: dict[str, Any]) -> None:
    assert services["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]
    assert services["grafana"]["ports"] == ["127.0.0.1:3000:3000"]


def test_mounted_config_exists_and_is_read_only(services: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        binds = [v for v in services[name]["volumes"] if v.startswith("./")]
        assert binds, name
        for volume in binds:
            source, _, mode = volume.split(":")
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
            assert mode == "ro", volume
    assert _mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"] == "./infra/monitoring/prometheus/prometheus.yml"


def test_worker_metrics_reachable_on_the_compose_network(services: dict[str, Any]) -> None:
    worker, api = _env(services["worker"]), _env(services["api"])
    assert worker["STREAMREC_WORKER_WEB_HOST"] == "0.0.0.0"
    assert "ports" not in services["worker"], "the worker's /metrics must not be published on the host"
    assert api["STREAMREC_WORKER_METRICS_URL"] == f"http://worker:{Settings.model_fields['worker_web_port'].default}/metrics"
    # The services' own environment maps keep the shared settings (a service map replaces the anchor's).
    for env in (worker, api):
        assert env["STREAMREC_KAFKA_BOOTSTRAP"] == "kafka:9092" and env["STREAMREC_API_KEY"] == "${STREAMREC_API_KEY:-}"
