"""Session and item state updates: correct counts, and redelivered clicks change nothing."""

from streaming import item_windows, session_state


def test_session_state_keeps_distinct_recent_items_oldest_first():
    state = None
    for offset, item in enumerate([1, 2, 1, 3]):
        state, changed = session_state.apply_click(state, item, 1000 + offset, 0, offset, max_recent=20)
        assert changed
    assert state["recent"] == [2, 1, 3]
    assert state["count"] == 4
    assert state["last_ts"] == 1003


def test_session_state_caps_recent_items():
    state = None
    for offset in range(30):
        state, _ = session_state.apply_click(state, offset, offset, 0, offset, max_recent=5)
    assert state["recent"] == [25, 26, 27, 28, 29]


def test_redelivered_click_is_a_no_op():
    state, _ = session_state.apply_click(None, 7, 1, partition=2, offset=10, max_recent=20)
    again, changed = session_state.apply_click(state, 7, 1, partition=2, offset=10, max_recent=20)
    older, changed_older = session_state.apply_click(state, 8, 1, partition=2, offset=9, max_recent=20)
    assert not changed and not changed_older
    assert again == state == older
    other_partition, changed_other = session_state.apply_click(state, 8, 1, partition=3, offset=1, max_recent=20)
    assert changed_other and other_partition["count"] == 2


def test_item_windows_count_by_event_time():
    minute = item_windows.BUCKET_MS
    now = 100 * minute
    state = None
    for offset, ts in enumerate([now - 1, now - 3 * minute, now - 30 * minute, now - 2 * 60 * minute]):
        state, changed = item_windows.apply_click(state, ts, 0, offset, now)
        assert changed
    assert item_windows.window_counts(state, now) == (2, 3)


def test_item_windows_dedupe_by_source_offset():
    state, _ = item_windows.apply_click(None, 1000, 1, 5, 1000)
    again, changed = item_windows.apply_click(state, 1000, 1, 5, 1000)
    assert not changed
    assert item_windows.window_counts(again, 1000) == (1, 1)


def test_a_batch_of_item_clicks_equals_applying_them_one_by_one():
    import random

    from streaming import item_windows

    rng = random.Random(3)
    for _ in range(200):
        now = 10 * item_windows.HOUR_MS
        state = None if rng.random() < 0.3 else {
            "buckets": {str(b * item_windows.BUCKET_MS): rng.randint(1, 5) for b in rng.sample(range(500, 600), 5)},
            "applied": {str(p): rng.randint(0, 20) for p in range(2)}}
        clicks = [(now - rng.randint(0, 2 * item_windows.HOUR_MS), rng.randint(0, 2), offset)
                  for offset in sorted(rng.sample(range(40), rng.randint(0, 8)))]
        clicks += clicks[: rng.randint(0, 2)]  # redeliveries inside the batch
        one_by_one, counted = state, 0
        for ts, partition, offset in clicks:
            one_by_one, changed = item_windows.apply_click(one_by_one, ts, partition, offset, now)
            counted += changed
        batched, batch_counted = item_windows.apply_clicks(state, clicks, now)
        assert batch_counted == counted
        assert batched == (one_by_one if one_by_one is not None else item_windows.empty_item())
