"""The stream archive on the real broker: `streamrec archive` is SIGKILLed three times at random
moments while clicks and impressions (some malformed) stream in, and restarted each time. Afterwards
the archive holds every valid record exactly once (no (partition, offset) twice, none missing), lists
exactly the malformed ones as skipped, and Feast's SDK runs point-in-time joins over it."""

from __future__ import annotations

import os
import random
import re
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from infra import process, stack
from streamrec import archive as layout
from streamrec import feature_schema as s
from streamrec.events import ClickEvent
from streamrec.impressions import Impression, new_request_id
from streamrec.settings import Settings
from streaming.producer import MALFORMED_SAMPLES, make_producer
from tests.conftest import CLI, make_settings, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NAME = "archiver"
CLICKS = 20_000
IMPRESSIONS = 2_000
MALFORMED_EVERY = 97  # one malformed click after every 97th valid one
KILLS = 3
RATE = 1_000  # clicks per second during the kills
STEADY_CLICKS, STEADY_RATE = 3_000, 1_000  # after the kills: the archive's delay, measured


@dataclass
class Sent:
    """What the test produced, by (partition, offset) as the broker acknowledged it."""

    valid: dict[str, set[tuple[int, int]]] = field(default_factory=lambda: {k: set() for k in layout.KINDS})
    malformed: dict[str, set[tuple[int, int]]] = field(default_factory=lambda: {k: set() for k in layout.KINDS})
    futures: list = field(default_factory=list)

    def send(self, producer, topic: str, kind: str, key: bytes, value: bytes, valid: bool) -> None:
        self.futures.append((kind, valid, producer.send(topic, key=key, value=value)))

    def settle(self) -> None:
        for kind, valid, future in self.futures:
            meta = future.get(timeout=30)
            (self.valid if valid else self.malformed)[kind].add((meta.partition, meta.offset))
        self.futures.clear()


def produce(settings: Settings, sent: Sent, n_clicks: int, rate: float, seed: int, impressions: int = 0) -> None:
    """`n_clicks` clicks at `rate`/s (a malformed one after every MALFORMED_EVERY-th, incl. a click from
    the far future), and `impressions` impressions spread among them (every 50th malformed)."""
    rng = random.Random(seed)
    producer = make_producer(settings)
    started = time.monotonic()
    impression_every = max(1, n_clicks // impressions) if impressions else 0
    bad_impressions = (b"", b"{not json", b'{"request_id": "r"}', b"[1, 2]")
    for i in range(n_clicks):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        session = f"s{seed}-{rng.randrange(400)}"
        click = ClickEvent(session_id=session, item_id=rng.randrange(5_000), ts=time.time())
        sent.send(producer, settings.clicks_topic, layout.CLICKS, session.encode(), click.to_bytes(), True)
        if i % MALFORMED_EVERY == MALFORMED_EVERY - 1:
            bad = (MALFORMED_SAMPLES[i % len(MALFORMED_SAMPLES)] if i % 2 else
                   ClickEvent(session_id=session, item_id=1, ts=time.time() + 2 * settings.max_future_skew_s).to_bytes())
            sent.send(producer, settings.clicks_topic, layout.CLICKS, session.encode(), bad, False)
        if impression_every and i % impression_every == 0:
            j = i // impression_every
            if j % 50 == 49:
                value, valid = bad_impressions[j % len(bad_impressions)], False
            else:
                value, valid = Impression(request_id=new_request_id(), session_id=session, ts=time.time(),
                                          model_version="v1", policy="single", propensity=1.0, stage="ranked",
                                          degraded=False, items=(3, 1, 2), scores=(0.3, 0.2, 0.1)).to_bytes(), True
            sent.send(producer, settings.impressions_topic, layout.IMPRESSIONS, session.encode(), value, valid)
    producer.flush(timeout=30)
    producer.close(timeout=10)
    sent.settle()


def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
    try:
        tps = [TopicPartition(t, p) for t in (settings.clicks_topic, settings.impressions_topic)
               for p in consumer.partitions_for_topic(t) or ()]
        return {(tp.topic, tp.partition): end for tp, end in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def caught_up(settings: Settings, ends: dict[tuple[str, int], int]) -> bool:
    kinds = {settings.clicks_topic: layout.CLICKS, settings.impressions_topic: layout.IMPRESSIONS}
    nxt = {kind: layout.next_offsets(layout.list_files(layout.kind_dir(settings.archive_path, kind)))
           for kind in layout.KINDS}
    return all(nxt[kinds[topic]].get(p, 0) >= end for (topic, p), end in ends.items())


def start(settings: Settings) -> int:
    return process.start_detached(NAME, [*CLI, "archive"], settings, env=settings.to_env(), cwd=Path.cwd())


def kill_hard(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: process.exited(pid), 10, f"archiver pid {pid} to die after SIGKILL")


def alive(pid: int, settings: Settings) -> None:
    """Fail at once, with its log, if the archiver died by itself (e.g. refused an overlapping write)."""
    if process.exited(pid):
        raise AssertionError(f"the archiver died:\n{process.log_tail(NAME, settings)}")


def archived_files(settings: Settings) -> int:
    return sum(len(layout.list_files(settings.archive_path / kind)) for kind in layout.KINDS)


def files_found_at_starts(settings: Settings) -> list[int]:
    """Per start of the archiver, the clicks files it found (its log): > 0 means it resumed mid-archive."""
    text = process.log_path(NAME, settings).read_text()
    return [int(m) for m in re.findall(r"clicks archive: (\d+) files", text)]


def kill_during_a_write(pid: int, settings: Settings, within_s: float = 5.0) -> None:
    """SIGKILL as soon as a temp file (a write in progress) is seen in the newest hour folders; at the
    end of `within_s` regardless. The write may finish between the look and the kill."""
    root = settings.archive_path / layout.CLICKS
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        hours = sorted(root.glob("date=*/hour=*"))[-2:]
        if any(name.endswith(layout.TEMP_SUFFIX) for folder in hours for name in os.listdir(folder)):
            break
        time.sleep(0.0005)
    kill_hard(pid)


@dataclass
class Run:
    settings: Settings
    sent: Sent
    temp_files_at_kills: list[int]
    files_at_starts: list[int]
    steady_since: float
    catch_up_s: float


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory):
    settings = make_settings(tmp_path_factory.mktemp("archive"), archive_flush_rows=300, archive_flush_s=0.5)
    try:
        stack.up(settings)
        stack.ensure_topics(settings)
        sent = Sent()
        pid = start(settings)
        producer = threading.Thread(target=produce, args=(settings, sent, CLICKS, RATE, 1, IMPRESSIONS))
        producer.start()
        rng = random.Random(5)
        temps = []
        for k in range(KILLS):  # kill at random moments of the replay; the later ones the moment a write starts
            before = archived_files(settings)
            grown = before + rng.randint(2, 8)  # let this run archive a few files first: its restart must resume
            wait_for(lambda: alive(pid, settings) or archived_files(settings) >= grown, 60, f"{grown} archive files",
                     0.05)
            time.sleep(rng.uniform(0.0, 0.5))
            if k == 0:
                kill_hard(pid)
            else:
                kill_during_a_write(pid, settings)
            root = settings.archive_path
            temps.append(len(layout.temp_files(root / layout.CLICKS)) + len(layout.temp_files(root / layout.IMPRESSIONS)))
            pid = start(settings)
        producer.join(timeout=120)
        assert not producer.is_alive(), "the producer did not finish"
        t0 = time.monotonic()
        ends = end_offsets(settings)
        wait_for(lambda: alive(pid, settings) or caught_up(settings, ends), 120,
                 "the archive to catch up after the kills", 0.2)
        catch_up_s = time.monotonic() - t0
        steady_since = time.time()
        produce(settings, sent, STEADY_CLICKS, STEADY_RATE, 2)
        ends = end_offsets(settings)
        wait_for(lambda: alive(pid, settings) or caught_up(settings, ends), 60,
                 "the archive to catch up with the steady phase", 0.2)
        assert process.stop(NAME, settings, timeout_s=20)
        yield Run(settings, sent, temps, files_found_at_starts(settings), steady_since, catch_up_s)
    finally:
        process.stop(NAME, settings, timeout_s=10)
        stack.down(settings)


def _archive_by_kind(settings: Settings, kind: str) -> tuple[pd.DataFrame, list[layout.ArchivedFile], set]:
    files = layout.list_files(layout.kind_dir(settings.archive_path, kind))
    skipped = {(f.partition, o) for f in files for o in layout.skipped_offsets(f.path)}
    return layout.read_archive(settings, kind), files, skipped


@pytest.mark.parametrize("kind", layout.KINDS)
def test_archive_holds_every_valid_record_once_after_sigkills(archived: Run, kind: str) -> None:
    frame, files, skipped = _archive_by_kind(archived.settings, kind)
    keys = list(zip(frame[layout.KAFKA_PARTITION].tolist(), frame[layout.KAFKA_OFFSET].tolist()))
    valid, malformed = archived.sent.valid[kind], archived.sent.malformed[kind]
    duplicates = len(keys) - len(set(keys))
    missing = len(valid - set(keys))
    print(f"FIGURES archive {kind}: produced {len(valid)} valid + {len(malformed)} malformed; archived rows "
          f"{len(keys)}, duplicates {duplicates}, missing {missing}, skipped {len(skipped)}; files {len(files)}; "
          f"{KILLS} SIGKILLs, temp files left by them {archived.temp_files_at_kills}, clicks files found by each "
          f"start {archived.files_at_starts}; "
          f"catch-up after the last restart {archived.catch_up_s:.1f}s")
    assert len(archived.files_at_starts) == KILLS + 1 and all(archived.files_at_starts[1:])  # restarts resumed
    assert duplicates == 0
    assert set(keys) == valid  # none missing, nothing else
    assert len(frame) == len(valid)
    assert skipped == malformed
    # every offset of every partition is accounted for exactly once: ranges tile 0..end
    for partition in {f.partition for f in files}:
        ranges = [(f.first, f.last) for f in files if f.partition == partition]
        assert ranges[0][0] == 0 and all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:])), partition


def test_archived_clicks_match_what_was_sent(archived: Run) -> None:
    frame = layout.read_archive(archived.settings, layout.CLICKS)
    assert frame[s.ITEM_KEY].between(0, 4_999).all()
    assert (frame[s.EVENT_TIMESTAMP].astype("int64") // 1000 == (frame["ts"] * 1e6).round().astype("int64") // 1000).all()
    data = layout.read_archived_clicks(archived.settings)
    assert len(data) == len(frame) and data.n_sessions == frame[s.SESSION_KEY].nunique()


def test_archive_delay_behind_the_topic(archived: Run) -> None:
    """Steady phase: a record is in the offline store within seconds (flush every 0.5 s here)."""
    delays = []
    for f in layout.list_files(layout.kind_dir(archived.settings.archive_path, layout.CLICKS)):
        stamps = pq.read_table(f.path, columns=[layout.KAFKA_TIMESTAMP]).column(0).to_pylist()
        written = f.path.stat().st_mtime
        delays += [written - t.timestamp() for t in stamps if t.timestamp() >= archived.steady_since]
    assert len(delays) >= STEADY_CLICKS
    q = np.percentile(delays, [50, 95, 100])
    print(f"FIGURES archive delay (Kafka timestamp -> file in place), {len(delays)} clicks at {STEADY_RATE}/s, "
          f"flush {archived.settings.archive_flush_s}s: p50 {q[0]:.2f}s p95 {q[1]:.2f}s max {q[2]:.2f}s "
          f"mean {statistics.fmean(delays):.2f}s")
    assert q[2] < 5.0


def test_feast_point_in_time_join_over_archived_clicks(archived: Run) -> None:
    """`get_historical_features(archived_clicks:clicked_item, :event_type)` for (session, time) rows
    returns each session's latest archived click at or before that time (none before its first)."""
    from feast import FeatureStore

    from training.feast_ops import feast_command
    from training.historical_features import feast_environment

    settings = archived.settings
    clicks = layout.read_archive(settings, layout.CLICKS)
    clicks = clicks[~clicks.duplicated([s.SESSION_KEY, s.EVENT_TIMESTAMP], keep=False)]  # ties: no single answer
    rng = np.random.default_rng(3)
    at = clicks.iloc[rng.choice(len(clicks), 300, replace=False)][[s.SESSION_KEY, s.EVENT_TIMESTAMP]]
    just_before = at.assign(**{s.EVENT_TIMESTAMP: at[s.EVENT_TIMESTAMP] - pd.Timedelta(microseconds=1)})
    entity_df = pd.concat([at, just_before], ignore_index=True)
    entity_df[s.EVENT_TIMESTAMP] = entity_df[s.EVENT_TIMESTAMP].astype("datetime64[us, UTC]")
    entity_df["row"] = np.arange(len(entity_df))

    feast_command(settings, ["apply"], check=True, to_stderr=True)
    with feast_environment(settings):
        store = FeatureStore(repo_path=str(settings.feature_repo))
        got = store.get_historical_features(
            entity_df=entity_df,
            features=[f"{s.ARCHIVED_CLICKS_VIEW}:{f}" for f in s.ARCHIVED_CLICKS_FEATURES],
        ).to_df().sort_values("row").reset_index(drop=True)

    expected = pd.merge_asof(entity_df.sort_values(s.EVENT_TIMESTAMP),
                             clicks[[s.SESSION_KEY, s.EVENT_TIMESTAMP, s.ITEM_KEY, s.EVENT_TYPE]]
                             .astype({s.EVENT_TIMESTAMP: "datetime64[us, UTC]"}).sort_values(s.EVENT_TIMESTAMP),
                             on=s.EVENT_TIMESTAMP, by=s.SESSION_KEY, direction="backward",
                             allow_exact_matches=True).sort_values("row").reset_index(drop=True)
    assert len(got) == len(entity_df)
    want_items = expected[s.ITEM_KEY].astype("Int64").tolist()
    got_items = got[s.CLICKED_ITEM].astype("Int64").tolist()
    mismatches = sum(1 for a, b in zip(got_items, want_items) if not (a is pd.NA and b is pd.NA) and a != b)
    found = sum(1 for v in got_items if v is not pd.NA)
    print(f"FIGURES feast PIT over the archive: {len(entity_df)} entity rows, {found} found, "
          f"{mismatches} differ from pandas merge_asof")
    assert mismatches == 0
    assert got_items[:300] == clicks.set_index([s.SESSION_KEY, s.EVENT_TIMESTAMP]).loc[
        list(zip(at[s.SESSION_KEY], at[s.EVENT_TIMESTAMP])), s.ITEM_KEY].astype("Int64").tolist()
    assert (got[s.EVENT_TYPE].iloc[:300] == "click").all()
