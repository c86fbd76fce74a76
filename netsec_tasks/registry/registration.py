"""Registering the winner of a training run: step 6 of the pipeline, ``register``.

:func:`register` registers the trained model as a new version (idempotent: a version is keyed by
the pipeline run id and the logged model URI, so a retry reuses it; a version whose set-up fails
is deleted again, so none is half-written), scores it as loaded *from the registry*, and hands it
to :mod:`netsec_tasks.registry.promotion`, which promotes it only when it beats Production.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema, load_schema
from netsec_tasks.errors import NetsecError, RegistryError, first_line
from netsec_tasks.operating_point import DecisionPolicy, decision_policy
from netsec_tasks.outages import is_unreachable, mlflow_errors, owner_id, quick_mlflow
from netsec_tasks.records import RegisterRecord, RunContext, TrainRecord, ValidationRecord
from netsec_tasks.registry.comparable import check_comparable
from netsec_tasks.registry.lookup import (
    PRODUCTION_STAGE,
    all_versions,
    challenger_version,
    load_version,
    production_version,
)
from netsec_tasks.registry.promotion import apply_decision, decide_version
from netsec_tasks.registry.scoring import TestSplit, VersionScore, score_version
from netsec_tasks.tracking import OWNER_TAG, TAG_PREFIX, THRESHOLD_TAG, mlflow_client, model_id_in

log = logging.getLogger(__name__)


def _version_tags(
    cfg: PipelineConfig,
    run: RunContext,
    train: TrainRecord,
    validation: ValidationRecord,
    schema: DatasetSchema,
) -> dict[str, str]:
    from netsec_tasks.split import ROW_HASH

    return {
        TAG_PREFIX + "pipeline_run_id": run.run_id,
        TAG_PREFIX + "model_uri": train.model_uri,
        TAG_PREFIX + "dataset": schema.name,
        TAG_PREFIX + "dataset_digest": validation.dataset_digest,
        # Lineage, all in storage: the training split (drift reference), the test split (serving
        # verifies its fast path on it) and the training rows' hashes (register checks them).
        TAG_PREFIX + "train_uri": validation.train_uri,
        TAG_PREFIX + "reference_uri": validation.train_uri,
        TAG_PREFIX + "test_uri": validation.test_uri,
        TAG_PREFIX + "train_hashes_uri": validation.train_row_hashes_uri,
        TAG_PREFIX + "split": json.dumps(
            {
                "seed": cfg.split.seed,
                "test_size": cfg.split.test_size,
                "row_hash": ROW_HASH,
                "duplicate_aware": cfg.split.duplicate_aware,
            }
        ),
        TAG_PREFIX + "features": json.dumps(schema.features),
        TAG_PREFIX + "target": schema.target.column,
        # What serving calls a threat / benign prediction (predicted_label), and the mapping
        # of raw labels to the threat class the model was trained with.
        TAG_PREFIX + "positive_label": json.dumps(schema.positive_label),
        TAG_PREFIX + "negative_label": json.dumps(schema.negative_label),
        TAG_PREFIX + "label_mapping": json.dumps(schema.target.mapping()),
        TAG_PREFIX + "schema_version": schema.version or "",
        TAG_PREFIX + "metric": train.metric,
        TAG_PREFIX + "test_score": repr(_test_score(train)),
        TAG_PREFIX + "winner": train.winner,
        # The operating point: the threshold the artifact's predict() applies (the model's own;
        # this tag is for reading), the policy it was chosen for, and its test figures.
        **(operating_point_tags(train) if train.threshold is not None else {}),
        # The process registering it: reconcile leaves an undecided version alone while it lives.
        OWNER_TAG: owner_id(),
    }


def operating_point_tags(train: TrainRecord) -> dict[str, str]:
    """The version tags of a training record's operating point (``netsec.threshold``,
    ``netsec.max_false_positive_rate``, ``netsec.expected_threat_rate``, ``netsec.objective``,
    ``netsec.operating_point``: the test point as JSON, ``netsec.oof_operating_point``)."""
    return {
        THRESHOLD_TAG: repr(train.threshold),
        TAG_PREFIX + "threshold_basis": train.threshold_basis or "",
        TAG_PREFIX + "max_false_positive_rate": repr(train.max_false_positive_rate),
        TAG_PREFIX + "expected_threat_rate": repr(train.expected_threat_rate),
        TAG_PREFIX + "objective": train.objective or "",
        TAG_PREFIX + "operating_point": json.dumps(train.operating_point, sort_keys=True),
        TAG_PREFIX + "oof_operating_point": json.dumps(train.oof_operating_point, sort_keys=True),
    }


def _test_score(train: TrainRecord) -> float:
    """The training step's test score for the selection metric (its key for
    average_precision is pr_auc); nan when it did not report it."""
    key = {"average_precision": "pr_auc"}.get(train.metric, train.metric)
    return float(train.test_metrics.get(key, train.test_metrics.get(train.metric, float("nan"))))


def _ensure_registered_model(client, cfg: PipelineConfig, schema: DatasetSchema) -> None:
    from mlflow.exceptions import MlflowException

    name = cfg.registry.model_name
    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    description = (
        f"netsec threat classifier for the '{schema.name}' data set: one sklearn Pipeline "
        f"(preprocess + model) over the schema's {len(schema.features)} feature columns; "
        f"wrapped in a FixedThresholdClassifier whose predict() returns 1 for threat "
        f"({_mapping_text(schema)}) when the threat probability predict_proba[:, 1] reaches the "
        f"version's threshold (tag {THRESHOLD_TAG}, chosen for a false-positive budget). Alias '{cfg.registry.alias}' and stage "
        f"'{PRODUCTION_STAGE}' mark the serving model; versions are promoted only when they beat it."
    )
    try:
        client.create_registered_model(
            name, tags={TAG_PREFIX + "dataset": schema.name}, description=description
        )
    except MlflowException as exc:  # created concurrently by another run: fine
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _mapping_text(schema: DatasetSchema) -> str:
    t = schema.target
    if t.everything_but:
        return f"every label of {t.column} but {t.benign_labels}"
    return f"label {t.column} in {t.threat_labels}"


def _find_version(client, cfg: PipelineConfig, run: RunContext, train: TrainRecord):
    """The version a previous attempt of this pipeline run registered for this model, if any."""
    found = all_versions(client, cfg.registry.model_name, tags={TAG_PREFIX + "pipeline_run_id": run.run_id})
    same = [mv for mv in found if (mv.tags or {}).get(TAG_PREFIX + "model_uri") == train.model_uri]
    return max(same, key=lambda mv: int(mv.version)) if same else None


def _create_version(client, cfg: PipelineConfig, train: TrainRecord, tags: dict[str, str]):
    """A new version of the logged model; all tags go in with the creation, atomically."""
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    source, run_id, model_id = train.model_uri, train.mlflow_run_id, None
    if RunsArtifactRepository.is_runs_uri(train.model_uri):
        import mlflow

        # runs:/<id>/model: MLflow 3 resolves it to the logged model (models:/m-...) itself.
        return mlflow.register_model(train.model_uri, cfg.registry.model_name, tags=tags)
    model_id = model_id_in(train.model_uri)
    if model_id:
        run_id = client.get_logged_model(model_id).source_run_id or run_id
    return client.create_model_version(
        cfg.registry.model_name, source, run_id=run_id, tags=tags, model_id=model_id
    )


def _describe(run: RunContext, train: TrainRecord, validation: ValidationRecord) -> str:
    score = _test_score(train)
    return (
        f"{train.winner} from pipeline run {run.run_id}: test {train.metric} {score:.4f} on "
        f"{train.test_rows} rows (CV {train.cv_score:.4f}), trained on {train.train_rows} rows, "
        f"data digest {validation.dataset_digest[:12]}."
    )


def _delete_quietly(client, name: str, version: str) -> None:
    """A failure handler's clean-up: one short attempt (the store may be what failed); a version
    it cannot delete stays undecided and the next run's reconciliation abandons or decides it."""
    try:
        with quick_mlflow():
            client.delete_model_version(name, version)
    except Exception as exc:  # the original error matters more; say that cleanup failed too
        log.error(
            "could not delete half-registered %s v%s (%s); the next run's reconciliation "
            "will decide or abandon it",
            name,
            version,
            first_line(exc),
        )


def _register_version(
    client,
    cfg: PipelineConfig,
    run: RunContext,
    train: TrainRecord,
    validation: ValidationRecord,
    schema: DatasetSchema,
    split: TestSplit,
    policy: DecisionPolicy,
    metric: str,
) -> tuple[Any, Any, Any, VersionScore]:
    """Register (or reuse) the version and score it as loaded *from the registry*:
    ``(model version, loaded model, its P(threat) on the test split, its score there at its own
    operating point)``.

    Loading through ``models:/<name>/<version>`` proves the registered version is servable; when
    any step after creation fails, the new version is deleted so no partial model stays.
    """
    name = cfg.registry.model_name
    mv = _find_version(client, cfg, run, train)
    created = mv is None
    if created:
        mv = _create_version(client, cfg, train, _version_tags(cfg, run, train, validation, schema))
        log.info("registered %s v%s from %s", name, mv.version, train.model_uri)
    else:
        log.info("reusing %s v%s registered by an earlier attempt of %s", name, mv.version, run.run_id)
    version = str(mv.version)
    try:
        client.update_model_version(name, version, description=_describe(run, train, validation))
        model = load_version(cfg, name, version, train.mlflow_run_id)
        scores = split.scores(model)
        scored = score_version(model, split, policy, metric, scores=scores)
    except Exception as exc:
        if created:
            _delete_quietly(client, name, version)
        if isinstance(exc, NetsecError) and not isinstance(exc, RegistryError):
            raise
        if is_unreachable(exc):
            raise
        raise RegistryError(
            f"registering {train.model_uri} as {name} failed ({first_line(exc)}); "
            f"{'version ' + version + ' was removed again' if created else 'kept version ' + version}"
        ) from exc
    return mv, model, scores, scored


def register(
    cfg: PipelineConfig, run: RunContext, train: TrainRecord, validation: ValidationRecord
) -> RegisterRecord:
    """Register the winner and promote it only when it beats Production on the same test rows.

    Production is graded only on test rows it was never trained on: the split is built so that
    there are none (``netsec_tasks.split``), this step counts them from Production's recorded
    training-row hashes, and if any exist (e.g. ``split.seed`` changed) both models are compared
    on the remaining rows. The count is in the record and on the MLflow run.
    """
    from netsec_tasks.catalog import RunCatalog
    from netsec_tasks.engine import engine_for

    if not train.mlflow_run_id:
        raise RegistryError(
            f"nothing to register: the training record has no MLflow run (model {train.model_uri} "
            "was trained with tracking off); run training with MLflow tracking"
        )
    schema = load_schema(cfg.schema_path)
    catalog = RunCatalog.of(cfg, run)
    # Scored partition by partition on the engine, never read into this process whole.
    split = TestSplit(cfg, engine_for(cfg), schema, validation.test_uri)
    split.check_columns()  # before anything is registered
    name = cfg.registry.model_name
    with mlflow_errors(cfg, f"register {train.model_uri} as {name!r}"):
        client = mlflow_client(cfg)
        # Before anything is registered: a candidate of another data set never replaces (or
        # is compared with) this name's Production model.
        existing = production_version(client, cfg)
        if existing is not None and (existing.tags or {}).get(TAG_PREFIX + "pipeline_run_id") != run.run_id:
            check_comparable(cfg, existing, schema)
        _ensure_registered_model(client, cfg, schema)
        policy = decision_policy(cfg, schema)
        metric = "recall_at_budget" if policy.objective == "recall_at_budget" else train.metric
        mv, model, scores, scored = _register_version(
            client, cfg, run, train, validation, schema, split, policy, metric
        )
        decision = decide_version(client, cfg, mv, model, split, metric, scored=scored, scores=scores)
        apply_decision(client, cfg, train.mlflow_run_id, decision)
        log.info("%s v%s %s: %s", name, decision.version, decision.label, decision.reason)
        challenger = challenger_version(client, cfg)
    record = RegisterRecord(
        model_name=name,
        version=decision.version,
        promoted=decision.promoted,
        production_version=decision.version if decision.promoted else decision.previous,
        previous_production_version=decision.previous,
        new_score=decision.new_score,
        production_score=decision.production_score,
        production_rows_in_test=decision.rows_in_test,
        production_metrics=decision.production_metrics,
        operating_point=decision.operating_point,
        production_operating_point=decision.production_operating_point,
        label_recall=decision.label_recall,
        challenger_version=str(challenger.version) if challenger is not None else None,
        replaced_challenger=decision.replaced,
        reason=decision.reason,
    )
    catalog.save_record("register", record)
    return record
