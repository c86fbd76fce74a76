"""The immutable snapshot a run trains on: ``<storage>/snapshots/<sha256>.parquet``.

A snapshot holds the rows of the training window in a stable order: for a file source, the
file's rows; for MongoDB, the last committed snapshot's rows (minus those that fell out of
``source.window_days``) followed by the documents read after the watermark. It is named by the
digest of its content (:func:`content_digest`), written once and reused: a run on unchanged data
points at the same object. Column :data:`TIME_COLUMN` keeps each row's watermark time so a later
run can apply the window without reading the source again; it is not data and is dropped from
the splits.

While writing, :func:`build` also streams out the run's new batch and collects, per row, what the
split needs (content hash, label code, occurrence hash), so the snapshot is read once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.errors import DataError
from netsec_tasks.partitions import DatasetWriter, iter_batches
from netsec_tasks.sources import SourceRead, conform, unify_schemas
from netsec_tasks.split import row_hashes
from netsec_tasks.storage import Storage, open_dataset, partitions_digest

log = logging.getLogger(__name__)

TIME_COLUMN = "_netsec_time"  # watermark time of the row, epoch seconds (NaN: none)
BATCH_ROWS = 65_536
_DAY_SECONDS = 86_400.0


# --------------------------------------------------------------------------- digest


def content_digest(schema: pa.Schema, hashes: list[np.ndarray]) -> str:
    """sha256 over the data columns' names and types and every row's content hash, in order."""
    h = hashlib.sha256()
    h.update(",".join(f"{f.name}:{f.type}" for f in schema if f.name != TIME_COLUMN).encode())
    for chunk in hashes:
        h.update(np.ascontiguousarray(chunk, dtype=np.uint64).tobytes())
    return h.hexdigest()


def data_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if f.name != TIME_COLUMN]


def snapshot_digest(storage: Storage, uri: str) -> str:
    """Recompute a stored snapshot's digest from its content (streamed), to verify its name:
    a partitioned snapshot's is the hash of its partitions' digests
    (:func:`netsec_tasks.partitions.partitions_digest`)."""
    data = open_dataset(storage, uri)
    digests = []
    for part in data.partitions:
        hashes = []
        schema = None
        for table in iter_batches(storage, part, BATCH_ROWS):
            schema = table.schema
            frame = table.drop_columns([TIME_COLUMN]).to_pandas()
            hashes.append(row_hashes(frame, list(frame.columns)))
        assert schema is not None
        digests.append(content_digest(schema, hashes))
    return digests[0] if not data.partitioned else partitions_digest(digests)


# --------------------------------------------------------------------------- build


@dataclass
class Snapshot:
    """A written snapshot and the per-row arrays the split needs."""

    uri: str
    local_parts: list[Path]  # the task's private copy (its partitions in order), for the split pass
    sha256: str
    schema: pa.Schema
    rows: int
    new_rows: int
    rows_reused: int
    content_hashes: np.ndarray  # features + target (identical examples share one)
    label_codes: np.ndarray  # int32 codes into ``labels``
    labels: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Collector:
    """Per-row hashes and label codes, chunk by chunk."""

    def __init__(self, hash_columns: list[str], target: str):
        self.hash_columns = hash_columns
        self.target = target
        self.content: list[np.ndarray] = []
        self.all_columns: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.labels: dict = {}

    def add(self, table: pa.Table) -> np.ndarray:
        """Collect ``table``'s rows; returns their all-column hashes (the snapshot's digest)."""
        frame = table.drop_columns([TIME_COLUMN]).to_pandas()
        self.all_columns.append(row_hashes(frame, list(frame.columns)))
        self.content.append(row_hashes(frame, [c for c in self.hash_columns if c in frame.columns]))
        values = frame[self.target].tolist()
        codes = np.empty(len(values), dtype=np.int32)
        for i, v in enumerate(values):
            key = None if v is None or (isinstance(v, float) and np.isnan(v)) else v
            codes[i] = self.labels.setdefault(key, len(self.labels))
        self.codes.append(codes)
        return self.all_columns[-1]


def _window_cutoff(
    times: list[np.ndarray], window_days: float | None, source: str, field_name: str | None
) -> float | None:
    if window_days is None:
        return None
    finite = [t[~np.isnan(t)] for t in times if len(t)]
    newest = max((float(t.max()) for t in finite if len(t)), default=None)
    if newest is None:
        from netsec_tasks.errors import ConfigError

        raise ConfigError(
            f"source.window_days needs a time watermark, but {field_name or '_id'} "
            f"of {source} holds no dates; use ObjectId _ids or a datetime "
            "watermark_field, or unset window_days"
        )
    return newest - window_days * _DAY_SECONDS


def build(
    storage: Storage,
    read: SourceRead,
    schema: DatasetSchema,
    *,
    scratch: Path,
    new_batch_uri: str,
    window_days: float | None,
    base_schema: pa.Schema | None = None,
    partition_rows: int | None = None,
) -> Snapshot:
    """Write the snapshot (base rows in the window + the source's rows) and the new batch.

    Both stream into partitions of ``partition_rows`` rows (:mod:`netsec_tasks.partitions`;
    None: never partitioned): a snapshot of more rows is a partitioned data set named by the hash
    of its partitions' digests. Raises DataError when no row is left (an empty source, or
    nothing within the window).
    """
    started = time.perf_counter()
    base_uri = read.base_snapshot_uri
    schemas = [read.schema] + ([base_schema] if base_schema is not None else [])
    out_schema = unify_schemas([s for s in schemas if s is not None])
    if TIME_COLUMN not in out_schema.names:
        out_schema = out_schema.append(pa.field(TIME_COLUMN, pa.float64()))
    batch_schema = pa.schema([f for f in out_schema if f.name != TIME_COLUMN])
    target = schema.target.column
    if target not in out_schema.names:
        names = data_columns(out_schema)
        raise DataError(
            f"target column {target!r} is missing (found: {', '.join(names[:12])}"
            f"{'...' if len(names) > 12 else ''}); the split needs it",
            source=read.source,
            columns=[target],
        )
    hash_columns = [c for c in schema.features + [target] if c in out_schema.names]
    collect = _Collector(hash_columns, target)

    base = open_dataset(storage, base_uri) if base_uri is not None else None
    base_times = []
    if base is not None:
        for part in base.partitions:
            with storage.parquet_file(part.uri) as pf:
                base_times.append(pf.read(columns=[TIME_COLUMN]).column(0).to_numpy(zero_copy_only=False))
    cutoff = _window_cutoff(
        base_times + [read.times],
        window_days,
        read.source,
        None if read.watermark_type == "objectid" else read.watermark_type,
    )
    del base_times

    size = partition_rows or (1 << 62)
    rows = new_rows = reused = 0
    snap_w = DatasetWriter(
        storage,
        None,
        out_schema,
        partition_rows=size,
        scratch=scratch / "snapshot",
        digest=content_digest,
        keep_local=True,
    )
    new_w = DatasetWriter(
        storage, new_batch_uri, batch_schema, partition_rows=size, scratch=scratch / "new_batch"
    )
    with snap_w, new_w:

        def keep(table: pa.Table, times: np.ndarray) -> pa.Table:
            if cutoff is None:
                return table
            with np.errstate(invalid="ignore"):
                mask = times >= cutoff
            return table if mask.all() else table.filter(pa.array(mask))

        for part in base.partitions if base is not None else ():
            for table in iter_batches(storage, part, BATCH_ROWS):
                table = conform(table, out_schema)
                table = keep(table, table.column(TIME_COLUMN).to_numpy(zero_copy_only=False))
                if table.num_rows:
                    snap_w.write_table(table, collect.add(table))
                    rows += table.num_rows
                    reused += table.num_rows
        for table, new, times in read.chunks():
            table = table.append_column(TIME_COLUMN, pa.array(times, type=pa.float64()))
            table = conform(table, out_schema)
            if new.any():
                fresh = table if new.all() else table.filter(pa.array(new))
                new_w.write_table(conform(fresh.drop_columns([TIME_COLUMN]), batch_schema))
                new_rows += fresh.num_rows
            table = keep(table, times)
            if table.num_rows:
                snap_w.write_table(table, collect.add(table))
                rows += table.num_rows
        if rows == 0:
            where = f" within source.window_days={window_days}" if window_days is not None else ""
            raise DataError(
                f"no rows{where}: the source is empty; load data first (netsec push-data <csv>)",
                source=read.source,
            )
        new_w.close()
        snap_w.finish()
        sha = snap_w.digest
        assert sha is not None
        uri = storage.uri("snapshots", f"{sha}.parquet")
        # Immutable: the same content is already there otherwise (partitioned: its manifest).
        snapshot = snap_w.close(uri, upload=not storage.exists(uri))
    log.info(
        "snapshot %s: %d rows (%d reused from the committed snapshot, %d new) in %d partition(s), %.1f s",
        sha[:12],
        rows,
        reused,
        new_rows,
        len(snapshot.partitions),
        time.perf_counter() - started,
    )
    return Snapshot(
        uri=uri,
        local_parts=list(snap_w.local_parts),
        sha256=sha,
        schema=out_schema,
        rows=rows,
        new_rows=new_rows,
        rows_reused=reused,
        content_hashes=np.concatenate(collect.content),
        label_codes=np.concatenate(collect.codes),
        labels=list(collect.labels),
    )


def write_splits(
    storage: Storage,
    snap: Snapshot,
    test_mask: np.ndarray,
    *,
    train_uri: str,
    test_uri: str,
    partition_rows: int | None = None,
    scratch: Path | None = None,
) -> tuple[int, int]:
    """Stream the snapshot into the train and test splits (data columns only), each written in
    partitions of ``partition_rows`` rows (None: one file) staged in ``scratch``."""
    import tempfile

    data_schema = pa.schema([f for f in snap.schema if f.name != TIME_COLUMN])
    size = partition_rows or (1 << 62)
    stage = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="netsec-splits-"))
    offset = 0
    with (
        DatasetWriter(
            storage, train_uri, data_schema, partition_rows=size, scratch=stage / "train"
        ) as train_w,
        DatasetWriter(storage, test_uri, data_schema, partition_rows=size, scratch=stage / "test") as test_w,
    ):
        for local in snap.local_parts:
            pf = pq.ParquetFile(local)
            for batch in pf.iter_batches(batch_size=BATCH_ROWS):
                table = pa.Table.from_batches([batch]).drop_columns([TIME_COLUMN])
                mask = test_mask[offset : offset + table.num_rows]
                offset += table.num_rows
                test_w.write_table(table.filter(pa.array(mask)))
                train_w.write_table(table.filter(pa.array(~mask)))
        train_w.close()
        test_w.close()
    return train_w.rows, test_w.rows
