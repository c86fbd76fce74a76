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
    pred = model.predict(raw[features])  # the model's own decision: at its threshold
    assert (
        report["threshold"] == model.threshold and report["operating_point"]["threshold"] == model.threshold
    )
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


def test_evaluate_counts_the_rows_the_version_was_trained_on(trained, tmp_path):
    """The training file itself: most of its rows are the version's training rows. The headline
    figures are on the rows it never saw, beside those on every row, after a warning."""
    out = tmp_path / "eval-train"
    res = netsec(
        "evaluate", str(trained.train), "--out", str(out), "--no-mlflow", home=trained.home, env=trained.env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = yaml.safe_load((out / "evaluation_report.yaml").read_text())
    rows = report["rows"]
    assert 0 < rows["trained_on"] < rows["scored"] and rows["headline"] == rows["scored"] - rows["trained_on"]
    assert rows["trained_on"] > 0.6 * rows["scored"]  # the training split is ~80% of the file
    warning = report["warnings"][0]
    assert f"{rows['trained_on']:,} of {rows['scored']:,} scored rows" in warning
    assert "headline figures are on the" in warning and "on all rows f1" in warning
    assert set(report["metrics_all_rows"]) == set(report["metrics"])
    first = res.stdout.splitlines()[0]
    assert first.startswith("WARNING: ") and "was trained on" in first
    assert "(rows it never saw)" in res.stdout and "all rows:" in res.stdout
    page = (out / "evaluation_report.html").read_text()
    assert page.index("Warning") < page.index("Threat class") and "never trained on" in page


def _serve_and_judge(home: Path, dataset: str, frame: pd.DataFrame, target: str, foreign, monkeypatch, **kw):
    """Serve ``dataset``'s model in ``home``, score ``frame``, send the true labels of its first
    20 rows as verdicts; a verdict on another model's prediction (``foreign`` ids) is a 404.
    Returns the prediction ids."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    monkeypatch.setenv("NETSEC_HOME", str(home))
    monkeypatch.setenv("NETSEC_DATASET", dataset)
    app = create_app(Settings(retry_interval_seconds=0.5, log_flush_seconds=0.2, inference_threads=1, **kw))
    with TestClient(app) as client:
        deadline = time.monotonic() + 180
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.2)
        records = json.loads(frame.drop(columns=[target]).to_json(orient="records"))
        resp = client.post("/predict", json={"records": records})
        assert resp.status_code == 200, resp.text
        ids = [p["prediction_id"] for p in resp.json()["predictions"]]
        verdicts = [{"prediction_id": i, "label": y} for i, y in zip(ids, frame[target].tolist()[:20])]
        assert client.post("/feedback", json=verdicts).json()["recorded"] == 20
        for pid in foreign[:1]:
            other = client.post("/feedback", json=[{"prediction_id": pid, "label": "benign"}])
            assert other.status_code == 404 and pid in other.json()["detail"]
    return ids


def test_two_data_sets_in_one_home_never_share_served_state(trained, mongo_server, mongo_db, monkeypatch):
    """Issue 21: one home, two registered models (intrusion_demo and phishing), each served,
    judged and monitored, with the log and verdicts in files and then in MongoDB: each model's
    monitoring reads only its own traffic and verdicts, turns only its own verdicts into training
    rows, and both retrain green afterwards (the order that used to break the second run)."""
    from netsec_tasks.config import load_config
    from netsec_tasks.feedback import feedback_rows_uri
    from netsec_tasks.sample import make_sample
    from netsec_tasks.storage import storage_for

    home, (mongo, db) = trained.home, mongo_db
    if not client_for(home).search_model_versions("name='netsec-phishing'"):  # run alone (-k)
        assert netsec("run", *SMALL_BUDGET, home=home).returncode == 0
    sets = {
        # Rows without gaps: nx-27017 keeps documents as JSON, which has no NaN (MongoDB has).
        MODEL: (
            DATASET,
            make_intrusion_sample(120, seed=21, holdout=True).dropna().head(70).reset_index(drop=True),
            "label",
            trained.env,
        ),
        "netsec-phishing": ("phishing", make_sample(90, seed=22), "Result", {}),
    }
    stores = {
        "file": ({}, {}),
        "mongo": (
            {"mongo_uri": mongo_server.uri.rsplit("/", 1)[0] + f"/{db}"},
            {
                "NETSEC_MONITORING__STORE": "mongo",
                "NETSEC_SOURCE__MONGO__URI": mongo_server.uri,
                "NETSEC_SOURCE__MONGO__DATABASE": db,
            },
        ),
    }
    figures: dict[str, object] = {}
    for store, (serving_kw, monitor_env) in stores.items():
        ids: list[str] = []
        for dataset, frame, target, _ in sets.values():
            with monkeypatch.context() as m:
                ids = _serve_and_judge(home, dataset, frame, target, ids, m, **serving_kw)
        # Monitor one data set, then the other: each reads its own rows and verdicts only.
        for model, (_, frame, _, env) in sets.items():
            res = netsec("monitor", home=home, env={**env, **monitor_env})
            assert res.returncode == 0, res.stderr[-3000:]
            rows = int(res.stdout.split("traffic: ", 1)[1].split(" new rows", 1)[0])
            appended = int(res.stdout.split("verdicts into training data: ", 1)[1].split(" ", 1)[0])
            assert (rows, appended) == (len(frame), 20), res.stdout
            assert f"of {model} appended" in res.stdout and "0 without a prediction" in res.stdout
            figures[f"{store} {model}"] = f"rows read {rows}, verdict rows appended {appended}"
        if store == "mongo":
            assert set(mongo[db]["predictions"].distinct("model_name")) == set(sets)
            assert mongo[db]["feedback"].count_documents({"model_name": MODEL}) == 20
    # Each model's verdict rows are its own, with its own features, never the other's.
    storage = storage_for(load_config(environ={"NETSEC_HOME": str(home)}))
    for model, (_, frame, target, _) in sets.items():
        rows = storage.read_frame(feedback_rows_uri(storage, model))
        features = [c for c in frame.columns if c not in (target, "difficulty")]  # difficulty: ignored
        assert len(rows) == 40 and set(rows["_netsec_model_name"]) == {model}
        assert rows[features].notna().any(axis=1).all() and target in rows.columns
        other = next(f for m, (_, f, _, _) in sets.items() if m != model)
        assert not set(other.columns) - {"label", "Result"} & set(rows.columns)
    # Both retrain green, each reading its own verdict rows.
    for model, (dataset, _, _, env) in sets.items():
        args = ["--source-path", str(trained.train)] if dataset == DATASET else []
        res = netsec("run", "--force-retrain", *args, *SMALL_BUDGET, home=home, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        outcome = next(line for line in res.stdout.splitlines() if line.startswith("outcome:"))
        figures[f"retrain {model}"] = f"exit 0, {outcome}"
    print("\ntwo data sets in one home:\n" + "\n".join(f"  {k}: {v}" for k, v in figures.items()))
