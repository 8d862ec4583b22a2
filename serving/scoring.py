"""Score candidates: the learned ranker of the model version, or a transparent blend without one.

The ranker (LightGBM LambdaRank, trained by `training.ranker` on a validation split carved from
training data) reads the feature columns it was trained on, in order, from `candidates.features`.
Model versions without a ranker use the blend: session-kNN leads, embedding similarity and
co-visitation refine, popularity and trending break ties (weights set a priori, not tuned).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from candidates.features import CandidateSet
from streamrec.artifacts import RANKER, RANKER_BATCH_ONLY, RANKER_META



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

    def __init__(self, booster=None, feature_names: tuple[str, ...] = (), weights: BlendWeights = BlendWeights()):
        self.booster = booster
        self.feature_names = feature_names
        self.weights = weights

    @property
    def uses(self) -> frozenset[str]:
        """Candidate features this scorer reads: the request path skips fetching the others."""
        if self.booster is not None:
            return frozenset(self.feature_names)
        return frozenset(f.name for f in fields(BlendWeights))  # one weight per feature the blend reads

    @property
    def kind(self) -> str:
        return "lightgbm-lambdarank" if self.booster is not None else "blend"

    @classmethod
    def load(cls, folder: Path, *, batch_only: bool = False) -> "Scorer":
        """The version's ranker; `batch_only`: its twin trained without the streaming features."""
        path = Path(folder) / (RANKER_BATCH_ONLY if batch_only else RANKER)
        if not path.exists():
            if batch_only:
                raise FileNotFoundError(f"{path}: this model version was trained without streaming features")
            return cls()
        lgb = import_lightgbm()
        meta = json.loads((Path(folder) / RANKER_META).read_text())
        return cls(lgb.Booster(model_file=str(path)), tuple(meta["batch_only_features" if batch_only else "features"]))

    def score(self, candidates: CandidateSet) -> np.ndarray:
        if self.booster is not None:
            return np.asarray(self.booster.predict(candidates.matrix(self.feature_names), num_threads=1))
        f, w = candidates.features, self.weights
        return (w.session_knn * _unit(f["session_knn"]) + w.similarity * f["similarity"]
                + w.covisitation * _unit(f["covisitation"]) + w.popularity * _unit(f["popularity"])
                + w.clicks_1h * _unit(np.log1p(f["clicks_1h"])))


# LightGBM imports these when it finds them, only to accept their frame types as input; the API
# passes numpy arrays, and pandas alone costs ~0.5 s of start-up and tens of MB per worker.
_LIGHTGBM_OPTIONAL = ("pandas", "sklearn", "dask", "pyarrow", "datatable", "cffi")


def import_lightgbm():
    """`import lightgbm` without loading its optional frame libraries (a `None` entry in
    `sys.modules` makes Python's import raise ImportError, and lightgbm.compat then falls back to
    numpy-only input). Libraries already loaded (training, evaluation) are left as they are."""
    import sys

    if "lightgbm" in sys.modules:
        return sys.modules["lightgbm"]
    hidden = [name for name in _LIGHTGBM_OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import lightgbm
    finally:
        for name in hidden:
            if sys.modules.get(name) is None:
                del sys.modules[name]
    return lightgbm


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
