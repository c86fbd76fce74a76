"""What a training produced, before tracking (:class:`Trained`), and its step record
(:class:`~netsec_tasks.records.TrainRecord`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.operating_point import DecisionPolicy, OperatingPoint, ThresholdChoice
from netsec_tasks.records import CandidateResult, TrainRecord
from netsec_tasks.train.search import selection_metric


@dataclass
class Trained:
    """What tuning, refitting and the one test evaluation produced, before tracking."""

    model: Any  # the registered artifact: FixedThresholdClassifier(Pipeline, threshold)
    policy: DecisionPolicy
    choice: ThresholdChoice  # the threshold and its out-of-fold operating point
    test_point: OperatingPoint
    oof_brier: float  # of the out-of-fold P(threat) the threshold was chosen on
    train: Any  # LoadedSplit, or a StoredSplit (Dask engine)
    test: Any  # LoadedSplit, or a ScoredSplit (Dask engine)
    candidates: list[CandidateResult]
    winner: CandidateResult
    metrics: dict[str, float]
    cm: list[list[int]]
    plots: list[str]  # URIs in storage
    plot_dir: Path  # this task's local copies (logged to MLflow, then removed)
    training_seconds: float
    search_rows: int
    refit: str | None = None  # how the Dask engine refit the winner (None: in this process)
    engine: str = "local"

    def record(self, cfg: PipelineConfig, *, model_uri: str, run_id: str, experiment_id: str) -> TrainRecord:
        return TrainRecord(
            model_uri=model_uri,
            mlflow_run_id=run_id,
            experiment_id=experiment_id,
            winner=self.winner.name,
            metric=selection_metric(cfg, self.policy),
            cv_score=self.winner.cv_score,
            threshold=self.choice.threshold,
            threshold_basis=self.choice.basis,
            objective=self.policy.objective,
            max_false_positive_rate=self.policy.budget,
            expected_threat_rate=self.policy.expected_threat_rate,
            operating_point=self.test_point.to_dict(),
            oof_operating_point=self.choice.point.to_dict(),
            test_metrics=self.metrics,
            confusion_matrix=self.cm,
            candidates=self.candidates,
            plots=self.plots,
            train_rows=len(self.train.y),
            test_rows=len(self.test.y),
            training_seconds=round(self.training_seconds, 3),
            search_rows=self.search_rows,
            refit=self.refit,
        )
