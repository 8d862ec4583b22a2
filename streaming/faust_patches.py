"""The one owner of the worker's reliance on Faust's private internals: pinned versions, the
start-up guard, upstream-source fingerprints and the consumer patches.

The worker reaches into Faust (and mode, its service library) in three places: the consumer's
read-offset map (`SourceReadOffsets`), a copy of the fetch loop (`streaming.fast_delivery`) and
a table that writes its store and changelog itself (`streaming.app.KeyPartitionedTable`). All
three were written against the versions below; `check_faust_version` refuses any other at
start-up, and `UPSTREAM_FINGERPRINTS` (checked by tests/unit/test_faust_patches.py) says which
upstream function changed when someone moves the pin.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import faust

# Keep equal to pyproject.toml's `faust-streaming==` and `mode-streaming==` pins.
SUPPORTED_VERSIONS: Mapping[str, str] = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1"}

# "module:qualname" -> (SHA-256 of `inspect.getsource`, what to re-check when it changes).
UPSTREAM_FINGERPRINTS: Mapping[str, tuple[str, str]] = {
    "faust.transport.consumer:Consumer._drain_messages": (
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
        "streaming/fast_delivery.py `_drain_messages` is a copy of it: port the change"),
    "faust.transport.consumer:Consumer.__init__": (
        "302410d59e6972d144e35ce91483b28783e01fd039f02a51f0b06c6d3953a001",
        "it creates `_read_offset`, which SourceReadOffsets replaces (still a defaultdict?)"),
    "faust.transport.consumer:Consumer.perform_seek": (
        "0e8c130ff4b0afd82c0be9c5fd831316e10febc62c94032833911096e156d7c6",
        "it writes `_read_offset` after a seek (update): SourceReadOffsets reports it to streaming.progress"),
    "faust.transport.consumer:Consumer.seek": (
        "b86a9fe05f956b30cf299c787b6787c6e0349cbf1ae556f2456a1e97b15dbb22",
        "it writes `_read_offset` after a seek (also streaming.progress's rewinds): SourceReadOffsets reports it"),
    "faust.transport.consumer:Consumer.on_partitions_revoked": (
        "d04b7ae72c6fc206924a2879d6c90dd383f3e8ba6f4b10a19ca99a921eb8f4db",
        "it pops `_read_offset` entries: SourceReadOffsets reports them as unknown positions"),
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._seek_wait": (
        "9d221e816d9404678ac2d802b1419c7c2d166cbc9c8ec9f689a77673b8f2e85f",
        "it writes/deletes `_read_offset` entries: SourceReadOffsets reports them to streaming.progress"),
    "faust.app.base:App._new_consumer": (
        "bff6ccd646b71ea99a7e7a7d1c62adbf3d34432a0b42a39e6f60b4c0307d89c8",
        "install_consumer_patches wraps it: does it still build the one app consumer?"),
    "faust.transport.conductor:ConductorCompiler.build": (
        "837cf521368c1ee4b22c235a2b137f665eca03d0e3e01b5ddedb65232ee73bf2",
        "fast_delivery.delivery_cannot_block assumes its on_message only waits on flow "
            "control, the producer buffer and full channel queues"),
    "faust.transport.conductor:Conductor._compile_message_handler": (
        "9fbc0538097aa4eca6113b99df8d17605ae72a6b5030482f041a183f4cc34df1",
        "fast_delivery.delivery_cannot_block checks `_tp_to_callback_lock` for it"),
    "faust.transport.producer:ProducerBuffer.wait_until_ebb": (
        "758dd5744044071bbc79609fa8e5bfc339818f186bc19b723de2c4c877412e00",
        "fast_delivery.delivery_cannot_block copies its `size > max_messages` test"),
    "mode.services:Service.wait_first": (
        "feade6a31f8a67897cf687c54c66f5f4535288050bbaac07249ce2063d36ae2e",
        "fast_delivery._drain_messages keeps Faust's race through it when a delivery may block"),
    "faust.tables.base:Collection.send_changelog": (
        "3dd3884e1b5fc0e1612bc688b83d9318a1805ddc49700d3b6b37bade73c3905d",
        "KeyPartitionedTable._send_key_changelog sends the same message by hand (serializers, "
            "partition)"),
    "faust.tables.table:Table.on_key_set": (
        "a370e35ca55c2c7e36e93f0d4b485927c32d49199043cab2314572846184dd94",
        "KeyPartitionedTable.put_many writes `self.data` and so skips it (TTL, sensors)"),
    "faust.tables.table:Table.on_key_del": (
        "4f2900b2f9d24a080d5cbc9eaa1f5566f1d11e56916e79b02f079c52f4751053",
        "KeyPartitionedTable.evict_idle pops `self.data` and so skips it (TTL, sensors)"),
    "mode.utils.collections:ManagedUserDict.__setitem__": (
        "f3bdf602abc08dd1ace4cf2094d860f6569520a0af1e0428962678b56a2752d4",
        "KeyPartitionedTable.put_many bypasses it by writing `self.data` directly"),
    "mode.utils.collections:ManagedUserDict.__delitem__": (
        "c0ce7ef82dbd1255e2085ec37ba8944ffd08d2cd2dd209a93f181e818426c93e",
        "KeyPartitionedTable.evict_idle bypasses it by popping `self.data` directly"),
}


def installed_versions() -> dict[str, str]:
    """The installed distribution of each pinned library."""
    return {name: importlib.metadata.version(name) for name in SUPPORTED_VERSIONS}


def check_faust_version() -> None:
    """Refuse to start on a Faust/mode the patches were not written for (they would silently
    run against code they no longer match)."""
    installed = installed_versions()
    wrong = {name: version for name, version in installed.items() if version != SUPPORTED_VERSIONS[name]}
    if wrong:
        found = ", ".join(f"{name} {version}" for name, version in wrong.items())
        supported = ", ".join(f"{name} {SUPPORTED_VERSIONS[name]}" for name in wrong)
        raise RuntimeError(
            f"streamrec's worker patches Faust internals and supports only {supported}; installed: "
            f"{found}. Install the pinned versions (pyproject.toml), or re-check the patches against "
            "the new version (tests/unit/test_faust_patches.py) and move the pin in "
            "streaming/faust_patches.py.")


def upstream_object(path: str) -> Callable[..., Any]:
    """The function named "module:Class.attr" in the installed library."""
    module_name, qualname = path.split(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = inspect.getattr_static(target, part) if inspect.isclass(target) else getattr(target, part)
    return target


def source_fingerprint(path: str) -> str:
    """SHA-256 of the installed source of `path`."""
    return hashlib.sha256(inspect.getsource(upstream_object(path)).encode()).hexdigest()


class SourceReadOffsets(defaultdict):
    """Faust's per-partition "read offset", blind for our source topics, and the one place that
    sees every seek of theirs.

    Still needed with Faust 0.15.3: its `Consumer._drain_messages` silently drops any fetched
    message whose offset is below the last one it handed to a stream, and books a jump above it as
    a "gap" it may commit without processing. Around a rebalance or a recovery the fetcher can hand
    over messages of an old fetch after the seek to the committed offset, so the refetched ones
    below them were dropped (and their offsets committed): clicks lost (tests/faults). Our state is
    idempotent per (partition, offset), so a redelivery costs nothing: for the source topics every
    message is delivered and nothing counts as a gap. Changelog topics keep Faust's filter
    (replaying an older changelog record would regress state).

    Every Faust seek writes the target here (`Consumer.seek`, `perform_seek`, `_seek_wait`; a
    revocation pops it): for a source topic it is passed to `on_seek(topic, partition, offset)`
    (None: position unknown), which `streaming.progress` needs to know where processing resumes.
    The fetch loop records what it delivered with `delivered`, which is not a seek.
    """

    def __init__(self, source_topics: set[str],
                 on_seek: Callable[[str, int, int | None], None] = lambda topic, partition, offset: None) -> None:
        super().__init__(lambda: None)
        self.source_topics = source_topics
        self.on_seek = on_seek

    def __getitem__(self, tp):  # noqa: ANN001, ANN204 - Faust's TP
        if tp.topic in self.source_topics:
            return None
        return super().__getitem__(tp)

    def delivered(self, tp, offset: int) -> None:  # noqa: ANN001 - Faust's TP
        super().__setitem__(tp, offset)

    def __setitem__(self, tp, offset) -> None:  # noqa: ANN001
        self._seek(tp, offset)
        super().__setitem__(tp, offset)

    def update(self, other=(), **kwargs) -> None:  # noqa: ANN001, ANN003
        for tp, offset in dict(other, **kwargs).items():
            self[tp] = offset

    def __delitem__(self, tp) -> None:  # noqa: ANN001
        self._seek(tp, None)
        super().__delitem__(tp)

    def pop(self, tp, *default):  # noqa: ANN001, ANN002, ANN201
        self._seek(tp, None)
        return super().pop(tp, *default)

    def _seek(self, tp, offset) -> None:  # noqa: ANN001
        if getattr(tp, "topic", None) in self.source_topics:
            self.on_seek(tp.topic, tp.partition, offset if isinstance(offset, int) and offset >= 0 else None)


def install_consumer_patches(app: faust.App, source_topics: set[str],
                             on_seek: Callable[[str, int, int | None], None] = lambda topic, partition, offset: None
                             ) -> None:
    """Before the app's consumer starts fetching: a `SourceReadOffsets`, and the fetch loop of
    `streaming.fast_delivery`. Wrapping `App._new_consumer` is the only hook that reaches the
    consumer between its creation and its first fetch."""
    from streaming import fast_delivery  # it imports this module's pinned versions

    check_faust_version()
    new_consumer = app._new_consumer

    def tuned_consumer():  # noqa: ANN202
        consumer = new_consumer()
        consumer._read_offset = SourceReadOffsets(source_topics, on_seek)
        fast_delivery.install(consumer)
        return consumer

    app._new_consumer = tuned_consumer  # type: ignore[method-assign]
