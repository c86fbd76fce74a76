"""The monitoring step (``monitor``) and its commit (``commit``): what the ``netsec_monitoring``
DAG runs every hour, also callable in process (``netsec monitor``).

One run, for one registered model (``registry.model_name``; every piece of state below is that
model's own, so two data sets monitored from one home never read each other's traffic, verdicts,
watermark or trend):

1. reads the model's prediction log after its own watermark (``monitoring/state.py``);
2. tests the new rows for drift against Production's training data (``netsec.train_uri``),
   after the input contract, reporting the rows it left out (``monitoring/traffic.py``);
3. joins the analysts' standing verdicts with the logged predictions they judge: live
   precision, recall and F1 of the threat class, with counts and intervals, over the
   Production version's predictions of the last ``monitoring.window_hours`` (``live.py``);
4. compares volume, threat rate and score distribution with Production on its test split, and
   the mean contribution of each column (``netsec_tasks.explain.reports.traffic_reasons``: why
   the alert rate moved);
5. decides whether to request a retraining (:func:`decide`): traffic drift, live F1
   confidently below ``monitoring.f1_floor`` with at least ``monitoring.min_labels`` verdicts, or
   a live false-positive rate confidently over the budget (``decision.max_false_positive_rate``:
   the lower end of its interval above it, on at least ``min_labels`` benign verdicts),
   and not within ``monitoring.cooldown_hours`` of a request for the same Production version.
   A surge of contract violations (more than ``validation.max_invalid_share`` of the new rows
   break the input contract) is its own finding: the drift test is then not judged (the rows
   left are not the traffic that arrived), and the decision says explicitly whether the surge
   requests a retraining (``monitoring.retrain_on_contract_violations``, default no);
6. writes ``<storage>/monitoring/<model>/runs/<run>/monitoring_report.yaml`` and ``.html``
   (with the trend of past runs from ``<storage>/monitoring/<model>/history.jsonl``) and the
   per-column ``traffic_drift.html``; logs the figures to MLflow (experiment
   ``monitoring.experiment``, one run per model and monitoring run, tagged with the model, metrics
   linked to Production's logged model) and sets them as tags ``netsec.monitoring.*`` on the
   Production model version, where serving's ``/metrics`` reads them.

The request itself is an Airflow asset event, emitted by the DAG's ``request_retraining``
task; this module never imports Airflow. :func:`commit` then records the watermark (and the
request, for the cooldown), so a failed run leaves both as they were.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pandas as pd

from netsec_tasks.config import PipelineConfig
from netsec_tasks.monitoring.decision import contract_violations, decide
from netsec_tasks.monitoring.labelled import labelled_predictions, unused_verdicts
from netsec_tasks.monitoring.live import f1_below_floor, fpr_over_budget, live_metrics
from netsec_tasks.monitoring.publish import log_to_mlflow
from netsec_tasks.monitoring.report import render_html, render_yaml
from netsec_tasks.monitoring.state import (
    LastTrigger,
    MonitoringState,
    append_history,
    model_dir,
    read_state,
    run_dir,
    write_state,
)
from netsec_tasks.monitoring.traffic import expected_alert_rate, threat_scores, traffic_drift, traffic_figures
from netsec_tasks.operating_point import decision_policy, model_threshold
from netsec_tasks.records import FeedbackRecord, MonitoringRecord, safe_name, utcnow

log = logging.getLogger(__name__)


def log_and_verdicts(cfg: PipelineConfig, mongo_client=None) -> tuple[Any, Any]:
    """(prediction-log reader, verdict store) of ``registry.model_name``, where serving writes
    them: JSONL files in ``<monitoring.log_dir>/<model>/`` (``feedback.jsonl`` beside the day
    files), or that model's documents in the collections ``monitoring.predictions_collection`` /
    ``feedback_collection`` of ``source.mongo.database`` (``mongo_client``: e.g. from the
    netsec_mongo connection; None: ``source.mongo.uri``)."""
    from pathlib import Path

    from netsec_tasks.feedback import JsonlFeedbackStore, MongoFeedbackStore, verdict_file
    from netsec_tasks.prediction_log import FILE_GLOB, JsonlLogReader, MongoLogReader

    m, model = cfg.monitoring, cfg.registry.model_name
    if m.store == "file":
        legacy = sorted(Path(m.log_dir).glob(FILE_GLOB)) if Path(m.log_dir).is_dir() else []
        if legacy:  # written before logs were kept per model: whose rows they are is unknown
            log.warning(
                "%s holds %d day file(s) of a log written before logs were kept per registered "
                "model; they are not read. Move them into %s/ if they are %s's traffic",
                m.log_dir,
                len(legacy),
                Path(m.log_dir) / safe_name(model),
                model,
            )
        return (JsonlLogReader(m.log_dir, model), JsonlFeedbackStore(verdict_file(m.log_dir, model), model))
    if mongo_client is None:
        from netsec_tasks.sources.mongo import connect

        mongo_client = connect(cfg.source.mongo.uri, cfg.source.mongo.server_selection_timeout_ms)
    db = mongo_client[cfg.source.mongo.database]
    return (
        MongoLogReader(db[m.predictions_collection], model),
        MongoFeedbackStore(db[m.feedback_collection], model),
    )


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
    from netsec_tasks.explain.reports import traffic_reasons
    from netsec_tasks.prediction_log import prediction_frame
    from netsec_tasks.registry import get_production, load_version
    from netsec_tasks.storage import storage_for

    now = now or utcnow()
    m, model_name = cfg.monitoring, cfg.registry.model_name
    for what, part in (("prediction log", reader), ("verdict store", store)):
        if getattr(part, "model_name", None) != model_name:
            raise ValueError(
                f"the {what} {part.describe()} belongs to {getattr(part, 'model_name', None)!r}, "
                f"not to {model_name!r} (registry.model_name): monitoring never reads another "
                "model's state"
            )
    schema = load_schema(cfg.schema_path)
    storage = storage_for(cfg)
    state = read_state(storage, model_name, reader.describe())
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
    contract = contract_violations(excluded, cfg)
    if contract["surge"]:  # the rows left are not the traffic: no drift verdict on them
        wait = False
        drift_reason = f"not judged: {contract['reason']}" + (
            f"; on the rows left: {drift_reason}" if result is not None else ""
        )

    # Live metrics from the verdicts.
    since = now - dt.timedelta(hours=m.window_hours)
    verdicts = store.current()
    labelled = labelled_predictions(verdicts, reader, since=since)
    mine = labelled[labelled["model_version"] == str(version)] if version else labelled.iloc[0:0]
    live = live_metrics(
        mine["verdict"].to_numpy(bool),
        mine["predicted"].to_numpy(bool),
        confidence=m.confidence,
        bootstrap=m.bootstrap,
        seed=m.seed,
    )
    f1_alarm, f1_reason = f1_below_floor(live, floor=m.f1_floor, min_labels=m.min_labels)
    budget = decision_policy(cfg, schema).budget
    fpr_alarm, fpr_reason = fpr_over_budget(live, budget=budget, min_labels=m.min_labels)
    live.update(
        other_versions=int(len(labelled) - len(mine)),
        decision=f1_reason,
        fpr_decision=fpr_reason,
        max_false_positive_rate=budget,
        **unused_verdicts(verdicts, labelled, since),
    )

    # Volume, threat rate and scores against the test split; the alert rate against expected.
    test_scores, threshold = None, None
    reasons = None
    test_uri = prod.tags.get("netsec.test_uri") if prod else None
    if (
        prod is not None
        and test_uri
        and not traffic.empty
        and (traffic["model_version"] == str(version)).any()
    ):
        model = load_version(cfg, prod.name, prod.version)
        test = storage.read_frame(test_uri)
        test_scores = threat_scores(model, test, schema)
        threshold = model_threshold(model).value
        served = traffic[traffic["model_version"] == str(version)]
        if all(c in served.columns for c in schema.features):
            # Why the alert rate moved: mean contributions on this traffic against the test
            # split (issue 24). The logged rows are the ones this version scored.
            reasons = traffic_reasons(
                model, schema.features, test[schema.features], served[schema.features], seed=m.seed
            )
    figures = traffic_figures(
        traffic,
        production_version=version,
        test_scores=test_scores,
        cfg=cfg,
        threshold=threshold,
        expected_rate=expected_alert_rate(prod.tags) if prod else None,
        documents=len(docs),
        since=state.committed_at if state else None,
        until=now,
    )

    drift_detected = bool(result is not None and result.dataset_drift and not contract["surge"])
    trigger, reason = decide(
        drift_detected=drift_detected,
        drift_reason=drift_reason,
        contract_surge=contract["reason"] if contract["surge"] else None,
        f1_alarm=f1_alarm,
        f1_reason=f1_reason,
        fpr_alarm=fpr_alarm,
        fpr_reason=fpr_reason,
        production_version=version,
        last_trigger=state.last_trigger if state else None,
        now=now,
        cfg=cfg,
    )
    log.info("monitoring %s: %s: %s", run_id, "retraining requested" if trigger else "no request", reason)

    record = MonitoringRecord(
        run_id=run_id,
        model_name=model_name,
        model_version=version,
        log=reader.describe(),
        documents_read=len(docs),
        rows_read=int(len(traffic)),
        rows_tested=result.n_current if result is not None else 0,
        rows_excluded=int(excluded.get("rows_excluded", 0)),
        drift_tested=result is not None and not contract["surge"],
        drift_detected=drift_detected,
        contract=contract,
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
    base = run_dir(storage, model_name, run_id)
    entry = {
        "run_id": run_id,
        "at": now.isoformat(timespec="seconds"),
        "model_version": version,
        "rows": record.rows_read,
        "rows_per_hour": figures.get("rows_per_hour"),
        "drift_share": record.drift_share,
        "drift_detected": record.drift_detected,
        "contract_violation_share": contract["share"],
        "live_f1": live.get("f1"),
        "live_f1_ci": live.get("f1_ci"),
        "live_fpr": live.get("fpr"),
        "live_fpr_ci": live.get("fpr_ci"),
        "labelled": record.labelled,
        "threat_rate": figures.get("threat_rate"),
        "expected_alert_rate": figures.get("expected_alert_rate"),
        "trigger": trigger,
    }
    history = append_history(storage, model_name, entry, m.trend_runs)
    doc: dict[str, Any] = {
        "generated_at": now.isoformat(timespec="seconds"),
        "run_id": run_id,
        "model_name": record.model_name,
        "model_version": version,
        "log": record.log,
        "trigger": trigger,
        "trigger_reason": reason,
        "contract_violations": contract,
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
        "max_false_positive_rate": budget,
        "min_labels": m.min_labels,
        "drift_share_threshold": cfg.drift.drift_share,
        "feedback": feedback.to_xcom() if feedback else None,
        "reasons": reasons,
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
    storage.write_text(model_dir(storage, model_name, "latest.html"), html_text)
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
    state = read_state(storage, record.model_name, record.log) or MonitoringState(
        model_name=record.model_name, log=record.log
    )
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
