"""Scoring a model on a test split, for the promotion decision.

Promotion compares both models on the *same* validated test split with the *same* code, each at
its own operating point (:func:`netsec_tasks.operating_point.decide` at the model's threshold), so
a score change means a model change, not a different evaluation. Production is graded only on test rows it was never trained on: its
recorded training-row hashes (:func:`production_rows_in`) say which rows to leave out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.errors import DataError, RegistryError, first_line
from netsec_tasks.operating_point import (
    DecisionPolicy,
    OperatingPoint,
    Threshold,
    decide,
    model_threshold,
    threat_probability,
)
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


@dataclass(frozen=True)
class VersionScore:
    """A model's figures on test rows, decided at its own operating point.

    ``score``: what promotion compares (``recall_at_budget``: the recall at the model's threshold;
    else ``training.metric``); ``point``: the :class:`~netsec_tasks.operating_point.OperatingPoint`
    (FPR with its interval, recall, precision at the expected rate, alerts per 10k benign);
    ``metrics``: the threat class's f1, precision, recall, roc_auc, pr_auc, accuracy, brier;
    ``label_recall``: per raw threat label, ``{"rows": n, "recall": r}`` (the per-label guard);
    ``threshold``: the model's, ``recorded=False`` for a version registered before thresholds.
    """

    score: float
    point: OperatingPoint
    metrics: dict[str, float]
    label_recall: dict[str, dict[str, Any]]
    threshold: Threshold


def score_version(
    model: Any,
    frame,
    schema: DatasetSchema,
    policy: DecisionPolicy,
    metric: str,
    source: str = "test split",
) -> VersionScore:
    """Score ``model`` (a registered model: the Pipeline in its FixedThresholdClassifier, or a bare
    Pipeline decided at 0.5) on ``frame`` at its own threshold with
    :func:`~netsec_tasks.operating_point.decide`, the rule every door uses.

    ``metric``: ``recall_at_budget`` or a ``training.metric`` name. Raises DataError when
    ``frame`` lacks a feature or the target, RegistryError for an unknown metric.
    """
    import numpy as np

    from netsec_tasks.preprocessing import compute_limits
    from netsec_tasks.threat_metrics import SCORERS, evaluate_predictions

    check_test_columns(frame, schema, source)
    if metric != "recall_at_budget" and metric not in SCORERS:
        raise RegistryError(
            f"unknown promotion metric {metric!r}; expected recall_at_budget (decision.objective) "
            "or f1, precision, recall, roc_auc, average_precision, accuracy (training.metric)"
        )
    raw = frame[schema.target.column]
    y = np.asarray(schema.is_threat(raw), dtype=int)
    threshold = model_threshold(model)
    with compute_limits():  # bounded imputation memory, one thread (netsec_tasks.transform)
        scores = threat_probability(model, frame[schema.features])
    pred = decide(scores, threshold)
    point = policy.point(y, scores, threshold, decisions=pred)
    metrics = evaluate_predictions(y, pred, scores)["metrics"]
    if metric == "recall_at_budget":
        score = float(point.recall or 0.0)
    else:
        score = float(metrics.get(SCORERS[metric], float("nan")))
    return VersionScore(score, point, metrics, label_recall(raw, y, pred), threshold)


def label_recall(raw, y, pred) -> dict[str, dict[str, Any]]:
    """Per raw threat label (``-1``, ``neptune``...): its rows and the share of them decided a
    threat, most rows first. Labels compare by :func:`netsec_tasks.dataset_schema.label_key`."""
    import numpy as np
    import pandas as pd

    from netsec_tasks.dataset_schema import label_keys

    keys = label_keys(pd.Series(raw).reset_index(drop=True)).to_numpy(dtype=object)
    threat = np.asarray(y) == 1
    pred = np.asarray(pred).astype(bool)
    out: dict[str, dict[str, Any]] = {}
    counts = pd.Series(keys[threat]).value_counts()
    for key, n in counts.items():
        rows = threat & (keys == key)
        out[str(key)] = {"rows": int(n), "recall": round(float(pred[rows].mean()), 6)}
    return out


def production_score(
    cfg: PipelineConfig, prod, frame, schema: DatasetSchema, policy: DecisionPolicy, metric: str, source: str
) -> VersionScore | None:
    """The Production model's (ModelVersion ``prod``) :func:`score_version` on the same rows, at
    its own operating point (0.5, with a warning, for a version without a threshold); None when
    it cannot be scored on them.

    An unreachable store raises (transient: the task retries). A Production model that cannot be
    loaded (artifacts gone, corrupt) or cannot predict on this split's features is unusable for
    this data, so it must not block its replacement: it loses the comparison.
    """
    try:
        model = load_version(cfg, prod.name, str(prod.version), prod.run_id)
        scored = score_version(model, frame, schema, policy, metric, source=source)
    except (RegistryError, ValueError, KeyError, TypeError) as exc:
        log.warning("Production v%s cannot be scored on %s: %s", prod.version, source, first_line(exc))
        return None
    if not scored.threshold.recorded:
        log.warning(
            "Production v%s has no recorded threshold (registered before operating points): it is "
            "compared at the 0.5 rule its own predict() applies",
            prod.version,
        )
    return scored


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
