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
