"""The worker's freshness and lag metrics: what each observation and each gauge value means."""

from prometheus_client import CollectorRegistry, Gauge, Histogram

from streaming import metrics


def test_lag_reporter_drops_the_labels_of_a_revoked_partition():
    registry = CollectorRegistry()
    gauge = Gauge("lag", "lag", ["topic", "partition"], registry=registry)
    reporter = metrics.LagReporter(gauge)
    reporter.update({("clicks", 0): 3, ("clicks", 1): 4})
    reporter.update({("clicks", 1): 2})
    assert registry.get_sample_value("lag", {"topic": "clicks", "partition": "0"}) is None
    assert registry.get_sample_value("lag", {"topic": "clicks", "partition": "1"}) == 2


def test_freshness_observes_now_minus_each_record_timestamp(monkeypatch):
    registry = CollectorRegistry()
    histogram = Histogram("fresh", "fresh", buckets=(0.01, 0.1, 1.0), registry=registry)
    monkeypatch.setattr(metrics, "FRESHNESS_SECONDS", histogram)
    metrics.observe_freshness([99.995, 99.95, None, 100.5], now=100.0)  # a clock-skewed stamp counts as 0
    assert registry.get_sample_value("fresh_count") == 3
    assert registry.get_sample_value("fresh_bucket", {"le": "0.01"}) == 2  # 5 ms and the skewed one
    assert registry.get_sample_value("fresh_bucket", {"le": "0.1"}) == 3
    assert abs(registry.get_sample_value("fresh_sum") - 0.055) < 1e-9
