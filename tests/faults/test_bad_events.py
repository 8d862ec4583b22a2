"""Bad input on the real broker and Redis: a seeded, fuzzed mix of good and bad messages goes straight
to the clicks topic while the worker runs. Every bad message ends up in the dead-letter topic with its
reason and original bytes, a re-sent event changes nothing, items unknown to the model are ordinary
clicks, the worker's counters match, the worker is still up, and every good click is in the store."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from streamrec import feature_schema as s
from streaming import item_windows, session_state
from streaming.producer import make_producer
from streamrec.events import MAX_ITEM_ID, ClickEvent
from infra import process
from streamrec.online_store import OnlineStore
from streamrec.settings import Settings
from tests.faults.conftest import own_worker_settings, worker_metrics
from tests.conftest import CLI, wait_for
from tests.faults.test_worker_restart import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(400)]

WORKER = "worker-bad-events"
MESSAGES = 3000
SESSIONS = 120
SETTLE_TIMEOUT_S = 120.0

# kind -> (share of the mix, what the worker must do: "apply" | "resend" | reason substring in the DLQ)
MIX: dict[str, tuple[float, str]] = {
    "good": (0.50, "apply"),
    "unknown_item": (0.05, "apply"),  # not in the model's catalogue: still a valid click
    "old_ts": (0.03, "apply"),  # hours ago: a session click, in no trending window
    "resend": (0.08, "resend"),  # the same bytes of an earlier good event of that session, again
    "invalid_json": (0.05, "Invalid JSON"),
    "invalid_utf8": (0.02, "Invalid JSON"),
    "not_an_object": (0.03, "Input should be an object"),
    "item_wrong_type": (0.04, "item_id:"),
    "ts_wrong_type": (0.02, "ts:"),
    "session_wrong_type": (0.02, "session_id:"),
    "bad_session_id": (0.02, "session_id:"),
    "missing_field": (0.02, "Field required"),
    "unknown_field": (0.02, "Extra inputs are not permitted"),
    "oversized": (0.03, "exceeds the limit"),
    "negative_ts": (0.02, "greater than 0"),
    "non_finite_ts": (0.02, "finite number"),
    "far_future_ts": (0.02, "in the future"),
    "huge_item_id": (0.02, "item_id:"),
    "negative_item_id": (0.02, "item_id:"),
    "empty": (0.01, "Invalid JSON"),
}
# Sent once each, on top of the mix: near Kafka's 1 MB message limit, and a tombstone (null value).
GIANT_BYTES = 700_000


@dataclass
class Message:
    kind: str
    key: bytes | None
    value: bytes | None
    session: str | None = None  # for accepted kinds
    item: int | None = None
    ts: float | None = None
    partition: int = -1  # filled in from the producer's acks
    offset: int = -1


@pytest.fixture()
def bad_settings(live_settings: Settings) -> Iterator[Settings]:
    with own_worker_settings(live_settings, "bad", WORKER) as settings:
        yield settings


def fuzzed_mix(tag: str, settings: Settings, seed: int = 5) -> list[Message]:
    rng = random.Random(seed)
    base = 8_000_000_000 + rng.randrange(1_000_000) * 1000  # item ids no other test writes
    items = [base + i for i in range(100)]
    sessions = [f"be-{tag}-{n:03d}" for n in range(SESSIONS)]
    history: dict[str, list[bytes]] = {}
    kinds, weights = list(MIX), [share for share, _ in MIX.values()]
    now = time.time()
    out: list[Message] = []

    def event(session: str, item: int, ts: float, kind: str) -> Message:
        value = ClickEvent(session_id=session, item_id=item, ts=ts).to_bytes()
        history.setdefault(session, []).append(value)
        return Message(kind, session.encode(), value, session, item, ts)

    def junk(value: bytes) -> Message:
        return Message(kind, rng.choice([None, rng.choice(sessions).encode()]), value)

    for n in range(MESSAGES):
        kind = rng.choices(kinds, weights)[0]
        session = rng.choice(sessions)
        ts = now + n * 1e-3  # distinct per event; all inside the 5-minute window
        body = {"session_id": session, "item_id": rng.choice(items), "ts": ts}
        if kind == "resend" and not history.get(session):
            kind = "good"
        if kind == "good":
            out.append(event(session, rng.choice(items), ts, kind))
        elif kind == "unknown_item":
            out.append(event(session, rng.choice([MAX_ITEM_ID, 10**15 + n]), ts, kind))
        elif kind == "old_ts":
            out.append(event(session, rng.choice(items), rng.choice([1.0, now - 86_400 * 30]), kind))
        elif kind == "resend":
            value = rng.choice(history[session][-5:])
            data = json.loads(value)
            out.append(Message(kind, session.encode(), value, session, data["item_id"], data["ts"]))
        elif kind == "invalid_json":
            out.append(junk(rng.choice([b"{not json", b'{"session_id": "x", "item_id": 1', b"NaN nope",
                                        json.dumps(body).encode() + b" trailing"])))
        elif kind == "invalid_utf8":
            out.append(junk(bytes(rng.randrange(128, 256) for _ in range(rng.randrange(1, 200)))))
        elif kind == "not_an_object":
            out.append(junk(rng.choice([b"[1, 2]", b"null", b'"click"', b"42", b"true", json.dumps([body]).encode()])))
        elif kind == "item_wrong_type":
            out.append(junk(json.dumps({**body, "item_id": rng.choice(["7", 1.5, True, None, [1], {"id": 1}])}).encode()))
        elif kind == "ts_wrong_type":
            out.append(junk(json.dumps({**body, "ts": rng.choice(["now", None, True, [ts]])}).encode()))
        elif kind == "session_wrong_type":
            out.append(junk(json.dumps({**body, "session_id": rng.choice([5, None, ["a"], {"id": "a"}])}).encode()))
        elif kind == "bad_session_id":
            out.append(junk(json.dumps({**body, "session_id": rng.choice(["", "x" * 129, "a b", "é", "a\u0000"])}).encode()))
        elif kind == "missing_field":
            missing = rng.choice(list(body))
            out.append(junk(json.dumps({k: v for k, v in body.items() if k != missing}).encode()))
        elif kind == "unknown_field":
            out.append(junk(json.dumps({**body, rng.choice(["colour", "price", "ITEM_ID"]): 1}).encode()))
        elif kind == "oversized":
            out.append(junk(json.dumps({**body, "user_id": "u" * rng.randrange(settings.max_event_bytes,
                                                                                 4 * settings.max_event_bytes)}).encode()))
        elif kind == "negative_ts":
            out.append(junk(json.dumps({**body, "ts": rng.choice([-1.0, 0, -now, -1e308])}).encode()))
        elif kind == "non_finite_ts":  # JSON has no such numbers, but lenient parsers accept them
            out.append(junk(json.dumps({**body, "ts": "@"}).encode().replace(
                b'"@"', rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400"]))))
        elif kind == "far_future_ts":
            out.append(junk(json.dumps({**body, "ts": rng.choice([now + settings.max_future_skew_s + 3600,
                                                                  1e300, now * 1000])}).encode()))
        elif kind == "huge_item_id":
            out.append(junk(json.dumps({**body, "item_id": rng.choice([MAX_ITEM_ID + 1, 2**63, 10**40])}).encode()))
        elif kind == "negative_item_id":
            out.append(junk(json.dumps({**body, "item_id": rng.choice([-1, -(2**63)])}).encode()))
        elif kind == "empty":
            out.append(junk(b""))
    at = len(out) // 2
    out[at:at] = [Message("giant", None, bytes(rng.randrange(256) for _ in range(GIANT_BYTES))),
                  Message("tombstone", b"tombstone", None)]
    return out


EXPECT = {kind: outcome for kind, (_, outcome) in MIX.items()} | {
    "giant": "exceeds the limit", "tombstone": "empty message"}


def expected_state(messages: list[Message], max_recent: int):
    """Session states and per-item 1-hour counts the worker must end with (by the worker's own rules)."""
    sessions: dict[str, session_state.SessionState] = {}
    item_clicks: Counter = Counter()
    newest_ms = max(int(m.ts * 1000) for m in messages if EXPECT[m.kind] == "apply")
    for n, m in enumerate(messages):
        if EXPECT[m.kind] not in ("apply", "resend"):
            continue
        identity = session_state.event_identity(m.item, m.ts, "click")
        if session_state.resent_copy(sessions.get(m.session), identity, 0, n):
            assert m.kind == "resend"
            continue
        assert m.kind != "resend", "the mix re-sent an event older than the dedupe window"
        ts_ms = int(m.ts * 1000)
        sessions[m.session], changed = session_state.apply_click(sessions.get(m.session), m.item, ts_ms, 0, n,
                                                                 max_recent, identity)
        assert changed
        if ts_ms + item_windows.HOUR_MS > newest_ms:
            item_clicks[m.item] += 1
    return sessions, item_clicks


def send_all(settings: Settings, messages: list[Message]) -> float:
    producer = make_producer(settings)
    started = time.monotonic()
    futures = [producer.send(settings.clicks_topic, key=m.key, value=m.value) for m in messages]
    producer.flush(timeout=60)
    for m, future in zip(messages, futures):
        meta = future.get(timeout=10)
        m.partition, m.offset = meta.partition, meta.offset
    producer.close(timeout=10)
    return time.monotonic() - started


def read_store(settings: Settings, sessions: list[str], items: list[int]) -> tuple[dict, dict]:
    async def read() -> tuple[list, list]:
        store = OnlineStore.from_url(settings.redis_url, timeout_s=10.0)
        try:
            return (await store.read(s.SESSION_FEATURES_VIEW, sessions), await store.read(s.ITEM_TRENDING_VIEW, items))
        finally:
            await store.close()

    session_rows, item_rows = asyncio.run(read())
    return dict(zip(sessions, session_rows)), dict(zip(items, item_rows))



def web_up(settings: Settings) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def original_bytes(letter: dict) -> bytes:
    return letter["value"].encode() if "value" in letter else base64.b64decode(letter["value_b64"])


def test_fuzzed_bad_events_are_dead_lettered_resends_change_nothing_and_the_worker_goes_on(bad_settings):
    settings = bad_settings
    tag = uuid.uuid4().hex[:6]
    messages = fuzzed_mix(tag, settings)
    sessions, item_clicks = expected_state(messages, settings.recent_items)
    kinds = Counter(m.kind for m in messages)
    want_applied = sum(n for kind, n in kinds.items() if EXPECT[kind] == "apply")
    want_resent = kinds["resend"]
    want_dead = len(messages) - want_applied - want_resent

    pid = process.start_detached(WORKER, [*CLI, "stream"], settings, env=settings.to_env())
    try:
        wait_for(lambda: web_up(settings), 120, "the worker's web server")
    except AssertionError:
        raise AssertionError(process.log_tail(WORKER, settings))
    send_s = send_all(settings, messages)

    def settled() -> dict | None:
        m = worker_metrics(settings)
        seen = sum(m.get(f"events.{o}", 0) for o in ("applied", "duplicate", "dead_lettered"))
        return m if seen >= len(messages) else None

    started = time.monotonic()
    try:
        metrics = wait_for(settled, SETTLE_TIMEOUT_S, "the worker to account for every message", 0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {worker_metrics(settings)}\n{process.log_tail(WORKER, settings)}")
    settle_s = time.monotonic() - started
    time.sleep(2)  # the item side trails the session side by about one batch
    item_ids = sorted(item_clicks | Counter({m.item: 0 for m in messages if m.item is not None}))
    session_rows, item_rows = read_store(settings, sorted(sessions), item_ids)
    letters = [json.loads(r.value) for r in read_topic(settings, settings.dead_letter_topic)]
    metrics = worker_metrics(settings)
    bad = [m for m in messages if EXPECT[m.kind] not in ("apply", "resend")]
    print(f"\n{len(messages)} messages sent in {send_s:.1f}s: {want_applied} valid, {want_resent} re-sent, "
          f"{want_dead} bad ({dict(sorted((k, n) for k, n in kinds.items() if k in EXPECT and EXPECT[k] not in ('apply', 'resend')))}); "
          f"accounted for {settle_s:.1f}s after the last send; dead-letter topic holds {len(letters)}; "
          f"worker counters {metrics}")

    running = process.is_running(WORKER, settings) == pid
    wrong = [(sid, want["count"], want["recent"], row and row.get(s.CLICK_COUNT), row and row.get(s.RECENT_ITEMS))
             for sid, want in sessions.items() for row in [session_rows.get(sid)]
             if row is None or row.get(s.CLICK_COUNT) != want["count"] or row.get(s.RECENT_ITEMS) != want["recent"]]
    wrong_items = [(item, n, row and row.get(s.CLICKS_1H)) for item, n in item_clicks.items()
                   for row in [item_rows.get(item)] if row is None or row.get(s.CLICKS_1H) != n]
    print(f"FIGURES case=5 bad-events injected='{want_dead} bad of {len(messages)} seeded messages "
          f"({len(kinds)} kinds), {want_resent} re-sent copies' dead_lettered={len(letters)} (expected {want_dead}) "
          f"applied={metrics.get('events.applied', 0):.0f} (expected {want_applied}) "
          f"duplicates={metrics.get('events.duplicate', 0):.0f} (expected {want_resent}) "
          f"sessions_wrong={len(wrong)} of {len(sessions)} items_wrong={len(wrong_items)} of {len(item_clicks)} "
          f"worker_running={running} settle_s={settle_s:.1f}")

    # The worker is still up and still answering.
    assert process.is_running(WORKER, settings) == pid, process.log_tail(WORKER, settings)
    assert metrics, "the worker's /metrics stopped answering"

    # Every bad message is dead-lettered once, with its reason and its original bytes.
    by_origin = {(d["partition"], d["offset"]): d for d in letters}
    assert len(by_origin) == len(letters) == len(bad), (len(letters), len(bad))
    assert all(d["topic"] == settings.clicks_topic for d in letters)
    for m in bad:
        letter = by_origin.get((m.partition, m.offset))
        assert letter is not None, f"{m.kind} message at {m.partition}:{m.offset} not dead-lettered: {m.value[:80]!r}"
        assert EXPECT[m.kind] in letter["reason"], (m.kind, letter["reason"], (m.value or b"")[:80])
        sent = m.value or b""
        if letter.get("truncated"):
            assert letter["original_bytes"] == len(sent) and sent.startswith(original_bytes(letter))
            assert letter["original_sha256"] == hashlib.sha256(sent).hexdigest()
        else:
            assert original_bytes(letter) == sent, m.kind
    assert by_origin[next((m.partition, m.offset) for m in messages if m.kind == "giant")].get("truncated")

    # The counters match what was sent: nothing applied twice, nothing bad applied.
    assert metrics.get("events.applied") == want_applied, metrics
    assert metrics.get("events.dead_lettered") == want_dead, metrics
    assert metrics.get("events.duplicate") == want_resent, metrics  # no crash here, so no redeliveries

    # The store holds exactly the good clicks: counts not inflated by re-sends, recent lists not repeated.
    assert not wrong, f"{len(wrong)} of {len(sessions)} sessions differ (session, count, recent, stored): {wrong[:3]}"
    assert sum(st["count"] for st in sessions.values()) == want_applied
    assert not wrong_items, f"{len(wrong_items)} items differ (item, clicks_1h, stored): {wrong_items[:5]}"
    print(f"store: {len(sessions)} sessions with {want_applied} clicks, {len(item_clicks)} items with "
          f"{sum(item_clicks.values())} clicks in the last hour, all as expected")
