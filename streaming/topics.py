"""Names and shapes of the worker's Kafka topics, without importing Faust.

`streamrec up` creates them all before the worker starts: a worker that has to create its own
internal topics while it consumes suffers metadata refreshes and rebalances mid-stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamrec.settings import Settings

SESSION_TABLE = "session-state"
ITEM_TABLE = "item-windows"
COMPACTED = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def by_item_topic(settings: Settings) -> str:
    return f"{settings.worker_id}-clicks-by-item"


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's name for a table's changelog: `<app id>-<table>-changelog`."""
    return f"{settings.worker_id}-{table}-changelog"


def all_topics(settings: Settings) -> list[TopicSpec]:
    partitions = settings.clicks_partitions
    return [
        TopicSpec(settings.clicks_topic, partitions),
        TopicSpec(settings.dead_letter_topic, 1),
        TopicSpec(settings.impressions_topic, partitions),
        TopicSpec(by_item_topic(settings), partitions),
        TopicSpec(changelog_topic(settings, SESSION_TABLE), partitions, COMPACTED),
        TopicSpec(changelog_topic(settings, ITEM_TABLE), partitions, COMPACTED),
    ]
