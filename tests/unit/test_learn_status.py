"""The learner's status as the operations page reads it, the drift monitor's reference, and the arm rewards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from serving.ops import learn_ops
from streamrec.artifacts import LEARN_STATUS
from streamrec.interactions import Interactions
from streamrec.synthetic import generate_sessions
from training.drift import ItemShift, UnknownItems, check_drift
from training.gate import GateDecision
from training.learn import Check


def _report(reference: Interactions, latest: Interactions):
    catalogue = np.unique(reference.item_ids)
    return check_drift(ItemShift(reference, catalogue), UnknownItems(reference, catalogue), latest)


def test_the_ops_page_reads_the_learners_latest_check(tmp_path: Path) -> None:
    data = generate_sessions(n_sessions=2000, n_items=300, n_topics=10, seed=2)
    reference = data.subset_sessions(np.arange(data.n_sessions) < 1000)
    shifted = Interactions(data.session_ids, data.item_ids + 10_000, data.timestamps)  # every item new
    report = _report(reference, shifted.subset_sessions(np.arange(shifted.n_sessions) >= 1000))
    assert report.fired
    decision = GateDecision("v2", "v1", "HR@20", 41.0, 40.5, 0.5, 3000, True, "now", {}, {})
    check = Check(at=1.7e9, new_clicks=5000, new_items=300, champion="v1", triggers=["drift"],
                  drift=report.to_dict(), version="v2", kind="warm", gate=decision.to_dict(), promoted=True)
    (tmp_path / LEARN_STATUS).write_text(json.dumps(check.to_dict()))
    ops = learn_ops(tmp_path)
    assert ops is not None and ops.triggers == ["drift"] and ops.promoted and ops.version == "v2"
    shown = {figure.name: figure for figure in ops.drift}
    assert set(shown) == {"item_shift", "unknown_item_share"}
    assert shown["unknown_item_share"].fired and shown["unknown_item_share"].value == 1.0
    assert shown["item_shift"].value > shown["item_shift"].threshold
    assert "41.00 vs 40.50" in ops.gate


def test_no_status_file_means_no_learning_figures(tmp_path: Path) -> None:
    assert learn_ops(tmp_path) is None
    (tmp_path / LEARN_STATUS).write_text("{not json")
    assert learn_ops(tmp_path) is None
