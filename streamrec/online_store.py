"""Async reads and writes of the Feast online store (Redis), one pipeline round trip per call.

The worker writes streaming features here and the API reads every feature of a request here;
both go through `feast_codec`, so what they see is exactly what Feast's SDK sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from feature_repo import schema as s
from streamrec import feast_codec as codec


@dataclass(frozen=True)
class Row:
    """One entity row to write: key value, feature values and the row's event time."""

    key: int | str
    values: dict[str, object]
    event_ts: float


@dataclass(frozen=True)
class ReadRequest:
    view: str
    keys: Sequence[int | str]
    features: tuple[str, ...] | None = None


class OnlineStore:
    """Feast's Redis layout through redis.asyncio; cheap to share across requests."""

    def __init__(self, client: aioredis.Redis, project: str = s.PROJECT) -> None:
        self.client = client
        self.project = project

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 1.0, max_connections: int = 64) -> "OnlineStore":
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=max_connections,
            health_check_interval=0,
        )
        return cls(client)

    def key(self, view: str, value: int | str) -> bytes:
        return codec.entity_key(s.VIEWS[view], value, self.project)

    async def write(self, view: str, rows: Iterable[Row], *, expire_s: int | None = None) -> int:
        """Overwrite rows of one view in a single pipeline; returns how many were written."""
        spec = s.VIEWS[view]
        count = 0
        async with self.client.pipeline(transaction=False) as pipe:
            for row in rows:
                key = codec.entity_key(spec, row.key, self.project)
                pipe.hset(key, mapping=codec.encode_row(spec, row.values, row.event_ts))
                if expire_s:
                    pipe.expire(key, expire_s)
                count += 1
            if count:
                await pipe.execute()
        return count

    async def read_many(self, requests: Sequence[ReadRequest]) -> list[list[dict[str, object] | None]]:
        """Read several views' rows in one round trip; per request, per key: values or None."""
        specs = [s.VIEWS[r.view] for r in requests]
        async with self.client.pipeline(transaction=False) as pipe:
            for spec, request in zip(specs, requests):
                fields = codec.read_fields(spec, request.features)
                for key in request.keys:
                    pipe.hmget(codec.entity_key(spec, key, self.project), fields)
            replies = await pipe.execute() if any(r.keys for r in requests) else []
        out: list[list[dict[str, object] | None]] = []
        position = 0
        for spec, request in zip(specs, requests):
            rows = replies[position:position + len(request.keys)]
            position += len(request.keys)
            out.append([codec.decode_row(spec, raw, request.features) for raw in rows])
        return out

    async def read(self, view: str, keys: Sequence[int | str], features: tuple[str, ...] | None = None):
        return (await self.read_many([ReadRequest(view, keys, features)]))[0]

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False

    async def close(self) -> None:
        await self.client.aclose()
