"""The online report's figures on hand-made impressions and rewards: CTR and its interval, MRR,
shadow hits, traffic share over time, cumulative reward, IPS/SNIPS, the reward log's paged read,
the plots and the JSON shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.online_report import RewardEntry, off_policy, online_report, read_rewards, write_plots
from streamrec.arm_stats import ctr_interval
from streamrec.impressions import Impression


def shown(request_id: str, arm: str, ts: float, propensity: float = 1.0, *, session: str = "s", policy: str = "ab",
          shadow: bool = False, experiment: str = "exp") -> Impression:
    return Impression(request_id, session, ts, arm, policy, propensity, "stream", False, (1, 2, 3), (0.3, 0.2, 0.1),
                      shadow, experiment)


def reward(request_id: str, arm: str, rank: int = 1, *, shadow: bool = False, experiment: str = "exp") -> RewardEntry:
    return RewardEntry(request_id, experiment, arm, rank, shadow)


def tiny_30_70() -> tuple[list[Impression], list[RewardEntry]]:
    """A logged with propensity 0.3 twice (one clicked), B with 0.7 three times (one clicked)."""
    impressions = [shown("r1", "A", 1, 0.3), shown("r2", "A", 2, 0.3), shown("r3", "B", 3, 0.7),
                   shown("r4", "B", 4, 0.7), shown("r5", "B", 5, 0.7)]
    return impressions, [reward("r1", "A", rank=2), reward("r3", "B", rank=1)]


def test_ips_and_snips_are_exact_on_a_tiny_log():
    report = online_report(*tiny_30_70())
    a, b = report["arms"]["A"], report["arms"]["B"]
    assert a["ips"] == pytest.approx((1 / 0.3) / 5)
    assert a["snips"] == pytest.approx(0.5)
    assert b["ips"] == pytest.approx((1 / 0.7) / 5)
    assert b["snips"] == pytest.approx(1 / 3)


def test_ips_and_snips_recover_each_arms_true_ctr_from_a_logged_30_70_split():
    rng = np.random.default_rng(7)
    n, true_ctr, share = 40_000, {"A": 0.10, "B": 0.30}, {"A": 0.3, "B": 0.7}
    arms = rng.choice(["A", "B"], size=n, p=[share["A"], share["B"]])
    rewards = [float(rng.random() < true_ctr[a]) for a in arms]
    estimates = off_policy(list(arms), rewards, [share[a] for a in arms], ["A", "B"])
    for arm in ("A", "B"):
        assert estimates[arm]["ips"] == pytest.approx(true_ctr[arm], rel=0.06)
        assert estimates[arm]["snips"] == pytest.approx(true_ctr[arm], rel=0.06)


def test_an_arm_never_served_has_ips_zero_and_no_snips():
    assert off_policy(["A", "A"], [1.0, 0.0], [1.0, 1.0], ["B"]) == {"B": {"ips": 0.0, "snips": None}}


def test_ctr_its_wilson_interval_mrr_and_share_per_arm():
    report = online_report(*tiny_30_70())
    a = report["arms"]["A"]
    assert (a["impressions"], a["clicked"], a["ctr"], a["mrr"], a["share"]) == (2, 1, 0.5, 0.5, 0.4)
    assert (a["ctr_low"], a["ctr_high"]) == pytest.approx(ctr_interval(1, 2))
    assert (report["impressions"], report["clicked"], report["ctr"]) == (5, 2, 0.4)


def test_the_wilson_interval_matches_the_textbook_values():
    low, high = ctr_interval(3, 10)
    assert (low, high) == pytest.approx((0.1078, 0.6032), abs=1e-4)
    assert ctr_interval(0, 0) is None
    assert ctr_interval(0, 20)[0] == 0.0 and ctr_interval(20, 20)[1] == pytest.approx(1.0)


def test_a_reward_counts_only_for_the_served_list_of_its_arm_and_experiment():
    impressions = [shown("r1", "A", 1), shown("r2", "A", 2)]
    rewards = [reward("r1", "B"), reward("r1", "A", shadow=True), reward("r2", "A", experiment="other"),
               reward("r9", "A")]  # the wrong arm, a shadow hit, another experiment, an unknown request
    assert online_report(impressions, rewards)["arms"]["A"]["clicked"] == 0
    assert online_report(impressions, [reward("r1", "A"), reward("r1", "A")])["arms"]["A"]["clicked"] == 1


def test_the_default_experiment_is_the_newest_impressions():
    impressions = [shown("r1", "A", 5, experiment="old"), shown("r2", "A", 9, experiment="new"),
                   shown("r3", "A", 1, experiment="new")]
    report = online_report(impressions, [])
    assert report["experiment"] == "new" and report["impressions"] == 2
    assert report["experiments"] == {"old": 1, "new": 2}
    assert online_report(impressions, [], "old")["impressions"] == 1


def test_the_session_prefix_keeps_only_those_sessions():
    impressions = [shown("r1", "A", 1, session="run1-a"), shown("r2", "A", 2, session="run2-a")]
    report = online_report(impressions, [reward("r1", "A"), reward("r2", "A")], session_prefix="run1-")
    assert (report["impressions"], report["clicked"]) == (1, 1)


def test_shadow_lists_are_reported_apart_and_compared_with_the_champion_on_the_same_requests():
    impressions = [shown(f"r{n}", "champ", n, policy="shadow") for n in range(4)]
    impressions += [shown(f"r{n}", "chall", n, policy="shadow", shadow=True) for n in range(4)]
    rewards = [reward("r0", "champ"), reward("r0", "chall", 3, shadow=True), reward("r1", "chall", 1, shadow=True)]
    report = online_report(impressions, rewards)
    assert list(report["arms"]) == ["champ"]  # a shadow list is not a served impression
    assert report["arms"]["champ"]["impressions"] == 4
    challenger = report["shadow"]["chall"]
    assert (challenger["impressions"], challenger["hits"], challenger["ctr"]) == (4, 2, 0.5)
    assert challenger["served_on_same_requests"] == {"versions": ["champ"], "impressions": 4, "clicked": 1,
                                                     "ctr": 0.25}


def test_share_over_time_cuts_the_impressions_into_equal_buckets_in_time_order():
    impressions = [shown(f"r{n}", "A" if n < 20 else "B", ts=n) for n in reversed(range(40))]
    rewards = [reward(f"r{n}", "A") for n in (0, 1, 12)] + [reward("r39", "B")]
    report = online_report(impressions, rewards, buckets=4)
    buckets = report["share_over_time"]
    assert [b["impressions"] for b in buckets] == [10, 10, 10, 10]
    assert [b["share"]["A"] for b in buckets] == [1.0, 1.0, 0.0, 0.0]
    assert [(b["start_ts"], b["end_ts"]) for b in buckets] == [(0, 9), (10, 19), (20, 29), (30, 39)]
    assert [b["cumulative_clicked"] for b in buckets] == [{"A": 2, "B": 0}, {"A": 3, "B": 0}, {"A": 3, "B": 0},
                                                          {"A": 3, "B": 1}]
    cumulative = report["cumulative_reward"]
    assert cumulative["ts"] == list(range(40)) and cumulative["clicked"]["A"][-1] == 3
    assert online_report(impressions[:3], [], buckets=20)["share_over_time"][0]["impressions"] == 1


def test_the_report_is_one_json_object_with_the_documented_keys():
    report = online_report(*tiny_30_70())
    assert json.loads(json.dumps(report)) == report
    assert {"experiment", "experiments", "policies", "impressions", "clicked", "ctr", "arms", "shadow",
            "share_over_time", "cumulative_reward"} <= set(report)
    assert set(report["arms"]["A"]) == {"impressions", "clicked", "ctr", "ctr_low", "ctr_high", "mrr", "share",
                                        "propensity_mean", "ips", "snips"}
    assert report["policies"] == ["ab"]


def test_no_impressions_give_an_empty_report_not_an_error():
    report = online_report([], [])
    assert (report["experiment"], report["impressions"], report["arms"], report["share_over_time"]) == (None, 0, {}, [])


class FakeStream:
    """XRANGE over a list of (id, fields), as redis-py answers it (bytes)."""

    def __init__(self, entries: list[dict]) -> None:
        self.entries = [(f"{n + 1}-0".encode(), {k.encode(): str(v).encode() for k, v in e.items()})
                        for n, e in enumerate(entries)]
        self.calls = 0

    def xrange(self, name, min="-", max="+", count=None):  # noqa: A002, ANN001
        self.calls += 1
        after = int(min[1:].split("-")[0]) if min.startswith("(") else 0
        return [e for e in self.entries if int(e[0].decode().split("-")[0]) > after][:count]


def test_the_reward_log_is_read_in_pages_and_filtered_by_experiment():
    entries = [{"request_id": f"r{n}", "experiment": "exp" if n % 2 else "other", "version": "A", "rank": n + 1,
                "shadow": 0, "impression_ts": 1.0, "click_ts": 2.0} for n in range(7)]
    stream = FakeStream(entries + [{"something": "else"}])
    got = read_rewards(stream, "exp", page=3)
    assert [r.request_id for r in got] == ["r1", "r3", "r5"]
    assert got[0] == RewardEntry("r1", "exp", "A", 2, False, 2.0)
    assert stream.calls == 3


def test_the_three_plots_are_written(tmp_path):
    report = online_report(*tiny_30_70())
    paths = write_plots(report, tmp_path / "out")
    assert set(paths) == {"traffic_share", "ctr", "cumulative_reward"}
    for path in paths.values():
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_operations_view_shows_each_arms_share_and_ctr_with_the_same_interval():
    from serving.ops import online_ops
    from serving.routing import Router
    from streamrec.arm_stats import ArmStats
    from streamrec.model_registry import RoutingConfig

    router = Router("champ", RoutingConfig("ab", ("chall",), (3.0, 7.0), experiment="exp"))
    router.update({"champ": ArmStats("champ", impressions=10, clicked=3), "chall": ArmStats("chall")})
    online = online_ops(router)
    assert (online.policy, online.experiment) == ("ab", "exp")
    champ, chall = online.arms
    assert (champ.version, champ.champion, champ.share, champ.impressions, champ.clicked, champ.ctr) == (
        "champ", True, pytest.approx(0.3), 10, 3, 0.3)
    assert (champ.ctr_low, champ.ctr_high) == pytest.approx(ctr_interval(3, 10))
    assert (chall.share, chall.impressions, chall.ctr, chall.ctr_low) == (pytest.approx(0.7), 0, None, None)

    shadow = Router("champ", RoutingConfig("shadow", ("chall",)))
    shadow.update({"chall": ArmStats("chall", shadow_impressions=4, shadow_clicked=1)})
    chall = online_ops(shadow).arms[1]
    assert (chall.shadow, chall.share, chall.impressions, chall.clicked) == (True, 0.0, 4, 1)
