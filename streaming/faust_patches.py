"""The Faust internals streamrec patches, pinned: versions, a start-up guard, source fingerprints.

`streaming.app` wraps `App._new_consumer` (to install `SourceReadOffsets` as the consumer's
`_read_offset`, set in `Consumer.__init__` and read by `_drain_messages`), `streaming.fast_delivery`
replaces `Consumer._drain_messages` with a copy, and `KeyPartitionedTable` writes `Collection.data`
directly and overrides `_send_changelog` / `partition_for_key`. Each relies on private code of the
exact versions below: `check_versions()` refuses any other at worker start-up, and
tests/unit/test_faust_patches.py fails when the fingerprinted source changes, which is the signal
to re-read each patch against the new upstream code (and drop it if upstream fixed the cause).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from importlib.metadata import version

PINNED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}  # pyproject pins the same

# SHA-256 of `inspect.getsource` of each upstream function a patch replaces, wraps or depends on.
FINGERPRINTS = {
    "faust.app.base:App._new_consumer": "bff6ccd646b71ea99a7e7a7d1c62adbf3d34432a0b42a39e6f60b4c0307d89c8",
    "faust.transport.consumer:Consumer._drain_messages": "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    "faust.transport.consumer:Consumer.__init__": "302410d59e6972d144e35ce91483b28783e01fd039f02a51f0b06c6d3953a001",
    "faust.tables.base:Collection._send_changelog": "ffe705dc73c1e67c82f1c0262d04e0d43fdf93450a53e4b3ca7be20154e4d52b",
    "faust.tables.base:Collection.partition_for_key": "3b2291811b8dd791cdd0e690b2b09d966a4e961e2a2861182241195696393bed",
    "faust.tables.table:Table.on_key_set": "a370e35ca55c2c7e36e93f0d4b485927c32d49199043cab2314572846184dd94",
}


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Raise unless the installed Faust and aiokafka are the versions the patches were written for."""
    installed = installed or {name: version(name) for name in PINNED}
    wrong = {name: installed.get(name) for name, pinned in PINNED.items() if installed.get(name) != pinned}
    if wrong:
        raise RuntimeError(
            "streamrec's worker patches private code of " + ", ".join(f"{n}=={v}" for n, v in PINNED.items())
            + "; installed: " + ", ".join(f"{n}=={v}" for n, v in wrong.items())
            + ". Install the pinned versions (pip install -e .) or re-check streaming/faust_patches.py.")


def fingerprint(target: str) -> str:
    """SHA-256 of the current source of `module:Class.attr`."""
    module, _, path = target.partition(":")
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()


def changed() -> list[str]:
    """The fingerprinted functions whose upstream source differs from the pinned one."""
    return [target for target, digest in FINGERPRINTS.items() if fingerprint(target) != digest]
