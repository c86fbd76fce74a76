"""The input contract: what a valid row is, derived from the data set's schema, for every door.

One object, :class:`Contract`, built from ``config/schema/<dataset>.yaml`` and
``validation.max_row_null_share``, is what training validation (``validate_frame``), serving
(``/predict``, ``/predict/csv``, the page), ``netsec predict`` and drift over the prediction log
apply. The rules:

- **Columns.** Every feature column must be there. The target, the ``id_columns`` and the
  ``ignore`` columns are accepted and echoed back unchanged (:attr:`Contract.passthrough`). Any
  other column is refused, naming it, saying how to allow it, and hinting when it looks like a
  written-out row index.
- **Typing** (one rule per dtype for every door; the README's contract section has the table).
  ``int``/``float``: a number (CSV text such as ``" 1 "``, ``1.0``, ``-1e3``; a JSON number);
  ``int`` also whole. A boolean is never a number (CSV ``TRUE``, JSON ``false``). ``bool``:
  ``true``/``false`` (any case in CSV) or the numbers 1/0. ``str``: any text (a JSON number or
  boolean is taken as its text). The machine's types bound every number on top of the schema's
  ``min``/``max`` (:data:`MACHINE_BOUNDS`): an ``int`` fits int64 (storage, MongoDB's 8-byte
  integers), a ``float`` fits float32 (tree models, XGBoost and the ONNX fast path compute in
  float32), and nothing is infinite. A cell that cannot be typed is a problem of kind
  ``uncoercible``. Under ``strict_types`` (JSON) a number or boolean must also arrive with its
  JSON type: ``"1"`` for a number is refused, as text cannot tell a client's bug from a value.
- **Nulls.** ``None``, NaN, an empty or blank cell and the usual null words (``NA``, ``null``...)
  are null. A nullable column's null is kept (NaN) for the model's own imputer and counted per
  row (:attr:`RowCheck.null_cells`). A null in a non-nullable column, a row with more than
  ``max_row_null_share`` of its features null, and a row whose features are all blank are
  problems.
- **Domains.** A value outside ``allowed`` (for text columns: a category the schema does not
  list), below ``min`` or above ``max`` is a problem of kind ``domain``.

The row checks after typing (domains, nulls, the row null share) are a pandera
``DataFrameSchema`` generated from the schema (:attr:`Contract.pandera_schema`); typing text
cells is ours, because its messages ("not an integer", "not a boolean") are what a user needs.

Problems never raise inside the contract: :meth:`Contract.check_rows` returns them, one line per
(row, column) with the value, the reason and what is allowed, and each door decides: training
quarantines the rows, JSON answers 422, CSV and the CLI refuse by default or flag the rows.

Outputs are the same at every door (:data:`OUTPUT_COLUMNS`): the echoed input columns, then
``predicted_label``, ``is_threat``, ``threat_probability``, ``imputed_cells``, ``status``,
``reason``, ``model_version``, ``prediction_id`` (the id ``POST /feedback`` takes; empty where the
prediction is not logged: ``netsec predict``, invalid rows). CSV outputs go through
:func:`netsec_tasks.sinks.csv_chunks`, which neutralises cells a spreadsheet would run as a
formula.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from netsec_tasks.dataset_schema import RESERVED_COLUMNS, ColumnSpec, DatasetSchema
from netsec_tasks.errors import DataError

# The CSV sink's encoder lives with the other sinks' (netsec_tasks.sinks); kept importable here.
from netsec_tasks.sinks import csv_chunks, neutralise, write_csv  # noqa: F401
from netsec_tasks.table_io import visible

Kind = Literal["uncoercible", "domain", "non_nullable", "row_null"]

ROW_SCOPE = "*"  # the "column" of a problem that concerns the whole row
PROBLEM_COLUMNS = ["row", "column", "value", "reason", "allowed", "kind"]
# What every scoring door adds after the echoed input columns, in this order.
OUTPUT_COLUMNS = RESERVED_COLUMNS
NULL_WORDS = frozenset({"", "na", "n/a", "nan", "null", "none", "<na>"})
_TRUE = {"true", "1", "1.0"}
_FALSE = {"false", "0", "0.0"}
_BOOL_WORDS = {"true", "false"}
_MAX_VALUE_CHARS = 80
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
_NOT_FINITE = "not a finite number (infinite, or beyond float64's ±1.8e308)"
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
_MAX_LISTED = 10
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ContractError(DataError):
    """Rows or columns that break the contract. ``problems``: one dict per (row, column) with
    ``row`` (0-based position), ``column``, ``value``, ``reason``, ``allowed``; ``where`` renders
    a row for the door ("records[3]", "line 5")."""

    def __init__(
        self,
        message: str,
        *,
        problems: list[dict[str, Any]] | None = None,
        columns: list[str] | None = None,
        source: str | None = None,
    ):
        self.problems = list(problems or [])
        first = self.problems[0] if self.problems else {}
        cols = columns if columns is not None else ([first["column"]] if first.get("column") else [])
        rows = sorted({p["row"] for p in self.problems if p.get("row") is not None})
        super().__init__(message, source=source, columns=cols, rows=rows)
        self.message = message

    @property
    def first(self) -> dict[str, Any]:
        return self.problems[0] if self.problems else {}


# --------------------------------------------------------------------------- helpers


def listed(items: Iterable[Any], limit: int = _MAX_LISTED) -> str:
    items = [str(i) for i in items]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def null_mask(raw: pd.Series) -> pd.Series:
    """Null, NaN, or a text cell that is blank or a null word (``NA``, ``null``, ``NaN``...)."""
    null = raw.isna()
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        text = raw[~null]
        words = text.map(lambda v: isinstance(v, str) and v.strip().lower() in NULL_WORDS)
        null.loc[words.index[words.to_numpy(dtype=bool)]] = True
    return null


def show(value: Any) -> str:
    """A value for a message, as the user wrote it: a CSV column with blanks is read as floats,
    so 5 arrives as 5.0 and is shown as 5. A long value is cut, saying how long it was."""
    if (
        isinstance(value, (float, np.floating))
        and np.isfinite(value)
        and float(value).is_integer()
        and abs(float(value)) < 2.0**63
    ):
        value = int(value)
    try:
        text = str(value)
    except ValueError:  # an int too long for str() (Python's 4300-digit limit)
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    if len(text) > _MAX_VALUE_CHARS:
        return f"{text[:_MAX_VALUE_CHARS]}... ({len(text)} characters)"
    return text


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


def allowed_text(spec: ColumnSpec) -> str:
    """What a column accepts, in words: for error messages and the API's 422 body."""
    parts = []
    if spec.allowed is not None:
        parts.append(f"one of {spec.allowed}")
    else:
        parts.append(
            {"int": "an integer", "float": "a number", "str": "text", "bool": "true/false"}[spec.dtype]
        )
    if spec.dtype in ("int", "float"):
        if spec.min is not None:
            parts.append(f">= {spec.min:g}")
        if spec.max is not None:
            parts.append(f"<= {spec.max:g}")
    if spec.nullable:
        parts.append("or null")
    return " ".join(parts)


def _uncoercible(
    rows: np.ndarray, column: str, values: Any, reason: str | Callable[[Any], str], spec: ColumnSpec
) -> pd.DataFrame:
    """Problem rows (PROBLEM_COLUMNS) for cells of ``column`` that cannot be read as its type;
    ``reason`` is text, or a function of the value."""
    values = list(values)
    return pd.DataFrame(
        {
            "row": rows,
            "column": column,
            "value": [show(v) for v in values],
            "reason": [reason(v) for v in values] if callable(reason) else reason,
            "allowed": allowed_text(spec),
            "kind": "uncoercible",
        }
    )


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
            (present & numbers.notna() & ~finite & ~int_over, _NOT_FINITE),
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


# --------------------------------------------------------------------------- row checks


class RowValidity:
    """Counts from a ``valid`` mask (bool per row), for every holder of one."""

    valid: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.valid)

    @property
    def n_invalid(self) -> int:
        return int((~self.valid).sum())


@dataclass
class RowCheck(RowValidity):
    """The outcome of checking rows: typed features, problems, nulls per row.

    Rows are positions (0 .. n-1) in the checked frame. ``typed`` holds every row (problem
    cells NaN); ``valid`` says which rows may be scored; ``null_cells`` is the number of null
    features per row (what the model's imputer fills for a valid row).
    """

    typed: pd.DataFrame
    problems: pd.DataFrame  # PROBLEM_COLUMNS, sorted by row then column
    null_cells: np.ndarray  # int per row
    valid: np.ndarray  # bool per row
    nulls: pd.DataFrame  # bool per (row, feature): the cell was null

    @property
    def imputed_rows(self) -> int:
        return int(((self.null_cells > 0) & self.valid).sum())

    def reasons(self) -> dict[int, str]:
        """Row position -> every problem of that row in one line (for ``status=invalid`` rows)."""
        out: dict[int, list[str]] = {}
        for p in self.problems.itertuples(index=False):
            out.setdefault(int(p.row), []).append(describe(p.column, p.value, p.reason))
        return {r: "; ".join(v) for r, v in out.items()}

    def refusal(
        self, where: Callable[[int], str], *, source: str | None = None, limit: int = 20
    ) -> ContractError:
        """The error a door raises when it refuses these rows: the first problems, each naming
        its row (as the door numbers them), column, value and what is allowed."""
        problems = [
            {
                "row": int(p.row),
                "where": where(int(p.row)),
                "column": p.column,
                "value": p.value,
                "reason": p.reason,
                "allowed": p.allowed,
            }
            for p in self.problems.head(limit).itertuples(index=False)
        ]
        n_rows, n = self.n_invalid, len(self.problems)
        head = "; ".join(
            f"{p['where']}: {describe(p['column'], p['value'], p['reason'])}"
            + (f" (allowed: {p['allowed']})" if p["allowed"] else "")
            for p in problems[:3]
        )
        more = f" (+{n - 3} more problems)" if n > 3 else ""
        msg = (
            f"{n_rows} row{'s' if n_rows != 1 else ''} break{'s' if n_rows == 1 else ''} "
            f"the data set's contract: {head}{more}"
        )
        return ContractError(msg, problems=problems, source=source)


def _normalised(name: str) -> str:
    import unicodedata

    from netsec_tasks.table_io import INVISIBLE_CATEGORIES

    folded = unicodedata.normalize("NFKC", str(name))
    return "".join(
        c for c in folded if unicodedata.category(c) not in INVISIBLE_CATEGORIES and not c.isspace()
    ).lower()


def near_match(name: str, candidates: Iterable[str], *, reverse: bool = False) -> str | None:
    """How ``name`` nearly matches one of ``candidates``, in words, or None. ``reverse``: the
    candidates are what the file has (``found '...'``), else what the schema has."""
    import difflib

    candidates = [str(c) for c in candidates if str(c) != str(name)]
    key = _normalised(name)
    for c in candidates:
        if _normalised(c) == key:
            found, wanted = (c, name) if reverse else (name, c)
            invisible = [ch for ch in found if visible(ch) != ch]
            if invisible:
                what = ", ".join(f"U+{ord(ch):04X}" for ch in dict.fromkeys(invisible))
                return (
                    f"found '{visible(found)}': it holds the invisible character{'s' if len(invisible) > 1 else ''} "
                    f"{what}; retype the name as '{wanted}'"
                )
            if found.lower() == wanted.lower():
                return f"found '{found}': names are case-sensitive; write '{wanted}'"
            return f"found '{visible(found)}': write '{wanted}' exactly"
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.85)
    if close:
        return f"found '{visible(close[0])}'" if reverse else f"did you mean '{close[0]}'?"
    return None


def describe(column: str, value: Any, reason: str) -> str:
    if column == ROW_SCOPE:
        return f"{reason} ({value})"
    return f"column '{column}' is {value}: {reason}"


class Contract:
    """The input contract of one data set (see the module docstring).

    ``schema``: the data set's schema; ``max_row_null_share``: ``validation.max_row_null_share``.
    """

    def __init__(self, schema: DatasetSchema, *, max_row_null_share: float = 0.5):
        self.schema = schema
        self.max_row_null_share = float(max_row_null_share)
        self._pandera = None

    @classmethod
    def from_config(cls, cfg, schema: DatasetSchema | None = None) -> Contract:
        from netsec_tasks.dataset_schema import load_schema

        return cls(
            schema or load_schema(cfg.schema_path), max_row_null_share=cfg.validation.max_row_null_share
        )

    # -- columns --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.schema.name

    @property
    def version(self) -> str | None:
        return self.schema.version

    @property
    def features(self) -> list[str]:
        return self.schema.features

    @property
    def target(self) -> str:
        return self.schema.target.column

    @property
    def passthrough(self) -> list[str]:
        return self.schema.passthrough

    @property
    def max_null_cells(self) -> float:
        """A row may hold at most this many null features."""
        return self.max_row_null_share * len(self.features)

    def unknown_columns(self, columns: Iterable[Any]) -> list[str]:
        known = set(self.features) | set(self.passthrough)
        return [str(c) for c in columns if str(c) not in known]

    def unknown_columns_message(self, unknown: Sequence[str], frame: pd.DataFrame | None = None) -> str:
        """Names the columns, says how to allow them (a name the outputs use needs a ``rename``
        first: listing it alone would be refused), and hints at a written-out index or a near
        match of a feature's name."""
        outputs = [c for c in unknown if c in OUTPUT_COLUMNS]
        near = {c: m for c in unknown if (m := near_match(c, self.features))}
        msg = (
            f"unknown column{'s' if len(unknown) != 1 else ''} {listed(repr(visible(c)) for c in unknown)}: "
            f"not a feature of the '{self.name}' schema. To send a column through and get it "
            f"back unchanged, list it under id_columns (or ignore) in the schema "
            f"(config/schema/{self.name}.yaml); otherwise drop it"
        )
        if outputs:
            msg += (
                f". {listed(repr(c) for c in outputs)} is also the name of an output column: "
                f"map it to a name of your own with the schema's rename (rename: "
                f"{{{outputs[0]}: source_{outputs[0]}}}) and list that name under id_columns"
            )
        if near:
            msg += ". " + "; ".join(f"'{visible(c)}' {why}" for c, why in near.items())
        empty = [c for c in unknown if re.fullmatch(r"Unnamed: [1-9]\d*", str(c))]
        if empty:
            msg += ". " + "; ".join(
                f"'{c}' is field {int(str(c).split()[1]) + 1} of the header, which is empty: name the "
                "column or remove it"
                for c in empty
            )
        index_like = [
            c
            for c in unknown
            if c not in empty and looks_like_index(c, None if frame is None or c not in frame else frame[c])
        ]
        if index_like:
            msg += (
                f". {listed(repr(c) for c in index_like)} looks like a row index written out "
                "with the data (pandas DataFrame.to_csv without index=False): write the file "
                "with index=False or drop that column"
            )
        return msg

    def missing_columns_message(self, missing: Sequence[str], present: Iterable[Any]) -> str:
        """Names the missing columns and, for each, a present column that nearly matches it
        (another case, an invisible character, a typo) and what differs."""
        present = [str(c) for c in present]
        hints = []
        for m in missing:
            near = near_match(m, present, reverse=True)
            hints.append(f"{m} ({near})" if near else m)
        return f"missing columns required by the schema: {listed(hints)}"

    def check_columns(self, frame: pd.DataFrame, *, source: str | None = None) -> None:
        """Raise :class:`ContractError` for a repeated, missing or unknown column."""
        got = [str(c) for c in frame.columns]
        for col in got:
            # pandas renames a repeated header "port" to "port.1": report the repetition.
            base, dot, suffix = col.rpartition(".")
            if dot and suffix.isdigit() and base in got and col not in self.passthrough:
                raise ContractError(
                    f"column '{base}' appears more than once in the header", columns=[base], source=source
                )
        missing = [c for c in self.features if c not in got]
        if missing:
            raise ContractError(self.missing_columns_message(missing, got), columns=missing, source=source)
        unknown = self.unknown_columns(got)
        if unknown:
            raise ContractError(self.unknown_columns_message(unknown, frame), columns=unknown, source=source)

    # -- rows -----------------------------------------------------------------------------

    @property
    def pandera_schema(self):
        """The row checks after typing, as a pandera ``DataFrameSchema`` generated from the
        schema: per feature ``isin``/``ge``/``le`` and nullability, and the row null share on
        the helper column ``__null_cells__``."""
        if self._pandera is None:
            self._pandera = self._build_pandera()
        return self._pandera

    def _build_pandera(self):
        import pandera.pandas as pa

        columns = {}
        for name, spec in self.schema.columns.items():
            checks = []
            if spec.allowed is not None:
                checks.append(
                    pa.Check.isin(
                        allowed_values(spec.allowed, spec.dtype),
                        error=f"outside allowed values {spec.allowed}",
                    )
                )
            if spec.dtype in ("int", "float"):
                if spec.min is not None:
                    checks.append(pa.Check.ge(spec.min, error=f"below the minimum {spec.min:g}"))
                if spec.max is not None:
                    checks.append(pa.Check.le(spec.max, error=f"above the maximum {spec.max:g}"))
            columns[name] = pa.Column(nullable=spec.nullable, checks=checks, required=False)
        n = len(self.features)
        limit = self.max_null_cells
        columns["__null_cells__"] = pa.Column(
            int,
            checks=[
                # An all-blank row gets its own reason (below), not this one too.
                pa.Check(
                    lambda s: (s <= limit) | (s >= n),
                    error=f"more than {self.max_row_null_share:.0%} of the features are null "
                    f"(validation.max_row_null_share)",
                ),
                pa.Check.lt(n, error="every feature is blank"),
            ],
        )
        return pa.DataFrameSchema(columns, strict=False, coerce=False)

    def check_rows(self, frame: pd.DataFrame, *, strict_types: bool = False) -> RowCheck:
        """Type and check the feature columns of ``frame`` (other columns are ignored).

        ``frame``: the rows as read (text or typed cells); every feature column must be there
        (:meth:`check_columns`). Rows are reported by position. Never raises on bad values.
        """
        import pandera.errors

        frame = frame.reset_index(drop=True)
        n = len(frame)
        features = [c for c in self.features if c in frame.columns]
        typed: dict[str, pd.Series] = {}
        parts: list[pd.DataFrame] = []
        nulls: dict[str, pd.Series] = {}
        block = self._numeric_block(frame)
        if block:
            # Numeric columns that arrive as numbers (CSV numbers, JSON numbers) are typed in
            # one NumPy pass: per-column pandas calls cost ~1 ms each on a one-row request.
            arr = frame[block].to_numpy(dtype=np.float64)
            isnull = np.isnan(arr)
            finite = np.isfinite(arr)
            is_int = np.array([self.schema.columns[c].dtype == "int" for c in block])
            not_int = finite & is_int & (np.where(finite, arr, 0.0) % 1 != 0)
            for j, col in enumerate(block):
                spec = self.schema.columns[col]
                held = machine_bad(arr[:, j], spec.dtype)
                nulls[col] = pd.Series(isnull[:, j])
                typed[col] = pd.Series(np.where(finite[:, j] & ~not_int[:, j] & ~held, arr[:, j], np.nan))
                for mask, reason in (
                    (~isnull[:, j] & ~finite[:, j], _NOT_FINITE),
                    (held, MACHINE_BOUNDS[spec.dtype]),
                    (not_int[:, j] & ~held, "not an integer"),
                ):
                    if mask.any():
                        rows = np.flatnonzero(mask)
                        raw_values = frame[col].iloc[rows]
                        parts.append(_uncoercible(rows, col, raw_values, reason, spec))
        for col in features:
            if col in typed:
                continue
            spec = self.schema.columns[col]
            raw = frame[col]
            nulls[col] = null_mask(raw)
            co = coerce(raw, spec, nulls[col], strict=strict_types)
            typed[col] = co.typed
            for bad_mask, why in co.bad:
                hit = pd.Series(bad_mask).fillna(False).to_numpy(dtype=bool)
                if hit.any():
                    rows = np.flatnonzero(hit)
                    parts.append(_uncoercible(rows, col, raw.iloc[rows], why, spec))
        null_frame = pd.DataFrame(nulls, index=pd.RangeIndex(n), columns=features, dtype=bool)
        null_cells = null_frame.sum(axis=1).to_numpy(dtype=np.int64)
        checked = pd.DataFrame(typed, index=pd.RangeIndex(n), columns=features)
        checked["__null_cells__"] = null_cells
        uncoercible = {(int(r), c) for p in parts for r, c in zip(p["row"], p["column"])}
        try:
            self.pandera_schema.validate(checked, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            parts.append(self._pandera_problems(exc.failure_cases, frame, nulls, null_cells, uncoercible))
        problems = (
            pd.concat(parts, ignore_index=True)
            if parts
            else pd.DataFrame({c: pd.Series(dtype=object) for c in PROBLEM_COLUMNS})
        )
        problems = problems.sort_values(["row", "column"], kind="stable", ignore_index=True)
        valid = np.ones(n, dtype=bool)
        if len(problems):
            valid[problems["row"].to_numpy(dtype=np.int64)] = False
        return RowCheck(
            typed=checked.drop(columns="__null_cells__"),
            problems=problems,
            null_cells=null_cells,
            valid=valid,
            nulls=null_frame,
        )

    def _numeric_block(self, frame: pd.DataFrame) -> list[str]:
        """Numeric features whose column already holds numbers (not bools, not text)."""
        out = []
        for col in self.features:
            if col not in frame.columns or self.schema.columns[col].dtype not in ("int", "float"):
                continue
            dtype = frame[col].dtype
            if dtype.kind in "if" or (dtype.kind == "u" and dtype.itemsize < 8):
                out.append(col)
        return out

    def _pandera_problems(
        self,
        cases: pd.DataFrame,
        frame: pd.DataFrame,
        nulls: dict[str, pd.Series],
        null_cells: np.ndarray,
        uncoercible: set[tuple[int, str]],
    ) -> pd.DataFrame:
        """pandera's failure cases -> our problem lines (value as sent, reason, allowed)."""
        cases = cases[cases["index"].notna()]
        out = []
        n = len(self.features)
        for case in cases.itertuples(index=False):
            row, col, check = int(case.index), str(case.column), str(case.check)
            if col == "__null_cells__":
                k = int(null_cells[row])
                out.append(
                    (
                        row,
                        ROW_SCOPE,
                        f"{k}/{n} null",
                        check,
                        f"at most {int(self.max_null_cells)} null features"
                        if k < n
                        else "at least one feature",
                        "row_null",
                    )
                )
                continue
            if (row, col) in uncoercible:  # already reported as "not a number" etc.
                continue
            spec = self.schema.columns[col]
            if check == "not_nullable":
                out.append(
                    (row, col, "null", "null in a non-nullable column", allowed_text(spec), "non_nullable")
                )
            else:
                out.append((row, col, show(frame[col].iloc[row]), check, allowed_text(spec), "domain"))
        return pd.DataFrame(out, columns=PROBLEM_COLUMNS)

    # -- model input ----------------------------------------------------------------------

    def model_input(self, check: RowCheck, rows: np.ndarray | None = None) -> pd.DataFrame:
        """The typed feature frame of the valid rows (or ``rows``), dtypes the Pipeline expects:
        numeric columns float64 (NaN where null, for the imputer), text columns str."""
        x = check.typed if rows is None else check.typed.iloc[rows]
        out = {}
        for col in self.features:
            spec = self.schema.columns[col]
            s = x[col]
            out[col] = (
                s.astype("float64")
                if spec.dtype in ("int", "float")
                else s.astype(object).where(s.notna(), np.nan)
            )
        return pd.DataFrame(out, index=x.index)

    # -- labels (the doors that take a target: training validation, evaluate) ---------------

    def check_labels(self, raw: pd.Series) -> LabelCheck:
        """Type the target column and map it to the threat class (see :class:`LabelCheck`).

        ``raw``: the target column as read. Never raises; :meth:`LabelCheck.error` is the error a
        door raises when it refuses unlisted or untypable labels.
        """
        spec = self.schema.target
        raw = raw.reset_index(drop=True)
        # A label column has a handful of distinct values: type and map each once, then spread
        # the results over the rows by their codes (a million rows cost a factorize, not a
        # million Python calls).
        codes, uniques = pd.factorize(raw, use_na_sentinel=True)
        distinct = pd.Series(uniques, dtype=object)
        u_null = null_mask(distinct).to_numpy(dtype=bool)
        co = coerce(distinct, ColumnSpec(dtype=spec.dtype), pd.Series(u_null))
        u_bad = np.zeros(len(distinct), dtype=bool)
        for mask, _ in co.bad:
            u_bad |= mask.fillna(False).to_numpy(dtype=bool)
        u_ok = ~u_null & ~u_bad
        u_typed = co.typed
        unlisted_values = self.schema.unlisted_labels(u_typed[u_ok])
        u_unlisted = np.zeros(len(distinct), dtype=bool)
        if unlisted_values:
            from netsec_tasks.dataset_schema import label_keys

            listed_keys = set(label_keys(pd.Series(self.schema.target.vocabulary, dtype=object)))
            u_unlisted = u_ok & ~label_keys(u_typed).isin(listed_keys).to_numpy(dtype=bool)
        u_threat = np.zeros(len(distinct), dtype=bool)
        u_good = u_ok & ~u_unlisted
        if u_good.any():
            u_threat[u_good] = np.asarray(self.schema.is_threat(u_typed[u_good]), dtype=bool)

        def spread(values: np.ndarray, fill: bool) -> np.ndarray:
            return np.append(values, fill)[codes]  # code -1 (a null) takes the last element

        null, bad = spread(u_null, True), spread(u_bad, False)
        unlisted, threat = spread(u_unlisted, False), spread(u_threat, False)
        typed = pd.Series(np.append(u_typed.to_numpy(dtype=object), np.nan)[codes], dtype=object)
        if spec.dtype in ("int", "float"):
            typed = typed.astype(float)
        counts: dict[str, dict[str, Any]] = {}
        n_per_code = np.bincount(codes[codes >= 0], minlength=len(distinct))
        for i in np.argsort(-n_per_code, kind="stable"):
            if u_good[i] and n_per_code[i]:
                entry = counts.setdefault(show(u_typed.iloc[i]), {"rows": 0, "threat": bool(u_threat[i])})
                entry["rows"] += int(n_per_code[i])
        known = {show(v) for v in self.schema.target.known_labels}
        new = [k for k in counts if k not in known] if self.schema.target.everything_but else []
        return LabelCheck(
            column=spec.column,
            raw=raw,
            typed=typed,
            null=null,
            uncoercible=bad,
            unlisted=unlisted,
            unlisted_values=unlisted_values,
            is_threat=threat,
            counts=counts,
            new_threat_labels=new,
            vocabulary=self.schema.target.vocabulary,
        )

    @property
    def numeric_only(self) -> bool:
        return all(s.dtype in ("int", "float") for s in self.schema.columns.values())

    # -- request schema (OpenAPI) ---------------------------------------------------------

    def record_json_schema(self) -> dict[str, Any]:
        """JSON Schema of one record: the features with their types and domains, plus the
        passthrough columns (any JSON value, echoed back)."""
        props: dict[str, Any] = {}
        for col, spec in self.schema.columns.items():
            kind = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}[spec.dtype]
            p: dict[str, Any] = {"type": [kind, "null"] if spec.nullable else kind}
            if spec.allowed is not None:
                p["enum"] = list(spec.allowed) + ([None] if spec.nullable else [])
            if spec.dtype in ("int", "float"):
                if spec.min is not None:
                    p["minimum"] = spec.min
                if spec.max is not None:
                    p["maximum"] = spec.max
            if spec.description:
                p["description"] = spec.description
            props[col] = p
        for col in self.passthrough:
            props[col] = {"description": "passed through and echoed back unchanged"}
        return {
            "type": "object",
            "properties": props,
            "required": list(self.features),
            "additionalProperties": False,
        }


@dataclass
class LabelCheck:
    """The target column of a labelled file, typed and mapped to the threat class.

    Rows are positions. ``null``: no label; ``uncoercible``: a label that is not of the target's
    dtype; ``unlisted``: a label the schema does not list (only in the ``positive`` form; in the
    "everything but" form every other label is a threat). ``is_threat`` holds for the usable
    rows (:attr:`usable`). ``counts``: rows per label (as text), with whether it is a threat;
    ``new_threat_labels``: labels of the "everything but" form the schema does not name.
    """

    column: str
    raw: pd.Series
    typed: pd.Series
    null: np.ndarray
    uncoercible: np.ndarray
    unlisted: np.ndarray
    unlisted_values: list[Any]
    is_threat: np.ndarray
    counts: dict[str, dict[str, Any]]
    new_threat_labels: list[str]
    vocabulary: list[Any] | None

    @property
    def usable(self) -> np.ndarray:
        return ~(self.null | self.uncoercible | self.unlisted)

    @property
    def refused(self) -> np.ndarray:
        """Rows whose label is present but unusable (untypable or unlisted)."""
        return self.uncoercible | self.unlisted

    def refused_summary(self) -> str:
        """``'spam' x2, '0' x3``: the refused labels as written, with their row counts."""
        values = self.raw[self.refused].map(lambda v: str(v).strip()).value_counts()
        return listed(f"{v!r} x{c}" for v, c in values.items())

    def error(self, *, source: str | None = None, where: Callable[[int], str] | None = None) -> ContractError:
        """The error a door raises for refused labels: names every unlisted label (and the first
        rows) and says how to list them."""
        rows = np.flatnonzero(self.refused)
        where = where or (lambda r: f"row {r}")
        problems = [
            {
                "row": int(r),
                "where": where(int(r)),
                "column": self.column,
                "value": show(self.raw.iloc[r]),
                "reason": "label not in the schema",
                "allowed": str(self.vocabulary),
            }
            for r in rows[:20]
        ]
        msg = (
            f"target column {self.column} has {len(rows)} label{'s' if len(rows) != 1 else ''} "
            f"outside labels {self.vocabulary}: {self.refused_summary()}. {UNLISTED_HINT}"
        )
        return ContractError(msg, problems=problems, columns=[self.column], source=source)


UNLISTED_HINT = (
    "List each label in the schema's target.labels (and the threat ones in "
    "target.positive), or write target.negative: [<benign labels>] alone so that every "
    "other label is a threat"
)


def looks_like_index(name: Any, values: pd.Series | None = None) -> bool:
    """A column that pandas ``to_csv`` writes for the row index: no name, ``Unnamed: 0``,
    ``index``, or the values 0..n-1 / 1..n."""
    text = str(name).strip()
    if text == "" or text.lower().startswith("unnamed:") or text.lower() in ("index", "level_0"):
        return True
    if values is not None and len(values) > 1 and pd.api.types.is_integer_dtype(values):
        v = values.to_numpy()
        return bool((v == np.arange(len(v))).all() or (v == np.arange(1, len(v) + 1)).all())
    return False


# --------------------------------------------------------------------------- scored output


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
