"""`streamrec models list | promote | rollback | retire | route` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.models import models_app
from streamrec.model_registry import ModelRegistry, RoutingConfig
from streamrec.settings import get_settings
from tests.unit.test_model_registry import write_version


runner = CliRunner()


@pytest.fixture()
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    models = get_settings().models_dir
    for n, name in enumerate(("v1", "v2", "v3")):
        write_version(models, name, hr=0.4 + n / 10, trained_at=f"2026-01-0{n + 1}T00:00:00+00:00")
    registry = ModelRegistry(models)
    registry.promote("v1")
    yield registry
    get_settings.cache_clear()


def models(*args: str):
    return runner.invoke(models_app, list(args))


def test_list_json_shows_every_version_with_status_and_report(registry: ModelRegistry) -> None:
    experiment = registry.set_routing(RoutingConfig("shadow", ("v3",))).experiment
    result = models("list", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout.strip().splitlines()[-1])
    assert listed["champion"] == "v1" and listed["routing"] == {
        "policy": "shadow", "arms": ["v3"], "weights": None, "experiment": experiment}
    assert [(v["version"], v["status"], v["hr_at_20"]) for v in listed["versions"]] == [
        ("v1", "champion", 0.4), ("v2", "candidate", 0.5), ("v3", "arm", pytest.approx(0.6))]
    assert listed["versions"][0]["training_s"] == 12.5 and listed["versions"][0]["data_first"]


def test_list_prints_a_table(registry: ModelRegistry) -> None:
    result = models("list")
    assert result.exit_code == 0, result.output
    for text in ("v1", "champion", "candidate", "HR@20", "MRR@20", "0.50", "12s"):
        assert text in result.output


def test_promote_rollback_retire_route_change_the_registry(registry: ModelRegistry) -> None:
    assert models("promote", "v2").exit_code == 0
    assert registry.champion() == "v2"
    assert models("rollback").exit_code == 0
    assert registry.champion() == "v1"
    result = models("route", "ab", "--arm", "v2", "--weight", "3", "--weight", "1")
    assert result.exit_code == 0, result.output
    assert registry.routing().without_experiment() == RoutingConfig("ab", ("v2",), (3.0, 1.0))
    assert models("route", "single").exit_code == 0
    assert models("retire", "v3").exit_code == 0 and registry.is_retired("v3")


@pytest.mark.parametrize(("args", "message"), [
    (("promote", "v9"), "unknown model version 'v9'"),
    (("retire", "v1"), "champion and cannot be retired"),
    (("rollback",), "no previous champion"),
    (("route", "ab"), "at least one arm"),
    (("route", "shadow", "--arm", "v2", "--arm", "v3"), "exactly one arm"),
    (("route", "ab", "--arm", "v1"), "is the champion"),
    (("route", "roulette", "--arm", "v2"), "unknown routing policy"),
])
def test_refusals_exit_2_with_one_line_saying_why(registry: ModelRegistry, args: tuple, message: str) -> None:
    result = models(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert registry.champion() == "v1" and registry.routing().without_experiment() == RoutingConfig()


def test_baseline_writes_a_popularity_version_beside_the_champion(registry: ModelRegistry) -> None:
    result = models("baseline")
    assert result.exit_code == 0, result.output
    meta = json.loads((registry.models_dir / "v1-popularity" / "meta.json").read_text())
    assert (meta["version"], meta["scorer"], meta["baseline_of"]) == ("v1-popularity", "popularity", "v1")
    assert "v1-popularity" in [v.version for v in registry.versions()]
    assert models("baseline").exit_code == 2  # versions are immutable: not written twice
