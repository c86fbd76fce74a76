"""The served model: the immutable :class:`LoadedModel` (loading lives in :mod:`serving.loading`,
the fast path in :mod:`serving.fastpath`).

A request takes ``manager.current`` once and uses only that object, so a hot swap (one reference
assignment) can never give a request half of one version and half of another. Everything a
request needs (feature order, labels, the verified fast path) is computed at load time.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netsec_tasks.operating_point import LEGACY_THRESHOLD, Threshold, decide
from netsec_tasks.tracking import TAG_PREFIX

# MLflow type names that carry numbers; anything else ("string", "boolean"...) is passed as is.
NUMERIC_TYPES = {"double", "float", "long", "integer"}


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    run_id: str | None
    pipeline: Any
    features: tuple[str, ...]
    feature_types: tuple[str, ...]  # MLflow signature types, "double" when unknown
    target: str | None
    positive_label: Any
    negative_label: Any
    metrics: dict[str, float]
    dataset_digest: str | None
    tags: dict[str, str]
    model_class: str  # the estimator at the end of the Pipeline, e.g. "XGBClassifier"
    inference_path: str  # "compiled: <predictors>; verified ..." or why the Pipeline is used
    loaded_at: dt.datetime
    fast: Any = field(default=None, repr=False)
    threat_column: int = 1  # index of class 1 (is_threat) in predict_proba
    # The model's own decision threshold (netsec_tasks.operating_point.model_threshold): the
    # artifact's FixedThresholdClassifier's, or the 0.5 rule of a version registered before.
    threshold: Threshold = field(default_factory=lambda: Threshold(LEGACY_THRESHOLD, recorded=False))

    @property
    def numeric_only(self) -> bool:
        return all(t in NUMERIC_TYPES for t in self.feature_types)

    def threat_probability(self, x: Any) -> np.ndarray:
        """P(threat) per row. ``x``: a float matrix (numeric models; NaN where a cell is missing,
        the Pipeline's imputer fills it) or a DataFrame."""
        if self.fast is not None:
            proba = self.fast.predict_proba(x)
        else:
            proba = self.pipeline.predict_proba(self._frame(x))
        return proba[:, self.threat_column]

    def predict(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """(is_threat 0/1, threat probability): one predict_proba pass, decided at the model's
        threshold by :func:`netsec_tasks.operating_point.decide`, the rule of every door (and of
        the artifact's own ``predict``, verified at load)."""
        p = self.threat_probability(x)
        return decide(p, self.threshold), p

    def label_for(self, is_threat: int) -> Any:
        return self.positive_label if is_threat else self.negative_label

    def _frame(self, x: Any):
        import pandas as pd

        if isinstance(x, pd.DataFrame):
            return x
        return pd.DataFrame(x, columns=list(self.features))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "model_class": self.model_class,
            "metrics": self.metrics,
            "dataset_digest": self.dataset_digest,
            # Set by the pipeline when it knows them; None for versions registered before.
            "dataset": self.tags.get("netsec.dataset"),
            "schema_version": self.tags.get("netsec.schema_version"),
            "features": [{"name": f, "type": t} for f, t in zip(self.features, self.feature_types)],
            "target": self.target,
            "positive_label": self.positive_label,
            "negative_label": self.negative_label,
            "inference_path": self.inference_path,
            "loaded_at": self.loaded_at.isoformat(),
            "decision": self.decision(),
        }

    def decision(self) -> dict[str, Any]:
        """The operating point as ``/model`` shows it: the threshold ``is_threat`` uses, the
        false-positive budget and expected threat rate it was chosen for, the precision expected
        at that rate and the test split's figures (version tags written at registration), and
        the promotion's comparison of this version with the Production model it replaced.
        A version registered before thresholds: the 0.5 rule, no budget."""
        tags = self.tags

        def number(key: str) -> float | None:
            try:
                value = float(tags.get(TAG_PREFIX + key) or "nan")
            except ValueError:
                return None
            return None if value != value else value

        def point(key: str) -> dict[str, Any] | None:
            try:
                value = json.loads(tags.get(TAG_PREFIX + key) or "null")
            except ValueError:
                return None
            return value if isinstance(value, dict) and value else None

        test = point("operating_point") if self.threshold.recorded else None
        compared = point("promotion_operating_point")
        return {
            "threshold": self.threshold.value,
            "threshold_recorded": self.threshold.recorded,
            "rule": (
                f"threat when P(threat) >= {self.threshold.value:.6g}"
                if self.threshold.recorded
                else "threat when P(threat) > 0.5 (no threshold recorded: a version registered "
                "before operating points)"
            ),
            "max_false_positive_rate": number("max_false_positive_rate") if self.threshold.recorded else None,
            "expected_threat_rate": number("expected_threat_rate") if self.threshold.recorded else None,
            "objective": tags.get(TAG_PREFIX + "objective") or None,
            "expected_precision": (test or {}).get("precision_at_rate"),
            "test": test,
            "promotion": (
                {
                    "production_version": tags.get(TAG_PREFIX + "previous_production_version") or None,
                    "candidate": compared,
                    "production": point("production_operating_point"),
                }
                if compared
                else None
            ),
        }


def tag_value(raw: str | None) -> Any:
    """Labels are stored as JSON when they are numbers ("-1"), else as plain text."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw
