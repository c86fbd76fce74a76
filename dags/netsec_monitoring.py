"""Airflow 3 DAG ``netsec_monitoring``: served traffic and analysts' verdicts, and retraining on
evidence.

``feedback_to_training`` → ``monitor`` → ``request_retraining`` → ``commit``, and
``feedback_to_training`` → ``decide_challenger``

* ``feedback_to_training``: the analysts' standing verdicts become training rows of the source
  (``netsec_tasks.feedback``), once each, so the next training run learns from them.
* ``monitor``: traffic drift since the last run against Production's training data, live
  precision/recall/F1 from the verdicts, volume, threat rate and scores against the test split;
  YAML + HTML report with the trend, figures to MLflow (``netsec_tasks.monitoring``).
* ``request_retraining``: when ``monitor`` found evidence (traffic drift, or live F1 confidently
  below ``monitoring.f1_floor``), an event on the asset that ``netsec_training`` is scheduled
  on, with the evidence in its extra; otherwise the task is skipped and emits nothing.
* ``commit``: records the log watermark (and the request, for the cooldown), only after the run
  got this far: a failed run reads the same rows again.
* ``decide_challenger`` (``registry.shadow``): the challenger against Production on the traffic
  both scored (alert rates against the budget, agreement, verdicts); promotes or retires it after
  ``shadow.min_hours`` and ``shadow.min_rows`` (``netsec_tasks.monitoring.shadow``); skipped
  when there is no challenger.

Like ``netsec_training``, every task is a thin wrapper over ``netsec_tasks`` functions; parsing
imports only the Airflow SDK and the config.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import typing

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, TriggerRule
from airflow.sdk.exceptions import AirflowSkipException

from netsec_airflow import MONGO_CONN_ID, default_args, retrain_asset, retries
from netsec_tasks.config import load_config

log = logging.getLogger("netsec.dag")

DAG_ID = "netsec_monitoring"
CFG = load_config()
RETRAIN_REQUESTED = retrain_asset(CFG)


def _config() -> typing.Any:
    """Config file + NETSEC_* env (validated); storage credentials from netsec_s3 for s3://."""
    from netsec_tasks.config import load_config as load

    cfg = load()
    if cfg.storage.uri.startswith("s3://"):
        from netsec_airflow import use_storage_connection

        use_storage_connection()
    return cfg


def _mongo(cfg: typing.Any) -> tuple[typing.Any, str]:
    """A MongoDB client from netsec_mongo when the log or the source is in MongoDB (None: the
    steps connect to source.mongo.uri themselves), and where it points, for messages."""
    if cfg.monitoring.store != "mongo" and cfg.source.kind != "mongo":
        return None, "no MongoDB"
    from netsec_airflow import mongo_client

    client, where = mongo_client(cfg)
    log.info("MongoDB through %s", where)
    return client, where


@contextlib.contextmanager
def _services(cfg: typing.Any) -> typing.Iterator[tuple[typing.Any, typing.Any, typing.Any]]:
    """(log reader, verdict store, MongoDB client) for one task; a MongoDB outage becomes
    SourceUnavailable naming the connection (the task retries)."""
    import pymongo.errors

    from netsec_tasks.errors import SourceUnavailable
    from netsec_tasks.monitoring.step import log_and_verdicts

    client, where = _mongo(cfg)
    try:
        reader, store = log_and_verdicts(cfg, client)
        yield reader, store, client
    except pymongo.errors.PyMongoError as exc:
        raise SourceUnavailable(f"MongoDB via {where} is unavailable: {exc}") from exc
    finally:
        if client is not None:
            client.close()


def _record(ti: typing.Any, cls: type, task_id: str) -> typing.Any:
    data = ti.xcom_pull(task_ids=task_id)
    return None if data is None else cls.from_xcom(data)


def feedback_task(**_):
    from netsec_tasks.feedback import feedback_to_training

    cfg = _config()
    with _services(cfg) as (reader, store, client):
        record = feedback_to_training(cfg, store=store, log_reader=reader, mongo_client=client)
    log.info("feedback: %s", record.reason)
    return record.to_xcom()


def monitor_task(ti, dag_run, **_):
    from netsec_tasks.monitoring import monitor
    from netsec_tasks.records import FeedbackRecord

    cfg = _config()
    with _services(cfg) as (reader, store, _client):
        record = monitor(
            cfg,
            dag_run.run_id,
            reader=reader,
            store=store,
            feedback=_record(ti, FeedbackRecord, "feedback_to_training"),
        )
    log.info(
        "%s: %s (report: %s)",
        "retraining requested" if record.trigger else "no request",
        record.trigger_reason,
        record.html_uri,
    )
    return record.to_xcom()


def request_retraining_task(ti, outlet_events, **_):
    """Emit the asset event with the evidence, or skip (a skipped task emits nothing)."""
    from netsec_tasks.records import MonitoringRecord

    record = _record(ti, MonitoringRecord, "monitor")
    if not record.trigger:
        raise AirflowSkipException(f"no retraining requested: {record.trigger_reason}")
    extra = {
        "reason": record.trigger_reason,
        "monitoring_run_id": record.run_id,
        "model_name": record.model_name,
        "model_version": record.model_version,
        "drift_share": record.drift_share,
        "drift_detected": record.drift_detected,
        "live_f1": record.live.get("f1"),
        "live_f1_ci": record.live.get("f1_ci"),
        "live_fpr": record.live.get("fpr"),
        "live_fpr_ci": record.live.get("fpr_ci"),
        "labelled": record.labelled,
        "report": record.html_uri,
    }
    outlet_events[RETRAIN_REQUESTED].extra = extra
    log.info(
        "retraining requested for %s v%s: %s", record.model_name, record.model_version, record.trigger_reason
    )
    return extra


def decide_challenger_task(dag_run, **_):
    """Compare the challenger with Production on the traffic both scored; promote or retire it
    once the evidence is in (netsec_tasks.monitoring.shadow). Skipped without a challenger."""
    from netsec_tasks.monitoring.shadow import decide_challenger

    cfg = _config()
    with _services(cfg) as (reader, store, _client):
        record = decide_challenger(cfg, dag_run.run_id, reader=reader, store=store)
    if record.action == "none":
        raise AirflowSkipException(record.reason)
    log.info(
        "challenger v%s %s: %s (report: %s)",
        record.challenger_version,
        record.action,
        record.reason,
        record.html_uri,
    )
    return record.to_xcom()


def commit_task(ti, **_):
    from netsec_tasks.monitoring import commit
    from netsec_tasks.records import MonitoringRecord

    record = _record(ti, MonitoringRecord, "monitor")
    requested = ti.xcom_pull(task_ids="request_retraining") is not None
    uri = commit(_config(), record, requested=requested)
    return {"state_uri": uri, "requested": requested, "advanced": record.advance}


DOC_MD = f"""
### netsec_monitoring

Watches what the **{CFG.registry.model_name}** Production model serves and what analysts say
about it; asks `netsec_training` to retrain when the evidence says so. Reads and keeps only that
registered model's state (its log and verdicts, watermark, trend, reports): another data set in
the same stores is never read.

`feedback_to_training` → `monitor` → `request_retraining` → `commit`, and
`feedback_to_training` → `decide_challenger`

* **Schedule**: `{CFG.monitoring.schedule or "manual only"}` (`monitoring.schedule`), or Trigger.
* **Reads** serving's prediction log and verdicts: `{CFG.monitoring.store}`
  (`monitoring.store`; `mongo` reads through the `{MONGO_CONN_ID}` connection).
* **Requests a retraining** by updating the asset `{RETRAIN_REQUESTED.name}` when traffic drift
  is detected (`drift.*`, at least `monitoring.min_rows` new rows), live F1's upper confidence
  bound is below `monitoring.f1_floor` with `monitoring.min_labels` verdicts, or the live
  false-positive rate's lower bound is above the budget (`decision.max_false_positive_rate`) with
  `monitoring.min_labels` benign verdicts; not twice for the
  same Production version within `monitoring.cooldown_hours`. A surge of contract violations
  (over `validation.max_invalid_share` of the new rows) is reported on its own and requests a
  retraining only with `monitoring.retrain_on_contract_violations`.
* **Decides the challenger** (`registry.shadow`: a candidate that passed the gate, scored in
  shadow by serving): after `shadow.min_hours` and `shadow.min_rows`, promotes it only if its
  alert rate is within the budget's ceiling and it is not worse than Production on verdicts at
  `shadow.confidence`; else retires it with the reason. Its report,
  `<storage>/monitoring/{CFG.registry.model_name}/challenger_latest.html`, lists the rows where the
  two disagree, for analysts to label. Skipped without a challenger.
* **Report**: `<storage>/monitoring/{CFG.registry.model_name}/runs/<run>/monitoring_report.html`
  (and `latest.html` there), the
  MLflow experiment `{CFG.monitoring.experiment}`, serving's `/metrics` (`netsec_monitoring_*`).
"""

IO_RETRIES = retries(CFG)

with DAG(
    dag_id=DAG_ID,
    description="Monitor served traffic and analysts' verdicts; request retraining on evidence",
    schedule=CFG.monitoring.schedule,
    start_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["netsec", "mlops", "monitoring"],
    doc_md=DOC_MD,
    default_args=default_args(CFG),
) as dag:
    feedback = PythonOperator(
        task_id="feedback_to_training",
        python_callable=feedback_task,
        **IO_RETRIES,
        doc_md="Analysts' verdicts become training rows (once each).",
    )
    monitor = PythonOperator(
        task_id="monitor",
        python_callable=monitor_task,
        **IO_RETRIES,
        doc_md="Traffic drift, live metrics, report, MLflow.",
    )
    request = PythonOperator(
        task_id="request_retraining",
        python_callable=request_retraining_task,
        outlets=[RETRAIN_REQUESTED],
        doc_md="Asset event for netsec_training, or skipped.",
    )
    commit = PythonOperator(
        task_id="commit",
        python_callable=commit_task,
        trigger_rule=TriggerRule.NONE_FAILED,
        doc_md="Record the log watermark (and the request) after success.",
    )

    decide = PythonOperator(
        task_id="decide_challenger",
        python_callable=decide_challenger_task,
        **IO_RETRIES,
        doc_md="Challenger vs Production on the traffic both scored: promote, retire, or wait.",
    )

    feedback >> monitor >> request >> commit
    feedback >> decide
