"""The pipeline in process: the same steps, in the same order, as the Airflow DAG.

``run_pipeline`` is the quick path without Airflow (``netsec run``); the DAG in
``dags/netsec_training.py`` calls the same step functions one task at a time and uses
:func:`decide_retrain` and :func:`record_outcome` from here, so the branch rule and the outcome
record have one definition.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from netsec_tasks.config import PipelineConfig, load_config
from netsec_tasks.records import (
    DriftRecord,
    EvaluationRecord,
    IngestRecord,
    OutcomeRecord,
    ReconcileRecord,
    RegisterRecord,
    RunContext,
    SyncRecord,
    TrainRecord,
    TransformRecord,
    ValidationRecord,
)

log = logging.getLogger("netsec.pipeline")


def load_pipeline_config(**overrides: Any) -> PipelineConfig:
    """Config file + NETSEC_* env + per-run overrides (dotted keys; None values are ignored).

    Keyword names may use ``__`` for dots (``source__kind="mongo"``) so they fit in a DAG run's
    params.
    """
    dotted = {k.replace("__", "."): v for k, v in overrides.items() if v is not None}
    return load_config(overrides=dotted)


def decide_retrain(drift: DriftRecord, *, force_retrain: bool,
                   requested_by_monitoring: str | None = None) -> tuple[bool, str]:
    """The branch rule: retrain on data-set drift, when no Production model exists, when forced,
    or when the monitoring DAG requested it (``requested_by_monitoring``: its evidence)."""
    if not drift.has_reference:
        return True, "no production model"
    if force_retrain:
        return True, f"forced (drift share {drift.drift_share:.2f}, drift {'detected' if drift.drift_detected else 'not detected'})"
    if requested_by_monitoring:
        return True, f"requested by monitoring: {requested_by_monitoring}"
    if drift.drift_detected:
        cols = ", ".join(drift.drifted_columns[:10]) + (" ..." if len(drift.drifted_columns) > 10 else "")
        return True, f"data-set drift: {drift.drift_share:.0%} of {drift.columns_tested} columns drifted ({cols})"
    return False, f"no drift: {drift.drift_share:.0%} of {drift.columns_tested} columns drifted (threshold passed only above the configured share)"


def record_outcome(cfg: PipelineConfig, run: RunContext, *, ingest: IngestRecord,
                   drift: DriftRecord | None = None, train: TrainRecord | None = None,
                   register: RegisterRecord | None = None, branch_reason: str | None = None,
                   reconciled: ReconcileRecord | None = None) -> OutcomeRecord:
    """Close a successful run: commit the ingest watermark and write ``outcome.json`` (with what
    the run's start reconciled for earlier runs)."""
    from netsec_tasks.catalog import RunCatalog
    from netsec_tasks.ingest import commit

    if register is not None:
        outcome = "promoted" if register.promoted else "kept_production"
        reason = register.reason
        version = register.production_version
    else:
        outcome = "skipped_no_drift"
        reason = branch_reason or (drift.reason if drift else "training skipped")
        version = None
    metrics = dict(train.test_metrics) if train is not None else {}
    record = OutcomeRecord(run_id=run.run_id, outcome=outcome, reason=reason,
                           branch_reason=branch_reason, model_version=version, metrics=metrics,
                           trigger=run.trigger, trigger_reason=run.trigger_reason,
                           reconciled=reconciled.items if reconciled is not None else [])
    commit(cfg, ingest)
    RunCatalog.of(cfg, run).save_record("outcome", record)
    log.info("run %s: %s (%s)", run.run_id, outcome, reason)
    return record


@dataclass
class PipelineResult:
    run: RunContext
    ingest: IngestRecord
    validation: ValidationRecord
    drift: DriftRecord
    retrain: bool
    branch_reason: str
    outcome: OutcomeRecord
    transform: TransformRecord | None = None
    train: TrainRecord | None = None
    register: RegisterRecord | None = None
    sync: SyncRecord | None = None
    reconciled: ReconcileRecord | None = None
    evaluation: EvaluationRecord | None = None   # the hold-out file (evaluation.holdout_path)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run.run_id,
            "storage": self.run.storage_uri,
            "outcome": self.outcome.outcome,
            "reason": self.outcome.reason,
            "rows": {"read": self.ingest.documents_read, "snapshot": self.ingest.rows,
                     "new": self.ingest.new_rows,
                     "train": self.validation.train_rows, "test": self.validation.test_rows,
                     "invalid": self.validation.rows_invalid},
            "drift": {"detected": self.drift.drift_detected, "share": round(self.drift.drift_share, 4),
                      "report": self.drift.html_uri},
            "branch": self.branch_reason,
            "reconciled": ([i.model_dump() for i in self.reconciled.items]
                           if self.reconciled is not None else []),
        }
        if self.train is not None:
            out["model"] = {"winner": self.train.winner, "cv_score": round(self.train.cv_score, 4),
                            "test_metrics": {k: round(v, 4) for k, v in self.train.test_metrics.items()},
                            "mlflow_run_id": self.train.mlflow_run_id}
        if self.register is not None:
            out["registry"] = self.register.to_xcom()
        if self.sync is not None:
            out["sync"] = {"destination": self.sync.destination, "objects": self.sync.objects}
        if self.evaluation is not None:
            out["holdout"] = {"file": self.evaluation.source, "rows": self.evaluation.rows_scored,
                              "metrics": {k: round(v, 4) for k, v in self.evaluation.metrics.items()},
                              "report": self.evaluation.html_uri}
        return out


def run_pipeline(cfg: PipelineConfig, *, run_id: str | None = None, force_retrain: bool = False,
                 trigger: str = "cli", mongo_client: Any | None = None) -> PipelineResult:
    """Run every step in process. Raises the first step's NetsecError; the watermark then stays.

    The first action reconciles what earlier runs left (:mod:`netsec_tasks.reconcile`)."""
    from netsec_tasks.drift import check_drift
    from netsec_tasks.holdout import evaluate_holdout
    from netsec_tasks.ingest import ingest
    from netsec_tasks.reconcile import reconcile
    from netsec_tasks.registry import production_reference_uri, register
    from netsec_tasks.sync import sync
    from netsec_tasks.train import train
    from netsec_tasks.transform import transform
    from netsec_tasks.validate import validate

    from netsec_tasks.catalog import RunCatalog

    run = RunContext.create(cfg, run_id=run_id, trigger=trigger, force_retrain=force_retrain)
    log.info("run %s in %s", run.run_id, run.storage_uri)
    rec = reconcile(cfg, by=f"pipeline run {run.run_id}")
    ing = ingest(cfg, run, mongo_client=mongo_client)
    val = validate(cfg, run, ing)
    drift = check_drift(cfg, run, val, reference_uri=production_reference_uri(cfg))
    retrain, reason = decide_retrain(drift, force_retrain=force_retrain)
    log.info("branch: %s (%s)", "retrain" if retrain else "skip", reason)
    tr = trn = reg = syn = evaluation = None
    if retrain:
        tr = transform(cfg, run, val)
        trn = train(cfg, run, val, tr)
        reg = register(cfg, run, trn, val)
        evaluation = evaluate_holdout(cfg, run, reg)  # only with evaluation.holdout_path
        syn = sync(cfg, run, register=reg)
    outcome = record_outcome(cfg, run, ingest=ing, drift=drift, train=trn, register=reg,
                             branch_reason=reason, reconciled=rec)
    result = PipelineResult(run=run, ingest=ing, validation=val, drift=drift, retrain=retrain,
                            branch_reason=reason, outcome=outcome, transform=tr, train=trn,
                            register=reg, sync=syn, reconciled=rec, evaluation=evaluation)
    RunCatalog.of(cfg, run).save_text("summary", json.dumps(result.summary(), indent=2, default=str))
    return result
