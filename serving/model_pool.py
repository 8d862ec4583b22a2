"""The model versions one API process serves, loaded in the background and swapped atomically.

The pool holds one `Recommender` per version needed: the champion (`CURRENT`) and the routing
config's arms (`ROUTING.json`), both owned by `streamrec.model_registry`. A background task polls
the registry's fingerprint every `STREAMREC_MODEL_POLL_S`; on a change it loads the versions it
does not hold yet in a thread (a version already loaded is reused), warms them up, and then swaps
the whole mapping with one reference assignment, so a request sees the old mapping or the new one,
never a mix, and a request already running finishes on the version it started with. Versions no
longer needed are dropped with the old mapping. A version that fails to load (missing, corrupt)
leaves the old mapping serving; the failure is logged and counted, and retried later.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from serving import metrics
from serving.bundle import load_recommender
from serving.recommender import Recommender
from streamrec import feature_schema as s
from streamrec.model_registry import ModelRegistry, RoutingConfig
from streamrec.online_store import OnlineStore, ReadRequest
from streamrec.settings import Settings

log = logging.getLogger(__name__)
RETRY_S = 30.0  # a fingerprint whose versions failed to load is tried again after this long
EMBEDDING_CHECK_ITEMS = 32  # popular items whose online embeddings are compared with the version's own

Loader = Callable[[str], Recommender]


@dataclass(frozen=True)
class Loaded:
    """One consistent state: what the registry said (fingerprint) and the recommenders built for it."""

    fingerprint: tuple[str, ...]
    champion: str
    routing: RoutingConfig
    recommenders: Mapping[str, Recommender]


class ModelPool:
    """The champion's and the arms' recommenders of this process; safe to read from any request."""

    def __init__(self, settings: Settings, store: OnlineStore | None, *, loader: Loader | None = None,
                 registry: ModelRegistry | None = None, freeze_gc: bool = True) -> None:
        """`loader` builds the Recommender of a version (default: every artifact from its folder;
        tests pass fakes); `freeze_gc`: after a swap, collect once and move the new objects out of
        the collector's reach, as the app does after start-up."""
        self.settings = settings
        self.store = store
        self.registry = registry or ModelRegistry(settings.models_dir)
        self._loader = loader or self._load
        self._freeze_gc = freeze_gc
        self._loaded: Loaded | None = None
        self._failed: tuple[tuple[str, ...], float] | None = None  # fingerprint, monotonic time
        self._task: asyncio.Task | None = None
        self.swaps = 0
        self.load_failures = 0

    # --- what requests read (one attribute read each: the mapping is swapped whole) -----------------
    @property
    def state(self) -> Loaded:
        if self._loaded is None:
            raise RuntimeError("ModelPool.start() has not run")
        return self._loaded

    @property
    def champion(self) -> Recommender:
        state = self.state
        return state.recommenders[state.champion]

    @property
    def champion_version(self) -> str:
        return self.state.champion

    @property
    def routing(self) -> RoutingConfig:
        return self.state.routing

    @property
    def versions(self) -> list[str]:
        """The loaded versions, champion first."""
        return list(self.state.recommenders)

    def get(self, version: str) -> Recommender | None:
        return self.state.recommenders.get(version)

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the champion (its failure is fatal: there is nothing to serve) and the arms (one that
        fails is left out of the routing until a later poll loads it), then poll in the background."""
        fingerprint = self.registry.fingerprint()
        champion = self.registry.champion()
        if champion is None:
            raise FileNotFoundError(f"no model in {self.settings.models_dir}: run `streamrec train` first")
        routing = self._routing(champion)
        recommenders = {champion: await self._build(champion)}
        failed = set()
        for arm in routing.arms:
            try:
                recommenders[arm] = await self._build(arm)
            except Exception as exc:  # noqa: BLE001 - any load error: serve without the arm
                failed.add(arm)
                self._count_failure(arm, exc)
        if failed:
            self._failed = (fingerprint, time.monotonic())
        self._publish(Loaded(fingerprint, champion, routing.without(failed), MappingProxyType(recommenders)))
        self._task = asyncio.create_task(self._poll(), name="model-pool-poll")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> bool:
        """One poll: if the registry changed, load what is new and swap; True if it swapped."""
        fingerprint = self.registry.fingerprint()
        current = self.state
        if fingerprint == current.fingerprint:
            return False
        if self._failed and self._failed[0] == fingerprint and time.monotonic() - self._failed[1] < RETRY_S:
            return False
        version = "CURRENT"
        try:
            champion = self.registry.champion()
            if champion is None:
                raise FileNotFoundError(f"CURRENT is gone from {self.settings.models_dir}")
            routing = self._routing(champion)
            needed = [champion, *routing.arms]
            recommenders: dict[str, Recommender] = {}
            for version in needed:
                recommenders[version] = current.recommenders.get(version) or await self._build(version)
        except Exception as exc:  # noqa: BLE001 - keep serving the old mapping, whatever went wrong
            self._failed = (fingerprint, time.monotonic())
            self._count_failure(version, exc)
            return False
        self._failed = None
        self._publish(Loaded(fingerprint, champion, routing, MappingProxyType(recommenders)))
        self.swaps += 1
        metrics.MODEL_SWAPS.inc()
        dropped = set(current.recommenders) - set(recommenders)
        log.warning("models: champion %s, routing %s %s, loaded %s%s", champion, routing.policy,
                    list(routing.arms), list(recommenders), f", dropped {sorted(dropped)}" if dropped else "")
        del current
        if self._freeze_gc:
            # Objects loaded after start-up are not frozen: one collection now (it also frees the
            # dropped versions' cycles), then out of reach of later full collections.
            gc.collect()
            gc.freeze()
        return True

    # --- internals ---------------------------------------------------------------------------------
    def _routing(self, champion: str) -> RoutingConfig:
        """The registry's routing, with the champion never an arm (a promotion may land first)."""
        routing = self.registry.routing()
        return routing.without({champion})

    async def _build(self, version: str) -> Recommender:
        """Load in a thread (the event loop keeps answering), then warm up on the loop."""
        started = time.perf_counter()
        recommender = await asyncio.to_thread(self._loader, version)
        if recommender.model_version != version:
            raise ValueError(f"{version}: its meta.json names version {recommender.model_version}")
        recommender.embeddings_online = await self._embeddings_online(recommender)
        await recommender.warm_up()
        log.info("models: %s loaded in %.2fs (item embeddings from the %s)", version, time.perf_counter() - started,
                 "online store" if recommender.embeddings_online else "version's own copy")
        return recommender

    def _load(self, version: str) -> Recommender:
        return load_recommender(self.settings, self.store, version)

    async def _embeddings_online(self, recommender: Recommender) -> bool:
        """Whether the online store holds this version's embeddings (compared on popular items).
        When it cannot tell (no store, Redis down), the version uses its own copy: always right."""
        if self.store is None or not hasattr(recommender, "model"):
            return True
        model = recommender.model
        items = [int(i) for i in model.popular[:EMBEDDING_CHECK_ITEMS]]
        if not items:
            return True
        try:
            read = self.store.read_many([ReadRequest(s.ITEM_EMBEDDINGS_VIEW, items, (s.EMBEDDING,))])
            rows = (await asyncio.wait_for(read, 2.0))[0]
        except Exception:  # noqa: BLE001 - cannot tell: the version's own copy
            return False
        for item, row in zip(items, rows):
            position = model.row_of(item)
            vector = row.get(s.EMBEDDING) if row else None
            if position is None or vector is None or len(vector) != model.dim:
                return False
            if not np.allclose(np.asarray(vector, dtype=np.float32), model.item_embeddings[position], atol=1e-6):
                return False
        return True

    def _publish(self, loaded: Loaded) -> None:
        previous = self._loaded
        self._loaded = loaded  # the swap: one reference assignment
        if previous is None or previous.champion != loaded.champion:
            if previous is not None:
                metrics.MODEL_CHAMPION.labels(previous.champion).set(0)
            metrics.MODEL_CHAMPION.labels(loaded.champion).set(1)

    def _count_failure(self, version: str, exc: BaseException) -> None:
        self.load_failures += 1
        metrics.MODEL_LOAD_FAILURES.inc()
        log.error("models: could not load version %s (%s: %s); still serving %s", version, type(exc).__name__, exc,
                  self._loaded.champion if self._loaded else "nothing")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - the poller must outlive any surprise
                log.exception("models: poll failed")
