"""Scoring a model on a test split, for the promotion decision.

Promotion compares both models on the *same* validated test split with the *same* code, each at
its own operating point (:func:`netsec_tasks.operating_point.decide` at the model's threshold), so
a score change means a model change, not a different evaluation. Production is graded only on
test rows it was never trained on: its recorded training-row hashes
(:func:`production_trained_hashes`) say which rows to leave out.

The split is never one frame in memory. :class:`TestSplit` scores it partition by partition on
the engine (the task's process, or the Dask workers; ``netsec_tasks.engine``) and keeps only what
grading needs of its rows (:class:`TestRows`: the 0/1 target, the raw label's key and the
content hash, about 17 bytes a row) and each model's P(threat) (8 bytes a row).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema, label_keys
from netsec_tasks.engine import Engine
from netsec_tasks.errors import DataError, RegistryError, first_line
from netsec_tasks.operating_point import (
    DecisionPolicy,
    OperatingPoint,
    Threshold,
    decide,
    model_threshold,
    threat_probability,
)
from netsec_tasks.partitions import read_partition
from netsec_tasks.registry.lookup import load_version
from netsec_tasks.split import lineage_hashes, rows_in
from netsec_tasks.storage import open_dataset, storage_for
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
class TestRows:
    """What grading needs of a test split's *n* rows, in the split's order, never the rows:
    ``y`` int8 (n,), 1 = threat; ``labels`` (n,) the raw label's key
    (:func:`~netsec_tasks.dataset_schema.label_key`, a Categorical; NaN where null);
    ``hashes`` uint64 (n,), the rows' content hashes (:func:`netsec_tasks.split.lineage_hashes`)."""

    source: str
    y: np.ndarray
    labels: pd.Categorical
    hashes: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def where(self, keep: np.ndarray) -> TestRows:
        """The rows where the boolean mask ``keep`` (n,) is true."""
        return TestRows(self.source, self.y[keep], self.labels[keep], self.hashes[keep])


def score_rows(
    frame: pd.DataFrame, schema: DatasetSchema, model: Any, source: str
) -> tuple[TestRows, np.ndarray]:
    """``(rows, P(threat) per row)`` of ``frame`` (validated test rows) scored by ``model``.
    Raises DataError (naming ``source``) when ``frame`` lacks a feature or the target."""
    from netsec_tasks.preprocessing import compute_limits

    check_test_columns(frame, schema, source)
    raw = frame[schema.target.column].reset_index(drop=True)
    y = np.asarray(schema.is_threat(raw), dtype=np.int8)
    rows = TestRows(source, y, pd.Categorical(label_keys(raw)), lineage_hashes(frame, schema))
    with compute_limits():  # bounded imputation memory, one thread (netsec_tasks.transform)
        scores = np.asarray(threat_probability(model, frame[schema.features]), dtype=float)
    return rows, scores


def score_partition(
    cfg: PipelineConfig, schema: DatasetSchema, part: Any, model: Any = None
) -> tuple[TestRows, np.ndarray]:
    """:func:`score_rows` of one partition (a ``netsec_tasks.storage.Partition``) of a test split,
    read where this runs (a Dask worker reads it from storage itself)."""
    return score_rows(read_partition(storage_for(cfg), part), schema, model, part.uri)


class TestSplit:
    """A validated test split, scored model by model without ever being one frame.

    ``TestSplit(cfg, engine, schema, uri)``: the split in storage (one Parquet object or a
    partitioned data set), scored partition by partition on ``engine``, the model sent to each
    worker once. ``TestSplit.of_frame(frame, schema, source)``: a split already in memory (an
    MLflow artifact of a version registered before the storage hand-off). :attr:`rows` is known
    once a model has been scored.
    """

    def __init__(self, cfg: PipelineConfig | None, engine: Engine | None, schema: DatasetSchema, uri: str):
        self.cfg, self.engine, self.schema, self.source = cfg, engine, schema, uri
        self.rows: TestRows | None = None
        self._frame: pd.DataFrame | None = None

    @classmethod
    def of_frame(cls, frame: pd.DataFrame, schema: DatasetSchema, source: str) -> TestSplit:
        split = cls(None, None, schema, source)
        split._frame = frame
        return split

    def check_columns(self) -> None:
        """Raise DataError when the split lacks a feature or the target, before anything is
        registered (a partitioned split's manifest lists its columns; without that list each
        partition is checked as it is scored)."""
        if self._frame is not None:
            check_test_columns(self._frame, self.schema, self.source)
            return
        assert self.cfg is not None
        columns = open_dataset(storage_for(self.cfg), self.source).columns
        if columns:
            check_test_columns(pd.DataFrame(columns=list(columns)), self.schema, self.source)

    def scores(self, model: Any) -> np.ndarray:
        """P(threat) (n,) of every row, in the split's order; sets :attr:`rows` on the first call."""
        if self._frame is not None:
            rows, scores = score_rows(self._frame, self.schema, model, self.source)
        else:
            assert self.cfg is not None and self.engine is not None
            data = open_dataset(storage_for(self.cfg), self.source)
            parts = self.engine.map(
                functools.partial(score_partition, self.cfg, self.schema),
                list(data.partitions),
                what=f"score {self.source}",
                shared={"model": model},
            )
            rows = _concat(self.source, [r for r, _ in parts])
            scores = np.concatenate([s for _, s in parts]) if parts else np.zeros(0)
        if self.rows is None:
            self.rows = rows
        elif len(rows) != len(self.rows) or not np.array_equal(rows.hashes, self.rows.hashes):
            raise DataError("the test split changed while it was being scored", source=self.source)
        return scores


def _concat(source: str, parts: list[TestRows]) -> TestRows:
    if not parts:
        return TestRows(source, np.zeros(0, np.int8), pd.Categorical([]), np.zeros(0, np.uint64))
    return TestRows(
        source,
        np.concatenate([p.y for p in parts]),
        pd.api.types.union_categoricals([p.labels for p in parts]),
        np.concatenate([p.hashes for p in parts]),
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
    split: TestSplit,
    policy: DecisionPolicy,
    metric: str,
    keep: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> VersionScore:
    """Score ``model`` (a registered model: the Pipeline in its FixedThresholdClassifier, or a bare
    Pipeline decided at 0.5) on the test ``split`` at its own threshold with
    :func:`~netsec_tasks.operating_point.decide`, the rule every door uses.

    ``metric``: ``recall_at_budget`` or a ``training.metric`` name; ``keep``: a boolean mask (n,)
    of the rows to grade on (default all); ``scores``: the model's P(threat) on ``split`` when
    already computed. Raises DataError when the split lacks a feature or the target,
    RegistryError for an unknown metric.
    """
    from netsec_tasks.threat_metrics import SCORERS, evaluate_predictions

    if metric != "recall_at_budget" and metric not in SCORERS:
        raise RegistryError(
            f"unknown promotion metric {metric!r}; expected recall_at_budget (decision.objective) "
            "or f1, precision, recall, roc_auc, average_precision, accuracy (training.metric)"
        )
    threshold = model_threshold(model)
    if scores is None:
        scores = split.scores(model)
    rows = split.rows
    assert rows is not None  # set by split.scores
    if keep is not None:
        rows, scores = rows.where(keep), scores[keep]
    y = rows.y.astype(int)
    pred = decide(scores, threshold)
    point = policy.point(y, scores, threshold, decisions=pred)
    metrics = evaluate_predictions(y, pred, scores)["metrics"]
    if metric == "recall_at_budget":
        score = float(point.recall or 0.0)
    else:
        score = float(metrics.get(SCORERS[metric], float("nan")))
    return VersionScore(score, point, metrics, label_recall(rows.labels, y, pred), threshold)


def label_recall(labels: pd.Categorical, y, pred) -> dict[str, dict[str, Any]]:
    """Per raw threat label key (``-1``, ``neptune``...; ``labels`` (n,) as in
    :class:`TestRows`): its rows and the share of them decided a threat, most rows first."""
    threat = np.asarray(y) == 1
    pred = np.asarray(pred).astype(bool)
    keys = np.asarray(labels, dtype=object)[threat]
    hits = pred[threat]
    out: dict[str, dict[str, Any]] = {}
    for key, n in pd.Series(keys).value_counts().items():
        rows = keys == key
        out[str(key)] = {"rows": int(n), "recall": round(float(hits[rows].mean()), 6)}
    return out


def production_score(
    cfg: PipelineConfig,
    prod,
    split: TestSplit,
    policy: DecisionPolicy,
    metric: str,
    keep: np.ndarray | None = None,
) -> VersionScore | None:
    """The Production model's (ModelVersion ``prod``) :func:`score_version` on the same rows
    (``keep``, a mask over ``split``'s rows), at its own operating point (0.5, with a warning, for
    a version without a threshold); None when it cannot be scored on them.

    An unreachable store raises (transient: the task retries). A Production model that cannot be
    loaded (artifacts gone, corrupt) or cannot predict on this split's features is unusable for
    this data, so it must not block its replacement: it loses the comparison.
    """
    try:
        model = load_version(cfg, prod.name, str(prod.version), prod.run_id)
        scored = score_version(model, split, policy, metric, keep=keep)
    except (RegistryError, ValueError, KeyError, TypeError) as exc:
        log.warning("Production v%s cannot be scored on %s: %s", prod.version, split.source, first_line(exc))
        return None
    if not scored.threshold.recorded:
        log.warning(
            "Production v%s has no recorded threshold (registered before operating points): it is "
            "compared at the 0.5 rule its own predict() applies",
            prod.version,
        )
    return scored


def production_trained_hashes(cfg: PipelineConfig, version: str, tags: dict[str, str]) -> np.ndarray | None:
    """The content hashes (uint64, distinct) of the rows model ``version`` (with version ``tags``)
    was trained on, from its recorded lineage; None when it has none (registered before lineage
    was recorded) or the lineage cannot be read."""
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
        return storage_for(cfg).read_frame(uri, columns=["row_hash"])["row_hash"].to_numpy()
    except (DataError, KeyError) as exc:
        log.warning(
            "the training lineage of Production v%s is unreadable (%s): it is compared on "
            "the whole test split",
            version,
            first_line(exc),
        )
        return None


def production_rows_in(cfg: PipelineConfig, version: str, tags: dict[str, str], frame, schema: DatasetSchema):
    """Mask of ``frame``'s rows that model ``version`` (with version ``tags``) was trained on
    (:func:`production_trained_hashes`); None when its lineage is missing or unreadable."""
    trained = production_trained_hashes(cfg, version, tags)
    return None if trained is None else rows_in(lineage_hashes(frame, schema), trained)
