"""Non-embedding candidates: co-visitation of the latest clicks, and global popularity.

Used when the session has no known item embeddings (cold items), when the index is unavailable,
and to fill short candidate lists. Unknown item ids contribute nothing rather than failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from streamrec.artifacts import ModelArtifacts

DEFAULT_WEIGHTS = (1.0, 0.5, 0.25)  # last item, the one before, the one before that


class Fallbacks:
    """Co-visitation and popularity lists read from one model version's artifacts."""

    def __init__(self, artifacts: ModelArtifacts, weights: Sequence[float] = DEFAULT_WEIGHTS) -> None:
        self.artifacts = artifacts
        self.weights = tuple(weights)
        self._popular = artifacts.popular.astype(np.int64).tolist()
        pop = artifacts.item_popularity
        self._popularity = {int(i): float(pop[r]) for r, i in enumerate(artifacts.item_ids.tolist())}

    def covisited(self, last_items: Sequence[int], k: int,
                  exclude: Iterable[int] | None = None) -> list[tuple[int, float]]:
        """Neighbours of the last items (newest weighted 1, older ones less), best first.

        Each row's scores are scaled by its maximum so a busy item cannot drown the newest one.
        `exclude` (e.g. the items already in the session) never appears in the result.
        """
        if k <= 0:
            return []
        banned = set(int(i) for i in exclude) if exclude is not None else set()
        totals: dict[int, float] = {}
        recent = list(last_items)[::-1][: len(self.weights)]
        for weight, item in zip(self.weights, recent):
            row = self.artifacts.row_of(int(item))
            if row is None:
                continue
            neighbours, scores = self.artifacts.covisit.row(row)
            if len(scores) == 0:
                continue
            top = float(scores.max()) or 1.0
            for neighbour, score in zip(neighbours.tolist(), scores.tolist()):
                if neighbour not in banned:
                    totals[neighbour] = totals.get(neighbour, 0.0) + weight * score / top
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:k]

    def popular(self, k: int, exclude: Iterable[int] | None = None) -> list[tuple[int, float]]:
        """Most popular training items not in `exclude`, scored by their training clicks."""
        banned = set(int(i) for i in exclude) if exclude is not None else set()
        out: list[tuple[int, float]] = []
        for item in self._popular:
            if len(out) >= k:
                break
            if item not in banned:
                out.append((item, self._popularity.get(item, 0.0)))
        return out
