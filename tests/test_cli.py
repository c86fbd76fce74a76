"""The `netsec` command as a user runs it: real subprocesses, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from netsec_testing import SMALL_BUDGET, free_port, netsec


def _copies(root: Path, original: Path) -> list[Path]:
    """Every file under ``root`` with the same bytes as ``original``."""
    data = original.read_bytes()
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.stat().st_size == len(data) and p.read_bytes() == data
    )


def test_run_then_predict_on_the_embedded_defaults(tmp_path):
    home = tmp_path / "home"
    first = netsec(*SMALL_BUDGET, "run", home=home)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "outcome: promoted" in first.stdout
    assert (home / "mlflow.db").is_file()
    storage_runs = list((home / "storage" / "runs").iterdir())
    assert len(storage_runs) == 1 and (storage_runs[0] / "manifest.json").is_file()
    assert (storage_runs[0] / "model" / "model.skops").is_file()
    # Each artifact once in storage, plus MLflow's copy of the model: two files with the model's
    # bytes under the work dir, one in the run's storage, one in MLflow's artifact store.
    model_copies = _copies(home, storage_runs[0] / "model" / "model.skops")
    assert len(model_copies) == 2, model_copies
    assert sum(p.is_relative_to(storage_runs[0]) for p in model_copies) == 1
    assert len(_copies(home, storage_runs[0] / "transform" / "preprocessor.skops")) == 1

    # Same data again: no drift, the Production model stays.
    second = netsec(*SMALL_BUDGET, "run", home=home)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "outcome: skipped_no_drift" in second.stdout
    assert _copies(home, storage_runs[0] / "model" / "model.skops") == model_copies

    sample = tmp_path / "rows.csv"
    made = netsec("make-sample", "--rows", "200", "--seed", "9", "--out", str(sample), home=home)
    assert made.returncode == 0 and sample.is_file()
    out = tmp_path / "pred.csv"
    pred = netsec("predict", str(sample), "--out", str(out), home=home)
    assert pred.returncode == 0, pred.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 200
    assert set(frame["is_threat"].unique()) <= {0, 1}
    assert frame["threat_probability"].between(0, 1).all()
    # Threat rows are labelled with the schema's threat label (-1), benign with the other.
    assert (frame.loc[frame.is_threat == 1, "predicted_label"] == -1).all()
    assert (frame["model_version"] == 1).all()
    # A useful model on the same distribution.
    assert (frame["predicted_label"] == frame["Result"]).mean() > 0.85
    assert (frame["status"] == "ok").all() and (frame["imputed_cells"] == 0).all()


def test_bad_configuration_is_named_with_exit_2(tmp_path):
    res = netsec("run", home=tmp_path, env={"NETSEC_TRAINING__CV_FOLDS": "lots"})
    assert res.returncode == 2
    assert "training.cv_folds" in res.stderr and "NETSEC_TRAINING__CV_FOLDS" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_input_file_is_named(tmp_path):
    res = netsec("run", "--source-path", str(tmp_path / "nope.csv"), home=tmp_path)
    assert res.returncode == 2
    assert "nope.csv" in res.stderr and "Traceback" not in res.stderr
    # Nothing registered, no run in storage.
    assert not (tmp_path / "storage" / "runs").exists()


def test_missing_column_fails_validation_and_registers_nothing(tmp_path):
    from netsec_tasks.sample import make_sample

    bad = tmp_path / "bad.csv"
    make_sample(300, seed=1).drop(columns=["SFH"]).to_csv(bad, index=False)
    res = netsec("run", "--source-path", str(bad), home=tmp_path / "home")
    assert res.returncode == 2, res.stdout[-2000:]
    assert "SFH" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "home" / "mlflow.db").exists() or _no_versions(tmp_path / "home")


def _no_versions(home: Path) -> bool:
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client.search_model_versions("name='netsec-phishing'") == []


def test_unreachable_mongo_exits_3_naming_the_server(tmp_path, sample_csv):
    port = free_port()
    res = netsec(
        "push-data",
        str(sample_csv),
        "--uri",
        f"mongodb://user:secret@127.0.0.1:{port}/netsec",
        home=tmp_path,
        env={"NETSEC_SOURCE__MONGO__SERVER_SELECTION_TIMEOUT_MS": "500"},
        timeout=60,
    )
    assert res.returncode == 3
    assert f"127.0.0.1:{port}" in res.stderr
    assert "secret" not in res.stderr


def test_push_data_prints_counts_and_is_idempotent(tmp_path, mongo_server, sample_csv):
    env = {"NETSEC_SOURCE__MONGO__COLLECTION": "cli_push"}
    first = netsec("push-data", str(sample_csv), "--uri", mongo_server.uri, home=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    counts = json.loads(first.stdout)
    assert counts["inserted"] == 1500
    again = json.loads(
        netsec("push-data", str(sample_csv), "--uri", mongo_server.uri, home=tmp_path, env=env).stdout
    )
    assert again["inserted"] == 0 and again["collection_count"] == 1500


def test_validate_command_reports_and_exits_nonzero_on_failure(tmp_path):
    from netsec_tasks.sample import make_sample

    frame = make_sample(200, seed=2).astype({"URL_Length": object})
    frame.loc[:29, "URL_Length"] = "long"  # 15% uncoercible: above the 5% bound
    path = tmp_path / "v.csv"
    frame.to_csv(path, index=False)
    res = netsec("validate", str(path), "--out", str(tmp_path / "out"), home=tmp_path)
    assert res.returncode == 1
    assert "FAILED" in res.stdout and "URL_Length" in res.stdout
    invalid = pd.read_csv(tmp_path / "out" / "invalid.csv")
    assert sorted(set(invalid["row"])) == list(range(30))
    assert set(invalid["column"]) == {"URL_Length"}


def test_run_on_the_uci_file_promotes_a_model_within_the_budget_on_a_random_split(tmp_path, uci_csv):
    """Default training on the real data, plain random split: the promoted model decides at a
    threshold whose test FPR is within the 1% budget (not over it with 95% confidence), with
    recall above 0.85 there; it ranks threats first (ROC AUC above 0.99, the bar F1 >= 0.97 at
    0.5 stood for before operating points)."""
    home = tmp_path / "home"
    res = netsec(
        "--set", "split.duplicate_aware=false", "run", "--source-path", str(uci_csv), home=home, timeout=900
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout[: res.stdout.rindex("}") + 1])
    assert summary["registry"]["promoted"] is True
    assert summary["rows"]["snapshot"] == 11055
    model = summary["model"]
    point = model["operating_point"]
    assert point["fpr_low"] <= 0.01 and point["recall"] >= 0.85, point
    assert model["test_metrics"]["roc_auc"] >= 0.99, model["test_metrics"]
