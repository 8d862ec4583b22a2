"""The layer contract (pyproject's [tool.importlinter]) holds, and the API process stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lint_imports_keeps_every_contract():
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in run.stdout


def test_api_process_imports_neither_pandas_feast_nor_training_code():
    """What the static contract says, checked at run time: build the app as `streamrec serve` does
    and list the modules it loaded."""
    probe = ("import json, sys; from serving.app import create_app; from candidates.ranker_model import import_lightgbm;"
             "create_app(); import_lightgbm();"  # what the lifespan adds when the version has a ranker
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = set(json.loads(run.stdout.strip().splitlines()[-1]))
    assert {"serving", "candidates", "lightgbm"} <= loaded
    assert not loaded & {"pandas", "feast", "training", "evaluation", "bench", "cli", "infra"}, loaded
