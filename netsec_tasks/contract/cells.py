"""Typing the cells of one column by the column's spec: the contract's typing rule, shared by
every door (the rules in :mod:`netsec_tasks.contract`).

:func:`coerce` types a column (``int``/``float``/``bool``/``str``) and flags what cannot be
typed or held (:data:`MACHINE_BOUNDS`) with a reason per cell; :func:`null_mask` says which
cells are null; :func:`to_numbers` and :func:`machine_bad` are the numeric pieces the
contract's fast path for numeric blocks reuses. Nothing here raises on a bad value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.dataset_schema import ColumnSpec

NULL_WORDS = frozenset({"", "na", "n/a", "nan", "null", "none", "<na>"})
_TRUE = {"true", "1", "1.0"}
_FALSE = {"false", "0", "0.0"}
_BOOL_WORDS = {"true", "false"}
# What the data path can hold, on top of the schema's min/max. int: int64 (Parquet, MongoDB's
# 8-byte integers), checked in float64 as the contract types numbers, so the top is 2**63
# exclusive. float: float32's largest finite value (tree models, XGBoost and the ONNX fast path
# compute in float32, where a larger value is infinite).
INT64_LOW, INT64_HIGH = -(2.0**63), 2.0**63
FLOAT32_MAX = float(np.finfo(np.float32).max)
MACHINE_BOUNDS = {
    "int": "outside int64 (-9223372036854775808 .. 9223372036854775807), the integers storage "
    "and MongoDB hold",
    "float": "beyond float32 (±3.4e38), the range the models compute in",
}
NOT_FINITE = "not a finite number (infinite, or beyond float64's ±1.8e308)"
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def null_mask(raw: pd.Series) -> pd.Series:
    """Null, NaN, or a text cell that is blank or a null word (``NA``, ``null``, ``NaN``...)."""
    null = raw.isna()
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        text = raw[~null]
        words = text.map(lambda v: isinstance(v, str) and v.strip().lower() in NULL_WORDS)
        null.loc[words.index[words.to_numpy(dtype=bool)]] = True
    return null


def _as_text(raw: pd.Series) -> pd.Series:
    """Values as strings: text trimmed, a JSON number as its shortest text (``1.0`` is ``"1"``),
    a boolean as JSON spells it (``true``), so a value reads alike at the CSV and JSON doors."""
    if pd.api.types.is_float_dtype(raw):
        return raw.map(lambda v: str(int(v)) if np.isfinite(v) and float(v).is_integer() else str(v))

    def one(v: Any) -> str:
        if isinstance(v, str):
            return v.strip()
        if _is_bool(v):
            return "true" if v else "false"
        if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return raw.map(one)


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError, OverflowError):
        return False


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def _to_float(v: Any) -> float:
    """One cell as float64: NaN when it is not a number, ±inf when it overflows float64 (a
    400-digit integer). Never raises."""
    if v is None or _is_bool(v):
        return np.nan
    if isinstance(v, str):
        v = v.strip()
        if not _NUMBER.match(v) and v.lower() not in ("inf", "+inf", "-inf", "infinity", "-infinity", "nan"):
            return np.nan
        return float(v)  # a decimal text beyond float64 is inf, not an error
    if isinstance(v, (int, np.integer)):
        try:
            return float(v)
        except OverflowError:
            return np.inf if v > 0 else -np.inf
    if isinstance(v, (float, np.floating)):
        return float(v)
    return np.nan


def to_numbers(values: pd.Series) -> pd.Series:
    """Cells as float64 (NaN where not a number; see :func:`_to_float`) in one vectorised pass
    when pandas can, cell by cell when a value overflows its parser. Booleans are not numbers."""
    if pd.api.types.is_bool_dtype(values):
        return pd.Series(np.nan, index=values.index)
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float)
    cleaned = values.map(lambda v: np.nan if _is_bool(v) else v.strip() if isinstance(v, str) else v)
    try:
        return pd.to_numeric(cleaned, errors="coerce").astype(float)
    except (OverflowError, TypeError, ValueError):
        return pd.Series([_to_float(v) for v in values.tolist()], index=values.index, dtype=float)


_INTEGER_TEXT = re.compile(r"^[+-]?\d{19,}$")  # digits enough to leave int64


def _beyond_int64(value: Any) -> bool:
    """An integer (a Python int, or integer text) outside int64, checked exactly: float64 cannot
    tell -2**63-1 from -2**63."""
    if isinstance(value, str):
        value = value.strip()
        if not _INTEGER_TEXT.match(value):
            return False
        value = int(value)
    elif not isinstance(value, int) or isinstance(value, bool):
        return False
    return not -(2**63) <= value < 2**63


def _exact_int64_overflow(raw: pd.Series, dtype: str) -> pd.Series:
    """For an int column of text or Python ints: the cells beyond int64, exactly."""
    if dtype != "int" or not (raw.dtype == object or pd.api.types.is_string_dtype(raw)):
        return pd.Series(False, index=raw.index)
    return raw.map(_beyond_int64).astype(bool)


def machine_bad(numbers: np.ndarray, dtype: str) -> np.ndarray:
    """Finite values the data path cannot hold for a column of ``dtype`` (:data:`MACHINE_BOUNDS`)."""
    with np.errstate(invalid="ignore"):
        if dtype == "int":
            return np.isfinite(numbers) & ((numbers < INT64_LOW) | (numbers >= INT64_HIGH))
        if dtype == "float":
            return np.isfinite(numbers) & (np.abs(numbers) > FLOAT32_MAX)
    return np.zeros(len(numbers), dtype=bool)


def _not_a_number(spec_dtype: str) -> Callable[[Any], str]:
    def reason(value: Any) -> str:
        text = value.strip() if isinstance(value, str) else ""
        if _DECIMAL_COMMA.match(text):
            return f"not a number ({spec_dtype} column): a decimal comma? write {text.replace(',', '.')}"
        return f"not a number ({spec_dtype} column)"

    return reason


def allowed_values(allowed: Sequence[Any], dtype: str) -> list[Any]:
    """The schema's ``allowed`` list as typed values (what :func:`coerce` produces)."""
    if dtype in ("int", "float"):
        return [float(a) for a in allowed if _is_number(a)]
    if dtype == "bool":
        return sorted({a if _is_bool(a) else str(a).strip().lower() in _TRUE for a in allowed})
    return [str(a) for a in allowed]


@dataclass
class Coerced:
    typed: pd.Series  # typed values, NaN/None where null or unusable
    bad: list[tuple[pd.Series, str | Callable[[Any], str]]]  # (mask, reason or reason of a value)


def coerce(raw: pd.Series, spec: ColumnSpec, null: pd.Series, *, strict: bool = False) -> Coerced:
    """Type one column per its spec (the typing rule in the module doc); flag values that cannot
    be typed or held (:data:`MACHINE_BOUNDS`). Domains are checked later.

    ``strict`` (JSON requests): a number or boolean must arrive with its JSON type; ``"1"`` for
    a number is a client bug there, while a CSV cell is always text.
    """
    present = ~null
    if spec.dtype in ("int", "float"):
        # A boolean is never a number: a bool column, a Python bool (JSON), or, in a CSV's
        # text, TRUE/false (a spreadsheet's booleans).
        if pd.api.types.is_bool_dtype(raw):
            is_bool = present.copy()
        elif raw.dtype == object or pd.api.types.is_string_dtype(raw):
            is_bool = present & raw.map(
                lambda v: (
                    _is_bool(v) or (not strict and isinstance(v, str) and v.strip().lower() in _BOOL_WORDS)
                )
            ).astype(bool)
        else:
            is_bool = pd.Series(False, index=raw.index)
        wrong_type = pd.Series(False, index=raw.index)
        if strict and (raw.dtype == object or pd.api.types.is_string_dtype(raw)):
            wrong_type = present & ~is_bool & raw.map(lambda v: not isinstance(v, (int, float, np.number)))
        numbers = to_numbers(raw.where(present & ~wrong_type & ~is_bool))
        values = numbers.to_numpy(dtype=np.float64)
        finite = np.isfinite(values)
        not_number = present & ~wrong_type & ~is_bool & numbers.isna()
        # An integer beyond int64 is named so even when it also overflows float64 (400 digits).
        int_over = present & ~wrong_type & _exact_int64_overflow(raw, spec.dtype)
        bad: list[tuple[pd.Series, str | Callable[[Any], str]]] = [
            (is_bool, f"a boolean, not a number ({spec.dtype} column)"),
            (wrong_type, f"must be a JSON number ({spec.dtype} column), not text"),
            (not_number, _not_a_number(spec.dtype)),
            (present & numbers.notna() & ~finite & ~int_over, NOT_FINITE),
            (
                pd.Series(machine_bad(values, spec.dtype), index=raw.index) | int_over,
                MACHINE_BOUNDS[spec.dtype],
            ),
        ]
        if spec.dtype == "int":
            with np.errstate(invalid="ignore"):
                fraction = finite & (np.where(finite, values, 0.0) % 1 != 0)
            bad.append((pd.Series(fraction, index=raw.index), "not an integer"))
        any_bad = bad[0][0].copy()
        for mask, _ in bad[1:]:
            any_bad |= mask
        return Coerced(numbers.where(present & ~any_bad), bad)
    if spec.dtype == "bool":
        values = raw.where(present)
        is_bool = values.map(_is_bool).astype(bool)
        is_text = values.map(lambda v: isinstance(v, str)).astype(bool)
        wrong_type = (present & is_text) if strict else pd.Series(False, index=raw.index)
        text = values.where(~wrong_type).map(
            lambda v: str(v).strip().lower() if v is not None and not _is_bool(v) and v == v else v
        )
        truthy = (is_bool & values.map(lambda v: v is True or v is np.True_)) | text.isin(_TRUE)
        falsy = (is_bool & values.map(lambda v: v is False or v is np.False_)) | text.isin(_FALSE)
        bad_value = present & ~wrong_type & ~truthy & ~falsy
        typed = pd.Series(None, index=raw.index, dtype=object)
        typed[truthy.to_numpy(dtype=bool)] = True
        typed[falsy.to_numpy(dtype=bool)] = False
        return Coerced(
            typed,
            [
                (wrong_type, "must be JSON true or false (bool column), not text"),
                (bad_value, "not a boolean (true/false or 1/0)"),
            ],
        )
    # str: any text; a number or a boolean is taken as its text.
    wrong_type = pd.Series(False, index=raw.index)
    if strict and (raw.dtype == object):
        wrong_type = present & raw.map(lambda v: not isinstance(v, (str, int, float, bool, np.generic)))
    text = _as_text(raw.where(present & ~wrong_type).dropna())
    typed = pd.Series(np.nan, index=raw.index, dtype=object)
    typed.loc[text.index] = text
    typed = typed.astype("str") if text.size else typed
    return Coerced(typed.where(~null & ~wrong_type), [(wrong_type, "must be text (str column)")])
