"""Carve a validation dataset out of an SR-GNN folder's TRAINING sessions (its test pairs untouched).

The last 10% of training sessions (file order, the loader's clock) become `test_pairs.tsv.gz`,
prepared as the SR-GNN split prepares its test set (items unseen in the remaining sessions removed,
sessions of length ≥ 2, every prefix → next item); the other 90% are `train_sessions.txt.gz`. Tuning a
serving knob on `streamrec evaluate --dataset <this folder>` never looks at the real test pairs.

    python scripts/srgnn_validation_split.py /work/shared/data/diginetica_srgnn /tmp/diginetica_valid
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path


def main(source: Path, target: Path, valid_share: float = 0.1) -> None:
    with gzip.open(source / "train_sessions.txt.gz", "rt") as handle:
        sessions = [line.split() for line in handle if line.strip()]
    cut = len(sessions) - int(round(len(sessions) * valid_share))
    train, valid = sessions[:cut], sessions[cut:]
    known = {item for session in train for item in session}
    target.mkdir(parents=True, exist_ok=True)
    with gzip.open(target / "train_sessions.txt.gz", "wt") as out:
        out.writelines(" ".join(session) + "\n" for session in train)
    pairs = 0
    with gzip.open(target / "test_pairs.tsv.gz", "wt") as out:
        out.write("prefix\tlabel\n")
        for session in valid:
            kept = [item for item in session if item in known]
            for end in range(1, len(kept)):
                out.write(" ".join(kept[:end]) + "\t" + kept[end] + "\n")
                pairs += 1
    print(f"{target}: {len(train):,} training sessions, {pairs:,} validation pairs from {len(valid):,} sessions")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
