"""The scored output of every door: the echoed input columns, then :data:`OUTPUT_COLUMNS`
(``predicted_label``, ``is_threat``, ``threat_probability``, ``imputed_cells``, ``status``,
``reason``, ``model_version``, ``prediction_id``). Written out by the sinks
(:func:`netsec_tasks.sinks.csv_chunks` for CSV).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.contract.problems import RowCheck
from netsec_tasks.dataset_schema import RESERVED_COLUMNS

# What every scoring door adds after the echoed input columns, in this order.
OUTPUT_COLUMNS = RESERVED_COLUMNS


def scored_frame(
    echo: pd.DataFrame,
    check: RowCheck,
    *,
    is_threat: np.ndarray,
    probability: np.ndarray,
    labels: Sequence[Any],
    model_version: str,
    prediction_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The output table of a scoring door: ``echo`` (input columns to return, one row per
    checked row), then :data:`OUTPUT_COLUMNS`. ``is_threat``, ``probability``, ``labels`` and
    ``prediction_ids`` (None: not logged, left empty) are for the valid rows only, in order;
    invalid rows come back unscored with ``status=invalid`` and their reason."""
    n = check.n_rows
    valid = check.valid
    out = echo.reset_index(drop=True).copy() if len(echo.columns) else pd.DataFrame(index=range(n))
    label: list[Any] = [None] * n
    for i, lbl in zip(np.flatnonzero(valid), labels):
        label[i] = lbl
    threat = pd.Series(pd.NA, index=range(n), dtype="Int8")
    threat[valid] = np.asarray(is_threat, dtype=np.int8)
    proba = np.full(n, np.nan)
    proba[valid] = probability
    reasons = check.reasons()
    out["predicted_label"] = pd.Series(label, dtype=object)
    out["is_threat"] = threat
    out["threat_probability"] = proba
    out["imputed_cells"] = np.where(valid, check.null_cells, 0)
    out["status"] = np.where(valid, "ok", "invalid")
    out["reason"] = [reasons.get(i, "") for i in range(n)]
    out["model_version"] = str(model_version)
    ids = np.full(n, None, dtype=object)
    if prediction_ids is not None:
        ids[np.asarray(valid, dtype=bool)] = prediction_ids
    out["prediction_id"] = pd.Series(ids, dtype=object)
    return out
