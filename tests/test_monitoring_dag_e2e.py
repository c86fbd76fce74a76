"""The loop through Airflow (slow): netsec_monitoring sees shifted traffic and the analysts'
verdicts, emits the retraining asset event; Airflow's own scheduler code creates the
asset-triggered netsec_training run; that run learns from the verdicts and records that
monitoring started it, and why.

Airflow on SQLite in a temp AIRFLOW_HOME, each step in a fresh interpreter (Airflow reads its
configuration at import). The monitoring run is ``dag.test()``. The training run is created by
``SchedulerJobRunner._create_dagruns_for_dags``, the scheduler loop's own step that turns queued
asset events into runs (``consumed_asset_events`` attached), and executed by ``dag.test()`` on
that run instead of a new manual one. Serving is the app in this process, scoring into the
JSONL log the monitoring DAG reads; MLflow is SQLite and storage ``file://`` in the work dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netsec_tasks.sample import TARGET, make_sample

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

REPO = Path(__file__).resolve().parent.parent
MARK = "NETSEC_E2E_RESULT "

RUNNER = r"""
import json, sys
from unittest import mock

import airflow.models.dagrun as dagrun_module
from airflow.dag_processing.dagbag import DagBag
from airflow.jobs.job import Job
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
from airflow.models.asset import AssetDagRunQueue, AssetEvent
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from airflow.utils.sqlalchemy import prohibit_commit
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunType

bag = DagBag(dag_folder=sys.argv[1])
out = {}


def xcoms(dag_id, run_id):
    with create_session() as session:
        found = {}
        for x in session.query(XComModel).filter(XComModel.dag_id == dag_id,
                                                 XComModel.run_id == run_id):
            found.setdefault(x.task_id, {})[x.key] = x.value
        return found


mon = bag.dags["netsec_monitoring"].test()
out["monitoring"] = {"run_id": mon.run_id, "state": str(mon.state),
                     "tasks": {ti.task_id: str(ti.state) for ti in mon.get_task_instances()},
                     "xcoms": xcoms("netsec_monitoring", mon.run_id)}
with create_session() as session:
    out["events"] = [{"asset": e.asset.uri, "extra": e.extra, "source_dag_id": e.source_dag_id,
                      "source_run_id": e.source_run_id} for e in session.query(AssetEvent)]
    out["queued_for"] = [q.target_dag_id for q in session.query(AssetDagRunQueue)]

if sys.argv[2] == "train":
    # What the scheduler's loop does with the queued event: an asset-triggered run.
    with create_session() as session, prohibit_commit(session) as guard:
        SchedulerJobRunner(job=Job(), executors=[])._create_dagruns_for_dags(guard, session)
    with create_session() as session:
        runs = [r for r in session.query(DagRun).filter(DagRun.dag_id == "netsec_training")]
        value = lambda v: str(getattr(v, "value", v))
        out["training_runs"] = [{"run_id": r.run_id, "run_type": value(r.run_type),
                                 "triggered_by": value(r.triggered_by),
                                 "consumed": [e.extra for e in r.consumed_asset_events]}
                                for r in runs]
        run = next(r for r in runs if r.run_type == DagRunType.ASSET_TRIGGERED)
        run.state = DagRunState.RUNNING
        run_id = run.run_id

    def the_asset_run(*, dag, session, **_):
        # dag.test() runs this run (with its consumed events) instead of a new manual one.
        dr = session.query(DagRun).filter(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id).one()
        dr.dag = dag
        return dr

    with mock.patch.object(dagrun_module, "get_or_create_dagrun", the_asset_run):
        dr = bag.dags["netsec_training"].test()
    out["training"] = {"run_id": dr.run_id, "state": str(dr.state),
                       "tasks": {ti.task_id: str(ti.state) for ti in dr.get_task_instances()},
                       "xcoms": xcoms("netsec_training", dr.run_id)}
print("NETSEC_E2E_RESULT " + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring_e2e")
    home, work = root / "airflow", root / "work"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NETSEC_", "AIRFLOW", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))
    }
    netsec = {
        "NETSEC_HOME": str(work),
        "NETSEC_TRAINING__CANDIDATES": "[logistic_regression, decision_tree]",
        "NETSEC_TRAINING__N_ITER": "2",
        "NETSEC_TRAINING__CV_FOLDS": "3",
        "NETSEC_TRAINING__N_JOBS": "1",
        "NETSEC_TRAINING__PROGRESS": "false",
        "NETSEC_MONITORING__MIN_LABELS": "30",
    }
    env.update(netsec)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "GIT_PYTHON_REFRESH": "quiet",
        }
    )
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    from netsec_tasks.config import load_config
    from netsec_tasks.pipeline import run_pipeline

    cfg = load_config(REPO / "config" / "pipeline.yaml", environ=netsec)
    assert run_pipeline(cfg, trigger="test").outcome.production_after == "1"
    return env, cfg


def _run(env, mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(REPO / "dags"), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and lines, f"runner failed ({proc.returncode}):\n{out[-6000:]}"
    return json.loads(lines[-1][len(MARK) :])


def _serve(cfg, traffic, n_verdicts: int) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    settings = Settings(
        mlflow_tracking_uri=cfg.registry.tracking_uri,
        log_dir=cfg.monitoring.log_dir,
        log_flush_seconds=0.2,
        inference_threads=1,
    )
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        records = [
            {k: int(v) for k, v in r.items()}
            for r in traffic.drop(columns=[TARGET]).to_dict(orient="records")
        ]
        preds = client.post("/predict", json={"records": records}).json()["predictions"]
        body = [
            {"prediction_id": p["prediction_id"], "label": int(y), "source": "soc"}
            for p, y in zip(preds[:n_verdicts], traffic[TARGET][:n_verdicts])
        ]
        assert client.post("/feedback", json=body).status_code == 200


def test_same_distribution_traffic_emits_no_asset_event(loop):
    env, cfg = loop
    _serve(cfg, make_sample(400, seed=201), n_verdicts=40)
    r = _run(env, "monitor")
    assert r["monitoring"]["state"] == "success", r
    tasks = r["monitoring"]["tasks"]
    assert tasks == {
        "feedback_to_training": "success",
        "monitor": "success",
        "request_retraining": "skipped",
        "commit": "success",
        "decide_challenger": "skipped",  # no challenger: registry.shadow is off
    }
    assert r["events"] == [] and r["queued_for"] == []
    monitor = r["monitoring"]["xcoms"]["monitor"]["return_value"]
    assert monitor["drift_tested"] and not monitor["trigger"]


def test_shifted_traffic_starts_training_by_asset_and_the_outcome_says_monitoring(loop):
    env, cfg = loop
    _serve(cfg, make_sample(600, seed=202, shift=0.8), n_verdicts=60)
    r = _run(env, "train")
    mon = r["monitoring"]
    assert mon["tasks"]["request_retraining"] == "success" and mon["tasks"]["commit"] == "success"
    monitor = mon["xcoms"]["monitor"]["return_value"]
    assert monitor["drift_detected"] and monitor["trigger"]
    feedback = mon["xcoms"]["feedback_to_training"]["return_value"]
    assert feedback["appended"] == 60  # this run's verdicts (the first run's 40 already there)
    assert feedback["already_present"] == 40

    # One event on the asset netsec_training is scheduled on, carrying the evidence.
    (event,) = r["events"]
    assert event["asset"] == "x-netsec://retraining/netsec-phishing"
    assert event["source_dag_id"] == "netsec_monitoring"
    assert event["extra"]["reason"] == monitor["trigger_reason"]
    assert event["extra"]["monitoring_run_id"] == mon["run_id"]
    assert r["queued_for"] == ["netsec_training"]

    # The scheduler made an asset-triggered run that consumed it.
    (run,) = r["training_runs"]
    assert (run["run_type"], run["triggered_by"]) == ("asset_triggered", "asset")
    assert run["consumed"] == [event["extra"]]

    training = r["training"]
    assert training["state"] == "success", training
    assert training["tasks"]["train"] == "success" and training["tasks"]["skip_training"] == "skipped"
    outcome = training["xcoms"]["record_outcome"]["return_value"]
    assert outcome["trigger"] == "monitoring"
    assert outcome["trigger_reason"].startswith(monitor["trigger_reason"])
    assert mon["run_id"] in outcome["trigger_reason"]
    assert outcome["branch_reason"].startswith(
        "Retrained because monitoring requested it: traffic data-set drift"
    )
    assert outcome["outcome"] in {"promoted", "kept_production"}
    assert training["xcoms"]["ingest"]["run"]["trigger"] == "monitoring"

    # The training run learned from the verdicts: its snapshot holds the 100 verdict rows.
    ingest = training["xcoms"]["ingest"]["return_value"]
    assert ingest["rows"] == 5000 + 100
