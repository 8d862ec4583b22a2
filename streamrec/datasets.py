"""Load public session datasets (SR-GNN, YooChoose, Diginetica, RetailRocket) into `Interactions`.

pandas parses the files; only training, evaluation and the replay producer import this module.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from streamrec.interactions import Interactions

SRGNN_BASE_TS = 1_451_606_400.0  # 2016-01-01T00:00:00Z: start of the synthetic SR-GNN clock
SRGNN_SESSION_GAP_S = 600.0
SRGNN_CLICK_GAP_S = 1.0

YOOCHOOSE_SPLITS = {"train": "_train_full", "test": "_test", "train_tr": "_train_tr", "valid": "_train_valid"}
EXPECTED = (
    "one of: train_sessions.txt.gz (SR-GNN); *_train_full* / *_test* TSV (SessionId ItemId Time); "
    "sample_train-item-views.csv[.gz] (+ product-categories.csv[.gz]) (raw Diginetica); "
    "a TSV with header `timestamp user_id item_id session_id` (RetailRocket)"
)


def load_dataset(path: Path | None, *, split: str = "train") -> Interactions:
    """Load a dataset folder or file, detecting its format (see EXPECTED); None → synthetic data.

    SR-GNN files have no timestamps. Sessions keep file order (which is chronological) on a
    synthetic clock: session s starts at SRGNN_BASE_TS + s*600 s and its clicks are 1 s apart, so
    "last sessions by time" and time-ordered replay behave as on real data.
    """
    if path is None:
        from streamrec.synthetic import generate_sessions

        return generate_sessions()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist")
    if path.is_file():
        return _load_file(path, split)
    if (path / "train_sessions.txt.gz").exists() or (path / "train_sessions.txt").exists():
        if split != "train":
            raise ValueError(f"SR-GNN dataset {path} only provides split='train' sessions")
        return _load_srgnn(path)
    if list(path.glob("*_train_full*")):
        if split not in YOOCHOOSE_SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(YOOCHOOSE_SPLITS)}")
        files = sorted(path.glob(f"*{YOOCHOOSE_SPLITS[split]}*"))
        if not files:
            raise FileNotFoundError(f"{path} has no *{YOOCHOOSE_SPLITS[split]}* file for split {split!r}")
        return _load_yoochoose(files[0])
    views = sorted(path.glob("sample_train-item-views.csv*")) or sorted(path.glob("*item-views.csv*"))
    if views:
        return _load_diginetica(views[0], split)
    for candidate in sorted(path.glob("*.tsv*")) + sorted(path.glob("*.csv*")):
        if _header(candidate).split("\t")[:4] == ["timestamp", "user_id", "item_id", "session_id"]:
            return _load_retailrocket(candidate, split)
    raise ValueError(f"{path}: no known dataset format; expected {EXPECTED}")


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _header(path: Path) -> str:
    with _open_text(path) as fh:
        return fh.readline().strip()


def _load_file(path: Path, split: str) -> Interactions:
    header = _header(path)
    if header.split("\t")[:3] == ["SessionId", "ItemId", "Time"]:
        return _load_yoochoose(path)
    if header.split("\t")[:4] == ["timestamp", "user_id", "item_id", "session_id"]:
        return _load_retailrocket(path, split)
    if header.startswith("session_id;user_id;item_id"):
        return _load_diginetica(path, split)
    if path.name.startswith("train_sessions"):
        return _load_srgnn(path.parent)
    raise ValueError(f"{path}: unknown file format (header {header[:60]!r}); expected {EXPECTED}")


def _load_srgnn(folder: Path) -> Interactions:
    file = folder / "train_sessions.txt.gz"
    if not file.exists():
        file = folder / "train_sessions.txt"
    with _open_text(file) as fh:
        lines = [line.split() for line in fh if line.strip()]
    lengths = np.fromiter((len(tokens) for tokens in lines), dtype=np.int64, count=len(lines))
    items = np.fromiter((int(t) for tokens in lines for t in tokens), dtype=np.int64, count=int(lengths.sum()))
    sessions = np.repeat(np.arange(len(lines), dtype=np.int64), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    position = np.arange(len(items)) - np.repeat(starts, lengths)
    ts = SRGNN_BASE_TS + sessions * SRGNN_SESSION_GAP_S + position * SRGNN_CLICK_GAP_S
    return Interactions(sessions, items, ts, name=folder.name, synthetic_clock=True)


def _load_yoochoose(file: Path) -> Interactions:
    df = pd.read_csv(file, sep="\t", usecols=["SessionId", "ItemId", "Time"],
                     dtype={"SessionId": np.int64, "ItemId": np.int64, "Time": np.float64})
    return Interactions(df["SessionId"].to_numpy(), df["ItemId"].to_numpy(), df["Time"].to_numpy(),
                        name=file.name.split(".")[0])


def _require_train(split: str, file: Path) -> None:
    if split != "train":
        raise ValueError(f"{file} is a single sample; only split='train' is available")


def _load_diginetica(file: Path, split: str) -> Interactions:
    _require_train(split, file)
    df = pd.read_csv(file, sep=";", usecols=["session_id", "item_id", "timeframe", "eventdate"])
    day = pd.to_datetime(df["eventdate"], utc=True).astype("int64").to_numpy() / 1e9
    ts = day + df["timeframe"].to_numpy(dtype=np.float64) / 1000.0
    categories: dict[int, int] = {}
    cats = sorted(file.parent.glob("product-categories.csv*"))
    if cats:
        cat = pd.read_csv(cats[0], sep=";", dtype={"itemId": np.int64, "categoryId": np.int64})
        cat = cat[cat["itemId"].isin(df["item_id"].unique())]
        categories = dict(zip(cat["itemId"].tolist(), cat["categoryId"].tolist()))
    return Interactions(df["session_id"].to_numpy(np.int64), df["item_id"].to_numpy(np.int64), ts,
                        categories, name=file.parent.name)


def _load_retailrocket(file: Path, split: str) -> Interactions:
    _require_train(split, file)
    df = pd.read_csv(file, sep="\t", usecols=["timestamp", "item_id", "session_id"])
    ts = df["timestamp"].to_numpy(dtype=np.float64)
    if len(ts) and np.median(ts) > 1e11:  # unix milliseconds (seconds stay < 1e11 until year 5138)
        ts = ts / 1000.0
    return Interactions(df["session_id"].to_numpy(np.int64), df["item_id"].to_numpy(np.int64), ts,
                        name=file.parent.name)


def held_out_sessions(path: Path) -> list[list[int]]:
    """The dataset's held-out (test) sessions as item lists, in time order: what `streamrec
    simulate` replays as visitors. SR-GNN ships test rows as (prefix, next item); a session is a
    row whose prefix + next item is no other row's prefix (its longest one). YooChoose has a test
    file. The single-file samples have no held-out split."""
    path = Path(path)
    pairs = path / "test_pairs.tsv.gz"
    if pairs.exists() or (path / "test_pairs.tsv").exists():
        df = pd.read_csv(pairs if pairs.exists() else path / "test_pairs.tsv", sep="\t", dtype=str)
        full = [tuple(int(t) for t in prefix.split()) + (int(label),) for prefix, label in zip(df["prefix"], df["label"])]
        prefixes = {tuple(int(t) for t in prefix.split()) for prefix in df["prefix"]}
        return [list(s) for s in full if s not in prefixes]
    if path.is_dir() and list(path.glob("*_test*")):
        from streamrec.interactions import iter_sessions

        return [items for _, items, _ in iter_sessions(load_dataset(path, split="test"))]
    raise ValueError(f"{path} has no held-out split (SR-GNN test_pairs.tsv.gz or a YooChoose *_test* file)")
