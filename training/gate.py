"""The promotion gate: a candidate version against the champion on the freshest clicks.

Prequential: the hold-out is the newest slice of data, which neither version has trained on, and
both are scored on the same cases by the same code (`training.ranker`'s examples and figures:
a case whose next item no generator proposes counts as a miss). The candidate passes when its
metric is not below the champion's by more than `margin` points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from candidates.bundle import ModelBundle
from candidates.features import FEATURE_NAMES
from streamrec.interactions import Interactions
from training.ranker import Examples


@dataclass(frozen=True)
class GateDecision:
    """What the gate measured and decided (logged with the candidate version)."""

    candidate: str
    champion: str
    metric: str
    candidate_score: float
    champion_score: float
    margin: float
    cases: int
    passed: bool
    at: str
    candidate_figures: dict[str, float]
    champion_figures: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        verdict = "passed" if self.passed else "rejected"
        return (f"{verdict}: {self.metric} {self.candidate_score:.2f} vs champion {self.champion_score:.2f} "
                f"(margin {self.margin}) on {self.cases:,} fresh cases")


def holdout_examples(bundle: ModelBundle, data: Interactions, *, max_cases: int = 5000, decay: float = 0.7,
                     ann_k: int = 100, max_session_items: int = 50, seed: int = 0,
                     history: Interactions | None = None) -> Examples:
    """`bundle`'s candidates and features for the next-item cases of `data` (sampled to `max_cases`,
    the same cases for every bundle given the same seed), streaming features included.
    `history`: the clicks the streaming features are counted from (default `data`), when the
    ranker reads them and the clicks have real time."""
    from training.continual import streaming_features
    from training.ranker import add_streaming, build_examples

    try:
        examples = build_examples(bundle.generators(ann_k), data, max_cases, decay, max_session_items, seed)
    except ValueError:  # no case has its label among the candidates
        from streamrec.interactions import next_item_rows

        cases = len(next_item_rows(data, max_cases, seed)[0])
        examples = Examples(np.zeros((0, len(FEATURE_NAMES)), np.float32), np.zeros(0, np.int32),
                            np.zeros(0, np.int64), cases, np.zeros(0, np.int64), np.zeros(0))
    add_streaming(examples, streaming_features(bundle, history if history is not None else data)
                  if len(examples.labels) else None)
    return examples


def examples_quality(bundle: ModelBundle, examples: Examples) -> dict[str, float]:
    """HR/MRR/NDCG@20 (percent) of `bundle`'s ranker on its own `examples`, and their case count."""
    from training.ranker import ranking_quality

    if bundle.ranker is not None:
        columns = [FEATURE_NAMES.index(name) for name in bundle.ranker.features]
        scores = bundle.ranker.booster.predict(examples.features[:, columns]) if len(examples.labels) else np.zeros(0)
    else:
        scores = examples.features[:, FEATURE_NAMES.index("session_knn")]
    return {**ranking_quality(scores, examples), "cases": int(examples.cases)}


def version_quality(bundle: ModelBundle, data: Interactions, **options: Any) -> dict[str, float]:
    """HR/MRR/NDCG@20 (percent) of `bundle` on the next-item cases of `data` (`holdout_examples`'s options)."""
    return examples_quality(bundle, holdout_examples(bundle, data, **options))


def scored_gate(candidate: ModelBundle, champion: ModelBundle, holdout: Interactions, *, margin: float,
                metric: str = "HR@20", **options: Any) -> tuple[GateDecision, dict[str, Examples]]:
    """The decision and both versions' hold-out examples (by version): fresh examples no version has
    trained on, which the next version's ranker continues on (training.continual) instead of cutting
    its own."""
    examples = {bundle.version: holdout_examples(bundle, holdout, **options) for bundle in (candidate, champion)}
    ours, theirs = (examples_quality(bundle, examples[bundle.version]) for bundle in (candidate, champion))
    decision = GateDecision(candidate.version, champion.version, metric, ours[metric], theirs[metric], margin,
                            ours["cases"], ours[metric] >= theirs[metric] - margin,
                            datetime.now(timezone.utc).isoformat(timespec="seconds"), ours, theirs)
    return decision, examples


def gate(candidate: ModelBundle, champion: ModelBundle, holdout: Interactions, *, margin: float,
         metric: str = "HR@20", **options: Any) -> GateDecision:
    """Score both versions on `holdout` and decide (see the module docstring)."""
    return scored_gate(candidate, champion, holdout, margin=margin, metric=metric, **options)[0]
