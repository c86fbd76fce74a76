"""The training step: :func:`train` (the pipeline's step 5) and :func:`train_model`, with or
without MLflow tracking (the parent run ends FAILED on any failure, so nothing half-trained
can be registered).
"""

from __future__ import annotations

import logging
import shutil

from netsec_tasks.catalog import RunCatalog
from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema, load_schema
from netsec_tasks.outages import mlflow_errors, owner_id
from netsec_tasks.processes import sigterm_raises, workers_exit_with_parent
from netsec_tasks.records import RunContext, TrainRecord, TransformRecord, ValidationRecord
from netsec_tasks.tracking import OWNER_TAG, PIPELINE_RUN_TAG, configure_mlflow
from netsec_tasks.train.evaluate import train_and_evaluate
from netsec_tasks.train.mlflow_runs import (
    ROLE_TAG,
    end_reason,
    end_runs_quietly,
    find_parent_run,
    log_candidate_run,
    log_parent,
)

log = logging.getLogger("netsec.train")

MODEL_FILE = "model.skops"


def train(
    cfg: PipelineConfig,
    run: RunContext,
    validation: ValidationRecord,
    transform: TransformRecord,
    *,
    tracking: bool = True,
) -> TrainRecord:
    """Tune every configured candidate, refit the best, evaluate it once, track it in MLflow.

    ``tracking=False`` skips MLflow (benchmarks): the record's model URI is then the local skops
    file and its run/experiment ids are empty.
    """
    record = train_model(cfg, run, validation, transform, tracking=tracking)[0]
    log.info("winner %s: %s", record.winner, record.test_metrics)
    return record


def train_model(
    cfg: PipelineConfig,
    run: RunContext,
    validation: ValidationRecord,
    transform: TransformRecord,
    *,
    tracking: bool = True,
):
    """:func:`train`, also returning the in-memory fitted pipeline: ``(record, model)``.

    With tracking, every MLflow call runs under the ``registry.*`` request budget and an
    unreachable store raises :class:`SourceUnavailable` (exit 3) naming it. Whatever ends the
    step early (an error, SIGTERM, Ctrl-C) ends its MLflow runs FAILED with one short attempt;
    when even that cannot reach the store, the next run's reconciliation ends them. joblib's
    worker processes exit with this process, even when it is SIGKILLed.
    """
    schema = load_schema(cfg.schema_path)
    with sigterm_raises(), workers_exit_with_parent():
        if not tracking:
            import skops.io

            out = train_and_evaluate(cfg, run, schema, validation, transform)
            shutil.rmtree(out.plot_dir, ignore_errors=True)
            storage = RunCatalog.of(cfg, run).storage
            uri = storage.write_bytes(run.step_uri("train", MODEL_FILE), skops.io.dumps(out.model))
            return out.record(cfg, model_uri=uri, run_id="", experiment_id=""), out.model
        return train_tracked(cfg, run, schema, validation, transform)


def train_tracked(
    cfg: PipelineConfig,
    run: RunContext,
    schema: DatasetSchema,
    validation: ValidationRecord,
    transform: TransformRecord,
):
    import mlflow

    experiment_id = configure_mlflow(cfg)
    owner = owner_id()
    with mlflow_errors(cfg, f"start the MLflow run of pipeline run {run.run_id}"):
        client = mlflow.MlflowClient()
        previous = find_parent_run(client, experiment_id, run.run_id)
        if mlflow.active_run() is not None:  # a run leaked from an earlier crash in this process
            end_runs_quietly("FAILED", "a run left open in this process")
        kwargs = (
            {"run_id": previous.info.run_id}
            if previous
            else {"run_name": run.run_id, "experiment_id": experiment_id}
        )
        parent = mlflow.start_run(
            tags={
                PIPELINE_RUN_TAG: run.run_id,
                ROLE_TAG: "pipeline",
                OWNER_TAG: owner,
                "netsec.dataset_digest": validation.dataset_digest,
            },
            **kwargs,
        )
    parent_id = parent.info.run_id
    if previous:
        log.info("reusing MLflow parent run %s of pipeline run %s (retry)", parent_id, run.run_id)
    try:
        with mlflow_errors(cfg, f"track MLflow run {parent_id} of pipeline run {run.run_id}"):
            out = train_and_evaluate(
                cfg,
                run,
                schema,
                validation,
                transform,
                on_result=lambda r: log_candidate_run(client, experiment_id, parent_id, r, owner),
            )
            model_uri = log_parent(cfg, schema, validation, out)
            shutil.rmtree(out.plot_dir, ignore_errors=True)
            mlflow.end_run(status="FINISHED")
    except BaseException as exc:
        # Ends nested runs still open too; no model was logged, so nothing can be registered.
        end_runs_quietly("FAILED", end_reason(exc))
        raise
    record = out.record(cfg, model_uri=model_uri, run_id=parent_id, experiment_id=experiment_id)
    return record, out.model
