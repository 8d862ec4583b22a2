"""The learned ranker: trained on a time split of training data, saved with the model, used by serving."""

from __future__ import annotations

import numpy as np

from candidates.features import FEATURE_NAMES, STREAMING_FEATURES
from candidates.ranker_model import RankerModel, save_report
from serving.scoring import Scorer
from training.ranker import split_three, train_ranker
from streamrec.synthetic import generate_sessions


def test_split_is_by_time_and_disjoint():
    data = generate_sessions(n_sessions=1000, n_items=200, seed=4)
    base, train, valid = split_three(data)
    assert base.n_sessions + train.n_sessions + valid.n_sessions == data.n_sessions
    assert base.timestamps.min() <= train.timestamps.min() <= valid.timestamps.min()
    assert not set(base.session_ids.tolist()) & set(valid.session_ids.tolist())


def test_ranker_beats_its_strongest_feature_and_is_saved_and_loaded(tmp_path):
    data = generate_sessions(n_sessions=3000, n_items=400, n_topics=20, seed=6)
    fitted = train_ranker(data, tmp_path, algorithm="als", factors=32, decay=0.7, train_cases=3000,
                          valid_cases=1500, log=lambda _: None)
    report = fitted.report
    assert report["features"] == [f for f in FEATURE_NAMES if f not in STREAMING_FEATURES]
    assert 0 < report["valid"]["HR@20"] <= 100 and report["valid"]["MRR@20"] > 0
    # a ranker is worth its cost only if it ranks better than any one of its features alone
    best = report["valid_best_single_feature"]
    assert best["feature"].lstrip("-") in report["features"]
    assert report["valid"]["MRR@20"] > best["MRR@20"], best
    assert report["valid"]["NDCG@20"] > best["NDCG@20"], best
    fitted.ranker.save(tmp_path)
    save_report(tmp_path, report)
    scorer = Scorer(RankerModel.load(tmp_path))
    assert scorer.kind == "lightgbm-lambdarank"
    assert scorer.feature_names == tuple(report["features"])
    from candidates.features import CandidateSet

    candidates = CandidateSet(np.arange(5), {name: np.random.default_rng(0).random(5).astype(np.float32)
                                             for name in FEATURE_NAMES})
    assert scorer.score(candidates).shape == (5,)
