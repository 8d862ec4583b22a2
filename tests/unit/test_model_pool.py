"""ModelPool with fake versions: loads off the event loop, swaps the whole mapping at once, keeps
serving the old mapping when a version fails to load, reuses and drops versions, and checks whose
item embeddings the online store holds."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from serving import metrics
from serving.model_pool import ModelPool
from streamrec.model_registry import ModelRegistry, RoutingConfig
from streamrec.settings import Settings
from tests.unit.test_model_registry import write_version
from tests.unit.test_recommender import FakeStore, recommender, tiny_model



class FakeRecommender:
    def __init__(self, version: str) -> None:
        self.model_version = version
        self.warmed = False
        self.embeddings_online = True

    async def warm_up(self) -> None:
        self.warmed = True


class Loader:
    """Builds fake recommenders; `gate` (if set) holds every load until it is set; `broken`: versions that raise."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.threads: list[str] = []
        self.gate: threading.Event | None = None
        self.broken: set[str] = set()

    def __call__(self, version: str) -> FakeRecommender:
        self.calls.append(version)
        self.threads.append(threading.current_thread().name)
        if self.gate is not None:
            assert self.gate.wait(5), "the test never opened the gate"
        if version in self.broken:
            raise OSError(f"{version}: index.faiss is corrupt")
        return FakeRecommender(version)


@pytest.fixture()
def registry(tmp_path: Path) -> ModelRegistry:
    for name in ("v1", "v2", "v3"):
        write_version(tmp_path / "models", name)
    registry = ModelRegistry(tmp_path / "models")
    registry.promote("v1")
    return registry


def pool_for(registry: ModelRegistry, loader: Loader, poll_s: float = 60.0) -> ModelPool:
    settings = Settings(data_dir=registry.models_dir.parent, model_poll_s=poll_s)
    return ModelPool(settings, None, loader=loader, registry=registry, freeze_gc=False)


async def test_start_loads_the_champion_and_the_arms_warmed_up(registry: ModelRegistry) -> None:
    registry.set_routing(RoutingConfig("ab", ("v2",)))
    loader = Loader()
    pool = pool_for(registry, loader)
    await pool.start()
    try:
        assert pool.champion.model_version == "v1" and pool.champion.warmed
        assert pool.versions == ["v1", "v2"] and pool.get("v2").warmed and pool.get("v3") is None
        assert pool.routing.without_experiment() == RoutingConfig("ab", ("v2",))
    finally:
        await pool.close()


async def test_a_new_champion_is_loaded_in_a_thread_while_the_old_one_answers(registry: ModelRegistry) -> None:
    loader = Loader()
    pool = pool_for(registry, loader)
    await pool.start()
    old = pool.champion
    registry.promote("v2")
    loader.gate = threading.Event()
    refresh = asyncio.create_task(pool.refresh())
    for _ in range(20):  # the event loop keeps running while the load waits
        await asyncio.sleep(0.005)
        assert pool.champion is old
    loader.gate.set()
    assert await refresh
    assert pool.champion.model_version == "v2" and pool.champion.warmed
    assert loader.threads[-1] != threading.main_thread().name


async def test_observers_see_the_old_mapping_or_the_new_one_never_a_mix(registry: ModelRegistry) -> None:
    loader = Loader()
    pool = pool_for(registry, loader)
    await pool.start()
    seen: set[tuple] = set()
    stop = asyncio.Event()

    async def observe() -> None:
        while not stop.is_set():
            seen.add((pool.champion.model_version, tuple(pool.versions), pool.routing.policy))
            await asyncio.sleep(0)

    observer = asyncio.create_task(observe())
    registry.set_routing(RoutingConfig("ab", ("v3",)))
    registry.promote("v2")  # two new versions to load, one after the other
    assert await pool.refresh()
    await asyncio.sleep(0.01)
    stop.set()
    await observer
    assert seen == {("v1", ("v1",), "single"), ("v2", ("v2", "v3"), "ab")}


async def test_a_version_that_fails_to_load_leaves_the_old_mapping_serving(registry: ModelRegistry) -> None:
    loader = Loader()
    pool = pool_for(registry, loader)
    await pool.start()
    old = pool.state
    failures = metrics.MODEL_LOAD_FAILURES._value.get()
    loader.broken = {"v3"}
    registry.set_routing(RoutingConfig("ab", ("v2",)))
    registry.promote("v3")
    assert not await pool.refresh()
    assert pool.state is old and pool.champion.model_version == "v1" and pool.routing.policy == "single"
    assert pool.load_failures == 1 and metrics.MODEL_LOAD_FAILURES._value.get() == failures + 1
    assert not await pool.refresh()  # the same broken state is not retried at every poll
    assert pool.load_failures == 1
    registry.rollback()  # back to v1, with the ab routing: that loads
    assert await pool.refresh()
    assert pool.versions == ["v1", "v2"]


async def test_loaded_versions_are_reused_and_unneeded_ones_dropped(registry: ModelRegistry) -> None:
    loader = Loader()
    pool = pool_for(registry, loader)
    await pool.start()
    registry.set_routing(RoutingConfig("shadow", ("v2",)))
    assert await pool.refresh()
    v2 = weakref.ref(pool.get("v2"))
    registry.promote("v2")  # v2 leaves the arms and becomes champion: not loaded again
    assert await pool.refresh()
    assert pool.versions == ["v2"] and pool.champion is v2()
    assert loader.calls == ["v1", "v2"]
    registry.promote("v1")
    assert await pool.refresh()
    assert loader.calls == ["v1", "v2", "v1"]  # v1 was dropped with the old mapping, so loaded anew
    v1 = weakref.ref(pool.champion)
    assert pool.get("v2") is None
    gc.collect()
    assert v2() is None, "a version no longer needed is still referenced"
    assert v1() is not None


async def test_the_poller_swaps_within_a_few_poll_intervals(registry: ModelRegistry) -> None:
    pool = pool_for(registry, Loader(), poll_s=0.02)
    await pool.start()
    try:
        registry.promote("v2")
        for _ in range(100):
            if pool.champion.model_version == "v2":
                break
            await asyncio.sleep(0.02)
        assert pool.champion.model_version == "v2" and pool.swaps == 1
    finally:
        await pool.close()


async def test_start_fails_without_a_loadable_champion_but_serves_without_a_broken_arm(registry: ModelRegistry) -> None:
    registry.set_routing(RoutingConfig("ab", ("v2", "v3"), (2.0, 1.0, 1.0)))
    loader = Loader()
    loader.broken = {"v3"}
    pool = pool_for(registry, loader)
    await pool.start()
    await pool.close()
    assert pool.versions == ["v1", "v2"] and pool.routing.without_experiment() == RoutingConfig("ab", ("v2",), (2.0, 1.0))
    loader.broken = {"v1"}
    with pytest.raises(OSError, match="corrupt"):
        await pool_for(registry, loader).start()


async def test_a_version_whose_embeddings_are_not_in_the_online_store_uses_its_own(tmp_path: Path) -> None:
    model = tiny_model(tmp_path)
    other = tiny_model(tmp_path)
    other.item_embeddings = np.ascontiguousarray(other.item_embeddings[::-1])  # another version's space
    pool = ModelPool(Settings(data_dir=tmp_path), FakeStore(model), registry=ModelRegistry(tmp_path))
    assert await pool._embeddings_online(recommender(model, None))
    assert not await pool._embeddings_online(recommender(other, None))
    assert not await ModelPool(Settings(data_dir=tmp_path), FakeStore(model, fail=True),
                               registry=ModelRegistry(tmp_path))._embeddings_online(recommender(model, None))
