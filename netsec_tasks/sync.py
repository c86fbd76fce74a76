"""Step 7, sync: upload the run's artifacts and model to s3:// (boto3) or file://."""

from __future__ import annotations

from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.records import RegisterRecord, RunContext, SyncRecord


def sync(cfg: PipelineConfig, run: RunContext, *, register: RegisterRecord | None = None,
         s3_client: Any | None = None) -> SyncRecord:
    raise NotImplementedError
