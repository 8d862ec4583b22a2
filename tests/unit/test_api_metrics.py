"""The API's /metrics shows this process's counts unless prometheus_client really runs in
multiprocess mode: the environment variable alone (set later by `import feast`) does not switch it."""

from __future__ import annotations

import os
import subprocess
import sys

# This test process may have imported feast, which sets these for itself and its children.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}


def test_exposition_ignores_a_multiprocess_dir_set_after_prometheus_client_was_imported(tmp_path) -> None:
    code = f"""
import os
from serving import metrics
metrics.EVENTS.labels("accepted").inc(7)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}  # what `import feast` does
text = metrics.exposition().decode()
assert 'streamrec_api_events_total{{outcome="accepted"}} 7.0' in text, text
"""
    done = subprocess.run([sys.executable, "-c", code], env=CLEAN_ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_exposition_sums_the_files_in_real_multiprocess_mode(tmp_path) -> None:
    code = """
from serving import metrics
metrics.EVENTS.labels("accepted").inc(3)
print(metrics.exposition().decode())
"""
    env_dir = tmp_path / "mp"
    env_dir.mkdir()
    env = {**CLEAN_ENV, "PROMETHEUS_MULTIPROC_DIR": str(env_dir)}
    for _ in range(2):  # two "workers", one folder
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=60)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert 'streamrec_api_events_total{outcome="accepted"} 9.0' in done.stdout, done.stdout
