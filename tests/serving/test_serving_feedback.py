"""Prediction ids and POST /feedback: validation, idempotence, changed verdicts, the stores
beside the prediction log (JSONL, and MongoDB on nx-27017), and the monitoring gauges."""

from __future__ import annotations

import io
import time

import pandas as pd
from serving_helpers import MODEL_NAME, fit, records_of, register, training_frame

from netsec_tasks.feedback import JsonlFeedbackStore, verdict_file
from netsec_tasks.prediction_log import parse_prediction_id, read_prediction_log, request_time


def _score(client, n: int = 6, seed: int = 40) -> list[dict]:
    resp = client.post("/predict", json={"records": records_of(training_frame(n, seed=seed))})
    assert resp.status_code == 200, resp.text
    return resp.json()["predictions"]


def _wait_logged(log_dir, ids: list[str], timeout: float = 20.0) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(log_dir.rglob("predictions-*.jsonl")):
            frame = read_prediction_log(log_dir)
            if set(ids) <= set(frame["prediction_id"]):
                return frame
        time.sleep(0.1)
    raise TimeoutError(f"{ids} never reached the log in {log_dir}")


def test_every_scored_row_has_a_stable_prediction_id_in_the_api_csv_and_log(
    registered, make_client, tmp_path
):
    client = make_client(registered.tracking_uri)
    preds = _score(client, 5)
    ids = [p["prediction_id"] for p in preds]
    rids = {parse_prediction_id(i)[0] for i in ids}
    assert len(set(ids)) == 5 and len(rids) == 1
    assert [parse_prediction_id(i)[1] for i in ids] == list(range(5))
    assert abs(request_time(rids.pop()).timestamp() - time.time()) < 600

    rows = training_frame(8, seed=41)
    rows.loc[2, "SSLfinal_State"] = 7  # invalid: comes back unscored, without an id
    data = rows.to_csv(index=False).encode()
    body = client.post("/predict/csv?invalid=flag", files={"file": ("x.csv", data)}).json()
    csv_ids = [r["prediction_id"] for r in body["records"]]
    assert csv_ids[2] is None and all(csv_ids[i] for i in range(8) if i != 2)
    # The scored rows are numbered as the log holds them: 0..6, the invalid row skipped.
    assert [parse_prediction_id(i)[1] for i in csv_ids if i] == list(range(7))
    answer = client.post("/predict/csv?invalid=flag&format=csv", files={"file": ("x.csv", data)})
    out = pd.read_csv(io.BytesIO(answer.content))
    assert out.columns[-1] == "prediction_id" and out["prediction_id"].isna().tolist()[2]

    frame = _wait_logged(tmp_path / "predictions", ids + [i for i in csv_ids if i])
    logged = frame.set_index("prediction_id")
    assert logged.loc[ids, "is_threat"].tolist() == [p["is_threat"] for p in preds]
    assert logged.loc[ids, "threat_probability"].tolist() == [p["threat_probability"] for p in preds]


def test_feedback_is_validated_idempotent_and_keeps_changed_verdicts(registered, make_client, tmp_path):
    client = make_client(registered.tracking_uri)
    preds = _score(client, 4)
    a, b = preds[0]["prediction_id"], preds[1]["prediction_id"]

    first = client.post(
        "/feedback",
        json=[
            {"prediction_id": a, "label": "threat", "source": "soc"},
            {"prediction_id": b, "label": 1, "note": "known host"},
        ],
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["recorded"], body["changed"], body["unchanged"]) == (2, 0, 0)
    # Labels are stored in the data set's vocabulary: threat -> -1 (phishing).
    assert [r["label"] for r in body["results"]] == [-1, 1]

    # The same verdict again (in the other spelling) stores nothing.
    again = client.post("/feedback", json=[{"prediction_id": a, "label": -1}]).json()
    assert again["unchanged"] == 1 and again["results"][0]["status"] == "unchanged"
    assert again["results"][0]["at"] == body["results"][0]["at"]
    store = JsonlFeedbackStore(verdict_file(tmp_path / "predictions", MODEL_NAME), MODEL_NAME)
    assert len(store.events()) == 2

    # A changed verdict is kept with its time; the earlier one stays in the history.
    changed = client.post("/feedback", json=[{"prediction_id": a, "label": "benign"}]).json()
    result = changed["results"][0]
    assert (changed["changed"], result["status"], result["previous_label"]) == (1, "changed", -1)
    assert result["at"] >= result["previous_at"] == body["results"][0]["at"]
    events = [e for e in store.events() if e["prediction_id"] == a]
    assert [(e["seq"], e["label"]) for e in events] == [(0, -1), (1, 1)]
    current = store.current().set_index("prediction_id")
    assert current.loc[a, "label"] == 1 and not current.loc[a, "is_threat"]
    assert current.loc[a, "changes"] == 1 and current.loc[b, "note"] == "known host"
    metrics = client.get("/metrics").text
    assert 'netsec_feedback_verdicts_total{model="netsec-phishing",outcome="changed"} 1.0' in metrics


def post_verdicts(client, *verdicts: tuple[str, object]):
    """POST /feedback with one verdict per ``(prediction_id, label)``, in that order."""
    return client.post("/feedback", json=[{"prediction_id": pid, "label": label} for pid, label in verdicts])


def test_feedback_refuses_unknown_ids_and_labels_outside_the_vocabulary(registered, make_client, tmp_path):
    client = make_client(registered.tracking_uri)
    known = _score(client, 2)[0]["prediction_id"]
    rid, _ = parse_prediction_id(known)
    never = "0123456789ab0123456789-0"
    out_of_range = f"{rid}-99"  # a real request, a row it never had

    resp = post_verdicts(client, (known, "threat"), (never, "threat"), (out_of_range, "benign"))
    assert resp.status_code == 404
    err = resp.json()
    assert never in err["detail"] and out_of_range in err["detail"] and known not in err["detail"]
    assert [(p["row"], p["value"]) for p in err["problems"]] == [(1, never), (2, out_of_range)]
    store = JsonlFeedbackStore(verdict_file(tmp_path / "predictions", MODEL_NAME), MODEL_NAME)
    assert store.events() == []  # nothing stored, not even the known one

    bad = client.post("/feedback", json=[{"prediction_id": known, "label": "malicious"}])
    assert bad.status_code == 422
    assert '"malicious"' in bad.json()["detail"] and "phishing" in bad.json()["detail"]
    assert bad.json()["column"] == "label" and "threat" in bad.json()["allowed"]
    for label in (0, True, -2, None):  # not labels of the phishing data set
        assert client.post("/feedback", json=[{"prediction_id": known, "label": label}]).status_code == 422, (
            label
        )
    malformed = client.post("/feedback", json=[{"prediction_id": "row-1", "label": "threat"}])
    assert malformed.status_code == 422 and malformed.json()["column"] == "prediction_id"
    # Only the canonical form /predict returned: one row has one id (<rid>-05 is not row 5).
    row1 = f"{rid}-1"
    for other in (f"{rid}-01", f"{rid}-001", f"{rid}-0001", f"{rid}-\u0661", rid.upper() + "-1", f" {row1}"):
        resp = client.post("/feedback", json=[{"prediction_id": other, "label": "threat"}])
        assert resp.status_code == 422, other
        assert resp.json()["value"] == other and "exactly as it was returned" in resp.json()["detail"]
    # One request gives one prediction one verdict.
    twice = post_verdicts(client, (known, "threat"), (row1, "benign"), (known, "benign"))
    assert twice.status_code == 422 and twice.json()["value"] == known
    assert f"{known} in verdicts 0, 2" in twice.json()["detail"]
    assert [(p["row"], p["value"]) for p in twice.json()["problems"]] == [(2, known)]
    assert client.post("/feedback", json=[]).status_code == 422
    assert (
        client.post("/feedback", json={"prediction_id": known, "label": "threat"}).status_code == 422
    )  # an array, not one object
    extra = client.post(
        "/feedback",
        json=[
            {"prediction_id": known, "label": "threat"},
            {"prediction_id": known, "label": "threat", "x": 1},
        ],
    )
    assert extra.status_code == 422 and (extra.json()["row"], extra.json()["column"]) == (1, "x")
    assert extra.json()["detail"].startswith("verdict 1: x: Extra inputs are not permitted")
    assert client.post("/feedback", content=b"[]", headers={"content-type": "text/plain"}).status_code == 415
    assert store.events() == []


def test_feedback_requires_the_api_key_when_set(registered, make_client):
    client = make_client(registered.tracking_uri, api_key="s3cret")
    key = {"X-API-Key": "s3cret"}
    pid = client.post(
        "/predict", json={"records": records_of(training_frame(1, seed=3))}, headers=key
    ).json()["predictions"][0]["prediction_id"]
    verdict = [{"prediction_id": pid, "label": "benign"}]
    assert client.post("/feedback", json=verdict).status_code == 401
    assert client.post("/feedback", json=verdict, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/feedback", json=verdict, headers=key).status_code == 200


def test_feedback_in_mongodb_beside_the_prediction_log(registered, make_client, mongo_server, mongo_db):
    mongo, db = mongo_db
    uri = mongo_server.uri.rsplit("/", 1)[0] + f"/{db}"
    first = make_client(registered.tracking_uri, mongo_uri=uri, log_batch_rows=1)
    pid = _score(first, 3)[1]["prediction_id"]
    deadline = time.monotonic() + 20
    while mongo[db]["predictions"].count_documents({}) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    # A second service (another worker) never saw the request: it finds the id in MongoDB.
    second = make_client(registered.tracking_uri, mongo_uri=uri)
    resp = second.post("/feedback", json=[{"prediction_id": pid, "label": "threat"}])
    assert resp.status_code == 200, resp.text
    assert second.post("/feedback", json=[{"prediction_id": pid, "label": "threat"}]).json()["unchanged"] == 1
    assert first.post("/feedback", json=[{"prediction_id": pid, "label": "benign"}]).json()["changed"] == 1
    docs = list(mongo[db]["feedback"].find({}, sort=[("seq", 1)]))
    assert [(d["_id"], d["label"], d["verdict"]) for d in docs] == [
        (f"{pid}#0", -1, "threat"),
        (f"{pid}#1", 1, "benign"),
    ]
    indexes = mongo[db]["predictions"].index_information().values()
    assert [("model_name", 1), ("request_id", 1)] in [i["key"] for i in indexes]  # the lookups' index
    assert (
        second.post("/feedback", json=[{"prediction_id": pid[:-1] + "9", "label": "threat"}]).status_code
        == 404
    )


def test_metrics_expose_the_served_versions_monitoring_figures(make_client, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pipe, frame = fit("decision_tree")
    version = register(uri, pipe, frame, artifact_root=tmp_path / "artifacts")
    client = make_client(uri)
    text = client.get("/metrics").text
    assert 'netsec_monitoring_live_f1{model="netsec-phishing"} NaN' in text  # no monitoring run yet

    tags = {
        "netsec.monitoring.drift_share": "0.3",
        "netsec.monitoring.drift_detected": "1",
        "netsec.monitoring.live_f1": "0.71",
        "netsec.monitoring.labelled": "120",
        "netsec.monitoring.at": "2026-01-02T03:04:05+00:00",
    }
    for k, v in tags.items():
        MlflowClient(uri).set_model_version_tag("netsec-phishing", version, k, v)
    manager = client.app.state.serving.manager
    client.portal.call(manager.refresh)  # the poll loop's next check, now
    text = client.get("/metrics").text
    for line in (
        'netsec_monitoring_drift_share{model="netsec-phishing"} 0.3',
        'netsec_monitoring_drift_detected{model="netsec-phishing"} 1.0',
        'netsec_monitoring_live_f1{model="netsec-phishing"} 0.71',
        'netsec_monitoring_labelled{model="netsec-phishing"} 120.0',
        'netsec_monitoring_last_run_timestamp_seconds{model="netsec-phishing"} 1.767323045e+09',
    ):
        assert line in text, line


def test_feedback_store_down_is_a_503_naming_it(registered, make_client):
    from netsec_testing import free_port

    dead = f"mongodb://127.0.0.1:{free_port()}/netsec?serverSelectionTimeoutMS=500"
    client = make_client(registered.tracking_uri, mongo_uri=dead)
    never_logged = "0123456789ab0123456789-0"  # not in this process: MongoDB must be asked
    resp = client.post("/feedback", json=[{"prediction_id": never_logged, "label": "threat"}])
    assert resp.status_code == 503
    assert resp.json()["detail"].startswith("mongo:netsec.predictions is unavailable")


def test_feedback_is_a_503_naming_the_setting_when_the_prediction_log_is_off(registered, make_client):
    """Verdicts are matched against logged predictions: with the log off there is no store, and
    POST /feedback says which setting turned it off (predictions still work)."""
    client = make_client(registered.tracking_uri, log_enabled=False)
    assert client.post("/predict", json={"records": records_of(training_frame(1, seed=4))}).status_code == 200
    resp = client.post("/feedback", json=[{"prediction_id": "0192f3a4b5c6d7e8f9a0b1-0", "label": "threat"}])
    assert resp.status_code == 503
    assert resp.json() == {
        "detail": "feedback needs the prediction log, which is off (NETSEC_SERVING_LOG_ENABLED=false)"
    }
