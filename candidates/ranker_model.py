"""A model version's learned ranker on disk: the LightGBM booster and the feature columns it reads.

Training writes it (`training.ranker`), serving scores with it (`serving.scoring`); both go through
`candidates.bundle.ModelBundle`, so the file names and the loading rules live here only.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrec.artifacts import RANKER, RANKER_BATCH_ONLY, RANKER_META

# LightGBM imports these when it finds them, only to accept their frame types as input; the API
# passes numpy arrays, and pandas alone costs ~0.5 s of start-up and tens of MB per worker.
_LIGHTGBM_OPTIONAL = ("pandas", "sklearn", "dask", "pyarrow", "datatable", "cffi")


def import_lightgbm():  # -> the lightgbm module
    """`import lightgbm` without loading its optional frame libraries (a `None` entry in
    `sys.modules` makes Python's import raise ImportError, and lightgbm.compat then falls back to
    numpy-only input). Libraries already loaded (training, evaluation) are left as they are."""
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


@dataclass(frozen=True)
class RankerModel:
    """A LambdaRank booster and the candidate features it reads, in column order."""

    booster: Any  # lightgbm.Booster
    features: tuple[str, ...]

    @staticmethod
    def file_name(batch_only: bool) -> str:
        return RANKER_BATCH_ONLY if batch_only else RANKER

    @classmethod
    def load(cls, folder: Path, *, batch_only: bool = False) -> "RankerModel | None":
        """The version's ranker (`batch_only`: its twin without streaming features); None if absent."""
        path = Path(folder) / cls.file_name(batch_only)
        if not path.exists():
            return None
        meta = load_report(folder)
        features = meta["batch_only_features" if batch_only else "features"]
        return cls(import_lightgbm().Booster(model_file=str(path)), tuple(features))

    def save(self, folder: Path, *, batch_only: bool = False) -> None:
        # num_iteration=None: LightGBM saves up to the best iteration when early stopping found one
        self.booster.save_model(str(Path(folder) / self.file_name(batch_only)))


def load_report(folder: Path) -> dict[str, Any]:
    path = Path(folder) / RANKER_META
    return json.loads(path.read_text()) if path.exists() else {}


def save_report(folder: Path, report: dict[str, Any]) -> None:
    (Path(folder) / RANKER_META).write_text(json.dumps(report, indent=2))
