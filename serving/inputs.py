"""Request input -> model input, through the data set's input contract (netsec_tasks.contract).

Bad input is the caller's problem and gets a 4xx naming the row, the column, the value and what
is allowed; it never reaches the model (where it would become a 500 or, worse, a confident score
for a value the model has never seen). Valid input becomes one float64 matrix in the model's
feature order (numeric models) or a typed DataFrame, with NaN where a nullable cell was null:
the model's own Pipeline imputes those, and the response says how many cells it imputed.

Two ways in for JSON, one set of rules:

- the **fast decode** (msgspec, in C): a decoder generated from the contract (each feature's
  allowed values as a ``Literal``, ``min``/``max`` as constraints, ``None`` only where the
  column is nullable) reads well-formed requests; the row null share is checked on the matrix.
  It only *accepts or declines*: anything it declines goes to
- the **contract path**: ``json.loads``, then :meth:`Contract.check_rows` (the pandera checks),
  which accepts the same valid rows and names every problem.

The fast decode accepts a subset of what the contract path accepts and yields the same matrix
(tests/serving/test_serving_contract.py checks both on the same payloads).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd

from netsec_tasks.contract import FLOAT32_MAX, ROW_SCOPE, Contract, ContractError, RowCheck, RowValidity
from netsec_tasks.errors import DataError
from netsec_tasks.table_io import Table
from serving.model import LoadedModel

InvalidPolicy = Literal["refuse", "flag"]


class InputError(Exception):
    """A request the service refuses; ``status_code`` is 4xx. ``problems`` lists every row
    problem found (row, column, value, reason, allowed), the first one also in ``row``,
    ``column``, ``value`` and ``allowed``."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 422,
        column: str | None = None,
        row: int | None = None,
        value: Any = None,
        allowed: str | None = None,
        problems: list[dict] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.column = column
        self.row = row
        self.value = value
        self.allowed = allowed
        self.problems = problems or []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"detail": self.message, "column": self.column, "row": self.row}
        if self.problems and self.problems[0].get("where"):
            out["where"] = self.problems[0]["where"]
        if self.value is not None:
            out["value"] = self.value
        if self.allowed is not None:
            out["allowed"] = self.allowed
        if self.problems:
            out["problems"] = self.problems
        return out

    @classmethod
    def from_contract(cls, exc: ContractError) -> InputError:
        first = exc.first
        column = first.get("column") or (exc.columns[0] if exc.columns else None)
        return cls(
            exc.message,
            column=None if column == ROW_SCOPE else column,
            row=first.get("row"),
            value=first.get("value"),
            allowed=first.get("allowed") or None,
            problems=[
                {k: p.get(k) for k in ("row", "where", "column", "value", "reason", "allowed")}
                for p in exc.problems
            ],
        )


def check_row_count(n: int, max_rows: int, where: str) -> None:
    if n == 0:
        raise InputError(f"{where} has no rows; send at least one record")
    if n > max_rows:
        raise InputError(
            f"{where} has {n} rows; the limit is {max_rows} per request (split the batch)", status_code=413
        )


@dataclass
class ModelInput(RowValidity):
    """What a door hands to the model, and what it needs to answer.

    ``x``: the valid rows in the model's feature order (float matrix or DataFrame);
    ``valid``: which request rows ``x`` holds; ``null_cells``: null features per request row
    (imputed for valid rows); ``check``: the contract's verdict (None on the fast path, where
    every row is valid); ``frame``: the request as a table (None on the fast path);
    ``echo``: passthrough columns sent on the fast path.
    """

    x: Any
    valid: np.ndarray
    null_cells: np.ndarray
    check: RowCheck | None = None
    frame: pd.DataFrame | None = None
    echo: dict[str, list] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the CSV reader did (see Table.notes)


def _model_x(contract: Contract, model: LoadedModel, check: RowCheck) -> Any:
    rows = np.flatnonzero(check.valid)
    if model.numeric_only and contract.numeric_only:
        return check.typed[list(model.features)].to_numpy(dtype=np.float64)[rows]
    return contract.model_input(check, rows)[list(model.features)].reset_index(drop=True)


def checked_input(
    frame: pd.DataFrame,
    contract: Contract,
    model: LoadedModel,
    *,
    where,
    policy: InvalidPolicy = "refuse",
    strict_types: bool = False,
) -> ModelInput:
    """The contract path for a table whose columns are already checked: type and check every
    row; refuse (422) or flag the invalid ones."""
    check = contract.check_rows(frame, strict_types=strict_types)
    if check.n_invalid and policy == "refuse":
        raise InputError.from_contract(check.refusal(where))
    return ModelInput(
        x=_model_x(contract, model, check),
        valid=check.valid,
        null_cells=check.null_cells,
        check=check,
        frame=frame,
    )


# --- JSON records -------------------------------------------------------------------------------


def records_from_body(body: bytes, max_rows: int) -> list[dict]:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        if "Exceeds the limit" in str(exc):  # Python's int_max_str_digits: valid JSON, no column holds it
            raise InputError(
                "a number in the body has more digits than any column holds (over 4300); send values "
                "within the columns' ranges"
            ) from None
        raise InputError(f"body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise InputError("body is not valid JSON: nested too deeply") from None
    if not isinstance(payload, dict) or "records" not in payload:
        raise InputError('body must be a JSON object {"records": [{feature: value, ...}, ...]}')
    extra = set(payload) - {"records"}
    if extra:
        raise InputError(f"unexpected top-level key(s) {sorted(extra)}; only 'records' is allowed")
    records = payload["records"]
    if not isinstance(records, list):
        raise InputError("'records' must be a list of objects", column="records")
    check_row_count(len(records), max_rows, "'records'")
    if _ESCAPED_SURROGATE.search(body):
        _refuse_lone_surrogates(records)
    return records


# A JSON escape of a UTF-16 surrogate; paired ones decode to one character, a lone one is not
# Unicode text (no table, log or answer can hold it).
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(records: list) -> None:
    from netsec_tasks.sinks import text

    for i, row in enumerate(records):
        if not isinstance(row, dict):
            continue
        for key, value in row.items():
            for part, what in ((key, "a column name"), (value, f"column '{text(key)}'")):
                if isinstance(part, str) and text(part) != part:
                    raise InputError(
                        f"records[{i}]: {what} holds a lone UTF-16 surrogate (a \\ud800-\\udfff "
                        "escape without its pair), which is not Unicode text; send valid text",
                        column=text(key),
                        row=i,
                    )


def records_frame(records: list, contract: Contract) -> pd.DataFrame:
    """Records as a table after the column rules: every record an object holding every
    feature, and nothing outside the features and the passthrough columns."""
    features = contract.features
    wanted = set(features)
    allowed = wanted | set(contract.passthrough)
    rename = contract.schema.rename
    seen_passthrough: dict[str, None] = {}
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            raise InputError(f"records[{i}] must be an object of column: value", row=i)
        if rename and not rename.keys().isdisjoint(row):
            clash = [k for k in row if k in rename and rename[k] in row]
            if clash:
                raise InputError(
                    f"records[{i}] has both '{clash[0]}' and '{rename[clash[0]]}', which the schema's "
                    f"rename maps '{clash[0]}' to; send one of them",
                    column=clash[0],
                    row=i,
                )
            row = records[i] = {rename.get(k, k): v for k, v in row.items()}
        keys = row.keys()
        if keys == wanted:
            continue
        missing = [f for f in features if f not in keys]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(f"records[{i}]: missing column '{missing[0]}'{more}", column=missing[0], row=i)
        unknown = [str(k) for k in keys if k not in allowed]
        if unknown:
            raise InputError(
                f"records[{i}]: {contract.unknown_columns_message(unknown)}", column=unknown[0], row=i
            )
        for k in keys:
            if k not in wanted:
                seen_passthrough[k] = None
    columns = [*features, *seen_passthrough]
    return pd.DataFrame.from_records(records, columns=columns)


def json_input(body: bytes, contract: Contract, model: LoadedModel, max_rows: int) -> ModelInput:
    """The contract path for a JSON body: every problem reported with its row and column."""
    records = records_from_body(body, max_rows)
    frame = records_frame(records, contract)
    return checked_input(frame, contract, model, where=lambda r: f"records[{r}]", strict_types=True)


try:  # msgspec decodes and type-checks {"records": [...]} in C, ~5x faster than json.loads
    # plus per-cell checks in Python (figures: tests/serving/test_serving_contract.py docstring).
    import msgspec
    import msgspec.structs
except ImportError:  # pragma: no cover - msgspec is in the serving extra
    msgspec = None  # type: ignore[assignment]  # the contract path still works

_decoders: dict[tuple, Any] = {}
# The ints the fast decode accepts: int64 as far as float64 holds it exactly below 2**63.
FAST_INT_RANGE = (-(2**63), 2**63 - 1024)


def _fast_type(spec) -> Any:
    """The msgspec type of one feature, from the same schema the contract reads; None when the
    column's rules cannot be said as a type (the contract path takes those requests)."""
    if spec.dtype == "int":
        if spec.allowed is not None:
            values = tuple(a for a in spec.allowed if isinstance(a, int) and not isinstance(a, bool))
            if len(values) != len(spec.allowed):
                return None
            typ: Any = Literal[values]
        else:
            # The contract's int64 bound, where float64 is exact: a few integers just below
            # 2**63 round up to it and take the contract path, which refuses them.
            low, high = FAST_INT_RANGE
            if spec.min is not None:
                low = max(low, math.ceil(spec.min))
            if spec.max is not None:
                high = min(high, math.floor(spec.max))
            typ = Annotated[int, msgspec.Meta(ge=low, le=high)]
    elif spec.dtype == "float":
        if spec.allowed is not None:
            return None
        low_f, high_f = -FLOAT32_MAX, FLOAT32_MAX  # the contract's float32 bound
        if spec.min is not None:
            low_f = max(low_f, float(spec.min))
        if spec.max is not None:
            high_f = min(high_f, float(spec.max))
        typ = Annotated[float, msgspec.Meta(ge=low_f, le=high_f)]
    else:
        return None
    return typ | None if spec.nullable else typ


def fast_decoder(contract: Contract, features: tuple[str, ...]):
    """A decoder whose row type is the contract's: the model's features (required, typed and
    constrained per the schema) and the passthrough columns (optional, any value). None when
    the schema has a rule msgspec cannot express."""
    key = (id(contract), features)
    if key in _decoders:
        return _decoders[key]
    dec = None
    types = [_fast_type(contract.schema.columns[f]) for f in features]
    if msgspec is not None and all(t is not None for t in types):
        # JSON keys are the files' names: the schema's rename maps them to its columns.
        key_of = {new: old for old, new in contract.schema.rename.items()}
        fields: list[tuple] = [(f"f{i}", t) for i, t in enumerate(types)]
        rename = {f"f{i}": key_of.get(name, name) for i, name in enumerate(features)}
        for j, name in enumerate(contract.passthrough):
            fields.append((f"p{j}", Any, msgspec.UNSET))
            rename[f"p{j}"] = key_of.get(name, name)
        row = msgspec.defstruct("Row", fields, rename=rename, forbid_unknown_fields=True)
        records = list[row]  # type: ignore[valid-type]  # a struct built at run time
        payload = msgspec.defstruct("Payload", [("records", records)], forbid_unknown_fields=True)
        dec = msgspec.json.Decoder(payload)
    if len(_decoders) > 16:  # a few model versions at most; never grow without bound
        _decoders.clear()
    _decoders[key] = dec
    return dec


def fast_json_input(body: bytes, contract: Contract, model: LoadedModel, max_rows: int) -> ModelInput | None:
    """Well-formed numeric payloads in one C pass; None means "take the contract path", which
    then accepts the same rows or names the problem."""
    if msgspec is None or not (model.numeric_only and contract.numeric_only):
        return None
    dec = fast_decoder(contract, model.features)
    if dec is None:
        return None
    try:
        records = dec.decode(body).records
    except (msgspec.DecodeError, RecursionError):
        return None
    n = len(records)
    if not 0 < n <= max_rows:
        return None
    k = len(model.features)
    width = k + len(contract.passthrough)
    rows: Iterable[tuple] = map(msgspec.structs.astuple, records)
    if width > k:
        rows = (r[:k] for r in rows)
    flat = list(itertools.chain.from_iterable(rows))
    try:
        x = np.fromiter(flat, dtype=np.float64, count=n * k)
    except TypeError:  # a None (null): numpy turns it into NaN for a float array
        x = np.array(flat, dtype=np.float64)
    x = x.reshape(n, k)
    if np.isinf(x).any():  # 1e999 decodes as inf: the contract path names it
        return None
    null_cells = np.isnan(x).sum(axis=1)
    if null_cells.any() and (
        (null_cells > contract.max_null_cells).any() or (null_cells >= len(contract.features)).any()
    ):
        return None
    echo: dict[str, list] = {}
    if width > k:
        unset = msgspec.UNSET
        for j, name in enumerate(contract.passthrough):
            values = [getattr(r, f"p{j}") for r in records]
            if any(v is not unset for v in values):
                echo[name] = [None if v is unset else v for v in values]
    return ModelInput(x=x, valid=np.ones(n, dtype=bool), null_cells=null_cells, echo=echo)


# --- CSV tables ---------------------------------------------------------------------------------


def csv_table(data: bytes, name: str, contract: Contract, max_rows: int) -> Table:
    """An uploaded CSV as a :class:`~netsec_tasks.table_io.Table` after the column rules, read by
    the one CSV reader every door uses (layout checked, rows keep their physical lines);
    passthrough columns are read as text, so an id such as 007 comes back as 007."""
    from netsec_tasks.table_io import read_csv

    try:
        table = read_csv(
            data,
            name,
            max_rows=max_rows + 1,
            **contract.schema.read_options(echo=True),
        )
    except DataError as exc:
        raise InputError(str(exc), column=exc.columns[0] if exc.columns else None) from None
    check_row_count(len(table.frame), max_rows, "the CSV")
    try:
        contract.check_columns(table.frame, source=f"{name} header")
    except ContractError as exc:
        raise InputError.from_contract(exc) from None
    return table


def csv_input(
    data: bytes,
    name: str,
    contract: Contract,
    model: LoadedModel,
    max_rows: int,
    *,
    policy: InvalidPolicy = "refuse",
) -> ModelInput:
    """Rows are reported by their physical CSV lines (the header, if any, is line 1)."""
    table = csv_table(data, name, contract, max_rows)
    inp = checked_input(table.frame, contract, model, where=table.where, policy=policy)
    inp.notes = list(table.notes)
    return inp
