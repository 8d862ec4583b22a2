"""The API's near cache of item features: hits within the TTL, misses after, bounded size."""

from __future__ import annotations

from serving.feature_cache import TTLCache


def test_rows_and_absences_are_cached_until_they_expire():
    clock = [100.0]
    cache = TTLCache(ttl_s=1.0, clock=lambda: clock[0])
    cache.store([1, 2], [{"x": 1}, None])
    rows, missing = cache.lookup([1, 2, 3])
    assert rows == [{"x": 1}, None, None] and missing == [2]
    clock[0] += 1.01
    assert cache.lookup([1, 2])[1] == [0, 1]
    assert (cache.hits, cache.misses) == (2, 3)


def test_the_cache_never_grows_past_its_bound():
    cache = TTLCache(ttl_s=60.0, max_keys=10)
    for start in range(0, 100, 4):
        cache.store(list(range(start, start + 4)), [{}] * 4)
        assert len(cache._rows) <= 10


def test_a_zero_ttl_disables_the_cache():
    cache = TTLCache(ttl_s=0)
    cache.store([1], [{"x": 1}])
    assert not cache.enabled and cache.lookup([1])[1] == [0]
