"""Scoring a model on a test split, for the promotion decision.

Promotion compares both models on the *same* validated test split with the *same* metric code
(the scikit-learn scorer training selected with), so a score change means a model change, not a
different evaluation. Production is graded only on test rows it was never trained on: its
recorded training-row hashes (:func:`production_rows_in`) say which rows to leave out.
"""

from __future__ import annotations

import logging
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.errors import DataError, RegistryError, first_line
from netsec_tasks.registry.lookup import load_version
from netsec_tasks.tracking import TAG_PREFIX

log = logging.getLogger(__name__)


def check_test_columns(frame, schema: DatasetSchema, source: str) -> None:
    """Raise DataError (naming ``source`` and the columns) when ``frame`` lacks a feature or the
    target of ``schema``."""
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


def production_score(
    cfg: PipelineConfig, prod, frame, schema: DatasetSchema, metric: str, source: str
) -> tuple[float | None, dict[str, float]]:
    """The Production model's (ModelVersion ``prod``) score on the same split and its
    threat-class metrics there (:func:`netsec_tasks.threat_metrics.evaluate`); (None, {}) when it
    cannot be scored on it.

    An unreachable store raises (transient: the task retries). A Production model that cannot be
    loaded (artifacts gone, corrupt) or cannot predict on this split's features is unusable for
    this data, so it must not block its replacement: it loses the comparison.
    """
    import numpy as np

    from netsec_tasks.threat_metrics import evaluate

    try:
        model = load_version(cfg, prod.name, str(prod.version), prod.run_id)
        score = score_model(model, frame, schema, metric, source=source)
        y = np.asarray(schema.is_threat(frame[schema.target.column]), dtype=int)
        metrics = evaluate(model, frame[schema.features], y)[0]
        return score, metrics
    except (RegistryError, ValueError, KeyError, TypeError) as exc:
        log.warning("Production v%s cannot be scored on %s: %s", prod.version, source, first_line(exc))
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
            first_line(exc),
        )
        return None
    return rows_in(lineage_hashes(frame, schema), trained)
