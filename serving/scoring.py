"""Score candidates: the learned ranker of the model version, or a transparent blend without one,
or popularity alone (a baseline version, `streamrec models baseline`).

The ranker (LightGBM LambdaRank, trained by `training.ranker` on a validation split carved from
training data) reads the feature columns it was trained on, in order, from `candidates.features`.
Model versions without a ranker use the blend: session-kNN leads, embedding similarity and
co-visitation refine, popularity and trending break ties (weights set a priori, not tuned).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from candidates.features import CandidateSet
from candidates.ranker_model import RankerModel


POPULARITY = "popularity"  # meta.json `scorer` of a popularity baseline version


@dataclass(frozen=True)
class BlendWeights:
    session_knn: float = 1.0
    similarity: float = 0.3
    covisitation: float = 0.3
    popularity: float = 0.02
    clicks_1h: float = 0.05


def _unit(values: np.ndarray) -> np.ndarray:
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else np.zeros_like(values, dtype=np.float32)


class Scorer:
    """`score(candidates) -> scores`, by the learned ranker when the model version has one."""

    def __init__(self, ranker: RankerModel | None = None, weights: BlendWeights = BlendWeights(), *,
                 popularity_only: bool = False) -> None:
        """`popularity_only`: rank the candidates by training popularity alone (a baseline arm
        for A/B tests and bandits: what the session adds is measured against it)."""
        self.booster = ranker.booster if ranker is not None and not popularity_only else None
        self.feature_names = ranker.features if self.booster is not None else ()
        self.weights = weights
        self.popularity_only = popularity_only

    @classmethod
    def for_version(cls, ranker: RankerModel | None, meta: dict) -> "Scorer":
        """The scorer a model version asks for (its meta's `scorer`), its ranker by default."""
        return cls(ranker, popularity_only=meta.get("scorer") == POPULARITY)

    @property
    def uses(self) -> frozenset[str]:
        """Candidate features this scorer reads: the request path skips fetching the others."""
        if self.popularity_only:
            return frozenset({"popularity"})
        if self.booster is not None:
            return frozenset(self.feature_names)
        return frozenset(f.name for f in fields(BlendWeights))  # one weight per feature the blend reads

    @property
    def kind(self) -> str:
        if self.popularity_only:
            return POPULARITY
        return "lightgbm-lambdarank" if self.booster is not None else "blend"

    def score(self, candidates: CandidateSet) -> np.ndarray:
        if self.popularity_only:
            return np.asarray(candidates.features["popularity"], dtype=np.float32)
        if self.booster is not None:
            return np.asarray(self.booster.predict(candidates.matrix(self.feature_names), num_threads=1))
        f, w = candidates.features, self.weights
        return (w.session_knn * _unit(f["session_knn"]) + w.similarity * f["similarity"]
                + w.covisitation * _unit(f["covisitation"]) + w.popularity * _unit(f["popularity"])
                + w.clicks_1h * _unit(np.log1p(f["clicks_1h"])))


def top_k(item_ids: np.ndarray, scores: np.ndarray, k: int, exclude: set[int]) -> list[tuple[int, float]]:
    """Best k (item, score) pairs, skipping excluded items."""
    order = np.argsort(-scores, kind="stable")
    out: list[tuple[int, float]] = []
    for position in order:
        item = int(item_ids[position])
        if item in exclude:
            continue
        out.append((item, float(scores[position])))
        if len(out) == k:
            break
    return out
