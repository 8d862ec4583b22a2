"""The worker's Faust patches run only on the Faust they were written for, and notice upstream change."""

from __future__ import annotations

import re
from pathlib import Path

import faust
import pytest

from streaming import fast_delivery, faust_patches
from streaming.app import KeyPartitionedTable

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_installed_libraries_are_the_pinned_ones() -> None:
    assert faust_patches.installed_versions() == dict(faust_patches.SUPPORTED_VERSIONS)
    assert faust.__version__ == faust_patches.SUPPORTED_VERSIONS["faust-streaming"] == fast_delivery.TESTED_FAUST


def test_pyproject_pins_exactly_the_supported_versions() -> None:
    text = PYPROJECT.read_text()
    for name, version in faust_patches.SUPPORTED_VERSIONS.items():
        assert re.search(rf'"{name}=={re.escape(version)}"', text), f"pyproject.toml must pin {name}=={version}"


@pytest.mark.parametrize("path", sorted(faust_patches.UPSTREAM_FINGERPRINTS))
def test_patched_upstream_source_is_unchanged(path: str) -> None:
    expected, recheck = faust_patches.UPSTREAM_FINGERPRINTS[path]
    assert faust_patches.source_fingerprint(path) == expected, (
        f"upstream {path} changed since the worker's Faust patches were written: {recheck}; "
        "then update its fingerprint in streaming/faust_patches.py")


@pytest.mark.parametrize("name, version", [("faust-streaming", "0.16.0"), ("mode-streaming", "0.8.0")])
def test_start_up_refuses_another_version(monkeypatch: pytest.MonkeyPatch, name: str, version: str) -> None:
    installed = {**faust_patches.SUPPORTED_VERSIONS, name: version}
    monkeypatch.setattr(faust_patches, "installed_versions", lambda: installed)
    with pytest.raises(RuntimeError) as refused:
        faust_patches.check_faust_version()
    message = str(refused.value)
    assert f"{name} {version}" in message and f"{name} {faust_patches.SUPPORTED_VERSIONS[name]}" in message


def test_consumer_patches_are_not_applied_on_another_version(monkeypatch: pytest.MonkeyPatch) -> None:
    app = faust.App("test-faust-patches", broker="kafka://127.0.0.1:9")
    monkeypatch.setattr(faust_patches, "installed_versions",
                        lambda: {**faust_patches.SUPPORTED_VERSIONS, "faust-streaming": "0.16.0"})
    original = app._new_consumer
    with pytest.raises(RuntimeError):
        faust_patches.install_consumer_patches(app, {"clicks"})
    assert app._new_consumer == original


def test_source_topics_never_drop_a_message_and_changelogs_keep_faust_filter() -> None:
    offsets = faust_patches.SourceReadOffsets({"clicks"})
    source, changelog = faust.types.TP("clicks", 0), faust.types.TP("sessions-changelog", 0)
    offsets[source] = offsets[changelog] = 41
    assert offsets[source] is None and offsets[changelog] == 41


def test_the_table_no_longer_shadows_faust_send_changelog() -> None:
    from faust.tables.base import Collection

    assert KeyPartitionedTable._send_changelog is Collection._send_changelog
