"""Step 2, validation: schema and data-quality checks, row quarantine, YAML report."""

from __future__ import annotations

from netsec_tasks.config import PipelineConfig
from netsec_tasks.records import IngestRecord, RunContext, ValidationRecord


def validate(cfg: PipelineConfig, run: RunContext, ingest: IngestRecord) -> ValidationRecord:
    raise NotImplementedError
