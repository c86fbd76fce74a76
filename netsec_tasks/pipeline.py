"""The training pipeline's steps, in order: one function per task of the DAG ``netsec_training``.

=================  =====================================================  ======================
DAG task           step function (records in -> record out)               catalog artifacts
=================  =====================================================  ======================
reconcile          :func:`netsec_tasks.reconcile.reconcile`               (MLflow tags)
ingest             :func:`netsec_tasks.ingest.ingest`                     ingest/*
validate           :func:`netsec_tasks.validate.validate`                 validate/*
check_drift        :func:`choose_branch`                                  drift/*, drift/branch.txt
transform          :func:`netsec_tasks.transform.transform`               transform/*
train              :func:`netsec_tasks.train.train`                       train/*
register           :func:`register_and_evaluate`                          register/*, evaluate/*
sync               :func:`netsec_tasks.sync.sync`                         model/*, manifest.json
record_outcome     :func:`finish_run`                                     outcome.json, summary.json
=================  =====================================================  ======================

:func:`run_pipeline` (``netsec run``) calls these functions in process, in this order; the DAG in
``dags/netsec_training.py`` calls each one from its task with the records the earlier tasks
pushed to XCom, and nothing more. So the branch rule, the outcome record and every artifact have
one definition, whichever way the pipeline runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from netsec_tasks.config import PipelineConfig, load_config
from netsec_tasks.records import (
    BranchRecord,
    DriftRecord,
    EvaluationRecord,
    IngestRecord,
    ModelOutcome,
    OutcomeRecord,
    ReconcileRecord,
    RegisterRecord,
    RowCounts,
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


def _columns(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def drift_sentence(drift: DriftRecord) -> str:
    """What the drift check found, as a clause: "the new batch drifted: 8 of 30 columns ..."."""
    if not drift.has_reference:
        return "there is no Production model yet, so the new batch was not compared with anything"
    if drift.current_rows == 0:
        return "the new batch is empty (no rows since the last successful run), so there was nothing to test for drift"
    if not drift.columns_tested:
        return "no column of the new batch could be tested for drift"
    k, n = len(drift.drifted_columns), drift.columns_tested
    threshold = (
        "" if drift.drift_share_threshold is None else f" the {drift.drift_share_threshold:.0%} threshold"
    )
    listed = f": {_columns(drift.drifted_columns)}" if k else ""
    if drift.drift_detected:
        return (
            f"the new batch drifted: {k} of {n} columns ({drift.drift_share:.0%}, above"
            f"{threshold or ' the threshold'}){listed}"
        )
    return (
        f"the new batch did not drift: {k} of {n} columns drifted ({drift.drift_share:.0%}, "
        f"not above{threshold or ' the threshold'}){listed}"
    )


def decide_retrain(
    drift: DriftRecord, *, force_retrain: bool, requested_by_monitoring: str | None = None
) -> tuple[bool, str]:
    """The branch rule: retrain on data-set drift, when no Production model exists, when forced,
    or when the monitoring DAG requested it (``requested_by_monitoring``: its evidence). The
    reason is a plain sentence (it is the outcome's reason when training is skipped)."""
    found = drift_sentence(drift)
    if not drift.has_reference:
        return True, "Retrained because there is no Production model yet."
    if force_retrain:
        return True, f"Retrained because force_retrain was set; {found}."
    if requested_by_monitoring:
        evidence = requested_by_monitoring.strip().rstrip(".")
        return True, f"Retrained because monitoring requested it: {evidence}. In this run, {found}."
    if drift.drift_detected:
        return True, f"Retrained because {found}."
    return False, f"Training skipped because {found}."


def _rows(
    ingest: IngestRecord, validation: ValidationRecord | None, register: RegisterRecord | None
) -> RowCounts:
    return RowCounts(
        documents_read=ingest.documents_read,
        new_batch=ingest.new_rows,
        snapshot=ingest.rows,
        train=validation.train_rows if validation else None,
        test=validation.test_rows if validation else None,
        quarantined=validation.rows_invalid if validation else None,
        production_rows_in_test=register.production_rows_in_test if register else None,
    )


def _outcome_reason(register: RegisterRecord, candidate: ModelOutcome) -> str:
    """The registry's decision, led by what it means for Production."""
    what = f"v{candidate.version}" + (f" ({candidate.estimator})" if candidate.estimator else "")
    if register.promoted:
        return f"Candidate {what} is the new Production model. {register.reason}"
    if register.challenger_version is not None and register.challenger_version == register.version:
        return (
            f"Candidate {what} is the challenger, scored in shadow beside Production "
            f"v{register.previous_production_version}, which keeps answering. {register.reason}"
        )
    if register.previous_production_version:
        return (
            f"Production v{register.previous_production_version} stays; candidate {what} was "
            f"registered but not promoted. {register.reason}"
        )
    return f"Candidate {what} was registered but not promoted, and there is no Production model. {register.reason}"


def _current_challenger(cfg: PipelineConfig) -> str | None:
    """The challenger's version when a run skipped training (the register step names it
    otherwise). Best effort: the outcome is written even when the registry cannot say."""
    from netsec_tasks.registry import challenger_version
    from netsec_tasks.tracking import mlflow_client

    try:
        mv = challenger_version(mlflow_client(cfg), cfg)
    except Exception as exc:  # the run itself succeeded; its outcome must still be recorded
        log.warning("could not look up the challenger of %s: %s", cfg.registry.model_name, exc)
        return None
    return str(mv.version) if mv is not None else None


def record_outcome(
    cfg: PipelineConfig,
    run: RunContext,
    *,
    ingest: IngestRecord,
    drift: DriftRecord | None = None,
    train: TrainRecord | None = None,
    register: RegisterRecord | None = None,
    branch_reason: str | None = None,
    reconciled: ReconcileRecord | None = None,
    validation: ValidationRecord | None = None,
) -> OutcomeRecord:
    """Close a successful run: commit the ingest watermark and write ``outcome.json``.

    The record names Production when the run started (``production_before``, with its metrics
    on this run's test split when it was compared), the version this run trained
    (``candidate``, with its own metrics) and Production when it ended (``production_after``),
    the row counts, where the drift report and the MLflow run are, and what the run's start
    reconciled for earlier runs."""
    from netsec_tasks.catalog import RunCatalog
    from netsec_tasks.ingest import commit

    candidate = None
    if train is not None:
        candidate = ModelOutcome(
            version=register.version if register else None,
            estimator=train.winner,
            metrics=dict(train.test_metrics),
            score=register.new_score if register else None,
            operating_point=dict(register.operating_point if register else train.operating_point),
            refit=train.refit,
        )
    challenger = None
    if register is not None:
        challenger = register.challenger_version
        outcome = (
            "promoted"
            if register.promoted
            else "challenger"
            if challenger is not None and challenger == register.version
            else "kept_production"
        )
        assert candidate is not None  # a version is registered only after training
        reason = _outcome_reason(register, candidate)
        before = ModelOutcome(
            version=register.previous_production_version,
            metrics=dict(register.production_metrics),
            score=register.production_score,
            operating_point=dict(register.production_operating_point),
        )
        after = register.production_version
    else:
        outcome = "skipped_no_drift"
        version = drift.reference_version if drift else None
        challenger = _current_challenger(cfg)
        stays = f" Production v{version} stays." if version else ""
        if challenger:
            stays += f" Challenger v{challenger} stays in shadow."
        reason = (branch_reason or (drift.reason if drift else "Training skipped.")) + stays
        before = ModelOutcome(version=version)
        after = version
    record = OutcomeRecord(
        run_id=run.run_id,
        trigger=run.trigger,
        trigger_reason=run.trigger_reason,
        outcome=outcome,
        reason=reason,
        branch_reason=branch_reason,
        model_name=cfg.registry.model_name,
        metric=train.metric if train is not None else None,
        production_before=before,
        candidate=candidate,
        production_after=after,
        challenger_after=challenger,
        rows=_rows(ingest, validation, register),
        drift_report=drift.html_uri if drift else None,
        mlflow_run_id=train.mlflow_run_id if train else None,
        mlflow_experiment_id=train.experiment_id if train else None,
        reconciled=reconciled.items if reconciled is not None else [],
    )
    commit(cfg, ingest)
    RunCatalog.of(cfg, run).save_record("outcome", record)
    log.info("run %s: %s (%s)", run.run_id, outcome, reason)
    return record


def choose_branch(cfg: PipelineConfig, run: RunContext, validation: ValidationRecord) -> BranchRecord:
    """The ``check_drift`` step: compare the new batch with Production's training data
    (:func:`netsec_tasks.drift.check_drift`, reports under ``drift/``), choose the branch with
    :func:`decide_retrain` (forced by ``run.force_retrain``, or requested when ``run.trigger`` is
    ``monitoring``) and write the decision to the catalog's ``branch`` (``drift/branch.txt``).

    Raises ConfigError when Production is another data set's model
    (:func:`netsec_tasks.registry.production_reference`), SourceUnavailable when MLflow or
    storage is down."""
    from netsec_tasks.catalog import RunCatalog
    from netsec_tasks.drift import check_drift
    from netsec_tasks.registry import production_reference

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
    RunCatalog.of(cfg, run).save_text("branch", ("retrain" if retrain else "skip") + f": {reason}\n")
    return BranchRecord(drift=drift, retrain=retrain, reason=reason)


def register_and_evaluate(
    cfg: PipelineConfig, run: RunContext, train: TrainRecord, validation: ValidationRecord
) -> tuple[RegisterRecord, EvaluationRecord | None]:
    """The ``register`` step: register the winner and promote it only when it beats Production
    (:func:`netsec_tasks.registry.register`), then, when ``evaluation.holdout_path`` is set, score
    the new version on that labelled file (:func:`netsec_tasks.file_evaluation.evaluate_holdout`,
    reports under ``evaluate/``). Returns both records (the second None when off)."""
    from netsec_tasks.file_evaluation import evaluate_holdout
    from netsec_tasks.registry import register

    record = register(cfg, run, train, validation)
    evaluation = evaluate_holdout(cfg, run, record)  # None unless evaluation.holdout_path
    if evaluation is not None:
        log.info("hold-out %s: %s (report: %s)", evaluation.source, evaluation.metrics, evaluation.html_uri)
    return record, evaluation


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
    evaluation: EvaluationRecord | None = None  # the hold-out file (evaluation.holdout_path)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run.run_id,
            "storage": self.run.storage_uri,
            "outcome": self.outcome.outcome,
            "reason": self.outcome.reason,
            "rows": (self.outcome.rows.model_dump() if self.outcome.rows is not None else None),
            "drift": {
                "detected": self.drift.drift_detected,
                "share": round(self.drift.drift_share, 4),
                "report": self.drift.html_uri,
            },
            "branch": self.branch_reason,
            "reconciled": (
                [i.model_dump() for i in self.reconciled.items] if self.reconciled is not None else []
            ),
        }
        if self.train is not None:
            out["model"] = {
                "winner": self.train.winner,
                "cv_score": round(self.train.cv_score, 4),
                "test_metrics": {k: round(v, 4) for k, v in self.train.test_metrics.items()},
                "threshold": self.train.threshold,
                "operating_point": self.train.operating_point,
                "mlflow_run_id": self.train.mlflow_run_id,
            }
        if self.register is not None:
            out["registry"] = self.register.to_xcom()
        if self.sync is not None:
            out["sync"] = {"destination": self.sync.destination, "objects": self.sync.objects}
        if self.evaluation is not None:
            out["holdout"] = {
                "file": self.evaluation.source,
                "rows": self.evaluation.rows_scored,
                "metrics": {k: round(v, 4) for k, v in self.evaluation.metrics.items()},
                "report": self.evaluation.html_uri,
            }
        return out


def finish_run(
    cfg: PipelineConfig,
    run: RunContext,
    *,
    ingest: IngestRecord,
    validation: ValidationRecord,
    branch: BranchRecord,
    reconciled: ReconcileRecord | None = None,
    transform: TransformRecord | None = None,
    train: TrainRecord | None = None,
    register: RegisterRecord | None = None,
    evaluation: EvaluationRecord | None = None,
    sync: SyncRecord | None = None,
) -> PipelineResult:
    """The ``record_outcome`` step, after either branch: :func:`record_outcome` (commits the
    ingest watermark, writes ``outcome.json``), then ``summary.json`` (:meth:`PipelineResult.summary`).
    The records of the training branch are None when it was skipped."""
    from netsec_tasks.catalog import RunCatalog

    outcome = record_outcome(
        cfg,
        run,
        ingest=ingest,
        drift=branch.drift,
        train=train,
        register=register,
        branch_reason=branch.reason,
        reconciled=reconciled,
        validation=validation,
    )
    result = PipelineResult(
        run=run,
        ingest=ingest,
        validation=validation,
        drift=branch.drift,
        retrain=branch.retrain,
        branch_reason=branch.reason,
        outcome=outcome,
        transform=transform,
        train=train,
        register=register,
        sync=sync,
        reconciled=reconciled,
        evaluation=evaluation,
    )
    RunCatalog.of(cfg, run).save_text("summary", json.dumps(result.summary(), indent=2, default=str))
    return result


def run_pipeline(
    cfg: PipelineConfig,
    *,
    run_id: str | None = None,
    force_retrain: bool = False,
    trigger: str = "cli",
    mongo_client: Any | None = None,
) -> PipelineResult:
    """Run every step in process, in the DAG's order (the table above). Raises the first step's
    NetsecError; the watermark then stays.

    The first action reconciles what earlier runs left (:mod:`netsec_tasks.reconcile`)."""
    from netsec_tasks.ingest import ingest
    from netsec_tasks.reconcile import reconcile
    from netsec_tasks.sync import sync
    from netsec_tasks.train import train
    from netsec_tasks.transform import transform
    from netsec_tasks.validate import validate

    run = RunContext.create(cfg, run_id=run_id, trigger=trigger, force_retrain=force_retrain)
    log.info("run %s in %s", run.run_id, run.storage_uri)
    rec = reconcile(cfg, by=f"pipeline run {run.run_id}")
    ing = ingest(cfg, run, mongo_client=mongo_client)
    val = validate(cfg, run, ing)
    branch = choose_branch(cfg, run, val)
    tr = trn = reg = evaluation = syn = None
    if branch.retrain:
        tr = transform(cfg, run, val)
        trn = train(cfg, run, val, tr)
        reg, evaluation = register_and_evaluate(cfg, run, trn, val)
        syn = sync(cfg, run, register=reg)
    return finish_run(
        cfg,
        run,
        ingest=ing,
        validation=val,
        branch=branch,
        reconciled=rec,
        transform=tr,
        train=trn,
        register=reg,
        evaluation=evaluation,
        sync=syn,
    )
