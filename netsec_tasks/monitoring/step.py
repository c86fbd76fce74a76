"""The monitoring step (``monitor``) and its commit (``commit``): what the ``netsec_monitoring``
DAG runs every hour, also callable in process (``netsec monitor``).

One run:

1. reads serving's prediction log after its own watermark (``monitoring/state.py``);
2. tests the new rows for drift against Production's training data (``netsec.train_uri``),
   after the input contract, reporting the rows it left out (``monitoring/traffic.py``);
3. joins the analysts' standing verdicts with the logged predictions they judge: live
   precision, recall and F1 of the threat class, with counts and intervals, over the
   Production version's predictions of the last ``monitoring.window_hours`` (``live.py``);
4. compares volume, threat rate and score distribution with Production on its test split;
5. decides whether to request a retraining (:func:`decide`): traffic drift, or live F1
   confidently below ``monitoring.f1_floor`` with at least ``monitoring.min_labels`` verdicts,
   and not within ``monitoring.cooldown_hours`` of a request for the same Production version;
6. writes ``<storage>/monitoring/runs/<run>/monitoring_report.yaml`` and ``.html`` (with the
   trend of past runs from ``<storage>/monitoring/history.jsonl``) and the per-column
   ``traffic_drift.html``; logs the figures to MLflow (experiment ``monitoring.experiment``, one
   run per monitoring run, metrics linked to Production's logged model) and sets them as tags
   ``netsec.monitoring.*`` on the Production model version, where serving's ``/metrics`` reads
   them.

The request itself is an Airflow asset event, emitted by the DAG's ``request_retraining``
task; this module never imports Airflow. :func:`commit` then records the watermark (and the
request, for the cooldown), so a failed run leaves both as they were.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.config import PipelineConfig
from netsec_tasks.monitoring.live import f1_below_floor, live_metrics
from netsec_tasks.monitoring.report import render_html, render_yaml
from netsec_tasks.monitoring.state import (
    LastTrigger,
    MonitoringState,
    append_history,
    read_state,
    write_state,
)
from netsec_tasks.monitoring.traffic import threat_scores, traffic_drift, traffic_figures
from netsec_tasks.records import FeedbackRecord, MonitoringRecord, safe_name
from netsec_tasks.tracking import TAG_PREFIX

log = logging.getLogger(__name__)

MONITORING_TAG_PREFIX = TAG_PREFIX + "monitoring."


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_dir(storage, run_id: str) -> str:
    return storage.uri("monitoring", "runs", safe_name(run_id))


def log_and_verdicts(cfg: PipelineConfig, mongo_client=None) -> tuple[Any, Any]:
    """(prediction-log reader, verdict store) where serving writes them: JSONL files in
    ``monitoring.log_dir`` (``feedback.jsonl`` beside the day files), or the collections
    ``monitoring.predictions_collection`` / ``feedback_collection`` of ``source.mongo.database``
    (``mongo_client``: e.g. from the netsec_mongo connection; None: ``source.mongo.uri``)."""
    from pathlib import Path

    from netsec_tasks.feedback import FILE_NAME, JsonlFeedbackStore, MongoFeedbackStore
    from netsec_tasks.prediction_log import JsonlLogReader, MongoLogReader

    m = cfg.monitoring
    if m.store == "file":
        return (JsonlLogReader(m.log_dir), JsonlFeedbackStore(Path(m.log_dir) / FILE_NAME))
    if mongo_client is None:
        from netsec_tasks.sources.mongo import connect

        mongo_client = connect(cfg.source.mongo.uri, cfg.source.mongo.server_selection_timeout_ms)
    db = mongo_client[cfg.source.mongo.database]
    return MongoLogReader(db[m.predictions_collection]), MongoFeedbackStore(db[m.feedback_collection])


# --------------------------------------------------------------------------- decision


def decide(
    *,
    drift_detected: bool,
    drift_reason: str,
    f1_alarm: bool,
    f1_reason: str,
    production_version: str | None,
    last_trigger: LastTrigger | None,
    now: dt.datetime,
    cfg: PipelineConfig,
) -> tuple[bool, str]:
    """(request a retraining?, why). Evidence: traffic drift (``monitoring.retrain_on_drift``)
    or live F1 confidently below the floor; a request for the same Production version within
    ``monitoring.cooldown_hours`` is not repeated."""
    m = cfg.monitoring
    evidence = []
    if drift_detected and m.retrain_on_drift:
        evidence.append(f"traffic {drift_reason}")
    if f1_alarm:
        evidence.append(f1_reason)
    if not evidence:
        return False, f"no evidence for retraining: {drift_reason}; {f1_reason}"
    why = "; ".join(evidence)
    if production_version is None:
        return False, f"{why}; but there is no Production model to replace"
    if (
        last_trigger is not None
        and last_trigger.model_version == production_version
        and now - last_trigger.at < dt.timedelta(hours=m.cooldown_hours)
    ):
        return False, (
            f"{why}; not requested again: a retraining was requested for "
            f"v{production_version} at {last_trigger.at.isoformat(timespec='minutes')} "
            f"(cooldown {m.cooldown_hours:g} h)"
        )
    return True, why


# --------------------------------------------------------------------------- live metrics


def labelled_predictions(verdicts: pd.DataFrame, reader, *, since: dt.datetime) -> pd.DataFrame:
    """The standing verdicts on predictions made since ``since``, joined with the logged
    prediction they judge (``is_threat`` of the model as ``predicted``, ``model_version``)."""
    from netsec_tasks.prediction_log import parse_prediction_id, request_time, rows_of

    if verdicts.empty:
        return pd.DataFrame(columns=["prediction_id", "verdict", "predicted", "model_version"])
    parsed = [parse_prediction_id(p) for p in verdicts["prediction_id"]]
    recent = np.array([request_time(rid) >= since for rid, _ in parsed], dtype=bool)
    verdicts = verdicts[recent]
    logged = rows_of(
        reader.find_requests({rid for (rid, _), r in zip(parsed, recent) if r}), verdicts["prediction_id"]
    )
    if logged.empty:
        return pd.DataFrame(columns=["prediction_id", "verdict", "predicted", "model_version"])
    joined = verdicts.merge(
        logged[["prediction_id", "is_threat", "model_version"]],
        on="prediction_id",
        how="inner",
        suffixes=("", "_logged"),
    )
    return pd.DataFrame(
        {
            "prediction_id": joined["prediction_id"],
            "verdict": joined["is_threat"].astype(bool),
            "predicted": joined["is_threat_logged"].astype(int).astype(bool),
            "model_version": joined["model_version"].astype(str),
        }
    )


# --------------------------------------------------------------------------- MLflow


def _figures(record: MonitoringRecord) -> dict[str, float]:
    live = record.live
    out = {
        "rows": record.rows_read,
        "rows_tested": record.rows_tested,
        "rows_excluded": record.rows_excluded,
        "labelled": record.labelled,
        "trigger": float(record.trigger),
    }
    if record.drift_tested:
        out.update(drift_share=record.drift_share or 0.0, drift_detected=float(record.drift_detected))
    for key in ("precision", "recall", "f1"):
        if live.get(key) is not None:
            out[f"live_{key}"] = live[key]
            ci = live.get(f"{key}_ci")
            if ci:
                out[f"live_{key}_low"], out[f"live_{key}_high"] = ci
    for key in ("threat_rate", "threat_rate_test", "rows_per_hour"):
        if record.traffic.get(key) is not None:
            out[key] = record.traffic[key]
    score = record.traffic.get("score")
    if score:
        out.update(score_mean=score["mean"], score_ks=score["ks"])
    return {k: float(v) for k, v in out.items()}


def log_to_mlflow(cfg: PipelineConfig, record: MonitoringRecord, texts: dict[str, str]) -> str | None:
    """One MLflow run per monitoring run (experiment ``monitoring.experiment``) holding the
    figures, linked to Production's logged model, and the reports; the figures also become tags
    ``netsec.monitoring.*`` of the Production model version. Returns the MLflow run id."""
    from mlflow.entities import Metric, RunTag

    from netsec_tasks.outages import mlflow_errors
    from netsec_tasks.tracking import configure_mlflow, logged_model_id, mlflow_client

    if record.model_version is None:
        return None
    with mlflow_errors(cfg, "log the monitoring figures"):
        exp_id = configure_mlflow(cfg.with_overrides({"registry.experiment": cfg.monitoring.experiment}))
        client = mlflow_client(cfg)
        mv = client.get_model_version(record.model_name, record.model_version)
        # The version's logged model (MLflow 3), so the figures show on the model's page; the
        # SQLite store leaves model_id empty, its source models:/m-<id> names it.
        model_id = logged_model_id(mv)
        found = client.search_runs(
            [exp_id],
            filter_string=f"tags.`netsec.monitoring_run_id` = '{record.run_id.replace(chr(39), '')}'",
            max_results=1,
        )
        if found:  # a retried task: the same MLflow run
            run_id = found[0].info.run_id
        else:
            run_id = client.create_run(
                exp_id,
                run_name=f"monitoring {record.run_id}",
                tags={
                    "netsec.monitoring_run_id": record.run_id,
                    "netsec.model_name": record.model_name,
                    "netsec.model_version": record.model_version,
                    "mlflow.note.content": record.trigger_reason,
                },
            ).info.run_id
        ts = int(utcnow().timestamp() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, 0, model_id=model_id) for k, v in _figures(record).items()],
            tags=[
                RunTag("netsec.trigger", str(record.trigger).lower()),
                RunTag("netsec.trigger_reason", record.trigger_reason[:5000]),
            ],
        )
        for name, text in texts.items():
            client.log_text(run_id, text, name)
        client.set_terminated(run_id)
        tags = served_tags(record)
        for key, value in tags.items():
            client.set_model_version_tag(record.model_name, record.model_version, key, value)
    return run_id


def served_tags(record: MonitoringRecord) -> dict[str, str]:
    """The model version tags serving reads (``netsec.monitoring.<figure>``; empty: unknown)."""
    ci = record.live.get("f1_ci") or [None, None]
    values = {
        "drift_share": record.drift_share if record.drift_tested else None,
        "drift_detected": int(record.drift_detected) if record.drift_tested else None,
        "live_f1": record.live.get("f1"),
        "live_f1_low": ci[0],
        "live_f1_high": ci[1],
        "labelled": record.labelled,
        "threat_rate": record.traffic.get("threat_rate"),
        "rows": record.rows_read,
        "trigger": int(record.trigger),
        "at": utcnow().isoformat(timespec="seconds"),
        "run_id": record.run_id,
    }
    return {MONITORING_TAG_PREFIX + k: "" if v is None else str(v) for k, v in values.items()}


# --------------------------------------------------------------------------- the step


def monitor(
    cfg: PipelineConfig,
    run_id: str,
    *,
    reader,
    store,
    feedback: FeedbackRecord | None = None,
    now: dt.datetime | None = None,
    mlflow: bool = True,
) -> MonitoringRecord:
    """One monitoring run over ``reader`` (the prediction log) and ``store`` (the verdicts).

    ``feedback``: what ``feedback_to_training`` did this run, for the report. Raises
    SourceUnavailable when storage, the log, MongoDB or MLflow cannot be reached.
    """
    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.drift import load_reference
    from netsec_tasks.drift.report import render_html as drift_html
    from netsec_tasks.prediction_log import prediction_frame
    from netsec_tasks.registry import get_production, load_version
    from netsec_tasks.storage import storage_for

    now = now or utcnow()
    m = cfg.monitoring
    schema = load_schema(cfg.schema_path)
    storage = storage_for(cfg)
    state = read_state(storage, reader.describe())
    prod = get_production(cfg)
    version = prod.version if prod else None

    docs, watermark = reader.read_since(state.watermark if state else None, m.max_documents)
    traffic = (
        prediction_frame(docs)
        if docs
        else pd.DataFrame(columns=["time", "model_version", "is_threat", "threat_probability"])
    )
    log.info(
        "monitoring %s: %d new log documents (%d rows) from %s; Production %s",
        run_id,
        len(docs),
        len(traffic),
        reader.describe(),
        f"v{version}" if version else "none",
    )

    # Traffic drift against Production's training data.
    reference = None
    if prod is not None and prod.reference_uri:
        reference = load_reference(
            prod.reference_uri, tracking_uri=cfg.registry.tracking_uri, storage=storage
        )
    result, excluded, drift_reason = traffic_drift(reference, traffic, schema, cfg, source=reader.describe())
    wait = (
        result is None
        and reference is not None
        and len(traffic) > 0
        and len(traffic) - excluded.get("rows_excluded", 0) < m.min_rows
    )

    # Live metrics from the verdicts.
    since = now - dt.timedelta(hours=m.window_hours)
    labelled = labelled_predictions(store.current(), reader, since=since)
    mine = labelled[labelled["model_version"] == str(version)] if version else labelled.iloc[0:0]
    live = live_metrics(
        mine["verdict"].to_numpy(bool),
        mine["predicted"].to_numpy(bool),
        confidence=m.confidence,
        bootstrap=m.bootstrap,
        seed=m.seed,
    )
    f1_alarm, f1_reason = f1_below_floor(live, floor=m.f1_floor, min_labels=m.min_labels)
    live.update(other_versions=int(len(labelled) - len(mine)), decision=f1_reason)

    # Volume, threat rate and scores against the test split.
    test_scores = None
    test_uri = prod.tags.get("netsec.test_uri") if prod else None
    if (
        prod is not None
        and test_uri
        and not traffic.empty
        and (traffic["model_version"] == str(version)).any()
    ):
        model = load_version(cfg, prod.name, prod.version)
        test_scores = threat_scores(model, storage.read_frame(test_uri), schema)
    figures = traffic_figures(
        traffic,
        production_version=version,
        test_scores=test_scores,
        cfg=cfg,
        documents=len(docs),
        since=state.committed_at if state else None,
        until=now,
    )

    trigger, reason = decide(
        drift_detected=bool(result is not None and result.dataset_drift),
        drift_reason=drift_reason,
        f1_alarm=f1_alarm,
        f1_reason=f1_reason,
        production_version=version,
        last_trigger=state.last_trigger if state else None,
        now=now,
        cfg=cfg,
    )
    log.info("monitoring %s: %s: %s", run_id, "retraining requested" if trigger else "no request", reason)

    record = MonitoringRecord(
        run_id=run_id,
        model_name=cfg.registry.model_name,
        model_version=version,
        log=reader.describe(),
        documents_read=len(docs),
        rows_read=int(len(traffic)),
        rows_tested=result.n_current if result is not None else 0,
        rows_excluded=int(excluded.get("rows_excluded", 0)),
        drift_tested=result is not None,
        drift_detected=bool(result is not None and result.dataset_drift),
        drift_share=float(result.drift_share) if result is not None else None,
        drifted_columns=result.drifted_columns if result is not None else [],
        drift_reason=drift_reason,
        labelled=int(live["labelled"]),
        live=live,
        traffic=figures,
        trigger=trigger,
        trigger_reason=reason,
        watermark=watermark,
        advance=not wait,
    )

    # Reports, history, MLflow.
    base = run_dir(storage, run_id)
    entry = {
        "run_id": run_id,
        "at": now.isoformat(timespec="seconds"),
        "model_version": version,
        "rows": record.rows_read,
        "rows_per_hour": figures.get("rows_per_hour"),
        "drift_share": record.drift_share,
        "drift_detected": record.drift_detected,
        "live_f1": live.get("f1"),
        "live_f1_ci": live.get("f1_ci"),
        "labelled": record.labelled,
        "threat_rate": figures.get("threat_rate"),
        "trigger": trigger,
    }
    history = append_history(storage, entry, m.trend_runs)
    doc: dict[str, Any] = {
        "generated_at": now.isoformat(timespec="seconds"),
        "run_id": run_id,
        "model_name": record.model_name,
        "model_version": version,
        "log": record.log,
        "trigger": trigger,
        "trigger_reason": reason,
        "drift": {
            "tested": record.drift_tested,
            "detected": record.drift_detected,
            "share": record.drift_share,
            "reason": drift_reason,
            "drifted_columns": record.drifted_columns,
            "rows_tested": record.rows_tested,
            "reference_uri": prod.reference_uri if prod else None,
            "excluded": excluded,
            "waiting_for_rows": wait,
        },
        "live": live,
        "traffic": figures,
        "window_hours": m.window_hours,
        "f1_floor": m.f1_floor,
        "min_labels": m.min_labels,
        "drift_share_threshold": cfg.drift.drift_share,
        "feedback": feedback.to_xcom() if feedback else None,
        "config": m.model_dump(),
    }
    drift_page = None
    if result is not None:
        drift_page = "traffic_drift.html"
        storage.write_text(
            f"{base}/{drift_page}",
            drift_html(
                result,
                reference=prod.reference_uri if prod else None,
                current=reader.describe(),
                reason=drift_reason,
                title="netsec traffic drift",
                excluded={"traffic": excluded},
            ),
        )
    yaml_text = render_yaml(doc)
    html_text = render_html(doc, history, drift_page=drift_page)
    record.report_uri = storage.write_text(f"{base}/monitoring_report.yaml", yaml_text)
    record.html_uri = storage.write_text(f"{base}/monitoring_report.html", html_text)
    storage.write_text(storage.uri("monitoring", "latest.html"), html_text)
    if mlflow:
        record.mlflow_run_id = log_to_mlflow(
            cfg, record, {"monitoring_report.yaml": yaml_text, "monitoring_report.html": html_text}
        )
    return record


def commit(
    cfg: PipelineConfig, record: MonitoringRecord, *, requested: bool, now: dt.datetime | None = None
) -> str:
    """Record what ``record``'s run read (its watermark) and, when the DAG emitted the request
    (``requested``), the request for the cooldown. Returns the state's URI."""
    from netsec_tasks.storage import storage_for

    storage = storage_for(cfg)
    state = read_state(storage, record.log) or MonitoringState(log=record.log)
    update: dict[str, Any] = {"run_id": record.run_id}
    if record.advance:
        update["watermark"] = record.watermark
    if requested:
        update["last_trigger"] = LastTrigger(
            at=now or utcnow(),
            model_version=record.model_version,
            reason=record.trigger_reason,
            run_id=record.run_id,
        )
    return write_state(storage, state.model_copy(update=update))
