"""File source: a CSV or Parquet file or glob, on a local disk or at an ``s3://`` URI.

The whole file is the training data and the new batch; its watermark is its content hash, so an
unchanged file is recognised by the next run. Analysts' verdicts that became training rows
(``netsec_tasks.feedback``) are kept apart, in ``<storage>/feedback/training_rows.parquet``, and
read after the file (``source.include_feedback``); the user's file is never edited. With no ``source.path`` the deterministic synthetic
sample (:mod:`netsec_tasks.sample`) is written on demand into the work dir, by the task that needs
it (it is the same bytes on every machine).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from netsec_tasks.config import PipelineConfig
from netsec_tasks.records import sha256_file
from netsec_tasks.sources import SourceRead
from netsec_tasks.state import SourceState
from netsec_tasks.storage import Storage, atomic_path, is_s3

log = logging.getLogger(__name__)

SAMPLE_ROWS = 5000
SAMPLE_SEED = 0
CHUNK_ROWS = 65_536  # rows per staged chunk


def sample_path(cfg: PipelineConfig) -> Path:
    return Path(cfg.workdir) / "sample" / "phishing_sample.csv"


def ensure_sample(cfg: PipelineConfig) -> Path:
    """``<workdir>/sample/phishing_sample.csv`` (the synthetic sample), written once, atomically.

    The sample has the UCI phishing schema: another data set needs ``source.path``."""
    from netsec_tasks.errors import ConfigError
    from netsec_tasks.sample import make_sample

    if cfg.dataset != "phishing":
        raise ConfigError(
            f"source.path is not set and the built-in synthetic sample has the phishing schema, "
            f"not the '{cfg.dataset}' one: set source.path (NETSEC_SOURCE__PATH or "
            f"--source-path) to the data set's file"
        )
    path = sample_path(cfg)
    if not path.is_file():
        with atomic_path(path) as tmp:
            make_sample(SAMPLE_ROWS, seed=SAMPLE_SEED).to_csv(tmp, index=False)
        log.info("no source.path configured: wrote the synthetic sample to %s", path)
    return path


def file_location(cfg: PipelineConfig) -> str:
    """The configured file, glob or ``s3://`` URI (the synthetic sample when none is set)."""
    if cfg.source.path is None:
        return str(sample_path(cfg))
    path = cfg.source.path
    if is_s3(path):
        return path
    if path.startswith("file://"):
        path = path[len("file://") :]
    return path if any(ch in path for ch in "*?[") else str(Path(path).resolve())


def source_name(cfg: PipelineConfig) -> str:
    return f"file:{file_location(cfg)}"


def _content_hash(location: str, storage: Storage) -> str:
    """Content hash of a file, of all files of a glob (names and contents), or of an S3 object."""
    from netsec_tasks.table_io import expand_paths

    if is_s3(location):
        return hashlib.sha256(storage.read_bytes(location)).hexdigest()
    paths = expand_paths(location)
    if len(paths) == 1:
        return sha256_file(paths[0])
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def frame_table(frame: pd.DataFrame) -> pa.Table:
    """A DataFrame as Arrow; an object column mixing numbers and text, or holding an integer
    beyond int64, is kept as text (validation judges its values)."""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        fixed = frame.copy()
        for c in fixed.columns:
            if fixed[c].dtype == object:
                fixed[c] = fixed[c].map(lambda v: None if pd.isna(v) else str(v))
        table = pa.Table.from_pandas(fixed, preserve_index=False)
    return table.replace_schema_metadata(None)


def read_file(
    cfg: PipelineConfig, storage: Storage, previous: SourceState | None, scratch: Path | None = None
) -> SourceRead:
    """Read the whole file (it is also the new batch). A CSV file without a header row is read
    with the schema's ``file_columns``.

    A local file (or glob) is read :data:`CHUNK_ROWS` rows at a time and each chunk staged as a
    Parquet part in ``scratch`` (this task's private directory), so memory holds one chunk
    whatever the file's size; without ``scratch``, or for an ``s3://`` object, it is read whole.
    """
    import pyarrow.parquet as pq

    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.sources import unify_schemas
    from netsec_tasks.sources.mongo import BOOKKEEPING_FIELDS
    from netsec_tasks.table_io import iter_table_chunks, read_csv_bytes, read_table

    if cfg.source.path is None:
        ensure_sample(cfg)
    location = file_location(cfg)
    options = load_schema(cfg.schema_path).read_options(labelled=True)
    if cfg.source.window_days is not None:
        log.warning(
            "source.window_days applies to MongoDB sources only (rows have no time in a "
            "file); %s is used whole",
            location,
        )
    parts: list[pa.Table | Path] = []
    schemas: list[pa.Schema] = []
    n = 0
    if scratch is not None and not is_s3(location):
        for frame in iter_table_chunks(location, chunk_rows=CHUNK_ROWS, **options):
            table = frame_table(frame.drop(columns=[c for c in BOOKKEEPING_FIELDS if c in frame.columns]))
            part = scratch / f"file-{len(parts):06d}.parquet"
            pq.write_table(table, part)
            parts.append(part)
            schemas.append(table.schema)
            n += table.num_rows
    else:
        if is_s3(location):
            frame = (
                read_csv_bytes(storage.read_bytes(location), source=location, **options)
                if options and location.lower().endswith(".csv")
                else storage.read_frame(location)
            )
        else:
            frame = read_table(location, **options)
        table = frame_table(frame.drop(columns=[c for c in BOOKKEEPING_FIELDS if c in frame.columns]))
        parts = [
            pa.Table.from_batches([b], schema=table.schema)
            for b in table.to_batches(max_chunksize=CHUNK_ROWS)
        ]
        schemas, n = [table.schema], table.num_rows
    watermark = _content_hash(location, storage)
    feedback = _feedback_rows(cfg, storage)
    if feedback is not None:
        table, digest = feedback
        parts.extend(
            pa.Table.from_batches([b], schema=table.schema)
            for b in table.to_batches(max_chunksize=CHUNK_ROWS)
        )
        schemas.append(table.schema)
        n += table.num_rows
        watermark = hashlib.sha256(f"{watermark}+feedback:{digest}".encode()).hexdigest()
    return SourceRead(
        source=f"file:{location}",
        schema=unify_schemas(schemas),
        previous_watermark=previous.watermark if previous else None,
        watermark=watermark,
        watermark_type="file",
        documents_read=n,
        parts=list(parts),
        new_mask=np.ones(n, bool),
        times=np.full(n, np.nan),
    )


def _feedback_rows(cfg: PipelineConfig, storage: Storage) -> tuple[pa.Table, str] | None:
    """(the verdicts' training rows without their provenance, their content hash), or None."""
    from netsec_tasks.feedback import feedback_rows_uri
    from netsec_tasks.sources.mongo import BOOKKEEPING_FIELDS

    uri = feedback_rows_uri(storage, cfg.registry.model_name)
    if not cfg.source.include_feedback or not storage.exists(uri):
        return None
    import io

    data = storage.read_bytes(uri)
    frame = pd.read_parquet(io.BytesIO(data))
    frame = frame.drop(columns=[c for c in BOOKKEEPING_FIELDS if c in frame.columns])
    log.info("file source: %d row(s) from analysts' verdicts (%s)", len(frame), uri)
    return frame_table(frame), hashlib.sha256(data).hexdigest()
