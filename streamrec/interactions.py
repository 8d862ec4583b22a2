"""Session clicks in one in-memory shape, whatever the on-disk format, and the cases cut from it.

Every consumer (training, evaluation, candidates, the replay producer) works on `Interactions`:
flat numpy arrays sorted by (session, time), so sessions are contiguous slices and no per-row
objects exist. numpy only: the API process imports this module (the session-kNN fits on it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Interactions:
    """Clicks as parallel arrays, sorted by (session, time) on construction."""

    session_ids: np.ndarray  # int64 codes or str
    item_ids: np.ndarray  # int64
    timestamps: np.ndarray  # float64 unix seconds
    categories: dict[int, int] = field(default_factory=dict)
    name: str = ""
    synthetic_clock: bool = False  # timestamps assigned by the loader (order only, no real time)

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        sessions = np.asarray(self.session_ids)
        if sessions.dtype.kind in "iub":
            sessions = sessions.astype(np.int64)
        elif sessions.dtype.kind != "U":
            sessions = sessions.astype(str)
        if not (len(sessions) == len(self.item_ids) == len(self.timestamps)):
            raise ValueError("session_ids, item_ids and timestamps must have the same length")
        order = np.lexsort((self.timestamps, sessions))  # stable: ties keep file order
        self.session_ids = sessions[order]
        self.item_ids = self.item_ids[order]
        self.timestamps = self.timestamps[order]

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def n_clicks(self) -> int:
        return len(self.item_ids)

    @property
    def n_sessions(self) -> int:
        return len(self.session_starts())

    @property
    def n_items(self) -> int:
        return len(np.unique(self.item_ids))

    def session_starts(self) -> np.ndarray:
        """Row index where each session begins (rows are grouped by session)."""
        if len(self.session_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        change = np.flatnonzero(self.session_ids[1:] != self.session_ids[:-1]) + 1
        return np.concatenate(([0], change)).astype(np.int64)

    def session_codes(self) -> np.ndarray:
        """Dense 0..n_sessions-1 code per row, in row (= session) order."""
        codes = np.zeros(len(self), dtype=np.int64)
        starts = self.session_starts()
        codes[starts[1:]] = 1
        return np.cumsum(codes)

    def subset_sessions(self, mask: np.ndarray) -> "Interactions":
        """Interactions of the sessions whose entry in `mask` (one per session) is true."""
        rows = np.asarray(mask, dtype=bool)[self.session_codes()]
        return self.subset_rows(rows)

    def subset_rows(self, mask: np.ndarray) -> "Interactions":
        """Interactions of the clicks whose entry in `mask` (one per row) is true."""
        rows = np.asarray(mask, dtype=bool)
        return Interactions(self.session_ids[rows], self.item_ids[rows], self.timestamps[rows],
                            self.categories, self.name, self.synthetic_clock)


def iter_sessions(interactions: Interactions) -> Iterator[tuple[str, list[int], list[float]]]:
    """Yield (session id as str, items, timestamps) per session, sessions ordered by first click.

    Session ids are strings because that is what click events carry; the producer replays these.
    """
    starts = interactions.session_starts()
    ends = np.append(starts[1:], len(interactions))
    for s in np.argsort(interactions.timestamps[starts], kind="stable"):
        a, b = starts[s], ends[s]
        yield (str(interactions.session_ids[a]), interactions.item_ids[a:b].tolist(),
               interactions.timestamps[a:b].tolist())


def split_by_time(data: Interactions, valid_share: float = 0.1) -> tuple[Interactions, Interactions]:
    """Last `valid_share` of sessions by start time → validation; the rest → training."""
    starts = data.session_starts()
    first_ts = data.timestamps[starts]
    order = np.argsort(first_ts, kind="stable")
    n_valid = max(1, int(round(len(starts) * valid_share)))
    valid = np.zeros(len(starts), dtype=bool)
    valid[order[-n_valid:]] = True
    return data.subset_sessions(~valid), data.subset_sessions(valid)


def next_item_rows(data: Interactions, max_cases: int | None = None,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The next-item cases of `data`: (row of each case's next click, row where its session
    starts), one case per click that has an earlier click in its session, in row order; sampled
    without replacement to `max_cases` (seeded). The prefix of a case is `item_ids[start:row]`."""
    starts = data.session_starts()
    ends = np.append(starts[1:], len(data))
    rows = np.arange(len(data))
    first = np.repeat(starts, ends - starts)
    targets = rows[rows > first]
    if max_cases is not None and len(targets) > max_cases:
        targets = np.sort(np.random.default_rng(seed).choice(targets, max_cases, replace=False))
    return targets, first[targets]


def next_item_cases(data: Interactions, *, context: int = 3, max_cases: int | None = 5000,
                    seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """(prefix tail of ≤ `context` items, next item) for every case of `next_item_rows`."""
    targets, firsts = next_item_rows(data, max_cases, seed)
    prefixes = [data.item_ids[max(f, t - context):t] for f, t in zip(firsts, targets)]
    return prefixes, data.item_ids[targets]
