"""The input contract: what a valid row is, derived from the data set's schema, for every door.

One object, :class:`Contract`, built from ``config/schema/<dataset>.yaml`` and
``validation.max_row_null_share``, is what training validation (``validate_frame``), serving
(``/predict``, ``/predict/csv``, the page), ``netsec predict`` and drift over the prediction log
apply. The rules:

- **Columns.** Every feature column must be there. The target, the ``id_columns`` and the
  ``ignore`` columns are accepted and echoed back unchanged (:attr:`Contract.passthrough`). Any
  other column is refused, naming it, saying how to allow it, and hinting when it looks like a
  written-out row index.
- **Typing.** Text cells are parsed per the column's dtype (``" 1 "`` is 1, ``"yes"`` is True);
  a cell that cannot be typed is a problem of kind ``uncoercible``. Under ``strict_types`` (JSON)
  a cell must already have the JSON type of its column: no ``"1"`` for a number, no ``true``.
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
prediction is not logged: ``netsec predict``, invalid rows). CSV outputs go through :func:`csv_chunks`, which neutralises
cells a spreadsheet would run as a formula.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from netsec_tasks.dataset_schema import RESERVED_COLUMNS, ColumnSpec, DatasetSchema
from netsec_tasks.errors import DataError

Kind = Literal["uncoercible", "domain", "non_nullable", "row_null"]

ROW_SCOPE = "*"  # the "column" of a problem that concerns the whole row
PROBLEM_COLUMNS = ["row", "column", "value", "reason", "allowed", "kind"]
# What every scoring door adds after the echoed input columns, in this order.
OUTPUT_COLUMNS = RESERVED_COLUMNS
NULL_WORDS = frozenset({"", "na", "n/a", "nan", "null", "none", "<na>"})
_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}
_MAX_VALUE_CHARS = 80
_MAX_LISTED = 10
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
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
    so 5 arrives as 5.0 and is shown as 5."""
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        value = int(value)
    return str(value)[:_MAX_VALUE_CHARS]


def _as_text(raw: pd.Series) -> pd.Series:
    """Values as strings; integral floats print as integers (a str column read as 1.0 means '1')."""
    if pd.api.types.is_float_dtype(raw):
        return raw.map(lambda v: str(int(v)) if float(v).is_integer() else str(v))
    return raw.map(lambda v: v.strip() if isinstance(v, str) else str(v))


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


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


def _uncoercible(rows: np.ndarray, column: str, values: Any, reason: str, spec: ColumnSpec) -> pd.DataFrame:
    """Problem rows (PROBLEM_COLUMNS) for cells of ``column`` that cannot be read as its type."""
    return pd.DataFrame(
        {
            "row": rows,
            "column": column,
            "value": [show(v) for v in values],
            "reason": reason,
            "allowed": allowed_text(spec),
            "kind": "uncoercible",
        }
    )


def allowed_values(allowed: Sequence[Any], dtype: str) -> list[Any]:
    """The schema's ``allowed`` list as typed values (what :func:`coerce` produces)."""
    if dtype in ("int", "float"):
        return [float(a) for a in allowed if _is_number(a)]
    if dtype == "bool":
        return sorted({str(a).strip().lower() in _TRUE for a in allowed})
    return [str(a) for a in allowed]


@dataclass
class Coerced:
    typed: pd.Series  # typed values, NaN/None where null or unusable
    bad: list[tuple[pd.Series, str]]  # (mask, reason): value present but not of the column type


def coerce(raw: pd.Series, spec: ColumnSpec, null: pd.Series, *, strict: bool = False) -> Coerced:
    """Type one column per its spec; flag values that cannot be typed (domains are checked later).

    ``strict``: cells must already be of the column's JSON type (number, bool or text); used for
    JSON requests, where ``"1"`` for a number or ``true`` for an integer is a client bug.
    """
    present = ~null
    if spec.dtype in ("int", "float"):
        wrong_type = pd.Series(False, index=raw.index)
        if pd.api.types.is_bool_dtype(raw):
            numbers = raw.astype(float)
            if strict:
                wrong_type = present.copy()
        elif pd.api.types.is_numeric_dtype(raw):
            numbers = raw.astype(float)
        else:
            if strict:
                wrong_type = present & raw.map(lambda v: type(v) is bool or not isinstance(v, (int, float)))
            numbers = pd.to_numeric(
                raw.where(present & ~wrong_type).map(lambda v: v.strip() if isinstance(v, str) else v),
                errors="coerce",
            ).astype(float)
        finite = np.isfinite(numbers)
        not_number = present & ~wrong_type & numbers.isna()
        bad = [
            (wrong_type, f"must be a number ({spec.dtype} column)"),
            (not_number, f"not a number ({spec.dtype} column)"),
            (present & numbers.notna() & ~finite, "not a finite number"),
        ]
        if spec.dtype == "int":
            bad.append((present & finite & (numbers % 1 != 0), "not an integer"))
        any_bad = bad[0][0].copy()
        for mask, _ in bad[1:]:
            any_bad |= mask
        return Coerced(numbers.where(present & ~any_bad), bad)
    if spec.dtype == "bool":
        if strict:
            wrong_type = present & raw.map(lambda v: type(v) is not bool and not isinstance(v, np.bool_))
            text = raw.where(present & ~wrong_type).map(
                lambda v: str(v).strip().lower() if v is not None and v == v else v
            )
        else:
            wrong_type = pd.Series(False, index=raw.index)
            text = raw.where(present).map(lambda v: str(v).strip().lower() if v is not None else v)
        truthy, falsy = text.isin(_TRUE), text.isin(_FALSE)
        bad_value = present & ~wrong_type & ~truthy & ~falsy
        typed = pd.Series(None, index=raw.index, dtype=object)
        typed[truthy.to_numpy()] = True
        typed[falsy.to_numpy()] = False
        return Coerced(
            typed,
            [
                (wrong_type, "must be true or false (bool column)"),
                (bad_value, "not a boolean (true/false, yes/no, 1/0)"),
            ],
        )
    # str
    wrong_type = pd.Series(False, index=raw.index)
    if strict and (raw.dtype == object):
        wrong_type = present & raw.map(lambda v: not isinstance(v, (str, int, float)) or type(v) is bool)
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
        """Names the columns, says how to allow them, and hints at a written-out index."""
        msg = (
            f"unknown column{'s' if len(unknown) != 1 else ''} {listed(repr(c) for c in unknown)}: "
            f"not a feature of the '{self.name}' schema. To send a column through and get it "
            f"back unchanged, list it under id_columns (or ignore) in the schema "
            f"(config/schema/{self.name}.yaml); otherwise drop it"
        )
        index_like = [
            c for c in unknown if looks_like_index(c, None if frame is None or c not in frame else frame[c])
        ]
        if index_like:
            msg += (
                f". {listed(repr(c) for c in index_like)} looks like a row index written out "
                "with the data (pandas DataFrame.to_csv without index=False): write the file "
                "with index=False or drop that column"
            )
        return msg

    def missing_columns_message(self, missing: Sequence[str], present: Iterable[Any]) -> str:
        lower = {str(c).lower(): str(c) for c in present}
        hints = [
            f"{m} (found '{lower[m.lower()]}': names are case-sensitive)" if m.lower() in lower else m
            for m in missing
        ]
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
            bad = (~isnull & ~finite, not_int)
            for j, col in enumerate(block):
                nulls[col] = pd.Series(isnull[:, j])
                typed[col] = pd.Series(np.where(finite[:, j] & ~not_int[:, j], arr[:, j], np.nan))
                for mask, reason in zip(
                    (bad[0][:, j], bad[1][:, j]), ("not a finite number", "not an integer")
                ):
                    if mask.any():
                        rows = np.flatnonzero(mask)
                        parts.append(_uncoercible(rows, col, arr[rows, j], reason, self.schema.columns[col]))
        for col in features:
            if col in typed:
                continue
            spec = self.schema.columns[col]
            raw = frame[col]
            nulls[col] = null_mask(raw)
            co = coerce(raw, spec, nulls[col], strict=strict_types)
            typed[col] = co.typed
            for mask, reason in co.bad:
                mask = mask.fillna(False).to_numpy(dtype=bool)
                if mask.any():
                    rows = np.flatnonzero(mask)
                    parts.append(_uncoercible(rows, col, raw.iloc[rows], reason, spec))
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
            if dtype.kind in "iuf":
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


# --------------------------------------------------------------------------- safe CSV


def neutralise(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, made inert with a leading ``'``
    (OWASP's advice for CSV injection). Numbers, and text that is a plain number such as
    ``-1``, stay as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.match(value):
        return "'" + value
    return value


def safe_for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells are :func:`neutralise`-d; numeric columns are untouched."""
    out = frame.copy(deep=False)
    for col in out.columns:
        s = out[col]
        if s.dtype == object or pd.api.types.is_string_dtype(s):
            # A list, not Series.map: map re-infers the dtype and would print -1 as -1.0.
            out[col] = pd.Series([neutralise(v) for v in s], index=s.index, dtype=object)
    out.columns = [neutralise(str(c)) for c in out.columns]
    return out


def csv_chunks(frame: pd.DataFrame, *, chunk_rows: int = 5000) -> Iterator[bytes]:
    """``frame`` as UTF-8 CSV (header first), neutralised, ``chunk_rows`` rows per chunk, so a
    large result is streamed instead of built as one string."""
    for start in range(0, max(len(frame), 1), chunk_rows):
        part = safe_for_csv(frame.iloc[start : start + chunk_rows])
        buf = io.StringIO()
        # CRLF (RFC 4180): the csv module then quotes any cell holding a CR or LF; with "\n"
        # alone a bare CR inside a cell would be written unquoted and split the row on reading.
        part.to_csv(buf, index=False, header=start == 0, lineterminator="\r\n")
        yield buf.getvalue().encode("utf-8")


def write_csv(frame: pd.DataFrame, fh) -> None:
    """Write ``frame`` as neutralised CSV to a binary or text file object."""
    for chunk in csv_chunks(frame):
        fh.write(chunk if "b" in getattr(fh, "mode", "b") else chunk.decode("utf-8"))
