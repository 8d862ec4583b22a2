"""The model registry: champion, promotions and rollbacks (HISTORY), retirement, routing validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from streamrec.artifacts import CURRENT, META, RANKER_META, current_version, set_current_version
from streamrec.model_registry import HISTORY, ROUTING, ModelRegistry, RegistryError, RoutingConfig



def write_version(models: Path, version: str, *, hr: float | None = 0.5, complete: bool = True,
                  trained_at: str = "2026-01-01T00:00:00+00:00") -> None:
    folder = models / version
    folder.mkdir(parents=True)
    meta = {"version": version, "dataset_name": "synthetic", "trained_at": trained_at,
            "data_window": {"first": "2025-12-01T00:00:00+00:00", "last": "2025-12-08T00:00:00+00:00",
                            "synthetic_clock": False},
            "timings_s": {"load": 1.0, **({"total": 12.5} if complete else {})}}
    (folder / META).write_text(json.dumps(meta))
    if hr is not None:
        (folder / RANKER_META).write_text(json.dumps({"valid": {"HR@20": hr, "MRR@20": hr / 3}}))


@pytest.fixture()
def registry(tmp_path: Path) -> ModelRegistry:
    models = tmp_path / "models"
    for n, name in enumerate(("v1", "v2", "v3", "v4")):
        write_version(models, name, trained_at=f"2026-01-0{n + 1}T00:00:00+00:00")
    registry = ModelRegistry(models)
    registry.promote("v1")
    return registry


def test_promote_moves_current_and_records_the_history(registry: ModelRegistry) -> None:
    assert registry.promote("v2") == "v1"
    assert current_version(registry.models_dir) == "v2" == registry.champion()
    assert [(e["version"], e["action"], e["previous"]) for e in registry.history()] == [
        ("v1", "promote", None), ("v2", "promote", "v1")]


def test_rollback_returns_to_each_previous_champion_in_turn(registry: ModelRegistry) -> None:
    registry.promote("v2")
    registry.promote("v3")
    assert registry.rollback() == "v2"
    assert registry.champion() == "v2"
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()
    assert registry.champion() == "v1"


def test_rollback_after_a_promotion_of_an_earlier_champion(registry: ModelRegistry) -> None:
    registry.promote("v2")
    registry.promote("v1")  # back by hand
    assert registry.rollback() == "v2"


def test_rollback_from_a_champion_set_outside_the_registry_returns_to_the_recorded_one(registry: ModelRegistry) -> None:
    set_current_version(registry.models_dir, "v3")  # e.g. an older `streamrec train`
    assert registry.rollback() == "v1"


def test_promote_refuses_unknown_retired_and_incomplete_versions(registry: ModelRegistry) -> None:
    write_version(registry.models_dir, "half", complete=False)
    registry.retire("v4")
    for version, message in (("nope", "unknown model version"), ("v4", "retired"), ("half", "incomplete"),
                             ("../v1", "unknown model version")):
        with pytest.raises(RegistryError, match=message):
            registry.promote(version)
    assert registry.champion() == "v1"


def test_the_champion_cannot_be_retired_and_a_retired_version_is_marked(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="champion"):
        registry.retire("v1")
    registry.retire("v2")
    assert registry.is_retired("v2")
    assert {v.version: v.status for v in registry.versions()}["v2"] == "retired"


def test_rollback_refuses_a_retired_previous_champion(registry: ModelRegistry) -> None:
    registry.promote("v2")
    registry.promote("v3")
    registry.promote("v2")
    registry.retire("v3")
    with pytest.raises(RegistryError, match="retired"):
        registry.rollback()
    assert registry.champion() == "v2"


def test_routing_defaults_to_single_and_round_trips(registry: ModelRegistry) -> None:
    assert registry.routing().without_experiment() == RoutingConfig("single", (), None)
    config = RoutingConfig("ab", ("v2", "v3"), (2.0, 1.0, 1.0))
    stored = registry.set_routing(config)
    assert registry.routing() == stored and stored.without_experiment() == config
    assert config.shares == (0.5, 0.25, 0.25)
    assert RoutingConfig("ab", ("v2",)).shares == (0.5, 0.5)


@pytest.mark.parametrize(("config", "message"), [
    (dict(policy="single", arms=("v2",)), "takes no arms"),
    (dict(policy="ab"), "at least one arm"),
    (dict(policy="bandit"), "at least one arm"),
    (dict(policy="shadow", arms=("v2", "v3")), "exactly one arm"),
    (dict(policy="greedy", arms=("v2",)), "unknown routing policy"),
    (dict(policy="ab", arms=("v2",), weights=(1.0,)), "one weight per version"),
    (dict(policy="ab", arms=("v2",), weights=(1.0, 0.0)), "> 0"),
    (dict(policy="bandit", arms=("v2",), weights=(1.0, 1.0)), "ab policy only"),
    (dict(policy="ab", arms=("v2", "v2")), "named twice"),
])
def test_routing_configs_that_make_no_sense_are_refused(config: dict, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        RoutingConfig(**config)


def test_routing_arms_must_exist_be_unretired_and_not_the_champion(registry: ModelRegistry) -> None:
    registry.retire("v4")
    for arm, message in (("nope", "unknown"), ("v4", "retired"), ("v1", "champion")):
        with pytest.raises(RegistryError, match=message):
            registry.set_routing(RoutingConfig("ab", (arm,)))
    assert not (registry.models_dir / ROUTING).exists()


def test_an_arm_cannot_be_retired_and_promoting_an_arm_takes_it_out_of_the_arms(registry: ModelRegistry) -> None:
    registry.set_routing(RoutingConfig("ab", ("v2", "v3"), (1.0, 2.0, 3.0)))
    with pytest.raises(RegistryError, match="arm"):
        registry.retire("v2")
    registry.promote("v2")
    assert registry.routing().without_experiment() == RoutingConfig("ab", ("v3",), (1.0, 3.0))
    registry.promote("v3")
    assert registry.routing().without_experiment() == RoutingConfig()


def test_versions_carry_status_and_offline_report(registry: ModelRegistry) -> None:
    write_version(registry.models_dir, "v5", hr=None, trained_at="2026-01-09T00:00:00+00:00")
    registry.set_routing(RoutingConfig("shadow", ("v3",)))
    infos = {v.version: v for v in registry.versions()}
    assert [v.version for v in registry.versions()] == ["v1", "v2", "v3", "v4", "v5"]
    assert {name: info.status for name, info in infos.items()} == {
        "v1": "champion", "v2": "candidate", "v3": "arm", "v4": "candidate", "v5": "candidate"}
    v1 = infos["v1"]
    assert (v1.hr_at_20, v1.dataset, v1.training_s) == (0.5, "synthetic", 12.5)
    assert (v1.data_first, v1.data_last) == ("2025-12-01T00:00:00+00:00", "2025-12-08T00:00:00+00:00")
    assert infos["v5"].hr_at_20 is None and infos["v5"].mrr_at_20 is None
    assert json.loads(json.dumps(v1.to_dict()))["mrr_at_20"] == pytest.approx(0.5 / 3)


def test_fingerprint_changes_with_the_champion_and_the_routing_only(registry: ModelRegistry) -> None:
    before = registry.fingerprint()
    assert registry.fingerprint() == before
    registry.retire("v4")
    assert registry.fingerprint() == before  # not something the API serves differently
    registry.promote("v2")
    promoted = registry.fingerprint()
    assert promoted != before
    registry.set_routing(RoutingConfig("ab", ("v3",)))
    assert registry.fingerprint() != promoted


def test_writes_replace_files_whole_and_leave_no_temporary_files(registry: ModelRegistry, monkeypatch) -> None:
    replaced: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append(Path(dst).name), real_replace(src, dst)))
    registry.set_routing(RoutingConfig("ab", ("v3",)))
    registry.promote("v2")
    registry.retire("v4")
    assert replaced == [ROUTING, CURRENT, "RETIRED"]
    assert not [p for p in registry.models_dir.rglob("*.tmp")]
    assert (registry.models_dir / HISTORY).read_text().count("\n") == 2


def test_every_routing_change_starts_a_new_experiment(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.routing().experiment == "default"
    first = registry.set_routing(RoutingConfig("single"))
    second = registry.set_routing(RoutingConfig("single"))
    assert first.experiment.startswith("single-") and first.experiment != second.experiment
    assert registry.routing() == second
