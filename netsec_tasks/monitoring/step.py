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
4. compares volume, threat rate and score distribution with Production on its test split;
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
from netsec_tasks.monitoring.live import f1_below_floor, fpr_over_budget, live_metrics
from netsec_tasks.monitoring.report import render_html, render_yaml
from netsec_tasks.monitoring.state import (
    LastTrigger,
    MonitoringState,
    append_history,
    model_dir,
    read_state,
    write_state,
)
from netsec_tasks.monitoring.traffic import expected_alert_rate, threat_scores, traffic_drift, traffic_figures
from netsec_tasks.operating_point import decision_policy, model_threshold
from netsec_tasks.records import FeedbackRecord, MonitoringRecord, safe_name
from netsec_tasks.tracking import TAG_PREFIX

log = logging.getLogger(__name__)

MONITORING_TAG_PREFIX = TAG_PREFIX + "monitoring."


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_dir(storage, model_name: str, run_id: str) -> str:
    return model_dir(storage, model_name, "runs", safe_name(run_id))


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
    contract_surge: str | None = None,
    fpr_alarm: bool = False,
    fpr_reason: str = "",
) -> tuple[bool, str]:
    """(request a retraining?, why). Evidence: traffic drift (``monitoring.retrain_on_drift``),
    live F1 confidently below the floor, or a live FPR confidently over the false-positive
    budget (the lower end of its interval above it), and a surge of contract violations
    (``contract_surge``: what it is) only with ``monitoring.retrain_on_contract_violations``;
    the reason always says what was decided about a surge. A request for the same Production
    version within ``monitoring.cooldown_hours`` is not repeated."""
    m = cfg.monitoring
    evidence, notes = [], []
    if contract_surge:
        if m.retrain_on_contract_violations:
            evidence.append(f"contract violations: {contract_surge}")
        else:
            notes.append(
                f"contract violations: {contract_surge}; not a reason to retrain "
                "(monitoring.retrain_on_contract_violations: false): a model retrained on the "
                "rows that still pass cannot fix an upstream change; fix the sender or the schema"
            )
    if drift_detected and m.retrain_on_drift:
        evidence.append(f"traffic {drift_reason}")
    if f1_alarm:
        evidence.append(f1_reason)
    if fpr_alarm:
        evidence.append(fpr_reason)
    if not evidence:
        found = "; ".join(x for x in (drift_reason, f1_reason, fpr_reason) if x)
        return False, "; ".join(notes + [f"no evidence for retraining: {found}"])
    why = "; ".join(notes + evidence)
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


def labelled_predictions(
    verdicts: pd.DataFrame, reader, *, since: dt.datetime, challenger: bool = False
) -> pd.DataFrame:
    """The standing verdicts on predictions made since ``since``, joined with the logged
    prediction they judge (``is_threat`` of the model as ``predicted``, ``model_version``; with
    ``challenger``, also ``challenger_version`` and ``challenger_predicted``, the challenger's
    decision on the row in shadow, None where none scored it). Verdicts whose id is not
    canonical (stored before ids were checked exactly) are left out (``monitor`` counts them in
    the report)."""
    from netsec_tasks.prediction_log import canonical_ids, request_time, rows_of

    shadow = ["challenger_version", "challenger_predicted"] if challenger else []
    empty = pd.DataFrame(columns=["prediction_id", "verdict", "predicted", "model_version", *shadow])
    if verdicts.empty:
        return empty
    good, _ = canonical_ids(verdicts["prediction_id"])
    recent = {pid: rid for pid, rid, _ in good if request_time(rid) >= since}
    verdicts = verdicts[verdicts["prediction_id"].isin(set(recent))]
    logged = rows_of(reader.find_requests(set(recent.values())), verdicts["prediction_id"])
    if logged.empty:
        return empty
    extra = ["challenger_version", "challenger_is_threat"] if challenger else []
    joined = verdicts.merge(
        logged[["prediction_id", "is_threat", "model_version", *extra]],
        on="prediction_id",
        how="inner",
        suffixes=("", "_logged"),
    )
    out = pd.DataFrame(
        {
            "prediction_id": joined["prediction_id"],
            "verdict": joined["is_threat"].astype(bool),
            "predicted": joined["is_threat_logged"].astype(int).astype(bool),
            "model_version": joined["model_version"].astype(str),
        }
    )
    if challenger:
        out["challenger_version"] = joined["challenger_version"]
        out["challenger_predicted"] = joined["challenger_is_threat"]
    return out


def contract_violations(excluded: dict[str, Any], cfg: PipelineConfig) -> dict[str, Any]:
    """The served rows that break the input contract, as a finding: checked, excluded, their
    share and whether it is a surge (over ``validation.max_invalid_share``, with at least
    ``monitoring.min_rows`` rows checked, so a handful of rows never raises it), with a reason."""
    from netsec_tasks.drift.step import excluded_verdict

    n, k = int(excluded.get("rows_checked") or 0), int(excluded.get("rows_excluded") or 0)
    share = round(k / n, 6) if n else None
    limit = cfg.validation.max_invalid_share
    surge = bool(n >= cfg.monitoring.min_rows and share is not None and share > limit)
    reason = (
        excluded_verdict({"served": excluded}, limit)
        if surge
        else f"{k:,} of {n:,} new rows break the input contract (at most {limit:.0%} expected)"
    )
    return {
        "rows_checked": n,
        "rows_excluded": k,
        "share": share,
        "max_share": limit,
        "surge": surge,
        "reason": reason,
    }


def _unused_verdicts(verdicts: pd.DataFrame, labelled: pd.DataFrame, since: dt.datetime) -> dict[str, int]:
    """What the live figures could not use, so the report says it: verdicts on predictions of the
    window whose prediction this model's log does not hold, and verdicts whose id is not
    canonical."""
    from netsec_tasks.prediction_log import canonical_ids, request_time

    good, malformed = canonical_ids(verdicts["prediction_id"]) if len(verdicts) else ([], [])
    in_window = sum(request_time(rid) >= since for _, rid, _ in good)
    return {
        "verdicts_in_window": int(in_window),
        "without_logged_prediction": int(in_window - len(labelled)),
        "malformed_ids": len(malformed),
    }


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
    if record.contract.get("share") is not None:
        out.update(
            contract_violation_share=record.contract["share"],
            contract_violations=float(bool(record.contract.get("surge"))),
        )
    for key in ("precision", "recall", "f1", "fpr"):
        if live.get(key) is not None:
            out[f"live_{key}"] = live[key]
            ci = live.get(f"{key}_ci")
            if ci:
                out[f"live_{key}_low"], out[f"live_{key}_high"] = ci
    for key in ("threat_rate", "threat_rate_test", "rows_per_hour", "alert_rate", "expected_alert_rate"):
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
        # A retried task finds its MLflow run again; two models' monitoring DAGs share run ids
        # (scheduled__<time>), so the run is found by the model too.
        found = client.search_runs(
            [exp_id],
            filter_string=(
                f"tags.`netsec.monitoring_run_id` = '{record.run_id.replace(chr(39), '')}' and "
                f"tags.`netsec.model_name` = '{record.model_name.replace(chr(39), '')}'"
            ),
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = client.create_run(
                exp_id,
                run_name=f"monitoring {record.model_name} {record.run_id}",
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
    fpr_ci = record.live.get("fpr_ci") or [None, None]
    values = {
        "drift_share": record.drift_share if record.drift_tested else None,
        "drift_detected": int(record.drift_detected) if record.drift_tested else None,
        "contract_violation_share": record.contract.get("share"),
        "contract_violations": int(bool(record.contract.get("surge"))) if record.contract else None,
        "live_f1": record.live.get("f1"),
        "live_f1_low": ci[0],
        "live_f1_high": ci[1],
        "live_fpr": record.live.get("fpr"),
        "live_fpr_low": fpr_ci[0],
        "live_fpr_high": fpr_ci[1],
        "labelled": record.labelled,
        "threat_rate": record.traffic.get("threat_rate"),
        "alert_rate": record.traffic.get("alert_rate"),
        "expected_alert_rate": record.traffic.get("expected_alert_rate"),
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
        **_unused_verdicts(verdicts, labelled, since),
    )

    # Volume, threat rate and scores against the test split; the alert rate against expected.
    test_scores, threshold = None, None
    test_uri = prod.tags.get("netsec.test_uri") if prod else None
    if (
        prod is not None
        and test_uri
        and not traffic.empty
        and (traffic["model_version"] == str(version)).any()
    ):
        model = load_version(cfg, prod.name, prod.version)
        test_scores = threat_scores(model, storage.read_frame(test_uri), schema)
        threshold = model_threshold(model).value
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
