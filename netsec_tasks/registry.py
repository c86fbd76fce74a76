"""Step 6, registry: register the winner, promote it only when it beats Production."""

from __future__ import annotations

from netsec_tasks.config import PipelineConfig
from netsec_tasks.records import RegisterRecord, RunContext, TrainRecord, ValidationRecord


def production_reference_uri(cfg: PipelineConfig) -> str | None:
    """URI of the training data of the current Production model; None when there is none."""
    raise NotImplementedError


def register(cfg: PipelineConfig, run: RunContext, train: TrainRecord,
             validation: ValidationRecord) -> RegisterRecord:
    raise NotImplementedError
