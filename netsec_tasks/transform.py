"""Step 4, transformation: the preprocessing ColumnTransformer (first stage of the model)."""

from __future__ import annotations

from netsec_tasks.config import PipelineConfig
from netsec_tasks.records import RunContext, TransformRecord, ValidationRecord


def transform(cfg: PipelineConfig, run: RunContext, validation: ValidationRecord) -> TransformRecord:
    raise NotImplementedError
