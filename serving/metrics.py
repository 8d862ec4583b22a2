"""Prometheus metrics of the API process."""

from prometheus_client import Counter, Histogram

REQUEST_SECONDS = Histogram(
    "streamrec_recommend_seconds", "Latency of POST /recommend by the stage that served it.", ["stage"],
    buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0),
)
DEGRADED = Counter("streamrec_recommend_degraded_total", "Recommendations served degraded.", ["reason"])
EVENTS = Counter("streamrec_api_events_total", "Click events received by POST /events.", ["outcome"])
