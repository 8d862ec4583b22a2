"""One typed settings object for every streamrec process, read from STREAMREC_* environment variables.

Every component (CLI, worker, API, training, tests) takes a `Settings`; nothing else reads the
environment, so one `export` changes the whole system consistently.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Configuration of a streamrec deployment (env prefix `STREAMREC_`)."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore", frozen=True)

    # --- infrastructure -------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers. If a broker answers here, `streamrec up` uses it "
        "instead of starting one.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis of the Feast online store.")
    clicks_topic: str = Field("clicks", description="Topic of raw click events.")
    dead_letter_topic: str = Field("clicks-dlq", description="Topic for events that failed validation.")
    impressions_topic: str = Field(
        "impressions", description="Topic of the inference log: one record per /recommend answer (keyed by session).")
    clicks_partitions: int = Field(4, ge=1, description="Partitions of the clicks topic (keyed by session).")
    kafka_version: str = Field("4.1.1", description="Apache Kafka version fetched by `streamrec up`.")
    kafka_libs_dir: Path | None = Field(
        None,
        description="Where the broker's jars are cached (default data_dir/kafka/libs); point several "
        "data dirs (e.g. tests) at one cache to fetch the jars once.",
    )
    kafka_controller_port: int = Field(
        0, ge=0, description="Loopback port of the local broker's KRaft controller; 0 = any free port."
    )
    kafka_heap_opts: str = Field("-Xmx512m -Xms256m", description="JVM heap flags of the local broker.")
    start_timeout_s: float = Field(
        60.0, gt=0, description="Max wait for a started Kafka/Redis to answer, and for `streamrec produce` to reach Kafka.")

    # --- paths ----------------------------------------------------------------------------
    data_dir: Path = Field(
        PROJECT_ROOT / ".streamrec",
        description="Artifacts (batch sources, models, index), broker storage, pid files and logs.",
    )
    feature_repo: Path = Field(PROJECT_ROOT / "feature_repo", description="The Feast feature repo.")

    # --- streaming worker -----------------------------------------------------------------
    worker_id: str = Field("streamrec-worker", description="Faust app id (consumer group).")
    worker_web_port: int = Field(6066, description="Port of the Faust worker's web/metrics server.")
    worker_web_host: str = Field(
        "127.0.0.1", description="Address the worker's web/metrics server binds; compose: 0.0.0.0 so Prometheus "
        "on the compose network can scrape it (never publish it on the host).")
    worker_metrics_url: str | None = Field(
        None, description="Where the API scrapes the worker's Prometheus metrics for GET /ops/summary; "
        "unset = http://127.0.0.1:<worker_web_port>/metrics (compose: http://worker:6066/metrics).")
    recent_items: int = Field(20, ge=1, le=200, description="Recent items kept per session.")
    flush_max_events: int = Field(2000, ge=1, description="Events per online-store write batch.")
    flush_interval_ms: int = Field(
        50, ge=1, description="Max wait before a partial batch is written: adds up to this much to freshness, "
        "and larger batches spread the per-batch cost (commit, round trips) over more events.")
    write_timeout_s: float = Field(5.0, gt=0, description="Bound of one batch's online-store write; then it is retried.")
    max_event_bytes: int = Field(4096, ge=256, description="Events larger than this are dead-lettered.")
    max_future_skew_s: int = Field(3600, ge=0, description="Events further in the future are dead-lettered.")
    session_ttl_s: int = Field(86400, ge=60, description="How long streaming session features stay valid.")
    session_idle_s: int = Field(
        1800, ge=4, description="A session without a click for this long is over: the worker drops its state "
        "(memory stays bounded); its features stay in Redis until session_ttl_s, a later click starts afresh.")

    # --- stream archive -------------------------------------------------------------------
    archive_dir: Path | None = Field(
        None, description="Where `streamrec archive` writes the clicks and impressions topics as hive-partitioned "
        "parquet (the offline store's training data); unset = data_dir/archive.")
    archive_flush_rows: int = Field(
        5000, ge=1, description="Records of one partition the archiver buffers before it writes them as one file.")
    archive_flush_s: float = Field(
        2.0, gt=0, le=3600, description="Max age of a partition's buffered records before the archiver writes "
        "them: how long an event takes to reach the offline store, at most (plus the write).")
    archive_metrics_port: int = Field(
        0, ge=0, description="Port of the archiver's Prometheus /metrics (127.0.0.1, compose: 0.0.0.0 via "
        "worker_web_host); 0 = no metrics server.")

    # --- serving --------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address `streamrec serve` binds.")
    api_port: int = Field(8000, description="Port of `streamrec serve`.")
    api_workers: int = Field(
        1, ge=1, le=64, description="Processes of `streamrec serve`, each with its own model copy: one per core "
        "the API may use (one Python process runs on one core). /metrics sums them.")
    latency_budget_ms: float = Field(50.0, gt=0, description="Per-request budget of /recommend.")
    shed_loop_lag_ms: float = Field(
        20.0, ge=0, description="Smoothed event-loop lag of an API process over which /recommend answers from "
        "the in-memory fallbacks (no Redis read, no ranking) until the queue drains: overload degrades answers "
        "instead of delaying all of them. 0 never sheds.")
    max_session_items: int = Field(50, ge=1, le=500, description="Largest session accepted/used.")
    candidates_k: int = Field(100, ge=10, le=2000, description="FAISS candidates per request.")
    recency_decay: float = Field(0.7, gt=0, le=1, description="Weight ratio between consecutive items.")
    explore_strength: float = Field(
        0.3, ge=0, le=1, description="Item exploration: the probability that the last place of a ranked answer goes "
        "to a candidate the ranker left out, drawn with weight 1/sqrt(1 + its training and last-hour clicks); each "
        "shown item's propensity is logged with the impression. 0 = the ranker's list only.")
    item_feature_cache_ms: int = Field(
        1000, ge=0, description="How long the API reuses an item's streaming (trending) features it read; 0 = never. "
        "Session features are always read fresh.")
    model_poll_s: float = Field(
        2.0, gt=0, le=300, description="How often each API process looks for a new champion or routing in the "
        "models folder; a change is loaded in the background and swapped in without a restart.")
    impression_log: bool = Field(
        True, description="Log every /recommend answer to the impressions topic (the inference log); off: no "
        "rewards, no bandit learning, no online report.")
    impression_buffer: int = Field(
        10000, ge=1, description="Impressions an API process holds for Kafka; when Kafka is slower or down, "
        "newer ones are dropped and counted (the answer never waits for the log).")
    attribution_window_s: int = Field(
        1800, ge=1, description="A click joins its session's latest impression at most this old; it is a reward "
        "for that impression's model version when the impression showed the clicked item.")
    bandit_refresh_s: float = Field(
        2.0, gt=0, le=300, description="How often each API process reads the arms' reward counters (the bandit's "
        "posterior) from Redis.")
    max_shadow_tasks: int = Field(
        64, ge=0, description="Shadow scorings an API process runs at once; beyond that a request's shadow list "
        "is skipped and counted, so the challenger never takes the champion's capacity.")
    # --- continual learning (`streamrec learn`) ----------------------------------------------
    learn_check_s: float = Field(
        30.0, gt=0, description="How often `streamrec learn` reads the new clicks, measures drift and checks "
        "its triggers.")
    learn_interval_s: float = Field(
        3600.0, ge=0, description="Schedule trigger: a new version at least this often while new clicks "
        "arrive; 0 = off.")
    learn_volume_share: float = Field(
        0.1, ge=0, description="Volume trigger, relative: a new version once the new clicks are this share of the "
        "clicks the champion was trained on (scale-free: 10% of a small shop's history is a few thousand clicks, "
        "of a large one's hundreds of thousands); 0 = off.")
    learn_volume_clicks: int = Field(
        0, ge=0, description="Volume trigger, absolute: a new version once this many new clicks arrived, "
        "whatever the champion's size; 0 = off.")
    learn_min_clicks: int = Field(
        2_000, ge=1, description="No version (whatever the trigger) from fewer new clicks than this.")
    learn_on_drift: bool = Field(True, description="Drift trigger: a new version when measured drift fires.")
    learn_refit_on_drift: bool = Field(
        True, description="A version drift triggered refits the item embeddings from scratch (the champion's "
        "algorithm and size) instead of continuing them; every other part stays warm.")
    learn_fold_in: bool = Field(
        True, description="Test, then train: a promoted version gets its gate's hold-out clicks counted in "
        "(co-visitation, popularity, session-kNN memory, new items indexed) before it serves; the next version "
        "trains on them in full.")
    learn_new_items_s: float = Field(
        60.0, ge=0, description="New items: a light version (the new clicks folded in: no embedding or ranker "
        "update) at most this long after the stream's first click on an item the champion does not know; "
        "0 = off.")
    learn_holdout_share: float = Field(
        0.2, gt=0, lt=1, description="The most of the new clicks the gate tests both versions on: the newest "
        "clicks that hold 1.1 × `STREAMREC_LEARN_GATE_CASES` next-item cases, up to this share. The candidate "
        "never trains on them (the next version does, and its ranker continues on the gate's examples).")
    learn_gate_margin: float = Field(
        0.5, ge=0, description="The gate promotes a candidate whose hold-out HR@20 is at most this many points "
        "below the champion's.")
    learn_gate_cases: int = Field(
        3000, ge=100, description="Next-item cases of the hold-out the gate scores both versions on (sampled).")
    learn_metrics_port: int = Field(
        6068, ge=0, description="Port of `streamrec learn`'s Prometheus /metrics (drift figures, versions); 0 = off.")
    learn_promote: str = Field(
        "champion", pattern="^(champion|bandit)$", description="What a passed candidate becomes: the champion "
        "(`champion`), or a bandit arm beside it (`bandit`).")
    api_key: str | None = Field(
        None, description="If set, POST /events, GET /metrics and GET /ops/summary require it "
        "(X-API-Key, or Authorization: Bearer).")

    @field_validator("data_dir", "feature_repo")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return Path(path).expanduser().resolve()

    @field_validator("archive_dir")
    @classmethod
    def _absolute_or_unset(cls, path: Path | None) -> Path | None:
        return None if path is None else Path(path).expanduser().resolve()

    # --- derived --------------------------------------------------------------------------
    @cached_property
    def redis_address(self) -> str:
        """Feast's connection_string form of redis_url: host:port[,db=N][,password=...]."""
        url = urlparse(self.redis_url)
        address = f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"
        db = (url.path or "/0").strip("/") or "0"
        if db != "0":
            address += f",db={db}"
        if url.password:
            address += f",password={url.password}"
        return address

    @property
    def worker_metrics_endpoint(self) -> str:
        """worker_metrics_url, or the local worker's /metrics (derived, so a copy with another port follows)."""
        return self.worker_metrics_url or f"http://127.0.0.1:{self.worker_web_port}/metrics"

    @property
    def batch_dir(self) -> Path:
        return self.data_dir / "batch"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def archive_path(self) -> Path:
        """archive_dir, or data_dir/archive (derived, so a copy with another data_dir follows)."""
        return self.archive_dir or self.data_dir / "archive"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def kafka_dir(self) -> Path:
        """Local broker's config and storage (only used when streamrec starts the broker)."""
        return self.data_dir / "kafka"

    @property
    def kafka_libs(self) -> Path:
        return Path(self.kafka_libs_dir).expanduser().resolve() if self.kafka_libs_dir else self.kafka_dir / "libs"

    def to_env(self) -> dict[str, str]:
        """These settings as STREAMREC_* variables, for the processes streamrec starts."""
        env = {f"STREAMREC_{name.upper()}": str(value) for name, value in self.model_dump().items()
               if value is not None}
        return {**env, **self.feast_env()}

    def feast_env(self) -> dict[str, str]:
        """Environment `feast -c feature_repo ...` needs (feature_store.yaml reads these)."""
        env = {
            "STREAMREC_FEAST_REDIS": self.redis_address,
            "STREAMREC_DATA_DIR": str(self.data_dir),
        }
        if self.archive_dir is not None:  # features.py points the archive's sources here
            env["STREAMREC_ARCHIVE_DIR"] = str(self.archive_dir)
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
