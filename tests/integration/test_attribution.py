"""Reward attribution on a real Redis: clicks joined to the session's latest impression, in any
arrival order, decided once that impression is known, counted once under redelivery (the Lua
script of streaming.attribution). The worker's clock is set by each test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from infra import process, redis_server
from infra.kafka import free_port
from streaming.attribution import (PENDING, PENDING_CLICK_TTL_S, SETTLE_S, Click, ImpressionWatermark,
                                   RewardAttribution, session_keys)
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


def run(redis_url: str, steps, now: float = 10_000.0):  # noqa: ANN001, ANN201
    """Run `steps(attribution, client, clock)` on a fresh client; `clock[0]` is the worker's time."""
    async def main():  # noqa: ANN202
        client = aioredis.Redis.from_url(redis_url)
        clock = [now]
        attribution = RewardAttribution(client, WINDOW_S, retry_until_done)
        attribution.clock = lambda: clock[0]
        try:
            return await steps(attribution, client, clock)
        finally:
            await client.aclose()
    return asyncio.run(main())


def shown(request: str, session: str, ts: float, version: str, items: tuple[int, ...], shadow: bool = False,
          experiment: str = "default") -> Impression:
    return Impression(request, session, ts, version, "shadow" if shadow else "ab", 1.0 if shadow else 0.5,
                      "stream", False, items, tuple(1.0 / (n + 1) for n in range(len(items))), shadow, experiment)


def click(session: str, item: int, ts: float, offset: int) -> Click:
    return Click(session, item, ts, partition=0, offset=offset)


def pairs(outcome) -> list[tuple[str, int]]:  # noqa: ANN001
    return [(r.version, r.rank) for r in outcome.rewards]


def test_a_click_is_decided_by_the_next_impression_or_after_the_settle_delay(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        clock[0] = 102.0
        await att.record(impressions=[shown("a1", "a", 100.0, "va", (5, 6, 7))])
        waiting = await att.record(clicks=[click("a", 7, 101.0, 1)])  # could an impression between still come?
        decided = await att.record(impressions=[shown("a2", "a", 103.0, "va", (1, 2))])  # no: a later one came
        # the session's last click: nothing comes after it, the sweep decides it once it has settled
        await att.record(clicks=[click("a", 2, 104.0, 2)])
        early = await att.sweep()
        clock[0] = 104.0 + SETTLE_S + 0.1
        settled = await att.sweep()
        again = await att.sweep()
        return waiting, decided, early, settled, again, (await read_arm_stats(client, "default", ["va"]))["va"]

    waiting, decided, early, settled, again, stats = run(redis_url, steps, now=102.0)
    assert (pairs(waiting), pairs(decided), pairs(early), pairs(settled), pairs(again)) == (
        [], [("va", 3)], [], [("va", 2)], [])
    assert (stats.impressions, stats.clicked, stats.rr_sum) == (2, 2, pytest.approx(1 / 3 + 1 / 2))


def test_either_arrival_order_gives_the_same_reward(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        await att.record(clicks=[click("b", 6, 201.0, 3)])  # the click reaches the worker first
        await att.record(impressions=[shown("b1", "b", 200.0, "vb", (5, 6, 7))])
        clock[0] = 201.0 + SETTLE_S
        return await att.sweep()

    assert pairs(run(redis_url, steps, now=201.5)) == [("vb", 2)]


def test_a_click_that_overtakes_its_own_impression_does_not_reward_an_older_one(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        clock[0] = 305.0
        await att.record(impressions=[shown("c1", "c", 300.0, "vc", (9, 8))])  # showed 9
        await att.record(clicks=[click("c", 9, 304.0, 4)])  # answers c2, which showed no 9: not yet here
        await att.record(impressions=[shown("c2", "c", 303.0, "vc", (1, 2))])
        clock[0] = 400.0
        await att.sweep()
        return (await read_arm_stats(client, "default", ["vc"]))["vc"]

    stats = run(redis_url, steps)
    assert (stats.impressions, stats.clicked) == (2, 0)


def test_a_backlog_click_waits_for_the_impression_log_to_be_read_up_to_it(redis_url: str) -> None:
    # A restarted worker reads clicks long after they happened; the impression the click answers is
    # still unread in its partition's backlog. By the wall clock the click has long settled.
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        mark = ImpressionWatermark(grace_s=0.0, clock=lambda: 9_000.0)
        att.clock = mark
        await att.record(impressions=[shown("w1", "w", 500.0, "vw", (9, 8))])
        mark.update({0: 40}, {0: 500.0})  # behind: impressions after 500.0 still unread
        await att.record(clicks=[click("w", 4, 505.0, 7)])
        early = await att.sweep()
        await att.record(impressions=[shown("w2", "w", 504.0, "vw", (3, 4))])  # the backlog reaches w2
        mark.update({0: 0}, {0: 504.1})
        later = await att.sweep()
        return early, later

    early, later = run(redis_url, steps)
    assert (pairs(early), pairs(later)) == ([], [("vw", 2)])


def test_a_later_impression_read_out_of_order_does_not_decide_a_click(redis_url: str) -> None:
    # Faust dropped x1 and the worker fetches it again (streaming.progress), after x2 was processed:
    # the log is read contiguously only up to 600.5, so x2 cannot vouch that nothing came between.
    # A rewind that started since the last lag update counts at once.
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        rewinding: dict[int, float] = {}
        mark = ImpressionWatermark(grace_s=0.0, clock=lambda: 9_000.0, rewinding=lambda: rewinding)
        att.clock = mark
        mark.update({0: 0}, {0: 600.5})  # caught up at the last update
        rewinding[0] = 600.5  # then a rewind: the hole starts after 600.5
        await att.record(impressions=[shown("x0", "x", 600.0, "vx", (1, 2))])
        await att.record(impressions=[shown("x2", "x", 603.0, "vx", (3, 4))])  # ahead of the hole
        early = await att.record(clicks=[click("x", 9, 602.0, 8)])  # answers x1, still unread
        await att.record(impressions=[shown("x1", "x", 601.0, "vx", (9, 8))])  # the refetch
        rewinding.clear()
        return early, await att.record(impressions=[shown("x3", "x", 604.0, "vx", (5,))])

    early, decided = run(redis_url, steps)
    assert (pairs(early), pairs(decided)) == ([], [("vx", 1)])


def test_a_later_impression_decides_at_once_while_the_log_is_read_in_order(redis_url: str) -> None:
    # Fast sessions: with a margin, MAX_IMPRESSIONS newer answers would push the clicked one out.
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        mark = ImpressionWatermark(grace_s=0.0, clock=lambda: 700.0)
        att.clock = mark
        mark.update({0: 3}, {0: 699.5})  # a few records behind, as under load
        await att.record(impressions=[shown("fast1", "fast", 699.0, "vh", (4, 5))])
        await att.record(clicks=[click("fast", 5, 699.01, 9)])
        return await att.record(impressions=[shown("fast2", "fast", 699.02, "vh", (6,))])

    assert pairs(run(redis_url, steps)) == [("vh", 2)]


def test_an_impression_read_after_its_click_was_decided_without_it_revises_the_decision(redis_url: str) -> None:
    # Whatever the watermark got wrong (a worker killed mid-batch, Faust's dropped records): the
    # click was decided before the impression it answers was read. When that impression comes it
    # takes the decision over: the reward the click gave an older answer is taken back (counter,
    # marks, reward log entry), and the late one is judged; a redelivery of it changes nothing.
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        clock[0] = 900.0
        await att.record(impressions=[shown("v1", "v", 800.0, "vv", (4, 5))])  # showed 5
        await att.record(impressions=[shown("v1", "v", 800.0, "vs", (5, 6), shadow=True)])
        wrong = await att.record(clicks=[click("v", 5, 802.0, 11)])  # settled long ago: decided on v1
        late = await att.record(impressions=[shown("v2", "v", 801.0, "vv", (7, 8))])  # no 5: no reward
        again = await att.record(impressions=[shown("v2", "v", 801.0, "vv", (7, 8))])
        # a click decided with no impression at all is rewarded when its impression comes
        none = await att.record(clicks=[click("n", 3, 850.0, 12)])
        found = await att.record(impressions=[shown("n1", "n", 849.0, "vv", (2, 3))])
        log = [fields[b"request_id"] for _, fields in await client.xrange(REWARD_LOG)
               if fields[b"request_id"] in (b"v1", b"v2", b"n1")]
        done = session_keys("v")[2]
        marks = [await client.hget(done, f) for f in ("r:v1:vv", "r:v1:vs", "j:0:11")]
        stats = await read_arm_stats(client, "default", ["vv", "vs"])
        return wrong, late, again, none, found, log, marks, stats

    wrong, late, again, none, found, log, marks, stats = run(redis_url, steps)
    assert sorted(pairs(wrong)) == [("vs", 1), ("vv", 2)]
    assert sorted((r.version, r.rank) for r in late.retracted) == [("vs", 1), ("vv", 2)] and pairs(late) == []
    assert (pairs(again), again.retracted) == ([], [])
    assert (pairs(none), pairs(found), found.retracted) == ([], [("vv", 2)], [])
    assert log == [b"n1"]
    assert marks[:2] == [None, None] and b'"r":"v2"' in marks[2]
    assert (stats["vv"].clicked, stats["vv"].rr_sum, stats["vs"].shadow_clicked) == (1, pytest.approx(0.5), 0)


def test_a_reward_taken_back_goes_to_another_click_on_the_same_answer(redis_url: str) -> None:
    # Both clicks joined u1 (both items shown), and the one decided first (the later click, read
    # first) counted it. A late u2 between the two clicks moves the later click to u2 (no reward
    # there); u1 is then counted once, by the earlier click, at its rank.
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        clock[0] = 1_000.0
        await att.record(impressions=[shown("u1", "u", 900.0, "vu", (1, 2, 3))])
        first = await att.record(clicks=[click("u", 2, 910.0, 13)])
        second = await att.record(clicks=[click("u", 3, 902.0, 14)])
        late = await att.record(impressions=[shown("u2", "u", 905.0, "vu", (7,))])
        return first, second, late, (await read_arm_stats(client, "default", ["vu"]))["vu"]

    first, second, late, stats = run(redis_url, steps)
    assert (pairs(first), pairs(second)) == ([("vu", 2)], [])
    assert (pairs(late), [(r.version, r.rank) for r in late.retracted]) == ([("vu", 3)], [("vu", 2)])
    assert (stats.impressions, stats.clicked, stats.rr_sum) == (2, 1, pytest.approx(1 / 3))


def test_a_shadow_list_read_after_its_click_was_decided_is_judged_then(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        clock[0] = 1_200.0
        await att.record(impressions=[shown("s1", "s", 1_100.0, "vp", (5, 6))])
        served = await att.record(clicks=[click("s", 6, 1_101.0, 15)])  # settled: decided on s1
        late = await att.record(impressions=[shown("s1", "s", 1_100.0, "vq", (6, 7), shadow=True)])
        again = await att.record(impressions=[shown("s1", "s", 1_100.0, "vq", (6, 7), shadow=True)])
        other = await att.record(impressions=[shown("s0", "s", 1_099.0, "vq", (6,), shadow=True)])
        return served, late, again, other, await read_arm_stats(client, "default", ["vp", "vq"])

    served, late, again, other, stats = run(redis_url, steps)
    assert (pairs(served), pairs(late), pairs(again), pairs(other)) == ([("vp", 2)], [("vq", 1)], [], [])
    assert (late.retracted, stats["vp"].clicked, stats["vq"].shadow_clicked) == ([], 1, 1)


def test_the_click_joins_the_latest_impression_before_it_within_the_window(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        await att.record(impressions=[shown("old", "d", 100.0, "vd1", (1, 2)), shown("new", "d", 110.0, "vd2", (3, 1))])
        await att.record(clicks=[click("d", 1, 111.0, 10)])  # item 1: rank 2 in "new", rank 1 in "old"
        await att.record(clicks=[click("d", 9, 112.0, 11)])  # shown by neither
        await att.record(impressions=[shown("late", "d", 200.0, "vd1", (4,))])
        await att.record(clicks=[click("d", 4, 200.0 + WINDOW_S + 1, 12)])  # too long after "late"
        clock[0] = 10_000.0
        await att.sweep()
        return await read_arm_stats(client, "default", ["vd1", "vd2"])

    stats = run(redis_url, steps)
    assert (stats["vd1"].impressions, stats["vd1"].clicked) == (2, 0)
    assert (stats["vd2"].impressions, stats["vd2"].clicked, stats["vd2"].rr_sum) == (1, 1, 0.5)


def test_an_impression_counts_as_clicked_once_at_its_first_click(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        await att.record(impressions=[shown("e1", "e", 100.0, "ve", (1, 2, 3))])
        await att.record(clicks=[click("e", 3, 101.0, 20), click("e", 1, 102.0, 21)])
        await att.sweep()
        return (await read_arm_stats(client, "default", ["ve"]))["ve"]

    stats = run(redis_url, steps)
    assert (stats.impressions, stats.clicked, stats.mrr) == (1, 1, pytest.approx(1 / 3))


def test_redelivered_impressions_and_clicks_change_nothing(redis_url: str) -> None:
    imp = shown("f1", "f", 100.0, "vf", (8, 9))
    clk = click("f", 9, 100.5, 30)

    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        first = await att.record(impressions=[imp], clicks=[clk])
        clock[0] = 200.0
        swept = await att.sweep()
        again = [await att.record(impressions=[imp], clicks=[clk]) for _ in range(3)] + [await att.sweep()]
        log = [fields for _, fields in await client.xrange(REWARD_LOG) if fields[b"request_id"] == b"f1"]
        return first, swept, again, (await read_arm_stats(client, "default", ["vf"]))["vf"], log

    first, swept, again, stats, log = run(redis_url, steps, now=101.0)
    assert (first.new_impressions, first.new_clicks, pairs(swept)) == (1, 1, [("vf", 2)])
    assert all((o.new_impressions, o.new_clicks, o.rewards) == (0, 0, []) for o in again)
    assert (stats.impressions, stats.clicked, stats.rr_sum) == (1, 1, 0.5)
    assert [(f[b"rank"], f[b"experiment"], f[b"shadow"]) for f in log] == [(b"2", b"default", b"0")]


def test_a_shadow_list_is_judged_by_the_click_that_followed_the_served_one(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        await att.record(impressions=[shown("g1", "g", 100.0, "champ", (1, 2)),
                                      shown("g1", "g", 100.0, "chall", (5, 1), shadow=True)])
        await att.record(clicks=[click("g", 1, 101.0, 40)])
        clock[0] = 200.0
        outcome = await att.sweep()
        return outcome, await read_arm_stats(client, "default", ["champ", "chall"])

    outcome, stats = run(redis_url, steps, now=101.5)
    assert sorted((r.version, r.rank, r.shadow) for r in outcome.rewards) == [("chall", 2, True), ("champ", 1, False)]
    assert (stats["champ"].impressions, stats["champ"].clicked, stats["champ"].shadow_impressions) == (1, 1, 0)
    assert (stats["chall"].impressions, stats["chall"].shadow_impressions, stats["chall"].shadow_clicked) == (0, 1, 1)


def test_clicks_without_impressions_are_kept_briefly_and_swept(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        clock[0] = 100.5
        await att.record(clicks=[click("h", 1, 100.0, 50)])
        pending = [await client.ttl(key) for key in session_keys("h")[1:3]]
        waiting = await client.zscore(PENDING, "h")
        clock[0] = 200.0
        swept = await att.sweep()
        return pending, waiting, swept, await client.zscore(PENDING, "h")

    pending, waiting, swept, after = run(redis_url, steps, now=100.5)
    assert all(0 < ttl <= PENDING_CLICK_TTL_S for ttl in pending)
    assert (waiting, swept.rewards, after) == (100.0, [], None)


def test_each_experiment_counts_from_zero(redis_url: str) -> None:
    async def steps(att: RewardAttribution, client, clock):  # noqa: ANN001, ANN202
        await att.record(impressions=[shown("x1", "k", 100.0, "vk", (1,), experiment="exp-1")])
        await att.record(clicks=[click("k", 1, 101.0, 60)])
        await att.record(impressions=[shown("x2", "k", 110.0, "vk", (1,), experiment="exp-2")])
        return [(await read_arm_stats(client, e, ["vk"]))["vk"] for e in ("exp-1", "exp-2")]

    one, two = run(redis_url, steps)
    assert (one.impressions, one.clicked, two.impressions, two.clicked) == (1, 1, 1, 0)
