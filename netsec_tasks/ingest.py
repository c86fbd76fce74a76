"""Step 1, ingestion: source (file or MongoDB) -> immutable raw snapshot -> train/test split."""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsec_tasks.config import PipelineConfig
from netsec_tasks.records import IngestRecord, RunContext

if TYPE_CHECKING:
    import pymongo


def ingest(cfg: PipelineConfig, run: RunContext, *,
           mongo_client: "pymongo.MongoClient | None" = None) -> IngestRecord:
    """Snapshot the source, find the new batch after the last watermark, split train/test."""
    raise NotImplementedError


def commit_watermark(cfg: PipelineConfig, record: IngestRecord) -> None:
    """Record ``record.watermark`` as the last successful run's watermark (end of a good run)."""
    raise NotImplementedError
