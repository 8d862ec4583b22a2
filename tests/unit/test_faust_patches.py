"""The Faust internals streamrec patches are the ones the patches were written for."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from streaming import faust_patches


def test_installed_versions_are_the_pinned_ones() -> None:
    assert {name: version(name) for name in faust_patches.PINNED} == faust_patches.PINNED
    faust_patches.check_versions()


def test_patched_upstream_functions_are_unchanged() -> None:
    changed = faust_patches.changed()
    assert not changed, (f"upstream source changed: {changed}; re-read the patches in streaming/app.py and "
                         "streaming/fast_delivery.py against it, then update FINGERPRINTS")


def test_another_version_is_refused_at_start_up() -> None:
    with pytest.raises(RuntimeError, match="faust-streaming==0.15.3.*installed: faust-streaming==0.16.0"):
        faust_patches.check_versions({**faust_patches.PINNED, "faust-streaming": "0.16.0"})


def test_a_changed_fingerprint_is_reported(monkeypatch) -> None:
    target = next(iter(faust_patches.FINGERPRINTS))
    monkeypatch.setitem(faust_patches.FINGERPRINTS, target, "0" * 64)
    assert faust_patches.changed() == [target]
