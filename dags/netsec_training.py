"""Airflow 3 DAG ``netsec_training``: reconcile -> ingest -> validate -> drift branch -> train ->
register -> sync.

Every task calls one step function of ``netsec_tasks`` with the records earlier tasks pushed,
and nothing more: the same functions, in the same order, as ``netsec run`` calls in process (the
table in ``netsec_tasks/pipeline.py``). Parsing this file imports only the Airflow SDK, the standard
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

    return reconcile(_config(params), by=f"pipeline run {dag_run.run_id}").to_xcom()


def ingest_task(ti, dag_run, params, triggering_asset_events=None, **_):
    """Start the run (id, trigger, storage root: XCom ``run``) and snapshot the source: a file,
    or MongoDB through the netsec_mongo connection."""
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

    return validate(_config(params), _run_context(ti), _pull(ti, IngestRecord, "ingest")).to_xcom()


def check_drift_task(ti, params, **_):
    """Compare the new batch with Production's training data and choose the branch
    (XComs ``drift``, ``branch_reason`` and ``retrain``; the return value is the task to follow)."""
    from netsec_tasks.pipeline import choose_branch
    from netsec_tasks.records import ValidationRecord

    branch = choose_branch(_config(params), _run_context(ti), _pull(ti, ValidationRecord, "validate"))
    ti.xcom_push(key="drift", value=branch.drift.to_xcom())
    ti.xcom_push(key="branch_reason", value=branch.reason)
    ti.xcom_push(key="retrain", value=branch.retrain)
    return "transform" if branch.retrain else "skip_training"


def transform_task(ti, params, **_):
    from netsec_tasks.records import ValidationRecord
    from netsec_tasks.transform import transform

    return transform(_config(params), _run_context(ti), _pull(ti, ValidationRecord, "validate")).to_xcom()


def train_task(ti, params, **_):
    from netsec_tasks.records import TransformRecord, ValidationRecord
    from netsec_tasks.train import train

    validation, transform = _pull(ti, ValidationRecord, "validate"), _pull(ti, TransformRecord, "transform")
    return train(_config(params), _run_context(ti), validation, transform).to_xcom()


def register_task(ti, params, **_):
    """Register the winner, promote it only when it beats Production; then the hold-out file
    (``evaluation.holdout_path``, off by default; its record in XCom ``evaluation``)."""
    from netsec_tasks.pipeline import register_and_evaluate
    from netsec_tasks.records import TrainRecord, ValidationRecord

    train, validation = _pull(ti, TrainRecord, "train"), _pull(ti, ValidationRecord, "validate")
    record, evaluation = register_and_evaluate(_config(params), _run_context(ti), train, validation)
    if evaluation is not None:
        ti.xcom_push(key="evaluation", value=evaluation.to_xcom())
    return record.to_xcom()


def sync_task(ti, params, **_):
    """Copy the registered model beside the run in storage and write the manifest (last)."""
    from netsec_tasks.records import RegisterRecord
    from netsec_tasks.sync import sync

    return sync(_config(params), _run_context(ti), register=_pull(ti, RegisterRecord, "register")).to_xcom()


def record_outcome_task(ti, params, **_):
    """Close the run after either branch: commit the watermark, write outcome.json and
    summary.json. The records of a skipped branch are None."""
    from netsec_tasks.pipeline import finish_run
    from netsec_tasks.records import (
        BranchRecord,
        DriftRecord,
        EvaluationRecord,
        IngestRecord,
        ReconcileRecord,
        RegisterRecord,
        SyncRecord,
        TrainRecord,
        TransformRecord,
        ValidationRecord,
    )

    reason = ti.xcom_pull(task_ids="check_drift", key="branch_reason")
    branch = BranchRecord(
        drift=_pull(ti, DriftRecord, "check_drift", key="drift"),
        retrain=bool(ti.xcom_pull(task_ids="check_drift", key="retrain")),
        reason=reason,
    )
    result = finish_run(
        _config(params),
        _run_context(ti),
        ingest=_pull(ti, IngestRecord, "ingest"),
        validation=_pull(ti, ValidationRecord, "validate"),
        branch=branch,
        reconciled=_pull(ti, ReconcileRecord, "reconcile"),
        transform=_pull(ti, TransformRecord, "transform"),
        train=_pull(ti, TrainRecord, "train"),
        register=_pull(ti, RegisterRecord, "register"),
        evaluation=_pull(ti, EvaluationRecord, "register", key="evaluation"),
        sync=_pull(ti, SyncRecord, "sync"),
    )
    ti.xcom_push(key="branch_reason", value=reason)
    return result.outcome.to_xcom()


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
`ingest` → `validate` → `check_drift` → either `transform` → `train` → `register` → `sync`
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
    sync = PythonOperator(
        task_id="sync",
        python_callable=sync_task,
        **IO_RETRIES,
        doc_md="Copy the registered model beside the run in storage (S3 or file://) and write the "
        "manifest, last (retries with back-off). Named sync_s3 before.",
    )
    skip_training = EmptyOperator(task_id="skip_training")
    outcome = PythonOperator(
        task_id="record_outcome",
        python_callable=record_outcome_task,
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
        doc_md="Runs after either branch, never after a failure.",
    )

    reconcile >> ingest >> validate >> check_drift
    check_drift >> transform >> train >> register >> sync >> outcome
    check_drift >> skip_training >> outcome
