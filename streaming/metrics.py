"""Prometheus metrics of the streaming worker (served on the worker's web port at /metrics)."""

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "streamrec_worker_events_total",
    "Click events seen by the worker, by outcome.",
    ["outcome"],  # applied | duplicate | dead_lettered
)
ITEM_CLICKS = Counter(
    "streamrec_worker_item_clicks_total", "Clicks counted into item windows, by outcome.", ["outcome"]
)
WRITE_SECONDS = Histogram(
    "streamrec_worker_online_write_seconds",
    "Time to write one batch of streaming features to the online store.",
    ["view"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BATCH_SIZE = Histogram(
    "streamrec_worker_batch_events", "Events per processed batch.", buckets=(1, 10, 100, 500, 1000, 2000, 5000)
)
WRITE_RETRIES = Counter(
    "streamrec_worker_online_write_retries_total", "Online-store writes retried because Redis failed."
)
CHANGELOG_FAILURES = Counter(
    "streamrec_worker_changelog_failures_total",
    "Table changelog messages Kafka did not accept (state would not survive a restart).",
)
SESSIONS_EVICTED = Counter(
    "streamrec_worker_sessions_evicted_total",
    "Session states dropped from the worker's memory after `session_idle_s` without a click.",
)
FRESHNESS_SECONDS = Histogram(
    "streamrec_worker_freshness_seconds",
    "Time from a click's Kafka record timestamp (the producer's CreateTime) to the moment its "
    "session features were written to the online store.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 1, 2.5, 5, 10),  # fine near the 250 ms target
)
IMPRESSIONS = Counter(
    "streamrec_worker_impressions_total",
    "Impression records (the inference log) seen by the reward attribution, by arm (model version), "
    "track (served or shadow) and outcome (counted, or duplicate: a redelivered record).",
    ["arm", "track", "outcome"],
)
INVALID_IMPRESSIONS = Counter(
    "streamrec_worker_impressions_dead_lettered_total", "Impression records that could not be parsed (dead-lettered)."
)
REWARDS = Counter(
    "streamrec_worker_rewards_total",
    "Impressions followed by a click on an item they showed (each counted once), by arm and track.",
    ["arm", "track"],
)
REWARDS_RETRACTED = Counter(
    "streamrec_worker_rewards_retracted_total",
    "Rewards taken back because an impression read after its click was decided was the click's latest "
    "(its reward went to that one instead), by arm and track; rewards_total minus this is the net count.",
    ["arm", "track"],
)
REWARD_RANK = Histogram(
    "streamrec_worker_reward_rank", "Rank (1-based) of the clicked item in its rewarded impression.",
    ["arm", "track"], buckets=(1, 2, 3, 5, 10, 20, 50, 100),
)
CONSUMER_LAG = Gauge(
    "streamrec_worker_consumer_lag",
    "Records in each assigned partition not yet turned into features (highwater - last processed offset - 1).",
    ["topic", "partition"],
)

OFFSETS_REWOUND = Counter(
    "streamrec_worker_offsets_rewound_total",
    "Records Faust handed over and dropped unprocessed (around a recovery or rebalance), fetched again "
    "by rewinding their partition (streaming.progress).",
    ["topic"],
)
OFFSETS_SKIPPED = Counter(
    "streamrec_worker_offsets_skipped_total",
    "Offsets still missing after a rewind, taken as offsets that do not exist (compaction, transaction markers).",
    ["topic"],
)


def observe_freshness(record_timestamps: Iterable[float | None], now: float) -> None:
    """One observation per record whose features were just written (records without a timestamp
    are skipped: an old message format carries none)."""
    observe = FRESHNESS_SECONDS.observe
    for ts in record_timestamps:
        if ts is not None:
            observe(max(0.0, now - ts))


class LagReporter:
    """Keeps `streamrec_worker_consumer_lag` equal to the latest per-partition lags: a partition
    no longer assigned (revoked in a rebalance) loses its label set instead of showing a stale lag."""

    def __init__(self, gauge: Gauge = CONSUMER_LAG) -> None:
        self.gauge = gauge
        self.reported: set[tuple[str, str]] = set()

    def update(self, lags: Mapping[tuple[str, int], int]) -> None:
        current = {(topic, str(partition)): lag for (topic, partition), lag in lags.items()}
        for labels in self.reported - current.keys():
            self.gauge.remove(*labels)
        for labels, lag in current.items():
            self.gauge.labels(*labels).set(lag)
        self.reported = set(current)
