"""Airflow 3 DAG ``netsec_training``: reconcile -> ingest -> validate -> drift branch -> train ->
register -> sync.

Every task is a thin wrapper over one step function in ``netsec_tasks`` (the same functions
``netsec run`` calls in process). Parsing this file imports only the Airflow SDK, the standard
operators and ``netsec_tasks.config`` (pydantic + yaml, to read the schedule): the step modules,
pandas, scikit-learn, MLflow, pymongo and boto3 are imported inside the task callables.

XCom carries only the steps' small records (``record.to_xcom()``): URIs, counts, metrics.
"""

from __future__ import annotations

import datetime as dt
import logging
import typing

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator
from airflow.sdk import (
    DAG,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    TriggerRule,
)

from netsec_airflow import MONGO_CONN_ID, S3_CONN_ID, default_args, retrain_asset, retries
from netsec_tasks.config import Candidate, load_config
from netsec_tasks.run_params import RUN_PARAMS, param_bounds

log = logging.getLogger("netsec.dag")

DAG_ID = "netsec_training"

# DAG-run param -> dotted config key (netsec_tasks.run_params, shared with serving's /train).
# A param left at None keeps the configured value.
PARAM_TO_CONFIG = RUN_PARAMS

# Read once at parse time for the schedule, retry budget and the defaults shown in the UI.
# A broken config shows up as an import error of this DAG, naming the bad key.
CFG = load_config()
# Emitted by netsec_monitoring when served traffic drifts or live F1 falls below its floor.
RETRAIN_REQUESTED = retrain_asset(CFG)


# --------------------------------------------------------------------------- task helpers


def _config(params: dict) -> typing.Any:
    """Config file + NETSEC_* env + this run's params, validated (ConfigError names the key).

    The params are checked against the bounds of a triggered run first (margin >= 0, a score
    floor no lower than the configured one, a source path under ``source.path_roots`` as this
    worker resolves it: ``netsec_tasks.run_params``), whatever the form allowed when the DAG
    file was parsed. Also points the storage layer at the ``netsec_s3`` connection's credentials
    when storage is ``s3://``: every task reads its inputs from and writes its outputs to storage.
    """
    from netsec_tasks.pipeline import load_pipeline_config
    from netsec_tasks.run_params import check_run_params

    check_run_params(load_pipeline_config(), params)
    overrides = {}
    for name, dotted in PARAM_TO_CONFIG.items():
        value = params.get(name)
        if value in (None, "", []):
            continue
        overrides[dotted.replace(".", "__")] = value
    cfg = load_pipeline_config(**overrides)
    if cfg.storage.uri.startswith("s3://"):
        from netsec_airflow import use_storage_connection

        use_storage_connection()
    return cfg


def _run_context(ti: typing.Any) -> typing.Any:
    """The RunContext the ingest task created (run id, storage root, trigger)."""
    from netsec_tasks.records import RunContext

    return RunContext.from_xcom(ti.xcom_pull(task_ids="ingest", key="run"))


def _pull(ti: typing.Any, record_cls: type, task_id: str, key: str = "return_value") -> typing.Any:
    """The record a task pushed, or None when that task was skipped."""
    data = ti.xcom_pull(task_ids=task_id, key=key)
    return None if data is None else record_cls.from_xcom(data)


def _trigger(dag_run: typing.Any, triggering_asset_events: typing.Any = None) -> tuple[str, str | None]:
    """(who started the run, why): a run started by the monitoring DAG's asset event is
    ``monitoring``, with the evidence the events carry; other runs are their run type."""
    run_type = getattr(dag_run, "run_type", None)
    kind = str(getattr(run_type, "value", run_type) or "manual")
    if kind != "asset_triggered":
        return kind, None
    try:
        events = list(triggering_asset_events[RETRAIN_REQUESTED]) if triggering_asset_events else []
    except KeyError:
        events = []
    reasons = list(
        dict.fromkeys(str((e.extra or {}).get("reason")) for e in events if (e.extra or {}).get("reason"))
    )
    if not events:
        return kind, None
    runs = ", ".join(dict.fromkeys(str((e.extra or {}).get("monitoring_run_id", "?")) for e in events))
    return "monitoring", ("; ".join(reasons) or "retraining requested") + f" (monitoring run {runs})"


# --------------------------------------------------------------------------- task callables


def reconcile_task(dag_run, params, **_):
    """First: end what earlier runs left (stale MLflow runs, undecided model versions)."""
    from netsec_tasks.reconcile import reconcile

    record = reconcile(_config(params), by=f"pipeline run {dag_run.run_id}")
    log.info("reconcile: %s", record.summary())
    return record.to_xcom()


def ingest_task(ti, dag_run, params, triggering_asset_events=None, **_):
    """Snapshot the source (file, or MongoDB through the netsec_mongo connection), split."""
    from netsec_tasks.errors import SourceUnavailable
    from netsec_tasks.ingest import ingest
    from netsec_tasks.records import RunContext

    cfg = _config(params)
    trigger, trigger_reason = _trigger(dag_run, triggering_asset_events)
    run = RunContext.create(
        cfg,
        run_id=dag_run.run_id,
        trigger=trigger,
        trigger_reason=trigger_reason,
        force_retrain=bool(params.get("force_retrain")),
    )
    ti.xcom_push(key="run", value=run.to_xcom())
    log.info(
        "run %s (%s%s): source=%s storage=%s",
        run.run_id,
        trigger,
        f": {trigger_reason}" if trigger_reason else "",
        cfg.source.kind,
        run.storage_uri,
    )
    if cfg.source.kind != "mongo":
        return ingest(cfg, run).to_xcom()

    import pymongo.errors

    from netsec_airflow import mongo_client

    client, where = mongo_client(cfg)
    try:
        record = ingest(cfg, run, mongo_client=client)
    except (SourceUnavailable, pymongo.errors.PyMongoError) as exc:
        raise SourceUnavailable(f"MongoDB via {where} is unavailable: {exc}") from exc
    finally:
        if client is not None:
            client.close()
    return record.to_xcom()


def validate_task(ti, params, **_):
    """Schema and quality checks; a failed validation stops the run before training."""
    from netsec_tasks.records import IngestRecord
    from netsec_tasks.validate import validate

    record = validate(_config(params), _run_context(ti), _pull(ti, IngestRecord, "ingest"))
    return record.to_xcom()


def check_drift_task(ti, params, **_):
    """Compare the new batch with Production's training data and choose the branch."""
    from netsec_tasks.catalog import RunCatalog
    from netsec_tasks.drift import check_drift
    from netsec_tasks.pipeline import decide_retrain
    from netsec_tasks.records import ValidationRecord
    from netsec_tasks.registry import production_reference

    cfg, run = _config(params), _run_context(ti)
    validation = _pull(ti, ValidationRecord, "validate")
    reference_uri, reference_version = production_reference(cfg)
    drift = check_drift(
        cfg, run, validation, reference_uri=reference_uri, reference_version=reference_version
    )
    retrain, reason = decide_retrain(
        drift,
        force_retrain=run.force_retrain,
        requested_by_monitoring=run.trigger_reason if run.trigger == "monitoring" else None,
    )
    log.info("branch: %s because %s (report: %s)", "retrain" if retrain else "skip", reason, drift.html_uri)
    ti.xcom_push(key="drift", value=drift.to_xcom())
    ti.xcom_push(key="branch_reason", value=reason)
    RunCatalog.of(cfg, run).save_text("branch", ("retrain" if retrain else "skip") + f": {reason}\n")
    return "transform" if retrain else "skip_training"


def transform_task(ti, params, **_):
    from netsec_tasks.records import ValidationRecord
    from netsec_tasks.transform import transform

    return transform(_config(params), _run_context(ti), _pull(ti, ValidationRecord, "validate")).to_xcom()


def train_task(ti, params, **_):
    from netsec_tasks.records import TransformRecord, ValidationRecord
    from netsec_tasks.train import train

    record = train(
        _config(params),
        _run_context(ti),
        _pull(ti, ValidationRecord, "validate"),
        _pull(ti, TransformRecord, "transform"),
    )
    log.info("winner %s: %s", record.winner, record.test_metrics)
    return record.to_xcom()


def register_task(ti, params, **_):
    from netsec_tasks.records import TrainRecord, ValidationRecord
    from netsec_tasks.registry import register

    cfg, run = _config(params), _run_context(ti)
    record = register(cfg, run, _pull(ti, TrainRecord, "train"), _pull(ti, ValidationRecord, "validate"))
    log.info("registry: %s", record.reason)
    if cfg.evaluation.holdout_path:  # off by default: the new version on a labelled hold-out file
        from netsec_tasks.holdout import evaluate_holdout

        evaluation = evaluate_holdout(cfg, run, record)
        if evaluation is not None:
            log.info(
                "hold-out %s: %s (report: %s)", evaluation.source, evaluation.metrics, evaluation.html_uri
            )
    return record.to_xcom()


def sync_task(ti, params, **_):
    """Copy the registered model beside the run in storage and write the manifest (last)."""
    from netsec_tasks.records import RegisterRecord
    from netsec_tasks.sync import sync

    record = sync(_config(params), _run_context(ti), register=_pull(ti, RegisterRecord, "register"))
    return record.to_xcom()


def record_outcome_task(ti, params, **_):
    """Close the run after either branch: commit the watermark, write outcome.json."""
    from netsec_tasks.pipeline import record_outcome
    from netsec_tasks.records import (
        DriftRecord,
        IngestRecord,
        ReconcileRecord,
        RegisterRecord,
        TrainRecord,
        ValidationRecord,
    )

    reason = ti.xcom_pull(task_ids="check_drift", key="branch_reason")
    outcome = record_outcome(
        _config(params),
        _run_context(ti),
        ingest=_pull(ti, IngestRecord, "ingest"),
        validation=_pull(ti, ValidationRecord, "validate"),
        drift=_pull(ti, DriftRecord, "check_drift", key="drift"),
        train=_pull(ti, TrainRecord, "train"),
        register=_pull(ti, RegisterRecord, "register"),
        branch_reason=reason,
        reconciled=_pull(ti, ReconcileRecord, "reconcile"),
    )
    ti.xcom_push(key="branch_reason", value=reason)
    return outcome.to_xcom()


# --------------------------------------------------------------------------- the DAG

IO_RETRIES = retries(CFG)
OUTAGE_RETRIES = retries(CFG, only_outages=True)

CANDIDATES = list(typing.get_args(Candidate))


def _config_default(dotted: str) -> typing.Any:
    node: typing.Any = CFG
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


def _shown(value: typing.Any) -> str:
    """A configured value as the form's help text shows it."""
    if value is None:
        return "not set"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def config_param(
    name: str, title: str, note: str = "", values_display: dict[typing.Any, str] | None = None
) -> Param:
    """The trigger-form field of param ``name``, derived from the config key it overrides
    (``PARAM_TO_CONFIG``): the JSON schema (type, range, allowed values) and the help text are
    the config field's, plus the value this deployment configured, so the form and the config
    cannot disagree, narrowed by a triggered run's bounds (``run_params.param_bounds``).
    Empty (null) keeps the configured value.

    A list of known names (``training.candidates``) becomes a multi-select: Airflow's form draws
    one for an array whose schema lists ``examples`` (its ``example_params_ui_tutorial``);
    ``items.enum`` still refuses any other name."""
    dotted = PARAM_TO_CONFIG[name]
    section, key = dotted.rsplit(".", 1)
    field = type(_config_default(section))
    schema = dict(field.model_json_schema()["properties"][key])
    help_text = schema.pop("description", "")
    for k in ("default", "title"):
        schema.pop(k, None)
    if "anyOf" in schema:
        types = [branch["type"] for branch in schema.pop("anyOf")]
    else:
        types = [schema.pop("type")]
    schema["type"] = ["null", *(t for t in types if t != "null")]
    value = _config_default(dotted)
    if "enum" in schema:
        schema["enum"] = [None, *schema["enum"]]
        values_display = {None: f"configured default ({_shown(value)})", **(values_display or {})}
    if "array" in schema["type"] and "enum" in schema.get("items", {}):
        schema["examples"] = list(schema["items"]["enum"])
        schema["uniqueItems"] = True
    if values_display:
        schema["values_display"] = values_display
    schema.update(param_bounds(CFG).get(name, {}))  # a triggered run's own bounds
    env = "NETSEC_" + dotted.upper().replace(".", "__")
    description = (
        f"{help_text}{note} Empty: the configured {dotted} ({_shown(value)}; config/pipeline.yaml or {env})."
    )
    return Param(None, title=title, description=description, **schema)


PARAMS = {
    "force_retrain": Param(
        False,
        type="boolean",
        title="Force retraining",
        description="Train, register and compare with Production even when no drift is detected.",
    ),
    "source": config_param(
        "source",
        "Source",
        f" Here 'mongo' reads through the Airflow connection '{MONGO_CONN_ID}'.",
        values_display={"file": "file", "mongo": f"mongo (connection {MONGO_CONN_ID})"},
    ),
    "source_path": config_param(
        "source_path",
        "Source file",
        f" Only under source.path_roots ({', '.join(CFG.source.path_roots) or 'none configured'}).",
    ),
    "n_iter": config_param("n_iter", "Search budget"),
    "cv_folds": config_param("cv_folds", "CV folds"),
    "candidates": config_param("candidates", "Candidate models"),
    "promotion_margin": config_param("promotion_margin", "Promotion margin", " At least 0 here."),
    "min_score": config_param(
        "min_score", "Minimum score", f" At least the configured {CFG.registry.min_score:g} here."
    ),
}

DOC_MD = f"""
### netsec_training

Trains the threat classifier for **{CFG.dataset}** and promotes it only when it beats Production.

`reconcile` (ends stale MLflow runs, decides model versions earlier runs left undecided) →
`ingest` → `validate` → `check_drift` → either `transform` → `train` → `register` → `sync_s3`
(drift, no Production model, *force_retrain*, or a request of `netsec_monitoring`) or
`skip_training`, then `record_outcome` (commits the ingest watermark and writes `outcome.json`
in the run directory).

* **Schedule**: `{CFG.dag.schedule or "no cron"}` **or** the asset `{RETRAIN_REQUESTED.name}`, which
  `netsec_monitoring` updates when served traffic drifts or live F1 falls below its floor; such a
  run's outcome says `trigger: monitoring` and why.

* **Connections**: `{MONGO_CONN_ID}` (MongoHook, only for `source=mongo`), `{S3_CONN_ID}`
  (S3Hook, only for `s3://` storage; MinIO's `endpoint_url` goes in its extra).
* **Config**: `config/pipeline.yaml` + `NETSEC_<SECTION>__<KEY>` environment variables; the
  params below override single keys for one run.
* The branch reason is in the `check_drift` log and XCom (`branch_reason`) and in the outcome.
* Extra links (netsec plugin): MLflow run (train, register), drift report (check_drift).
"""


def _schedule(cron: str | None) -> typing.Any:
    """The cron (``dag.schedule``) or the monitoring DAG's retraining request, whichever comes
    first; without a cron, only the request (and manual runs)."""
    if cron is None:
        return [RETRAIN_REQUESTED]
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=[RETRAIN_REQUESTED]
    )


with DAG(
    dag_id=DAG_ID,
    description="Ingest, validate, drift-check, train, register and sync the threat classifier",
    schedule=_schedule(CFG.dag.schedule),
    start_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["netsec", "mlops", "training"],
    params=PARAMS,
    doc_md=DOC_MD,
    default_args=default_args(CFG),
) as dag:
    reconcile = PythonOperator(
        task_id="reconcile",
        python_callable=reconcile_task,
        **IO_RETRIES,
        doc_md="End stale MLflow runs; decide versions left undecided.",
    )
    ingest = PythonOperator(
        task_id="ingest",
        python_callable=ingest_task,
        **IO_RETRIES,
        doc_md="Snapshot the source and split train/test (retries with back-off).",
    )
    validate = PythonOperator(
        task_id="validate",
        python_callable=validate_task,
        doc_md="Schema and data-quality checks; quarantines bad rows.",
    )
    check_drift = BranchPythonOperator(
        task_id="check_drift",
        python_callable=check_drift_task,
        doc_md="Drift vs Production's training data; picks the branch.",
    )
    transform = PythonOperator(task_id="transform", python_callable=transform_task)
    train = PythonOperator(
        task_id="train",
        python_callable=train_task,
        **OUTAGE_RETRIES,
        doc_md="Tune every candidate by CV, evaluate the winner once.",
    )
    register = PythonOperator(
        task_id="register",
        python_callable=register_task,
        **OUTAGE_RETRIES,
        doc_md="Register the winner; promote only if it beats Production.",
    )
    sync_s3 = PythonOperator(
        task_id="sync_s3",
        python_callable=sync_task,
        **IO_RETRIES,
        doc_md="Upload the run's artifacts (retries with back-off).",
    )
    skip_training = EmptyOperator(task_id="skip_training")
    outcome = PythonOperator(
        task_id="record_outcome",
        python_callable=record_outcome_task,
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
        doc_md="Runs after either branch, never after a failure.",
    )

    reconcile >> ingest >> validate >> check_drift
    check_drift >> transform >> train >> register >> sync_s3 >> outcome
    check_drift >> skip_training >> outcome
