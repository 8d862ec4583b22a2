"""The clickstream producer: replay a dataset's sessions (or synthetic ones) into Kafka.

Events are merged across sessions in event-time order and re-timed to the present, either at
a fixed rate or at the dataset's own pace times a speed-up, so that streaming features are
fresh (inside their TTL) and the stream looks like live traffic. Messages are keyed by session
id: all clicks of a session land on one partition, in order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamrec.events import ClickEvent
from streamrec.settings import Settings

MALFORMED_SAMPLES: tuple[bytes, ...] = (
    b"{not json",
    b'{"session_id": "x", "ts": 1}',  # missing item_id
    b'{"session_id": "x", "item_id": "seven", "ts": 1}',  # wrong type
    b'{"session_id": 5, "item_id": 1, "ts": 1}',  # wrong type
    b'{"session_id": "x", "item_id": 1, "ts": 1, "colour": "red"}',  # unknown field
)


@dataclass(frozen=True)
class ReplayOptions:
    dataset: Path | None = None
    events: int = 10_000
    rate: float | None = None  # events per second; None and no speedup: as fast as possible
    speedup: float | None = None  # dataset pace × speedup
    session_prefix: str = ""
    bad_fraction: float = 0.0
    seed: int = 7
    progress: bool = True


@dataclass
class ReplayResult:
    sent: int = 0
    malformed: int = 0
    seconds: float = 0.0


SentCallback = Callable[[ClickEvent | None, float], None]


def replay_events(options: ReplayOptions) -> Iterator[ClickEvent]:
    """The dataset's most recent `events` clicks in event-time order, session ids prefixed.

    Where a dataset has a test split it is replayed after the training clicks (it is later in
    time), so a replay shows sessions the model has not seen.
    """
    import numpy as np

    from streamrec.datasets import load_dataset

    parts = [load_dataset(options.dataset, split="train")]
    if options.dataset is not None:
        try:
            parts.append(load_dataset(options.dataset, split="test"))
        except (FileNotFoundError, ValueError, KeyError):
            pass
    sessions = np.concatenate([p.session_ids.astype(str) for p in parts])
    items = np.concatenate([p.item_ids for p in parts])
    stamps = np.concatenate([p.timestamps for p in parts])
    order = np.argsort(stamps, kind="stable")[-options.events:]
    for row in order:
        yield ClickEvent(session_id=f"{options.session_prefix}{sessions[row]}", item_id=int(items[row]),
                         ts=float(stamps[row]))


def make_producer(settings: Settings) -> KafkaProducer:
    """A producer that waits up to `start_timeout_s` for the broker to answer, so a replay started
    beside a broker that is still starting (or restarting) waits for it instead of failing.

    kafka-python 2.x fails its bootstrap at once (NoBrokersAvailable), 3.x after its own
    `bootstrap_timeout_ms`; both are retried until the deadline, then it is a clear error."""
    deadline = time.monotonic() + settings.start_timeout_s
    while True:
        try:
            return KafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                acks="all",
                linger_ms=2,
                retries=10,
                max_in_flight_requests_per_connection=1,  # keeps per-session order across retries
                request_timeout_ms=10_000,
                max_block_ms=10_000,
            )
        except KafkaError as exc:  # 2.x: NoBrokersAvailable; 3.x: KafkaTimeoutError
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no Kafka broker answered at {settings.kafka_bootstrap} within "
                                   f"{settings.start_timeout_s:.0f}s (STREAMREC_START_TIMEOUT_S): {exc!r}") from exc
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def replay(settings: Settings, options: ReplayOptions, on_sent: SentCallback | None = None) -> ReplayResult:
    """Send `options.events` events (plus malformed ones if asked); block until all are acked."""
    events = list(replay_events(options))
    if not events:
        raise ValueError("the dataset has no events to replay")
    rng = random.Random(options.seed)
    producer = make_producer(settings)
    result = ReplayResult()
    failures: list[BaseException] = []
    first_ts = events[0].ts
    started = time.time()
    progress = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        disable=not options.progress, transient=True, console=Console(stderr=True))
    with progress:
        task = progress.add_task("replay", total=len(events))
        for i, event in enumerate(events):
            offset_s = _offset_s(i, event.ts - first_ts, options)
            if offset_s is not None:
                delay = started + offset_s - time.time()
                if delay > 0:
                    time.sleep(delay)
            retimed = event.model_copy(update={"ts": time.time()})
            producer.send(settings.clicks_topic, key=retimed.session_id.encode(),
                          value=retimed.to_bytes()).add_errback(failures.append)
            result.sent += 1
            if on_sent:
                on_sent(retimed, time.time())
            if options.bad_fraction and rng.random() < options.bad_fraction:
                producer.send(settings.clicks_topic, key=retimed.session_id.encode(),
                              value=rng.choice(MALFORMED_SAMPLES)).add_errback(failures.append)
                result.malformed += 1
                if on_sent:
                    on_sent(None, time.time())
            if i % 256 == 0:
                progress.update(task, completed=i + 1)
        producer.flush(timeout=30)
    producer.close(timeout=10)
    result.seconds = time.time() - started
    if failures:  # never report an event as produced that Kafka did not acknowledge
        raise RuntimeError(f"{len(failures)} of {result.sent + result.malformed} events were not acknowledged "
                           f"by Kafka at {settings.kafka_bootstrap}: {failures[0]!r}")
    return result


def _offset_s(index: int, dataset_offset_s: float, options: ReplayOptions) -> float | None:
    if options.rate:
        return index / options.rate
    if options.speedup:
        return dataset_offset_s / options.speedup
    return None
