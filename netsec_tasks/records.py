"""Artifact records: what each step returns, and the run context every step receives.

Records are small (URIs, counts, metrics, hashes): ``record.to_xcom()`` is what Airflow's XCom
carries between tasks and ``Record.from_xcom(d)`` rebuilds it on the other side. Data frames and
models never travel in a record; they stay in files the URIs point to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from netsec_tasks.config import PipelineConfig


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run_id(prefix: str = "manual") -> str:
    return f"{prefix}__{utcnow().strftime('%Y%m%dT%H%M%S.%fZ')}"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_name(text: str) -> str:
    """A file-system- and S3-key-safe form of a run id (Airflow run ids contain ':' and '+'):
    the file-name sink's encoder (:func:`netsec_tasks.sinks.file_name`), so a run id of ``..``
    or ``../x`` never leaves its folder."""
    from netsec_tasks.sinks import file_name

    return file_name(text)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_xcom(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    @classmethod
    def from_xcom(cls, data: dict[str, Any] | Self) -> Self:
        return data if isinstance(data, cls) else cls.model_validate(data)


class RunContext(Record):
    """Identity of one pipeline run (one DAG run, or one ``netsec run``) and its storage root.

    Every step writes its artifacts under ``storage_uri`` (``<storage.uri>/runs/<safe run id>``),
    so tasks of one run may execute on different machines: nothing is handed over on a local disk.
    """

    run_id: str
    storage_uri: str
    started_at: dt.datetime = Field(default_factory=utcnow)
    # manual | scheduled | monitoring | cli | test: who asked for this run.
    trigger: str = "cli"
    # Why, when the trigger says more than who (monitoring: the evidence it acted on).
    trigger_reason: str | None = None
    force_retrain: bool = False

    @classmethod
    def create(cls, cfg: PipelineConfig, run_id: str | None = None, **kw: Any) -> RunContext:
        from netsec_tasks.storage import join_uri, validate_root

        run_id = run_id or new_run_id(kw.get("trigger", "cli"))
        root = join_uri(validate_root(cfg.storage.uri), "runs", safe_name(run_id))
        return cls(run_id=run_id, storage_uri=root, **kw)

    def step_uri(self, step: str, name: str = "") -> str:
        """``<run storage>/<step>/<name>`` (``step`` may be "" for run-level artifacts)."""
        from netsec_tasks.storage import join_uri

        return join_uri(self.storage_uri, step, name)


class IngestRecord(Record):
    run_id: str
    source: str  # "file:<path or URI>" or "mongo:<db>.<collection>"
    snapshot_uri: str  # immutable snapshot (Parquet) in storage, named by its hash
    snapshot_sha256: str  # content hash of the snapshot data
    rows: int  # rows in the snapshot (the training window)
    new_rows: int  # rows after the previous watermark (the new batch)
    documents_read: int  # rows read from the source by this run
    rows_reused: int = 0  # rows taken from the last committed snapshot (incremental)
    new_batch_uri: str  # Parquet of the new batch (the whole file for a file source)
    previous_watermark: str | None = None
    watermark: str | None = None
    watermark_type: str | None = None  # objectid | datetime | int | float | str | file
    train_uri: str
    test_uri: str
    train_rows: int
    test_rows: int
    row_hash: str  # name of the row-hash scheme (split.ROW_HASH)
    split_seed: int
    test_size: float
    duplicate_rows: int  # rows that are exact copies of an earlier row
    duplicate_leak_rows: int  # test rows whose exact copy sits in train (0 when dup-aware)
    duplicate_aware: bool


class ValidationRecord(Record):
    passed: bool
    report_uri: str  # YAML listing every check
    invalid_uri: str | None = None  # quarantined rows with a reason each (CSV)
    train_uri: str  # validated, typed training split (Parquet)
    test_uri: str  # validated, typed test split (Parquet)
    new_batch_uri: str  # validated new batch, for drift
    train_row_hashes_uri: str  # content hashes of the training rows (lineage, split.py)
    rows_checked: int
    rows_invalid: int
    invalid_share: float
    train_rows: int
    test_rows: int
    dataset_digest: str  # digest of the validated training data


class DriftRecord(Record):
    drift_detected: bool
    has_reference: bool  # False on the first run (no Production model)
    reference_uri: str | None = None
    reference_version: str | None = None  # the Production version whose training data it is
    current_uri: str
    current_rows: int | None = None  # rows of the new batch compared (None: not read)
    drift_share: float  # share of columns that drifted
    drift_share_threshold: float | None = None  # data-set drift when drift_share is above it
    drifted_columns: list[str] = []
    columns_tested: int = 0
    report_uri: str | None = None  # YAML
    html_uri: str | None = None  # self-contained HTML page
    reason: str  # one line: why retrain or skip
    # False when too many rows broke the input contract for the comparison to mean anything
    # (over validation.max_invalid_share); not_judged says why.
    judged: bool = True
    not_judged: str | None = None


class BranchRecord(Record):
    """The ``check_drift`` step: the drift found, and the branch chosen from it."""

    drift: DriftRecord
    retrain: bool  # True: transform -> train -> register -> sync; False: skip training
    reason: str  # the branch rule's sentence (:func:`netsec_tasks.pipeline.decide_retrain`)


class TransformRecord(Record):
    preprocessor_uri: str  # fitted ColumnTransformer (skops), in storage
    numeric_features: list[str]
    categorical_features: list[str]
    features_out: int
    missing_values_imputed: int
    fitted_on_rows: int
    imputer_rows: int | None = None  # rows the KNN imputer keeps as donors (transform.imputer_max_rows)


class CandidateResult(Record):
    name: str
    cv_score: float
    cv_std: float
    best_params: dict[str, Any]
    fit_seconds: float
    mlflow_run_id: str | None = None


class TrainRecord(Record):
    model_uri: str  # logged model URI in MLflow (runs:/... or models:/m-...)
    mlflow_run_id: str  # parent run of this pipeline run
    experiment_id: str
    winner: str
    metric: str
    cv_score: float
    test_metrics: dict[str, float]  # accuracy, precision, recall, f1, roc_auc, pr_auc
    confusion_matrix: list[list[int]]
    candidates: list[CandidateResult]
    plots: list[str] = []
    train_rows: int
    test_rows: int
    training_seconds: float
    search_rows: int | None = None  # rows the search tuned on (training.search_max_rows)
    # The operating point (netsec_tasks.operating_point): the threshold the registered model's
    # predict() applies, why, the policy it was chosen for, and what it does on the out-of-fold
    # rows it was chosen on and on the test split (OperatingPoint.to_dict()).
    threshold: float | None = None
    threshold_basis: str | None = None
    objective: str | None = None  # recall_at_budget | f1
    max_false_positive_rate: float | None = None
    expected_threat_rate: float | None = None
    operating_point: dict[str, Any] = {}
    oof_operating_point: dict[str, Any] = {}
    # training.engine=dask: how the winner was refit (xgboost.dask across N workers, or a
    # bounded sample on one worker) and which candidates were skipped, why; None: in process.
    refit: str | None = None


class RegisterRecord(Record):
    model_name: str
    version: str | None  # the new version (None when nothing was registered)
    promoted: bool
    production_version: str | None  # Production after this step
    previous_production_version: str | None = None
    new_score: float | None = None
    production_score: float | None = None  # old Production on the same test split
    # Test rows the compared Production model was trained on (0 by construction of the split);
    # None when Production has no lineage to check (trained before lineage was recorded).
    production_rows_in_test: int | None = None
    # The compared Production model's threat-class metrics on the same test rows ({}: none).
    production_metrics: dict[str, float] = {}
    # Both models at their own operating points on the compared test rows (OperatingPoint as a
    # dict: threshold, FPR with its interval, recall, precision at the expected threat rate,
    # alerts per 10,000 benign rows); {} when not scored. label_recall: multi-class labels only,
    # per threat label {"rows", "candidate", "production"} (the per-label guard).
    operating_point: dict[str, Any] = {}
    production_operating_point: dict[str, Any] = {}
    label_recall: dict[str, dict[str, Any]] = {}
    # registry.shadow: the challenger after this step (this version when it passed the gate
    # while a Production model existed; else the one before, if any), and the challenger it
    # replaced.
    challenger_version: str | None = None
    replaced_challenger: str | None = None
    reason: str


class ChallengerRecord(Record):
    """The end of a challenger's shadow (netsec_tasks.registry.challenger)."""

    model_name: str
    version: str  # the challenger
    action: str  # promoted | rejected (by hand) | retired (by monitoring)
    production_before: str | None
    production_after: str | None
    reason: str
    decided_by: str


class SyncRecord(Record):
    destination: str  # s3://bucket/prefix/run or file:///dir/run
    objects: int
    bytes: int
    uploaded: int  # objects actually sent (the rest were already there)
    skipped: int


class ReconciledItem(Record):
    kind: str  # mlflow_run | model_version | sync
    id: str  # run id, <model>/<version>, pipeline run id
    action: str  # KILLED | promoted | rejected | abandoned | promotion finished | synced
    reason: str


class ReconcileRecord(Record):
    """What the start of a run (or ``netsec reconcile``) closed or finished for earlier runs."""

    items: list[ReconciledItem] = []

    def summary(self) -> str:
        if not self.items:
            return "nothing to reconcile"
        return "; ".join(f"{i.kind} {i.id}: {i.action}" for i in self.items)


class RollbackRecord(Record):
    """What ``netsec rollback`` did: Production moved back from one version to another."""

    model_name: str
    from_version: str  # Production before the rollback
    to_version: str  # Production now (holds the alias)
    rolled_back: list[str]  # versions tagged netsec.promotion=rolled_back
    reason: str


class ModelOutcome(Record):
    """One model version as a run's outcome names it, with its own metrics."""

    version: str | None = None  # None: there was no such model
    estimator: str | None = None  # candidate: the winning estimator (random_forest, ...)
    # Threat-class metrics (f1, precision, recall, roc_auc, pr_auc, accuracy) on this run's test
    # split; {} when this run did not evaluate the model (training skipped).
    metrics: dict[str, float] = {}
    # The promotion metric as compared: on the test rows Production was never trained on.
    score: float | None = None
    # At its own operating point on those rows: threshold, FPR with its interval, recall,
    # precision at the expected threat rate, alerts per 10,000 benign rows ({}: not compared).
    operating_point: dict[str, Any] = {}
    # candidate, training.engine=dask: how it was refit (TrainRecord.refit); None otherwise.
    refit: str | None = None


class RowCounts(Record):
    """Rows a run read and used (None: the step that counts them did not run)."""

    documents_read: int  # read from the source by this run
    new_batch: int  # after the previous watermark (drift compares these)
    snapshot: int  # the training window: last snapshot + the new batch
    train: int | None = None  # validated training split
    test: int | None = None  # validated test split
    quarantined: int | None = None  # rows validation set aside, with a reason each
    # Test rows the compared Production model was trained on (0 by construction; None: not
    # compared, or Production has no recorded lineage).
    production_rows_in_test: int | None = None


class OutcomeRecord(Record):
    """``outcome.json``: what one successful run decided, in words and figures."""

    run_id: str
    trigger: str | None = None  # who started the run: manual | scheduled | monitoring | cli
    trigger_reason: str | None = None  # monitoring: the evidence (drift, live F1) it acted on
    outcome: str  # promoted | challenger | kept_production | skipped_no_drift
    reason: str  # plain sentences: what happened and why
    branch_reason: str | None = None  # why the drift branch retrained or skipped
    model_name: str | None = None  # the registered model (netsec-<dataset>)
    metric: str | None = None  # the promotion metric (recall_at_budget, or training.metric)
    # Production when the run started: the model the candidate was compared with.
    production_before: ModelOutcome = ModelOutcome()
    # The version this run trained and registered; None when training was skipped.
    candidate: ModelOutcome | None = None
    production_after: str | None = None  # Production when the run ended: what serving loads
    # The challenger when the run ended (registry.shadow): serving scores it in shadow.
    challenger_after: str | None = None
    rows: RowCounts | None = None
    drift_report: str | None = None  # the drift report (HTML) of this run
    mlflow_run_id: str | None = None  # the pipeline run's parent MLflow run (training only)
    mlflow_experiment_id: str | None = None
    reconciled: list[ReconciledItem] = []  # what this run's start finished for earlier runs


class FeedbackRecord(Record):
    """Analysts' verdicts turned into training rows (netsec_tasks.feedback)."""

    verdicts: int  # standing verdicts in the store
    destination: str  # mongo:<db>.<collection> or the feedback rows' URI
    with_features: int = 0  # verdicts not yet appended whose prediction is in the log
    appended: int = 0  # rows added to the training source by this run
    already_present: int = 0  # verdicts already training rows (earlier runs)
    missing_predictions: int = 0  # verdicts not yet appended whose prediction is not in the log
    missing_examples: list[str] = []
    conflicts: int = 0  # new verdicts contradicting an identical training/test row
    conflicts_held: int = 0  # of those, held back (monitoring.on_conflict=hold)
    conflict_examples: list[dict[str, Any]] = []
    conflicts_checked_against: str | None = None  # Production version whose data was compared
    changed_after_append: int = 0  # verdicts changed after their row was appended (not applied)
    changed_examples: list[str] = []
    malformed_ids: int = 0  # stored verdicts whose id is not canonical (never used)
    threat_verdicts: int = 0
    reason: str = ""


class MonitoringRecord(Record):
    """One run of the monitoring step: the figures, the decision and where the reports are."""

    run_id: str
    model_name: str
    model_version: str | None  # Production when the run looked
    log: str  # the prediction log read (jsonl:<dir> or mongo:<db>.<coll>)
    documents_read: int
    rows_read: int  # new logged rows since the watermark
    rows_tested: int = 0  # rows in the drift test (valid under the contract)
    rows_excluded: int = 0  # rows that break the input contract (reported)
    drift_tested: bool = False
    drift_detected: bool = False
    drift_share: float | None = None
    drifted_columns: list[str] = []
    drift_reason: str = ""
    # The new rows that break the input contract, as a finding: rows_checked, rows_excluded,
    # share, max_share, surge (share over validation.max_invalid_share), reason.
    contract: dict[str, Any] = {}
    labelled: int = 0  # verdicts on the Production version's predictions in window
    live: dict[str, Any] = {}  # precision/recall/F1 with intervals and counts
    traffic: dict[str, Any] = {}  # volume, threat rate, score distribution vs the test split
    trigger: bool = False  # retraining requested
    trigger_reason: str = ""
    report_uri: str | None = None  # YAML
    html_uri: str | None = None  # self-contained HTML with the trend
    mlflow_run_id: str | None = None
    watermark: dict[str, Any] = {}  # what the commit step records as read
    advance: bool = True  # False: too few rows, the same rows are read again next run


class ShadowRecord(Record):
    """One ``decide_challenger`` run (netsec_tasks.monitoring.shadow): the two models on the
    traffic both scored since the challenger was set, and what was decided."""

    run_id: str
    model_name: str
    production_version: str | None
    challenger_version: str | None = None
    since: dt.datetime | None = None  # when it became the challenger
    hours: float = 0.0  # in shadow so far
    rows: int = 0  # rows both models scored
    unscored_rows: int = 0  # rows logged since without the challenger's decision
    # Per model: alerts, rows, alert_rate with its interval, the budget's ceiling, the rate its
    # operating point expects, over_budget.
    production: dict[str, Any] = {}
    challenger: dict[str, Any] = {}
    agreement: float | None = None  # share of rows both decided alike
    disagreements: int = 0
    # The latest rows where they disagree that no analyst has judged yet (prediction_id, time,
    # both decisions and probabilities, the features), newest first: label them.
    listed_disagreements: list[dict[str, Any]] = []
    # On the labelled rows both scored: live metrics of each, the paired test.
    verdicts: dict[str, Any] = {}
    live_fpr: str = ""  # the challenger's live FPR against the budget, in words
    action: str  # none | wait | promoted | retired (promote | retire when not applied)
    reason: str
    applied: bool = False  # the registry was changed (not a dry run)
    report_uri: str | None = None
    html_uri: str | None = None


class EvaluationRecord(Record):
    """``netsec evaluate FILE``: one model version scored on one labelled file."""

    model_name: str
    model_version: str
    source: str  # the evaluated file
    source_sha256: str | None = None
    rows_read: int
    rows_scored: int
    rows_excluded: int = 0  # invalid rows or missing labels (--invalid flag)
    # Scored rows identical to a row the version was trained on (its netsec.train_hashes_uri);
    # None when the version records no training rows. The headline figures leave them out.
    rows_trained_on: int | None = None
    metrics: dict[str, float]  # threat class: f1, precision, recall, roc_auc, pr_auc, accuracy
    metrics_all_rows: dict[str, float] = {}  # the same on every scored row, trained-on ones too
    warnings: list[str] = []  # what the figures cannot be trusted for, said before them
    judged: bool = True  # False: more than validation.max_invalid_share of the rows left out
    confusion_matrix: list[list[int]]  # [[TN, FP], [FN, TP]], rows = truth
    # Per raw label (multi-class labels only): rows, threat?, rows in the right class, recall.
    per_label: dict[str, dict[str, Any]] | None = None
    # At the model's threshold on the headline rows (OperatingPoint.to_dict(), plus the budget
    # and over_budget), and per budget the threshold/FPR/recall/precision these rows would give.
    operating_point: dict[str, Any] = {}
    budget_table: list[dict[str, Any]] = []
    # Reasons (issue 24), the summary the command prints: {"unit", "rows" (what was explained),
    # "importance": the 5 columns of largest mean |contribution| [{column, overall}],
    # "false_positives": {rows, explained, top_reasons: 5 x {column, rows, share}}}, or
    # {"available": False, "why": ...}; the report's YAML has every column and label.
    reasons: dict[str, Any] = {}
    report_uri: str  # YAML
    html_uri: str  # self-contained HTML
    plots: list[str] = []
    mlflow_run_id: str | None = None
