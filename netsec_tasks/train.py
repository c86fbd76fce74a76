"""Step 5, training: tune candidates by CV on the training split, evaluate the winner once."""

from __future__ import annotations

from netsec_tasks.config import PipelineConfig
from netsec_tasks.records import RunContext, TrainRecord, TransformRecord, ValidationRecord


def train(cfg: PipelineConfig, run: RunContext, validation: ValidationRecord,
          transform: TransformRecord) -> TrainRecord:
    raise NotImplementedError
