"""`streamrec bench retrieval`: FAISS index types on trained and synthetic catalogues, against exact search.

For each catalogue — the trained item embeddings of a model version, and a synthetic catalogue of
`--items` vectors — every index type is built and tuned, then asked for the top 100 of session
queries one at a time (batch size 1, one OpenMP thread, through `CandidateIndex.search`: the
product's request path), each timed with `time.perf_counter`:

- **flat** — exact inner-product search: the reference; `speedup_vs_flat` = flat p50 / p50;
- **hnsw** — `candidates.index.build_index` forced to HNSW (M=32, efConstruction=120);
- **ivf** — `build_index` forced to IVFFlat (nlist ≈ 4·√n);
- **ivf_sq8** — the same IVF with 8-bit scalar-quantised vectors (¼ of the memory).

The row marked `product_choice` is what `build_index` picks at that size. Search parameters
(efSearch, nprobe) are tuned by the product's own procedure — the smallest value reaching recall
0.95 on its tuning queries (single items and mixes of random items) — never on the measured
queries. As a diagnostic, `params.session_tuned` is the value tuning on a separate held-out set of
*session* queries would pick. `build_s` is everything training does to get a tuned, servable index
(train, add, tune). Recall@100 is against exact search (batch `IndexFlatIP`) on the measured
queries; a found item counts if its exact score reaches the 100th exact score, so ties between
equal-scored items are not held against an index. Memory is the serialised index
(`faiss.serialize_index`, vectors + structure + ids) and the growth of the process RSS by the build.

**Why the synthetic catalogue is a Gaussian mixture and not isotropic noise.** Trained item
embeddings are clustered: items of one topic sit close together, topics differ in size, and a few
directions carry more variance than others. Isotropic Gaussian vectors have none of this — every
item is about equally far from every other, which makes approximate search unrealistically hard
(IVF needs nprobe 362 of 512 lists for recall 0.95 on 30k isotropic vectors, 11 of 1024 on the
43k trained diginetica embeddings) and gives no clue how a real catalogue behaves. The generator draws topics, clusters of items
within topics (log-normal cluster sizes), and items around their cluster centre, in a space with a
mildly decaying variance spectrum, all L2-normalised. Its defaults were calibrated on the 43k-item
diginetica BPR embeddings (64 dims): top principal component 5.4% of variance (5.5% trained),
mean cosine to the 10th / 100th nearest neighbour 0.870 / 0.705 (0.869 / 0.723), spread of
random-pair cosines 0.150 (0.154); HNSW (M=32) reaches recall@100 0.941 / 0.963 at efSearch
128 / 192 on both. Item popularity is Zipf-like, as clicks are.

**Queries are sessions.** A session starts at an item drawn by popularity and walks on: with
probability `stay` to a related item (same cluster for the synthetic catalogue, a co-visited item
weighted by co-visitation for a trained model), otherwise to another popular item; lengths are
geometric. The query is `candidates.features.session_embedding` of the walk (recency-weighted, the
serving decay), exactly what `/recommend` searches with.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bench.cli import bench_app
from bench.common import JsonFlag, Seed, console, latency_summary, print_table, run_command, wide_console
from streamrec.settings import Settings, get_settings

RECALL_K = 100  # the JSON key says recall_at_100
INDEX_TYPES = ("flat", "hnsw", "ivf", "ivf_sq8")
DEFAULT_INDEX_TYPES = "flat,hnsw,ivf,ivf_sq8"
TABLE_WIDTH = 120


@dataclass(frozen=True)
class Targets:
    """The issue's targets for retrieval at 1M items."""

    build_s: float = 300.0
    p99_ms: float = 5.0
    recall: float = 0.95


@dataclass(frozen=True)
class SyntheticSpec:
    """A clustered catalogue like trained embeddings (defaults calibrated on diginetica, see module doc)."""

    items: int = 1_000_000
    dim: int = 64
    items_per_cluster: int = 100
    items_per_topic: int = 2000
    spectrum_decay: float = 0.3  # variance of component j ∝ (1 + j) ** -decay
    topic_spread: float = 2.0  # cluster centre = topic + topic_spread · noise
    item_spread: float = 0.45  # item = cluster centre + item_spread · noise
    cluster_size_sigma: float = 1.0  # log-normal spread of cluster sizes
    popularity_exponent: float = 0.6  # Zipf exponent of item clicks
    seed: int = 0


@dataclass(frozen=True)
class SessionSpec:
    """How session queries walk the catalogue."""

    mean_length: float = 4.0
    max_length: int = 20
    stay: float = 0.8  # probability that the next click is related to the last one
    decay: float = 0.7  # recency decay of the session embedding (serving's setting)


@dataclass(frozen=True)
class Catalogue:
    """Item vectors plus what sessions need: click popularity and the related items of each item."""

    name: str
    vectors: np.ndarray  # float32 [n, d], L2-normalised rows
    popularity: np.ndarray  # float64 [n], sums to 1
    group_of: np.ndarray  # int64 [n]: row -> group in the CSR below
    related_indptr: np.ndarray  # int64 [groups + 1]
    related_rows: np.ndarray  # int64: related item rows per group
    related_weights: np.ndarray | None = None  # float64 aligned with related_rows; None = uniform

    @property
    def items(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def related(self, row: int, rng: np.random.Generator) -> int | None:
        """A random item related to `row` (weighted if weights are known), None if it has none."""
        group = self.group_of[row]
        start, end = int(self.related_indptr[group]), int(self.related_indptr[group + 1])
        if end <= start:
            return None
        if self.related_weights is None:
            return int(self.related_rows[rng.integers(start, end)])
        weights = self.related_weights[start:end]
        return int(self.related_rows[start + rng.choice(end - start, p=weights / weights.sum())])


# --- catalogues ---------------------------------------------------------------------------------

def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _csr_by_label(labels: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by label: indptr [groups + 1] and the rows of each group."""
    rows = np.argsort(labels, kind="stable").astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=groups))]).astype(np.int64)
    return indptr, rows


def synthetic_catalogue(spec: SyntheticSpec) -> Catalogue:
    """Topics → clusters → items in a space with a decaying spectrum; deterministic for `spec.seed`."""
    rng = np.random.default_rng(spec.seed)
    variance = (1.0 + np.arange(spec.dim)) ** -spec.spectrum_decay
    scale = np.sqrt(variance / variance.sum()).astype(np.float32)  # noise rows have norm ≈ 1

    def noise(rows: int) -> np.ndarray:
        return rng.standard_normal((rows, spec.dim), dtype=np.float32) * scale

    n_topics = max(1, spec.items // spec.items_per_topic)
    n_clusters = max(1, spec.items // spec.items_per_cluster)
    topics = _unit_rows(noise(n_topics))
    centres = _unit_rows(topics[rng.integers(0, n_topics, n_clusters)] + spec.topic_spread * noise(n_clusters))
    sizes = rng.lognormal(0.0, spec.cluster_size_sigma, n_clusters)
    labels = rng.choice(n_clusters, spec.items, p=sizes / sizes.sum())
    vectors = np.empty((spec.items, spec.dim), dtype=np.float32)
    for start in range(0, spec.items, 100_000):  # in chunks: no second full-size temporary
        part = slice(start, min(start + 100_000, spec.items))
        vectors[part] = _unit_rows(centres[labels[part]] + spec.item_spread * noise(part.stop - part.start))
    clicks = rng.permutation((1.0 + np.arange(spec.items)) ** -spec.popularity_exponent)
    indptr, rows = _csr_by_label(labels, n_clusters)
    return Catalogue(name="synthetic", vectors=vectors, popularity=clicks / clicks.sum(),
                     group_of=labels.astype(np.int64), related_indptr=indptr, related_rows=rows)


def resolve_model(path: Path | None, settings: Settings) -> Path | None:
    """A model version folder from `--model` (a version folder or a models dir with CURRENT)."""
    from streamrec.artifacts import META, current_version

    folder = Path(path) if path is not None else settings.models_dir
    if (folder / META).exists():
        return folder
    version = current_version(folder)
    return folder / version if version and (folder / version / META).exists() else None


def trained_catalogue(model_path: Path) -> Catalogue:
    """The model's item embeddings; sessions walk its co-visitation graph."""
    from streamrec.artifacts import ModelArtifacts

    model = ModelArtifacts.load(model_path)
    order = np.argsort(model.item_ids)
    neighbours = model.covisit.neighbours.astype(np.int64)
    position = np.clip(np.searchsorted(model.item_ids[order], neighbours), 0, len(order) - 1)
    known = model.item_ids[order][position] == neighbours
    rows = np.where(known, order[position], -1)
    weights = np.where(known, model.covisit.scores.astype(np.float64), 0.0)
    indptr = model.covisit.indptr.astype(np.int64)
    clicks = model.item_popularity.astype(np.float64) + 1.0  # add-one: unseen items can still start a walk
    return Catalogue(name=f"trained:{model.version}", vectors=_unit_rows(model.item_embeddings),
                     popularity=clicks / clicks.sum(), group_of=np.arange(len(model.item_ids), dtype=np.int64),
                     related_indptr=indptr, related_rows=rows, related_weights=weights + 1e-12)


# --- queries and exact truth --------------------------------------------------------------------

def session_queries(catalogue: Catalogue, n: int, spec: SessionSpec, seed: int) -> np.ndarray:
    """`n` session embeddings of popularity-started walks over related items (see module doc)."""
    from candidates.features import session_embedding

    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(1.0 / spec.mean_length, n), spec.max_length)
    popular = iter(rng.choice(catalogue.items, int(lengths.sum()), p=catalogue.popularity))
    queries = np.empty((n, catalogue.dim), dtype=np.float32)
    for q, length in enumerate(lengths):
        walk = [int(next(popular))]
        for _ in range(length - 1):
            step = catalogue.related(walk[-1], rng) if rng.random() < spec.stay else None
            walk.append(step if step is not None and step >= 0 else int(next(popular)))
        embedding = session_embedding(catalogue.vectors[walk], spec.decay)
        queries[q] = embedding if embedding is not None else catalogue.vectors[walk[-1]]
    return queries


@dataclass(frozen=True)
class Truth:
    """Exact top-k of a query set: rows and scores, best first."""

    rows: np.ndarray
    scores: np.ndarray

    @property
    def kth_scores(self) -> np.ndarray:
        return self.scores[:, -1]


def exact_truth(vectors: np.ndarray, queries: np.ndarray, k: int) -> Truth:
    import faiss

    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    scores, rows = exact.search(queries, k)
    return Truth(rows=rows, scores=scores)


def recall_at_k(vectors: np.ndarray, queries: np.ndarray, found: list[np.ndarray], truth: Truth,
                tolerance: float = 1e-5) -> float:
    """Mean share of the exact top-k that was found; a found item whose exact score ties the k-th counts."""
    k = truth.rows.shape[1]
    hits = 0
    for query, rows, kth in zip(queries, found, truth.kth_scores):
        rows = np.unique(rows[rows >= 0])[:k]
        hits += int((vectors[rows] @ query >= kth - tolerance).sum())
    return hits / (k * len(queries))


# --- index builders ------------------------------------------------------------------------------

@dataclass
class BuiltIndex:
    index: Any  # faiss.Index, id-mapped to catalogue rows
    info: dict[str, Any]  # parameters and the tuning's own measurements


Builder = Callable[[np.ndarray, float], BuiltIndex]


def build_flat(vectors: np.ndarray, target: float) -> BuiltIndex:
    import faiss

    index = faiss.IndexIDMap(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    return BuiltIndex(index, {"type": "flat"})


def _product(vectors: np.ndarray, target: float, *, exact_max_items: int, ivf_min_items: int) -> BuiltIndex:
    from candidates.index import build_index

    index, info = build_index(vectors, np.arange(len(vectors), dtype=np.int64), target_recall=target,
                              k=RECALL_K, exact_max_items=exact_max_items, ivf_min_items=ivf_min_items)
    return BuiltIndex(index, info)


def build_hnsw(vectors: np.ndarray, target: float) -> BuiltIndex:
    """The product's builder forced to HNSW (its parameters, its efSearch tuning)."""
    return _product(vectors, target, exact_max_items=0, ivf_min_items=len(vectors) + 1)


def build_ivf(vectors: np.ndarray, target: float) -> BuiltIndex:
    """The product's builder forced to IVFFlat (its nlist, its nprobe tuning)."""
    return _product(vectors, target, exact_max_items=0, ivf_min_items=0)


def build_ivf_sq8(vectors: np.ndarray, target: float) -> BuiltIndex:
    """IVF with 8-bit scalar-quantised vectors, built and tuned exactly as the product tunes IVFFlat."""
    import faiss

    from candidates.index import ivf_lists, new_ivf, recall_queries, tune_search

    rows = np.arange(len(vectors), dtype=np.int64)
    index = new_ivf(vectors, rows, ivf_lists(len(vectors)), codec="SQ8")
    queries = recall_queries(vectors)
    k = min(RECALL_K, len(vectors))
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, k)
    return BuiltIndex(index, {**tune_search(index, queries, truth, k, target), "codec": "SQ8"})


BUILDERS: dict[str, Builder] = {"flat": build_flat, "hnsw": build_hnsw, "ivf": build_ivf, "ivf_sq8": build_ivf_sq8}


def product_choice(items: int) -> str:
    """The index type `candidates.index.build_index` picks for a catalogue of this size."""
    from candidates.index import EXACT_MAX_ITEMS, IVF_MIN_ITEMS

    return "flat" if items < EXACT_MAX_ITEMS else "ivf" if items >= IVF_MIN_ITEMS else "hnsw"


def session_tuned(built: BuiltIndex, tuning: np.ndarray, truth: Truth, target: float) -> dict[str, Any] | None:
    """The parameter that tuning on held-out *session* queries would pick; the product's is re-applied after."""
    from candidates.index import set_ef_search, set_nprobe, tune_search

    if built.info.get("type") not in ("hnsw", "ivf"):
        return None
    tuned = tune_search(built.index, tuning, truth.rows, truth.rows.shape[1], target)
    if tuned["type"] == "hnsw":
        set_ef_search(built.index, built.info["ef_search"])
        return {"ef_search": tuned["ef_search"], "recall_at_k": tuned["recall_at_k"]}
    set_nprobe(built.index, built.info["nprobe"])
    return {"nprobe": tuned["nprobe"], "recall_at_k": tuned["recall_at_k"]}


# --- measurement ---------------------------------------------------------------------------------

def rss_bytes() -> int:
    """Resident set size of this process."""
    import psutil

    return int(psutil.Process().memory_info().rss)


@contextlib.contextmanager
def step(label: str) -> Iterator[None]:
    """One line with the elapsed time once a long step is done (a spinner would garble logs)."""
    started = time.perf_counter()
    yield
    console.print(f"  {label}: {time.perf_counter() - started:,.1f} s")


def timed_searches(index: Any, queries: np.ndarray, k: int, warmup: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    """One query at a time through the product's `CandidateIndex.search` (1 OpenMP thread)."""
    from candidates.index import CandidateIndex

    candidates = CandidateIndex(index)
    for query in warmup:
        candidates.search(query, k)
    seconds: list[float] = []
    found: list[np.ndarray] = []
    for query in queries:
        started = time.perf_counter()
        rows, _ = candidates.search(query, k)
        seconds.append(time.perf_counter() - started)
        found.append(rows)
    return seconds, found


@dataclass(frozen=True)
class RetrievalOptions:
    items: int = 1_000_000
    queries: int = 2000
    tuning_queries: int = 1000
    warmup: int = 50
    index_types: tuple[str, ...] = INDEX_TYPES
    seed: int = 0


def measure_index(kind: str, catalogue: Catalogue, queries: np.ndarray, tuning: np.ndarray, truth: Truth,
                  tuning_truth: Truth, options: RetrievalOptions, targets: Targets) -> dict[str, Any]:
    """Build (timed, as many threads as training uses), then per-query latency and recall of one index type."""
    import faiss

    from candidates.index import BUILD_THREADS

    faiss.omp_set_num_threads(BUILD_THREADS)
    rss_before = rss_bytes()
    started = time.perf_counter()
    with step(f"{catalogue.name} {kind}: build + tune ({catalogue.items:,} items)"):
        built = BUILDERS[kind](catalogue.vectors, targets.recall)
    build_s = time.perf_counter() - started
    rss_after = rss_bytes()
    built.info["session_tuned"] = session_tuned(built, tuning, tuning_truth, targets.recall)
    memory_bytes = int(faiss.serialize_index(built.index).nbytes)
    with step(f"{catalogue.name} {kind}: {len(queries):,} single queries"):
        seconds, found = timed_searches(built.index, queries, truth.rows.shape[1], tuning[:options.warmup])
    faiss.omp_set_num_threads(BUILD_THREADS)
    return {
        "catalogue": catalogue.name, "items": catalogue.items, "dim": catalogue.dim, "index": kind,
        "build_s": round(build_s, 2), "memory_bytes": memory_bytes, "memory_mb": round(memory_bytes / 2**20, 3),
        "rss_growth_mb": round((rss_after - rss_before) / 2**20, 1),
        **latency_summary(seconds),
        "recall_at_100": round(recall_at_k(catalogue.vectors, queries, found, truth), 4),
        "product_choice": kind == product_choice(catalogue.items),
        "params": built.info,
    }


def bench_catalogue(catalogue: Catalogue, options: RetrievalOptions, sessions: SessionSpec,
                    targets: Targets) -> list[dict[str, Any]]:
    """Every index type on one catalogue, the flat (exact) one first as the reference."""
    import faiss

    from candidates.index import BUILD_THREADS

    faiss.omp_set_num_threads(BUILD_THREADS)
    k = min(RECALL_K, catalogue.items)
    with step(f"{catalogue.name}: {options.queries:,} + {options.tuning_queries:,} session queries, exact top-{k}"):
        queries = session_queries(catalogue, options.queries, sessions, seed=options.seed + 1)
        tuning = session_queries(catalogue, options.tuning_queries, sessions, seed=options.seed + 2)
        truth = exact_truth(catalogue.vectors, queries, k)
        tuning_truth = exact_truth(catalogue.vectors, tuning, k)
    kinds = ["flat"] + [kind for kind in options.index_types if kind != "flat"]
    rows = [measure_index(kind, catalogue, queries, tuning, truth, tuning_truth, options, targets) for kind in kinds]
    reference_p50 = rows[0]["p50_ms"]
    for row in rows:
        row["speedup_vs_flat"] = round(reference_p50 / row["p50_ms"], 2) if row["p50_ms"] else None
        row["meets_targets"] = bool(row["build_s"] <= targets.build_s and row["p99_ms"] <= targets.p99_ms
                                    and row["recall_at_100"] >= targets.recall)
    return rows


def run_retrieval_bench(settings: Settings, options: RetrievalOptions, model: Path | None = None,
                        targets: Targets = Targets(), sessions: SessionSpec | None = None) -> dict[str, Any]:
    """All catalogues: the trained model's (if any) and the synthetic one at the model's dimension."""
    from candidates.index import BUILD_THREADS

    sessions = sessions or SessionSpec(decay=settings.recency_decay, max_length=settings.recent_items)
    load_before = os.getloadavg()[0]  # other work on the machine inflates latency and build times
    notes: list[str] = []
    catalogues: list[Catalogue] = []
    model_path = resolve_model(model, settings)
    if model_path is None:
        notes.append(f"no trained model at {model or settings.models_dir}: trained catalogue skipped "
                     "(run `streamrec train`, or pass --model)")
    else:
        catalogues.append(trained_catalogue(model_path))
    dim = catalogues[0].dim if catalogues else SyntheticSpec.dim
    rows: list[dict[str, Any]] = []
    for catalogue in catalogues:
        rows += bench_catalogue(catalogue, options, sessions, targets)
    if options.items > 0:
        with step(f"synthetic catalogue: {options.items:,} × {dim}"):
            synthetic = synthetic_catalogue(SyntheticSpec(items=options.items, dim=dim, seed=options.seed))
        rows += bench_catalogue(synthetic, options, sessions, targets)
    return {"benchmark": "retrieval", "k": RECALL_K, "queries": options.queries,
            "tuning_queries": options.tuning_queries, "batch_size": 1, "search_threads": 1,
            "build_threads": BUILD_THREADS, "targets": asdict(targets), "sessions": asdict(sessions),
            "cpus": os.cpu_count(), "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "notes": notes, "catalogues": rows}


def _search_setting(params: dict[str, Any]) -> str:
    """The product-tuned parameter, and in brackets what tuning on session queries would pick."""
    sessions = params.get("session_tuned") or {}
    if params.get("type") == "hnsw":
        return f"ef {params['ef_search']} ({sessions.get('ef_search')})"
    if params.get("type") == "ivf":
        return f"{params['nprobe']}/{params['nlist']} ({sessions.get('nprobe')})"
    return "exact"


def _table_row(row: dict[str, Any]) -> dict[str, object]:
    return {"index": row["index"] + ("*" if row["product_choice"] else ""), "search": _search_setting(row["params"]),
            "build s": row["build_s"], "MB": row["memory_mb"], "+RSS MB": row["rss_growth_mb"],
            "p50 ms": row["p50_ms"], "p95 ms": row["p95_ms"], "p99 ms": row["p99_ms"],
            "recall": row["recall_at_100"], "×flat": row["speedup_vs_flat"],
            "ok": "yes" if row["meets_targets"] else "no"}


def print_tables(result: dict[str, Any]) -> None:
    """One table per catalogue on stderr, with the legend of its columns."""
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    rows = result["catalogues"]
    with wide_console(TABLE_WIDTH):
        for name in dict.fromkeys(row["catalogue"] for row in rows):
            mine = [row for row in rows if row["catalogue"] == name]
            print_table(f"{name}: {mine[0]['items']:,} items × {mine[0]['dim']}", [_table_row(row) for row in mine])
    targets = result["targets"]
    console.print(f"load average (1 min) {result['load_average_1m'][0]} → {result['load_average_1m'][1]} "
                  f"on {result['cpus']} CPUs")
    console.print(f"top-{result['k']} of one session query at a time, 1 thread; recall@{result['k']} vs exact (flat); "
                  f"×flat = flat p50 / p50; * = the product's choice at this size; search = efSearch or "
                  f"nprobe/nlist tuned by the product (in brackets: tuned on held-out session queries); "
                  f"ok = build ≤ {targets['build_s']:.0f} s, p99 ≤ {targets['p99_ms']} ms, "
                  f"recall ≥ {targets['recall']}")


def _index_types(value: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in INDEX_TYPES]
    if unknown:
        raise typer.BadParameter(f"unknown index type(s) {unknown}; choose from {', '.join(INDEX_TYPES)}")
    return kinds


@bench_app.command("retrieval")
def retrieval(
    as_json: JsonFlag = False,
    items: Annotated[int, typer.Option(min=0, help="Items of the synthetic catalogue (0: skip it).")] = 1_000_000,
    queries: Annotated[int, typer.Option(min=1, help="Measured session queries per catalogue.")] = 2000,
    tuning_queries: Annotated[int, typer.Option(min=10, help="Held-out session queries (for `session_tuned`).")] = 1000,
    model: Annotated[Path | None, typer.Option(help="Model version folder, or a models dir with CURRENT "
                                                     "(default: the data dir's current model).")] = None,
    indexes: Annotated[str, typer.Option(help=f"Index types, comma-separated ({', '.join(INDEX_TYPES)}); "
                                              "flat always runs, as the reference.")] = DEFAULT_INDEX_TYPES,
    seed: Seed = 0,
) -> None:
    """FAISS flat / HNSW / IVF on the trained and a synthetic catalogue: build time, memory, latency, recall@100."""
    options = RetrievalOptions(items=items, queries=queries, tuning_queries=tuning_queries,
                               index_types=_index_types(indexes), seed=seed)
    run_command(lambda: run_retrieval_bench(get_settings(), options, model), print_tables, as_json)
