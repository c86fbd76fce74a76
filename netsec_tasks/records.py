"""Artifact records: what each step returns, and the run context every step receives.

Records are small (URIs, counts, metrics, hashes): ``record.to_xcom()`` is what Airflow's XCom
carries between tasks and ``Record.from_xcom(d)`` rebuilds it on the other side. Data frames and
models never travel in a record; they stay in files the URIs point to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from netsec_tasks.config import PipelineConfig


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_run_id(prefix: str = "manual") -> str:
    return f"{prefix}__{utcnow().strftime('%Y%m%dT%H%M%S.%fZ')}"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_name(text: str) -> str:
    """A file-system- and S3-key-safe form of a run id (Airflow run ids contain ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "run"


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_xcom(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    @classmethod
    def from_xcom(cls, data: dict[str, Any] | Self) -> Self:
        return data if isinstance(data, cls) else cls.model_validate(data)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        tmp.replace(path)
        return path


class RunContext(Record):
    """Identity and working directory of one pipeline run (one DAG run, or one `netsec run`)."""

    run_id: str
    run_dir: str
    started_at: dt.datetime = Field(default_factory=utcnow)
    # manual | scheduled | cli | test: who asked for this run.
    trigger: str = "cli"
    force_retrain: bool = False

    @classmethod
    def create(cls, cfg: PipelineConfig, run_id: str | None = None, **kw: Any) -> "RunContext":
        run_id = run_id or new_run_id(kw.get("trigger", "cli"))
        run_dir = Path(cfg.workdir) / "runs" / safe_name(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        return cls(run_id=run_id, run_dir=str(run_dir), **kw)

    @property
    def path(self) -> Path:
        return Path(self.run_dir)

    def step_dir(self, step: str) -> Path:
        d = self.path / step
        d.mkdir(parents=True, exist_ok=True)
        return d


class IngestRecord(Record):
    source: str                      # "file:<path>" or "mongo:<db>.<collection>"
    snapshot_uri: str                # immutable raw snapshot (Parquet), named by its hash
    snapshot_sha256: str             # content hash of the snapshot data
    rows: int                        # rows in the snapshot (all rows up to the new watermark)
    new_rows: int                    # rows after the previous watermark (the new batch)
    new_batch_uri: str               # Parquet of the new batch (the whole file for a file source)
    previous_watermark: str | None = None
    watermark: str | None = None
    train_uri: str
    test_uri: str
    train_rows: int
    test_rows: int
    duplicate_rows: int              # rows that are exact copies of an earlier row
    duplicate_leak_rows: int         # test rows whose exact copy sits in train (0 when dup-aware)
    duplicate_aware: bool


class ValidationRecord(Record):
    passed: bool
    report_uri: str                  # YAML listing every check
    invalid_uri: str | None = None   # quarantined rows with a reason each (CSV)
    train_uri: str                   # validated, typed training split (Parquet)
    test_uri: str                    # validated, typed test split (Parquet)
    new_batch_uri: str               # validated new batch, for drift
    rows_checked: int
    rows_invalid: int
    invalid_share: float
    train_rows: int
    test_rows: int
    dataset_digest: str              # digest of the validated training data


class DriftRecord(Record):
    drift_detected: bool
    has_reference: bool              # False on the first run (no Production model)
    reference_uri: str | None = None
    current_uri: str
    drift_share: float               # share of columns that drifted
    drifted_columns: list[str] = []
    columns_tested: int = 0
    report_uri: str | None = None    # YAML
    html_uri: str | None = None      # self-contained HTML page
    reason: str                      # one line: why retrain or skip


class TransformRecord(Record):
    preprocessor_uri: str            # fitted ColumnTransformer (skops)
    numeric_features: list[str]
    categorical_features: list[str]
    features_out: int
    missing_values_imputed: int
    fitted_on_rows: int


class CandidateResult(Record):
    name: str
    cv_score: float
    cv_std: float
    best_params: dict[str, Any]
    fit_seconds: float
    mlflow_run_id: str | None = None


class TrainRecord(Record):
    model_uri: str                   # logged model URI in MLflow (runs:/... or models:/m-...)
    local_model_uri: str | None = None
    mlflow_run_id: str               # parent run of this pipeline run
    experiment_id: str
    winner: str
    metric: str
    cv_score: float
    test_metrics: dict[str, float]   # accuracy, precision, recall, f1, roc_auc, pr_auc
    confusion_matrix: list[list[int]]
    candidates: list[CandidateResult]
    plots: list[str] = []
    train_rows: int
    test_rows: int
    training_seconds: float


class RegisterRecord(Record):
    model_name: str
    version: str | None              # the new version (None when nothing was registered)
    promoted: bool
    production_version: str | None   # Production after this step
    previous_production_version: str | None = None
    new_score: float | None = None
    production_score: float | None = None   # old Production on the same test split
    reason: str


class SyncRecord(Record):
    destination: str                 # s3://bucket/prefix/run or file:///dir/run
    objects: int
    bytes: int
    uploaded: int                    # objects actually sent (the rest were already there)
    skipped: int


class ReconciledItem(Record):
    kind: str                        # mlflow_run | model_version | sync
    id: str                          # run id, <model>/<version>, pipeline run id
    action: str                      # KILLED | promoted | rejected | abandoned | promotion finished | synced
    reason: str


class ReconcileRecord(Record):
    """What the start of a run (or ``netsec reconcile``) closed or finished for earlier runs."""

    items: list[ReconciledItem] = []

    def summary(self) -> str:
        if not self.items:
            return "nothing to reconcile"
        return "; ".join(f"{i.kind} {i.id}: {i.action}" for i in self.items)


class OutcomeRecord(Record):
    run_id: str
    outcome: str                     # promoted | kept_production | skipped_no_drift | failed
    reason: str
    branch_reason: str | None = None # why the drift branch retrained or skipped
    model_version: str | None = None
    metrics: dict[str, float] = {}
    reconciled: list[ReconciledItem] = []  # what this run's start finished for earlier runs
