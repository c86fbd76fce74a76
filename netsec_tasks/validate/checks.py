"""Validation's checks: the pure core (``validate_frame``); what it returns is :mod:`.outcome`.

A frame is typed and checked per the data set's schema by the contract's rules
(:mod:`netsec_tasks.contract`); problems are quarantined row by row (``invalid``, one line per
problem) or counted as data-set checks (:class:`Check`). Nothing here reads or writes storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from netsec_tasks.config import ValidationConfig
from netsec_tasks.contract import UNLISTED_HINT, Contract, listed, null_mask, show
from netsec_tasks.dataset_schema import ColumnSpec, DatasetSchema
from netsec_tasks.split import row_hashes
from netsec_tasks.validate.outcome import Check, FrameValidation, Status

if TYPE_CHECKING:  # pragma: no cover
    pass


# How strict the size/class-balance checks are: training data must be usable on its own; a test
# split may be small; a new batch only feeds drift, so it may be empty, tiny or one-class.
Role = Literal["data", "train", "test", "batch"]

INVALID_COLUMNS = ["split", "row", "column", "value", "reason"]


# Typing, null detection and the row checks are the contract's (netsec_tasks.contract): the
# same rules serving and `netsec predict` apply to the rows they score.
_listed = listed
_null_mask = null_mask


class _Quarantine:
    """Collects row problems as (index, column, value, reason) without looping over rows."""

    def __init__(self, index: pd.Index, default_split: str):
        self.index = index
        self.default_split = default_split
        self.parts: list[pd.DataFrame] = []
        self.rows = pd.Series(False, index=index)

    def add(self, mask: pd.Series, column: str, values: pd.Series | str, reason: str) -> int:
        mask = mask.fillna(False).astype(bool)
        n = int(mask.sum())
        if not n:
            return 0
        self.rows |= mask
        idx = self.index[mask.to_numpy()]
        if isinstance(idx, pd.MultiIndex):
            split, row = idx.get_level_values(0), idx.get_level_values(1)
        else:
            split, row = [self.default_split] * n, idx
        shown = values[mask].map(show) if isinstance(values, pd.Series) else [values] * n
        self.parts.append(
            pd.DataFrame(
                {
                    "split": list(split),
                    "row": list(row),
                    "column": column,
                    "value": list(shown),
                    "reason": reason,
                }
            )
        )
        return n

    def add_problems(self, problems: pd.DataFrame) -> None:
        """The contract's problem lines (rows by position) under this frame's split/row."""
        if problems.empty:
            return
        pos = problems["row"].to_numpy(dtype=np.int64)
        self.rows.iloc[np.unique(pos)] = True
        idx = self.index[pos]
        if isinstance(idx, pd.MultiIndex):
            split, row = list(idx.get_level_values(0)), list(idx.get_level_values(1))
        else:
            split, row = [self.default_split] * len(pos), list(idx)
        self.parts.append(
            pd.DataFrame(
                {
                    "split": split,
                    "row": row,
                    "column": list(problems["column"]),
                    "value": list(problems["value"]),
                    "reason": list(problems["reason"]),
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in INVALID_COLUMNS})
        out = pd.concat(self.parts, ignore_index=True)
        return out.sort_values(["split", "row", "column"], kind="stable", ignore_index=True)


def status_of(bad: bool, fatal: bool) -> Status:
    if not bad:
        return "pass"
    return "fail" if fatal else "warn"


def _union(a: list[str], b: list[str]) -> list[str]:
    return list(dict.fromkeys([*a, *b]))


@dataclass
class Tally:
    """What validating rows found, as counts: the tallies of a data set's batches add up (``+``)
    to the tally of the whole, so a split can be validated batch by batch in bounded memory."""

    rows: int = 0
    present: list[str] = field(default_factory=list)  # the data's columns
    unexpected: list[str] = field(default_factory=list)  # data columns not in the schema
    unexpected_details: str = "no unexpected columns"
    problems: dict[str, int] = field(default_factory=dict)  # contract kind -> problem lines
    problem_columns: dict[str, list[str]] = field(default_factory=dict)
    row_null: int = 0  # rows mostly null
    nulls: dict[str, int] = field(default_factory=dict)  # feature -> null cells
    has_target: bool = False
    target_missing: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # unusable label as written -> rows
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> rows, threat
    rows_invalid: int = 0
    rows_valid: int = 0
    classes: dict[Any, int] = field(default_factory=dict)  # label -> valid rows
    clean_hashes: list[np.ndarray] = field(default_factory=list)  # content hash per valid row

    def __add__(self, other: Tally) -> Tally:
        def counts(a: dict, b: dict) -> dict:
            out = dict(a)
            for k, v in b.items():
                out[k] = out.get(k, 0) + v
            return out

        return Tally(
            rows=self.rows + other.rows,
            present=_union(self.present, other.present),
            unexpected=_union(self.unexpected, other.unexpected),
            unexpected_details=self.unexpected_details
            if self.unexpected or not other.unexpected
            else other.unexpected_details,
            problems=counts(self.problems, other.problems),
            problem_columns={
                k: _union(self.problem_columns.get(k, []), other.problem_columns.get(k, []))
                for k in dict.fromkeys([*self.problem_columns, *other.problem_columns])
            },
            row_null=self.row_null + other.row_null,
            nulls=counts(self.nulls, other.nulls),
            has_target=self.has_target or other.has_target,
            target_missing=self.target_missing + other.target_missing,
            refused=counts(self.refused, other.refused),
            labels={
                k: {
                    "rows": self.labels.get(k, {}).get("rows", 0) + other.labels.get(k, {}).get("rows", 0),
                    "threat": (self.labels.get(k) or other.labels[k])["threat"],
                }
                for k in dict.fromkeys([*self.labels, *other.labels])
            },
            rows_invalid=self.rows_invalid + other.rows_invalid,
            rows_valid=self.rows_valid + other.rows_valid,
            classes=counts(self.classes, other.classes),
            clean_hashes=[*self.clean_hashes, *other.clean_hashes],
        )

    @property
    def label_counts(self) -> dict[str, dict[str, Any]]:
        """Rows per usable label, most frequent first (as the contract's LabelCheck orders them)."""
        return dict(sorted(self.labels.items(), key=lambda kv: -kv[1]["rows"]))

    @property
    def duplicates(self) -> int:
        """Valid rows that are exact copies of an earlier valid row."""
        if not self.clean_hashes:
            return 0
        hashes = np.concatenate(self.clean_hashes)
        return int(len(hashes) - len(np.unique(hashes)))


# --------------------------------------------------------------------------- pure core


def validate_frame(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    vcfg: ValidationConfig,
    *,
    source: str = "<frame>",
    split: str = "data",
    role: Role = "data",
    require_target: bool = True,
) -> FrameValidation:
    """Validate one frame against the schema; never raises on bad data, reports it instead.

    ``frame`` may carry a (split, row) MultiIndex so several splits are checked as one data set
    while quarantined rows keep their split and original row index. ``role`` sets which size and
    class-balance checks are fatal (see :data:`Role`). With ``require_target=False`` a frame
    without the target column (unlabelled traffic) is accepted.
    """
    tally, clean, invalid = scan_rows(frame, schema, vcfg, split=split)
    checks = data_set_checks(tally, schema, vcfg, role=role, require_target=require_target)
    return FrameValidation(
        source=source,
        clean=clean,
        invalid=invalid,
        checks=checks,
        rows_checked=tally.rows,
        rows_invalid=tally.rows_invalid,
        labels=tally.label_counts,
    )


def scan_rows(
    frame: pd.DataFrame, schema: DatasetSchema, vcfg: ValidationConfig, *, split: str
) -> tuple[Tally, pd.DataFrame, pd.DataFrame]:
    """Check the rows of ``frame``: (tally, typed clean rows, quarantined problems)."""
    tally = Tally()
    target = schema.target.column
    features = schema.features

    contract = Contract(schema, max_row_null_share=vcfg.max_row_null_share)
    # Columns: ignored and id columns are dropped, the rest must match the schema exactly.
    dropped = set(schema.ignore) | set(schema.id_columns)
    frame = frame.drop(columns=[c for c in frame.columns if c in dropped])
    expected = features + ([target] if target in frame.columns else [])
    tally.present = [str(c) for c in frame.columns]
    tally.unexpected = [str(c) for c in frame.columns if c not in expected]
    if tally.unexpected:
        tally.unexpected_details = contract.unknown_columns_message(tally.unexpected, frame)
    tally.rows = n = len(frame)

    quarantine = _Quarantine(frame.index, split)
    present_features = [c for c in features if c in frame.columns]
    rows = contract.check_rows(frame[present_features])
    problems = rows.problems
    quarantine.add_problems(problems)
    typed = {c: rows.typed[c].set_axis(frame.index) for c in present_features}
    for kind in ("uncoercible", "domain", "non_nullable"):
        mine = problems[problems["kind"] == kind]
        if len(mine):
            tally.problems[kind] = len(mine)
            tally.problem_columns[kind] = list(dict.fromkeys(mine["column"]))
    tally.row_null = int((problems["kind"] == "row_null").sum())
    tally.nulls = {c: int(rows.nulls[c].sum()) for c in present_features} if n else {}

    typed_target = None
    if target in frame.columns:
        tally.has_target = True
        typed_target = _check_target(frame[target], schema, quarantine, tally)

    clean_mask = ~quarantine.rows
    clean = pd.DataFrame({c: typed[c][clean_mask] for c in present_features}, index=frame.index[clean_mask])
    if typed_target is not None:
        clean[target] = typed_target[clean_mask]
    clean = _final_dtypes(clean, schema)

    tally.rows_invalid = int(quarantine.rows.sum())
    tally.rows_valid = len(clean)
    if typed_target is not None:
        tally.classes = {k: int(v) for k, v in clean[target].value_counts().items()}
    if len(clean):
        tally.clean_hashes = [row_hashes(clean, list(clean.columns))]
    return tally, clean, quarantine.frame()


def data_set_checks(
    tally: Tally, schema: DatasetSchema, vcfg: ValidationConfig, *, role: Role, require_target: bool
) -> list[Check]:
    """Every check of a data set, from the tally of its rows (see the module doc)."""
    fatal_size = role in ("data", "train")
    fatal_empty = role != "batch"
    target = schema.target.column
    expected = schema.features + ([target] if require_target or tally.has_target else [])
    missing = [c for c in expected if c not in tally.present]
    n = tally.rows
    checks = [
        Check(
            "columns_missing",
            status_of(bool(missing), True),
            len(missing),
            _missing_details(missing, tally.present, schema),
            missing,
        ),
        Check(
            "columns_unexpected",
            status_of(bool(tally.unexpected), True),
            len(tally.unexpected),
            tally.unexpected_details,
            list(tally.unexpected),
        ),
        Check(
            "not_empty", status_of(n == 0, fatal_empty), n, "data set has no rows" if n == 0 else f"{n} rows"
        ),
    ]
    kind_checks = (
        ("uncoercible", "uncoercible_values", "values that cannot be converted to the column type"),
        ("domain", "out_of_domain_values", "values outside the allowed set or range"),
        ("non_nullable", "null_in_non_nullable", "nulls in non-nullable columns"),
    )
    for kind, name, what in kind_checks:
        checks.append(
            _row_check(name, tally.problems.get(kind, 0), tally.problem_columns.get(kind, []), what)
        )
    # Rows that are mostly null carry too little to learn from or to impute reliably.
    checks.append(
        _row_check(
            "row_null_share",
            tally.row_null,
            [],
            f"rows with more than {vcfg.max_row_null_share:.0%} null features",
        )
    )

    # Columns that are mostly null: imputing them would invent the data.
    shares = {c: k / n for c, k in tally.nulls.items()} if n else {}
    heavy = {c: s for c, s in shares.items() if s > vcfg.max_column_null_share}
    checks.append(
        Check(
            "column_null_share",
            status_of(bool(heavy), True),
            len(heavy),
            (
                f"columns with more than {vcfg.max_column_null_share:.0%} nulls: "
                + _listed(f"{c} ({s:.1%})" for c, s in heavy.items())
            )
            if heavy
            else f"no column above {vcfg.max_column_null_share:.0%} nulls"
            + (
                f" (highest: {max(shares, key=lambda c: shares[c])} {max(shares.values()):.2%})"
                if shares and max(shares.values()) > 0
                else ""
            ),
            list(heavy),
        )
    )

    if tally.has_target:
        checks += _target_checks(tally, schema)
    elif not require_target:
        checks.append(Check("target_present", "pass", 0, "no target column (unlabelled data)"))

    rows_invalid = tally.rows_invalid
    share = rows_invalid / n if n else 0.0
    checks.append(
        Check(
            "invalid_share",
            status_of(share > vcfg.max_invalid_share, True),
            rows_invalid,
            f"{rows_invalid} of {n} rows invalid ({share:.2%}), above the limit "
            f"validation.max_invalid_share={vcfg.max_invalid_share:.2%}; see invalid.csv for the rows"
            if share > vcfg.max_invalid_share
            else f"{rows_invalid} of {n} rows invalid ({share:.2%}, limit {vcfg.max_invalid_share:.2%})",
        )
    )
    valid = tally.rows_valid
    checks.append(
        Check(
            "min_rows",
            status_of(valid < vcfg.min_rows, fatal_size and n > 0),
            valid,
            f"only {valid} valid rows, fewer than validation.min_rows={vcfg.min_rows}"
            if valid < vcfg.min_rows
            else f"{valid} valid rows (min {vcfg.min_rows})",
        )
    )
    if tally.has_target:
        checks.append(class_check(tally.classes, schema, fatal_size and n > 0))
    dups = tally.duplicates
    checks.append(
        Check(
            "duplicate_rows",
            "warn" if dups else "pass",
            dups,
            f"{dups} rows are exact copies of an earlier valid row" if dups else "no duplicate rows",
        )
    )
    return checks


def _missing_details(missing: list[str], present: Iterable[str], schema: DatasetSchema) -> str:
    if not missing:
        return "all schema columns present"
    return Contract(schema).missing_columns_message(missing, present)


def _row_check(name: str, count: int, columns: list[str], what: str) -> Check:
    if not count:
        return Check(name, "pass", 0, f"no {what}")
    where = f" in {_listed(columns)}" if columns else ""
    return Check(name, "warn", count, f"{what}: {count}{where}; those rows are quarantined", columns)


def _check_target(raw: pd.Series, schema: DatasetSchema, quarantine: _Quarantine, tally: Tally) -> pd.Series:
    """Quarantine rows with no label or a label the schema does not list (the contract's label
    check); count them, and the rows per usable label, in ``tally``."""
    spec = schema.target
    check = Contract(schema).check_labels(raw)
    null = pd.Series(check.null, index=raw.index)
    tally.target_missing = quarantine.add(null, spec.column, "<null>", "missing target")
    refused = pd.Series(check.refused, index=raw.index)
    if refused.any():
        quarantine.add(refused, spec.column, raw, f"target value not in labels {check.vocabulary}")
        values = raw[refused].map(lambda v: str(v).strip()).value_counts()
        tally.refused = {str(v): int(c) for v, c in values.items()}
    tally.labels = {k: dict(v) for k, v in check.counts.items()}
    return check.typed.set_axis(raw.index)


def _target_checks(tally: Tally, schema: DatasetSchema) -> list[Check]:
    """``target_missing`` and ``target_labels`` from the tally (see :func:`_check_target`)."""
    spec = schema.target
    k = tally.target_missing
    checks = [_row_check("target_missing", k, [spec.column] if k else [], "rows without a target label")]
    vocabulary = spec.vocabulary
    if tally.refused:
        n = sum(tally.refused.values())
        summary = listed(f"{v!r} x{c}" for v, c in sorted(tally.refused.items(), key=lambda kv: -kv[1]))
        checks.append(
            Check(
                "target_labels",
                "fail",
                n,
                f"target column {spec.column} has {n} values outside labels "
                f"{vocabulary}: {summary}. {UNLISTED_HINT}",
                [spec.column],
            )
        )
    elif spec.everything_but:
        # Labels the schema does not name are threats by definition; a new attack type is
        # still worth a look, so it is a warning when the schema lists the known ones.
        counts = tally.label_counts
        known = {show(v) for v in spec.known_labels}
        new = [k for k in counts if k not in known] if spec.labels else []
        detail = f"every label but {spec.benign_labels} is a threat" + (
            f"; threat labels not in target.labels: {_listed(new)}" if new else ""
        )
        checks.append(
            Check(
                "target_labels",
                "warn" if new else "pass",
                sum(counts[k]["rows"] for k in new),
                detail,
                [spec.column] if new else [],
            )
        )
    else:
        checks.append(Check("target_labels", "pass", 0, f"all target values in {vocabulary}"))
    return checks


def class_check(
    counts: dict[Any, int],
    schema: DatasetSchema,
    fatal: bool,
    *,
    name: str = "target_classes",
    where: str = "",
) -> Check:
    """Both sides of the binary task present among the valid rows: threat rows and benign rows
    (per the schema's label mapping; the raw label may have more classes). ``counts``: typed
    label -> valid rows."""
    column = schema.target.column
    ordered = sorted(((v, c) for v, c in counts.items() if c), key=lambda kv: -kv[1])
    raw = ", ".join(f"{_label(v)}={c}" for v, c in ordered)
    if not ordered:
        return Check(name, status_of(True, fatal), 0, f"{where}no valid target labels")
    threat = np.asarray(schema.is_threat(pd.Series([v for v, _ in ordered], dtype=object)), dtype=bool)
    rows = np.array([c for _, c in ordered])
    n_threat, n_benign = int(rows[threat].sum()), int(rows[~threat].sum())
    if n_threat and n_benign:
        split_text = f" (threat {n_threat}, benign {n_benign})" if len(ordered) > 2 else ""
        return Check(name, "pass", len(ordered), where + "classes: " + raw + split_text)
    if len(ordered) == 1:
        only = _label(ordered[0][0])
        return Check(
            name,
            status_of(True, fatal),
            1,
            f"{where}target {column} has a single class ({only!r} x{int(ordered[0][1])});"
            f" a classifier needs both classes",
            [str(column)],
        )
    side, other = ("threat", "benign") if n_threat else ("benign", "threat")
    return Check(
        name,
        status_of(True, fatal),
        len(ordered),
        f"{where}target {column} has {side} labels only ({raw}); the model needs "
        f"{other} rows too (label mapping: {schema.target.mapping()})",
        [str(column)],
    )


def _label(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v.item() if hasattr(v, "item") else v


def _final_dtypes(clean: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """int columns without nulls are int64, with nulls float64 (NaN for the imputer)."""
    specs = dict(schema.columns)
    specs[schema.target.column] = ColumnSpec(dtype=schema.target.dtype)
    for col in clean.columns:
        dtype = specs[col].dtype
        if dtype == "int":
            clean[col] = (
                clean[col].astype("int64") if not clean[col].isna().any() else clean[col].astype("float64")
            )
        elif dtype == "float":
            clean[col] = clean[col].astype("float64")
        elif dtype == "str":
            clean[col] = clean[col].astype("str")
        elif dtype == "bool" and not clean[col].isna().any():
            clean[col] = clean[col].astype(bool)
    return clean


def harmonise_dtypes(frames: dict[str, pd.DataFrame], schema: DatasetSchema) -> dict[str, pd.DataFrame]:
    """Same dtype for a column in every split: float64 everywhere if any split needs NaN."""
    out = {k: f.copy() for k, f in frames.items()}
    for col, spec in schema.columns.items():
        if spec.dtype not in ("int", "bool"):
            continue
        kinds = {str(f[col].dtype) for f in out.values() if col in f.columns}
        if len(kinds) > 1:
            for f in out.values():
                if col in f.columns:
                    f[col] = f[col].astype("float64" if spec.dtype == "int" else object)
    return out
