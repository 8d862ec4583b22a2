"""Item id → row of a model's item arrays: the one lookup every model and feature uses.

A model stores per-item arrays (embeddings, popularity, co-visitation rows) aligned with an array
of item ids. Requests and click logs speak item ids. `ItemRows` maps between them: vectorised for
a request's candidates or a whole click log (one `searchsorted`), and O(1) for a single id.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class ItemRows:
    """Rows of `item_ids` (any order, unique); -1 / None for ids that are not in it."""

    __slots__ = ("item_ids", "_order", "_sorted", "_dict")

    def __init__(self, item_ids: np.ndarray | Iterable[int]) -> None:
        self.item_ids = np.asarray(item_ids if isinstance(item_ids, np.ndarray) else list(item_ids), dtype=np.int64)
        self._order = np.argsort(self.item_ids, kind="stable")
        self._sorted = self.item_ids[self._order]
        self._dict: dict[int, int] | None = None  # built on the first scalar lookup

    def __len__(self) -> int:
        return len(self.item_ids)

    def rows(self, ids: np.ndarray | Iterable[int]) -> np.ndarray:
        """int64 row of each id, -1 where the id is unknown."""
        ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        if len(self._sorted) == 0 or len(ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        where = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        return np.where(self._sorted[where] == ids, self._order[where], -1).astype(np.int64)

    def row(self, item_id: int) -> int | None:
        """Row of one id (None when unknown): a dict lookup, for per-item code paths."""
        if self._dict is None:
            self._dict = {int(i): r for r, i in enumerate(self.item_ids.tolist())}
        return self._dict.get(int(item_id))
