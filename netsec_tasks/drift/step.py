"""The drift step (``check_drift``: new batch vs the Production model's training data) and
``netsec drift REF CUR`` (``drift_between_files``), with the loading of both sides.

The reference is the Production model version's ``netsec.train_uri`` (its validated training
split, in storage); versions registered before the storage hand-off point at an MLflow artifact
(``runs:/...``), which still loads.

Memory stays flat with the data: every test compares one column at a time, so the step reads the
Parquet splits in storage one column at a time (:class:`ParquetColumns`) instead of loading the
reference and the batch whole (about 1 GB at 1M rows, measured by bench/bench_scale.py).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from netsec_tasks.catalog import RunCatalog
from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import ColumnSpec, DatasetSchema, load_schema
from netsec_tasks.drift.report import render_html, render_yaml
from netsec_tasks.drift.stats import ColumnDrift, DriftResult, column_drift, detect_drift
from netsec_tasks.errors import DataError, SourceUnavailable, ValidationFailed
from netsec_tasks.records import DriftRecord, RunContext, ValidationRecord
from netsec_tasks.storage import Storage, atomic_write, is_local, is_s3
from netsec_tasks.table_io import read_table

log = logging.getLogger(__name__)


def _read_local(path: str | os.PathLike, what: str, schema: DatasetSchema | None = None) -> pd.DataFrame:
    """A file, a glob, or a directory holding the data (train.parquet preferred), or serving's
    prediction log (its directory or ``.jsonl`` files: the served features, one row each).
    ``schema``: CSV files without a header row are read with its ``file_columns``."""
    from netsec_tasks.prediction_log import is_prediction_log, read_prediction_log

    path = str(path)
    if path.startswith("file://"):
        path = path[len("file://") :]
    p = Path(path)
    if is_prediction_log(p):
        try:
            return read_prediction_log(p, outputs=False)
        except DataError as exc:
            raise DataError(f"{what}: {exc}", source=None) from None
    if p.is_dir():
        preferred = sorted(p.rglob("train.parquet"))
        files = preferred or sorted(p.rglob("*.parquet")) or sorted(p.rglob("*.csv"))
        if not files:
            raise DataError(f"{what}: directory holds no Parquet or CSV file", source=path)
        return pd.concat([_read_local(f, what, schema) for f in files], ignore_index=True)
    try:  # the one reader for CSV and Parquet (layout checked, rename, machine-safe columns)
        return read_table(path, **(schema.read_options() if schema is not None else {}))
    except DataError as exc:
        raise DataError(f"{what}: {exc}", source=None) from None


class ParquetColumns:
    """A Parquet object or partitioned data set in storage (:mod:`netsec_tasks.partitions`),
    seen as a frame whose columns are read when indexed.

    Offers what :func:`netsec_tasks.drift.stats.detect_drift` uses of a frame: ``columns``,
    ``len()`` (every row of the data set), ``frame[name]`` (one column as a Series, read then,
    one partition at a time), and ``empty``. With ``max_rows`` and more rows than that, a column
    is the same uniform sample of ``max_rows`` rows whichever column is read
    (:func:`~netsec_tasks.partitions.sample_rows`), so a test's memory stays bounded whatever the
    data set's size.
    """

    def __init__(self, storage: Storage, uri: str, max_rows: int | None = None):
        from netsec_tasks.partitions import sample_rows
        from netsec_tasks.storage import open_dataset

        self.storage, self.uri = storage, uri
        self.data = open_dataset(storage, uri)
        with storage.parquet_file(self.data.partitions[0].uri) as pf:
            self.columns = list(pf.schema_arrow.names)
        self._rows = self.data.rows
        self.sampled = max_rows is not None and self._rows > max_rows
        self._keep = sample_rows(self._rows, max_rows) if max_rows is not None and self.sampled else None

    def __len__(self) -> int:
        return self._rows

    @property
    def empty(self) -> bool:
        return self._rows == 0 or not self.columns

    def __getitem__(self, name: str) -> pd.Series:
        from netsec_tasks.partitions import read_column

        if name not in self.columns:
            raise KeyError(name)
        return read_column(self.storage, self.data, name, rows=self._keep)


def stored_column_drift(
    cfg: PipelineConfig, reference_uri: str, current_uri: str, item: tuple[str, ColumnSpec]
) -> ColumnDrift:
    """One column's drift test between two data sets in storage (run here or on a Dask worker:
    it reads that one column of each, or of its sample of ``drift.max_rows`` rows, whatever
    their partitions)."""
    from netsec_tasks.storage import storage_for

    storage = storage_for(cfg)
    name, spec = item
    most = cfg.drift.max_rows
    return column_drift(
        name,
        spec,
        ParquetColumns(storage, reference_uri, most),
        ParquetColumns(storage, current_uri, most),
        cfg.drift,
    )


def _is_parquet(uri: str) -> bool:
    return uri.lower().endswith((".parquet", ".pq"))


def load_reference(
    uri: str, *, tracking_uri: str | None = None, storage: Storage | None = None, max_rows: int | None = None
) -> pd.DataFrame | ParquetColumns:
    """Reference data from a local path, a ``file://`` or ``s3://`` URI in storage, or an MLflow
    artifact URI (``runs:/...``: models registered before the storage hand-off). A Parquet
    object in storage comes as :class:`ParquetColumns` (read one column, or its sample of
    ``max_rows`` rows, at a time)."""
    if (
        storage is not None
        and _is_parquet(uri)
        and (is_s3(uri) or uri.startswith("file://"))
        and storage.exists(uri)
    ):
        return ParquetColumns(storage, uri, max_rows)
    if is_s3(uri) and storage is not None:
        return storage.read_frame(uri)
    if is_local(uri):
        return _read_local(uri, "reference data")
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from netsec_tasks.outages import is_unreachable
    from netsec_tasks.outages import reason as unreachable_reason

    tmp = tempfile.mkdtemp(prefix="netsec-reference-")
    try:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri
            )
        except Exception as exc:
            # MLflow wraps a refused connection in MlflowException too: decide by the chain.
            if is_unreachable(exc):
                raise SourceUnavailable(
                    f"{uri}: cannot reach the artifact store ({tracking_uri}): {unreachable_reason(exc)}"
                ) from None
            if isinstance(exc, (MlflowException, OSError)):
                raise DataError(
                    f"cannot download the Production model's reference data: {exc}; "
                    f"check the model version tag netsec.reference_uri",
                    source=uri,
                ) from None
            raise
        return _read_local(local, f"reference data {uri}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- pipeline step


def _report_texts(
    result: DriftResult | None,
    *,
    reference: str | None,
    current: str,
    reason: str,
    extra: dict[str, Any],
    excluded: dict[str, dict] | None = None,
    not_judged: str | None = None,
) -> tuple[str, str]:
    """(YAML, HTML) of one comparison; ``excluded``: rows left out, per input, with reasons;
    ``not_judged``: why no verdict can be given (the headline of both, before any figure)."""
    doc_extra: dict[str, Any] = {
        **{k: extra[k] for k in ("verdict", "not_judged") if k in extra},  # before any figure
        "reference_uri": reference,
        "current_uri": current,
        **({"reason": reason} if result is None or not_judged else {}),
        **extra,
    }
    return (
        render_yaml(result, extra=doc_extra),
        render_html(
            result,
            reference=reference,
            current=current,
            reason=reason,
            excluded=excluded,
            not_judged=not_judged,
        ),
    )


def _write_reports(catalog: RunCatalog, result: DriftResult | None, **kw: Any) -> tuple[str, str]:
    yaml_text, html_text = _report_texts(result, **kw)
    return catalog.save_text("drift_report", yaml_text), catalog.save_text("drift_html", html_text)


def _write_local_reports(out_dir: Path, result: DriftResult | None, **kw: Any) -> tuple[Path, Path]:
    yaml_text, html_text = _report_texts(result, **kw)
    return atomic_write(out_dir / "drift_report.yaml", yaml_text), atomic_write(
        out_dir / "drift_report.html", html_text
    )


def _record(
    result: DriftResult | None,
    *,
    reference: str | None,
    current: str,
    reason: str,
    paths: tuple[Any, Any],
    has_reference: bool,
    reference_version: str | None = None,
    current_rows: int | None = None,
    threshold: float | None = None,
) -> DriftRecord:
    return DriftRecord(
        drift_detected=bool(result is not None and result.dataset_drift),
        has_reference=has_reference,
        reference_uri=reference,
        current_uri=current,
        reference_version=reference_version,
        current_rows=result.n_current if result else current_rows,
        drift_share=float(result.drift_share) if result else 0.0,
        drift_share_threshold=result.drift_share_threshold if result else threshold,
        drifted_columns=result.drifted_columns if result else [],
        columns_tested=result.columns_tested if result else 0,
        report_uri=str(paths[0]),
        html_uri=str(paths[1]),
        reason=reason,
    )


def check_drift(
    cfg: PipelineConfig,
    run: RunContext,
    validation: ValidationRecord,
    *,
    reference_uri: str | None,
    schema: DatasetSchema | None = None,
    reference_version: str | None = None,
) -> DriftRecord:
    """Compare the validated new batch with the Production model's training data
    (``reference_uri``; ``reference_version`` names that model version in the record)."""
    schema = schema or load_schema(cfg.schema_path)
    catalog = RunCatalog.of(cfg, run)
    current_uri = validation.new_batch_uri
    extra = {"run_id": run.run_id}
    threshold = cfg.drift.drift_share

    def reported(result: DriftResult | None, reason: str, **record: Any) -> DriftRecord:
        """Write the run's reports for this outcome; its record points at them."""
        paths = _write_reports(
            catalog, result, reference=reference_uri, current=current_uri, reason=reason, extra=extra
        )
        return _record(
            result,
            reference=reference_uri,
            current=current_uri,
            reason=reason,
            paths=paths,
            has_reference=reference_uri is not None,
            reference_version=reference_version if reference_uri is not None else None,
            **record,
        )

    if reference_uri is None:
        return reported(
            None, "no production model: nothing to compare against (first run)", threshold=threshold
        )
    most = cfg.drift.max_rows
    current = (
        ParquetColumns(catalog.storage, current_uri, most)
        if _is_parquet(current_uri)
        else catalog.load_frame(current_uri)
    )
    if current.empty:
        return reported(
            None, "new batch is empty: no new rows to compare", current_rows=0, threshold=threshold
        )
    reference = load_reference(
        reference_uri, tracking_uri=cfg.registry.tracking_uri, storage=catalog.storage, max_rows=most
    )
    for side, data in (("reference", reference), ("new batch", current)):
        if isinstance(data, ParquetColumns) and data.sampled:
            log.info(
                "drift: the %s's %d rows are compared by a uniform sample of %d (drift.max_rows)",
                side,
                len(data),
                most,
            )
    columns = None
    if isinstance(reference, ParquetColumns) and isinstance(current, ParquetColumns):
        # One task per column (a column of each side in memory at a time); on the workers with
        # training.engine=dask, here otherwise.
        from netsec_tasks.engine import engine_for

        columns = engine_for(cfg).map(
            functools.partial(stored_column_drift, cfg, reference_uri, current_uri),
            list(schema.columns.items()),
            what="drift",
            unit="columns",
        )
    result = detect_drift(reference, current, schema, cfg.drift, columns=columns)
    return reported(result, result.reason())


# Checks that say something about the rows, not about whether two files can be compared: for
# drift they are reported (the excluded rows), never a reason to refuse.
_ROW_LEVEL_CHECKS = {
    "invalid_share",
    "column_null_share",
    "min_rows",
    "not_empty",
    "target_classes",
    "target_labels",
}
MAX_EXCLUDED_EXAMPLES = 20


def checked_rows(
    raw: pd.DataFrame, schema: DatasetSchema, cfg: PipelineConfig, *, source: str, what: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows of ``raw`` that pass the input contract (``validate_frame``), and a summary of
    the excluded ones: how many, how many per reason, the first few problems (row = 0-based
    position in the file or in the prediction log). Raises ValidationFailed when the frame
    cannot be compared at all."""
    from netsec_tasks.validate import validate_frame

    checked = validate_frame(
        raw, schema, cfg.validation, source=source, split=what, role="batch", require_target=False
    )
    fatal = [c for c in checked.failures if c.name not in _ROW_LEVEL_CHECKS]
    if fatal:
        raise ValidationFailed(
            f"{what} file cannot be compared: " + "; ".join(c.details for c in fatal), source=source
        )
    invalid = checked.invalid
    per_reason = (
        invalid.drop_duplicates(["row", "reason"])["reason"].value_counts()
        if len(invalid)
        else pd.Series(dtype=int)
    )
    summary: dict[str, Any] = {
        "rows_checked": int(checked.rows_checked),
        "rows_excluded": int(checked.rows_invalid),
        "reasons": {str(k): int(v) for k, v in per_reason.items()},
        "examples": [
            {"row": int(r.row), "column": str(r.column), "value": str(r.value), "reason": str(r.reason)}
            for r in invalid.head(MAX_EXCLUDED_EXAMPLES).itertuples(index=False)
        ],
    }
    if checked.rows_checked and checked.clean.empty:
        raise ValidationFailed(
            f"{what} file: all {checked.rows_checked} rows break the input "
            "contract, nothing left to compare: "
            + "; ".join(f"{k} ({v} rows)" for k, v in summary["reasons"].items()),
            source=source,
        )
    return checked.clean, summary


def drift_between_files(
    ref_path: str | os.PathLike,
    cur_path: str | os.PathLike,
    cfg: PipelineConfig,
    out_dir: str | os.PathLike,
    *,
    schema: DatasetSchema | None = None,
) -> DriftRecord:
    """``netsec drift REF CUR``: validate both files against the schema, then compare them.

    Rows that break the input contract are left out of the comparison (a broken row says
    nothing about the distribution) and reported, with their reasons, under ``excluded`` in the
    YAML and in the HTML report. When a side leaves out more than
    ``validation.max_invalid_share`` of its rows, the rest is still compared but the comparison
    is **not judged**: the rows left are not the data that arrived, so neither "drift" nor "no
    drift" can be said. The record's ``judged`` is False and ``not_judged`` says why, and the
    YAML's and the HTML report's headline say it before any drift figure (``netsec drift`` prints
    it first and exits 4). A file that cannot be compared at all (a missing feature column, an
    unknown column, no valid row left) raises ValidationFailed.
    """
    schema = schema or load_schema(cfg.schema_path)
    frames, excluded = {}, {}
    for what, path in (("reference", ref_path), ("current", cur_path)):
        frames[what], excluded[what] = checked_rows(
            _read_local(path, f"{what} file", schema), schema, cfg, source=str(path), what=what
        )
    not_judged = excluded_verdict(excluded, cfg.validation.max_invalid_share)
    result = detect_drift(frames["reference"], frames["current"], schema, cfg.drift)
    reason = (
        result.reason()
        if not_judged is None
        else f"not judged: {not_judged}; on the rows left: {result.reason()}"
    )
    paths = _write_local_reports(
        Path(out_dir),
        result,
        reference=str(ref_path),
        current=str(cur_path),
        reason=reason,
        extra={
            **({"verdict": "not judged", "not_judged": not_judged} if not_judged else {"verdict": "judged"}),
            "excluded": excluded,
        },
        excluded=excluded,
        not_judged=not_judged,
    )
    record = _record(
        result, reference=str(ref_path), current=str(cur_path), reason=reason, paths=paths, has_reference=True
    )
    return record.model_copy(update={"judged": not_judged is None, "not_judged": not_judged})


def excluded_verdict(excluded: dict[str, dict[str, Any]], max_share: float) -> str | None:
    """Why a comparison cannot be judged (a side left out more than ``max_share`` of its rows
    as breaking the input contract), or None. ``excluded``: ``checked_rows`` summaries by side."""
    over = []
    for what, info in excluded.items():
        n, k = int(info.get("rows_checked") or 0), int(info.get("rows_excluded") or 0)
        if n and k / n > max_share:
            top = max(info.get("reasons", {}).items(), key=lambda kv: kv[1], default=None)
            columns = list(dict.fromkeys(x["column"] for x in info.get("examples", [])))[:3]
            over.append(
                f"{k:,} of {n:,} {what} rows ({k / n:.0%}) break the input contract"
                + (f" in {', '.join(columns)}" if columns else "")
                + (f" (most: {top[0]})" if top else "")
            )
    if not over:
        return None
    return (
        "; ".join(over)
        + f", more than validation.max_invalid_share={max_share:.0%}: the rows left are not the data "
        "that arrived"
    )
