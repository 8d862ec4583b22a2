"""Model versions on the live stack: `streamrec train --no-promote` writes a version beside the
champion; `streamrec models promote` and `rollback` swap the running API's answers within a few
poll intervals, without a restart; `models list --json` shows both versions with their reports."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.schemas import Health
from streamrec.model_registry import ModelRegistry
from streamrec.settings import Settings
from tests.conftest import CLI, wait_for
from tests.integration.test_cli_commands import srgnn_folder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def streamrec(settings: Settings, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([*CLI, *args], env={**os.environ, **settings.to_env()}, capture_output=True, text=True,
                          timeout=timeout_s)
    assert done.returncode == 0, f"streamrec {' '.join(args)}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def answered_by(api: str) -> str:
    response = httpx.post(f"{api}/recommend", json={"session_id": f"mv-{uuid.uuid4().hex[:8]}", "k": 10}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


@pytest.fixture()
def restore_champion(live_settings: Settings) -> Iterator[ModelRegistry]:
    """The session's API and models folder are shared: whatever happens, the champion goes back."""
    registry = ModelRegistry(live_settings.models_dir)
    original = registry.champion()
    yield registry
    if registry.champion() != original:
        registry.promote(original)


def test_promote_and_rollback_swap_the_running_api_without_a_restart(
        live_settings: Settings, api: str, restore_champion: ModelRegistry, tmp_path: Path) -> None:
    registry = restore_champion
    champion = registry.champion()
    trained = streamrec(live_settings, "train", "--dataset", str(srgnn_folder(tmp_path / "data")), "--no-promote")
    assert "streamrec models promote" in trained.stderr
    assert registry.champion() == champion
    new = next(v.version for v in registry.versions() if v.version != champion and v.status == "candidate"
               and v.dataset == "data")
    assert answered_by(api) == champion

    poll_s = live_settings.model_poll_s
    streamrec(live_settings, "models", "promote", new)
    wait_for(lambda: answered_by(api) == new, 5 * poll_s + 10, f"/recommend answered by {new}", interval_s=0.2)
    health = Health.model_validate(httpx.get(f"{api}/health", timeout=5).json())
    assert health.model_version == new and health.loaded_versions == [new] and health.routing_policy == "single"

    streamrec(live_settings, "models", "rollback")
    wait_for(lambda: answered_by(api) == champion, 5 * poll_s + 10, f"/recommend answered by {champion} again",
             interval_s=0.2)
    assert registry.champion() == champion

    listed = json.loads(streamrec(live_settings, "models", "list", "--json").stdout.strip().splitlines()[-1])
    versions = {v["version"]: v for v in listed["versions"]}
    assert listed["champion"] == champion and versions[champion]["status"] == "champion"
    assert versions[new]["status"] == "candidate"
    for version in (champion, new):
        report = versions[version]
        assert 0 < report["hr_at_20"] <= 100 and 0 < report["mrr_at_20"] <= report["hr_at_20"], report
        assert report["training_s"] > 0 and report["created"], report
        assert report["data_first"] and report["data_first"] <= report["data_last"], report
    assert versions[new]["synthetic_clock"] is True  # SR-GNN folders have no timestamps
