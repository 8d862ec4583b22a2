"""The worker's freshness and lag metrics: what each observation and each gauge value means."""

from prometheus_client import CollectorRegistry, Gauge, Histogram

from streaming import metrics


def test_processed_offsets_give_highwater_minus_next_offset_to_process():
    processed = metrics.ProcessedOffsets()
    processed.done([("clicks", 0, 9), ("clicks", 1, 0)])
    processed.done([("clicks", 0, 4)])  # a redelivered older record does not move the mark back
    highwaters = {("clicks", 0): 15, ("clicks", 1): 1, ("clicks", 2): 7}
    lags = processed.lags(highwaters, lambda topic, partition: highwaters[(topic, partition)])
    # partition 2 has nothing processed yet: left out, not reported as 7 or 0
    assert lags == {("clicks", 0): 5, ("clicks", 1): 0}


def test_processed_offsets_skip_a_partition_without_a_highwater():
    processed = metrics.ProcessedOffsets()
    processed.done([("clicks", 0, 3)])
    assert processed.lags([("clicks", 0)], lambda topic, partition: None) == {}


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
