"""`streamrec evaluate`: offline next-item quality through the serving code path, with baselines.

For every test case (session prefix → next item) each model recommends 20 items; the served
model is the very `Recommender` object that `POST /recommend` uses (same candidates, features
and scorer), fed with the prefix as the session's items and no streaming state. Baselines run on
the same rows: popularity, item-kNN on the last item, session-kNN. With an exploration strength
(`--explore-strength`, default the setting) the served model runs with its exploration slot and once
more without, on the same cases: the report's `exploration` says what the slot costs in HR/MRR@20 and
what it adds to coverage and to the long tail's share of what is shown.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from candidates.features import merge_session_items
from streamrec.datasets import load_dataset
from streamrec import quality
from streamrec.interactions import Interactions, next_item_rows
from streamrec.item_rows import ItemRows
from training.popularity import most_popular

K = 20
OTHER_EXCLUDE_SEEN = "with_other_exclude_seen"  # the served model with the other `exclude_seen`
WITHOUT_EXPLORATION = "streamrec_without_exploration"  # the served model with explore_strength 0
HEAD_SHARE = 0.2  # the most clicked 20% of the catalogue is its head; the rest is the long tail
console = Console(stderr=True)


@dataclass
class TestCases:
    prefixes: list[list[int]]
    labels: np.ndarray  # int64
    times_ms: np.ndarray | None = None  # time of each prefix's last click, when the data has real time

    def head(self, n: int) -> "TestCases":
        return TestCases(self.prefixes[:n], self.labels[:n], None if self.times_ms is None else self.times_ms[:n])


def load_test_cases(dataset: Path, train: Interactions) -> TestCases:
    """SR-GNN folders: `test_pairs.tsv.gz` as given. Datasets with a test split of sessions: every
    prefix of every test session → its next item, keeping only items seen in training (as the
    SR-GNN preprocessing does), so no model is asked for an item it cannot know."""
    pairs = Path(dataset) / "test_pairs.tsv.gz"
    if pairs.exists():
        prefixes, labels = [], []
        with gzip.open(pairs, "rt") as handle:
            next(handle)  # header
            for line in handle:
                prefix, label = line.rstrip("\n").split("\t")
                prefixes.append([int(i) for i in prefix.split()])
                labels.append(int(label))
        return TestCases(prefixes, np.asarray(labels, dtype=np.int64))
    test = load_test_split(dataset)
    test = test.subset_rows(np.isin(test.item_ids, np.unique(train.item_ids)))
    targets, firsts = next_item_rows(test)
    prefixes = [test.item_ids[first:target].tolist() for first, target in zip(firsts, targets)]
    real_time = not (test.synthetic_clock or train.synthetic_clock)
    return TestCases(prefixes, test.item_ids[targets].astype(np.int64),
                     test.timestamps[targets - 1] * 1000 if real_time else None)


def load_test_split(dataset: Path) -> Interactions:
    return load_dataset(Path(dataset), split="test")


# --- baselines ---------------------------------------------------------------------------------

class Popularity:
    name = "popularity"

    def __init__(self, train: Interactions) -> None:
        self.top = most_popular(train, K)

    def recommend(self, prefix: Sequence[int]) -> np.ndarray:
        return self.top


class ItemKNN:
    """Cosine similarity of items over sessions (Item-kNN of the SR-GNN paper), on the last item."""

    name = "item_knn"

    def __init__(self, train: Interactions) -> None:
        self.item_ids, columns = np.unique(train.item_ids, return_inverse=True)
        self.rows = ItemRows(self.item_ids)
        _, rows = np.unique(train.session_ids, return_inverse=True)
        matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)))
        matrix.data[:] = 1.0  # presence, not counts
        self.by_item = matrix.T.tocsr()
        self.matrix = matrix
        self.norms = np.sqrt(np.asarray(self.by_item.multiply(self.by_item).sum(axis=1)).ravel())

    def recommend(self, prefix: Sequence[int]) -> np.ndarray:
        row = self.rows.row(prefix[-1]) if prefix else None
        if row is None:
            return np.zeros(0, dtype=np.int64)
        co = np.asarray((self.by_item[row] @ self.matrix).todense()).ravel()  # co-occurring sessions
        scores = co / (self.norms[row] * self.norms + 1e-9)
        scores[row] = -1
        top = np.argpartition(-scores, K)[:K] if len(scores) > K else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return self.item_ids[top[scores[top] > 0]]


class SessionKNNBaseline:
    name = "session_knn"

    def __init__(self, train: Interactions) -> None:
        from candidates.session_knn import SessionKNN

        self.model = SessionKNN().fit(train)

    def recommend(self, prefix: Sequence[int]) -> np.ndarray:
        return self.model.recommend(prefix, K)[0]


# --- metrics -----------------------------------------------------------------------------------

@dataclass
class ModelResult:
    name: str
    ranks: np.ndarray  # 1-based rank of the label, 0 when not in the top K
    recommended: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, popular_items: np.ndarray, n_items: int, head_items: np.ndarray | None = None) -> dict[str, float]:
        """`popular_items`: the top 1% (popular_share); `head_items`: the catalogue's head, outside
        which a shown item counts in `long_tail_share`."""
        shown = np.concatenate(self.recommended) if self.recommended else np.zeros(0, dtype=np.int64)
        head = popular_items if head_items is None else head_items
        return {
            **quality.report(self.ranks, K),
            "coverage": round(float(len(np.unique(shown)) / max(n_items, 1)), 4),
            "popular_share": round(float(np.isin(shown, popular_items).mean()) if len(shown) else 0.0, 4),
            "long_tail_share": round(float((~np.isin(shown, head)).mean()) if len(shown) else 0.0, 4),
            "ms_per_case": round(1000 * self.seconds / max(len(self.ranks), 1), 3),
        }

    def curves(self) -> dict[str, list[float]]:
        return quality.curves(self.ranks, K)


def run_model(name: str, recommend: Callable[..., np.ndarray], cases: TestCases,
              progress: Progress) -> ModelResult:
    task = progress.add_task(name, total=len(cases.labels))
    ranks = np.zeros(len(cases.labels), dtype=np.int64)
    recommended: list[np.ndarray] = []
    started = time.perf_counter()
    timed = getattr(recommend, "takes_time", False)
    for i, (prefix, label) in enumerate(zip(cases.prefixes, cases.labels)):
        at_ms = float(cases.times_ms[i]) if timed and cases.times_ms is not None else None
        items = np.asarray(recommend(prefix, at_ms) if timed else recommend(prefix), dtype=np.int64)[:K]
        ranks[i] = quality.rank_of(int(label), items, K)
        recommended.append(items)
        if i % 500 == 0:
            progress.update(task, completed=i)
    progress.update(task, completed=len(cases.labels))
    return ModelResult(name, ranks, recommended, time.perf_counter() - started)


def served_recommend(recommender, exclude_seen: bool) -> Callable[[list[int], float | None], np.ndarray]:
    """The API's recommender, called exactly as POST /recommend calls it: the prefix as the
    session's items, no session state, and (with real time) the case's time for the trending
    features, which the recommender then reads as the stream showed them at that moment."""
    loop = asyncio.new_event_loop()
    calls = iter(range(1 << 62))

    def recommend(prefix: list[int], at_ms: float | None = None) -> np.ndarray:
        # the n-th case's request id seeds its exploration slot: runs over the same cases draw alike
        result = loop.run_until_complete(recommender.recommend(
            "evaluation", K, prefix, exclude_seen=exclude_seen, use_stream=False, at_ms=at_ms,
            request_id=f"evaluation-{next(calls)}"))
        recommend.explored += result.explored_position is not None  # type: ignore[attr-defined]
        recommend.explore_ms += result.timings_ms.get("exploration", 0.0)  # type: ignore[attr-defined]
        recommend.degraded += bool(result.degraded_reasons)  # type: ignore[attr-defined]
        return np.fromiter((item for item, _ in result.items), dtype=np.int64, count=len(result.items))

    recommend.takes_time = True  # type: ignore[attr-defined]
    recommend.explored = 0  # type: ignore[attr-defined]
    recommend.explore_ms = 0.0  # type: ignore[attr-defined]
    recommend.degraded = 0  # type: ignore[attr-defined]  # answers that fell back (budget, failure)
    return recommend


def candidate_recall(generators, cases: TestCases, decay: float, max_session_items: int,
                     progress: Progress) -> dict[str, float]:
    """Share of cases (%) whose next item each generator proposes, and the union the ranker sees."""

    task = progress.add_task("candidates", total=len(cases.labels))
    hits: dict[str, int] = {}
    for i, (prefix, label) in enumerate(zip(cases.prefixes, cases.labels)):
        candidates = generators.for_session(merge_session_items([], prefix, max_session_items), decay)
        found = {} if candidates is None else {**candidates.sources, "union": candidates.item_ids}
        for name, ids in found.items():
            hits[name] = hits.get(name, 0) + bool((ids == label).any())
        if i % 500 == 0:
            progress.update(task, completed=i)
    progress.update(task, completed=len(cases.labels))
    return {name: round(100 * count / max(len(cases.labels), 1), 2) for name, count in hits.items()}


# --- report ------------------------------------------------------------------------------------

def plot(results: list[ModelResult], cases: TestCases, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for result in results:
        curves = result.curves()
        axes[0].plot(range(1, K + 1), curves["HR"], label=result.name)
        axes[1].plot(range(1, K + 1), curves["MRR"], label=result.name)
    for ax, metric in zip(axes, ("HR@k", "MRR@k")):
        ax.set_xlabel("k")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    paths.append(out_dir / "metrics_at_k.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    lengths = np.minimum(np.array([len(p) for p in cases.prefixes]), 10)
    fig, ax = plt.subplots(figsize=(7, 4))
    for result in results:
        by_length = [float((result.ranks[lengths == n] > 0).mean() * 100) if (lengths == n).any() else np.nan
                     for n in range(1, 11)]
        ax.plot(range(1, 11), by_length, marker="o", label=result.name)
    ax.set_xlabel("prefix length (10 = 10 or more)")
    ax.set_ylabel(f"HR@{K} (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "hit_rate_by_prefix_length.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def catalogue_groups(train_data: Interactions) -> tuple[np.ndarray, int, np.ndarray]:
    """What `ModelResult.summary` measures shown lists against: the top 1% of items by training clicks
    ("popular_share"), the catalogue's size, and its head (the top HEAD_SHARE; the rest is the long tail)."""
    n_items = len(np.unique(train_data.item_ids))
    return (most_popular(train_data, max(1, n_items // 100)), n_items,
            most_popular(train_data, max(1, int(n_items * HEAD_SHARE))))


def exploration_report(summaries: dict[str, dict], strength: float, explored_share: float,
                       ms_per_case: float = 0.0) -> dict:
    """What the exploration slot costs (HR/MRR@20 points lost) and adds (coverage, long-tail share),
    against the same model without it on the same cases; all zero when it is off."""
    with_ = summaries["streamrec"]
    without = summaries.get(WITHOUT_EXPLORATION, with_)
    return {
        "strength": strength,
        "explored_share": round(explored_share, 4),  # answers whose last place the slot took
        "ms_per_case": round(ms_per_case, 4),  # the recommender's `exploration` step, mean over the cases
        "hr_cost": round(without[f"HR@{K}"] - with_[f"HR@{K}"], 2),
        "mrr_cost": round(without[f"MRR@{K}"] - with_[f"MRR@{K}"], 2),
        "coverage_gain": round(with_["coverage"] - without["coverage"], 4),
        "coverage": {"with": with_["coverage"], "without": without["coverage"]},
        "long_tail_share": {"with": with_["long_tail_share"], "without": without["long_tail_share"]},
    }


def render(report: dict) -> Table:
    table = Table(title=f"next-item quality on {report['cases']:,} cases ({report['dataset']})")
    keys = [f"HR@{K}", f"MRR@{K}", f"NDCG@{K}", "coverage", "popular_share", "long_tail_share", "ms_per_case"]
    table.add_column("model")
    for key in keys:
        table.add_column(key, justify="right")
    explore = report["exploration"]["strength"]
    table.add_row(f"streamrec (exclude_seen={report['exclude_seen']}, explore={explore})",
                  *[str(report[k]) for k in keys], style="bold")
    if WITHOUT_EXPLORATION in report:
        table.add_row("  without exploration", *[str(report[WITHOUT_EXPLORATION][k]) for k in keys])
    other = report[OTHER_EXCLUDE_SEEN]
    table.add_row(f"  with exclude_seen={other['exclude_seen']}", *[str(other[k]) for k in keys])
    if "ablation" in report:
        table.add_row("  without streaming features", *[str(report["ablation"]["without_streaming"][k]) for k in keys])
    for name, figures in report["baselines"].items():
        table.add_row(name, *[str(figures[k]) for k in keys])
    return table


def evaluate(settings, dataset: Path, *, limit: int | None = None, exclude_seen: bool | None = None,
             train_model: bool = True, out_dir: Path | None = None, explore_strength: float | None = None) -> dict:
    """Train on the dataset's training data (in an evaluation data dir), evaluate every test case.

    The served model runs with the API's default `exclude_seen` unless told otherwise (what a
    caller who trusts the defaults gets), and once more with the other setting; both are reported.
    It explores as the API does (`explore_strength`, default the setting's) and, when that is not
    0, runs once more without exploring: the report's `exploration` compares the two."""
    from candidates.bundle import ModelBundle
    from serving.recommender import Recommender
    from serving.schemas import EXCLUDE_SEEN_DEFAULT
    from serving.scoring import Scorer
    from training.historical_features import TrendingHistory
    from training.pipeline import train

    dataset = Path(dataset)
    strength = settings.explore_strength if explore_strength is None else explore_strength
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"explore strength {strength} is not in [0, 1]")
    eval_settings = settings.model_copy(update={"data_dir": settings.data_dir / "evaluation" / dataset.name,
                                                "explore_strength": strength})
    train_data = load_dataset(dataset, split="train")
    if train_model:
        # the twin for the streaming-features ablation, and the train/serve generator check
        train(eval_settings, dataset, ranker_ablation=True, ranker_skew_check=True)
    exclude_seen = EXCLUDE_SEEN_DEFAULT if exclude_seen is None else exclude_seen
    bundle = ModelBundle.load_current(eval_settings.models_dir)
    model = bundle.artifacts
    cases = load_test_cases(dataset, train_data)
    if limit:
        cases = cases.head(limit)
    # With real time, the trending features are what the stream showed at each case's time: the
    # windows over every click before it, training and earlier test clicks alike.
    history = TrendingHistory.from_clicks(train_data, load_test_split(dataset)) if cases.times_ms is not None else None
    recommender = Recommender(eval_settings, None, bundle, trending_history=history)
    served = {"streamrec": (recommender, exclude_seen), OTHER_EXCLUDE_SEEN: (recommender, not exclude_seen)}
    if history is not None and bundle.ranker_report.get("batch_only_features"):
        twin = ModelBundle.load(bundle.path, batch_only_ranker=True).ranker_batch_only
        served["streamrec_without_streaming"] = (Recommender(
            eval_settings, None, bundle, trending_history=history, scorer=Scorer(twin)), exclude_seen)
    if strength > 0:
        served[WITHOUT_EXPLORATION] = (Recommender(eval_settings.model_copy(update={"explore_strength": 0.0}), None,
                                                   bundle, trending_history=history), exclude_seen)

    popular, n_items, head = catalogue_groups(train_data)
    progress = Progress(TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=console, transient=False)
    with progress:
        callers = {name: served_recommend(recommender, exclude) for name, (recommender, exclude) in served.items()}
        results = [run_model(name, recommend, cases, progress) for name, recommend in callers.items()]
        for baseline in (Popularity(train_data), ItemKNN(train_data), SessionKNNBaseline(train_data)):
            results.append(run_model(baseline.name, baseline.recommend, cases, progress))
        recall = candidate_recall(recommender.generators, cases, eval_settings.recency_decay,
                                  eval_settings.max_session_items, progress)

    summaries = {r.name: r.summary(popular, n_items, head) for r in results}
    out_dir = out_dir or eval_settings.data_dir / "report"
    plots = plot(results, cases, out_dir)
    report = {"dataset": str(dataset), "cases": int(len(cases.labels)), "model_version": model.version,
              "exclude_seen": exclude_seen, **summaries["streamrec"],
              OTHER_EXCLUDE_SEEN: {"exclude_seen": not exclude_seen, **summaries[OTHER_EXCLUDE_SEEN]},
              **({WITHOUT_EXPLORATION: summaries[WITHOUT_EXPLORATION]} if WITHOUT_EXPLORATION in summaries else {}),
              "candidate_recall": recall,
              "ranker_valid": {key: bundle.ranker_report[key] for key in (
                  "valid", "valid_refitted_generators", "valid_best_single_feature", "valid_session_knn_only")
                  if key in bundle.ranker_report},
              "streaming_features": history is not None and bool(bundle.ranker_report.get("streaming_features")),
              "baselines": {name: figures for name, figures in summaries.items() if name not in served},
              **({"ablation": {"with_streaming": summaries["streamrec"],
                               "without_streaming": summaries["streamrec_without_streaming"]}}
                 if "streamrec_without_streaming" in summaries else {}),
              "exploration": exploration_report(summaries, strength, callers["streamrec"].explored / len(cases.labels),
                                                callers["streamrec"].explore_ms / len(cases.labels)),
              "curves": {r.name: r.curves() for r in results}, "plots": [str(p) for p in plots]}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    console.print(render(report))
    console.print("candidate recall (% of cases whose next item is proposed): "
                  + ", ".join(f"{name} {value}" for name, value in recall.items()))
    console.print(f"plots: {', '.join(str(p) for p in plots)}")
    return report
