"""Machine-safe column types: integers beyond int64 become text before any value reaches Arrow,
BSON or NumPy (the contract refuses them by range)."""

from __future__ import annotations

import numpy as np
import pandas as pd

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def machine_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column that holds integers beyond int64 (uint64 columns, Python
    ints in object columns) as text, so no value reaches Arrow, BSON or NumPy as a type they
    cannot hold; the contract refuses such values by range."""
    out = None
    for col in frame.columns:
        s = frame[col]
        if s.dtype == np.uint64:
            over = bool((s > np.uint64(_INT64_MAX)).any())
        elif s.dtype == object:
            over = any(
                isinstance(v, int) and not isinstance(v, bool) and not _INT64_MIN <= v <= _INT64_MAX
                for v in s.tolist()
            )
        else:
            continue
        if over:
            out = frame.copy() if out is None else out
            out[col] = s.map(
                lambda v: v if v is None or (isinstance(v, float) and v != v) else str(v)
            ).astype(object)
    return frame if out is None else out
