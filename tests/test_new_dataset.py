"""A new data set from its schema file alone, as a user runs it (docs/new-dataset.md):
the synthetic multi-class, header-less intrusion set with categorical features is trained with
``netsec run``, evaluated on its separate hold-out file with ``netsec evaluate``, scored with
``netsec predict`` and served; a second data set in the same home gets its own registered model
and leaves the first one's Production alone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from netsec_tasks.intrusion_sample import NOVEL_ATTACKS, make_intrusion_sample, write_intrusion_sample
from netsec_testing import REPO, SMALL_BUDGET, netsec

DATASET = "intrusion_demo"
MODEL = "netsec-intrusion_demo"


def client_for(home: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


class Trained:
    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.train = write_intrusion_sample(root / "kdd_train.csv", 1200, seed=1)
        self.holdout = write_intrusion_sample(root / "kdd_holdout.csv", 500, seed=2, holdout=True)
        self.env = {"NETSEC_DATASET": DATASET}
        self.run = netsec(
            "run", "--source-path", str(self.train), *SMALL_BUDGET, home=self.home, env=self.env
        )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    t = Trained(tmp_path_factory.mktemp("new-dataset"))
    assert t.run.returncode == 0, t.run.stderr[-3000:]
    return t


def test_trains_from_its_schema_file_alone(trained):
    assert "outcome: promoted" in trained.run.stdout
    summary = json.loads(trained.run.stdout[: trained.run.stdout.rindex("}") + 1])
    assert summary["registry"]["model_name"] == MODEL
    client = client_for(trained.home)
    mv = client.get_model_version_by_alias(MODEL, "production")
    assert mv.tags["netsec.dataset"] == DATASET and mv.tags["netsec.schema_version"] == "1"
    assert json.loads(mv.tags["netsec.label_mapping"])["negative"] == ["normal"]
    assert json.loads(mv.tags["netsec.positive_label"]) == "threat"
    features = json.loads(mv.tags["netsec.features"])
    assert {"protocol_type", "service", "flag"} <= set(features) and "difficulty" not in features
    # The validation report counts the rows of every raw label, and which are threats.
    run_dir = Path(summary["storage"].removeprefix("file://"))
    report = yaml.safe_load((run_dir / "validate" / "validation_report.yaml").read_text())
    labels = report["sections"]["train+test"]["labels"]
    raw = pd.read_csv(trained.train, header=None)[14].value_counts()  # the label's position
    assert {k: v["rows"] for k, v in labels.items()} == raw.to_dict()
    assert labels["normal"]["threat"] is False and labels["neptune"]["threat"] is True


def test_evaluate_scores_the_holdout_file(trained, tmp_path):
    out = tmp_path / "eval"
    res = netsec("evaluate", str(trained.holdout), "--out", str(out), home=trained.home, env=trained.env)
    assert res.returncode == 0, res.stderr[-3000:]
    report = yaml.safe_load((out / "evaluation_report.yaml").read_text())
    client = client_for(trained.home)
    mv = client.get_model_version_by_alias(MODEL, "production")
    assert report["model"]["uri"] == f"models:/{MODEL}/{mv.version}"
    assert set(report["metrics"]) >= {"f1", "precision", "recall", "roc_auc", "pr_auc"}

    # The figures are the model's on this file: recompute them from the raw file.
    import mlflow
    from sklearn import metrics as skm

    from netsec_tasks.tracking import load_verified_model

    uri = f"sqlite:///{trained.home / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)  # models:/ resolves through the global registry URI
    mlflow.set_registry_uri(uri)
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    model = load_verified_model(f"models:/{MODEL}/{mv.version}", uri)
    raw = make_intrusion_sample(500, seed=2, holdout=True)
    y = (raw["label"] != "normal").astype(int).to_numpy()
    features = json.loads(mv.tags["netsec.features"])
    proba = model.predict_proba(raw[features])[:, 1]
    pred = (proba > 0.5).astype(int)
    assert report["metrics"]["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-6)
    assert report["metrics"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba), abs=1e-6)
    assert report["confusion_matrix"]["rows_truth_cols_predicted"] == skm.confusion_matrix(y, pred).tolist()

    # Per-label recall, with the attack types the training file never had marked as such.
    per_label = report["per_label"]
    assert set(per_label) == set(raw["label"])
    for label, entry in per_label.items():
        rows = (raw["label"] == label).to_numpy()
        right = int((pred[rows] == y[rows]).sum())
        assert entry["rows"] == int(rows.sum()) and entry["recall"] == pytest.approx(right / rows.sum())
        assert entry["in_training"] is (label not in NOVEL_ATTACKS)
    # Some attack types the training file never had look like normal traffic: missed.
    assert min(per_label[a]["recall"] for a in NOVEL_ATTACKS) < 1.0
    assert "per label" in res.stdout and "not in the training data" in res.stdout

    page = (out / "evaluation_report.html").read_text()
    assert "data:image/png;base64," in page and "<script" not in page
    assert "http://" not in page and "https://" not in page
    assert {p.name for p in (out / "plots").iterdir()} >= {
        "confusion_matrix.png",
        "roc_curve.png",
        "pr_curve.png",
        "per_label_recall.png",
    }

    # Logged to MLflow: a run linked to the model version.
    run_id = (
        mv.tags.get("netsec.evaluation_run_id")
        or client.get_model_version(MODEL, mv.version).tags["netsec.evaluation_run_id"]
    )
    run = client.get_run(run_id)
    assert run.data.tags["netsec.role"] == "evaluation"
    assert run.data.metrics["eval_f1"] == pytest.approx(report["metrics"]["f1"], abs=1e-6)
    from netsec_tasks.tracking import logged_model_id

    assert logged_model_id(mv) and [m.model_id for m in run.inputs.model_inputs] == [logged_model_id(mv)]
    names = {f.path for f in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/evaluation_report.yaml", "evaluation/evaluation_report.html"} <= names


def test_predict_reads_a_headerless_file_into_a_missing_folder(trained, tmp_path):
    rows = make_intrusion_sample(50, seed=9, holdout=True).drop(columns=["label"])
    path = tmp_path / "unlabelled.csv"
    rows.to_csv(path, index=False, header=False)  # no header and no label column
    out = tmp_path / "missing" / "dir" / "x.csv"
    res = netsec("predict", str(path), "--out", str(out), home=trained.home, env=trained.env)
    assert res.returncode == 0, res.stderr[-2000:]
    scored = pd.read_csv(out)
    assert len(scored) == 50 and (scored["status"] == "ok").all()
    assert set(scored["predicted_label"]) <= {"normal", "threat"}
    assert ((scored["predicted_label"] == "threat") == (scored["is_threat"] == 1)).all()
    # An output path under a file cannot be created: one clear error, no traceback.
    blocked = netsec("predict", str(path), "--out", str(path / "x.csv"), home=trained.home, env=trained.env)
    assert blocked.returncode == 2 and "cannot create the folder" in blocked.stderr
    assert "Traceback" not in blocked.stderr


def test_serving_answers_with_the_data_sets_model(trained, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    monkeypatch.setenv("NETSEC_HOME", str(trained.home))
    monkeypatch.setenv("NETSEC_DATASET", DATASET)
    settings = Settings(
        log_dir=str(tmp_path / "predictions"), retry_interval_seconds=0.5, inference_threads=1
    )
    assert settings.model_name == MODEL
    rows = make_intrusion_sample(30, seed=4, holdout=True)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 180
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        info = client.get("/model").json()
        assert info["name"] == MODEL and info["dataset"] == DATASET
        records = json.loads(rows.drop(columns=["label"]).to_json(orient="records"))
        res = client.post("/predict", json={"records": records})
        assert res.status_code == 200, res.text
        preds = res.json()["predictions"]
        assert len(preds) == 30 and {p["predicted_label"] for p in preds} <= {"normal", "threat"}
        # A category outside the schema's allowed list is refused, naming it.
        bad = dict(records[0], service="gopher2")
        refused = client.post("/predict", json={"records": [bad]})
        assert refused.status_code == 422 and "gopher2" in refused.text
        # A header-less CSV upload is read with the schema's file_columns.
        upload = client.post(
            "/predict/csv", files={"file": ("rows.csv", rows.to_csv(index=False, header=False))}
        )
        assert upload.status_code == 200, upload.text
        answer = upload.json()
        assert answer["n_rows"] == 30 and "label" in answer["columns"]
        assert [r["is_threat"] for r in answer["records"]] == [p["is_threat"] for p in preds]


def test_a_second_data_set_leaves_the_first_ones_production_alone(trained):
    client = client_for(trained.home)
    before = client.get_model_version_by_alias(MODEL, "production").version
    # The default data set (phishing, the built-in sample) in the same home.
    phishing = netsec("run", *SMALL_BUDGET, home=trained.home)
    assert phishing.returncode == 0, phishing.stderr[-3000:]
    assert "registry: netsec-phishing production version = 1" in phishing.stdout
    assert client.get_model_version_by_alias(MODEL, "production").version == before
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1

    # Forcing the other data set's name: refused, saying what differs, before any training.
    forced = netsec("run", *SMALL_BUDGET, "--set", f"registry.model_name={MODEL}", home=trained.home)
    assert forced.returncode == 2, forced.stdout[-2000:]
    err = forced.stderr
    assert "Traceback" not in err and "not a model of the data set 'phishing'" in err
    assert "features it has and the candidate lacks: duration" in err
    assert "target column 'label', the candidate's is 'Result'" in err
    assert "NETSEC_REGISTRY__MODEL_NAME" in err
    assert "winner" not in forced.stdout + err  # stopped before training
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
    assert client.get_model_version_by_alias(MODEL, "production").version == before


def test_evaluate_refuses_unlisted_labels_before_any_model_lookup(tmp_path):
    """A ``positive`` schema lists its labels: a hold-out file with other ones is refused."""
    from netsec_tasks.config import load_config
    from netsec_tasks.contract import ContractError
    from netsec_tasks.file_evaluation import evaluate_file

    config = tmp_path / "config"
    (config / "schema").mkdir(parents=True)
    (config / "pipeline.yaml").write_text((REPO / "config" / "pipeline.yaml").read_text())
    schema = yaml.safe_load((REPO / "config" / "schema" / "intrusion_demo.yaml").read_text())
    schema["target"] = {
        "column": "label",
        "dtype": "str",
        "positive": ["neptune", "smurf"],
        "labels": ["normal", "neptune", "smurf"],
    }
    (config / "schema" / "kdd_listed.yaml").write_text(yaml.safe_dump(schema))
    cfg = load_config(
        config / "pipeline.yaml",
        environ={"NETSEC_DATASET": "kdd_listed", "NETSEC_HOME": str(tmp_path / "home")},
    )
    path = write_intrusion_sample(tmp_path / "holdout.csv", 300, seed=3, holdout=True)
    with pytest.raises(ContractError) as err:
        evaluate_file(cfg, path, track=False)
    text = str(err.value)
    for label in ("satan", "mailbomb", "back"):
        assert f"'{label}' x" in text
    assert "target.negative" in text and str(path) in text
    assert not (tmp_path / "home" / "mlflow.db").exists()  # refused before the registry
    assert err.value.problems[0]["where"].startswith("line ")
