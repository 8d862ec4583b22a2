"""Hand fetched records to the streams without Faust's per-record task race, when nothing can block.

Faust 0.15's fetch loop (`Consumer._drain_messages`) delivers every record with
`wait_first(callback(record), suspend_flow.wait())`: four new tasks, an `asyncio.wait` and three
cancellations per record, so that a delivery stuck on a full stream buffer or on suspended flow
is abandoned when a rebalance starts. Profiled at saturation this race was the largest single
cost of the worker, bigger than our own processing of the record.

Here the loop first asks whether the delivery can block at all: flow active and not being
suspended, the producer buffer below its limit, the conductor's lock free and no buffer of the
record's channels full. Then the delivery runs to its end without ever yielding, so there is
nothing to race and it is awaited directly; otherwise it goes through Faust's race exactly as
before. The loop is otherwise Faust's own (0.15.3), including the read-offset bookkeeping that
`SourceReadOffsets` (streaming/faust_patches.py) adjusts.

Why it stays: measured A/B alternated on this machine when it was added (commit 83a1976), CPU
per event 201-206 -> 159-167 us and 4,615/4,838 -> 5,839/6,123 events/s; Faust 0.15.3's loop
still has the per-record race. `streaming.faust_patches` installs it, pins the Faust version it
copies and fingerprints `Consumer._drain_messages` so an upstream change fails a test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import MethodType
from typing import Any

import faust

from streaming.faust_patches import SUPPORTED_VERSIONS

log = logging.getLogger(__name__)
TESTED_FAUST = SUPPORTED_VERSIONS["faust-streaming"]  # the fetch loop below is Faust's of this version


def delivery_cannot_block(app: faust.App, consumer: Any) -> Callable[[Any], bool]:
    """`check(tp)`: True when delivering a record of `tp` now completes without waiting."""
    conductor = app.topics
    flow_control = app.flow_control
    producer_buffer = app.producer.buffer
    suspended = consumer.suspend_flow.is_set
    lock_taken = conductor._tp_to_callback_lock.locked
    channels_of = conductor._tp_index.get

    def check(tp: Any) -> bool:
        if suspended() or not flow_control.is_active() or lock_taken():
            return False
        if producer_buffer.size > producer_buffer.max_messages:
            return False
        return not any(channel.queue.full() for channel in channels_of(tp, ()))

    return check


def install(consumer: Any) -> bool:
    """Give `consumer` the fetch loop below; False (Faust's own loop kept) on an untested Faust."""
    if faust.__version__ != TESTED_FAUST:
        log.warning("faust %s: keeping Faust's own fetch loop (fast delivery is written for %s)",
                    faust.__version__, TESTED_FAUST)
        return False
    consumer._drain_messages = MethodType(_drain_messages, consumer)
    return True


async def _drain_messages(self: Any, fetcher: Any) -> None:  # noqa: C901 - Faust's loop, kept whole
    """Faust 0.15.3's `Consumer._drain_messages`, with the direct delivery above."""
    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = getattr(self._read_offset, "delivered", self._read_offset.__setitem__)  # not a seek
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    cannot_block = delivery_cannot_block(self.app, self)  # the fetcher starts after the app's services

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait: AsyncIterator = getmany(timeout=1.0)
            await self.sleep(0)  # getmany may loop without releasing the event loop
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if cannot_block(tp):
                            await callback(message)
                        else:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)
