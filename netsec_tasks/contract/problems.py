"""What the contract reports: problem lines, the error a door raises, and the outcome of
checking rows (:class:`RowCheck`).

A problem is one (row, column) line (:data:`PROBLEM_COLUMNS`): the value as the user wrote it
(:func:`show`), the reason, what the column allows (:func:`allowed_text`) and its kind. Each
door decides what to do with them (:meth:`RowCheck.refusal` gives the error it raises).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from netsec_tasks.dataset_schema import ColumnSpec
from netsec_tasks.errors import DataError

Kind = Literal["uncoercible", "domain", "non_nullable", "row_null"]

ROW_SCOPE = "*"  # the "column" of a problem that concerns the whole row
PROBLEM_COLUMNS = ["row", "column", "value", "reason", "allowed", "kind"]
_MAX_VALUE_CHARS = 80
_MAX_LISTED = 10


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


def listed(items: Iterable[Any], limit: int = _MAX_LISTED) -> str:
    items = [str(i) for i in items]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


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


def uncoercible_problems(
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


def describe(column: str, value: Any, reason: str) -> str:
    if column == ROW_SCOPE:
        return f"{reason} ({value})"
    return f"column '{column}' is {value}: {reason}"


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
