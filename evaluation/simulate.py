"""`streamrec simulate`: held-out sessions of a real dataset replayed as visitors through the live
stack, to measure routing policies by the reward they earn.

A visitor is one held-out session. It clicks its first item, then at each step asks
`POST /recommend` (k items, sending the items it clicked so far, as a page would) and clicks its
true next item through `POST /events`: a reward when that item was shown, and a click all the same
when it was not. Everything goes through the real API, Kafka and the worker, whose reward
attribution is checked against the simulator's own count.

Two arms: the champion and a clearly weaker version, its popularity baseline (the same candidates
ranked by training popularity, `streamrec models baseline`). The same visitors are replayed under
each policy, each in its own experiment (counters from zero): `bandit` (Thompson sampling),
`ab` (50/50) and `best` (the stronger arm serves everything).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from candidates.bundle import derive_popularity_baseline
from streamrec.arm_stats import read_arm_stats
from streamrec.datasets import held_out_sessions
from streamrec.model_registry import ModelRegistry, RoutingConfig
from streamrec.settings import Settings

FIRST_SESSIONS = 2000  # the bandit's share of the better arm is reported over this many visitors
POLICIES = ("bandit", "ab", "best")


class SimulationError(RuntimeError):
    """The stack is not ready for a simulation; the message says what to do."""


@dataclass
class Visit:
    """One visitor's steps: (arm that answered, rewarded) per `/recommend`."""

    steps: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def arm(self) -> str | None:
        return self.steps[0][0] if self.steps else None


@dataclass
class Phase:
    policy: str
    experiment: str
    visits: list[Visit]
    seconds: float
    attributed: dict[str, int]  # version -> clicked impressions counted by the worker
    impressions: dict[str, int]

    @property
    def reward(self) -> int:
        return sum(rewarded for v in self.visits for _, rewarded in v.steps)

    @property
    def steps(self) -> int:
        return sum(len(v.steps) for v in self.visits)

    def arm_reward(self) -> dict[str, tuple[int, int]]:
        """Per arm: (rewarded steps, steps), the simulator's own count."""
        out: dict[str, list[int]] = {}
        for visit in self.visits:
            for arm, rewarded in visit.steps:
                counts = out.setdefault(arm, [0, 0])
                counts[0] += rewarded
                counts[1] += 1
        return {arm: (r, n) for arm, (r, n) in out.items()}


def arms_for(settings: Settings, registry: ModelRegistry) -> tuple[str, str]:
    """(champion, its popularity baseline), creating the baseline version when missing."""
    champion = registry.champion()
    if champion is None:
        raise SimulationError("no model: run `streamrec train --dataset DATASET` first")
    baseline = f"{champion}-popularity"
    if not registry.exists(baseline):
        derive_popularity_baseline(settings.models_dir / champion, settings.models_dir / baseline)
    return champion, baseline


def check_dataset(registry: ModelRegistry, champion: str, dataset: Path) -> None:
    """The visitors must come from the dataset the champion learned from (another's item ids mean nothing)."""
    trained_on = (registry.info(champion).dataset or "").rstrip("/")
    if trained_on and Path(trained_on).name != Path(dataset).name:
        raise SimulationError(f"the champion {champion} was trained on {trained_on}, not {dataset}: "
                              f"run `streamrec train --dataset {dataset}` first")


async def _post_event(http: httpx.AsyncClient, api: str, session_id: str, item: int, deadline: float) -> None:
    """A click, kept until the API accepts it (503: retried after Retry-After, within `deadline`)."""
    while True:
        answer = await http.post(f"{api}/events", json={"session_id": session_id, "item_id": item, "ts": time.time()})
        if answer.status_code == 202:
            return
        if answer.status_code != 503 or time.monotonic() > deadline:
            raise SimulationError(f"POST /events answered {answer.status_code}: {answer.text[:200]}")
        await asyncio.sleep(float(answer.headers.get("retry-after", "1")))


async def visit(http: httpx.AsyncClient, api: str, session_id: str, items: Sequence[int], k: int,
                max_session_items: int, deadline: float) -> Visit:
    result = Visit()
    await _post_event(http, api, session_id, items[0], deadline)
    for step, next_item in enumerate(items[1:], start=1):
        clicked = list(items[:step])[-max_session_items:]
        answer = await http.post(f"{api}/recommend", json={"session_id": session_id, "k": k, "session_items": clicked})
        if answer.status_code != 200:
            raise SimulationError(f"POST /recommend answered {answer.status_code}: {answer.text[:200]}")
        body = answer.json()
        shown = {entry["item_id"] for entry in body["items"]}
        result.steps.append((body["model_version"], next_item in shown))
        await _post_event(http, api, session_id, next_item, deadline)
    return result


async def replay(api: str, sessions: Sequence[Sequence[int]], prefix: str, *, k: int, concurrency: int,
                 max_session_items: int, timeout_s: float, progress: Callable[[int], None] | None = None) -> list[Visit]:
    """Every visitor once, `concurrency` at a time, started in order (the bandit learns from the
    earlier ones while the later ones arrive)."""
    visits: list[Visit | None] = [None] * len(sessions)
    next_index = 0
    deadline = time.monotonic() + timeout_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        async def visitor() -> None:
            nonlocal next_index
            while next_index < len(sessions) and time.monotonic() < deadline:
                n = next_index
                next_index += 1
                visits[n] = await visit(http, api, f"{prefix}-{n}", sessions[n], k, max_session_items, deadline)
                if progress is not None:
                    progress(1)

        await asyncio.gather(*(visitor() for _ in range(concurrency)))
    done = [v for v in visits if v is not None]
    if len(done) < len(sessions):
        raise SimulationError(f"only {len(done)} of {len(sessions)} visitors finished within {timeout_s:.0f}s")
    return done


async def wait_for_attribution(settings: Settings, experiment: str, arms: Sequence[str], expected: int,
                               timeout_s: float, impressions: int = 0) -> tuple[dict[str, int], dict[str, int]]:
    """The worker's counters of `experiment` once their rewards reach `expected` and their
    impressions `impressions` (or at `timeout_s`): (clicked impressions, impressions) per arm."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            stats = await read_arm_stats(client, experiment, list(arms))
            clicked = {a: s.clicked for a, s in stats.items()}
            shown = sum(s.impressions for s in stats.values())
            if (sum(clicked.values()) >= expected and shown >= impressions) or time.monotonic() > deadline:
                return clicked, {a: s.impressions for a, s in stats.items()}
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


def wait_for_routing(api: str, policy: str, timeout_s: float, poll_s: float) -> None:
    """Until the API serves with `policy` (every process polls the registry every `poll_s`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=5).json().get("routing_policy") == policy:
                time.sleep(2 * poll_s)  # the other API processes poll on their own clocks
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise SimulationError(f"the API at {api} did not switch to the {policy} policy within {timeout_s:.0f}s")


def routing_of(policy: str, weak: str) -> RoutingConfig:
    """The routing of one phase: `best` is the champion alone (the summary checks it is the better arm)."""
    if policy == "best":
        return RoutingConfig("single")
    return RoutingConfig(policy, (weak,), (0.5, 0.5) if policy == "ab" else None)


def run_simulation(settings: Settings, dataset: Path, *, sessions: int, k: int = 20, concurrency: int = 16,
                   seed: int = 0, policies: Sequence[str] = POLICIES, api: str | None = None,
                   timeout_s: float = 1800.0, progress: Callable[[str, int], Callable[[int], None]] | None = None,
                   ) -> dict[str, Any]:
    """Replay `sessions` held-out visitors under each policy; the JSON-ready result."""
    import numpy as np

    api = api or f"http://{settings.api_host}:{settings.api_port}"
    registry = ModelRegistry(settings.models_dir)
    champion, weak = arms_for(settings, registry)
    check_dataset(registry, champion, dataset)
    visitors = [s for s in held_out_sessions(dataset) if len(s) >= 2]
    if len(visitors) > sessions:
        picked = np.sort(np.random.default_rng(seed).choice(len(visitors), sessions, replace=False))
        visitors = [visitors[i] for i in picked]
    run = uuid.uuid4().hex[:6]
    phases: dict[str, Phase] = {}
    previous = registry.routing()
    try:
        for policy in policies:
            config = registry.set_routing(routing_of(policy, weak))
            wait_for_routing(api, config.policy, 60, settings.model_poll_s)
            started = time.monotonic()
            visits = asyncio.run(replay(api, visitors, f"sim-{run}-{policy}", k=k, concurrency=concurrency,
                                        max_session_items=settings.max_session_items, timeout_s=timeout_s,
                                        progress=progress(policy, len(visitors)) if progress else None))
            seconds = time.monotonic() - started
            expected = sum(rewarded for v in visits for _, rewarded in v.steps)
            attributed, impressions = asyncio.run(
                wait_for_attribution(settings, config.experiment, [champion, weak], expected, 60))
            phases[policy] = Phase(policy, config.experiment, visits, seconds, attributed, impressions)
    finally:
        registry.set_routing(previous)
    off_policy = None
    if "ab" in phases:  # the logged A/B run, read back from the impressions topic and the reward log
        from evaluation.online_report import run as online_report

        report = online_report(settings, experiment=phases["ab"].experiment, session_prefix=f"sim-{run}-ab")
        off_policy = {arm: {"ctr": figures["ctr"], "ips": figures["ips"], "snips": figures["snips"]}
                      for arm, figures in report["arms"].items()}
    return summarize(phases, champion, weak, dataset, len(visitors), off_policy)


def summarize(phases: dict[str, Phase], champion: str, weak: str, dataset: Path, sessions: int,
              off_policy: dict[str, dict[str, float | None]] | None = None) -> dict[str, Any]:
    """The JSON contract: sessions, rewards simulated vs attributed, and one entry per policy;
    `off_policy`: per arm of the A/B run, the logged CTR and its IPS / SNIPS estimates."""
    ab = phases.get("ab")
    better = champion
    if ab is not None:
        rates = {arm: r / n for arm, (r, n) in ab.arm_reward().items() if n}
        better = max(rates, key=rates.get) if rates else champion
    out: dict[str, Any] = {
        "dataset": str(dataset), "sessions": sessions, "arms": {"strong": champion, "weak": weak},
        "better_arm": better,
        "rewards_simulated": sum(p.reward for p in phases.values()),
        "rewards_attributed": sum(sum(p.attributed.values()) for p in phases.values()),
        "policies": {},
    }
    for name, phase in phases.items():
        entry: dict[str, Any] = {
            "experiment": phase.experiment, "reward": phase.reward, "steps": phase.steps,
            "reward_rate": phase.reward / phase.steps if phase.steps else None, "seconds": round(phase.seconds, 1),
            "rewards_attributed": sum(phase.attributed.values()),
            "traffic": {arm: n for arm, (_, n) in phase.arm_reward().items()},
        }
        if name == "bandit":
            first = [v.arm for v in phase.visits[:FIRST_SESSIONS]]
            entry["better_arm_share_first_2000"] = first.count(better) / len(first) if first else None
            entry["weak_arm_sessions_first_200"] = [v.arm for v in phase.visits[:200]].count(weak)
        if name == "ab":
            entry["measured_ctr"] = {arm: r / n for arm, (r, n) in phase.arm_reward().items() if n}
            if off_policy is not None:
                entry["ips"] = {arm: f["ips"] for arm, f in off_policy.items()}
                entry["snips"] = {arm: f["snips"] for arm, f in off_policy.items()}
                entry["logged_ctr"] = {arm: f["ctr"] for arm, f in off_policy.items()}
        out["policies"][name] = entry
    if "best" in out["policies"] and out["policies"]["best"]["reward"]:
        best = out["policies"]["best"]["reward"]
        for entry in out["policies"].values():
            entry["reward_vs_best"] = entry["reward"] / best
    return out
