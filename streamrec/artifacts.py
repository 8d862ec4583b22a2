"""The on-disk contract between training (writes) and candidates/serving/evaluation (read).

A model version is one folder under `<data_dir>/models/<version>/`; the file `CURRENT` names
the version to serve. Everything a server needs to answer without Redis (fallback lists,
embeddings for the index) lives in that folder, so a version is self-contained and immutable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.item_rows import ItemRows

ITEM_IDS = "item_ids.npy"  # int64 [n]: catalogue item ids, row order of every per-item array
ITEM_EMBEDDINGS = "item_embeddings.npy"  # float32 [n, d], L2-normalised rows
ITEM_POPULARITY = "item_popularity.npy"  # int64 [n]: training clicks per item
ITEM_RECENT_POPULARITY = "item_recent_popularity.npy"  # int64 [n]: clicks in the latest part of training
ITEM_CATEGORIES = "item_categories.npy"  # int64 [n]: category per item, -1 unknown; only if the dataset has them
POPULAR = "popular.npy"  # int64 [m]: item ids, most popular first
COVISIT = "covisit.npz"  # CSR by item row: indptr [n+1], neighbours (item ids), scores float32
INDEX = "index.faiss"  # FAISS index, id-mapped to item ids
INDEX_META = "index.json"  # index type, parameters and measured recall
META = "meta.json"  # version, dataset, algorithm, validation figures
SESSION_KNN = "session_knn.npz"  # the session-kNN memory (candidates.session_knn)
RANKER = "ranker.txt"  # LightGBM LambdaRank model (training.ranker writes, serving.scoring reads)
RANKER_META = "ranker.json"  # the ranker's feature columns and validation report
RANKER_BATCH_ONLY = "ranker_batch_only.txt"  # the streaming-features ablation, when trained
CURRENT = "CURRENT"
LEARN_STATUS = "LEARN_STATUS.json"  # in the models folder: `streamrec learn`'s latest check (the operations page)


@dataclass
class CoVisitation:
    """Per-item co-visitation neighbours in CSR layout (rows aligned with item_ids)."""

    indptr: np.ndarray
    neighbours: np.ndarray
    scores: np.ndarray

    def row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.indptr[row], self.indptr[row + 1]
        return self.neighbours[start:end], self.scores[start:end]


@dataclass
class ModelArtifacts:
    """A loaded model version: what the index, the API and the fallbacks are built from."""

    version: str
    path: Path
    item_ids: np.ndarray
    item_embeddings: np.ndarray
    item_popularity: np.ndarray
    popular: np.ndarray
    covisit: CoVisitation
    meta: dict[str, Any] = field(default_factory=dict)
    item_recent_popularity: np.ndarray | None = None  # None in versions trained before it existed
    item_categories: np.ndarray | None = None  # None when the dataset has no categories

    def __post_init__(self) -> None:
        if self.item_recent_popularity is None:
            self.item_recent_popularity = np.zeros(len(self.item_ids), dtype=np.int64)
        self.rows = ItemRows(self.item_ids)

    def row_of(self, item_id: int) -> int | None:
        return self.rows.row(item_id)

    def rows_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Rows of many items at once (-1 for items not in the catalogue)."""
        return self.rows.rows(item_ids)

    @property
    def dim(self) -> int:
        return int(self.item_embeddings.shape[1])

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        np.save(self.path / ITEM_IDS, self.item_ids.astype(np.int64))
        np.save(self.path / ITEM_EMBEDDINGS, self.item_embeddings.astype(np.float32))
        np.save(self.path / ITEM_POPULARITY, self.item_popularity.astype(np.int64))
        np.save(self.path / POPULAR, self.popular.astype(np.int64))
        np.save(self.path / ITEM_RECENT_POPULARITY, np.asarray(self.item_recent_popularity, dtype=np.int64))
        if self.item_categories is not None:
            np.save(self.path / ITEM_CATEGORIES, np.asarray(self.item_categories, dtype=np.int64))
        np.savez(
            self.path / COVISIT,
            indptr=self.covisit.indptr.astype(np.int64),
            neighbours=self.covisit.neighbours.astype(np.int64),
            scores=self.covisit.scores.astype(np.float32),
        )
        (self.path / META).write_text(json.dumps({**self.meta, "version": self.version}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "ModelArtifacts":
        path = Path(path)
        if not (path / META).exists():
            raise FileNotFoundError(f"no model at {path}: run `streamrec train` first")
        covisit = np.load(path / COVISIT)
        meta = json.loads((path / META).read_text())
        return cls(
            version=meta["version"],
            path=path,
            item_ids=np.load(path / ITEM_IDS),
            item_embeddings=np.load(path / ITEM_EMBEDDINGS),
            item_popularity=np.load(path / ITEM_POPULARITY),
            popular=np.load(path / POPULAR),
            covisit=CoVisitation(covisit["indptr"], covisit["neighbours"], covisit["scores"]),
            meta=meta,
            item_recent_popularity=np.load(path / ITEM_RECENT_POPULARITY)
            if (path / ITEM_RECENT_POPULARITY).exists() else None,
            item_categories=np.load(path / ITEM_CATEGORIES) if (path / ITEM_CATEGORIES).exists() else None,
        )


def current_version(models_dir: Path) -> str | None:
    marker = Path(models_dir) / CURRENT
    return marker.read_text().strip() if marker.exists() else None


def set_current_version(models_dir: Path, version: str) -> None:
    """Atomically point CURRENT at a version (readers never see a half-written name)."""
    marker = Path(models_dir) / CURRENT
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(version + "\n")
    os.replace(tmp, marker)


def load_current(models_dir: Path) -> ModelArtifacts:
    version = current_version(models_dir)
    if version is None:
        raise FileNotFoundError(f"no model in {models_dir}: run `streamrec train` first")
    return ModelArtifacts.load(Path(models_dir) / version)
