"""Item id → row: vectorised and scalar lookups agree, in any id order, unknown ids are -1/None."""

from __future__ import annotations

import numpy as np

from streamrec.item_rows import ItemRows


def test_rows_in_any_order_and_unknown_ids() -> None:
    rows = ItemRows(np.array([30, 10, 20]))
    assert rows.rows(np.array([10, 20, 30, 99, 5])).tolist() == [1, 2, 0, -1, -1]
    assert [rows.row(i) for i in (10, 20, 30, 99)] == [1, 2, 0, None]
    assert rows.rows([]).tolist() == [] and ItemRows(np.zeros(0, np.int64)).rows([1]).tolist() == [-1]


def test_vectorised_matches_scalar_on_random_ids() -> None:
    rng = np.random.default_rng(0)
    ids = rng.choice(10_000, 500, replace=False)
    rows = ItemRows(ids)
    queries = rng.integers(0, 10_000, 2000)
    assert rows.rows(queries).tolist() == [-1 if rows.row(q) is None else rows.row(q) for q in queries]
    assert (ids[rows.rows(ids)] == ids).all()
