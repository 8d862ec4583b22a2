"""Batch processing in the worker: features written, bad events dead-lettered, replays idempotent."""

import json
import time

import pytest

from streamrec import feature_schema as s
from streaming.processor import ItemBatchProcessor, ItemClick, RawRecord, SessionBatchProcessor
from streamrec.settings import Settings


class FakeStore:
    """In-process stand-in for the online store: remembers the last row written per key."""

    def __init__(self):
        self.rows: dict[tuple[str, object], dict] = {}
        self.fail_next = 0

    async def write(self, view, rows, expire_s=None):
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("redis down")
        for row in rows:
            self.rows[(view, row.key)] = row.values
        return len(rows)


def click(session, item, offset, partition=0, ts=None):
    body = {"session_id": session, "item_id": item, "ts": ts or time.time()}
    return RawRecord(json.dumps(body).encode(), partition, offset, "clicks")


@pytest.fixture
def parts():
    store, sessions, dead, forwarded = FakeStore(), {}, [], []

    async def dead_letter(message):
        dead.append(json.loads(message))

    async def forward(item_clicks):
        forwarded.extend(item_clicks)

    processor = SessionBatchProcessor(Settings(), store, sessions, dead_letter, forward)
    return processor, store, sessions, dead, forwarded


async def test_clicks_become_session_features(parts):
    processor, store, sessions, dead, forwarded = parts
    applied = await processor.process([click("a", 1, 0), click("a", 2, 1), click("b", 3, 2)])
    assert applied == 3
    assert store.rows[(s.SESSION_FEATURES_VIEW, "a")][s.RECENT_ITEMS] == [1, 2]
    assert store.rows[(s.SESSION_FEATURES_VIEW, "a")][s.CLICK_COUNT] == 2
    assert store.rows[(s.SESSION_FEATURES_VIEW, "b")][s.CLICK_COUNT] == 1
    assert sessions[b"a"]["count"] == 2
    assert [c.item_id for c in forwarded] == [1, 2, 3]
    assert dead == []


@pytest.mark.parametrize("raw", [b"{oops", b'{"session_id":"a","ts":1}', b'{"session_id":"a","item_id":"x","ts":1}',
                                 b'{"session_id":"a","item_id":1,"ts":1,"extra":1}', b"\xff\xfe", None,
                                 b'{"session_id":"a","item_id":1,"ts":' + str(time.time() + 10**6).encode() + b"}"])
async def test_bad_events_are_dead_lettered_and_the_batch_goes_on(parts, raw):
    processor, store, _, dead, _ = parts
    applied = await processor.process([RawRecord(raw, 0, 0, "clicks"), click("a", 5, 1)])
    assert applied == 1
    assert len(dead) == 1 and dead[0]["offset"] == 0 and dead[0]["reason"]
    assert ("value" in dead[0]) or ("value_b64" in dead[0])
    assert store.rows[(s.SESSION_FEATURES_VIEW, "a")][s.CLICK_COUNT] == 1


async def test_replayed_batch_changes_nothing_but_is_rewritten(parts):
    processor, store, _, _, forwarded = parts
    batch = [click("a", 1, 0, ts=100.0), click("a", 2, 1, ts=101.0)]
    await processor.process(batch)
    first = dict(store.rows[(s.SESSION_FEATURES_VIEW, "a")])
    store.rows.clear()
    assert await processor.process(batch) == 0
    assert store.rows[(s.SESSION_FEATURES_VIEW, "a")] == first  # rewritten, same values
    assert len(forwarded) == 4  # forwarded again: the item side dedupes


async def test_redis_outage_stalls_then_writes(parts, monkeypatch):
    processor, store, _, _, _ = parts
    monkeypatch.setattr("streaming.processor.asyncio.sleep", _no_sleep)
    store.fail_next = 3
    assert await processor.process([click("a", 1, 0)]) == 1
    assert store.rows[(s.SESSION_FEATURES_VIEW, "a")][s.CLICK_COUNT] == 1


async def _no_sleep(_seconds):
    return None


async def test_item_processor_counts_each_click_once():
    store, items = FakeStore(), {}
    processor = ItemBatchProcessor(store, items)
    now = 10_000_000
    clicks = [ItemClick(9, now, 0, 1), ItemClick(9, now, 0, 2), ItemClick(4, now, 1, 1)]
    assert await processor.process(clicks) == 3
    assert await processor.process(clicks) == 0
    assert store.rows[(s.ITEM_TRENDING_VIEW, 9)][s.CLICKS_5M] == 2
    assert store.rows[(s.ITEM_TRENDING_VIEW, 4)][s.CLICKS_1H] == 1


async def test_valid_clicks_go_to_the_reward_attribution_with_the_records_time():
    attributed = []

    async def on_clicks(clicks):
        attributed.extend(clicks)

    async def ignore(_):
        return None

    processor = SessionBatchProcessor(Settings(), FakeStore(), {}, ignore, ignore, on_clicks)
    stamped = RawRecord(click("a", 1, 0, ts=100.0).value, 0, 0, "clicks", timestamp=105.5)
    await processor.process([stamped, click("b", 2, 1, ts=200.0), RawRecord(b"{oops", 0, 2, "clicks")])
    assert [(c.session_id, c.item_id, c.ts, c.partition, c.offset) for c in attributed] == [
        ("a", 1, 105.5, 0, 0), ("b", 2, 200.0, 0, 1)]
