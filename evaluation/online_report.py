"""The online report: each model version's live figures, from the inference log and the reward log.

Reads the impressions topic (every record the API logged: what each `/recommend` answer showed, by
which version, with which propensity) and the reward log (`streamrec.arm_stats.REWARD_LOG`, one
entry per impression the worker counted as clicked), for one experiment (a routing config), and
computes per arm:

- served impressions, clicked impressions, CTR with its Wilson 95% interval, MRR of the clicked
  ranks, and its share of the traffic, overall and over time (buckets of equal numbers of impressions);
- the shadow arms apart: their lists were logged, not shown; a "hit" is a shadow list that held the
  item the visitor then clicked, compared with the champion's CTR on the same requests;
- off-policy estimates of each arm's CTR had it served every request, from the logged propensities
  p_i of the N served impressions (arm a_i, reward r_i in {0, 1}):
  IPS(a) = (1/N) Σ 1[a_i = a] r_i / p_i and SNIPS(a) = Σ 1[a_i = a] r_i / p_i / Σ 1[a_i = a] / p_i;
- cumulative reward (clicked impressions) per arm over time.

`online_report` is pure (impressions and rewards in, a JSON-ready dict out); `run` reads Kafka and
Redis, writes the plots and returns the same dict with their paths.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrec.arm_stats import REWARD_LOG, ctr_interval
from streamrec.impressions import Impression, InvalidImpression
from streamrec.settings import Settings

BUCKETS = 20  # traffic share over time: this many buckets of equal numbers of impressions
READ_TIMEOUT_S = 120.0  # reading the impressions topic stops after this long (the report says so)
BOOTSTRAP_TIMEOUT_MS = 10_000  # Kafka unreachable: say so after this long
REWARD_PAGE = 10_000  # reward log entries per XRANGE call
CUMULATIVE_POINTS = 200  # cumulative reward per arm: this many points (evenly spread over the impressions)

Progress = Callable[[int, int], None]  # (records read so far, records to read)


class ReportError(RuntimeError):
    """The report cannot be made; the message says what to do."""


@dataclass(frozen=True)
class RewardEntry:
    """One entry of the reward log: the impression (request, version, shown or shadow) it rewards."""

    request_id: str
    experiment: str
    version: str
    rank: int
    shadow: bool
    click_ts: float = 0.0

    @classmethod
    def from_fields(cls, fields: dict) -> "RewardEntry":
        """From XRANGE's field mapping (bytes or str)."""
        plain = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                 for k, v in fields.items()}
        return cls(plain["request_id"], plain["experiment"], plain["version"], int(plain["rank"]),
                   plain.get("shadow", "0") not in ("0", ""), float(plain.get("click_ts") or 0.0))


# --------------------------------------------------------------------------- the figures (pure)
def off_policy(arms: Sequence[str], rewards: Sequence[float], propensities: Sequence[float],
               candidates: Iterable[str]) -> dict[str, dict[str, float | None]]:
    """IPS and SNIPS of each candidate arm (the policy "always this arm"), from logged (arm, reward,
    propensity) triples; None for SNIPS when the arm was never served."""
    arm = np.asarray(arms, dtype=object)
    reward = np.asarray(rewards, dtype=float)
    weight = 1.0 / np.asarray(propensities, dtype=float)
    n = len(arm)
    out: dict[str, dict[str, float | None]] = {}
    for candidate in candidates:
        mine = arm == candidate
        weighted = float(np.sum(reward[mine] * weight[mine]))
        norm = float(np.sum(weight[mine]))
        out[candidate] = {"ips": weighted / n if n else None, "snips": weighted / norm if norm else None}
    return out


def share_over_time(served: Sequence[Impression], arms: Sequence[str], clicked: set[tuple[str, str]],
                    buckets: int = BUCKETS) -> list[dict]:
    """`served` in time order cut into `buckets` runs of (nearly) equal length: each run's time span,
    size, each arm's share of it and each arm's cumulative clicked impressions at its end."""
    if not served:
        return []
    out = []
    cumulative = dict.fromkeys(arms, 0)
    for chunk in np.array_split(np.arange(len(served)), min(buckets, len(served))):
        part = [served[i] for i in chunk]
        counts = Counter(i.model_version for i in part)
        for i in part:
            if (i.request_id, i.model_version) in clicked:
                cumulative[i.model_version] += 1
        out.append({"start_ts": part[0].ts, "end_ts": part[-1].ts, "impressions": len(part),
                    "share": {a: counts.get(a, 0) / len(part) for a in arms},
                    "cumulative_clicked": dict(cumulative)})
    return out


def _rate(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def online_report(impressions: Iterable[Impression], rewards: Iterable[RewardEntry], experiment: str | None = None,
                  *, buckets: int = BUCKETS, session_prefix: str = "") -> dict:
    """The report of `experiment` (default: the experiment of the newest impression), on the
    sessions whose id starts with `session_prefix`. Rewards of other experiments, or of impressions
    not in `impressions`, are ignored."""
    impressions = [i for i in impressions if i.session_id.startswith(session_prefix)]
    experiments = Counter(i.experiment for i in impressions)
    if experiment is None and impressions:
        experiment = max(impressions, key=lambda i: i.ts).experiment
    mine = sorted((i for i in impressions if i.experiment == experiment), key=lambda i: (i.ts, i.request_id))
    served = [i for i in mine if not i.shadow]
    shadowed = [i for i in mine if i.shadow]
    rank_of: dict[tuple[str, str, bool], int] = {}
    for r in rewards:
        if r.experiment == experiment:
            rank_of.setdefault((r.request_id, r.version, r.shadow), r.rank)
    clicked = {(i.request_id, i.model_version) for i in served if (i.request_id, i.model_version, False) in rank_of}

    # arms in order of first appearance, so the champion of a single/shadow experiment comes first
    arms = list(dict.fromkeys(i.model_version for i in served))
    off = off_policy([i.model_version for i in served],
                     [1.0 if (i.request_id, i.model_version) in clicked else 0.0 for i in served],
                     [i.propensity for i in served], arms)
    per_arm: dict[str, dict] = {}
    for arm in arms:
        shown = [i for i in served if i.model_version == arm]
        ranks = [rank_of[(i.request_id, arm, False)] for i in shown if (i.request_id, arm) in clicked]
        interval = ctr_interval(len(ranks), len(shown))
        per_arm[arm] = {
            "impressions": len(shown), "clicked": len(ranks), "ctr": _rate(len(ranks), len(shown)),
            "ctr_low": interval[0] if interval else None, "ctr_high": interval[1] if interval else None,
            "mrr": _rate(sum(1.0 / r for r in ranks), len(ranks)), "share": _rate(len(shown), len(served)),
            "propensity_mean": _rate(sum(i.propensity for i in shown), len(shown)), **off[arm],
        }

    served_by_request = {i.request_id: i for i in served}
    shadow: dict[str, dict] = {}
    for arm in dict.fromkeys(i.model_version for i in shadowed):
        lists = [i for i in shadowed if i.model_version == arm]
        hits = sum((i.request_id, arm, True) in rank_of for i in lists)
        same = [served_by_request[i.request_id] for i in lists if i.request_id in served_by_request]
        champion_clicked = sum((i.request_id, i.model_version) in clicked for i in same)
        interval = ctr_interval(hits, len(lists))
        shadow[arm] = {
            "impressions": len(lists), "hits": hits, "ctr": _rate(hits, len(lists)),
            "ctr_low": interval[0] if interval else None, "ctr_high": interval[1] if interval else None,
            "served_on_same_requests": {"versions": sorted({i.model_version for i in same}),
                                        "impressions": len(same), "clicked": champion_clicked,
                                        "ctr": _rate(champion_clicked, len(same))},
        }

    return {
        "experiment": experiment,
        "experiments": dict(experiments),
        "session_prefix": session_prefix or None,
        "policies": sorted({i.policy for i in mine}),
        "from_ts": served[0].ts if served else None,
        "to_ts": served[-1].ts if served else None,
        "impressions": len(served),
        "clicked": len(clicked),
        "ctr": _rate(len(clicked), len(served)),
        "arms": per_arm,
        "shadow": shadow,
        "share_over_time": share_over_time(served, arms, clicked, buckets),
        "cumulative_reward": cumulative_reward(served, arms, clicked),
    }


def cumulative_reward(served: Sequence[Impression], arms: Sequence[str], clicked: set[tuple[str, str]],
                      points: int = CUMULATIVE_POINTS) -> dict:
    """Each arm's clicked impressions so far, at up to `points` moments evenly spread over `served`
    (in time order): {"ts": [...], "clicked": {arm: [...]}}."""
    if not served:
        return {"ts": [], "clicked": {a: [] for a in arms}}
    running = dict.fromkeys(arms, 0)
    ends = {int(chunk[-1]) for chunk in np.array_split(np.arange(len(served)), min(points, len(served)))}
    out: dict = {"ts": [], "clicked": {a: [] for a in arms}}
    for n, i in enumerate(served):
        if (i.request_id, i.model_version) in clicked:
            running[i.model_version] += 1
        if n in ends:
            out["ts"].append(i.ts)
            for a in arms:
                out["clicked"][a].append(running[a])
    return out


# --------------------------------------------------------------------------- reading the logs
def read_impressions(settings: Settings, *, timeout_s: float = READ_TIMEOUT_S,
                     progress: Progress | None = None) -> tuple[list[Impression], dict]:
    """Every record of the impressions topic, all partitions, from the beginning to the end offsets
    taken when the read starts, for at most `timeout_s`. Returns the valid impressions and what was
    read: records, invalid ones, and whether the time ran out first (`complete`)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaTimeoutError

    topic = settings.impressions_topic
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                 auto_offset_reset="earliest", request_timeout_ms=15_000,
                                 bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)
    except KafkaTimeoutError as exc:
        raise ReportError(f"Kafka at {settings.kafka_bootstrap} is unreachable ({exc}): "
                          "start it with `streamrec up`") from None
    impressions: list[Impression] = []
    invalid = 0
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return [], {"topic": topic, "records": 0, "invalid": 0, "complete": True}
        consumer.assign(partitions)
        starts = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
        consumer.seek_to_beginning(*partitions)
        total = sum(ends[tp] - starts[tp] for tp in partitions)
        deadline = time.monotonic() + timeout_s
        read = 0
        pending = {tp for tp in partitions if ends[tp] > starts[tp]}
        while pending and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000, max_records=10_000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue  # written after the read began
                    read += 1
                    try:
                        impressions.append(Impression.from_bytes(record.value))
                    except InvalidImpression:
                        invalid += 1
            pending = {tp for tp in pending if consumer.position(tp) < ends[tp]}
            if progress:
                progress(read, total)
        return impressions, {"topic": topic, "records": read, "invalid": invalid, "complete": not pending}
    finally:
        consumer.close()


def read_rewards(client, experiment: str | None = None, page: int = REWARD_PAGE) -> list[RewardEntry]:  # noqa: ANN001
    """The reward log's entries (of `experiment` when given), read with XRANGE `page` entries at a
    time (client: redis.Redis)."""
    entries: list[RewardEntry] = []
    start = "-"
    while True:
        batch = client.xrange(REWARD_LOG, min=start, max="+", count=page)
        for entry_id, fields in batch:
            try:
                entry = RewardEntry.from_fields(fields)
            except (KeyError, ValueError):
                continue  # not written by the worker's attribution
            if experiment is None or entry.experiment == experiment:
                entries.append(entry)
        if len(batch) < page:
            return entries
        last = batch[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else last)


# --------------------------------------------------------------------------- plots
def write_plots(report: dict, out: Path) -> dict[str, str]:
    """traffic_share.png, ctr.png, cumulative_reward.png in `out`; returns their paths by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    arms = list(report["arms"])
    origin = report["from_ts"] or 0.0
    colors = {arm: f"C{n % 10}" for n, arm in enumerate(arms)}
    title = f"experiment {report['experiment']}"
    paths: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(8, 4))
    buckets = report["share_over_time"]
    minutes = [(b["end_ts"] - origin) / 60 for b in buckets]
    for arm in arms:
        ax.plot(minutes, [b["share"][arm] for b in buckets], marker="o", markersize=3, label=arm, color=colors[arm])
    ax.set(xlabel="minutes since the first impression (end of each bucket)", ylabel="share of served impressions",
           ylim=(0, 1.02), title=f"Traffic share over time, {title}")
    ax.legend(loc="best", fontsize="small")
    paths["traffic_share"] = _save(fig, out / "traffic_share.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(arms))
    ctr = [report["arms"][a]["ctr"] or 0.0 for a in arms]
    low = [ctr[n] - (report["arms"][a]["ctr_low"] or 0.0) for n, a in enumerate(arms)]
    high = [(report["arms"][a]["ctr_high"] or 0.0) - ctr[n] for n, a in enumerate(arms)]
    ax.bar(x, ctr, yerr=[low, high], capsize=6, color=[colors[a] for a in arms], alpha=0.8, label="CTR, Wilson 95%")
    for name, marker in (("ips", "x"), ("snips", "+")):
        values = [report["arms"][a][name] for a in arms]
        ax.scatter([n for n, v in zip(x, values) if v is not None], [v for v in values if v is not None],
                   marker=marker, color="black", s=60, zorder=3, label=name.upper())
    ax.set_xticks(x, [f"{a}\n{report['arms'][a]['impressions']} shown" for a in arms], fontsize="small")
    ax.set(ylabel="clicked impressions / impressions", title=f"CTR per arm, {title}")
    ax.legend(loc="best", fontsize="small")
    paths["ctr"] = _save(fig, out / "ctr.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    cumulative = report["cumulative_reward"]
    for arm in arms:
        ax.plot([0.0] + [(t - origin) / 60 for t in cumulative["ts"]], [0] + cumulative["clicked"][arm],
                label=arm, color=colors[arm])
    ax.set(xlabel="minutes since the first impression", ylabel="clicked impressions (cumulative)",
           title=f"Cumulative reward per arm, {title}")
    ax.legend(loc="best", fontsize="small")
    paths["cumulative_reward"] = _save(fig, out / "cumulative_reward.png")
    return paths


def _save(fig, path: Path) -> str:  # noqa: ANN001
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# --------------------------------------------------------------------------- the command's work
def default_out(settings: Settings, experiment: str) -> Path:
    return settings.data_dir / "reports" / f"online-{experiment}"


def run(settings: Settings, *, experiment: str | None = None, out: Path | None = None, session_prefix: str = "",
        buckets: int = BUCKETS, timeout_s: float = READ_TIMEOUT_S, progress: Progress | None = None) -> dict:
    """Read both logs, compute the report, write its plots; the dict has `read` (what was read) and
    `plots` (paths) besides the figures."""
    import redis

    started = time.monotonic()
    impressions, read = read_impressions(settings, timeout_s=timeout_s, progress=progress)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
    try:
        chosen = experiment
        if chosen is None:
            scope = [i for i in impressions if i.session_id.startswith(session_prefix)]
            chosen = max(scope, key=lambda i: i.ts).experiment if scope else None
        rewards = read_rewards(client, chosen) if chosen is not None else []
    except redis.RedisError as exc:
        raise ReportError(f"Redis at {settings.redis_url} is unreachable ({exc}): start it with `streamrec up`") from None
    finally:
        client.close()
    report = online_report(impressions, rewards, chosen, buckets=buckets, session_prefix=session_prefix)
    if report["experiment"] is None:
        raise ReportError(f"no impressions in the topic {settings.impressions_topic!r}"
                          + (f" for sessions starting with {session_prefix!r}" if session_prefix else "")
                          + ": the API logs one per /recommend answer")
    report["read"] = {**read, "rewards": len(rewards), "seconds": round(time.monotonic() - started, 3)}
    target = out or default_out(settings, report["experiment"])
    report["plots"] = write_plots(report, target) if report["impressions"] else {}
    report["out"] = str(target)
    return report
