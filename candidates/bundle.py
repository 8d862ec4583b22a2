"""Every artifact of one model version, loaded and saved in one place.

A version is a folder: the item arrays and co-visitation lists (`streamrec.artifacts`), the FAISS
index, the fitted session-kNN and the ranker with its report. Training saves a `ModelBundle`,
serving and evaluation load one; nobody else knows which files make a version, so a version is
either complete or refused as a whole.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from candidates.features import CandidateGenerators
from candidates.index import CandidateIndex, save_index
from candidates.ranker_model import RankerModel, load_report, save_report
from candidates.session_knn import SessionKNN
from streamrec.artifacts import META, RANKER, RANKER_BATCH_ONLY, RANKER_META, ModelArtifacts, current_version


@dataclass
class ModelBundle:
    artifacts: ModelArtifacts
    index: CandidateIndex
    session_knn: SessionKNN | None = None
    ranker: RankerModel | None = None
    ranker_batch_only: RankerModel | None = None  # the ablation twin (evaluation only)
    ranker_report: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.artifacts.version

    @property
    def path(self) -> Path:
        return self.artifacts.path

    @property
    def index_version(self) -> str:
        """The index is built with its model version, so the version names it too."""
        return f"{self.version}:{self.index.info.get('type', 'unknown')}"

    def generators(self, ann_k: int) -> CandidateGenerators:
        return CandidateGenerators(self.artifacts, self.index, self.session_knn, ann_k=ann_k)

    @classmethod
    def load(cls, path: Path, *, batch_only_ranker: bool = False) -> "ModelBundle":
        """The version in `path`; `batch_only_ranker` also loads the ablation twin (must exist)."""
        path = Path(path)
        twin = RankerModel.load(path, batch_only=True) if batch_only_ranker else None
        if batch_only_ranker and twin is None:
            raise FileNotFoundError(f"{path}: this model version was trained without streaming features")
        return cls(ModelArtifacts.load(path), CandidateIndex.load(path), SessionKNN.load(path),
                   RankerModel.load(path), twin, load_report(path))

    @classmethod
    def load_current(cls, models_dir: Path, **options: Any) -> "ModelBundle":
        version = current_version(models_dir)
        if version is None:
            raise FileNotFoundError(f"no model in {models_dir}: run `streamrec train` first")
        return cls.load(Path(models_dir) / version, **options)

    def save(self) -> None:
        self.artifacts.save()
        save_index(self.index.index, self.index.info, self.path)
        if self.session_knn is not None:
            self.session_knn.save(self.path)
        if self.ranker is not None:
            self.ranker.save(self.path)
        if self.ranker_batch_only is not None:
            self.ranker_batch_only.save(self.path, batch_only=True)
        if self.ranker_report:
            save_report(self.path, self.ranker_report)


def derive_popularity_baseline(source: Path, target: Path) -> str:
    """A new version in `target` that retrieves candidates as `source` does and ranks them by
    training popularity alone: the control arm of an A/B test or a bandit. Its files are hard links
    to the source's (versions are immutable), less the ranker; returns its version name."""
    source, target = Path(source), Path(target)
    if not (source / META).exists():
        raise FileNotFoundError(f"no model version at {source}")
    if target.exists():
        raise FileExistsError(f"{target} exists: versions are immutable")
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in {META, RANKER, RANKER_META, RANKER_BATCH_ONLY}:
            try:
                os.link(path, staging / path.name)
            except OSError:  # another file system: a copy is as good
                shutil.copy2(path, staging / path.name)
    meta = json.loads((source / META).read_text())
    meta.update(version=target.name, scorer="popularity", baseline_of=meta.get("version", source.name),
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    (staging / META).write_text(json.dumps(meta, indent=2))
    os.replace(staging, target)  # the version appears whole or not at all
    return target.name
