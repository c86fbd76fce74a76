"""Step 6, registry: register the winner, promote it only when it beats Production.

The Production model is the version holding alias ``cfg.registry.alias`` *and* stage "Production"
(stages are deprecated since MLflow 2.9 but still work in 3.x; they are kept so clients that read
``models:/<name>/Production`` keep working). A version is looked up by alias first and by stage
only as a fallback, so the alias is the source of truth.

Promotion compares both models on the *same* validated test split with the *same* metric code,
so a score change means a model change, not a different evaluation. Both decisions (promoted or
rejected) are recorded as tags on the model version and on the pipeline's parent MLflow run.

Registration is idempotent and never half-written: a version is keyed by the pipeline run id and
the logged model URI; a retry reuses it, and a version whose set-up fails is deleted again.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import ConfigError, DataError, NetsecError, RegistryError

# "Is the store unreachable" and the error it becomes live in netsec_tasks.outages (one place for
# MLflow, S3 and MongoDB); mlflow_errors stays importable from here.
from netsec_tasks.outages import is_unreachable as _is_unreachable
from netsec_tasks.outages import mlflow_errors, owner_id, quick_mlflow
from netsec_tasks.records import RegisterRecord, RollbackRecord, RunContext, TrainRecord, ValidationRecord
from netsec_tasks.schema import DatasetSchema, load_schema
from netsec_tasks.tracking import OWNER_TAG, TAG_PREFIX, mlflow_client, version_label

log = logging.getLogger(__name__)

PRODUCTION_STAGE = "Production"
PROMOTION_TAG = (
    TAG_PREFIX + "promotion"
)  # promoted | rejected | abandoned | rolled_back: the version's decision
# Metrics that need a threat probability rather than a hard 0/1 prediction.


@dataclass(frozen=True)
class ProductionModel:
    """The current Production version and what serving/drift need to know about it."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    stage: str | None = None

    @property
    def model_uri(self) -> str:
        """A URI pinned to this version (an alias may move between lookup and load)."""
        return f"models:/{self.name}/{self.version}"

    @property
    def reference_uri(self) -> str | None:
        """The training split: the drift reference (storage URI; runs:/ for older versions)."""
        return self.tags.get(TAG_PREFIX + "train_uri") or self.tags.get(TAG_PREFIX + "reference_uri")


# --------------------------------------------------------------------------- MLflow access


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


# --------------------------------------------------------------------------- Production lookup


def find_production_version(client, name: str, alias: str, stage: str = PRODUCTION_STAGE):
    """The ModelVersion of ``name`` holding ``alias``, else the newest one in ``stage``, else None.

    The one "which version is Production" lookup: the pipeline and serving both use it.
    """
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (registered.aliases or {}).get(alias)
    if version is not None:
        return client.get_model_version(name, str(version))
    in_stage = [mv for mv in _all_versions(client, name) if mv.current_stage == stage]
    return max(in_stage, key=lambda mv: int(mv.version)) if in_stage else None


def _production_version(client, cfg: PipelineConfig):
    return find_production_version(client, cfg.registry.model_name, cfg.registry.alias)


def _all_versions(client, name: str, extra_filter: str = "") -> list:
    flt = f"name = '{_quote(name)}'" + (f" and {extra_filter}" if extra_filter else "")
    out, token = [], None
    while True:
        page = client.search_model_versions(flt, max_results=200, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def get_production(cfg: PipelineConfig) -> ProductionModel | None:
    """The current Production model (alias, falling back to stage), or None when there is none."""
    with mlflow_errors(cfg, f"look up the Production version of {cfg.registry.model_name!r}"):
        client = mlflow_client(cfg)
        mv = _production_version(client, cfg)
        if mv is None:
            return None
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(client.get_run(mv.run_id).data.metrics)
            except Exception as exc:  # a deleted source run must not hide the Production model
                log.warning(
                    "source run %s of %s v%s unreadable: %s", mv.run_id, mv.name, mv.version, _first_line(exc)
                )
        return ProductionModel(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            source=mv.source,
            tags=dict(mv.tags or {}),
            metrics=metrics,
            aliases=tuple(mv.aliases or ()),
            stage=mv.current_stage,
        )


def production_reference(cfg: PipelineConfig) -> tuple[str | None, str | None]:
    """(URI of the current Production model's training data, its version); (None, None) when
    there is no Production model.

    Raises ConfigError when that model is another data set's (other features, target or label
    mapping, see :func:`check_comparable`): the run stops before drift and training instead of
    comparing two data sets and failing at registration."""
    prod = get_production(cfg)
    if prod is None:
        return None, None
    check_comparable(cfg, prod, load_schema(cfg.schema_path))
    return prod.reference_uri, prod.version


def production_reference_uri(cfg: PipelineConfig) -> str | None:
    """URI of the training data of the current Production model; None when there is none
    (:func:`production_reference` without the version)."""
    return production_reference(cfg)[0]


def load_production_model(cfg: PipelineConfig) -> tuple[Any, str]:
    """(sklearn Pipeline, version) of the Production model.

    The version is resolved first (alias, then stage) and the model loaded by that exact version,
    so the returned version is always the one that was loaded even if the alias moves meanwhile.
    Raises RegistryError when there is no Production model.
    """
    prod = get_production(cfg)
    if prod is None:
        raise RegistryError(
            f"no Production model: registered model {cfg.registry.model_name!r} has no alias "
            f"{cfg.registry.alias!r} and no version in stage {PRODUCTION_STAGE!r} at "
            f"{cfg.registry.tracking_uri}; run the training pipeline first"
        )
    return _load_version(cfg, prod.name, prod.version, prod.run_id), prod.version


def _load_version(cfg: PipelineConfig, name: str, version: str, run_id: str | None = None) -> Any:
    """Load one version with the sklearn flavour, after checking it is skops with allowed types
    only (the trusted-type list is read from the model's own MLmodel file). Errors name
    ``models:/<name>/<version>``, its run and the artifact, never a temporary path."""
    from netsec_tasks.tracking import load_verified_model

    label = version_label(name, version, run_id)
    with mlflow_errors(cfg, f"load {label}"):
        mlflow_client(cfg)
        try:
            return load_verified_model(f"models:/{name}/{version}", cfg.registry.tracking_uri, label=label)
        except NetsecError:
            raise
        except Exception as exc:
            if _is_unreachable(exc):
                raise
            raise RegistryError(f"{label} cannot be loaded: {_first_line(exc)}") from exc


# --------------------------------------------------------------------------- scoring


def check_test_columns(frame, schema: DatasetSchema, source: str) -> None:
    missing = [c for c in schema.features + [schema.target.column] if c not in frame.columns]
    if missing:
        raise DataError(
            "columns missing from the test split: "
            + ", ".join(missing)
            + " (it must hold the schema's features and target)",
            source=source,
            columns=missing,
        )


def score_model(model: Any, frame, schema: DatasetSchema, metric: str, source: str = "test split") -> float:
    """``metric`` (``training.metric``, a scikit-learn scorer name) of the threat class
    (y = label is a threat -> 1) for a 0/1 model on ``frame``: the same scorer the search
    selected with (``sklearn.metrics.get_scorer``), so promotion compares what selection chose.

    Raises DataError when ``frame`` lacks a feature or the target, RegistryError for a metric
    scikit-learn has no scorer for.
    """
    import numpy as np
    from sklearn.metrics import get_scorer

    from netsec_tasks.transform import compute_limits

    check_test_columns(frame, schema, source)
    try:
        scorer = get_scorer(metric)
    except ValueError:
        raise RegistryError(
            f"unknown promotion metric {metric!r}; expected f1, precision, recall, "
            "roc_auc, average_precision or accuracy (training.metric)"
        ) from None
    X = frame[schema.features]
    y = np.asarray(schema.is_threat(frame[schema.target.column]), dtype=int)
    with compute_limits():  # bounded imputation memory, one thread (netsec_tasks.transform)
        return float(scorer(model, X, y))


# --------------------------------------------------------------------------- registration


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
        # The process registering it: reconcile leaves an undecided version alone while it lives.
        OWNER_TAG: owner_id(),
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
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
    description = (
        f"netsec threat classifier for the '{schema.name}' data set: one sklearn Pipeline "
        f"(preprocess + model) over the schema's {len(schema.features)} feature columns; "
        f"predict() returns 1 for threat ({_mapping_text(schema)}), "
        f"predict_proba[:, 1] is the threat probability. Alias '{cfg.registry.alias}' and stage "
        f"'{PRODUCTION_STAGE}' mark the serving model; versions are promoted only when they beat it."
    )
    try:
        client.create_registered_model(
            name, tags={TAG_PREFIX + "dataset": schema.name}, description=description
        )
    except MlflowException as exc:  # created concurrently by another run: fine
        if _error_code(exc) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _mapping_text(schema: DatasetSchema) -> str:
    t = schema.target
    if t.everything_but:
        return f"every label of {t.column} but {t.benign_labels}"
    return f"label {t.column} in {t.threat_labels}"


def _differences(tags: dict[str, str], schema: DatasetSchema) -> list[str]:
    """What makes a model version (its tags) a different model from one trained on ``schema``:
    other features, another target column, another label mapping. Empty when comparable."""
    out = []
    try:
        theirs = json.loads(tags[TAG_PREFIX + "features"]) if tags.get(TAG_PREFIX + "features") else None
    except ValueError:
        theirs = None
    if theirs is not None:
        ours = schema.features
        gone = [c for c in theirs if c not in ours]
        new = [c for c in ours if c not in theirs]
        if gone:
            out.append(f"features it has and the candidate lacks: {_short(gone)}")
        if new:
            out.append(f"features only the candidate has: {_short(new)}")
    target = tags.get(TAG_PREFIX + "target")
    if target and target != schema.target.column:
        out.append(f"target column {target!r}, the candidate's is {schema.target.column!r}")
    if tags.get(TAG_PREFIX + "label_mapping"):
        try:
            theirs_map = json.loads(tags[TAG_PREFIX + "label_mapping"])
        except ValueError:
            theirs_map = None
        ours_map = schema.target.mapping()
        if theirs_map is not None and any(
            sorted(map(str, theirs_map.get(k) or [])) != sorted(map(str, ours_map.get(k) or []))
            for k in ("positive", "negative")
        ):
            shown = {k: v for k, v in theirs_map.items() if k != "labels"}
            out.append(
                f"label mapping {shown}, the candidate's is "
                f"{ {k: v for k, v in ours_map.items() if k != 'labels'} }"
            )
    return out


def _short(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def check_comparable(cfg: PipelineConfig, prod, schema: DatasetSchema) -> None:
    """Refuse to register a candidate under a model name whose Production version is another
    model (other features, target or label mapping): it would be compared with it as if they
    were the same model, and serving would answer one data set's requests with the other's
    model. Raises ConfigError saying what differs and how to name the new model."""
    if prod is None:
        return
    tags = dict(prod.tags or {})
    diff = _differences(tags, schema)
    if not diff:
        return
    name = cfg.registry.model_name
    theirs = tags.get(TAG_PREFIX + "dataset") or "?"
    how = (
        "set registry.model_name (NETSEC_REGISTRY__MODEL_NAME) to a new name"
        if not cfg.model_name_derived
        else f"the name {name!r} is derived from the data set '{cfg.dataset}', so another data set "
        f"registered under it; set registry.model_name (NETSEC_REGISTRY__MODEL_NAME) to a new "
        f"name"
    )
    raise ConfigError(
        f"registered model {name!r}: Production v{prod.version} (data set '{theirs}') is not a "
        f"model of the data set '{schema.name}' being trained: "
        + "; ".join(diff)
        + f". Nothing was registered and Production is unchanged; to keep both, {how}"
    )


def _find_version(client, cfg: PipelineConfig, run: RunContext, train: TrainRecord):
    """The version a previous attempt of this pipeline run registered for this model, if any."""
    found = _all_versions(
        client, cfg.registry.model_name, f"tags.`{TAG_PREFIX}pipeline_run_id` = '{_quote(run.run_id)}'"
    )
    same = [mv for mv in found if (mv.tags or {}).get(TAG_PREFIX + "model_uri") == train.model_uri]
    return max(same, key=lambda mv: int(mv.version)) if same else None


def _create_version(client, cfg: PipelineConfig, train: TrainRecord, tags: dict[str, str]):
    """A new version of the logged model; all tags go in with the creation, atomically."""
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
    from mlflow.store.artifact.utils.models import _parse_model_id_if_present

    source, run_id, model_id = train.model_uri, train.mlflow_run_id, None
    if RunsArtifactRepository.is_runs_uri(train.model_uri):
        import mlflow

        # runs:/<id>/model: MLflow 3 resolves it to the logged model (models:/m-...) itself.
        return mlflow.register_model(train.model_uri, cfg.registry.model_name, tags=tags)
    model_id = _parse_model_id_if_present(train.model_uri)
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
            _first_line(exc),
        )


def _register_version(
    client,
    cfg: PipelineConfig,
    run: RunContext,
    train: TrainRecord,
    validation: ValidationRecord,
    schema: DatasetSchema,
    frame,
) -> tuple[Any, Any, float]:
    """Register (or reuse) the version and score it as loaded *from the registry*:
    ``(model version, loaded model, score on frame)``.

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
        model = _load_version(cfg, name, version, train.mlflow_run_id)
        new_score = score_model(model, frame, schema, train.metric, source=validation.test_uri)
    except Exception as exc:
        if created:
            _delete_quietly(client, name, version)
        if isinstance(exc, NetsecError) and not isinstance(exc, RegistryError):
            raise
        if _is_unreachable(exc):
            raise
        raise RegistryError(
            f"registering {train.model_uri} as {name} failed ({_first_line(exc)}); "
            f"{'version ' + version + ' was removed again' if created else 'kept version ' + version}"
        ) from exc
    return mv, model, new_score


# --------------------------------------------------------------------------- promotion


def _json_dict(text: str | None) -> dict[str, float]:
    """A metrics tag back as a dict; {} when absent or not JSON (tags written before it existed)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _decide(
    cfg: PipelineConfig, metric: str, new_score: float, prod_version: str | None, prod_score: float | None
) -> tuple[bool, str]:
    """(promote?, the reason in plain sentences). A rejection names every rule the new model
    failed; the settings are named by their config keys."""
    reg = cfg.registry
    cand = f"The candidate's {metric} {new_score:.4f}"
    floor_ok = new_score >= reg.min_score
    floor = f"the floor of {reg.min_score:.4f} (registry.min_score)"
    clears = f"clears {floor}" if floor_ok else f"is below {floor}"
    if prod_version is None:
        if floor_ok:
            return True, f"There was no Production model, and {cand[0].lower() + cand[1:]} {clears}."
        return False, f"There is no Production model, but {cand[0].lower() + cand[1:]} {clears}."
    if prod_score is None:
        head = (
            f"Production v{prod_version} could not be loaded or scored on this test split (see the task log)"
        )
        joint = "and" if floor_ok else "but"
        return floor_ok, f"{head}, {joint} {cand[0].lower() + cand[1:]} {clears}."
    # "Beats" is strict: a retrained model that only ties Production does not replace it
    # (a tie would churn versions and restart serving for no gain).
    bar = prod_score + reg.promotion_margin
    beats = new_score > bar
    compared = (
        f"{cand} {'beats' if beats else 'does not beat'} Production v{prod_version}'s "
        f"{prod_score:.4f} plus the promotion margin {reg.promotion_margin:.4f} "
        "(registry.promotion_margin)"
    )
    if beats and floor_ok:
        return True, f"{compared}, and {clears}."
    if beats:
        return False, f"{compared}, but {clears}."
    return False, f"{compared}" + ("." if floor_ok else f", and {clears}.")


def _production_score(
    cfg: PipelineConfig, prod, frame, schema: DatasetSchema, metric: str, source: str
) -> tuple[float | None, dict[str, float]]:
    """The Production model's score on the same split and its threat-class metrics there
    (:func:`netsec_tasks.evaluation.evaluate`); (None, {}) when it cannot be scored on it.

    An unreachable store raises (transient: the task retries). A Production model that cannot be
    loaded (artifacts gone, corrupt) or cannot predict on this split's features is unusable for
    this data, so it must not block its replacement: it loses the comparison.
    """
    import numpy as np

    from netsec_tasks.evaluation import evaluate

    try:
        model = _load_version(cfg, prod.name, str(prod.version), prod.run_id)
        score = score_model(model, frame, schema, metric, source=source)
        y = np.asarray(schema.is_threat(frame[schema.target.column]), dtype=int)
        metrics = evaluate(model, frame[schema.features], y)[0]
        return score, metrics
    except (RegistryError, ValueError, KeyError, TypeError) as exc:
        log.warning("Production v%s cannot be scored on %s: %s", prod.version, source, _first_line(exc))
        return None, {}


def production_rows_in(cfg: PipelineConfig, version: str, tags: dict[str, str], frame, schema: DatasetSchema):
    """Mask of ``frame``'s rows that model ``version`` (with version ``tags``) was trained on,
    from its recorded training-row hashes; None when it has no lineage (registered before
    lineage was recorded) or the lineage cannot be read."""
    from netsec_tasks.split import lineage_hashes, rows_in
    from netsec_tasks.storage import storage_for

    uri = tags.get(TAG_PREFIX + "train_hashes_uri")
    if not uri:
        log.warning(
            "Production v%s has no training lineage (it was registered before netsec "
            "recorded one): it is compared on the whole test split, as before, and may "
            "have been trained on some of its rows",
            version,
        )
        return None
    try:
        trained = storage_for(cfg).read_frame(uri)["row_hash"].to_numpy()
    except (DataError, KeyError) as exc:
        log.warning(
            "the training lineage of Production v%s is unreadable (%s): it is compared on "
            "the whole test split",
            version,
            _first_line(exc),
        )
        return None
    return rows_in(lineage_hashes(frame, schema), trained)


def _promote(client, cfg: PipelineConfig, version: str) -> None:
    """Alias first (what netsec reads), then the deprecated stage for stage-reading clients."""
    name = cfg.registry.model_name
    client.set_registered_model_alias(name, cfg.registry.alias, version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stages are deprecated, and used here on purpose
        client.transition_model_version_stage(name, version, PRODUCTION_STAGE, archive_existing_versions=True)


def rollback(cfg: PipelineConfig, *, to_version: str | None = None, reason: str = "") -> RollbackRecord:
    """Move Production (``registry.alias``, and the deprecated stage) back to ``to_version``,
    by default the version the current one replaced (its tag ``netsec.previous_production_version``).

    Every promoted version newer than the target is tagged ``netsec.promotion=rolled_back``
    (with ``netsec.rolled_back_to`` and ``netsec.rollback_reason``) *before* the alias moves, so
    reconcile, which finishes promotions that did not move the alias, never promotes one of them
    again. Serving follows the alias at its next registry poll; the next run compares its
    candidate with the restored version.

    Raises ConfigError when there is no Production model, no recorded previous version and no
    ``to_version``, or the target does not exist or already is Production; SourceUnavailable when
    the registry is unreachable."""
    from mlflow.exceptions import MlflowException

    name = cfg.registry.model_name
    with mlflow_errors(cfg, f"roll back {name}"):
        client = mlflow_client(cfg)
        prod = _production_version(client, cfg)
        if prod is None:
            raise ConfigError(
                f"{name} has no Production model (alias '{cfg.registry.alias}'): nothing to roll back"
            )
        current = str(prod.version)
        target = to_version or (prod.tags or {}).get(TAG_PREFIX + "previous_production_version")
        if not target or target == "None":
            raise ConfigError(
                f"{name} v{current} records no previous Production version: "
                "name the version to restore (netsec rollback --to VERSION)"
            )
        target = str(target)
        if target == current:
            raise ConfigError(f"{name} v{target} already is Production")
        try:
            client.get_model_version(name, target)
        except MlflowException as exc:
            raise ConfigError(
                f"{name} has no version {target!r} to roll back to: {str(exc).splitlines()[0]}"
            ) from None
        why = reason or f"rolled back from v{current} to v{target} by an operator"
        undone = [
            str(mv.version)
            for mv in _all_versions(client, name)
            if int(mv.version) > int(target) and (mv.tags or {}).get(PROMOTION_TAG) == "promoted"
        ]
        for version in sorted(set(undone) | {current}, key=int):
            client.set_model_version_tag(name, version, PROMOTION_TAG, "rolled_back")
            client.set_model_version_tag(name, version, TAG_PREFIX + "rolled_back_to", target)
            client.set_model_version_tag(name, version, TAG_PREFIX + "rollback_reason", why)
        _promote(client, cfg, target)
    log.info("%s: Production rolled back from v%s to v%s (%s)", name, current, target, why)
    return RollbackRecord(
        model_name=name,
        from_version=current,
        to_version=target,
        rolled_back=sorted(set(undone) | {current}, key=int),
        reason=why,
    )


@dataclass(frozen=True)
class Decision:
    """A version's promotion decision, as recorded in its tags and its run's."""

    version: str
    promoted: bool
    reason: str
    new_score: float | None
    production_score: float | None
    previous: str | None  # Production before the decision
    rows_in_test: int | None = None  # test rows Production was trained on (None: no lineage)
    outcome: str = ""  # promoted | rejected | abandoned (default: from ``promoted``)
    # The previous Production's metrics on the compared rows ({}: not compared, or a retry).
    production_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.outcome or ("promoted" if self.promoted else "rejected")

    def tags(self) -> dict[str, str]:
        return {
            PROMOTION_TAG: self.label,
            TAG_PREFIX + "promotion_reason": self.reason,
            TAG_PREFIX + "production_score": repr(self.production_score),
            TAG_PREFIX + "new_score": repr(self.new_score),
            TAG_PREFIX + "previous_production_version": self.previous or "",
            TAG_PREFIX + "production_rows_in_test": ""
            if self.rows_in_test is None
            else str(self.rows_in_test),
            TAG_PREFIX + "production_metrics": json.dumps(self.production_metrics, sort_keys=True),
        }


def decide_version(
    client,
    cfg: PipelineConfig,
    mv,
    model,
    new_score: float,
    frame,
    schema: DatasetSchema,
    metric: str,
    source: str,
) -> Decision:
    """Compare version ``mv`` (the loaded ``model``, scored ``new_score`` on ``frame``) with the
    current Production model on the same rows, leaving out test rows Production was trained on.
    A version that already is Production keeps its earlier decision (a retry finishes it)."""
    version = str(mv.version)
    tags = mv.tags or {}
    prod = _production_version(client, cfg)
    if prod is not None and str(prod.version) == version:
        # An earlier attempt already promoted it; finish the stage move in case it crashed.
        prev_score = tags.get(TAG_PREFIX + "production_score")
        seen = tags.get(TAG_PREFIX + "production_rows_in_test")
        return Decision(
            version,
            True,
            tags.get(TAG_PREFIX + "promotion_reason") or "already Production",
            new_score,
            float(prev_score) if prev_score not in (None, "", "None") else None,
            tags.get(TAG_PREFIX + "previous_production_version") or None,
            int(seen) if seen not in (None, "", "None") else None,
            production_metrics=_json_dict(tags.get(TAG_PREFIX + "production_metrics")),
        )
    previous = str(prod.version) if prod is not None else None
    production_score = rows_in_test = None
    production_metrics: dict[str, float] = {}
    note = ""
    if prod is not None:
        seen_mask = production_rows_in(cfg, str(prod.version), dict(prod.tags or {}), frame, schema)
        compared = frame
        if seen_mask is not None:
            rows_in_test = int(seen_mask.sum())
            if rows_in_test:
                compared = frame[~seen_mask]
                note = (
                    f" Both were compared on the {len(compared)} test rows Production "
                    f"v{previous} never saw (it was trained on {rows_in_test} of them)."
                )
                log.warning(
                    "Production v%s was trained on %d of the %d test rows (did "
                    "split.seed or split.test_size change?): both models are "
                    "compared on the other %d",
                    previous,
                    rows_in_test,
                    len(frame),
                    len(compared),
                )
                new_score = (
                    score_model(model, compared, schema, metric, source=source)
                    if len(compared)
                    else new_score
                )
        if len(compared):
            production_score, production_metrics = _production_score(
                cfg, prod, compared, schema, metric, source
            )
    promoted, reason = _decide(cfg, metric, new_score, previous, production_score)
    return Decision(
        version,
        promoted,
        reason + note,
        new_score,
        production_score,
        previous,
        rows_in_test,
        production_metrics=production_metrics,
    )


def _record_decision(
    client, cfg: PipelineConfig, run_id: str | None, version: str, tags: dict[str, str]
) -> None:
    from mlflow.entities import RunTag

    for key, value in tags.items():
        client.set_model_version_tag(cfg.registry.model_name, version, key, value)
    if run_id:
        client.log_batch(
            run_id,
            tags=[RunTag(k, v) for k, v in tags.items()] + [RunTag(TAG_PREFIX + "model_version", version)],
        )


def apply_decision(
    client,
    cfg: PipelineConfig,
    run_id: str | None,
    decision: Decision,
    extra_tags: dict[str, str] | None = None,
) -> None:
    """Record the decision (version and run tags), then promote when it says so.

    Tags go first: a crash between the two leaves a version tagged promoted that is not
    Production, which :mod:`netsec_tasks.reconcile` finishes."""
    name = cfg.registry.model_name
    try:
        _record_decision(client, cfg, run_id, decision.version, {**decision.tags(), **(extra_tags or {})})
        if decision.promoted:
            _promote(client, cfg, decision.version)
    except Exception as exc:
        if _is_unreachable(exc):
            raise
        raise RegistryError(
            f"{name} v{decision.version} is registered but recording the promotion "
            f"decision failed: {_first_line(exc)}; retry the task"
        ) from exc


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

    if not train.mlflow_run_id:
        raise RegistryError(
            f"nothing to register: the training record has no MLflow run (model {train.model_uri} "
            "was trained with tracking off); run training with MLflow tracking"
        )
    schema = load_schema(cfg.schema_path)
    catalog = RunCatalog.of(cfg, run)
    frame = catalog.load_frame(validation.test_uri)
    check_test_columns(frame, schema, validation.test_uri)  # before anything is registered
    name = cfg.registry.model_name
    with mlflow_errors(cfg, f"register {train.model_uri} as {name!r}"):
        client = mlflow_client(cfg)
        # Before anything is registered: a candidate of another data set never replaces (or
        # is compared with) this name's Production model.
        existing = _production_version(client, cfg)
        if existing is not None and (existing.tags or {}).get(TAG_PREFIX + "pipeline_run_id") != run.run_id:
            check_comparable(cfg, existing, schema)
        _ensure_registered_model(client, cfg, schema)
        mv, model, new_score = _register_version(client, cfg, run, train, validation, schema, frame)
        decision = decide_version(
            client, cfg, mv, model, new_score, frame, schema, train.metric, validation.test_uri
        )
        apply_decision(client, cfg, train.mlflow_run_id, decision)
        log.info("%s v%s %s: %s", name, decision.version, decision.label, decision.reason)
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
        reason=decision.reason,
    )
    catalog.save_record("register", record)
    return record
