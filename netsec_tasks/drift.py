"""Step 3, drift: new batch vs the Production model's training data, per-column tests."""

from __future__ import annotations

from netsec_tasks.config import PipelineConfig
from netsec_tasks.records import DriftRecord, RunContext, ValidationRecord


def check_drift(cfg: PipelineConfig, run: RunContext, validation: ValidationRecord, *,
                reference_uri: str | None) -> DriftRecord:
    raise NotImplementedError
