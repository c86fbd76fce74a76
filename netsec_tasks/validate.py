"""Step 2, validation: schema and data-quality checks, row quarantine, YAML report.

Two levels of problems:

- *Data-set* problems make the data unusable as a whole (missing or unexpected columns, no rows,
  one class only, a column that is mostly null, unknown target labels, too few rows, too many
  invalid rows). They fail the run with :class:`ValidationFailed` after the report is written,
  so the operator has the full picture, not only the first problem.
- *Row* problems (a value that is not a number, a value outside the allowed set or range, a null
  where none is allowed, a row that is mostly null, a missing label) quarantine the row: it goes
  to ``invalid.csv`` with its split, original row index, column and reason. Rows are never
  dropped silently.

Clean rows are typed per the schema (int columns holding nulls become float64 so the imputer
can fill them; str columns are strings) and written as Parquet for the next steps.

``validate_frame`` is the pure core (also used by ``netsec validate FILE``); ``validate`` is the
pipeline step built on it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd
import yaml

from netsec_tasks.config import PipelineConfig, ValidationConfig
from netsec_tasks.contract import UNLISTED_HINT, Contract, listed, null_mask, show
from netsec_tasks.errors import ValidationFailed
from netsec_tasks.plain import plain
from netsec_tasks.records import IngestRecord, RunContext, ValidationRecord
from netsec_tasks.schema import ColumnSpec, DatasetSchema, load_schema
from netsec_tasks.split import lineage_frame, lineage_hashes
from netsec_tasks.catalog import RunCatalog
from netsec_tasks.storage import atomic_write
from netsec_tasks.table_io import frame_digest

Status = Literal["pass", "warn", "fail"]
# How strict the size/class-balance checks are: training data must be usable on its own; a test
# split may be small; a new batch only feeds drift, so it may be empty, tiny or one-class.
Role = Literal["data", "train", "test", "batch"]

INVALID_COLUMNS = ["split", "row", "column", "value", "reason"]


@dataclass
class Check:
    """One named check with its outcome; ``count`` is rows or columns affected."""

    name: str
    status: Status
    count: int = 0
    details: str = ""
    columns: list[str] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style read (``check.get("status")``), as the report YAML shows it."""
        return self.to_dict().get(key, default)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status, "count": int(self.count),
                               "details": self.details}
        if self.columns:
            out["columns"] = list(self.columns)
        return out


@dataclass
class FrameValidation:
    """Outcome of validating one frame: typed clean rows, quarantined problems, every check."""

    source: str
    clean: pd.DataFrame
    invalid: pd.DataFrame          # one line per problem: split, row, column, value, reason
    checks: list[Check]
    rows_checked: int
    rows_invalid: int              # distinct rows quarantined
    # Rows per target label (as text) and whether the schema maps it to the threat class.
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def invalid_share(self) -> float:
        return self.rows_invalid / self.rows_checked if self.rows_checked else 0.0

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "passed": self.passed,
            "rows_checked": int(self.rows_checked),
            "rows_valid": int(len(self.clean)),
            "rows_invalid": int(self.rows_invalid),
            "invalid_share": round(float(self.invalid_share), 6),
            **({"labels": self.labels} if self.labels else {}),
            "checks": [c.to_dict() for c in self.checks],
        }

    def failure_message(self, label: str | None = None) -> str:
        prefix = f"{label}: " if label else ""
        return "; ".join(f"{prefix}{c.details}" for c in self.failures)


# --------------------------------------------------------------------------- helpers

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
        self.parts.append(pd.DataFrame({
            "split": list(split), "row": list(row), "column": column,
            "value": list(shown), "reason": reason}))
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
        self.parts.append(pd.DataFrame({"split": split, "row": row,
                                        "column": list(problems["column"]),
                                        "value": list(problems["value"]),
                                        "reason": list(problems["reason"])}))

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in INVALID_COLUMNS})
        out = pd.concat(self.parts, ignore_index=True)
        return out.sort_values(["split", "row", "column"], kind="stable", ignore_index=True)


def _status(bad: bool, fatal: bool) -> Status:
    if not bad:
        return "pass"
    return "fail" if fatal else "warn"


# --------------------------------------------------------------------------- pure core

def validate_frame(frame: pd.DataFrame, schema: DatasetSchema, vcfg: ValidationConfig, *,
                   source: str = "<frame>", split: str = "data", role: Role = "data",
                   require_target: bool = True) -> FrameValidation:
    """Validate one frame against the schema; never raises on bad data, reports it instead.

    ``frame`` may carry a (split, row) MultiIndex so several splits are checked as one data set
    while quarantined rows keep their split and original row index. ``role`` sets which size and
    class-balance checks are fatal (see :data:`Role`). With ``require_target=False`` a frame
    without the target column (unlabelled traffic) is accepted.
    """
    checks: list[Check] = []
    target = schema.target.column
    features = schema.features
    fatal_size = role in ("data", "train")
    fatal_empty = role != "batch"

    contract = Contract(schema, max_row_null_share=vcfg.max_row_null_share)
    # Columns: ignored and id columns are dropped, the rest must match the schema exactly.
    dropped = set(schema.ignore) | set(schema.id_columns)
    frame = frame.drop(columns=[c for c in frame.columns if c in dropped])
    expected = features + ([target] if require_target or target in frame.columns else [])
    missing = [c for c in expected if c not in frame.columns]
    unexpected = [c for c in frame.columns if c not in expected]
    checks.append(Check("columns_missing", _status(bool(missing), True), len(missing),
                        _missing_details(missing, frame.columns), missing))
    checks.append(Check("columns_unexpected", _status(bool(unexpected), True), len(unexpected),
                        contract.unknown_columns_message([str(c) for c in unexpected], frame)
                        if unexpected else "no unexpected columns", [str(c) for c in unexpected]))
    n = len(frame)
    checks.append(Check("not_empty", _status(n == 0, fatal_empty), n,
                        "data set has no rows" if n == 0 else f"{n} rows"))

    quarantine = _Quarantine(frame.index, split)
    present_features = [c for c in features if c in frame.columns]
    rows = contract.check_rows(frame[present_features])
    problems = rows.problems
    quarantine.add_problems(problems)
    typed = {c: rows.typed[c].set_axis(frame.index) for c in present_features}
    kind_checks = (("uncoercible", "uncoercible_values",
                    "values that cannot be converted to the column type"),
                   ("domain", "out_of_domain_values", "values outside the allowed set or range"),
                   ("non_nullable", "null_in_non_nullable", "nulls in non-nullable columns"))
    for kind, name, what in kind_checks:
        mine = problems[problems["kind"] == kind]
        checks.append(_row_check(name, len(mine), list(dict.fromkeys(mine["column"])), what))

    # Rows that are mostly null carry too little to learn from or to impute reliably.
    k = int((problems["kind"] == "row_null").sum())
    checks.append(_row_check("row_null_share", k, [],
                             f"rows with more than {vcfg.max_row_null_share:.0%} null features"))

    # Columns that are mostly null: imputing them would invent the data.
    shares = {c: float(rows.nulls[c].mean()) for c in present_features} if n else {}
    heavy = {c: s for c, s in shares.items() if s > vcfg.max_column_null_share}
    checks.append(Check(
        "column_null_share", _status(bool(heavy), True), len(heavy),
        (f"columns with more than {vcfg.max_column_null_share:.0%} nulls: "
         + _listed(f"{c} ({s:.1%})" for c, s in heavy.items())) if heavy
        else f"no column above {vcfg.max_column_null_share:.0%} nulls"
             + (f" (highest: {max(shares, key=shares.get)} {max(shares.values()):.2%})"
                if shares and max(shares.values()) > 0 else ""),
        list(heavy)))

    typed_target = None
    label_counts: dict[str, Any] = {}
    if target in frame.columns:
        typed_target = _check_target(frame[target], schema, quarantine, checks, label_counts)
    elif not require_target:
        checks.append(Check("target_present", "pass", 0, "no target column (unlabelled data)"))

    clean_mask = ~quarantine.rows
    clean = pd.DataFrame({c: typed[c][clean_mask] for c in present_features}, index=frame.index[clean_mask])
    if typed_target is not None:
        clean[target] = typed_target[clean_mask]
    clean = _final_dtypes(clean, schema)

    rows_invalid = int(quarantine.rows.sum())
    share = rows_invalid / n if n else 0.0
    checks.append(Check(
        "invalid_share", _status(share > vcfg.max_invalid_share, True), rows_invalid,
        f"{rows_invalid} of {n} rows invalid ({share:.2%}), above the limit "
        f"validation.max_invalid_share={vcfg.max_invalid_share:.2%}; see invalid.csv for the rows"
        if share > vcfg.max_invalid_share
        else f"{rows_invalid} of {n} rows invalid ({share:.2%}, limit {vcfg.max_invalid_share:.2%})"))
    valid = len(clean)
    checks.append(Check(
        "min_rows", _status(valid < vcfg.min_rows, fatal_size and n > 0), valid,
        f"only {valid} valid rows, fewer than validation.min_rows={vcfg.min_rows}"
        if valid < vcfg.min_rows else f"{valid} valid rows (min {vcfg.min_rows})"))
    if typed_target is not None:
        checks.append(_class_check(clean[target], schema, fatal_size and n > 0))
    dups = int(clean.duplicated().sum()) if valid else 0
    checks.append(Check("duplicate_rows", "warn" if dups else "pass", dups,
                        f"{dups} rows are exact copies of an earlier valid row" if dups
                        else "no duplicate rows"))
    return FrameValidation(source=source, clean=clean, invalid=quarantine.frame(), checks=checks,
                           rows_checked=n, rows_invalid=rows_invalid, labels=label_counts)


def _missing_details(missing: list[str], present: Iterable[str]) -> str:
    if not missing:
        return "all schema columns present"
    lower = {str(c).lower(): c for c in present}
    hints = [f"{m} (found '{lower[m.lower()]}': names are case-sensitive)" if m.lower() in lower else m
             for m in missing]
    return f"missing columns required by the schema: {_listed(hints)}"


def _row_check(name: str, count: int, columns: list[str], what: str) -> Check:
    if not count:
        return Check(name, "pass", 0, f"no {what}")
    where = f" in {_listed(columns)}" if columns else ""
    return Check(name, "warn", count, f"{what}: {count}{where}; those rows are quarantined", columns)


def _check_target(raw: pd.Series, schema: DatasetSchema, quarantine: _Quarantine,
                  checks: list[Check], labels_out: dict[str, Any]) -> pd.Series:
    """Quarantine rows with no label; fail on labels the schema does not list (the contract's
    label check). ``labels_out`` receives the rows per label and whether each is a threat."""
    spec = schema.target
    check = Contract(schema).check_labels(raw)
    null = pd.Series(check.null, index=raw.index)
    k = quarantine.add(null, spec.column, "<null>", "missing target")
    checks.append(_row_check("target_missing", k, [spec.column] if k else [],
                             "rows without a target label"))
    refused = pd.Series(check.refused, index=raw.index)
    if refused.any():
        quarantine.add(refused, spec.column, raw, f"target value not in labels {check.vocabulary}")
        n = int(refused.sum())
        checks.append(Check("target_labels", "fail", n,
                            f"target column {spec.column} has {n} values outside labels "
                            f"{check.vocabulary}: {check.refused_summary()}. {UNLISTED_HINT}",
                            [spec.column]))
    elif spec.everything_but:
        # Labels the schema does not name are threats by definition; a new attack type is
        # still worth a look, so it is a warning when the schema lists the known ones.
        new = check.new_threat_labels if spec.labels else []
        detail = (f"every label but {spec.benign_labels} is a threat"
                  + (f"; threat labels not in target.labels: {_listed(new)}" if new else ""))
        checks.append(Check("target_labels", "warn" if new else "pass",
                            sum(check.counts[k]["rows"] for k in new), detail,
                            [spec.column] if new else []))
    else:
        checks.append(Check("target_labels", "pass", 0, f"all target values in {check.vocabulary}"))
    labels_out.update(check.counts)
    return check.typed.set_axis(raw.index)


def _class_check(target: pd.Series, schema: DatasetSchema, fatal: bool, *,
                 name: str = "target_classes", where: str = "") -> Check:
    """Both sides of the binary task present: threat rows and benign rows (per the schema's
    label mapping; the raw label may have more classes)."""
    counts = target.value_counts()
    raw = ", ".join(f"{_label(v)}={c}" for v, c in counts.items())
    if not len(counts):
        return Check(name, _status(True, fatal), 0, f"{where}no valid target labels")
    threat = np.asarray(schema.is_threat(target.dropna()), dtype=bool)
    n_threat, n_benign = int(threat.sum()), int((~threat).sum())
    if n_threat and n_benign:
        split_text = f" (threat {n_threat}, benign {n_benign})" if len(counts) > 2 else ""
        return Check(name, "pass", len(counts), where + "classes: " + raw + split_text)
    if len(counts) == 1:
        only = _label(counts.index[0])
        return Check(name, _status(True, fatal), 1,
                     f"{where}target {target.name} has a single class ({only!r} x{int(counts.iloc[0])});"
                     f" a classifier needs both classes", [str(target.name)])
    side, other = ("threat", "benign") if n_threat else ("benign", "threat")
    return Check(name, _status(True, fatal), len(counts),
                 f"{where}target {target.name} has {side} labels only ({raw}); the model needs "
                 f"{other} rows too (label mapping: {schema.target.mapping()})", [str(target.name)])


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
            clean[col] = clean[col].astype("int64") if not clean[col].isna().any() else clean[col].astype("float64")
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


# --------------------------------------------------------------------------- report

def render_report(sections: dict[str, FrameValidation] | FrameValidation, *,
                  passed: bool | None = None, extra: dict[str, Any] | None = None) -> str:
    """The YAML report: overall verdict, then every check per section."""
    if isinstance(sections, FrameValidation):
        sections = {"data": sections}
    if passed is None:
        passed = all(s.passed for s in sections.values())
    failures = [f"{name}: {c.details}" for name, s in sections.items() for c in s.failures]
    doc: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "passed": bool(passed),
        "failures": failures,
    }
    doc.update(plain(extra or {}))
    doc["sections"] = {name: s.summary() for name, s in sections.items()}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)


def invalid_csv(invalid: pd.DataFrame) -> str:
    """The quarantined rows as CSV text (split, row, column, value, reason)."""
    return invalid.reindex(columns=INVALID_COLUMNS).to_csv(index=False)


def write_report(sections: dict[str, FrameValidation] | FrameValidation, path: str | os.PathLike, *,
                 passed: bool | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the YAML report to a local file (atomic).

    ``path`` is the report file, or a directory: then ``validation_report.yaml`` and the
    quarantined rows (``invalid.csv``) are written into it (what ``netsec validate`` wants).
    """
    if isinstance(sections, FrameValidation):
        sections = {"data": sections}
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        write_invalid(path / "invalid.csv", pd.concat([s.invalid for s in sections.values()],
                                                      ignore_index=True))
        path = path / "validation_report.yaml"
    return atomic_write(path, render_report(sections, passed=passed, extra=extra))


def write_invalid(path: str | os.PathLike, invalid: pd.DataFrame) -> Path:
    return atomic_write(path, invalid_csv(invalid))


# --------------------------------------------------------------------------- pipeline step

def validate(cfg: PipelineConfig, run: RunContext, ingest: IngestRecord, *,
             schema: DatasetSchema | None = None) -> ValidationRecord:
    """Validate train+test as one data set and the new batch on its own; write typed Parquet.

    Train and test are checked together (one invalid share, one duplicate count, one column
    null share) so a small test split cannot fail on its own; the train split must still hold
    both classes after quarantine. Raises ValidationFailed (after writing the report and
    invalid.csv) when a data-set level check fails.
    """
    schema = schema or load_schema(cfg.schema_path)
    vcfg = cfg.validation
    catalog = RunCatalog.of(cfg, run)
    train_raw = catalog.load_frame(ingest.train_uri)
    test_raw = catalog.load_frame(ingest.test_uri)
    batch_raw = catalog.load_frame(ingest.new_batch_uri)

    both = pd.concat({"train": train_raw, "test": test_raw}, names=["split", "row"])
    data = validate_frame(both, schema, vcfg, source=f"{ingest.train_uri} + {ingest.test_uri}",
                          split="train+test", role="data")
    batch = validate_frame(batch_raw, schema, vcfg, source=ingest.new_batch_uri, split="new_batch",
                           role="batch")
    clean = {"train": _split_part(data.clean, "train"), "test": _split_part(data.clean, "test"),
             "new_batch": batch.clean.reset_index(drop=True)}
    if data.passed:
        # Training needs both classes in train itself, and a test split to score on.
        data.checks.append(_class_check(clean["train"][schema.target.column], schema, True,
                                        name="train_target_classes", where="train split: "))
        n_test = len(clean["test"])
        data.checks.append(Check("test_not_empty", _status(n_test == 0, True), n_test,
                                 "test split has no valid rows" if n_test == 0
                                 else f"{n_test} valid test rows"))
    clean = harmonise_dtypes(clean, schema)

    sections = {"train+test": data, "new_batch": batch}
    passed = data.passed and batch.passed
    invalid = pd.concat([data.invalid, batch.invalid], ignore_index=True)
    invalid_uri = catalog.save_text("invalid_rows", invalid_csv(invalid))
    report_uri = catalog.uri("validation_report")
    extra = {
        "run_id": run.run_id,
        "schema": schema.name,
        "limits": vcfg.model_dump(),
        "splits": {k: {"rows_valid": int(len(v))} for k, v in clean.items()},
    }
    catalog.save_text("validation_report", render_report(sections, passed=passed, extra=extra))
    if not passed:
        problems = "; ".join(filter(None, (data.failure_message("train+test"),
                                          batch.failure_message("new batch"))))
        raise ValidationFailed(f"validation failed: {problems} (report: {report_uri})",
                               source=ingest.snapshot_uri,
                               columns=sorted({c for s in sections.values() for f in s.failures
                                               for c in f.columns}))

    uris = {k: catalog.save_frame(f"validated_{k}", v) for k, v in clean.items()}
    hashes_uri = catalog.save_frame("train_row_hashes", lineage_frame(
        lineage_hashes(clean["train"], schema)))
    rows_checked = data.rows_checked
    return ValidationRecord(
        passed=True,
        report_uri=report_uri,
        invalid_uri=invalid_uri,
        train_uri=uris["train"],
        test_uri=uris["test"],
        new_batch_uri=uris["new_batch"],
        train_row_hashes_uri=hashes_uri,
        rows_checked=rows_checked,
        rows_invalid=data.rows_invalid,
        invalid_share=data.invalid_share,
        train_rows=len(clean["train"]),
        test_rows=len(clean["test"]),
        dataset_digest=frame_digest(clean["train"]),
    )


def _split_part(clean: pd.DataFrame, split: str) -> pd.DataFrame:
    if split not in clean.index.get_level_values(0):
        return clean.iloc[0:0].reset_index(drop=True)
    return clean.xs(split, level=0).reset_index(drop=True)
