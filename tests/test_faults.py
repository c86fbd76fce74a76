"""Faults injected as an operator would meet them, against real servers and real processes:
a real ``mlflow server`` killed or frozen mid-training, SIGKILL of ``netsec run`` right after
"registered vN" or while its joblib workers fit, SIGTERM while tuning.

Small data (the synthetic sample), 1-2 candidates, n_iter 2. Timeouts on ``wait`` are hang
guards far above the budget (the same faults took 8+ minutes before the budgets existed).
The measured figures live in bench/bench_faults.py.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from netsec_testing import MlflowServerProcess, NetsecProcess, pid_running

SMALL = (
    "training.candidates=[random_forest, logistic_regression]",
    "training.n_iter=2",
    "training.cv_folds=3",
    "training.n_jobs=2",
)
# A budget small enough that a frozen server fails the step in seconds:
# (max_retries + 1) * request_timeout_seconds + back-off = 2 * 3 + 0.
TIGHT = ("registry.request_timeout_seconds=3", "registry.max_retries=1", "registry.backoff_factor=0")


@pytest.fixture()
def data_csv(tmp_path):
    from netsec_tasks.sample import make_sample

    path = tmp_path / "data.csv"
    make_sample(1200, seed=5).to_csv(path, index=False)
    return path


def runs_by_role(tracking_uri: str) -> dict[str, list]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    out: dict[str, list] = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            out.setdefault(run.data.tags.get("netsec.role", "?"), []).append(run)
    return out


def one_error_line(proc: NetsecProcess, command: str = "run") -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"netsec {command}: ")]
    assert len(errors) == 1, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return errors[0]


def assert_no_workers_left(pids: list[int], guard: float = 60.0) -> None:
    deadline = time.monotonic() + guard
    while any(pid_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if pid_running(p)], "joblib workers outlived their parent"


def forced_training_run(tmp_path, data_csv, *sets: str) -> NetsecProcess:
    """``netsec run --force-retrain`` on ``data_csv`` started in ``tmp_path/work`` with ``sets``
    (``key=value`` config overrides), left running for the test to interrupt."""
    return NetsecProcess(
        tmp_path / "work", "run", "--source-path", str(data_csv), "--force-retrain", sets=sets
    )


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_registry_lost_mid_training_exits_3_and_the_run_ends(make_cfg, tmp_path, data_csv, fault):
    """kill: connection refused from then on; freeze (SIGSTOP): every request hangs until its
    timeout. Either way: one error line naming the store, exit 3, and the MLflow run does not
    stay RUNNING (ended FAILED by the handler, or KILLED by the next run's reconciliation)."""
    from netsec_tasks.reconcile import reconcile

    server = MlflowServerProcess(tmp_path / "mlflow").start()
    try:
        run = forced_training_run(tmp_path, data_csv, *SMALL, *TIGHT, f"registry.tracking_uri={server.uri}")
        run.wait_for(r"tuning \d+ candidates")
        server.signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        assert run.wait(180) == 3, run.stderr[-4000:]
        line = one_error_line(run)
        assert line.startswith("netsec run: error: MLflow tracking store " + server.uri)
        assert "unreachable" in line
        assert_no_workers_left(run.worker_pids())

        if fault == "kill":
            server.start()  # the same store, back up
        else:
            server.signal(signal.SIGCONT)  # it now answers the requests that timed out
        parents = runs_by_role(server.uri)["pipeline"]
        assert len(parents) == 1
        if parents[0].info.status == "RUNNING":  # the handler could not reach the store
            record = reconcile(make_cfg(**{"registry.tracking_uri": server.uri}), by="test")
            assert ("mlflow_run", parents[0].info.run_id, "KILLED") in {
                (i.kind, i.id, i.action) for i in record.items
            }
        statuses = {r.info.status for r in sum(runs_by_role(server.uri).values(), [])}
        assert "RUNNING" not in statuses, statuses
    finally:
        server.stop()


@pytest.mark.slow
def test_kill_after_register_then_the_next_run_decides_the_version(tmp_path, data_csv):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = (*SMALL, f"registry.tracking_uri={uri}")
    first = NetsecProcess(tmp_path / "work", "run", "--source-path", str(data_csv), sets=sets)
    line = first.wait_for(r"registered netsec-phishing v\d+")
    first.proc.send_signal(signal.SIGKILL)
    first.wait(60)
    version = line.rsplit(" v", 1)[1].split()[0]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert "netsec.promotion" not in client.get_model_version("netsec-phishing", version).tags

    second = NetsecProcess(tmp_path / "work", "run", "--source-path", str(data_csv), sets=sets)
    assert second.wait(900) == 0, second.stderr[-4000:]
    tags = client.get_model_version("netsec-phishing", version).tags
    assert tags["netsec.promotion"] in ("promoted", "rejected", "abandoned")
    assert tags["netsec.decided_by"].startswith("pipeline run ")
    summary = json.loads(second.stdout.split("\n\n", 1)[0])  # the JSON before the text lines
    assert [(i["id"], i["action"]) for i in summary["reconciled"] if i["kind"] == "model_version"] == [
        (f"netsec-phishing/{version}", tags["netsec.promotion"])
    ]
    storage = json.loads(second.stdout.split("\n\n", 1)[0])["storage"]
    outcome = json.loads(Path(storage.removeprefix("file://"), "outcome.json").read_text())
    assert outcome["reconciled"] == summary["reconciled"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killed_run_leaves_no_workers_and_no_running_run(tmp_path, data_csv, sig):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = forced_training_run(
        tmp_path,
        data_csv,
        "training.candidates=[random_forest]",
        "training.n_iter=8",
        "training.search=random",
        "training.cv_folds=5",
        "training.n_jobs=2",
        f"registry.tracking_uri={uri}",
    )
    run.wait_for(r"tuning \d+ candidates")
    deadline = time.monotonic() + 120
    while len(run.worker_pids()) < 2 and time.monotonic() < deadline and run.proc.poll() is None:
        time.sleep(0.05)
    workers = run.worker_pids()
    assert len(workers) >= 2, "precondition: the search runs on joblib worker processes"
    run.proc.send_signal(sig)
    rc = run.wait(120)
    assert_no_workers_left(workers)
    (parent,) = runs_by_role(uri)["pipeline"]
    if sig == signal.SIGTERM:
        assert rc == 143
        assert one_error_line(run) == "netsec run: terminated (SIGTERM)"
        assert parent.info.status == "FAILED"
        assert "Terminated" in parent.data.tags["netsec.end_reason"]
    else:
        assert parent.info.status == "RUNNING"  # nobody could end it: the next run will
        rec = NetsecProcess(tmp_path / "work", "reconcile", sets=(f"registry.tracking_uri={uri}",))
        assert rec.wait(300) == 0, rec.stderr[-3000:]
        (parent,) = runs_by_role(uri)["pipeline"]
        assert parent.info.status == "KILLED"
        assert "is gone" in parent.data.tags["netsec.reconcile"]


@pytest.mark.slow
def test_s3_down_at_sync_then_the_next_run_finishes_the_sync(
    make_cfg, tmp_path, data_csv, s3_server, s3_bucket
):
    """moto's S3 behind a TCP gate: run 1 goes as far as register, S3 goes down, its sync fails
    (exit 3); a run while S3 is still down stops at reconcile with exit 3 and commits no
    watermark; once S3 is back, a run that skips training finishes run 1's sync first."""
    from netsec_tasks.drift import check_drift
    from netsec_tasks.errors import SourceUnavailable
    from netsec_tasks.ingest import ingest
    from netsec_tasks.records import RunContext
    from netsec_tasks.registry import production_reference_uri, register
    from netsec_tasks.state import read_state
    from netsec_tasks.storage import storage_for
    from netsec_tasks.sync import is_synced, sync
    from netsec_tasks.train import train
    from netsec_tasks.transform import transform
    from netsec_tasks.validate import validate
    from netsec_testing import TcpGate

    gate = TcpGate(s3_server.port)
    sets = {
        "storage.uri": f"s3://{s3_bucket}/netsec",
        "storage.endpoint_url": gate.url,
        "storage.max_attempts": 2,
        "storage.connect_timeout_seconds": 2,
        "storage.request_timeout_seconds": 5,
        "source.path": str(data_csv),
        "registry.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "registry.artifact_location": str(tmp_path / "mlartifacts"),
        "training.n_jobs": 1,
        # What is under test is the sync, not the promotion floor: this 1,200-row sample's forest
        # reaches only 17% recall at the 1% budget (threshold 0.996 from out-of-fold scores).
        "decision.min_recall": 0.1,
    }
    cfg = make_cfg(**sets)
    cli_sets = (*SMALL, *(f"{k}={v}" for k, v in sets.items()))
    try:
        run1 = RunContext.create(cfg, run_id="first")
        ing = ingest(cfg, run1)
        val = validate(cfg, run1, ing)
        check_drift(cfg, run1, val, reference_uri=production_reference_uri(cfg))
        reg = register(cfg, run1, train(cfg, run1, val, transform(cfg, run1, val)), val)
        assert reg.promoted and reg.version == "1"

        gate.close()
        with pytest.raises(SourceUnavailable, match=gate.url.split("//")[1]):
            sync(cfg, run1, register=reg)

        still_down = NetsecProcess(tmp_path / "work", "run", sets=cli_sets)
        assert still_down.wait(300) == 3, still_down.stderr[-3000:]
        assert "S3 storage at" in one_error_line(still_down)

        gate.open()
        assert not is_synced(cfg, run1)
        assert read_state(storage_for(cfg), ing.source) is None  # no watermark got ahead of run 1
        skip = NetsecProcess(tmp_path / "work", "run", sets=cli_sets)
        assert skip.wait(600) == 0, skip.stderr[-4000:]
        summary = json.loads(skip.stdout.split("\n\n", 1)[0])
        assert summary["outcome"] == "skipped_no_drift"
        assert [(i["kind"], i["id"], i["action"]) for i in summary["reconciled"]] == [
            ("sync", "first", "synced")
        ]
        assert is_synced(cfg, run1)
        keys = {o.uri.rsplit("/netsec/runs/first/", 1)[1] for o in storage_for(cfg).list(run1.storage_uri)}
        assert {"manifest.json", "model/MLmodel", "model/model.skops"} <= keys
        assert read_state(storage_for(cfg), ing.source).run_id == summary["run_id"]
    finally:
        gate.close()
