"""Predictions through the API equal the registered pipeline's own predictions."""

from __future__ import annotations

import io
import time

import numpy as np
import pandas as pd
import pytest
from serving_helpers import DETAILS, TARGET, fit, records_of, register, training_frame

from netsec_tasks.contract import OUTPUT_COLUMNS
from netsec_tasks.prediction_log import read_prediction_log
from netsec_testing import REPO
from serving.fastpath import ATOL


def _expected(pipeline, frame: pd.DataFrame):
    x = frame.drop(columns=[TARGET], errors="ignore")
    return pipeline.predict(x), pipeline.predict_proba(x)[:, 1]


def test_predict_json_equals_pipeline(registered, make_client):
    client = make_client(registered.tracking_uri)
    rows = training_frame(300, seed=99)  # rows the model has not seen
    resp = client.post("/predict", json={"records": records_of(rows)})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    pred, proba = _expected(registered.pipeline, rows)
    got = body["predictions"]
    assert [p["is_threat"] for p in got] == pred.tolist()
    assert [p["predicted_label"] for p in got] == [-1 if t else 1 for t in pred.tolist()]
    assert {p["imputed_cells"] for p in got} == {0}
    # A forest is served through onnxruntime: float32 sums, within ATOL (serving/fastpath.py).
    np.testing.assert_allclose([p["threat_probability"] for p in got], proba, rtol=0, atol=ATOL)
    assert {p["model_version"] for p in got} == {registered.version} == {body["model_version"]}


def test_single_row_uses_compiled_path_and_agrees(registered, make_client):
    client = make_client(registered.tracking_uri)
    info = client.get("/model", headers=DETAILS).json()
    assert info["inference_path"].startswith("compiled: onnxruntime"), info["inference_path"]
    assert info["model_class"] == "RandomForestClassifier"
    rows = training_frame(40, seed=5)
    pred, proba = _expected(registered.pipeline, rows)
    for i, record in enumerate(records_of(rows)):
        p = client.post("/predict", json={"records": [record]}).json()["predictions"][0]
        assert p["is_threat"] == pred[i] and abs(p["threat_probability"] - proba[i]) <= ATOL


def test_predict_csv_json_and_csv_answers(registered, make_client):
    client = make_client(registered.tracking_uri)
    rows = training_frame(120, seed=11)  # includes the target column: passed through
    data = rows.to_csv(index=False).encode()
    pred, proba = _expected(registered.pipeline, rows)

    resp = client.post("/predict/csv", files={"file": ("x.csv", data, "text/csv")})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["n_rows"] == 120 and body["n_threats"] == int(pred.sum())
    # JSON echoes the passthrough columns (here the target), not the features, unless asked.
    assert body["columns"] == [TARGET, *OUTPUT_COLUMNS]
    assert [r["is_threat"] for r in body["records"]] == pred.tolist()
    # Passthrough cells come back as written in the file (text), so "007" stays "007".
    assert [r[TARGET] for r in body["records"]] == rows[TARGET].astype(str).tolist()

    resp = client.post(
        "/predict/csv", files={"file": ("x.csv", data, "text/csv")}, headers={"Accept": "text/csv"}
    )
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    out = pd.read_csv(io.BytesIO(resp.content))
    # The CSV answer is the uploaded table with the same output columns as `netsec predict`.
    assert list(out.columns) == list(rows.columns) + list(OUTPUT_COLUMNS)
    assert set(out["status"]) == {"ok"} and set(out["imputed_cells"]) == {0}
    assert out["is_threat"].tolist() == pred.tolist()
    np.testing.assert_allclose(out["threat_probability"], proba, rtol=0, atol=ATOL)


OTHER_KINDS = [
    "extra_trees",
    "decision_tree",
    "hist_gradient_boosting",
    "logistic_regression",
    "adaboost",
    "xgboost",
]
MODEL_CLASS = {
    "extra_trees": "ExtraTreesClassifier",
    "decision_tree": "DecisionTreeClassifier",
    "hist_gradient_boosting": "HistGradientBoostingClassifier",
    "logistic_regression": "LogisticRegression",
    "adaboost": "AdaBoostClassifier",
    "xgboost": "XGBClassifier",
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """One store, one registered model per estimator kind (creating a store costs ~10 s)."""
    root = tmp_path_factory.mktemp("zoo")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    pipes = {}
    for kind in OTHER_KINDS:
        pipe, frame = fit(kind, n_rows=400)
        register(uri, pipe, frame, name=f"netsec-{kind}", artifact_root=root / "artifacts")
        pipes[kind] = pipe
    return uri, pipes


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_other_estimators_agree(kind, zoo, make_client):
    uri, pipes = zoo
    pipe = pipes[kind]
    client = make_client(uri, model_name=f"netsec-{kind}")
    info = client.get("/model", headers=DETAILS).json()
    assert info["inference_path"].startswith("compiled: "), info["inference_path"]
    assert info["model_class"] == MODEL_CLASS[kind]
    rows = training_frame(150, seed=21)
    for part in (rows, rows.head(1)):  # the pipeline itself on the same batch (BLAS varies by size)
        pred, proba = _expected(pipe, part)
        got = client.post("/predict", json={"records": records_of(part)}).json()["predictions"]
        assert [p["is_threat"] for p in got] == pred.tolist()
        np.testing.assert_allclose([p["threat_probability"] for p in got], proba, rtol=0, atol=ATOL)


def test_model_health_ready_metrics(registered, make_client):
    client = make_client(registered.tracking_uri)
    info = client.get("/model", headers=DETAILS).json()
    assert info["name"] == "netsec-phishing" and info["version"] == registered.version
    assert info["metrics"]["test_f1"] == pytest.approx(0.9)
    assert info["dataset_digest"].startswith("sha256:test-")
    # An anonymous client sees what it needs to call the service, not the run, digest or
    # inference path (which names the storage URI of its verification rows).
    public = client.get("/model").json()
    assert public["run_id"] is public["dataset_digest"] is public["inference_path"] is None
    assert public["name"] == info["name"] and public["features"] == info["features"]
    # netsec.dataset from the version's tags; no netsec.schema_version tag: the schema's own.
    from netsec_tasks.dataset_schema import load_schema

    assert info["dataset"] == "phishing"
    assert info["schema_version"] == load_schema(REPO / "config" / "schema" / "phishing.yaml").version
    assert [f["name"] for f in info["features"]] == registered.features
    assert info["positive_label"] == -1 and info["negative_label"] == 1
    # A version registered before operating points (a bare Pipeline) is served at the 0.5 rule.
    decision = public["decision"]
    assert decision["threshold_recorded"] is False and "> 0.5" in decision["rule"]
    assert decision["max_false_positive_rate"] is None and decision["expected_precision"] is None
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["model_version"] == registered.version

    rows = records_of(training_frame(10, seed=1))
    client.post("/predict", json={"records": rows})
    resp = client.post("/predict", json={"records": rows[:1]})
    assert "app;dur=" in resp.headers["server-timing"]
    text = client.get("/metrics").text
    assert 'netsec_http_requests_total{method="POST",route="/predict",status="200"} 2.0' in text
    assert 'netsec_http_request_duration_seconds_bucket{le="0.001",route="/predict"}' in text
    answers = client.post("/predict", json={"records": rows}).json()["predictions"]
    threats = sum(p["is_threat"] for p in answers)
    text = client.get("/metrics").text
    assert (
        f'netsec_predictions_total{{class_="threat",model="netsec-phishing",role="production",'
        f'version="{registered.version}"}} {float(2 * threats + answers[0]["is_threat"])}' in text
    )
    assert (
        f'netsec_predictions_total{{class_="benign",model="netsec-phishing",role="production",'
        f'version="{registered.version}"}} {float(21 - 2 * threats - answers[0]["is_threat"])}' in text
    )
    assert f'netsec_model_version{{name="netsec-phishing"}} {float(registered.version)}' in text
    assert f'version="{registered.version}"' in text  # netsec_model_info
    assert "netsec_model_details_info" not in text and "run_id" not in text
    detailed = client.get("/metrics", headers={"Authorization": f"Bearer {DETAILS['X-API-Key']}"}).text
    assert f'run_id="{info["run_id"]}"' in detailed and "inference_path=" in detailed


def _wait_logged(log_dir, rows: int, timeout: float = 10.0) -> pd.DataFrame:
    """The log as read back, once it holds ``rows`` predictions (it is written off the request)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = read_prediction_log(log_dir) if list(log_dir.rglob("*.jsonl")) else pd.DataFrame()
        if len(frame) >= rows or time.monotonic() > deadline:
            assert len(frame) == rows
            return frame
        time.sleep(0.1)


def test_prediction_log_jsonl(registered, make_client, tmp_path):
    client = make_client(registered.tracking_uri, log_flush_seconds=0.1)
    rows = records_of(training_frame(7, seed=2))
    body = client.post("/predict", json={"records": rows}).json()
    logged = _wait_logged(tmp_path / "predictions", 7)
    assert logged[list(rows[0])].to_dict(orient="records") == [
        {k: float(v) for k, v in r.items()} for r in rows
    ]
    assert logged["is_threat"].tolist() == [p["is_threat"] for p in body["predictions"]]
    assert logged["threat_probability"].tolist() == [p["threat_probability"] for p in body["predictions"]]
    assert set(logged["model_version"]) == {registered.version}
    assert str(logged["time"].dt.tz) == "UTC"


def test_served_traffic_drift_is_detected_from_the_log(registered, make_client, tmp_path):
    """The log's purpose: `netsec drift TRAIN <log dir>` compares served rows with training data."""
    from netsec_tasks.config import load_config
    from netsec_tasks.drift import drift_between_files
    from netsec_tasks.sample import make_sample

    reference = tmp_path / "train.csv"
    registered.frame.to_csv(reference, index=False)
    cfg = load_config(REPO / "config" / "pipeline.yaml", environ={"NETSEC_HOME": str(tmp_path)})
    detected = {}
    for shift in (0.0, 0.8):
        log_dir = tmp_path / f"log-{shift}"
        client = make_client(registered.tracking_uri, log_dir=str(log_dir), log_flush_seconds=0.1)
        served = make_sample(600, seed=11, shift=shift).drop(columns=[TARGET])
        for start in range(0, 600, 200):  # a few requests, like real traffic
            part = served.iloc[start : start + 200]
            assert client.post("/predict", json={"records": records_of(part)}).status_code == 200
        _wait_logged(log_dir, 600)
        record = drift_between_files(reference, log_dir, cfg, tmp_path / f"drift-{shift}")
        detected[shift] = record.drift_detected
    assert detected == {0.0: False, 0.8: True}


def test_every_door_gives_the_same_decision(make_client, tmp_path, monkeypatch):
    """A model registered with a threshold far from 0.5 (0.7): the JSON and CSV doors (the page
    posts to the CSV door), ``netsec predict`` and ``netsec evaluate`` decide every row as the
    artifact's own predict() does, i.e. decide(P(threat), 0.7), and /model shows the threshold
    and its budget. Rows scored between 0.5 and 0.7 make the threshold matter."""
    from netsec_tasks.cli import main
    from netsec_tasks.config import load_config
    from netsec_tasks.file_evaluation import evaluate_file
    from netsec_tasks.operating_point import decide, with_threshold

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pipe, frame = fit("random_forest", seed=4)
    version = register(uri, pipe, frame, artifact_root=tmp_path / "artifacts", threshold=0.7)
    rows = training_frame(300, seed=123)
    x = rows.drop(columns=[TARGET])
    proba = pipe.predict_proba(x)[:, 1]
    expected = decide(proba, 0.7)
    assert ((proba >= 0.5) & (proba < 0.7)).sum() >= 5, "precondition: the threshold matters"
    np.testing.assert_array_equal(expected, with_threshold(pipe, 0.7).predict(x))

    client = make_client(uri)
    info = client.get("/model").json()
    assert info["version"] == version and info["decision"]["threshold"] == pytest.approx(0.7)
    assert info["decision"]["threshold_recorded"] and info["decision"]["max_false_positive_rate"] == 0.01
    doors = {}
    doors["/predict"] = [
        p["is_threat"]
        for p in client.post("/predict", json={"records": records_of(rows)}).json()["predictions"]
    ]
    csv = client.post(
        "/predict/csv", files={"file": ("x.csv", rows.to_csv(index=False).encode(), "text/csv")}
    )
    doors["/predict/csv"] = [r["is_threat"] for r in csv.json()["records"]]
    one = [
        client.post("/predict", json={"records": [r]}).json()["predictions"][0]["is_threat"]
        for r in records_of(rows.head(40))
    ]

    src, out = tmp_path / "rows.csv", tmp_path / "scored.csv"
    rows.to_csv(src, index=False)
    monkeypatch.setenv("NETSEC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["predict", str(src), "--out", str(out)]) == 0
    doors["netsec predict"] = pd.read_csv(out)["is_threat"].tolist()
    for door, got in doors.items():
        assert got == expected.tolist(), door
    assert one == expected[:40].tolist()  # one row at a time: the compiled small-batch path

    cfg = load_config(REPO / "config" / "pipeline.yaml")
    rec = evaluate_file(
        cfg, src, model_uri=f"models:/netsec-phishing/{version}", out_dir=tmp_path / "ev", track=False
    )
    y = (rows[TARGET] == -1).to_numpy()
    tp, fp = int((y & (expected == 1)).sum()), int((~y & (expected == 1)).sum())
    assert rec.confusion_matrix[0][1] == fp and rec.confusion_matrix[1][1] == tp
    # netsec evaluate reports at the operating point, and what other budgets would need.
    point = rec.operating_point
    assert point["threshold"] == pytest.approx(0.7) and (point["fp"], point["tp"]) == (fp, tp)
    assert point["alerts_per_10k_benign"] == pytest.approx(10_000 * fp / int((~y).sum()), abs=0.01)
    assert [r["budget"] for r in rec.budget_table] == [0.001, 0.005, 0.01, 0.05]
    assert all(r["fpr"] <= r["budget"] for r in rec.budget_table)
    from netsec_tasks.storage import file_uri_to_path

    page = file_uri_to_path(rec.html_uri).read_text()
    assert "<h2>Operating point</h2>" in page and "Other budgets, on these rows" in page
    assert "P(threat) &ge; 0.7" in page and "false alerts per 10,000 benign" in page
    assert {"roc_curve.png", "pr_curve.png", "reliability.png"} <= {u.rsplit("/", 1)[-1] for u in rec.plots}
