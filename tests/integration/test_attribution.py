"""Reward attribution on a real Redis: clicks joined to the session's latest impression, in any
arrival order, counted once under redelivery (the Lua script of streaming.attribution)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from infra import process, redis_server
from infra.kafka import free_port
from streaming.attribution import PENDING_CLICK_TTL_S, Click, RewardAttribution, session_keys
from streaming.processor import retry_until_done
from streamrec.arm_stats import REWARD_LOG, read_arm_stats
from streamrec.impressions import Impression
from streamrec.settings import Settings

pytestmark = pytest.mark.integration
WINDOW_S = 600


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("attribution"), redis_url=f"redis://127.0.0.1:{free_port()}/0")
    redis_server.start(settings)
    yield settings.redis_url
    process.stop(redis_server.NAME, settings)


def run(redis_url: str, steps):  # noqa: ANN001, ANN201
    """Run `steps(attribution)` on a fresh client; returns its result."""
    async def main():  # noqa: ANN202
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await steps(RewardAttribution(client, WINDOW_S, retry_until_done), client)
        finally:
            await client.aclose()
    return asyncio.run(main())


def shown(request: str, session: str, ts: float, version: str, items: tuple[int, ...], shadow: bool = False) -> Impression:
    return Impression(request, session, ts, version, "shadow" if shadow else "ab", 1.0 if shadow else 0.5,
                      "stream", False, items, tuple(1.0 / (n + 1) for n in range(len(items))), shadow)


def click(session: str, item: int, ts: float, offset: int) -> Click:
    return Click(session, item, ts, partition=0, offset=offset)


def test_a_click_on_a_shown_item_rewards_its_impression_in_either_arrival_order(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client) -> dict:  # noqa: ANN001
        first = await att.record(impressions=[shown("r1", "a", 100.0, "va", (5, 6, 7))])
        second = await att.record(clicks=[click("a", 7, 101.0, 1)])
        # the other order: the click reaches the worker before its impression
        third = await att.record(clicks=[click("b", 6, 201.0, 2)])
        fourth = await att.record(impressions=[shown("r2", "b", 200.0, "va", (5, 6, 7))])
        stats = (await read_arm_stats(client, "default", ["va"]))["va"]
        return {"rewards": [o.rewards for o in (first, second, third, fourth)], "stats": stats}

    got = run(redis_url, steps)
    assert [[(r.version, r.rank) for r in rewards] for rewards in got["rewards"]] == [[], [("va", 3)], [], [("va", 2)]]
    stats = got["stats"]
    assert (stats.impressions, stats.clicked, stats.rr_sum) == (2, 2, pytest.approx(1 / 3 + 1 / 2))


def test_the_click_joins_the_latest_impression_before_it_within_the_window(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client) -> list:  # noqa: ANN001
        await att.record(impressions=[shown("old", "c", 100.0, "vc", (1, 2)), shown("new", "c", 110.0, "vd", (3, 1))])
        joined_to_new = await att.record(clicks=[click("c", 1, 111.0, 10)])  # item 1: rank 2 in "new", 1 in "old"
        not_shown = await att.record(clicks=[click("c", 9, 112.0, 11)])
        too_late = await att.record(impressions=[shown("late", "c", 200.0, "vc", (4,))])
        after_window = await att.record(clicks=[click("c", 4, 200.0 + WINDOW_S + 1, 12)])
        stats = await read_arm_stats(client, "default", ["vc", "vd"])
        return [joined_to_new.rewards, not_shown.rewards, too_late.rewards, after_window.rewards, stats]

    joined, not_shown, _, after_window, stats = run(redis_url, steps)
    assert [(r.version, r.rank) for r in joined] == [("vd", 2)]
    assert not_shown == [] and after_window == []
    assert (stats["vc"].impressions, stats["vc"].clicked) == (2, 0)
    assert (stats["vd"].impressions, stats["vd"].clicked) == (1, 1)


def test_an_impression_counts_as_clicked_once_at_its_first_click(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client):  # noqa: ANN001, ANN202
        await att.record(impressions=[shown("r", "e", 100.0, "ve", (1, 2, 3))])
        await att.record(clicks=[click("e", 3, 101.0, 20), click("e", 1, 102.0, 21)])
        return (await read_arm_stats(client, "default", ["ve"]))["ve"]

    stats = run(redis_url, steps)
    assert (stats.impressions, stats.clicked, stats.mrr) == (1, 1, pytest.approx(1 / 3))


def test_redelivered_impressions_and_clicks_change_nothing(redis_url: str) -> None:
    imp = shown("r", "f", 100.0, "vf", (8, 9))
    clk = click("f", 9, 100.5, 30)

    async def steps(att: RewardAttribution, client):  # noqa: ANN001, ANN202
        first = await att.record(impressions=[imp], clicks=[clk])
        again = [await att.record(impressions=[imp], clicks=[clk]) for _ in range(3)]
        log = [fields for _, fields in await client.xrange(REWARD_LOG) if fields[b"request_id"] == b"r"
               and fields[b"version"] == b"vf"]
        return first, again, (await read_arm_stats(client, "default", ["vf"]))["vf"], log

    first, again, stats, log = run(redis_url, steps)
    assert [(f[b"rank"], f[b"experiment"], f[b"shadow"]) for f in log] == [(b"2", b"default", b"0")]
    assert (first.new_impressions, first.new_clicks, len(first.rewards)) == (1, 1, 1)
    assert all((o.new_impressions, o.new_clicks, o.rewards) == (0, 0, []) for o in again)
    assert (stats.impressions, stats.clicked, stats.rr_sum) == (1, 1, 0.5)


def test_a_shadow_list_is_judged_by_the_click_that_followed_the_served_one(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client):  # noqa: ANN001, ANN202
        await att.record(impressions=[shown("r", "g", 100.0, "champ", (1, 2)), shown("r", "g", 100.0, "chall", (5, 1), shadow=True)])
        outcome = await att.record(clicks=[click("g", 1, 101.0, 40)])
        return outcome, await read_arm_stats(client, "default", ["champ", "chall"])

    outcome, stats = run(redis_url, steps)
    assert sorted((r.version, r.rank, r.shadow) for r in outcome.rewards) == [("chall", 2, True), ("champ", 1, False)]
    assert (stats["champ"].impressions, stats["champ"].clicked, stats["champ"].shadow_impressions) == (1, 1, 0)
    assert (stats["chall"].impressions, stats["chall"].shadow_impressions, stats["chall"].shadow_clicked) == (0, 1, 1)


def test_clicks_of_a_session_without_impressions_are_kept_only_briefly(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client):  # noqa: ANN001, ANN202
        await att.record(clicks=[click("h", 1, 100.0, 50)])
        pending = [await client.ttl(key) for key in session_keys("h")[1:]]
        await att.record(impressions=[shown("r", "h", 99.0, "vh", (1,))])
        kept = [await client.ttl(key) for key in session_keys("h")]
        return pending, kept, (await read_arm_stats(client, "default", ["vh"]))["vh"]

    pending, kept, stats = run(redis_url, steps)
    assert all(0 < ttl <= PENDING_CLICK_TTL_S for ttl in pending)
    assert all(ttl > PENDING_CLICK_TTL_S for ttl in kept)
    assert stats.clicked == 1


def test_each_experiment_counts_from_zero(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client):  # noqa: ANN001, ANN202
        first = Impression("x1", "k", 100.0, "vk", "ab", 0.5, "stream", False, (1,), (1.0,), experiment="exp-1")
        second = Impression("x2", "k", 110.0, "vk", "bandit", 0.9, "stream", False, (1,), (1.0,), experiment="exp-2")
        await att.record(impressions=[first])
        await att.record(clicks=[click("k", 1, 101.0, 60)])
        await att.record(impressions=[second])
        return [(await read_arm_stats(client, e, ["vk"]))["vk"] for e in ("exp-1", "exp-2")]

    one, two = run(redis_url, steps)
    assert (one.impressions, one.clicked, two.impressions, two.clicked) == (1, 1, 1, 0)
