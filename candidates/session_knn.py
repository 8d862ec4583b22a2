"""Session-based kNN recommendation (V-SKNN / STAN family), vectorised over a CSR inverted index.

A query is the current session's item sequence. The recommender

1. samples candidate neighbours: the `sample_size` most recent training sessions (by their last
   click) that share at least one item with the query;
2. scores each neighbour n by  sim(s, n) = Σ_{i ∈ s ∩ n} w1(i) · idf(i)^idf_weight / |n|^len_norm,
   where w1(i) = exp(-d_i / lambda_spw) and d_i is how many clicks ago the query last saw i
   (STAN's λ1; the query's last item has d = 0), and keeps the `k` best;
3. scores an item i by  Σ_n sim(s, n) · w3(i | n),  w3 = exp(-(|p_i - p_a| - 1) / lambda_npw) for
   items after the anchor a (the neighbour's occurrence of the most recent query item it
   shares; STAN's λ3), times `before_weight` for items before it, and `anchor_weight` for the
   anchor itself. Items the query already contains get an extra factor `repeat_weight`.

Ludewig & Jannach, "Evaluation of session-based recommendation algorithms" (2018) and Garg et
al., "Sequence and Time Aware Neighborhood for Session-based Recommendations: STAN" (SIGIR 2019).

Per query the work is a handful of numpy calls on arrays of ≈ (query items × sample_size) and
(k × neighbour length) elements: no Python loop over sessions or items. `recommend` is read-only
on the fitted arrays, so one fitted model can serve concurrent queries.

`training.knn_tuning.tune` picks hyper-parameters on a time-based validation split of the
training data (never on test data); `DEFAULT_PARAMS` came from it (see its comment).
"""

from __future__ import annotations

import json
from pathlib import Path

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from streamrec.artifacts import SESSION_KNN
from streamrec.interactions import Interactions
from streamrec.item_rows import ItemRows

# Chosen by MRR@20 on the validation split of the Diginetica SR-GNN training sessions (last 10% of
# sessions by time; coordinate search over every parameter, then a grid around the optimum):
# HR@20 50.1 / MRR@20 18.2 on 20,000 validation cases (popularity: 0.7 / 0.1). Checked on
# yoochoose_100k's own validation split: 66.8 / 34.7, vs 65.8 / 34.8 for that dataset's best grid
# point, so the defaults transfer. Neighbour recency weighting (STAN's λ2) was tried and lost on
# both datasets (the recency-sampled candidates already favour recent sessions), so it is absent.
# Diginetica test pairs (fit on all training sessions): HR@20 51.9 / MRR@20 18.7.
DEFAULT_PARAMS: dict[str, Any] = {
    "k": 200,
    "sample_size": 500,
    "lambda_spw": 1.0,
    "lambda_npw": 4.0,
    "before_weight": 0.5,
    "anchor_weight": 1.0,
    "repeat_weight": 2.0,
    "idf_weight": 1.0,
    "len_norm": 0.25,
}

_EMPTY = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l), without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


class SessionKNN:
    """Session kNN over an item → sessions inverted index. See the module docstring for the method."""

    PARAMS = tuple(DEFAULT_PARAMS)

    def __init__(self, k: int = DEFAULT_PARAMS["k"], sample_size: int = DEFAULT_PARAMS["sample_size"], *,
                 lambda_spw: float | None = DEFAULT_PARAMS["lambda_spw"],
                 lambda_npw: float | None = DEFAULT_PARAMS["lambda_npw"],
                 before_weight: float = DEFAULT_PARAMS["before_weight"],
                 anchor_weight: float = DEFAULT_PARAMS["anchor_weight"],
                 repeat_weight: float = DEFAULT_PARAMS["repeat_weight"],
                 idf_weight: float = DEFAULT_PARAMS["idf_weight"],
                 len_norm: float = DEFAULT_PARAMS["len_norm"]) -> None:
        """
        k: neighbour sessions kept per query.
        sample_size: most recent sessions (sharing an item with the query) considered as neighbours.
        lambda_spw: query position decay (clicks); None = every query item weighs 1.
        lambda_npw: neighbour position decay around the anchor (clicks); None = no decay.
        before_weight: factor for neighbour items clicked before the anchor (0 = only items after).
        anchor_weight: factor for the anchor item itself (the matched query item).
        repeat_weight: factor for items already in the query (0 = never recommend them).
        idf_weight: exponent of log(1 + n_sessions / df) on shared items in the similarity (0 = off).
        len_norm: exponent of the neighbour's distinct-item count dividing the similarity
            (0 = dot product, 0.5 = cosine).
        """
        self.set_params(k=k, sample_size=sample_size, lambda_spw=lambda_spw, lambda_npw=lambda_npw,
                        before_weight=before_weight, anchor_weight=anchor_weight, repeat_weight=repeat_weight,
                        idf_weight=idf_weight, len_norm=len_norm)
        self.item_ids = np.zeros(0, dtype=np.int64)
        self._rows: ItemRows | None = None  # built from item_ids on the first lookup
        self.n_sessions = 0

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.PARAMS}

    def set_params(self, **params: Any) -> "SessionKNN":
        """Change hyper-parameters; the fitted index does not depend on them, so no refit is needed."""
        unknown = set(params) - set(self.PARAMS)
        if unknown:
            raise ValueError(f"unknown SessionKNN parameters {sorted(unknown)}; expected {list(self.PARAMS)}")
        for name, value in params.items():
            setattr(self, name, value)
        if "k" in params and int(self.k) < 1:
            raise ValueError("k must be >= 1")
        if "sample_size" in params and int(self.sample_size) < 1:
            raise ValueError("sample_size must be >= 1")
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"SessionKNN({args}; {self.n_sessions} sessions, {len(self.item_ids)} items)"

    # ------------------------------------------------------------------ fit
    def fit(self, data: Interactions) -> "SessionKNN":
        """Build the indexes. Sessions are renumbered by recency: code 0 = latest last click."""
        item_ids, item_rows = np.unique(data.item_ids, return_inverse=True)
        item_rows = item_rows.astype(np.int64)
        n_items = len(item_ids)
        starts = data.session_starts()
        lengths = np.diff(np.append(starts, len(data))).astype(np.int64)
        n_sessions = len(starts)
        last_ts = data.timestamps[starts + lengths - 1] if n_sessions else np.zeros(0)
        # recency rank: latest session first; ties → later session in row order first
        by_recency = np.lexsort((-np.arange(n_sessions), -last_ts))
        code_of = np.empty(n_sessions, dtype=np.int64)
        code_of[by_recency] = np.arange(n_sessions)
        row_code = np.repeat(code_of, lengths)

        # session → item sequence (CSR, rows in recency order, clicks in time order)
        order = np.lexsort((np.arange(len(data)), row_code))
        self.sess_items = item_rows[order].astype(np.int32)
        sess_lengths = lengths[by_recency]
        self.sess_indptr = np.concatenate(([0], np.cumsum(sess_lengths))).astype(np.int64)

        # item → distinct sessions containing it, most recent first (CSR)
        pair = np.unique(item_rows * max(n_sessions, 1) + row_code)
        pair_item, pair_sess = pair // max(n_sessions, 1), pair % max(n_sessions, 1)
        self.item_sessions = pair_sess.astype(np.int32)
        df = np.bincount(pair_item, minlength=n_items)
        self.item_indptr = np.concatenate(([0], np.cumsum(df))).astype(np.int64)
        self.idf = np.log1p(max(n_sessions, 1) / np.maximum(df, 1)).astype(np.float64)  # > 0 even if df = N
        self.sess_distinct = np.bincount(pair_sess, minlength=n_sessions).astype(np.float64)
        self.sess_last_ts = last_ts[by_recency]
        self.item_ids = item_ids.astype(np.int64)
        self.item_popularity = np.bincount(item_rows, minlength=n_items)
        self.n_sessions = n_sessions
        self._max_len = int(sess_lengths.max()) + 1 if n_sessions else 1
        return self

    def memory(self) -> Interactions:
        """The sessions this model remembers, as clicks (session id "m<recency code>", every click
        at its session's last-click time, clicks in their order): what a warm-started version
        (training.continual) extends with new sessions instead of re-reading all history."""
        lengths = np.diff(self.sess_indptr)
        codes = np.repeat(np.arange(self.n_sessions, dtype=np.int64), lengths)
        return Interactions(np.char.add("m", codes.astype(str)), self.item_ids[self.sess_items],
                            np.repeat(self.sess_last_ts, lengths))

    # ------------------------------------------------------------------ persistence
    _ARRAYS = ("sess_items", "sess_indptr", "item_sessions", "item_indptr", "idf", "sess_distinct",
               "sess_last_ts", "item_ids", "item_popularity")

    def save(self, folder: Path) -> Path:
        """Write the fitted index next to a model version (loading it needs no refit)."""
        path = Path(folder) / SESSION_KNN
        np.savez(path, **{name: getattr(self, name) for name in self._ARRAYS},
                 n_sessions=np.int64(self.n_sessions), max_len=np.int64(self._max_len),
                 params=np.array(json.dumps(self.get_params())))
        return path

    @classmethod
    def load(cls, folder: Path) -> "SessionKNN | None":
        """The index saved with a model version, or None for versions trained without one."""
        path = Path(folder) / SESSION_KNN
        if not path.exists():
            return None
        with np.load(path) as saved:
            model = cls(**json.loads(str(saved["params"])))
            for name in cls._ARRAYS:
                setattr(model, name, saved[name])
            model.n_sessions = int(saved["n_sessions"])
            model._max_len = int(saved["max_len"])
        return model

    def item_rows(self, items: Iterable[int]) -> np.ndarray:
        """Dense row of each item id, -1 for ids unseen in training."""
        if self._rows is None or self._rows.item_ids is not self.item_ids:
            self._rows = ItemRows(self.item_ids)
        return self._rows.rows(items)

    # ------------------------------------------------------------------ query
    def neighbours(self, session_items: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour session codes, similarities) of the query, unordered; codes are recency ranks."""
        query = self._query(session_items)
        if query is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return self._neighbours(*query)

    def _query(self, session_items: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
        """Distinct known query item rows (sorted) and each one's clicks-ago distance (latest click)."""
        rows = self.item_rows(session_items)
        known = rows >= 0
        if not known.any():
            return None
        ago = (len(rows) - 1 - np.arange(len(rows)))[known]
        rows = rows[known]
        order = np.lexsort((ago, rows))
        rows, ago = rows[order], ago[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = rows[1:] != rows[:-1]
        return rows[first], ago[first]

    def _neighbours(self, q_rows: np.ndarray, q_ago: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sample = int(self.sample_size)
        w = np.ones(len(q_rows)) if not self.lambda_spw else np.exp(-q_ago / float(self.lambda_spw))
        if self.idf_weight:
            w = w * self.idf[q_rows] ** float(self.idf_weight)
        # the `sample` most recent sessions of the union are among each item's `sample` most recent
        lo = self.item_indptr[q_rows]
        counts = np.minimum(self.item_indptr[q_rows + 1] - lo, sample)
        sessions = self.item_sessions[_ranges(lo, counts)]
        codes, inverse = np.unique(sessions, return_inverse=True)
        sim = np.bincount(inverse, weights=np.repeat(w, counts), minlength=len(codes))
        if len(codes) > sample:  # codes are recency ranks, sorted: the first `sample` are the latest
            codes, sim = codes[:sample], sim[:sample]
        if self.len_norm:
            sim = sim / self.sess_distinct[codes] ** float(self.len_norm)
        k = int(self.k)
        if len(codes) > k:
            keep = np.argpartition(-sim, k - 1)[:k]
            codes, sim = codes[keep], sim[keep]
        return codes.astype(np.int64), sim

    def recommend(self, session_items: Sequence[int], n: int = 100,
                  exclude: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-`n` (item ids int64, scores float32), best first; ties → smaller item id first.

        Only items with a positive score are returned, so fewer than `n` may come back (a caller
        needing exactly `n` fills up from a fallback). Unknown query items contribute nothing; a
        query with no known item gives empty arrays. `exclude` removes those item ids.
        """
        query = self._query(session_items)
        if query is None or n <= 0:
            return _EMPTY
        q_rows, q_ago = query
        nb, nb_sim = self._neighbours(q_rows, q_ago)
        if len(nb) == 0:
            return _EMPTY

        lo = self.sess_indptr[nb]
        lengths = self.sess_indptr[nb + 1] - lo
        flat = _ranges(lo, lengths)
        items = self.sess_items[flat].astype(np.int64)
        owner = np.repeat(np.arange(len(nb)), lengths)
        pos = flat - np.repeat(lo, lengths)

        # anchor: in each neighbour, the occurrence (latest if repeated) of its most recent query item
        at = np.searchsorted(q_rows, items).clip(max=len(q_rows) - 1)
        in_query = q_rows[at] == items
        q_recency = np.empty(len(q_ago), dtype=np.int64)  # 1 = oldest distinct query item, ...
        q_recency[np.argsort(-q_ago, kind="stable")] = np.arange(1, len(q_ago) + 1)
        recency = np.where(in_query, q_recency[at], 0)  # > 0 iff in the query
        key = np.where(in_query, recency * self._max_len + pos, -1)
        first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        anchor = np.maximum.reduceat(key, first) % self._max_len
        gap = pos - anchor[owner]

        dist = np.abs(gap).astype(np.float64)
        if self.lambda_npw:
            weight = np.exp(-(np.maximum(dist, 1.0) - 1.0) / float(self.lambda_npw))
        else:
            weight = np.ones(len(gap))
        if self.before_weight != 1.0:
            weight[gap < 0] *= float(self.before_weight)
        if self.anchor_weight != 1.0:
            weight[gap == 0] *= float(self.anchor_weight)
        if self.repeat_weight != 1.0:
            weight[in_query] *= float(self.repeat_weight)
        contribution = nb_sim[owner] * weight

        cand, inverse = np.unique(items, return_inverse=True)
        scores = np.bincount(inverse, weights=contribution, minlength=len(cand))
        if exclude:
            drop = self.item_rows(exclude)
            scores[np.isin(cand, drop[drop >= 0])] = 0.0
        positive = np.flatnonzero(scores > 0)
        if len(positive) > n:
            # keep everything tied with the n-th score so the tie-break below is exact
            cut = -np.partition(-scores[positive], n - 1)[n - 1]
            positive = positive[scores[positive] >= cut]
        best = positive[np.lexsort((cand[positive], -scores[positive]))][:n]
        return self.item_ids[cand[best]], scores[best].astype(np.float32)
