"""Which model versions exist and what each one does: the champion, the history of promotions,
retired versions and the routing config. The one owner of those files in the models folder.

`<models_dir>/<version>/` is one immutable version (`streamrec.artifacts`); beside them:

- `CURRENT`: the champion, the version that answers by default (everything reads it).
- `HISTORY`: JSON lines `{"version", "when", "action", "previous"}`, one per change of champion
  (`promote` or `rollback`), so `rollback` knows the previous champion.
- `ROUTING.json`: which versions besides the champion take part (the arms) and how traffic is
  shared (`policy`, `weights`); absent = `single` (the champion answers everything).
- `<version>/RETIRED`: the version may no longer be promoted or routed to.

Every file is replaced atomically (temp file + rename), so a reader (the API polling
`fingerprint()`) sees the old content or the new one, never half of it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from streamrec.artifacts import CURRENT, META, RANKER_META, current_version, set_current_version
from streamrec.impressions import DEFAULT_EXPERIMENT, POLICIES

HISTORY = "HISTORY"
ROUTING = "ROUTING.json"
RETIRED = "RETIRED"
LOCK = ".registry.lock"


class RegistryError(ValueError):
    """A request the registry refuses; the message says why and what to do instead."""


@dataclass(frozen=True)
class RoutingConfig:
    """Which versions answer besides the champion (`arms`) and how traffic is shared.

    `weights` (ab only) are the arms' traffic shares *with the champion first*: one weight per
    version in `[champion, *arms]`; None = equal shares. `experiment` names this routing: every
    `set_routing` starts a new one, whose arms' online counters (and the bandit's posterior) start
    at zero; impressions carry it.
    """

    policy: str = "single"
    arms: tuple[str, ...] = ()
    weights: tuple[float, ...] | None = None
    experiment: str = DEFAULT_EXPERIMENT

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", tuple(self.arms))
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if self.policy not in POLICIES:
            raise RegistryError(f"unknown routing policy {self.policy!r}: use one of {', '.join(POLICIES)}")
        if len(set(self.arms)) != len(self.arms):
            raise RegistryError(f"an arm is named twice: {', '.join(self.arms)}")
        if self.policy == "single" and self.arms:
            raise RegistryError("the single policy takes no arms (the champion answers everything)")
        if self.policy != "single" and not self.arms:
            raise RegistryError(f"the {self.policy} policy needs at least one arm: --arm VERSION")
        if self.policy == "shadow" and len(self.arms) != 1:
            raise RegistryError(f"the shadow policy takes exactly one arm, not {len(self.arms)}")
        if self.weights is not None:
            if self.policy != "ab":
                raise RegistryError(f"weights are for the ab policy only, not {self.policy}")
            if len(self.weights) != len(self.arms) + 1:
                raise RegistryError(f"ab takes one weight per version, the champion's first: {len(self.arms) + 1} "
                                    f"weights for the champion and {len(self.arms)} arm(s), not {len(self.weights)}")
            if any(not (w > 0) for w in self.weights):
                raise RegistryError(f"weights must be > 0 (leave a version out instead): {list(self.weights)}")

    @property
    def shares(self) -> tuple[float, ...]:
        """Traffic shares of `[champion, *arms]` for ab (normalised weights, equal by default)."""
        weights = self.weights or (1.0,) * (len(self.arms) + 1)
        total = sum(weights)
        return tuple(w / total for w in weights)

    def without(self, versions: set[str]) -> "RoutingConfig":
        """The same config with `versions` taken out of the arms; `single` when too few arms remain."""
        keep = [i for i, arm in enumerate(self.arms) if arm not in versions]
        if len(keep) == len(self.arms):
            return self
        if not keep:
            return RoutingConfig()
        weights = None if self.weights is None else (self.weights[0], *(self.weights[i + 1] for i in keep))
        return RoutingConfig(self.policy, tuple(self.arms[i] for i in keep), weights, self.experiment)

    def without_experiment(self) -> "RoutingConfig":
        """The routing alone, to compare two configs whatever experiment each one started."""
        return replace(self, experiment=DEFAULT_EXPERIMENT)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "arms": list(self.arms),
                "weights": None if self.weights is None else list(self.weights), "experiment": self.experiment}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RoutingConfig":
        unknown = set(data) - {"policy", "arms", "weights", "experiment"}
        if unknown:
            raise RegistryError(f"unknown routing fields: {', '.join(sorted(unknown))}")
        weights = data.get("weights")
        return cls(str(data.get("policy", "single")), tuple(str(a) for a in data.get("arms") or ()),
                   None if weights is None else tuple(weights), str(data.get("experiment") or DEFAULT_EXPERIMENT))


@dataclass(frozen=True)
class VersionInfo:
    """One version and its offline report (what training measured when it wrote it)."""

    version: str
    status: str  # champion | arm | candidate | retired | incomplete (still being written)
    created: str | None
    dataset: str | None
    hr_at_20: float | None  # the ranker's validation HR@20 / MRR@20 in percent (None without a ranker)
    mrr_at_20: float | None
    data_first: str | None  # first / last event time of the training data (ISO, UTC)
    data_last: str | None
    synthetic_clock: bool | None  # True: the dataset had no timestamps, the window is the loader's
    training_s: float | None
    n_items: int | None
    n_clicks: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out.update(self.extra)
        return out


def _learned(meta: dict[str, Any]) -> dict[str, Any]:
    """How a version was made: `streamrec learn`'s kind (warm | light | fold_in), parent, triggers and gate decision."""
    continual, gate = meta.get("continual") or {}, meta.get("gate") or {}
    if not continual:
        return {"made_by": "train"}
    return {"made_by": f"learn ({continual.get('kind', 'warm')})", "parent": meta.get("parent"),
            "triggers": gate.get("triggers", []),
            "gate": {key: gate.get(key) for key in ("passed", "metric", "candidate_score", "champion_score",
                                                     "margin", "cases", "champion")} if gate else None}


def atomic_write(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ModelRegistry:
    """The versions in one models folder; every change goes through here."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    # --- reading ---------------------------------------------------------------------------------
    def champion(self) -> str | None:
        return current_version(self.models_dir)

    def routing(self) -> RoutingConfig:
        path = self.models_dir / ROUTING
        if not path.exists():
            return RoutingConfig()
        return RoutingConfig.from_dict(json.loads(path.read_text()))

    def fingerprint(self) -> tuple[str, str]:
        """The contents of CURRENT and ROUTING.json (a few bytes each): what the API polls."""
        return tuple(self._read_or_empty(name) for name in (CURRENT, ROUTING))  # type: ignore[return-value]

    def exists(self, version: str) -> bool:
        return bool(version) and "/" not in version and (self.models_dir / version / META).is_file()

    def is_retired(self, version: str) -> bool:
        return (self.models_dir / version / RETIRED).exists()

    def is_complete(self, version: str) -> bool:
        """Training writes meta.json twice; the last write carries the total training time."""
        meta = self._meta(version)
        return "total" in (meta.get("timings_s") or {})

    def history(self) -> list[dict[str, Any]]:
        path = self.models_dir / HISTORY
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def versions(self) -> list[VersionInfo]:
        """Every version folder, oldest first, with its status and offline report."""
        if not self.models_dir.is_dir():
            return []
        champion, arms = self.champion(), set(self.routing().arms)
        infos = [self._info(path.name, champion, arms) for path in self.models_dir.iterdir()
                 if path.is_dir() and (path / META).is_file()]
        return sorted(infos, key=lambda info: (info.created or "", info.version))

    def info(self, version: str) -> VersionInfo:
        self._require(version)
        return self._info(version, self.champion(), set(self.routing().arms))

    # --- changing --------------------------------------------------------------------------------
    def promote(self, version: str) -> str | None:
        """Make `version` the champion; returns the previous one. An arm that becomes champion
        leaves the routing's arms (single again when none remain)."""
        with self._lock():
            self._require_servable(version)
            previous = self.champion()
            if previous == version:
                return previous
            self._switch(version, previous, "promote")
            return previous

    def rollback(self) -> str:
        """Return to the champion before the current one (HISTORY); returns it."""
        with self._lock():
            current = self.champion()
            stack = self._champions()
            if stack and stack[-1] == current:
                stack.pop()
            if not stack:
                raise RegistryError("no previous champion in the history: promote a version instead "
                                    "(`streamrec models promote VERSION`)")
            target = stack[-1]
            if not self.exists(target):
                raise RegistryError(f"the previous champion {target} is gone from {self.models_dir}: "
                                    "promote a version instead")
            if self.is_retired(target):
                raise RegistryError(f"the previous champion {target} is retired: promote a version instead")
            self._switch(target, current, "rollback")
            return target

    def retire(self, version: str) -> None:
        with self._lock():
            self._require(version)
            if version == self.champion():
                raise RegistryError(f"{version} is the champion and cannot be retired: promote or roll back "
                                    "to another version first")
            routing = self.routing()
            if version in routing.arms:
                raise RegistryError(f"{version} is an arm of the {routing.policy} routing: route without it first "
                                    "(e.g. `streamrec models route single`)")
            atomic_write(self.models_dir / version / RETIRED, json.dumps({"when": _now()}) + "\n")

    def set_routing(self, config: RoutingConfig) -> RoutingConfig:
        """Store `config` as a new experiment (its own id, so its counters start at zero); returns it."""
        config = replace(config, experiment=f"{config.policy}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-"
                                            f"{os.urandom(2).hex()}")
        with self._lock():
            self.check_routing(config)
            self.models_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.models_dir / ROUTING, json.dumps(config.to_dict()) + "\n")
            return config

    def check_routing(self, config: RoutingConfig, champion: str | None = None) -> None:
        """Raise RegistryError unless every arm is a complete, unretired version other than the champion."""
        champion = champion if champion is not None else self.champion()
        for arm in config.arms:
            self._require_servable(arm)
            if arm == champion:
                raise RegistryError(f"{arm} is the champion; arms are the versions besides it")

    # --- internals ---------------------------------------------------------------------------------
    def _switch(self, version: str, previous: str | None, action: str) -> None:
        routing = self.routing()
        if version in routing.arms:  # routing first: it stays valid under the old champion too
            atomic_write(self.models_dir / ROUTING, json.dumps(routing.without({version}).to_dict()) + "\n")
        set_current_version(self.models_dir, version)
        with (self.models_dir / HISTORY).open("a") as history:
            history.write(json.dumps({"version": version, "when": _now(), "action": action,
                                      "previous": previous}) + "\n")

    def _champions(self) -> list[str]:
        """The champions in order, replayed from HISTORY: a promotion pushes, a rollback pops back to its version."""
        stack: list[str] = []
        for entry in self.history():
            version = entry["version"]
            if entry.get("action") == "rollback":
                while stack and stack[-1] != version:
                    stack.pop()
                if not stack:
                    stack.append(version)
            else:
                stack.append(version)
        return stack

    def _require(self, version: str) -> None:
        if not self.exists(version):
            known = [p.name for p in self.models_dir.iterdir() if (p / META).is_file()] if self.models_dir.is_dir() else []
            hint = f"; known: {', '.join(sorted(known)[-5:])}" if known else "; run `streamrec train` first"
            raise RegistryError(f"unknown model version {version!r} in {self.models_dir}{hint}")

    def _require_servable(self, version: str) -> None:
        self._require(version)
        if self.is_retired(version):
            raise RegistryError(f"{version} is retired and cannot serve")
        if not self.is_complete(version):
            raise RegistryError(f"{version} is incomplete (still being trained, or training failed)")

    def _meta(self, version: str) -> dict[str, Any]:
        try:
            return json.loads((self.models_dir / version / META).read_text())
        except (OSError, ValueError):
            return {}

    def _info(self, version: str, champion: str | None, arms: set[str]) -> VersionInfo:
        meta = self._meta(version)
        ranker = meta.get("ranker")
        if not ranker:
            path = self.models_dir / version / RANKER_META
            try:
                ranker = json.loads(path.read_text()) if path.exists() else {}
            except ValueError:
                ranker = {}
        valid = (ranker or {}).get("valid") or {}
        window = meta.get("data_window") or {}
        if version == champion:
            status = "champion"
        elif self.is_retired(version):
            status = "retired"
        elif version in arms:
            status = "arm"
        elif "total" not in (meta.get("timings_s") or {}):
            status = "incomplete"
        else:
            status = "candidate"
        return VersionInfo(
            version=version, status=status, created=meta.get("trained_at"),
            dataset=meta.get("dataset_name") or meta.get("dataset"),
            hr_at_20=valid.get("HR@20"), mrr_at_20=valid.get("MRR@20"),
            data_first=window.get("first"), data_last=window.get("last"),
            synthetic_clock=window.get("synthetic_clock"),
            training_s=(meta.get("timings_s") or {}).get("total"),
            n_items=meta.get("n_items"), n_clicks=meta.get("n_clicks"),
            extra=_learned(meta),
        )

    def _read_or_empty(self, name: str) -> str:
        try:
            return (self.models_dir / name).read_text()
        except FileNotFoundError:
            return ""

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One writer at a time (two operators, or training and an operator)."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with (self.models_dir / LOCK).open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def routing_from_args(policy: str, arms: Sequence[str], weights: Sequence[float] | None) -> RoutingConfig:
    """The config of `streamrec models route POLICY --arm V ... --weight W ...` (weights: champion's first)."""
    return RoutingConfig(policy, tuple(arms), tuple(weights) if weights else None)
