"""The whole loop on a running Airflow (slow): ``airflow standalone`` (API server, scheduler,
DAG processor, triggerer, LocalExecutor on SQLite) and serving under uvicorn, driven through
their ports by ``scripts/loop_check.py`` (the step the compose scenario runs): shifted traffic
and verdicts -> netsec_monitoring requests a retraining -> the scheduler starts
netsec_training by itself -> it promotes a new version -> serving swaps to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from netsec_testing import REPO, free_port, load_script, serving_command, stop_session, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

BIN = Path(sys.executable).parent
PASSWORD = "loop-check-password"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    api_port, serving_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NETSEC_", "AIRFLOW", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))
    }
    env.update(
        {
            "PATH": f"{BIN}:{env.get('PATH', '')}",  # standalone starts its parts as `airflow ...`
            "NETSEC_HOME": str(root / "work"),
            "NETSEC_CONFIG": str(REPO / "config" / "pipeline.yaml"),
            "NETSEC_TRAINING__CANDIDATES": "[logistic_regression, decision_tree]",
            "NETSEC_TRAINING__N_ITER": "2",
            "NETSEC_TRAINING__CV_FOLDS": "3",
            "NETSEC_TRAINING__N_JOBS": "1",
            "NETSEC_TRAINING__PROGRESS": "false",
            # No cron here: only the loop starts runs (compose keeps the nightly and hourly crons).
            "NETSEC_DAG__SCHEDULE": "null",
            "NETSEC_MONITORING__SCHEDULE": "null",
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "NETSEC_SERVING_POLL_INTERVAL_SECONDS": "3",
            "GIT_PYTHON_REFRESH": "quiet",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    (root / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
    (root / "airflow").mkdir()
    trained = subprocess.run(
        [str(BIN / "netsec"), "run"], env=env, cwd=root, capture_output=True, text=True, timeout=900
    )
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]

    procs: list[subprocess.Popen] = []
    try:
        for name, cmd in (
            ("airflow", [str(BIN / "airflow"), "standalone"]),
            ("serving", serving_command(serving_port)),
        ):
            log = open(root / f"{name}.log", "wb")
            procs.append(
                subprocess.Popen(
                    cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        wait_for_port(serving_port, 120, procs[1])
        wait_for_port(api_port, 300, procs[0])
        deadline = time.monotonic() + 300
        while httpx.get(f"http://127.0.0.1:{api_port}/api/v2/monitor/health").status_code != 200:
            assert time.monotonic() < deadline, (root / "airflow.log").read_text()[-3000:]
            time.sleep(2)
        yield {
            "serving": f"http://127.0.0.1:{serving_port}",
            "airflow": f"http://127.0.0.1:{api_port}",
            "root": root,
        }
    finally:
        for proc in procs:
            stop_session(proc)


def test_loop_check_drives_drift_to_a_promoted_version_served(stack):
    loop_check = load_script("loop_check")
    lines: list[str] = []
    try:
        summary = loop_check.run_loop(
            stack["serving"],
            stack["airflow"],
            "admin",
            PASSWORD,
            rows=600,
            verdicts=600,
            timeout=900,
            say=lines.append,
        )
    except loop_check.LoopFailed as exc:
        pytest.fail(
            f"{exc}\n"
            + "\n".join(lines)
            + "\n--- airflow log:\n"
            + (stack["root"] / "airflow.log").read_text(errors="replace")[-4000:]
        )
    assert summary["monitoring"]["tasks"]["request_retraining"] == "success"
    assert summary["monitoring"]["verdict_rows_appended"] == 600
    training = summary["training"]
    assert training["trigger"] == "monitoring"
    assert summary["monitoring"]["run_id"] in training["trigger_reason"]
    assert training["snapshot_rows"] == 5000 + 600  # the sample, and the verdict rows
    assert training["outcome"] == "promoted"
    assert summary["production_after"] == training["model_version"] != summary["production_before"]
    # Serving answers with the new version, and its page links the same /metrics.
    model = httpx.get(stack["serving"] + "/model").json()
    assert model["version"] == training["model_version"]
