"""Request validation against the loaded model's feature schema.

Bad input is the caller's problem and gets a 4xx naming the column and the row; it must never
reach the model (where it would become a 500 or, worse, a silent NaN prediction). Valid numeric
input becomes one float64 matrix in the model's feature order: the cheapest thing the fast path
and scikit-learn both accept.
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Any

import numpy as np

from serving.model import NUMERIC_TYPES, LoadedModel


class InputError(Exception):
    """A request the service refuses; ``status_code`` is 4xx."""

    def __init__(self, message: str, *, status_code: int = 422, column: str | None = None,
                 row: int | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.column = column
        self.row = row


def check_row_count(n: int, max_rows: int, where: str) -> None:
    if n == 0:
        raise InputError(f"{where} has no rows; send at least one record")
    if n > max_rows:
        raise InputError(f"{where} has {n} rows; the limit is {max_rows} per request "
                         "(split the batch)", status_code=413)


# --- JSON records -------------------------------------------------------------------------------

def records_from_payload(payload: Any, max_rows: int) -> list[dict]:
    if not isinstance(payload, dict) or "records" not in payload:
        raise InputError('body must be a JSON object {"records": [{feature: value, ...}, ...]}')
    extra = set(payload) - {"records"}
    if extra:
        raise InputError(f"unexpected top-level key(s) {sorted(extra)}; only 'records' is allowed")
    records = payload["records"]
    if not isinstance(records, list):
        raise InputError("'records' must be a list of objects", column="records")
    check_row_count(len(records), max_rows, "'records'")
    return records


def records_to_input(records: list, model: LoadedModel, *, strict_types: bool = True):
    """Validated model input: a float matrix (numeric models) or a DataFrame (mixed types)."""
    features = model.features
    wanted = set(features)
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            raise InputError(f"records[{i}] must be an object of feature: value", row=i)
        if row.keys() != wanted:
            _raise_column_mismatch(set(row), wanted, features, f"records[{i}]", row=i)
    if model.numeric_only:
        return _numeric_matrix(records, features, strict_types)
    return _mixed_frame(records, model)


def _raise_column_mismatch(got: set, wanted: set, order, where: str, row: int | None) -> None:
    missing = [f for f in order if f not in got]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"{where}: missing column '{missing[0]}'{more}", column=missing[0], row=row)
    unexpected = sorted(str(c) for c in got - wanted)
    raise InputError(f"{where}: unexpected column '{unexpected[0]}'; the model takes exactly "
                     f"{len(order)} features (GET /model lists them)", column=unexpected[0], row=row)


def _numeric_matrix(records: list[dict], features, strict_types: bool) -> np.ndarray:
    if len(features) > 1:
        pick = itemgetter(*features)
        rows = [pick(r) for r in records]
    else:
        rows = [[r[features[0]]] for r in records]
    try:
        matrix = np.array(rows)
    except (ValueError, TypeError):
        matrix = None
    # int/float only: strings, booleans, nulls and nested values make numpy pick another kind.
    if matrix is None or matrix.dtype.kind not in "if" or (strict_types and _has_bools(records)):
        _raise_first_bad_value(rows, features)
    matrix = matrix.astype(np.float64, copy=False)
    if not np.isfinite(matrix).all():
        r, c = np.argwhere(~np.isfinite(matrix))[0]
        raise InputError(f"records[{r}]: column '{features[c]}' is {matrix[r, c]}; "
                         "values must be finite numbers", column=features[c], row=int(r))
    return matrix


def _has_bools(records: list[dict]) -> bool:
    # numpy silently turns True into 1 inside an int matrix; look for bools explicitly.
    return any(type(v) is bool for r in records for v in r.values())


def _raise_first_bad_value(rows: list[list], features) -> None:
    for i, row in enumerate(rows):
        for col, v in zip(features, row):
            if type(v) is bool or not isinstance(v, (int, float)):
                shown = "null" if v is None else repr(v)[:40]
                raise InputError(f"records[{i}]: column '{col}' must be a number, got {shown}",
                                 column=col, row=i)
            if isinstance(v, float) and not math.isfinite(v):
                raise InputError(f"records[{i}]: column '{col}' is {v}; values must be finite "
                                 "numbers", column=col, row=i)
    raise InputError("records could not be read as a numeric table")


def _mixed_frame(records: list[dict], model: LoadedModel):
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=list(model.features))
    return validate_frame_types(frame, model, where=lambda r: f"records[{r}]", row_offset=0)


# --- CSV tables ---------------------------------------------------------------------------------

def frame_to_input(frame, model: LoadedModel, max_rows: int, *, passthrough: tuple[str, ...] = ()):
    """Validated model input from an uploaded table. Rows are reported as CSV line numbers."""
    check_row_count(len(frame), max_rows, "the CSV")
    got = set(frame.columns)
    wanted = set(model.features)
    allowed = wanted | set(passthrough)
    for col in got - allowed:
        # pandas renames a repeated header "port" to "port.1": report the repetition.
        base, dot, suffix = str(col).rpartition(".")
        if dot and suffix.isdigit() and base in got:
            raise InputError(f"CSV header: column '{base}' appears more than once", column=base)
    if not wanted <= got or not got <= allowed:
        _raise_column_mismatch(got - set(passthrough), wanted, model.features, "CSV header", row=None)
    features = frame[list(model.features)]
    checked = validate_frame_types(features, model, where=lambda r: f"line {r + 2}", row_offset=2)
    if model.numeric_only:
        return checked.to_numpy(dtype=np.float64)
    return checked


def validate_frame_types(frame, model: LoadedModel, *, where, row_offset: int):
    """Numeric columns: numbers only, finite, no blanks. Other columns: no blanks."""
    import pandas as pd

    out = {}
    for col, typ in zip(model.features, model.feature_types):
        series = frame[col]
        if typ in NUMERIC_TYPES:
            if series.dtype.kind == "b":
                raise InputError(f"{where(0)}: column '{col}' holds true/false, expected numbers",
                                 column=col, row=0 + row_offset)
            numbers = pd.to_numeric(series, errors="coerce") if series.dtype.kind not in "iuf" else series
            numbers = numbers.astype(np.float64)
            bad = ~np.isfinite(numbers.to_numpy())
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raw = series.iloc[r]
                what = "empty" if _is_blank(raw) else f"{str(raw)[:40]!r}, not a finite number"
                raise InputError(f"{where(r)}: column '{col}' is {what}", column=col,
                                 row=r + row_offset)
            out[col] = numbers.to_numpy()
        else:
            blank = series.isna().to_numpy()
            if blank.any():
                r = int(np.flatnonzero(blank)[0])
                raise InputError(f"{where(r)}: column '{col}' is empty", column=col, row=r + row_offset)
            out[col] = series.to_numpy()
    return pd.DataFrame(out, columns=list(model.features))


def _is_blank(v: Any) -> bool:
    try:
        return v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == ""
    except Exception:
        return False
