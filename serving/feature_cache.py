"""A short-lived in-process copy of per-item online features (the API's near cache).

Candidate lists overlap heavily between requests (popular and trending items recur in most of
them), so re-reading the same item rows from Redis on every request is most of the feature read's
cost. Item windows move on the scale of minutes; serving a row up to `ttl_s` old changes nothing a
user can see, while session features (which must reflect the last click) are never cached here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


class TTLCache:
    """Rows by key, each valid for `ttl_s` after it was read; bounded by `max_keys` (then cleared)."""

    def __init__(self, ttl_s: float, max_keys: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock  # seconds; tests move it instead of sleeping
        self.max_keys = max_keys
        self._rows: dict[int | str, tuple[float, dict | None]] = {}
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def lookup(self, keys: Sequence[int | str]) -> tuple[list[dict | None], list[int]]:
        """(rows, positions of the keys not cached or expired); absent rows are cached as None too."""
        now = self.clock()
        rows: list[dict | None] = [None] * len(keys)
        missing: list[int] = []
        get = self._rows.get
        for position, key in enumerate(keys):
            entry = get(key)
            if entry is not None and entry[0] > now:
                rows[position] = entry[1]
            else:
                missing.append(position)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return rows, missing

    def store(self, keys: Sequence[int | str], rows: Sequence[dict | None]) -> None:
        if not self.enabled:
            return
        if len(self._rows) + len(keys) > self.max_keys:
            self._rows.clear()  # simpler than LRU and just as bounded; refills within one TTL
        expires = self.clock() + self.ttl_s
        for key, row in zip(keys, rows):
            self._rows[key] = (expires, row)
