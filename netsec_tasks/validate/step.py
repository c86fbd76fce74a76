"""The validate step: every split of a run validated partition by partition (``BATCH_ROWS`` rows
at a time), the clean rows written to the run's storage, the report and quarantine beside them;
fails with ``ValidationFailed`` after the report is written."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from netsec_tasks.catalog import RunCatalog
from netsec_tasks.config import PipelineConfig, ValidationConfig
from netsec_tasks.dataset_schema import DatasetSchema, load_schema
from netsec_tasks.errors import ValidationFailed
from netsec_tasks.records import IngestRecord, RunContext, ValidationRecord
from netsec_tasks.split import lineage_frame, lineage_hashes
from netsec_tasks.storage import storage_for
from netsec_tasks.validate.checks import (
    INVALID_COLUMNS,
    Role,
    Tally,
    class_check,
    data_set_checks,
    scan_rows,
    status_of,
)
from netsec_tasks.validate.outcome import Check, FrameValidation
from netsec_tasks.validate.report import invalid_csv, render_report

if TYPE_CHECKING:  # pragma: no cover
    from netsec_tasks.engine import Engine
    from netsec_tasks.storage import Dataset, Partition


# Rows per batch when the step validates a split: a batch's copies (raw, typed, clean) stay near
# 100 MB whatever the split's size. Every check is computed from the batches' tallies together.
BATCH_ROWS = 100_000


@dataclass
class _SplitScan:
    """One split validated batch by batch: its tally, quarantined problems, and its clean rows
    as staged Parquet pieces (one per batch, per partition) with each piece's dtypes."""

    tally: Tally
    invalid: list[pd.DataFrame]
    pieces: list[list[str]]  # per partition: the URIs of its staged batches, in order
    dtypes: list[dict[str, str]]  # per staged batch
    row_hashes: list[np.ndarray]  # lineage hashes of the clean rows (features + target)

    def __add__(self, other: _SplitScan) -> _SplitScan:
        return _SplitScan(
            self.tally + other.tally,
            self.invalid + other.invalid,
            self.pieces + other.pieces,
            self.dtypes + other.dtypes,
            self.row_hashes + other.row_hashes,
        )


def scan_partition(
    cfg: PipelineConfig,
    schema: DatasetSchema,
    split: str,
    stage: str,
    batch_rows: int,
    part: Partition,
) -> _SplitScan:
    """Validate one partition of a split, :data:`BATCH_ROWS` rows at a time (the per-partition
    step, run here or on a Dask worker): its tally and problems (rows numbered by their position
    in the split), and its clean rows staged under ``stage`` (a URI: this task's scratch, or
    storage when the partition runs on a worker), one object per batch."""
    from netsec_tasks.partitions import iter_batches
    from netsec_tasks.storage import join_uri

    storage = storage_for(cfg)
    out = _SplitScan(Tally(), [], [[]], [], [])
    offset = part.offset
    for i, table in enumerate(iter_batches(storage, part, batch_rows)):
        frame = table.to_pandas()
        frame.index = pd.RangeIndex(offset, offset + len(frame))  # rows keep their split position
        offset += len(frame)
        tally, clean, invalid = scan_rows(frame, schema, cfg.validation, split=split)
        del frame, table
        out.tally = out.tally + tally
        if len(invalid):
            out.invalid.append(invalid)
        clean = clean.reset_index(drop=True)
        piece = join_uri(stage, split, f"p{part.index:05d}-b{i:05d}.parquet")
        storage.write_frame(piece, clean)
        out.pieces[0].append(piece)
        out.dtypes.append({c: str(t) for c, t in clean.dtypes.items()})
        if split == "train" and len(clean):
            out.row_hashes.append(lineage_hashes(clean, schema))
    return out


def _harmonised(scans: Iterable[_SplitScan], schema: DatasetSchema) -> dict[str, str]:
    """One dtype per int/bool column for every split and batch (:func:`harmonise_dtypes`'s rule:
    float64, or object for bool, when any batch needed NaN)."""
    kinds: dict[str, set[str]] = {}
    for scan in scans:
        for dtypes in scan.dtypes:
            for col, kind in dtypes.items():
                kinds.setdefault(col, set()).add(kind)
    out = {}
    for col, spec in schema.columns.items():
        if spec.dtype in ("int", "bool") and len(kinds.get(col, ())) > 1:
            out[col] = "float64" if spec.dtype == "int" else "object"
    return out


def write_partition(
    cfg: PipelineConfig, dtypes: dict[str, str], digest: bool, job: tuple[list[str], str]
) -> tuple[int, np.ndarray | None, str | None]:
    """Write one validated partition (the per-partition step's second half): its staged pieces,
    in the harmonised ``dtypes``, streamed to ``target``; the pieces are removed. Returns (rows,
    the rows' ``hash_pandas_object`` values when ``digest`` (the data set digest is computed from
    them in order, as one frame's would be), the digest header: columns and dtypes)."""
    import contextlib

    import pyarrow as pa

    from netsec_tasks.partitions import loading
    from netsec_tasks.storage import Partition

    pieces, target = job
    storage = storage_for(cfg)
    rows, hashes, header = 0, [], None
    with contextlib.ExitStack() as stack:
        stack.enter_context(loading(Partition(target, 0, 0, 0)))
        writer = arrow_schema = None
        for piece in pieces:
            frame = storage.read_frame(piece)
            cast = {c: t for c, t in dtypes.items() if c in frame.columns and str(frame[c].dtype) != t}
            if cast:
                frame = frame.astype(cast)
            if digest:
                header = header or ",".join(f"{c}:{frame[c].dtype}" for c in frame.columns)
                hashes.append(pd.util.hash_pandas_object(frame, index=False).to_numpy())
            if writer is None:  # the first piece fixes the schema (every piece has its dtypes now)
                arrow_schema = pa.Schema.from_pandas(frame, preserve_index=False)
                writer = stack.enter_context(storage.parquet_writer(target, arrow_schema))
            writer.write_table(pa.Table.from_pandas(frame, schema=arrow_schema, preserve_index=False))
            rows += len(frame)
    for piece in pieces:
        storage.delete(piece)
    values = np.concatenate(hashes) if hashes else (np.zeros(0, np.uint64) if digest else None)
    return rows, values, header


class _Digest:
    """:func:`netsec_tasks.table_io.frame_digest` of the concatenated batches, batch by batch."""

    def __init__(self):
        import hashlib

        self.h = hashlib.sha256()
        self.started = False

    def add(self, header: str | None, values: np.ndarray | None) -> None:
        if header is None or values is None:
            return
        if not self.started:
            self.h.update(header.encode())
            self.started = True
        self.h.update(np.ascontiguousarray(values).tobytes())

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _scan_split(
    engine: Engine, cfg: PipelineConfig, uri: str, split: str, schema: DatasetSchema, stage: str
) -> tuple[Dataset, _SplitScan]:
    """Every partition of the split ``uri`` validated by :func:`scan_partition` on ``engine``."""
    import functools

    from netsec_tasks.storage import open_dataset

    data = open_dataset(storage_for(cfg), uri)
    scan = functools.partial(scan_partition, cfg, schema, split, stage, BATCH_ROWS)
    scans = engine.map(scan, list(data.partitions), what=f"validate: check {split}")
    total = _SplitScan(Tally(), [], [], [], [])
    for one in scans:
        total = total + one
    return data, total


def _write_split(
    engine: Engine,
    cfg: PipelineConfig,
    name: str,
    uri: str,
    source: Dataset,
    scan: _SplitScan,
    dtypes: dict[str, str],
    digest: _Digest | None = None,
) -> str:
    """Write the split's validated partitions (one per source partition) to ``uri``: one file,
    as before, when the source was one; else a partitioned data set, manifest last."""
    import functools

    from netsec_tasks.partitions import part_name, write_manifest
    from netsec_tasks.storage import join_uri

    targets = [join_uri(uri, part_name(i)) for i in range(len(scan.pieces))] if source.partitioned else [uri]
    write = functools.partial(write_partition, cfg, dtypes, digest is not None)
    results = engine.map(write, list(zip(scan.pieces, targets)), what=f"validate: write {name}")
    if digest is not None:
        for _, values, header in results:
            digest.add(header, values)
    if source.partitioned:
        columns = list(scan.dtypes[0]) if scan.dtypes else []
        write_manifest(
            storage_for(cfg),
            uri,
            [{"name": part_name(i), "rows": rows, "digest": None} for i, (rows, _, _) in enumerate(results)],
            columns,
        )
    return uri


def validate(
    cfg: PipelineConfig, run: RunContext, ingest: IngestRecord, *, schema: DatasetSchema | None = None
) -> ValidationRecord:
    """Validate train+test as one data set and the new batch on its own; write typed Parquet.

    Train and test are checked together (one invalid share, one duplicate count, one column
    null share) so a small test split cannot fail on its own; the train split must still hold
    both classes after quarantine. Raises ValidationFailed (after writing the report and
    invalid.csv) when a data-set level check fails.

    Memory stays flat with the data: each split is read and checked partition by partition
    (:func:`scan_partition`; on Dask workers with ``training.engine: dask``) in batches of
    :data:`BATCH_ROWS` rows, the checks are computed from the batches' tallies together, and the
    clean rows are staged (this task's scratch directory; storage when workers write them), then,
    once every check passed and the dtypes are harmonised across splits, written to storage one
    partition per input partition (:func:`write_partition`): a split that was one file stays one.
    """
    import shutil
    import tempfile

    from netsec_tasks.engine import engine_for
    from netsec_tasks.storage import path_to_uri, scratch_dir

    schema = schema or load_schema(cfg.schema_path)
    vcfg = cfg.validation
    catalog = RunCatalog.of(cfg, run)
    engine = engine_for(cfg)
    scratch = Path(tempfile.mkdtemp(prefix="netsec-validate-", dir=scratch_dir(cfg)))
    # Clean rows wait here until every check passed: this task's scratch, or storage (under the
    # run) when workers, who share no disk with the task, write them.
    stage = path_to_uri(scratch) if engine.client is None else catalog.run.step_uri("validate", "_staging")
    sources: dict[str, Dataset] = {}
    scans: dict[str, _SplitScan] = {}
    try:
        for split, uri in (
            ("train", ingest.train_uri),
            ("test", ingest.test_uri),
            ("new_batch", ingest.new_batch_uri),
        ):
            sources[split], scans[split] = _scan_split(engine, cfg, uri, split, schema, stage)
        data_tally = scans["train"].tally + scans["test"].tally
        data = _section(
            data_tally,
            scans["train"].invalid + scans["test"].invalid,
            schema,
            vcfg,
            source=f"{ingest.train_uri} + {ingest.test_uri}",
            role="data",
        )
        batch = _section(
            scans["new_batch"].tally,
            scans["new_batch"].invalid,
            schema,
            vcfg,
            source=ingest.new_batch_uri,
            role="batch",
        )
        valid = {k: v.tally.rows_valid for k, v in scans.items()}
        if data.passed:
            # Training needs both classes in train itself, and a test split to score on.
            data.checks.append(
                class_check(
                    scans["train"].tally.classes,
                    schema,
                    True,
                    name="train_target_classes",
                    where="train split: ",
                )
            )
            n_test = valid["test"]
            data.checks.append(
                Check(
                    "test_not_empty",
                    status_of(n_test == 0, True),
                    n_test,
                    "test split has no valid rows" if n_test == 0 else f"{n_test} valid test rows",
                )
            )

        sections = {"train+test": data, "new_batch": batch}
        passed = data.passed and batch.passed
        invalid = pd.concat([data.invalid, batch.invalid], ignore_index=True)
        invalid_uri = catalog.save_text("invalid_rows", invalid_csv(invalid))
        report_uri = catalog.uri("validation_report")
        extra = {
            "run_id": run.run_id,
            "schema": schema.name,
            "limits": vcfg.model_dump(),
            "splits": {k: {"rows_valid": int(v)} for k, v in valid.items()},
        }
        catalog.save_text("validation_report", render_report(sections, passed=passed, extra=extra))
        if not passed:
            problems = "; ".join(
                filter(None, (data.failure_message("train+test"), batch.failure_message("new batch")))
            )
            raise ValidationFailed(
                f"validation failed: {problems} (report: {report_uri})",
                source=ingest.snapshot_uri,
                columns=sorted({c for s in sections.values() for f in s.failures for c in f.columns}),
            )

        dtypes = _harmonised(scans.values(), schema)
        digest = _Digest()
        uris = {
            k: _write_split(
                engine,
                cfg,
                k,
                catalog.uri(f"validated_{k}"),
                sources[k],
                scan,
                dtypes,
                digest=digest if k == "train" else None,
            )
            for k, scan in scans.items()
        }
        train_hashes = (
            np.concatenate(scans["train"].row_hashes)
            if scans["train"].row_hashes
            else np.zeros(0, dtype=np.uint64)
        )
        hashes_uri = catalog.save_frame("train_row_hashes", lineage_frame(train_hashes))
    except BaseException:
        if engine.client is not None:  # storage holds what the workers staged
            _remove_staged(catalog, scans.values())
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ValidationRecord(
        passed=True,
        report_uri=report_uri,
        invalid_uri=invalid_uri,
        train_uri=uris["train"],
        test_uri=uris["test"],
        new_batch_uri=uris["new_batch"],
        train_row_hashes_uri=hashes_uri,
        rows_checked=data.rows_checked,
        rows_invalid=data.rows_invalid,
        invalid_share=data.invalid_share,
        train_rows=valid["train"],
        test_rows=valid["test"],
        dataset_digest=digest.hexdigest(),
    )


def _remove_staged(catalog: RunCatalog, scans: Iterable[_SplitScan]) -> None:
    """Remove staged pieces a failed run left (a written partition removed its own)."""
    for scan in scans:
        for pieces in scan.pieces:
            for piece in pieces:
                catalog.storage.delete(piece)


def _section(
    tally: Tally,
    invalid: list[pd.DataFrame],
    schema: DatasetSchema,
    vcfg: ValidationConfig,
    *,
    source: str,
    role: Role,
) -> FrameValidation:
    """The FrameValidation of a data set validated in batches (its clean rows are not kept)."""
    problems = (
        pd.concat(invalid, ignore_index=True).sort_values(
            ["split", "row", "column"], kind="stable", ignore_index=True
        )
        if invalid
        else pd.DataFrame({c: pd.Series(dtype=object) for c in INVALID_COLUMNS})
    )
    return FrameValidation(
        source=source,
        clean=pd.DataFrame(),
        invalid=problems,
        checks=data_set_checks(tally, schema, vcfg, role=role, require_target=True),
        rows_checked=tally.rows,
        rows_invalid=tally.rows_invalid,
        labels=tally.label_counts,
        valid_rows=tally.rows_valid,
    )
