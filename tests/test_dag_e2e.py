"""The DAG ``netsec_training`` end to end with real services (slow).

Airflow on SQLite in a temp AIRFLOW_HOME (``airflow db migrate`` once), each DAG run with
``dag.test(run_conf=...)`` in a fresh interpreter (Airflow reads its configuration at import,
so the pytest process never imports it). Ingestion reads the nx-27017 MongoDB-wire server
through the ``netsec_mongo`` connection (AIRFLOW_CONN_NETSEC_MONGO, JSON form), sync writes to
moto's S3 server through ``netsec_s3`` (endpoint_url in the extra), MLflow is SQLite in the
work dir. Training is kept cheap: 2 candidates, n_iter 2, 3 folds, ~1000 rows.

The scenario runs in file order and each step builds on the previous one:
run 1 (no Production) promotes v1 -> run 2 (same data) skips -> run 3 (shifted rows) retrains
-> run 4 (forced) retrains -> run 5 (forced, high margin) keeps Production -> faults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netsec_testing import free_port

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "netsec_training"
MODEL = "netsec-phishing"
BUCKET = "netsec-e2e"
MARK = "NETSEC_E2E_RESULT "
API_PASSWORD = "e2e-admin-password"

# Runs one DAG run in a fresh interpreter and prints what the test checks as one JSON line.
RUNNER = r"""
import json, os, shutil, sys, tempfile
from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.session import create_session

dag = DagBag(dag_folder=sys.argv[1]).dags["netsec_training"]
# Every task runs in its own empty work directory, removed when it ends, as on Celery workers on
# different machines: only storage (moto's S3), MongoDB and MLflow are shared.
shared_home, homes = os.environ["NETSEC_HOME"], []


def private_home(task_id, callable_):
    def run_in_private_home(*args, **kwargs):
        for earlier in homes:  # whatever an earlier task left on "its machine" is gone
            shutil.rmtree(earlier["home"], ignore_errors=True)
        home = tempfile.mkdtemp(prefix=f"netsec-task-{task_id}-")
        homes.append({"task": task_id, "home": home, "files": os.listdir(home)})
        os.environ["NETSEC_HOME"] = home
        try:
            return callable_(*args, **kwargs)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            os.environ["NETSEC_HOME"] = shared_home
    return run_in_private_home


for task in dag.tasks:
    if getattr(task, "python_callable", None) is not None:
        task.python_callable = private_home(task.task_id, task.python_callable)
dr = dag.test(run_conf=json.loads(sys.argv[2]))
os.environ["NETSEC_HOME"] = shared_home
tis = dr.get_task_instances()
with create_session() as session:
    xcoms = {}
    for x in session.query(XComModel).filter(XComModel.dag_id == dag.dag_id,
                                             XComModel.run_id == dr.run_id):
        xcoms.setdefault(x.task_id, {})[x.key] = x.value
# Extra links as the API server computes them: from the deserialized DAG and the XCom table.
sdag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
links = {}
for ti in tis:
    op = sdag.get_task(ti.task_id)
    for name in op.extra_links:
        links[f"{ti.task_id}:{name}"] = op.get_extra_links(ti, name)
print("NETSEC_E2E_RESULT " + json.dumps({
    "run_id": dr.run_id, "state": str(dr.state),
    "tasks": {ti.task_id: str(ti.state) for ti in tis},
    "tries": {ti.task_id: ti.try_number for ti in tis},
    "xcoms": xcoms, "links": links, "homes": homes}, default=str))
"""


# The Airflow API server app in process: the plugin's drift route, anonymous and with a token.
API_CHECK = r"""
import json, sys
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app

path, password = sys.argv[1], sys.argv[2]
with TestClient(create_app()) as client:
    anonymous = client.get(path).status_code
    token = client.post("/auth/token", json={"username": "admin", "password": password}).json()
    auth = {"Authorization": "Bearer " + token["access_token"]}
    ok = client.get(path, headers=auth)
    missing = client.get(path.rsplit("/", 1)[0] + "/no_such_run", headers=auth).status_code
print("NETSEC_E2E_RESULT " + json.dumps({"anonymous": anonymous, "status": ok.status_code,
      "type": ok.headers.get("content-type"), "body": ok.text, "missing": missing}))
"""


class Stack:
    """Shared state of the scenario: environment, work dir, services."""

    def __init__(self, home: Path, work: Path, env: dict[str, str], mongo_uri: str, s3):
        self.home, self.work, self.env, self.mongo_uri, self.s3 = home, work, env, mongo_uri, s3
        self.results: list[dict] = []

    def run(self, conf: dict | None = None, env: dict[str, str] | None = None) -> dict:
        result = self.python(RUNNER, str(REPO / "dags"), json.dumps(conf or {}), env=env)
        self.results.append(result)
        return result

    def python(self, code: str, *args: str, env: dict[str, str] | None = None) -> dict:
        """Run ``code`` in a fresh interpreter with the stack's environment; its result line."""
        # A file, not -c: serialising the DAG reads the source of the task hooks RUNNER sets.
        script = self.home / f"script-{abs(hash(code))}.py"
        script.write_text(code, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(script), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=900,
        )
        out = proc.stdout + proc.stderr
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
        assert proc.returncode == 0 and lines, f"runner failed ({proc.returncode}):\n{out[-6000:]}"
        result = json.loads(lines[-1][len(MARK) :])
        result["log"] = out
        return result

    def cfg(self, **overrides):
        from netsec_tasks.config import load_config

        environ = {k: v for k, v in self.env.items() if k.startswith("NETSEC_")}
        return load_config(REPO / "config" / "pipeline.yaml", environ=environ, overrides=overrides)

    def push(self, frame) -> int:
        """Load rows into the collection the way operators do (`netsec push-data`)."""
        from netsec_tasks.sources.mongo import push_data

        csv = self.work.parent / f"push-{len(list(self.work.parent.glob('push-*.csv')))}.csv"
        frame.to_csv(csv, index=False)
        cfg = self.cfg(**{"source.mongo.uri": self.mongo_uri})
        return push_data(csv, cfg).inserted

    def mlflow(self):
        from mlflow.tracking import MlflowClient

        uri = self.cfg().registry.tracking_uri
        # registry_uri too: without it MlflowClient falls back to the process-wide registry URI.
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def production(self) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.mlflow().get_model_version_by_alias(MODEL, "production").version)
        except MlflowException:
            return None

    def versions(self) -> list[str]:
        return sorted(
            (str(mv.version) for mv in self.mlflow().search_model_versions(f"name='{MODEL}'")), key=int
        )

    def bucket_keys(self) -> list[str]:
        pages = self.s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def dag_runs(self) -> list[dict]:
        path = self.work / "dag_runs.jsonl"
        return [json.loads(ln) for ln in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture(scope="module")
def stack(tmp_path_factory, mongo_server, s3_server):
    import pymongo

    root = tmp_path_factory.mktemp("dag_e2e")
    home, work = root / "airflow", root / "work"
    home.mkdir()
    db = "netsec_dag_e2e"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NETSEC_", "AIRFLOW", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW_CONN_NETSEC_MONGO": json.dumps(
                {"conn_type": "mongo", "host": "127.0.0.1", "port": mongo_server.port, "schema": db}
            ),
            "AIRFLOW_CONN_NETSEC_S3": json.dumps(
                {
                    "conn_type": "aws",
                    "login": "testing",
                    "password": "testing",
                    "extra": {"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"},
                }
            ),
            "NETSEC_HOME": str(work),
            "NETSEC_SOURCE__KIND": "mongo",
            "NETSEC_SOURCE__MONGO__DATABASE": db,
            "NETSEC_SOURCE__MONGO__SERVER_SELECTION_TIMEOUT_MS": "1000",
            "NETSEC_STORAGE__URI": f"s3://{BUCKET}/netsec",
            # The shared MLflow "server": outside every task's private work dir.
            "NETSEC_REGISTRY__TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
            "NETSEC_REGISTRY__ARTIFACT_LOCATION": str(root / "mlflow" / "artifacts"),
            "NETSEC_TRAINING__CANDIDATES": "[random_forest, logistic_regression]",
            "NETSEC_TRAINING__N_ITER": "2",
            "NETSEC_TRAINING__CV_FOLDS": "3",
            "NETSEC_TRAINING__N_JOBS": "1",
            "NETSEC_TRAINING__PROGRESS": "false",
            # One quick retry, so the unreachable-Mongo case shows the retry without waiting.
            "NETSEC_DAG__RETRIES": "1",
            "NETSEC_DAG__RETRY_DELAY_SECONDS": "1",
            "NETSEC_DAG__MAX_RETRY_DELAY_SECONDS": "2",
            "GIT_PYTHON_REFRESH": "quiet",
            # Simple auth manager with a known password, for the API-server check of the drift route.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
        }
    )
    (root / "passwords.json").write_text(json.dumps({"admin": API_PASSWORD}))
    (root / "mlflow").mkdir()
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    s3_server.client().create_bucket(Bucket=BUCKET)
    yield Stack(home, work, env, mongo_server.uri.rsplit("/", 1)[0] + f"/{db}", s3_server)
    pymongo.MongoClient(mongo_server.uri).drop_database(db)


def _outcome(result: dict) -> dict:
    return result["xcoms"]["record_outcome"]["return_value"]


TRAIN_PATH = {"transform", "train", "register", "sync"}


def test_run1_no_production_model_trains_registers_promotes_and_syncs(stack):
    from netsec_tasks.sample import make_sample

    assert stack.push(make_sample(1000, seed=11)) > 900
    r = stack.run()
    assert r["state"] == "success", r["log"][-5000:]
    assert {t: r["tasks"][t] for t in TRAIN_PATH | {"record_outcome"}} == dict.fromkeys(
        TRAIN_PATH | {"record_outcome"}, "success"
    )
    assert r["tasks"]["skip_training"] == "skipped"
    assert r["xcoms"]["check_drift"]["branch_reason"] == "Retrained because there is no Production model yet."
    assert r["xcoms"]["check_drift"]["retrain"] is True  # the branch, as record_outcome reads it
    outcome = _outcome(r)
    assert outcome["outcome"] == "promoted" and outcome["production_after"] == "1"
    assert outcome["production_before"]["version"] is None and outcome["candidate"]["version"] == "1"
    # Decided at an operating point chosen for the 1% budget on training rows: the test FPR is not
    # over it, and recall clears decision.min_recall; the threshold is on the version too.
    candidate = outcome["candidate"]
    point = candidate["operating_point"]
    assert point["fpr_low"] <= 0.01 and point["recall"] >= 0.5 and candidate["metrics"]["roc_auc"] > 0.9
    rows = outcome["rows"]
    assert rows["documents_read"] == rows["new_batch"] == rows["snapshot"] > 900
    assert rows["train"] + rows["test"] + rows["quarantined"] <= rows["snapshot"]
    # The first task reconciled what earlier runs left: nothing, on a fresh registry.
    assert r["tasks"]["reconcile"] == "success" and outcome["reconciled"] == []
    assert r["xcoms"]["reconcile"]["return_value"] == {"items": []}
    assert stack.production() == "1"
    # Each task had its own empty work dir: the hand-off went through storage alone.
    homes = {h["home"] for h in r["homes"]}
    # every PythonOperator: reconcile, ingest, validate, check_drift, the train path, record_outcome
    assert len(homes) == len(r["homes"]) == len(TRAIN_PATH) + 5
    assert [h for h in r["homes"] if h["files"] or Path(h["home"]).exists()] == []
    # The Production version carries the run's lineage.
    mv = stack.mlflow().get_model_version(MODEL, "1")
    assert mv.tags["netsec.pipeline_run_id"] == r["run_id"]
    assert (
        float(mv.tags["netsec.threshold"]) == point["threshold"]
        and mv.tags["netsec.objective"] == "recall_at_budget"
    )
    # Sync went to moto's S3 through the netsec_s3 connection.
    sync = r["xcoms"]["sync"]["return_value"]
    assert sync["destination"].startswith(f"s3://{BUCKET}/netsec/runs/")
    run_prefix = sync["destination"][len(f"s3://{BUCKET}/") :] + "/"
    keys = [k for k in stack.bucket_keys() if k.startswith(run_prefix)]
    # Every object of the run is in the manifest, but outcome.json and summary.json, written by
    # record_outcome after the sync.
    assert len(set(keys) - {run_prefix + "outcome.json", run_prefix + "summary.json"}) == sync["objects"] > 0
    assert {run_prefix + "outcome.json", run_prefix + "summary.json"} <= set(keys)
    assert {
        run_prefix + k
        for k in ("manifest.json", "model/model.skops", "validate/train.parquet", "ingest/new_batch.parquet")
    } <= set(keys)
    # State shared across runs is in storage too.
    assert any(k.startswith("netsec/state/") for k in stack.bucket_keys())
    # XCom stays small: records only, no frames or models.
    for task, values in r["xcoms"].items():
        assert len(json.dumps(values)) < 64_000, task
    # Extra links point at this run's MLflow run and model version.
    train = r["xcoms"]["train"]["return_value"]
    assert r["links"]["train:MLflow run"].endswith(
        f"/#/experiments/{train['experiment_id']}/runs/{train['mlflow_run_id']}"
    )
    assert r["links"]["register:MLflow model version"].endswith(f"/#/models/{MODEL}/versions/1")
    assert "/netsec/drift/netsec_training/" in r["links"]["check_drift:Drift report"]
    assert r["links"]["ingest:MLflow run"] == ""
    # The listener recorded the run with its outcome.
    last = stack.dag_runs()[-1]
    assert (last["run_id"], last["state"], last["outcome"]["outcome"]) == (r["run_id"], "success", "promoted")
    assert last["failed_tasks"] == []
    # dag_runs.jsonl carries the same record as outcome.json and the XCom, field for field.
    assert last["outcome"] == outcome


def test_drift_report_link_serves_the_report_to_authenticated_users_only(stack):
    """The "Drift report" link of run 1, through the real API server app and its auth."""
    from urllib.parse import urlsplit

    assert stack.results, "runs after run 1 of the scenario"
    run1 = stack.results[0]
    path = urlsplit(run1["links"]["check_drift:Drift report"]).path
    r = stack.python(API_CHECK, path, API_PASSWORD)
    assert r["anonymous"] == 401
    assert r["status"] == 200 and r["type"].startswith("text/html")
    html_uri = run1["xcoms"]["check_drift"]["drift"]["html_uri"]
    assert html_uri.startswith(f"s3://{BUCKET}/netsec/runs/")
    key = html_uri[len(f"s3://{BUCKET}/") :]
    body = stack.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read().decode("utf-8")
    assert r["body"] == body
    assert r["missing"] == 404


def test_run2_same_data_no_drift_skips_training(stack):
    versions = stack.versions()
    r = stack.run()
    assert r["state"] == "success", r["log"][-5000:]
    assert r["tasks"]["skip_training"] == "success"
    assert {r["tasks"][t] for t in TRAIN_PATH} == {"skipped"}
    assert r["tasks"]["record_outcome"] == "success"
    drift = r["xcoms"]["check_drift"]["drift"]
    assert drift["has_reference"] and not drift["drift_detected"]
    assert r["xcoms"]["check_drift"]["retrain"] is False
    outcome = _outcome(r)
    assert outcome["outcome"] == "skipped_no_drift" and outcome["candidate"] is None
    # Nothing new since run 1: the reason says the batch is empty, not "0% of 0 columns".
    assert outcome["reason"] == r["xcoms"]["check_drift"]["branch_reason"] + " Production v1 stays."
    assert "new batch is empty" in outcome["reason"] and "%" not in outcome["reason"]
    assert outcome["rows"]["new_batch"] == 0 and outcome["production_after"] == "1"
    assert stack.versions() == versions and stack.production() == "1"


def test_run3_shifted_rows_drift_and_retrain(stack):
    from netsec_tasks.sample import make_sample

    assert stack.push(make_sample(500, seed=12, shift=0.8)) > 400
    versions = stack.versions()
    r = stack.run()
    assert r["state"] == "success", r["log"][-5000:]
    drift = r["xcoms"]["check_drift"]["drift"]
    assert drift["drift_detected"] and drift["drifted_columns"]
    reason = r["xcoms"]["check_drift"]["branch_reason"]
    assert "drift" in reason and drift["drifted_columns"][0] in reason
    assert {r["tasks"][t] for t in TRAIN_PATH} == {"success"}
    assert r["tasks"]["skip_training"] == "skipped"
    assert len(stack.versions()) == len(versions) + 1
    assert _outcome(r)["outcome"] in {"promoted", "kept_production"}


def test_run4_force_retrain_without_drift(stack):
    versions = stack.versions()
    r = stack.run({"force_retrain": True})
    assert r["state"] == "success", r["log"][-5000:]
    drift = r["xcoms"]["check_drift"]["drift"]
    assert not drift["drift_detected"]  # nothing new since run 3
    assert r["xcoms"]["check_drift"]["branch_reason"].startswith("Retrained because force_retrain was set")
    assert {r["tasks"][t] for t in TRAIN_PATH} == {"success"}
    assert len(stack.versions()) == len(versions) + 1


def test_run5_worse_than_production_by_the_margin_keeps_production(stack):
    production = stack.production()
    versions = stack.versions()
    r = stack.run({"force_retrain": True, "promotion_margin": 0.5})
    assert r["state"] == "success", r["log"][-5000:]
    register = r["xcoms"]["register"]["return_value"]
    assert register["promoted"] is False and register["version"] not in (None, production)
    outcome = _outcome(r)
    assert outcome["outcome"] == "kept_production"
    # Production and the rejected candidate each with their own version and metrics.
    assert outcome["production_before"]["version"] == outcome["production_after"] == production
    assert outcome["candidate"]["version"] == register["version"] != production
    # The promotion score is each model's recall at its own operating point on the same rows.
    assert outcome["production_before"]["metrics"]["recall"] == pytest.approx(register["production_score"])
    assert outcome["production_before"]["operating_point"]["recall"] == pytest.approx(
        register["production_score"]
    )
    assert outcome["candidate"]["score"] == pytest.approx(register["new_score"])
    assert outcome["rows"]["production_rows_in_test"] == 0
    last = stack.dag_runs()[-1]
    assert last["run_id"] == r["run_id"] and last["outcome"] == outcome
    assert stack.production() == production
    assert len(stack.versions()) == len(versions) + 1


def test_mongo_unreachable_retries_then_fails_naming_the_connection(stack):
    versions, production = stack.versions(), stack.production()
    dead = json.dumps(
        {"conn_type": "mongo", "host": "127.0.0.1", "port": free_port(), "schema": "netsec_dag_e2e"}
    )
    r = stack.run(env={"AIRFLOW_CONN_NETSEC_MONGO": dead})
    assert r["state"] == "failed"
    assert r["tasks"]["ingest"] == "failed"
    assert r["tries"]["ingest"] == 2  # first try + NETSEC_DAG__RETRIES=1
    assert {r["tasks"][t] for t in ("validate", "train", "register", "record_outcome")} == {"upstream_failed"}
    assert "Airflow connection 'netsec_mongo'" in r["log"]
    # The failure callback said which task failed and why.
    assert "netsec_training: task ingest failed" in r["log"]
    assert stack.versions() == versions and stack.production() == production
    last = stack.dag_runs()[-1]
    assert (last["run_id"], last["state"], last["failed_tasks"]) == (r["run_id"], "failed", ["ingest"])
    assert last["outcome"] is None


def test_validation_failure_stops_the_run_before_training(stack):
    import pymongo

    from netsec_tasks.sample import FEATURE_NAMES

    versions, production = stack.versions(), stack.production()
    # 400 rows with a value outside having_IP_Address's allowed set: far above max_invalid_share.
    bad = [{**dict.fromkeys(FEATURE_NAMES, 1), "having_IP_Address": 7, "Result": 1} for _ in range(400)]
    client = pymongo.MongoClient(stack.mongo_uri)
    client.get_default_database()["phishing"].insert_many(bad)
    client.close()
    r = stack.run({"force_retrain": True})
    assert r["state"] == "failed"
    assert r["tasks"]["ingest"] == "success"
    assert r["tasks"]["validate"] == "failed"
    assert r["tries"]["validate"] == 1
    assert {r["tasks"][t] for t in ("check_drift", "transform", "train", "register")} == {"upstream_failed"}
    assert "ValidationFailed" in r["log"]
    assert stack.versions() == versions and stack.production() == production


def test_local_runner_script_on_the_embedded_defaults(tmp_path):
    """scripts/airflow_local.py from scratch: file source (synthetic sample), file:// storage."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NETSEC_", "AIRFLOW", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))
    }
    env["NETSEC_TRAINING__N_JOBS"] = "1"
    conf = {"n_iter": 2, "cv_folds": 3, "candidates": ["logistic_regression", "decision_tree"]}

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        return proc

    proc = run(
        sys.executable,
        str(REPO / "scripts" / "airflow_local.py"),
        *("--home", str(tmp_path / "w"), "--json", "-c", json.dumps(conf)),
    )
    summary = json.loads(proc.stdout)
    assert summary["state"] == "success"
    assert summary["outcome"]["outcome"] == "promoted"
    assert summary["production"]["version"] == "1"
    assert summary["production"]["metrics"]["test_f1"] > 0.8
    assert summary["airflow_ui"].startswith(f"NETSEC_HOME={tmp_path / 'w'} ")
    assert "scripts/airflow_ui.py" in summary["airflow_ui"]  # standalone on loopback only
    assert "mlflow ui --backend-store-uri sqlite:///" in summary["mlflow_ui"]
    assert "--host 127.0.0.1" in summary["mlflow_ui"]
    # airflow.cfg now points at the repo, so `airflow standalone` on that home sees the same DAG.
    cfg_text = (tmp_path / "w" / "airflow" / "airflow.cfg").read_text()
    assert f"dags_folder = {REPO / 'dags'}\n" in cfg_text
    assert "load_examples = False\n" in cfg_text
    assert list((tmp_path / "w" / "storage").rglob("*")), "file:// storage is empty"

    # The in-process run (`netsec run`) calls the same step functions as the DAG's tasks: on the
    # same data (the synthetic sample) with the same settings, in a home of its own, it writes
    # the same artifacts, and the same branch decision (netsec_tasks/pipeline.py's table).
    env.update(
        NETSEC_HOME=str(tmp_path / "w2"),
        NETSEC_TRAINING__N_ITER="2",
        NETSEC_TRAINING__CV_FOLDS="3",
        NETSEC_TRAINING__CANDIDATES="[logistic_regression, decision_tree]",
    )
    run(str(Path(sys.executable).parent / "netsec"), "run")

    def run_artifacts(home: Path) -> tuple[Path, list[str]]:
        (run_dir,) = (home / "storage" / "runs").iterdir()
        return run_dir, sorted(f.relative_to(run_dir).as_posix() for f in run_dir.rglob("*") if f.is_file())

    dag_dir, by_dag = run_artifacts(tmp_path / "w")
    cli_dir, by_cli = run_artifacts(tmp_path / "w2")
    assert by_dag == by_cli
    assert {"drift/branch.txt", "summary.json", "outcome.json", "manifest.json"} <= set(by_dag)
    branch = (dag_dir / "drift" / "branch.txt").read_text()
    assert branch == (cli_dir / "drift" / "branch.txt").read_text()
    assert branch == "retrain: Retrained because there is no Production model yet.\n"
    dag_summary, cli_summary = (json.loads((d / "summary.json").read_text()) for d in (dag_dir, cli_dir))
    assert dag_summary.keys() == cli_summary.keys()
    assert (dag_summary["outcome"], dag_summary["branch"]) == (cli_summary["outcome"], cli_summary["branch"])
