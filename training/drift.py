"""Drift detectors for `streamrec learn`: has the traffic moved away from what the champion was trained on?

Three statistics, each with a threshold measured on the data rather than picked:

- `ItemShift`: Jensen–Shannon distance between the item click distributions of the model's reference
  window and the latest window. Its threshold is the larger of the distance two random session
  samples of the reference lie apart at the latest window's size (split-halves, sessions as the
  unit: sampling noise at any window size) and the distance a fresh block of the reference lay from
  the data before it (the reference's own pace of change).
- `UnknownItems`: share of the latest window's clicks on items outside the model's catalogue, against
  the rate at which new items appeared inside the reference itself (its last part vs the rest).
- `RewardDrift`: river's ADWIN on the champion's per-request 0/1 rewards from the inference log,
  firing on a detected downward change of the click rate.

Pure logic on `Interactions` and arrays (no Kafka, no Redis): the learn job feeds it windows and
rewards and publishes `DriftReport.gauge_values()` through `training.drift_metrics`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
from river.drift import ADWIN

from streamrec.interactions import Interactions

CALIBRATION_DRAWS = 30  # null draws per check: enough for a mean and spread, ~0.1 s on 1M reference clicks
CALIBRATION_Z = 4.0  # threshold = null mean + z · null std: one-sided Gaussian tail ~3e-5 per check
PACE_BLOCKS = 8  # ItemShift: reference tail blocks measuring its own pace of change
REFERENCE_TAIL_SHARE = 0.2  # UnknownItems: at most this share of the reference (latest by time) is its "tail"
ADWIN_DELTA = 0.002  # river's default significance; ADWIN's bound already corrects for its many cut points

ITEM_SHIFT_RESPONDS_TO = (
    "which items are clicked, beyond sampling noise and the reference's own pace of change: popularity "
    "moving between items, clicks going outside the catalogue ('other' bucket); blind to click order "
    "within sessions, session length and volume")
UNKNOWN_ITEMS_RESPONDS_TO = (
    "new items the model cannot recommend or embed (catalogue growth, a relaunch, item-id changes); "
    "blind to shifts among known items")
REWARD_DRIFT_RESPONDS_TO = (
    "a drop of the champion's online click rate per request (stale model, broken features, UI change); "
    "blind to rises, and to the cause of a drop")


@dataclass(frozen=True)
class DriftStatistic:
    """One measured statistic: value against its calibrated threshold, and what it responds to."""

    name: str
    value: float
    threshold: float
    fired: bool
    responds_to: str
    details: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return f"{self.name} {self.value:.4g} > threshold {self.threshold:.4g}"


@dataclass(frozen=True)
class DriftReport:
    """The statistics of one check; `fired` if any of them fired, `reasons` saying which and by how much."""

    statistics: tuple[DriftStatistic, ...]

    @property
    def fired(self) -> bool:
        return any(s.fired for s in self.statistics)

    @property
    def reasons(self) -> list[str]:
        return [s.reason for s in self.statistics if s.fired]

    def get(self, name: str) -> DriftStatistic | None:
        return next((s for s in self.statistics if s.name == name), None)

    def to_dict(self) -> dict:
        return {"fired": self.fired, "reasons": self.reasons,
                "statistics": [asdict(s) for s in self.statistics]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def gauge_values(self) -> dict[str, float]:
        """Prometheus gauge name → value (see training.drift_metrics), for the statistics present."""
        values: dict[str, float] = {"streamrec_learn_drift_fired": float(self.fired)}
        for s in self.statistics:
            base = f"streamrec_learn_{s.name}"
            values[base] = float(s.value)
            values[f"{base}_threshold"] = float(s.threshold)
            values[f"{base}_fired"] = float(s.fired)
        return values


def _session_lengths(data: Interactions) -> np.ndarray:
    starts = data.session_starts()
    return np.diff(np.append(starts, len(data))).astype(np.int64)


def _require_clicks(data: Interactions, what: str) -> None:
    if len(data) == 0:
        raise ValueError(f"the {what} window has no clicks: nothing to compare")


SIZE_STEP = 1.05  # calibrations are cached per 5% step of the latest window's size


def _size_step(n_clicks: int) -> int:
    return int(round(math.log(max(int(n_clicks), 1)) / math.log(SIZE_STEP)))


def _step_size(step: int) -> int:
    return max(1, int(round(SIZE_STEP ** step)))


def js_distance(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between two count vectors over the same buckets."""
    p = counts_a / counts_a.sum()
    q = counts_b / counts_b.sum()
    m = 0.5 * (p + q)
    divergence = 0.0
    for x in (p, q):
        nz = x > 0
        divergence += 0.5 * float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))
    return math.sqrt(max(divergence, 0.0))


class ItemShift:
    """Distance between the reference's and the latest window's click distributions over items.

    Items are the catalogue's ids plus one 'other' bucket for every item outside it. The distance of
    two samples over ~10^4 items is mostly sampling noise, and real shops drift a little every day,
    so the threshold is the larger of two nulls measured on the reference alone:

    - sampling: draw reference sessions at random until they hold as many clicks as the latest window
      (at most half the reference), compare them with the remaining sessions, `draws` times; mean +
      z · std. A stationary replay stays below it at any window size.
    - pace: the reference's last blocks of that size (by session start, half-overlapping, the earlier
      part always at least half the reference), each against everything before it: how far a fresh
      window normally lies from the data before it. mean + z · std (std at least the sampling std).

    So it fires when the latest window is further from the model's data than fresh traffic was while
    that data was collected: a shift, or a model gone stale, not the ordinary week-to-week churn.
    """

    name = "item_shift"

    def __init__(self, reference: Interactions, catalogue: Iterable[int] | np.ndarray | None = None, *,
                 draws: int = CALIBRATION_DRAWS, z: float = CALIBRATION_Z, pace_blocks: int = PACE_BLOCKS,
                 seed: int = 0) -> None:
        _require_clicks(reference, "reference")
        if draws < 2:
            raise ValueError(f"draws must be at least 2 to measure a spread, got {draws}")
        items = reference.item_ids if catalogue is None else np.fromiter(catalogue, dtype=np.int64)
        self.catalogue = np.unique(np.asarray(items, dtype=np.int64))
        self.draws, self.z, self.pace_blocks, self.seed = draws, z, pace_blocks, seed
        self._ref_buckets = self._buckets(reference.item_ids)
        self._ref_session_of_row = reference.session_codes()
        self._ref_lengths = _session_lengths(reference)
        self._ref_counts = self._count(self._ref_buckets)
        # rows in session-start order, for the pace null's prefixes and blocks
        starts = reference.session_starts()
        session_rank = np.empty(len(starts), dtype=np.int64)
        session_rank[np.argsort(reference.timestamps[starts], kind="stable")] = np.arange(len(starts))
        self._buckets_in_time = self._ref_buckets[np.argsort(session_rank[self._ref_session_of_row], kind="stable")]
        self._calibrations: dict[int, dict[str, float]] = {}

    def _buckets(self, items: np.ndarray) -> np.ndarray:
        """Index into the catalogue per click; len(catalogue) (the 'other' bucket) for unknown items."""
        k = len(self.catalogue)
        pos = np.searchsorted(self.catalogue, items)
        known = pos < k
        known[known] = self.catalogue[pos[known]] == items[known]
        return np.where(known, pos, k)

    def _count(self, buckets: np.ndarray) -> np.ndarray:
        return np.bincount(buckets, minlength=len(self.catalogue) + 1).astype(np.float64)

    def sampling_null(self, n_clicks: int) -> np.ndarray:
        """Distances between a random `n_clicks`-click session sample of the reference and the rest."""
        total = int(self._ref_lengths.sum())
        target = max(1, min(int(n_clicks), total // 2))
        rng = np.random.default_rng(self.seed)
        n_sessions = len(self._ref_lengths)
        out = np.empty(self.draws)
        for i in range(self.draws):
            order = rng.permutation(n_sessions)
            taken = int(np.searchsorted(np.cumsum(self._ref_lengths[order]), target)) + 1
            chosen = np.zeros(n_sessions, dtype=bool)
            chosen[order[:min(taken, n_sessions - 1)]] = True
            sample = self._count(self._ref_buckets[chosen[self._ref_session_of_row]])
            out[i] = js_distance(sample, self._ref_counts - sample)
        return out

    def pace_null(self, n_clicks: int) -> np.ndarray:
        """Distances between the reference's last `n_clicks`-click blocks and everything before each.

        Blocks are cut at click positions (a session may straddle a cut: its clicks are counted on
        both sides of it, which only lowers these distances by a hair)."""
        total = len(self._buckets_in_time)
        size = max(1, min(int(n_clicks), total // 4))
        stride = max(1, size // 2)
        out: list[float] = []
        end = total
        while len(out) < self.pace_blocks and end - size >= total // 2:
            before = self._count(self._buckets_in_time[:end - size])
            out.append(js_distance(before, self._count(self._buckets_in_time[end - size:end])))
            end -= stride
        return np.asarray(out)

    def check(self, latest: Interactions) -> DriftStatistic:
        _require_clicks(latest, "latest")
        value = js_distance(self._ref_counts, self._count(self._buckets(latest.item_ids)))
        calibration = self.calibration(len(latest))
        return DriftStatistic(self.name, value, calibration["threshold"], value > calibration["threshold"],
                              ITEM_SHIFT_RESPONDS_TO, {**calibration, "latest_clicks": len(latest),
                                                       "reference_clicks": int(self._ref_counts.sum())})

    def calibration(self, n_clicks: int) -> dict[str, float]:
        """Both nulls and the threshold for a latest window of about `n_clicks`, cached per 5% size
        step: the learn job checks every minute with similar windows, and the reference is fixed."""
        key = _size_step(n_clicks)
        if key not in self._calibrations:
            size = _step_size(key)
            sampling = self.sampling_null(size)
            s_mean, s_std = float(sampling.mean()), float(sampling.std(ddof=1))
            pace = self.pace_null(size)
            p_mean = float(pace.mean()) if len(pace) else s_mean
            p_std = max(float(pace.std(ddof=1)) if len(pace) > 1 else 0.0, s_std)
            threshold = max(s_mean + self.z * s_std, p_mean + self.z * p_std)
            if len(self._calibrations) >= 64:
                self._calibrations.pop(next(iter(self._calibrations)))
            self._calibrations[key] = {"threshold": threshold, "sampling_mean": s_mean, "sampling_std": s_std,
                                       "pace_mean": p_mean, "pace_std": p_std, "pace_blocks": float(len(pace)),
                                       "calibrated_clicks": float(size)}
        return self._calibrations[key]


class UnknownItems:
    """Share of the latest window's clicks on items outside the model's catalogue.

    Baseline: inside the reference, the share of its last part's clicks (by session start; as many
    clicks as the latest window, at most `tail_share` of the reference) on items its earlier part never
    showed often enough to enter a catalogue built like this one (its implied minimum click count) —
    the rate at which items unknown to the model turned up while its data was collected. Threshold = that rate + z · its session-bootstrap std (at the latest window's
    size): new items arriving at the usual pace do not fire it.
    """

    name = "unknown_item_share"

    def __init__(self, reference: Interactions, catalogue: Iterable[int] | np.ndarray | None = None, *,
                 tail_share: float = REFERENCE_TAIL_SHARE, draws: int = CALIBRATION_DRAWS,
                 z: float = CALIBRATION_Z, seed: int = 0) -> None:
        _require_clicks(reference, "reference")
        if not 0 < tail_share < 1:
            raise ValueError(f"tail_share must be in (0, 1), got {tail_share}")
        items = reference.item_ids if catalogue is None else np.fromiter(catalogue, dtype=np.int64)
        self.catalogue = np.unique(np.asarray(items, dtype=np.int64))
        self.tail_share, self.draws, self.z, self.seed = tail_share, draws, z, seed
        starts = reference.session_starts()
        self._ref = reference
        self._ref_lengths = _session_lengths(reference)
        self._ref_order = np.argsort(reference.timestamps[starts], kind="stable")  # sessions by start
        self._baselines: dict[int, tuple[float, float, int]] = {}
        # the catalogue's implied minimum click count (1 when it holds every reference item)
        ref_items, ref_counts = np.unique(reference.item_ids, return_counts=True)
        in_catalogue = np.isin(ref_items, self.catalogue)
        self._min_count = int(ref_counts[in_catalogue].min()) if in_catalogue.any() else 1

    def _baseline(self, n_clicks: int) -> tuple[float, float, int]:
        """(new-item share of the reference's tail, its bootstrap std, tail clicks) for a latest window
        of `n_clicks`."""
        lengths = self._ref_lengths[self._ref_order]
        total = int(lengths.sum())
        target = max(1, min(int(n_clicks), int(total * self.tail_share)))
        from_end = np.cumsum(lengths[::-1])
        n_tail = min(int(np.searchsorted(from_end, target)) + 1, len(lengths) - 1)
        tail = np.zeros(len(lengths), dtype=bool)
        tail[self._ref_order[len(lengths) - n_tail:]] = True
        in_tail = tail[self._ref.session_codes()]
        # unknown to a model built the same way from the head alone: a catalogue that keeps items
        # with at least `min_count` reference clicks would keep head items with that many head clicks
        head_items, head_counts = np.unique(self._ref.item_ids[~in_tail], return_counts=True)
        known_head = head_items[(head_counts >= self._min_count) & np.isin(head_items, self.catalogue)]
        new = ~np.isin(self._ref.item_ids[in_tail], known_head)
        # per-session counts of new clicks, then a session bootstrap of the share
        tail_sessions = self._ref.session_codes()[in_tail]
        _, session_index = np.unique(tail_sessions, return_inverse=True)
        new_per = np.bincount(session_index, weights=new.astype(np.float64))
        len_per = np.bincount(session_index).astype(np.float64)
        rng = np.random.default_rng(self.seed)
        picks = rng.integers(0, len(len_per), size=(self.draws, len(len_per)))
        shares = new_per[picks].sum(axis=1) / len_per[picks].sum(axis=1)
        return float(new.mean()), float(shares.std(ddof=1)), int(in_tail.sum())

    def check(self, latest: Interactions) -> DriftStatistic:
        _require_clicks(latest, "latest")
        value = float(np.mean(~np.isin(latest.item_ids, self.catalogue)))
        key = _size_step(len(latest))
        if key not in self._baselines:
            if len(self._baselines) >= 64:
                self._baselines.pop(next(iter(self._baselines)))
            self._baselines[key] = self._baseline(_step_size(key))  # cached like ItemShift's calibration
        base, std, tail_clicks = self._baselines[key]
        # the bootstrap std is the tail's; at the latest window's size it scales with 1/sqrt(clicks)
        std_latest = std * math.sqrt(tail_clicks / len(latest))
        threshold = base + self.z * std_latest
        return DriftStatistic(self.name, value, threshold, value > threshold, UNKNOWN_ITEMS_RESPONDS_TO,
                              {"reference_new_item_share": base, "std": std_latest,
                               "reference_tail_clicks": tail_clicks, "latest_clicks": len(latest)})


class RewardDrift:
    """river's ADWIN over the champion's 0/1 rewards per request, in inference-log order.

    Stateful: feed each check's new rewards with `update`; a detected change whose new mean is below
    the old one fires (a rise does not). `reset` when a new champion starts serving.
    """

    name = "reward_drift"

    def __init__(self, *, delta: float = ADWIN_DELTA) -> None:
        self.delta = delta
        self.reset()

    def reset(self) -> None:
        self._adwin = ADWIN(delta=self.delta)
        self.seen = 0
        self.drop: tuple[float, float, int] | None = None  # (mean before, mean after, at reward #)

    def update(self, rewards: Iterable[float]) -> DriftStatistic:
        for reward in rewards:
            r = float(reward)
            if r not in (0.0, 1.0):
                raise ValueError(f"rewards are 0/1 clicks per request, got {reward!r}")
            width_before, sum_before = self._adwin.width, self._adwin.estimation * self._adwin.width
            self._adwin.update(r)
            self.seen += 1
            if self._adwin.drift_detected and self.drop is None:
                # ADWIN dropped its older part: compare that part's mean with what it kept
                kept, kept_mean = self._adwin.width, self._adwin.estimation
                dropped = width_before + 1 - kept
                dropped_mean = (sum_before + r - kept_mean * kept) / dropped if dropped > 0 else kept_mean
                if kept_mean < dropped_mean:
                    self.drop = (float(dropped_mean), float(kept_mean), self.seen)
        return self.statistic()

    def statistic(self) -> DriftStatistic:
        current = float(self._adwin.estimation) if self.seen else float("nan")
        details: dict[str, float | int | str] = {"rewards_seen": self.seen, "window": int(self._adwin.width),
                                                 "reward_mean": current, "delta": self.delta}
        if self.drop is not None:
            details.update(mean_before=self.drop[0], mean_after=self.drop[1], detected_at=self.drop[2])
        # value: 1 once a downward change was detected since the last reset; threshold 0.5 for the gauge pair
        return DriftStatistic(self.name, float(self.drop is not None), 0.5, self.drop is not None,
                              REWARD_DRIFT_RESPONDS_TO, details)


def check_drift(item_shift: ItemShift | None, unknown_items: UnknownItems | None, latest: Interactions | None,
                reward_drift: RewardDrift | None = None, rewards: Iterable[float] = ()) -> DriftReport:
    """One check of every detector given: the latest window against the reference, new rewards fed."""
    stats: list[DriftStatistic] = []
    if latest is not None and len(latest):
        if item_shift is not None:
            stats.append(item_shift.check(latest))
        if unknown_items is not None:
            stats.append(unknown_items.check(latest))
    if reward_drift is not None:
        stats.append(reward_drift.update(rewards))
    return DriftReport(tuple(stats))
