"""Step 1, ingestion: source (file or MongoDB) -> immutable raw snapshot -> train/test split.

Flow
  1. *Stage* the source in chunks. MongoDB is read with a batched cursor sorted by ``_id``; each
     batch becomes a small Parquet part on disk, so memory holds one batch of documents plus a few
     bytes per row (watermark time, new-row flag), never the whole collection as Python dicts.
     Bookkeeping fields (``_id``, ``_netsec_key``, ``ingested_at``) are dropped; every other
     field is kept (dropping ``schema.ignore`` columns is validation's job).
  2. *Watermark*: every row has a watermark (its ObjectId, or ``source.mongo.watermark_field``).
     Rows after the last **committed** watermark are this run's new batch (``new_batch_uri``, for
     drift). Rows are classified client-side while streaming: nx-27017 mishandles ``$gt`` on
     ObjectIds, and training needs every row anyway. The new watermark is the largest one seen;
     ``commit_watermark`` stores it only after a successful run, so a failed run re-processes
     its batch next time. A file source's watermark is its content hash; the whole file is the
     new batch. ObjectIds are made by the inserting client: with several writers whose clocks
     differ, use a server-side increasing ``watermark_field`` instead.
  3. *Snapshot*: the rows up to the new watermark (or the last ``source.window_days`` days of
     watermark time) go into ``<workdir>/snapshots/<sha256>.parquet``, named by the content
     digest of the data (:func:`snapshot_digest`), written once and reused.
  4. *Split*: stratified by the target with ``split.seed``/``split.test_size``. With
     ``split.duplicate_aware`` (default) rows are grouped by the hash of their feature+target
     values and whole groups go to one side, so an exact copy of a test row never sits in train
     (the UCI file is about half duplicates; a plain split leaks ~hundreds of test rows into
     train and inflates every test metric). The leak count is reported either way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import ConfigError, DataError
from netsec_tasks.records import IngestRecord, RunContext, safe_name, sha256_file
from netsec_tasks.schema import DatasetSchema, load_schema

if TYPE_CHECKING:
    import pymongo

log = logging.getLogger(__name__)

SAMPLE_ROWS = 5000
SAMPLE_SEED = 0
# Rows per Parquet row group when a file source is re-chunked (Mongo uses its batch size).
FILE_CHUNK_ROWS = 65_536
_DAY_SECONDS = 86_400.0


# ----------------------------------------------------------------------------- entry points

def ingest(cfg: PipelineConfig, run: RunContext, *,
           mongo_client: "pymongo.MongoClient | None" = None) -> IngestRecord:
    """Snapshot the source, find the new batch after the last watermark, split train/test."""
    schema = load_schema(cfg.schema_path)
    staging = Path(cfg.workdir) / "tmp" / f"ingest-{safe_name(run.run_id)}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        if cfg.source.kind == "mongo":
            staged = _stage_mongo(cfg, staging, mongo_client)
        else:
            staged = _stage_file(cfg)
        if schema.target.column not in staged.schema.names:
            raise DataError(
                f"target column {schema.target.column!r} is missing (found: "
                f"{', '.join(staged.schema.names[:12])}{'...' if len(staged.schema) > 12 else ''}); "
                "the split needs it", source=staged.source, columns=[schema.target.column])
        step = run.step_dir("ingest")
        snap = _write_snapshot(cfg, staged, schema, step)
        test_mask = split_rows(snap.row_hashes, snap.labels, test_size=cfg.split.test_size,
                               seed=cfg.split.seed, duplicate_aware=cfg.split.duplicate_aware,
                               source=staged.source)
        train_rows, test_rows = _write_split(snap.path, test_mask, step)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    leak = duplicate_leak_rows(snap.row_hashes, test_mask)
    record = IngestRecord(
        source=staged.source, snapshot_uri=str(snap.path), snapshot_sha256=snap.sha256,
        rows=snap.rows, new_rows=snap.new_rows, new_batch_uri=str(step / "new_batch.parquet"),
        previous_watermark=staged.previous_watermark, watermark=staged.watermark,
        train_uri=str(step / "train.parquet"), test_uri=str(step / "test.parquet"),
        train_rows=train_rows, test_rows=test_rows,
        duplicate_rows=int(len(snap.row_hashes) - len(np.unique(snap.row_hashes))),
        duplicate_leak_rows=leak, duplicate_aware=cfg.split.duplicate_aware)
    log.info("ingest %s: %d rows (%d new since %s), watermark %s, snapshot %s, train %d / test %d, "
             "%d duplicate rows, %d test rows leak into train", record.source, record.rows,
             record.new_rows, record.previous_watermark, record.watermark, record.snapshot_sha256[:12],
             train_rows, test_rows, record.duplicate_rows, leak)
    return record


def commit_watermark(cfg: PipelineConfig, record: IngestRecord) -> None:
    """Record ``record.watermark`` as the last successful run's watermark (end of a good run)."""
    if record.watermark is None:
        return
    state = {
        "source": record.source,
        "watermark": record.watermark,
        "watermark_field": _watermark_field(cfg, record.source),
        "snapshot_sha256": record.snapshot_sha256,
        "rows": record.rows,
        "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    path = watermark_path(cfg, record.source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    tmp.replace(path)
    log.info("watermark of %s committed: %s", record.source, record.watermark)


def watermark_path(cfg: PipelineConfig, source: str) -> Path:
    """``<workdir>/state/watermark-<safe source key>.json``."""
    key = safe_name(source)
    if len(key) > 100:  # long globs/paths: keep it readable but unique
        key = key[:80] + "-" + hashlib.sha256(source.encode()).hexdigest()[:12]
    return Path(cfg.workdir) / "state" / f"watermark-{key}.json"


def read_watermark(cfg: PipelineConfig, source: str) -> dict[str, Any] | None:
    """The committed watermark state of ``source`` (None before the first successful run)."""
    path = watermark_path(cfg, source)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"watermark state is unreadable ({exc}); delete it to re-ingest everything",
                        source=str(path)) from None


def source_name(cfg: PipelineConfig) -> str:
    """The ``IngestRecord.source`` string of the configured source."""
    if cfg.source.kind == "mongo":
        return f"mongo:{cfg.source.mongo.database}.{cfg.source.mongo.collection}"
    return f"file:{_file_path(cfg)}"


def _watermark_field(cfg: PipelineConfig, source: str) -> str | None:
    return cfg.source.mongo.watermark_field if source.startswith("mongo:") else None


def _previous_watermark(cfg: PipelineConfig, source: str) -> str | None:
    state = read_watermark(cfg, source)
    if state is None:
        return None
    if state.get("watermark_field") != _watermark_field(cfg, source):
        log.warning("the committed watermark of %s was on %r, now %r: treating every row as new",
                    source, state.get("watermark_field"), _watermark_field(cfg, source))
        return None
    return state.get("watermark")


# ----------------------------------------------------------------------------- staging

@dataclass
class _Staged:
    """A source read into chunks; ``chunks()`` yields (table, new-row mask, keep-row mask)."""

    source: str
    schema: pa.Schema
    previous_watermark: str | None
    watermark: str | None
    parts: list[Any] = field(default_factory=list)        # Paths (Mongo) or Tables (file)
    new_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    keep_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def chunks(self) -> Iterator[tuple[pa.Table, np.ndarray, np.ndarray]]:
        offset = 0
        for part in self.parts:
            table = pq.read_table(part) if isinstance(part, Path) else part
            table = _conform(table, self.schema)
            n = table.num_rows
            yield table, self.new_mask[offset:offset + n], self.keep_mask[offset:offset + n]
            offset += n


def _file_path(cfg: PipelineConfig) -> str:
    if cfg.source.path is None:
        return str(Path(cfg.workdir) / "sample" / "phishing_sample.csv")
    path = cfg.source.path
    if path.startswith("file://"):
        path = path[len("file://"):]
    return path if any(ch in path for ch in "*?[") else str(Path(path).resolve())


def ensure_sample(cfg: PipelineConfig) -> Path:
    """``<workdir>/sample/phishing_sample.csv`` (the synthetic sample), written once, atomically."""
    from netsec_tasks.sample import make_sample

    path = Path(cfg.workdir) / "sample" / "phishing_sample.csv"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        make_sample(SAMPLE_ROWS, seed=SAMPLE_SEED).to_csv(tmp, index=False)
        tmp.replace(path)
        log.info("no source.path configured: wrote the synthetic sample to %s", path)
    return path


def _files_hash(pattern: str) -> str:
    """Content hash of a file, or of all files of a glob (names and contents)."""
    from netsec_tasks.tabular import expand_paths

    paths = expand_paths(pattern)
    if len(paths) == 1:
        return sha256_file(paths[0])
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _stage_file(cfg: PipelineConfig) -> _Staged:
    from netsec_tasks.mongo import BOOKKEEPING_FIELDS
    from netsec_tasks.tabular import read_table

    if cfg.source.path is None:
        ensure_sample(cfg)
    path = _file_path(cfg)
    source = f"file:{path}"
    frame = read_table(path)
    frame = frame.drop(columns=[c for c in BOOKKEEPING_FIELDS if c in frame.columns])
    if cfg.source.window_days is not None:
        log.warning("source.window_days applies to MongoDB sources only (rows have no time in a "
                    "file); %s is used whole", path)
    table = _frame_table(frame, source)
    schema = _unify_schemas([table.schema])
    parts = [pa.Table.from_batches([b], schema=table.schema)
             for b in table.to_batches(max_chunksize=FILE_CHUNK_ROWS)]
    n = table.num_rows
    return _Staged(source=source, schema=schema, parts=parts,
                   previous_watermark=_previous_watermark(cfg, source), watermark=_files_hash(path),
                   new_mask=np.ones(n, bool), keep_mask=np.ones(n, bool))


def _frame_table(frame: pd.DataFrame, source: str) -> pa.Table:
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # An object column mixing numbers and text: keep it as text, validation will judge it.
        fixed = frame.copy()
        for c in fixed.columns:
            if fixed[c].dtype == object:
                fixed[c] = fixed[c].map(lambda v: None if pd.isna(v) else str(v))
        table = pa.Table.from_pandas(fixed, preserve_index=False)
    return table.replace_schema_metadata(None)


# --- MongoDB

class _WatermarkTracker:
    """Classifies rows as new (after the previous watermark) and keeps the max watermark seen.

    The watermark is the ObjectId (``field`` None) or the value of ``field``. Comparison is done
    here, client-side, on the typed values; the stored form is a string (ObjectId hex, ISO-8601
    UTC datetime, or ``str(value)``) parsed back to the type of the values in the collection.
    """

    def __init__(self, field: str | None, previous: str | None, source: str):
        self.field = field
        self.previous_text = previous
        self.source = source
        self._previous: Any = None
        self._parsed = previous is None
        self.max_key: Any = None
        self.missing = 0

    def key(self, doc: dict) -> Any:
        from bson import ObjectId

        if self.field is None:
            oid = doc.get("_id")
            if not isinstance(oid, ObjectId):
                raise DataError(
                    f"document _id {oid!r} is not an ObjectId, so it cannot order the rows; set "
                    "source.mongo.watermark_field to a field that increases with inserts "
                    "(e.g. ingested_at)", source=self.source)
            return oid
        value = doc.get(self.field)
        return _utc(value) if isinstance(value, dt.datetime) else value

    def _parse_previous(self, sample: Any) -> None:
        from bson import ObjectId
        from bson.errors import InvalidId

        text = self.previous_text
        try:
            if isinstance(sample, ObjectId):
                self._previous = ObjectId(text)
            elif isinstance(sample, dt.datetime):
                self._previous = _utc(dt.datetime.fromisoformat(text))
            elif isinstance(sample, bool):
                raise ValueError("a boolean cannot be a watermark")
            elif isinstance(sample, int):
                self._previous = int(text)
            elif isinstance(sample, float):
                self._previous = float(text)
            else:
                self._previous = text
        except (InvalidId, ValueError, TypeError) as exc:
            raise DataError(f"committed watermark {text!r} does not match the "
                            f"{type(sample).__name__} values of {self.field or '_id'} ({exc}); "
                            "delete the watermark state file to re-ingest everything",
                            source=self.source) from None
        self._parsed = True

    def observe(self, docs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """(is_new, watermark time in epoch seconds or NaN) for each document."""
        new = np.zeros(len(docs), bool)
        times = np.full(len(docs), np.nan)
        for i, doc in enumerate(docs):
            key = self.key(doc)
            if key is None:
                self.missing += 1
                continue
            if not self._parsed:
                self._parse_previous(key)
            try:
                new[i] = self._previous is None or key > self._previous
                if self.max_key is None or key > self.max_key:
                    self.max_key = key
            except TypeError:
                raise DataError(f"{self.field} holds values of different types "
                                f"({type(key).__name__} vs {type(self.max_key).__name__}); a "
                                "watermark field must be of one type", source=self.source) from None
            times[i] = _key_time(key)
        return new, times

    @property
    def watermark(self) -> str | None:
        key = self.max_key
        if key is None:
            return None
        if isinstance(key, dt.datetime):
            return key.isoformat()
        return str(key)


def _utc(value: dt.datetime) -> dt.datetime:
    # pymongo returns naive UTC datetimes unless the client is tz_aware.
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _key_time(key: Any) -> float:
    from bson import ObjectId

    if isinstance(key, ObjectId):
        return key.generation_time.timestamp()
    if isinstance(key, dt.datetime):
        return key.timestamp()
    return np.nan


def _docs_table(docs: list[dict]) -> pa.Table:
    """One batch of documents as an Arrow table (columns in first-seen order)."""
    names: dict[str, None] = {}
    for doc in docs:
        for k in doc:
            names.setdefault(k, None)
    return pa.table({name: _arrow_column([d.get(name) for d in docs]) for name in names})


def _arrow_column(values: list) -> pa.Array:
    """Typed when the values allow it; nested documents, ObjectIds and mixed types become text."""
    try:
        arr = pa.array(values)
        if not (pa.types.is_nested(arr.type) or pa.types.is_binary(arr.type)):
            return arr
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        pass
    return pa.array([None if v is None else
                     json.dumps(v, default=str, sort_keys=True) if isinstance(v, (dict, list))
                     else str(v) for v in values], type=pa.string())


def _stage_mongo(cfg: PipelineConfig, staging: Path,
                 client: "pymongo.MongoClient | None") -> _Staged:
    from pymongo import errors

    from netsec_tasks.mongo import (BOOKKEEPING_FIELDS, KEY_FIELD, connect_source,
                                    describe_client, mask_uri, unavailable)

    mcfg = cfg.source.mongo
    source = f"mongo:{mcfg.database}.{mcfg.collection}"
    previous = _previous_watermark(cfg, source)
    tracker = _WatermarkTracker(mcfg.watermark_field, previous, source)
    own = client is None
    where = mask_uri(mcfg.uri)
    if own:
        client = connect_source(mcfg)
    else:
        where = describe_client(client)
    parts: list[Path] = []
    schemas: list[pa.Schema] = []
    new_masks: list[np.ndarray] = []
    time_arrays: list[np.ndarray] = []
    try:
        cursor = client[mcfg.database][mcfg.collection].find(
            {}, projection={KEY_FIELD: 0}, sort=[("_id", 1)], batch_size=mcfg.batch_size)
        with cursor:
            for docs in _batched(cursor, mcfg.batch_size):
                new, times = tracker.observe(docs)
                table = _docs_table([{k: v for k, v in d.items() if k not in BOOKKEEPING_FIELDS}
                                     for d in docs])
                part = staging / f"part-{len(parts):06d}.parquet"
                pq.write_table(table, part)
                parts.append(part)
                schemas.append(table.schema)
                new_masks.append(new)
                time_arrays.append(times)
    except errors.PyMongoError as exc:
        raise unavailable(exc, where, mcfg.server_selection_timeout_ms if own else None) from None
    finally:
        if own:
            client.close()
    if not parts:
        raise DataError("the collection is empty; load data first (netsec push-data <csv>)",
                        source=f"{source} at {where}")
    if tracker.missing:
        log.warning("%d document(s) of %s have no %s: they are never new, and kept only "
                    "without window_days", tracker.missing, source, mcfg.watermark_field)
    times = np.concatenate(time_arrays)
    keep = _window_mask(times, cfg.source.window_days, source, mcfg.watermark_field)
    log.info("streamed %d documents of %s in %d batches of <= %d", len(times), source, len(parts),
             mcfg.batch_size)
    return _Staged(source=source, schema=_unify_schemas(schemas), parts=parts,
                   previous_watermark=previous, watermark=tracker.watermark,
                   new_mask=np.concatenate(new_masks), keep_mask=keep)


def _batched(cursor, size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for doc in cursor:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _window_mask(times: np.ndarray, window_days: float | None, source: str,
                 field_name: str | None) -> np.ndarray:
    """Rows whose watermark time is within ``window_days`` of the newest row's."""
    if window_days is None:
        return np.ones(len(times), bool)
    if np.isnan(times).all():
        raise ConfigError(f"source.window_days needs a time watermark, but {field_name or '_id'} "
                          f"of {source} holds no dates; use ObjectId _ids or a datetime "
                          "watermark_field, or unset window_days")
    cutoff = np.nanmax(times) - window_days * _DAY_SECONDS
    with np.errstate(invalid="ignore"):
        return times >= cutoff


# ----------------------------------------------------------------------------- schema unification

def _unify_type(types: list[pa.DataType]) -> pa.DataType:
    """One column type for all chunks: widen ints to float, anything else mixed becomes text."""
    seen = [pa.string() if pa.types.is_large_string(t) else t
            for t in types if not pa.types.is_null(t)]
    if not seen:
        return pa.null()
    if len(set(seen)) == 1:
        return seen[0]
    if all(pa.types.is_integer(t) for t in seen):
        return pa.int64()
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in seen):
        return pa.float64()
    return pa.string()


def _unify_schemas(schemas: list[pa.Schema]) -> pa.Schema:
    types: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for f in schema:
            types.setdefault(f.name, []).append(f.type)
    return pa.schema([pa.field(name, _unify_type(ts)) for name, ts in types.items()])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns and types (missing columns as nulls)."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else pc.cast(col, f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.table(cols, schema=schema)


# ----------------------------------------------------------------------------- snapshot

def _stable_types(t: pa.DataType):
    # The same pandas dtype for a column whether or not a chunk has nulls, so the digest and the
    # row hashes do not depend on where chunk boundaries fall.
    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    if pa.types.is_boolean(t):
        return pd.BooleanDtype()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pd.StringDtype()
    return None


class _Digest:
    """sha256 over the schema (names and types) and the per-row hashes of the data."""

    def __init__(self, schema: pa.Schema):
        self._h = hashlib.sha256()
        self._h.update(",".join(f"{f.name}:{f.type}" for f in schema).encode())

    def update(self, frame: pd.DataFrame) -> None:
        if len(frame):
            self._h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _chunk_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_stable_types)


def snapshot_digest(path: str | os.PathLike, batch_rows: int = FILE_CHUNK_ROWS) -> str:
    """Recompute a snapshot's content digest from its Parquet file (streamed)."""
    pf = pq.ParquetFile(path)
    digest = _Digest(pf.schema_arrow)
    for batch in pf.iter_batches(batch_size=batch_rows):
        digest.update(_chunk_frame(pa.Table.from_batches([batch])))
    return digest.hexdigest()


@dataclass
class _Snapshot:
    path: Path
    sha256: str
    rows: int
    new_rows: int
    row_hashes: np.ndarray
    labels: pd.Series


def _hash_columns(schema: DatasetSchema, names: list[str]) -> list[str]:
    """Feature + target columns present: what makes two rows "the same example"."""
    return [c for c in schema.features + [schema.target.column] if c in names]


def _write_snapshot(cfg: PipelineConfig, staged: _Staged, schema: DatasetSchema,
                    step: Path) -> _Snapshot:
    snapshots = Path(cfg.workdir) / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    tmp = snapshots / f".tmp-{uuid.uuid4().hex}.parquet"
    new_path = step / "new_batch.parquet"
    new_tmp = step / f".new_batch.parquet.tmp-{os.getpid()}"
    hash_cols = _hash_columns(schema, staged.schema.names)
    target = schema.target.column
    digest = _Digest(staged.schema)
    hashes: list[np.ndarray] = []
    labels: list[pd.Series] = []
    new_rows = 0
    try:
        with pq.ParquetWriter(tmp, staged.schema) as snap_w, \
                pq.ParquetWriter(new_tmp, staged.schema) as new_w:
            for table, new, keep in staged.chunks():
                kept = table if keep.all() else table.filter(pa.array(keep))
                if kept.num_rows:
                    snap_w.write_table(kept)
                    frame = _chunk_frame(kept)
                    digest.update(frame)
                    hashes.append(pd.util.hash_pandas_object(frame[hash_cols], index=False).to_numpy())
                    labels.append(frame[target])
                if new.any():
                    fresh = table if new.all() else table.filter(pa.array(new))
                    new_w.write_table(fresh)
                    new_rows += fresh.num_rows
        if not hashes:
            raise DataError(f"no rows within source.window_days={cfg.source.window_days}",
                            source=staged.source)
        sha = digest.hexdigest()
        final = snapshots / f"{sha}.parquet"
        if final.exists():
            tmp.unlink()  # immutable: the same data is already there
        else:
            tmp.replace(final)
        new_tmp.replace(new_path)
    finally:
        for leftover in (tmp, new_tmp):
            leftover.unlink(missing_ok=True)
    row_hashes = np.concatenate(hashes)
    return _Snapshot(path=final, sha256=sha, rows=len(row_hashes), new_rows=new_rows,
                     row_hashes=row_hashes, labels=pd.concat(labels, ignore_index=True))


# ----------------------------------------------------------------------------- split

def split_rows(row_hashes: np.ndarray, labels, *, test_size: float, seed: int,
               duplicate_aware: bool = True, source: str | None = None) -> np.ndarray:
    """Boolean test mask, stratified by label; duplicate-aware keeps equal rows on one side."""
    n = len(row_hashes)
    codes, _ = pd.factorize(pd.Series(labels).reset_index(drop=True), use_na_sentinel=False)
    if n < 2:
        raise DataError(f"{n} row(s): too few to split into train and test", source=source)
    if duplicate_aware:
        test = _group_split(np.asarray(row_hashes), codes, test_size, seed)
    else:
        test = _plain_split(codes, test_size, seed, source)
    if test.all() or not test.any():
        raise DataError(f"cannot split {n} rows ({len(np.unique(row_hashes))} distinct) into "
                        f"non-empty train and test with test_size={test_size}", source=source)
    return test


def _plain_split(codes: np.ndarray, test_size: float, seed: int, source: str | None) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(codes))
    try:
        _, test_idx = train_test_split(idx, test_size=test_size, random_state=seed, stratify=codes)
    except ValueError as exc:
        raise DataError(f"stratified split impossible: {exc}", source=source) from None
    test = np.zeros(len(codes), bool)
    test[test_idx] = True
    return test


def _group_split(row_hashes: np.ndarray, codes: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """Whole duplicate groups to one side; per label, shuffled groups fill test up to its share.

    Groups are ordered by hash before shuffling, so the assignment does not depend on row order.
    A group's label is unique because the target is part of the hash.
    """
    uniq, inverse, counts = np.unique(row_hashes, return_inverse=True, return_counts=True)
    group_code = np.empty(len(uniq), dtype=codes.dtype)
    group_code[inverse] = codes
    rng = np.random.default_rng(seed)
    test_group = np.zeros(len(uniq), bool)
    for code in np.unique(codes):
        groups = np.flatnonzero(group_code == code)
        groups = groups[rng.permutation(len(groups))]
        sizes = np.cumsum(counts[groups])
        want = test_size * sizes[-1]
        # The prefix of shuffled groups whose row count is closest to the wanted test rows...
        k = int(np.searchsorted(sizes, want))
        before = sizes[k - 1] if k > 0 else 0
        if k < len(sizes) and sizes[k] - want < want - before:
            k += 1
        # ...but a label with several groups shows up on both sides.
        if len(groups) > 1:
            k = min(max(k, 1), len(groups) - 1)
        test_group[groups[:k]] = True
    return test_group[inverse]


def duplicate_leak_rows(row_hashes: np.ndarray, test_mask: np.ndarray) -> int:
    """Test rows whose exact copy (same features and target) is in train."""
    return int(np.isin(row_hashes[test_mask], row_hashes[~test_mask]).sum())


def _write_split(snapshot: Path, test_mask: np.ndarray, step: Path,
                 batch_rows: int = FILE_CHUNK_ROWS) -> tuple[int, int]:
    """Stream the snapshot into train.parquet and test.parquet (atomically)."""
    pf = pq.ParquetFile(snapshot)
    out = {name: step / f"{name}.parquet" for name in ("train", "test")}
    tmp = {name: p.with_name(f".{p.name}.tmp-{os.getpid()}") for name, p in out.items()}
    rows = {"train": 0, "test": 0}
    offset = 0
    try:
        with pq.ParquetWriter(tmp["train"], pf.schema_arrow) as train_w, \
                pq.ParquetWriter(tmp["test"], pf.schema_arrow) as test_w:
            for batch in pf.iter_batches(batch_size=batch_rows):
                table = pa.Table.from_batches([batch])
                mask = test_mask[offset:offset + table.num_rows]
                offset += table.num_rows
                test_w.write_table(table.filter(pa.array(mask)))
                train_w.write_table(table.filter(pa.array(~mask)))
                rows["test"] += int(mask.sum())
                rows["train"] += int((~mask).sum())
        for name in out:
            tmp[name].replace(out[name])
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    return rows["train"], rows["test"]
