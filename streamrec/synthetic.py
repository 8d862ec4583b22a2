"""A synthetic click stream with learnable structure, for demos and tests without a dataset.

Items belong to topics; a session mostly stays in one topic and often moves to an item "near"
the previous one (a neighbour in the topic's item list), so both embeddings and co-visitation
can beat popularity at next-item prediction. Popularity is Zipf-skewed as in real catalogues.
"""

from __future__ import annotations

import time

import numpy as np

from streamrec.interactions import Interactions

FIRST_ITEM_ID = 1000  # item ids do not start at 0, so code that confuses rows with ids fails


def generate_sessions(n_sessions: int = 20_000, n_items: int = 5_000, n_topics: int = 50, seed: int = 0,
                      *, zipf_a: float = 0.8, stay: float = 0.85, sequential: float = 0.5,
                      mean_length: float = 5.0, days: float = 3.0, end_ts: float | None = None) -> Interactions:
    """Generate sessions: topic drift with probability 1-stay, neighbour steps with `sequential`."""
    rng = np.random.default_rng(seed)
    topic_of = rng.integers(0, n_topics, n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf_a
    popularity = popularity[rng.permutation(n_items)]  # popularity unrelated to item position
    members = [np.flatnonzero(topic_of == t) for t in range(n_topics)]
    members = [m if len(m) else np.array([t % n_items]) for t, m in enumerate(members)]
    cdfs = [np.cumsum(popularity[m]) / popularity[m].sum() for m in members]
    position = np.zeros(n_items, dtype=np.int64)
    for m in members:
        position[m] = np.arange(len(m))
    topic_weights = np.array([popularity[m].sum() for m in members])
    topic_weights /= topic_weights.sum()

    lengths = np.maximum(2, rng.geometric(1.0 / (mean_length - 1.0), n_sessions) + 1).clip(max=50)
    total = int(lengths.sum())
    uniform, switch, step = rng.random(total), rng.random(total), rng.random(total)
    offsets = rng.choice(np.array([-3, -2, -1, 1, 2, 3]), total)
    first_topics = rng.choice(n_topics, n_sessions, p=topic_weights)
    next_topics = rng.choice(n_topics, total, p=topic_weights)

    def draw(topic: int, u: float) -> int:
        return int(members[topic][min(np.searchsorted(cdfs[topic], u), len(members[topic]) - 1)])

    items = np.empty(total, dtype=np.int64)
    row = 0
    for s in range(n_sessions):
        topic = int(first_topics[s])
        previous = draw(topic, uniform[row])
        items[row] = previous
        for j in range(row + 1, row + int(lengths[s])):
            if switch[j] > stay:
                topic = int(next_topics[j])
                previous = draw(topic, uniform[j])
            elif step[j] < sequential and topic_of[previous] == topic:
                group = members[topic]
                previous = int(group[(position[previous] + offsets[j]) % len(group)])
            else:
                previous = draw(topic, uniform[j])
            items[j] = previous
        row += int(lengths[s])

    end = time.time() - 3600.0 if end_ts is None else end_ts
    starts = np.sort(rng.uniform(end - days * 86_400.0, end, n_sessions))
    gaps = rng.exponential(30.0, total) + 2.0
    session = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)
    first_row = np.repeat(np.cumsum(lengths) - lengths, lengths)
    cum = np.cumsum(gaps)
    ts = starts[session] + cum - cum[first_row]  # first click at the session start
    categories = {FIRST_ITEM_ID + i: int(t) for i, t in enumerate(topic_of)}
    return Interactions(session, items + FIRST_ITEM_ID, ts, categories, name=f"synthetic-{seed}")
