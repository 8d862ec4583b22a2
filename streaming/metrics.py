"""Prometheus metrics of the streaming worker (served on the worker's web port at /metrics)."""

from prometheus_client import Counter, Histogram

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
