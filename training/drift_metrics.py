"""Prometheus gauges of the learn job's drift checks (training.drift), for /metrics and the operations page."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from training.drift import DriftReport

# name → help; every statistic has a value, its calibrated threshold and a fired flag
DRIFT_GAUGES: dict[str, str] = {
    "streamrec_learn_drift_fired": "1 if the last drift check fired (any statistic above its threshold).",
    "streamrec_learn_item_shift": "Jensen-Shannon distance (base 2) between the item click distributions "
                                  "of the champion's training window and the latest window.",
    "streamrec_learn_item_shift_threshold": "item_shift threshold: the larger of the reference's sampling "
                                            "noise and its own pace of change, at the latest window's size.",
    "streamrec_learn_item_shift_fired": "1 if item_shift is above its threshold.",
    "streamrec_learn_unknown_item_share": "Share of the latest window's clicks on items outside the "
                                          "champion's catalogue.",
    "streamrec_learn_unknown_item_share_threshold": "unknown_item_share threshold: the rate new items "
                                                    "appeared inside the training window, plus its spread.",
    "streamrec_learn_unknown_item_share_fired": "1 if unknown_item_share is above its threshold.",
    "streamrec_learn_reward_drift": "1 once ADWIN detected a drop of the champion's online reward "
                                    "(since it became champion).",
    "streamrec_learn_reward_drift_threshold": "reward_drift threshold (0.5: the gauge is a 0/1 flag).",
    "streamrec_learn_reward_drift_fired": "1 if reward_drift fired.",
    "streamrec_learn_reward_mean": "The champion's online reward (clicks per request) over ADWIN's current window.",
}


class DriftGauges:
    """The drift gauges, registered on one registry (the learn job's, or a test's)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        target = REGISTRY if registry is None else registry
        self.gauges = {name: Gauge(name, doc, registry=target) for name, doc in DRIFT_GAUGES.items()}

    def publish(self, report: DriftReport) -> dict[str, float]:
        """Set every gauge the report has a value for; returns what was set."""
        values = report.gauge_values()
        reward = report.get("reward_drift")
        if reward is not None:
            values["streamrec_learn_reward_mean"] = float(reward.details.get("reward_mean", float("nan")))
        for name, value in values.items():
            if name not in self.gauges:
                raise KeyError(f"{name} is not declared in DRIFT_GAUGES: add it there")
            self.gauges[name].set(value)
        return values
