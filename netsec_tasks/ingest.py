"""Step 1, ingestion: source -> immutable snapshot in storage -> a train/test split that never moves.

The step is a short composition; each concern has its module:

1. :mod:`netsec_tasks.state` - the source's committed watermark and snapshot (in storage).
2. :mod:`netsec_tasks.sources` - read the source: a file (whole), or MongoDB (only documents
   after the watermark, appended to the committed snapshot; the training window when there is
   none). Staged in this task's private scratch dir, one batch at a time.
3. :mod:`netsec_tasks.snapshot` - write ``<storage>/snapshots/<sha256>.parquet`` and this run's
   new batch (rows after the watermark: what drift compares with Production's training data).
4. :mod:`netsec_tasks.split` - each row's side from its content hash and ``split.seed``; the
   splits go to ``<storage>/runs/<run>/ingest/``.

The watermark is committed by :func:`commit` only at the end of a successful run (the
``record_outcome`` task), so a failed run processes the same new rows again next time.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from typing import TYPE_CHECKING

import numpy as np

from netsec_tasks import split as splitting
from netsec_tasks.catalog import RunCatalog
from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.records import IngestRecord, RunContext, safe_name
from netsec_tasks.snapshot import build, write_splits
from netsec_tasks.state import SourceState, read_state
from netsec_tasks.state import commit as commit_state
from netsec_tasks.storage import scratch_dir

if TYPE_CHECKING:  # pragma: no cover
    import pymongo

    from netsec_tasks.storage import Storage

log = logging.getLogger(__name__)


def source_name(cfg: PipelineConfig) -> str:
    """The ``IngestRecord.source`` string of the configured source (the state's key)."""
    if cfg.source.kind == "mongo":
        return f"mongo:{cfg.source.mongo.database}.{cfg.source.mongo.collection}"
    from netsec_tasks.sources.file import source_name as file_source

    return file_source(cfg)


def _usable_state(cfg: PipelineConfig, storage: Storage, source: str) -> SourceState | None:
    state = read_state(storage, source)
    if state is None:
        return None
    field = cfg.source.mongo.watermark_field if cfg.source.kind == "mongo" else None
    if state.watermark_field != field:
        log.warning(
            "the committed watermark of %s was on %r, now %r: treating every row as new",
            source,
            state.watermark_field,
            field,
        )
        return None
    return state


def _base_snapshot(cfg: PipelineConfig, storage: Storage, state: SourceState | None) -> str | None:
    """The committed snapshot an incremental MongoDB read extends, if it is usable."""
    if cfg.source.kind != "mongo" or not cfg.source.mongo.incremental or state is None:
        return None
    if not state.snapshot_uri or state.watermark is None:
        return None
    if not storage.exists(state.snapshot_uri):
        log.warning(
            "the committed snapshot %s of %s is missing from storage: reading the whole "
            "training window again",
            state.snapshot_uri,
            state.source,
        )
        return None
    return state.snapshot_uri


def ingest(
    cfg: PipelineConfig, run: RunContext, *, mongo_client: pymongo.MongoClient | None = None
) -> IngestRecord:
    """Snapshot the source, find the new batch after the last watermark, split train/test."""
    schema = load_schema(cfg.schema_path)
    catalog = RunCatalog.of(cfg, run)
    storage = catalog.storage
    source = source_name(cfg)
    state = _usable_state(cfg, storage, source)
    scratch = scratch_dir(cfg) / f"ingest-{safe_name(run.run_id)}-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        if cfg.source.kind == "mongo":
            from netsec_tasks.sources.mongo import read_documents

            base = _base_snapshot(cfg, storage, state)
            read = read_documents(
                cfg, previous=state, base_snapshot=base, scratch=scratch, client=mongo_client
            )
        else:
            from netsec_tasks.sources.file import read_file

            read = read_file(cfg, storage, state, scratch=scratch)
        base_schema = None
        if read.base_snapshot_uri is not None:
            from netsec_tasks.storage import open_dataset

            first = open_dataset(storage, read.base_snapshot_uri).partitions[0]
            with storage.parquet_file(first.uri) as pf:
                base_schema = pf.schema_arrow
        window = cfg.source.window_days if cfg.source.kind == "mongo" else None
        snap = build(
            storage,
            read,
            schema,
            scratch=scratch,
            new_batch_uri=catalog.uri("new_batch"),
            window_days=window,
            base_schema=base_schema,
            partition_rows=cfg.storage.partition_rows,
        )
        if cfg.split.duplicate_aware:
            side_hashes = snap.content_hashes
        else:
            side_hashes = splitting.occurrence_hashes(snap.content_hashes)
        test_mask, notes = splitting.split_rows(
            side_hashes,
            snap.label_codes,
            test_size=cfg.split.test_size,
            seed=cfg.split.seed,
            source=read.source,
        )
        for note in notes:
            log.warning("split: %s", note)
        train_rows, test_rows = write_splits(
            storage,
            snap,
            test_mask,
            train_uri=catalog.uri("raw_train"),
            test_uri=catalog.uri("raw_test"),
            partition_rows=cfg.storage.partition_rows,
            scratch=scratch / "splits",
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    hashes = snap.content_hashes
    record = IngestRecord(
        source=read.source,
        snapshot_uri=snap.uri,
        snapshot_sha256=snap.sha256,
        rows=snap.rows,
        new_rows=snap.new_rows,
        documents_read=read.documents_read,
        rows_reused=snap.rows_reused,
        new_batch_uri=catalog.uri("new_batch"),
        previous_watermark=read.previous_watermark,
        watermark=read.watermark,
        watermark_type=read.watermark_type,
        run_id=run.run_id,
        train_uri=catalog.uri("raw_train"),
        test_uri=catalog.uri("raw_test"),
        train_rows=train_rows,
        test_rows=test_rows,
        row_hash=splitting.ROW_HASH,
        split_seed=cfg.split.seed,
        test_size=cfg.split.test_size,
        duplicate_rows=int(len(hashes) - len(np.unique(hashes))),
        duplicate_leak_rows=splitting.duplicate_leak_rows(hashes, test_mask),
        duplicate_aware=cfg.split.duplicate_aware,
    )
    log.info(
        "ingest %s: %d documents read, snapshot %s of %d rows (%d reused, %d new since %s), "
        "watermark %s, train %d / test %d, %d duplicate rows, %d test rows leak into train",
        record.source,
        record.documents_read,
        record.snapshot_sha256[:12],
        record.rows,
        record.rows_reused,
        record.new_rows,
        record.previous_watermark,
        record.watermark,
        train_rows,
        test_rows,
        record.duplicate_rows,
        record.duplicate_leak_rows,
    )
    return record


def commit(cfg: PipelineConfig, record: IngestRecord) -> str | None:
    """Record ``record``'s watermark and snapshot as the source's last successful run's."""
    if record.watermark is None:
        return None
    from netsec_tasks.storage import storage_for

    field = cfg.source.mongo.watermark_field if record.source.startswith("mongo:") else None
    return commit_state(
        storage_for(cfg),
        SourceState(
            source=record.source,
            watermark=record.watermark,
            watermark_field=field,
            watermark_type=record.watermark_type,
            snapshot_uri=record.snapshot_uri,
            snapshot_sha256=record.snapshot_sha256,
            rows=record.rows,
            run_id=record.run_id,
        ),
    )
