"""The local twin of docker-compose.yaml (scripts/local_stack.py), end to end (slow).

The script starts the compose services as loopback processes (PostgreSQL, Redis, nx-27017,
moto, MLflow, Airflow 3 with two Celery workers, serving), drives the users' paths and exits
non-zero naming the step that failed; this test runs it as a user would and reads what it
reports. It needs root or the Debian packages postgresql, redis-server and chromium (the
script installs them with apt-get when it runs as root; `scripts/setup.sh --test` does too).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

REPO = Path(__file__).resolve().parent.parent
# Far above a normal run (about 4 minutes here); the script bounds every wait itself.
BUDGET_SECONDS = 1800


@pytest.mark.timeout(BUDGET_SECONDS + 120)
def test_local_twin_of_the_compose_stack(tmp_path):
    out = tmp_path / "out"
    log = tmp_path / "local_stack.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "local_stack.py"), "--out", str(out)],
                                cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            code = proc.wait(BUDGET_SECONDS)
        except subprocess.TimeoutExpired:
            # SIGTERM, so the script still tears the stack down.
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(120)
    output = log.read_text(encoding="utf-8", errors="replace")
    assert code == 0, f"local_stack.py exited with {code}:\n{output[-12000:]}"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    for name in ("airflow", "serving"):
        png = Path(summary["screenshots"][name])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size > 10_000, f"{png} is nearly empty"
    # What the screenshots show, as text: the DAG page with its tasks, the page's scored rows.
    airflow_text = (out / "airflow_dag.txt").read_text()
    assert "netsec_training" in airflow_text and "record_outcome" in airflow_text
    assert "Sign In" not in airflow_text
    assert "Scored" in (out / "serving.txt").read_text()
    # Both Celery workers ran tasks; every DAG run of the session succeeded.
    assert len(summary["worker_hostnames"]) == 2 and all(summary["worker_hostnames"].values())
    assert summary["dag_runs"] and set(summary["dag_runs"].values()) == {"success"}
    assert summary["bucket"]["objects"] > 1 and summary["bucket"]["mlflow_models"] >= 1
    assert summary["production_version"]
