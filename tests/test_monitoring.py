"""The monitoring step and verdicts-as-training-data, against real servers: a Production model
trained by the pipeline (MLflow on SQLite, file:// storage), serving's app scoring synthetic
traffic into its JSONL prediction log and taking verdicts on POST /feedback, MongoDB (nx-27017)
for the Mongo source. Traffic is the synthetic sample: same distribution (other seeds) or shifted
(``make_sample(shift=0.8)`` reverses the value frequencies of its first 10 columns)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from netsec_tasks.sample import FEATURE_NAMES, TARGET, make_sample
from netsec_testing import REPO, SMALL_TRAINING

SHIFTED_COLUMNS = set(FEATURE_NAMES[:10])  # the columns make_sample(shift=...) moves


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Production model trained by the pipeline on the synthetic sample (file source)."""
    from netsec_tasks.config import load_config
    from netsec_tasks.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("monitoring")
    cfg = load_config(
        REPO / "config" / "pipeline.yaml",
        environ={},
        overrides={
            "workdir": str(root / "work"),
            "training.candidates": ["logistic_regression", "decision_tree"],
            **SMALL_TRAINING,
            "monitoring.min_labels": 30,
            "monitoring.bootstrap": 500,
        },
    )
    result = run_pipeline(cfg, trigger="test")
    assert result.outcome.outcome == "promoted"
    return cfg


@pytest.fixture()
def cfg(trained, tmp_path):
    """The trained registry, with this test's own prediction log and storage (state, history)."""
    return trained.with_overrides(
        {"monitoring.log_dir": str(tmp_path / "predictions"), "storage.uri": (tmp_path / "storage").as_uri()}
    )


@contextlib.contextmanager
def serving(cfg):
    """Serving's app on the trained registry, logging to the test's log dir. Leaving the block
    stops it, which writes the rest of the prediction log."""
    import time

    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    settings = Settings(
        mlflow_tracking_uri=cfg.registry.tracking_uri,
        log_dir=cfg.monitoring.log_dir,
        poll_interval_seconds=60,
        retry_interval_seconds=0.5,
        log_flush_seconds=0.2,
        inference_threads=1,
    )
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.1)
        yield client


def score(client, frame: pd.DataFrame) -> list[dict]:
    records = [
        {k: int(v) for k, v in r.items()} for r in frame.drop(columns=[TARGET]).to_dict(orient="records")
    ]
    resp = client.post("/predict", json={"records": records})
    assert resp.status_code == 200, resp.text
    return resp.json()["predictions"]


def verdicts(client, preds: list[dict], labels, **extra) -> dict:
    body = [{"prediction_id": p["prediction_id"], "label": int(y), **extra} for p, y in zip(preds, labels)]
    resp = client.post("/feedback", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def run_monitor(cfg, run_id: str, **kw):
    from netsec_tasks.monitoring import monitor
    from netsec_tasks.monitoring.step import log_and_verdicts

    reader, store = log_and_verdicts(cfg)
    return monitor(cfg, run_id, reader=reader, store=store, **kw)


def read_uri(uri: str) -> str:
    from netsec_tasks.storage import file_uri_to_path

    return file_uri_to_path(uri).read_text()


# --------------------------------------------------------------------------- the step


def test_same_distribution_traffic_no_drift_good_live_f1_no_request(cfg):
    from mlflow import MlflowClient

    from netsec_tasks.monitoring import commit

    traffic = make_sample(500, seed=101)
    with serving(cfg) as client:
        preds = score(client, traffic)
        verdicts(client, preds[:80], traffic[TARGET][:80], source="soc")
    rec = run_monitor(cfg, "unshifted-1")

    assert (rec.rows_read, rec.rows_tested, rec.rows_excluded) == (500, 500, 0)
    assert rec.drift_tested and not rec.drift_detected
    assert rec.drift_share <= cfg.drift.drift_share
    live = rec.live
    assert live["labelled"] == rec.labelled == 80 == live["tp"] + live["fp"] + live["fn"] + live["tn"]
    predicted = np.array([p["is_threat"] for p in preds[:80]], bool)
    truth = (traffic[TARGET][:80] == -1).to_numpy()
    assert live["tp"] == int((predicted & truth).sum())
    assert live["f1_ci"][0] <= live["f1"] <= live["f1_ci"][1]
    assert live["precision_ci"][0] <= live["precision"] <= live["precision_ci"][1]
    assert not rec.trigger and rec.trigger_reason.startswith("no evidence for retraining")
    # Volume, threat rate and scores against the test split.
    traffic_figs = rec.traffic
    assert traffic_figs["rows"] == traffic_figs["production_rows"] == 500
    assert traffic_figs["threat_rate"] == pytest.approx(np.mean([p["is_threat"] for p in preds]))
    assert 0 < traffic_figs["threat_rate_test"] < 1 and "ks" in traffic_figs["score"]
    # The served alert rate against what the operating point expects at a 1% threat rate: the
    # synthetic traffic is ~44% threats, so alerts are far above it, and the report says so.
    low, high = traffic_figs["alert_rate_ci"]
    assert low <= traffic_figs["alert_rate"] == traffic_figs["threat_rate"] <= high
    assert 0 < traffic_figs["expected_alert_rate"] < 0.05 < low
    assert traffic_figs["alert_rate_vs_expected"] == "above"
    # The test split decided at the model's threshold, as serving decides.
    from netsec_tasks.operating_point import decide, model_threshold
    from netsec_tasks.registry import get_production, load_version
    from netsec_tasks.storage import storage_for

    prod = get_production(cfg)
    model = load_version(cfg, prod.name, prod.version)
    test = storage_for(cfg).read_frame(prod.tags["netsec.test_uri"])
    from netsec_tasks.operating_point import threat_probability

    expected = decide(threat_probability(model, test[list(FEATURE_NAMES)]), model_threshold(model)).mean()
    assert model_threshold(model).recorded and traffic_figs["threat_rate_test"] == pytest.approx(
        expected, abs=1e-6
    )
    assert live["fpr_ci"][0] <= live["fpr"] <= live["fpr_ci"][1]

    # The YAML says what the record says; the HTML is self-contained and has the trend.
    doc = yaml.safe_load(read_uri(rec.report_uri))
    assert doc["live"]["f1"] == live["f1"] and doc["drift"]["share"] == rec.drift_share
    assert doc["trigger"] is False and doc["model_version"] == rec.model_version
    page = read_uri(rec.html_uri)
    assert "<script" not in page and 'src="http' not in page and 'href="http' not in page
    assert "Trend" in page and page.count("<svg") >= 5  # the live FPR's trend among them
    assert "<dt>Alert rate</dt>" in page and "<strong>above</strong>" in page and "<dt>Live FPR</dt>" in page
    # Mean contributions on this traffic against the test split: same distribution, small change.
    reasons = doc["reasons"]
    assert reasons["available"] is True and reasons["traffic_rows"].startswith(
        "mean contributions over 500 rows"
    )
    assert sum(c["change"] for c in reasons["columns"]) == pytest.approx(
        reasons["mean_margin"]["change"], abs=1e-4
    )
    assert "Why the alert rate moved" in page

    # Figures in MLflow against the Production version, and as its tags (serving's /metrics).
    client = MlflowClient(cfg.registry.tracking_uri)
    run = client.get_run(rec.mlflow_run_id)
    assert run.data.metrics["live_f1"] == pytest.approx(live["f1"])
    assert run.data.metrics["drift_share"] == pytest.approx(rec.drift_share)
    assert run.data.tags["netsec.model_version"] == rec.model_version
    version = client.get_model_version(rec.model_name, rec.model_version)
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    linked = {m.key: m.value for m in logged.metrics if m.run_id == rec.mlflow_run_id}
    assert linked["live_f1"] == pytest.approx(live["f1"])  # on the version's logged model
    tags = version.tags
    assert float(tags["netsec.monitoring.live_f1"]) == pytest.approx(live["f1"])
    assert tags["netsec.monitoring.run_id"] == "unshifted-1"

    # After the commit, the next run starts after the rows already read.
    commit(cfg, rec, requested=False)
    again = run_monitor(cfg, "unshifted-2")
    assert again.rows_read == 0 and not again.drift_tested and "no new traffic" in again.drift_reason
    assert again.labelled == 80  # the verdicts' window is not the watermark's
    history = [
        json.loads(x)
        for x in read_uri(cfg.storage.uri + "/monitoring/netsec-phishing/history.jsonl").splitlines()
    ]
    assert [h["run_id"] for h in history] == ["unshifted-1", "unshifted-2"]


def test_shifted_traffic_requests_retraining_once_per_version(cfg):
    from netsec_tasks.monitoring import commit

    with serving(cfg) as client:
        score(client, make_sample(500, seed=102, shift=0.8))
    rec = run_monitor(cfg, "shifted-1")
    assert rec.drift_detected and rec.drift_share > cfg.drift.drift_share
    assert set(rec.drifted_columns) <= SHIFTED_COLUMNS and rec.drifted_columns
    assert rec.trigger and rec.trigger_reason.startswith("traffic data-set drift")
    assert rec.drifted_columns[0] in rec.trigger_reason
    drift_page = read_uri(rec.report_uri.rsplit("/", 1)[0] + "/traffic_drift.html")
    assert "Data-set drift detected" in drift_page
    # Why the alert rate moved: the shifted columns' contributions moved most (a tree also moves
    # the columns it splits on below them a little), and the changes of all columns add up to
    # the change of the mean margin (additivity).
    reasons = yaml.safe_load(read_uri(rec.report_uri))["reasons"]
    assert reasons["available"] is True
    columns = reasons["columns"]
    assert {c["column"] for c in columns[:2]} <= SHIFTED_COLUMNS, columns[:5]
    moved = sum(abs(c["change"]) for c in columns)
    assert sum(abs(c["change"]) for c in columns if c["column"] in SHIFTED_COLUMNS) > 0.7 * moved
    change = reasons["mean_margin"]["change"]
    assert sum(c["change"] for c in columns) == pytest.approx(change, abs=1e-4)
    commit(cfg, rec, requested=True)

    # More shifted traffic: the same evidence for the same version is not requested again.
    with serving(cfg) as client:
        score(client, make_sample(500, seed=103, shift=0.8))
    rec2 = run_monitor(cfg, "shifted-2")
    assert rec2.drift_detected and not rec2.trigger
    assert "not requested again" in rec2.trigger_reason
    assert f"v{rec.model_version}" in rec2.trigger_reason
    # Without a cooldown it would be.
    rec3 = run_monitor(cfg.with_overrides({"monitoring.cooldown_hours": 0}), "shifted-3")
    assert rec3.trigger


def test_live_f1_alarm_needs_enough_verdicts_and_a_confident_interval(cfg):
    from netsec_tasks.monitoring import commit

    traffic = make_sample(300, seed=104)
    with serving(cfg) as client:
        preds = score(client, traffic)
        # The analysts disagree with the model on every row they look at.
        flipped = [1 if p["is_threat"] else -1 for p in preds]
        verdicts(client, preds[:20], flipped[:20])
    few = run_monitor(cfg, "live-1")
    assert not few.drift_detected and few.live["labelled"] == 20
    assert few.live["f1"] == 0 and not few.trigger
    assert "fewer than min_labels=30" in few.live["decision"]
    commit(cfg, few, requested=False)

    with serving(cfg) as client:
        verdicts(client, preds[20:100], flipped[20:100])
    enough = run_monitor(cfg, "live-2")
    assert enough.rows_read == 0 and enough.live["labelled"] == 100
    assert enough.live["f1_ci"][1] < cfg.monitoring.f1_floor
    assert enough.trigger and "below the floor" in enough.trigger_reason
    # Every alert the analysts judged was benign: the live FPR's interval is over the budget, a
    # retraining reason of its own, named in the outcome.
    live = enough.live
    assert live["fp"] + live["tn"] >= cfg.monitoring.min_labels and live["fpr"] == 1.0
    assert live["fpr_ci"][0] > live["max_false_positive_rate"] == 0.01
    assert "over the false-positive budget 1% (decision.max_false_positive_rate)" in enough.trigger_reason
    page = read_uri(enough.html_uri)
    assert "<td>False-positive rate</td>" in page and "Clopper-Pearson (FPR)" in page
    assert float(enough_tags(cfg, enough)["netsec.monitoring.live_fpr_low"]) == pytest.approx(
        live["fpr_ci"][0]
    )


def enough_tags(cfg, rec) -> dict:
    from mlflow import MlflowClient

    return MlflowClient(cfg.registry.tracking_uri).get_model_version(rec.model_name, rec.model_version).tags


def test_live_fpr_alarm_needs_benign_verdicts_and_a_confident_interval():
    from netsec_tasks.monitoring import fpr_over_budget, live_metrics

    # 3 false alerts among 200 benign verdicts: 1.5%, but its interval reaches below 1%.
    truth = np.r_[np.zeros(200), np.ones(50)].astype(bool)
    pred = np.r_[np.ones(3), np.zeros(197), np.ones(50)].astype(bool)
    live = live_metrics(truth, pred, bootstrap=100)
    assert live["fpr"] == pytest.approx(0.015) and live["fpr_ci"][0] < 0.01 < live["fpr_ci"][1]
    alarm, why = fpr_over_budget(live, budget=0.01, min_labels=50)
    assert not alarm and "not over the false-positive budget" in why
    # 20 of 200: the whole interval is above 1%.
    pred[:20] = True
    alarm, why = fpr_over_budget(live_metrics(truth, pred, bootstrap=100), budget=0.01, min_labels=50)
    assert alarm and "live FPR 10%" in why
    # Too few benign verdicts never raise it.
    alarm, why = fpr_over_budget(
        live_metrics(truth[150:], pred[150:], bootstrap=100), budget=0.01, min_labels=80
    )
    assert not alarm and "fewer than min_labels=80" in why


def test_thin_traffic_waits_for_enough_rows(cfg):
    from netsec_tasks.monitoring import commit

    with serving(cfg) as client:
        score(client, make_sample(50, seed=105, shift=0.8))
    thin = run_monitor(cfg, "thin-1")
    assert thin.rows_read == 50 and not thin.drift_tested and not thin.advance
    assert "fewer than monitoring.min_rows=200" in thin.drift_reason
    commit(cfg, thin, requested=False)
    with serving(cfg) as client:
        score(client, make_sample(200, seed=106, shift=0.8))
    rec = run_monitor(cfg, "thin-2")
    assert rec.rows_read == rec.rows_tested == 250 and rec.drift_detected  # the 50 waited


def test_rows_breaking_the_contract_are_left_out_and_reported(cfg):
    from netsec_tasks.prediction_log import new_request_id, prediction_documents

    with serving(cfg) as client:
        score(client, make_sample(300, seed=107))
    # Another writer logged rows the schema refuses (an unknown code in SSLfinal_State).
    x = make_sample(7, seed=108).drop(columns=[TARGET]).to_numpy(float).copy()
    x[:, FEATURE_NAMES.index("SSLfinal_State")] = 7
    now = dt.datetime.now(dt.UTC)
    docs = prediction_documents(
        time=now,
        model_name="netsec-phishing",
        model_version="0",
        route="/predict",
        features=FEATURE_NAMES,
        inputs=x,
        is_threat=np.zeros(7),
        probability=np.zeros(7),
        labels=[1] * 7,
        request_id=new_request_id(now),
    )
    log_file = Path(cfg.monitoring.log_dir) / "netsec-phishing" / f"predictions-{now:%Y-%m-%d}.jsonl"
    with open(log_file, "a") as fh:
        fh.write(json.dumps(docs[0], default=str) + "\n")
    rec = run_monitor(cfg, "excluded-1")
    assert (rec.rows_read, rec.rows_tested, rec.rows_excluded) == (307, 300, 7)
    assert rec.drift_tested and not rec.drift_detected
    assert rec.contract["share"] == pytest.approx(7 / 307, abs=1e-5) and not rec.contract["surge"]
    excluded = yaml.safe_load(read_uri(rec.report_uri))["drift"]["excluded"]
    assert excluded["rows_excluded"] == 7 and excluded["examples"][0]["column"] == "SSLfinal_State"
    assert "7 of 307 logged rows break the input contract" in read_uri(rec.html_uri).replace(",", "")


def _log_rows(cfg, frame: pd.DataFrame, model_name: str = "netsec-phishing") -> None:
    """Rows another writer logged under the model (as serving's log format)."""
    from netsec_tasks.prediction_log import new_request_id, prediction_documents

    now = dt.datetime.now(dt.UTC)
    n = len(frame)
    (doc,) = prediction_documents(
        time=now,
        model_name=model_name,
        model_version="1",
        route="/predict",
        features=FEATURE_NAMES,
        inputs=frame[FEATURE_NAMES].to_numpy(float),
        is_threat=np.zeros(n),
        probability=np.zeros(n),
        labels=[1] * n,
        request_id=new_request_id(now),
    )
    folder = Path(cfg.monitoring.log_dir) / model_name
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"predictions-{now:%Y-%m-%d}.jsonl", "a") as fh:
        fh.write(json.dumps(doc, default=str) + "\n")


def test_a_surge_of_contract_violations_is_its_own_finding(cfg):
    """An upstream encoding change (Favicon=0) breaks the contract for most served rows: the
    drift on the rows left is not judged, the surge is reported on its own (report, MLflow tags
    that /metrics reads), and the decision says whether it requests a retraining."""
    from mlflow import MlflowClient

    traffic = make_sample(400, seed=114)
    traffic.loc[:379, "Favicon"] = 0
    _log_rows(cfg, traffic)
    rec = run_monitor(cfg, "surge-1")
    assert rec.contract["surge"] and (rec.contract["rows_checked"], rec.contract["rows_excluded"]) == (
        400,
        380,
    )
    assert not rec.drift_tested and not rec.drift_detected
    assert rec.drift_reason.startswith(
        "not judged: 380 of 400 served rows (95%) break the input contract in Favicon"
    )
    assert not rec.trigger
    assert rec.trigger_reason.startswith("contract violations: 380 of 400 served rows")
    assert "retrain_on_contract_violations: false" in rec.trigger_reason
    page = read_uri(rec.html_uri)
    assert page.index("Contract violations") < page.index("Traffic drift")
    assert yaml.safe_load(read_uri(rec.report_uri))["contract_violations"]["surge"] is True
    tags = MlflowClient(cfg.registry.tracking_uri).get_model_version(rec.model_name, rec.model_version).tags
    assert tags["netsec.monitoring.contract_violations"] == "1"
    assert float(tags["netsec.monitoring.contract_violation_share"]) == pytest.approx(0.95)
    # Decided explicitly by configuration: with it on, the surge is the request's evidence.
    on = run_monitor(cfg.with_overrides({"monitoring.retrain_on_contract_violations": True}), "surge-2")
    assert on.trigger and on.trigger_reason.startswith("contract violations: 380 of 400")


@pytest.mark.slow
def test_false_alarm_rate_on_same_distribution_traffic_over_many_seeds(trained):
    """The decision monitor() makes (drift, live F1, live FPR against the budget), on 150 seeds of
    same-distribution traffic (with verdicts from the true labels): never a request. And on
    shifted traffic: nearly always one."""
    from statsmodels.stats.proportion import proportion_confint

    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.drift import load_reference
    from netsec_tasks.monitoring import decide, f1_below_floor, fpr_over_budget, live_metrics
    from netsec_tasks.monitoring.traffic import traffic_drift
    from netsec_tasks.operating_point import decision_policy
    from netsec_tasks.registry import get_production, load_production_model
    from netsec_tasks.storage import storage_for

    cfg = trained
    schema = load_schema(cfg.schema_path)
    prod = get_production(cfg)
    reference = load_reference(prod.reference_uri, storage=storage_for(cfg))
    model, _ = load_production_model(cfg)
    m = cfg.monitoring
    budget = decision_policy(cfg).budget

    def requested(seed: int, shift: float) -> bool:
        traffic = make_sample(400, seed=seed, shift=shift)
        result, _, reason = traffic_drift(reference, traffic, schema, cfg, source="seed")
        labelled = traffic.sample(60, random_state=seed)
        pred = model.predict(labelled[schema.features]).astype(bool)
        live = live_metrics((labelled[TARGET] == -1).to_numpy(), pred, bootstrap=m.bootstrap, seed=seed)
        alarm, f1_reason = f1_below_floor(live, floor=m.f1_floor, min_labels=m.min_labels)
        fpr_alarm, fpr_reason = fpr_over_budget(live, budget=budget, min_labels=m.min_labels)
        return decide(
            drift_detected=bool(result is not None and result.dataset_drift),
            drift_reason=reason,
            f1_alarm=alarm,
            f1_reason=f1_reason,
            fpr_alarm=fpr_alarm,
            fpr_reason=fpr_reason,
            production_version=prod.version,
            last_trigger=None,
            now=dt.datetime.now(dt.UTC),
            cfg=cfg,
        )[0]

    seeds = range(5000, 5150)
    false_alarms = sum(requested(s, 0.0) for s in seeds)
    upper = proportion_confint(false_alarms, len(seeds), alpha=0.05, method="wilson")[1]
    shifted = range(6000, 6020)
    detected = sum(requested(s, 0.8) for s in shifted)
    print(
        f"false-alarm rate {false_alarms}/{len(seeds)} (95% upper bound {upper:.3f}); "
        f"shifted traffic requested {detected}/{len(shifted)}"
    )
    assert false_alarms == 0
    assert detected >= 0.9 * len(shifted)


# --------------------------------------------------------------------------- verdicts -> training


def _verdict_rows(cfg, traffic: pd.DataFrame, labels) -> list[str]:
    with serving(cfg) as client:
        preds = score(client, traffic)
        verdicts(client, preds, labels, source="soc")
    return [p["prediction_id"] for p in preds]


def test_verdicts_become_file_source_training_rows_once_and_reach_the_next_snapshot(cfg):
    from netsec_tasks.feedback import PREDICTION_ID_FIELD, feedback_rows_uri, feedback_to_training
    from netsec_tasks.ingest import ingest
    from netsec_tasks.monitoring.step import log_and_verdicts
    from netsec_tasks.records import RunContext
    from netsec_tasks.registry import get_production
    from netsec_tasks.split import row_hashes
    from netsec_tasks.storage import storage_for

    storage = storage_for(cfg)
    before = ingest(cfg, RunContext.create(cfg, run_id="before-feedback"))

    # 20 new rows with the analyst's labels, and one row identical to a Production training
    # row, labelled the other way: a contradiction.
    train = storage.read_frame(get_production(cfg).tags["netsec.train_uri"])
    twin = train.iloc[[0]][FEATURE_NAMES + [TARGET]].astype(int)
    contradiction = -int(twin[TARGET].iloc[0])
    traffic = pd.concat([make_sample(20, seed=109), twin], ignore_index=True)
    labels = list(traffic[TARGET][:20]) + [contradiction]
    ids = _verdict_rows(cfg, traffic, labels)

    reader, store = log_and_verdicts(cfg)
    first = feedback_to_training(cfg, store=store, log_reader=reader)
    assert (first.verdicts, first.with_features, first.appended) == (21, 21, 21)
    assert first.conflicts == 1 and first.conflicts_held == 0
    assert first.conflict_examples[0]["prediction_id"] == ids[20]
    assert first.conflict_examples[0]["training_labels"] == [str(int(twin[TARGET].iloc[0]))]
    rows = storage.read_frame(feedback_rows_uri(storage, cfg.registry.model_name))
    assert sorted(rows[PREDICTION_ID_FIELD]) == sorted(ids)
    assert set(rows["_netsec_source"]) == {"feedback"} and rows["_netsec_feedback_at"].notna().all()
    assert rows.set_index(PREDICTION_ID_FIELD).loc[ids, TARGET].tolist() == labels

    # Idempotent: nothing twice. A verdict changed afterwards is counted, not applied.
    with serving(cfg) as client:
        client.post("/feedback", json=[{"prediction_id": ids[0], "label": -labels[0]}])
    again = feedback_to_training(cfg, store=store, log_reader=reader)
    assert (again.appended, again.already_present) == (0, 21)
    assert again.changed_after_append == 1 and again.changed_examples == [ids[0]]
    assert len(storage.read_frame(feedback_rows_uri(storage, cfg.registry.model_name))) == 21

    # The next training snapshot holds them (without their provenance fields).
    after = ingest(cfg, RunContext.create(cfg, run_id="after-feedback"))
    assert after.rows == before.rows + 21
    snapshot = storage.read_frame(after.snapshot_uri)
    assert not [c for c in snapshot.columns if c.startswith("_netsec_") and c != "_netsec_time"]
    mine = row_hashes(traffic.assign(**{TARGET: labels}), FEATURE_NAMES + [TARGET])
    assert np.isin(mine, row_hashes(snapshot, FEATURE_NAMES + [TARGET])).all()

    # With on_conflict=hold, a new contradiction is listed and not appended, run after run.
    other = train.iloc[[1]][FEATURE_NAMES + [TARGET]].astype(int)
    (held_id,) = _verdict_rows(cfg, other, [-int(other[TARGET].iloc[0])])
    hold = cfg.with_overrides({"monitoring.on_conflict": "hold"})
    for _ in range(2):
        held = feedback_to_training(hold, store=store, log_reader=reader)
        assert (held.conflicts, held.conflicts_held, held.appended) == (1, 1, 0)
        assert held.conflict_examples[0]["prediction_id"] == held_id
    assert held_id not in set(
        storage.read_frame(feedback_rows_uri(storage, cfg.registry.model_name))[PREDICTION_ID_FIELD]
    )


def test_verdicts_become_mongo_documents_under_push_datas_key(cfg, mongo_server, mongo_db, tmp_path):
    from netsec_tasks.feedback import feedback_to_training
    from netsec_tasks.ingest import commit, ingest
    from netsec_tasks.monitoring.step import log_and_verdicts
    from netsec_tasks.records import RunContext
    from netsec_tasks.sources.mongo import KEY_FIELD, push_data

    mongo, db = mongo_db
    mcfg = cfg.with_overrides(
        {"source.kind": "mongo", "source.mongo.uri": mongo_server.uri, "source.mongo.database": db}
    )
    csv = tmp_path / "seed.csv"
    make_sample(400, seed=110).to_csv(csv, index=False)
    push_data(csv, mcfg)
    first = ingest(mcfg, RunContext.create(mcfg, run_id="mongo-1"))
    commit(mcfg, first)

    traffic = make_sample(15, seed=111)
    ids = _verdict_rows(mcfg, traffic, traffic[TARGET])
    reader, store = log_and_verdicts(mcfg)
    rec = feedback_to_training(mcfg, store=store, log_reader=reader, mongo_client=mongo)
    assert rec.appended == 15 and rec.destination == f"mongo:{db}.phishing"
    docs = list(mongo[db]["phishing"].find({"_netsec_source": "feedback"}))
    assert sorted(d[KEY_FIELD] for d in docs) == sorted(f"feedback:{i}" for i in ids)
    assert {d["_netsec_load"] for d in docs} == {"feedback"}
    assert sorted(d["_netsec_prediction_id"] for d in docs) == sorted(ids)
    assert all(isinstance(d["having_IP_Address"], int) for d in docs)
    # Re-running inserts nothing: push-data's unique index on the key covers them.
    assert feedback_to_training(mcfg, store=store, log_reader=reader, mongo_client=mongo).appended == 0
    assert mongo[db]["phishing"].count_documents({}) == 415

    # The next (incremental) ingest reads them as the new batch; provenance never becomes data.
    second = ingest(mcfg, RunContext.create(mcfg, run_id="mongo-2"))
    assert (second.new_rows, second.rows) == (15, 415)
    new_batch = pd.read_parquet(second.new_batch_uri.removeprefix("file://"))
    assert not [c for c in new_batch.columns if c.startswith("_netsec_")]


def test_netsec_monitor_runs_the_steps_in_process(cfg):
    import os
    import subprocess
    import sys

    shifted = make_sample(300, seed=112, shift=0.8)
    with serving(cfg) as client:
        preds = score(client, shifted)
        verdicts(client, preds[:5], shifted[TARGET][:5])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSEC_", "MLFLOW_"))}
    env.update(
        {
            "NETSEC_HOME": cfg.workdir,
            "NETSEC_MONITORING__LOG_DIR": cfg.monitoring.log_dir,
            "NETSEC_STORAGE__URI": cfg.storage.uri,
        }
    )
    netsec = [sys.executable, "-m", "netsec_tasks.cli", "--config", str(REPO / "config" / "pipeline.yaml")]
    from netsec_tasks.feedback import feedback_rows_uri
    from netsec_tasks.storage import storage_for

    storage = storage_for(cfg)
    # A dry run reports and changes nothing: no verdict rows, no watermark.
    dry = subprocess.run(
        [*netsec, "monitor", "--dry-run"], env=env, capture_output=True, text=True, timeout=300
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "traffic: 300 new rows" in dry.stdout and "not appended (--dry-run)" in dry.stdout
    assert not storage.exists(feedback_rows_uri(storage, cfg.registry.model_name))
    out = subprocess.run([*netsec, "monitor"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "traffic: 300 new rows; data-set drift" in out.stdout
    assert len(storage.read_frame(feedback_rows_uri(storage, cfg.registry.model_name))) == 5
    assert "WOULD REQUEST retraining" in out.stdout and "monitoring_report.html" in out.stdout
    again = subprocess.run([*netsec, "monitor"], env=env, capture_output=True, text=True, timeout=300)
    assert "traffic: 0 new rows" in again.stdout  # the first run committed its watermark


def test_verdict_labels_follow_the_schemas_label_mapping():
    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.feedback import feedback_label, label_vocabulary

    phishing = load_schema(REPO / "config" / "schema" / "phishing.yaml")
    assert feedback_label(phishing, "threat") == (-1, True)
    assert feedback_label(phishing, " Benign ") == (1, False)
    assert feedback_label(phishing, "-1") == (-1, True) and feedback_label(phishing, 1.0) == (1, False)
    for bad in (0, True, None, "phishing", ""):
        with pytest.raises(ValueError, match="label vocabulary of the 'phishing' data set"):
            feedback_label(phishing, bad)
    assert label_vocabulary(phishing) == ["threat", "benign", -1, 1]

    # "Everything but normal": any attack name is a threat; "threat" alone names no label.
    intrusion = load_schema(REPO / "config" / "schema" / "intrusion_demo.yaml")
    assert feedback_label(intrusion, "benign") == ("normal", False)
    assert feedback_label(intrusion, "neptune") == ("neptune", True)
    assert feedback_label(intrusion, "a_new_attack") == ("a_new_attack", True)
    with pytest.raises(ValueError, match="several threat labels; send the row's own label"):
        feedback_label(intrusion, "threat")


def test_monitoring_reads_the_log_and_verdicts_from_mongodb(cfg, mongo_server, mongo_db):
    """Compose's setting: serving logs to MongoDB, the monitoring step reads it there."""
    import time

    from fastapi.testclient import TestClient

    from netsec_tasks.monitoring import commit
    from serving.app import create_app
    from serving.settings import Settings

    mongo, db = mongo_db
    mcfg = cfg.with_overrides(
        {
            "monitoring.store": "mongo",
            "source.mongo.uri": mongo_server.uri,
            "source.mongo.database": db,
            "monitoring.min_labels": 20,
        }
    )
    settings = Settings(
        mlflow_tracking_uri=cfg.registry.tracking_uri,
        log_flush_seconds=0.2,
        mongo_uri=mongo_server.uri.rsplit("/", 1)[0] + f"/{db}",
    )
    traffic = make_sample(300, seed=113, shift=0.8)
    with TestClient(create_app(settings)) as client:
        while client.get("/ready").status_code != 200:
            time.sleep(0.1)
        preds = score(client, traffic[:150]) + score(client, traffic[150:])
        verdicts(client, preds[:30], traffic[TARGET][:30])
    assert mongo[db]["predictions"].count_documents({}) == 2
    assert mongo[db]["feedback"].count_documents({}) == 30
    rec = run_monitor(mcfg, "mongo-log-1")
    assert rec.log == f"mongo:{db}.predictions[model_name=netsec-phishing]" and rec.documents_read == 2
    assert rec.rows_read == rec.rows_tested == 300 and rec.drift_detected
    assert rec.labelled == 30 and rec.trigger
    assert set(rec.watermark) == {"last_id"}
    commit(mcfg, rec, requested=True)
    assert run_monitor(mcfg, "mongo-log-2").rows_read == 0
