"""The contract of one data set (:class:`Contract`): its rules applied to a frame's columns,
rows and labels, and the JSON Schema of one record. The rules themselves are in the package's
docstring (:mod:`netsec_tasks.contract`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.contract.cells import (
    MACHINE_BOUNDS,
    NOT_FINITE,
    allowed_values,
    coerce,
    machine_bad,
    null_mask,
)
from netsec_tasks.contract.labels import LabelCheck
from netsec_tasks.contract.names import looks_like_index, near_match
from netsec_tasks.contract.output import OUTPUT_COLUMNS
from netsec_tasks.contract.problems import (
    PROBLEM_COLUMNS,
    ROW_SCOPE,
    ContractError,
    RowCheck,
    allowed_text,
    listed,
    show,
    uncoercible_problems,
)
from netsec_tasks.dataset_schema import ColumnSpec, DatasetSchema
from netsec_tasks.table_io import visible


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
                    (~isnull[:, j] & ~finite[:, j], NOT_FINITE),
                    (held, MACHINE_BOUNDS[spec.dtype]),
                    (not_int[:, j] & ~held, "not an integer"),
                ):
                    if mask.any():
                        rows = np.flatnonzero(mask)
                        raw_values = frame[col].iloc[rows]
                        parts.append(uncoercible_problems(rows, col, raw_values, reason, spec))
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
                    parts.append(uncoercible_problems(rows, col, raw.iloc[rows], why, spec))
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
