"""The HTTP API's request and response models (pydantic): what the OpenAPI document shows and
clients can rely on. The data set's own schema is :mod:`netsec_tasks.dataset_schema`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Label = int | float | str | bool | None


def predict_request_schema(contract, max_rows: int) -> dict[str, Any]:
    """The one JSON request schema of POST /predict, generated from the input contract (the
    data set's schema): each feature with its type, allowed values or range and nullability,
    the passthrough columns, and the row limit. The route declares it; nothing patches it."""
    return {
        "title": "PredictRequest",
        "description": (
            f"Rows to score for the '{contract.name}' data set"
            + (f" (schema version {contract.version})" if contract.version else "")
            + ": every feature column, null where a nullable value is missing (the "
            f"model imputes it); {', '.join(contract.passthrough)} may be sent and "
            "are echoed back."
        ),
        "type": "object",
        "required": ["records"],
        "additionalProperties": False,
        "properties": {
            "records": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_rows,
                "items": contract.record_json_schema(),
            }
        },
        "example": {
            "records": [{f: (s.allowed[0] if s.allowed else 0) for f, s in contract.schema.columns.items()}]
        },
    }


class Prediction(BaseModel):
    """One scored row. Passthrough columns sent with the row (ids, ignored columns, the
    target) follow, and with ``echo=true`` every input column."""

    model_config = ConfigDict(extra="allow")

    predicted_label: Label = Field(..., description="the data set's label, e.g. -1 (phishing) or 1")
    is_threat: Literal[0, 1]
    threat_probability: float | None = Field(..., ge=0, le=1)
    imputed_cells: int = Field(..., ge=0, description="null features the model's imputer filled")
    model_version: str
    prediction_id: str = Field(
        ..., description="this prediction's id: send it to POST /feedback with the analyst's verdict"
    )


class PredictResponse(BaseModel):
    model_name: str
    model_version: str
    predictions: list[Prediction]


class CsvPredictResponse(BaseModel):
    model_name: str
    model_version: str
    columns: list[str] = Field(
        ...,
        description="echoed input columns (passthrough columns; all "
        "of them with echo=true), then predicted_label, "
        "is_threat, threat_probability, imputed_cells, "
        "status, reason, model_version, prediction_id "
        "(null for invalid rows)",
    )
    records: list[dict[str, Any]]
    n_rows: int
    n_threats: int
    n_invalid: int = Field(..., description="rows returned unscored with status=invalid (invalid=flag)")
    n_imputed_rows: int
    notes: list[str] = Field(
        [],
        description="what the CSV reader did that you should know: a trailing delimiter dropped, "
        "Excel's sep= line, a file decoded from UTF-16, records spanning lines",
    )


class FeatureSpec(BaseModel):
    name: str
    type: str = Field(..., description="MLflow signature type: long, double, string...")


class OperatingPointInfo(BaseModel):
    """What the threshold does on labelled test rows (netsec_tasks.operating_point)."""

    model_config = ConfigDict(extra="allow")

    threshold: float
    rows: int
    benign: int
    threats: int
    fpr: float | None = Field(None, description="false-positive rate: false alerts / benign rows")
    fpr_low: float | None = Field(None, description="lower end of its Clopper-Pearson interval")
    fpr_high: float | None = Field(None, description="upper end of its Clopper-Pearson interval")
    recall: float | None = None
    precision_at_rate: float | None = Field(None, description="precision at the expected threat rate")
    expected_threat_rate: float | None = None
    alerts_per_10k_benign: float | None = Field(None, description="false alerts per 10,000 benign rows")
    confidence: float | None = None


class PromotionPoints(BaseModel):
    production_version: str | None = Field(None, description="the Production version compared with")
    candidate: OperatingPointInfo | None = Field(None, description="this version, on the compared rows")
    production: OperatingPointInfo | None = Field(
        None, description="that Production version at its own threshold, on the same rows"
    )


class DecisionInfo(BaseModel):
    """The served model's operating point: ``is_threat`` is 1 when ``threat_probability`` reaches
    ``threshold``."""

    threshold: float = Field(..., description="is_threat = threat_probability >= threshold")
    threshold_recorded: bool = Field(
        ..., description="false: a version registered before thresholds, decided at 0.5"
    )
    rule: str
    max_false_positive_rate: float | None = Field(
        None, description="the false-positive budget it was chosen for"
    )
    expected_threat_rate: float | None = Field(None, description="the deployment's threat rate it assumes")
    objective: str | None = None
    expected_precision: float | None = Field(
        None, description="precision expected at that threat rate (its test figures)"
    )
    test: OperatingPointInfo | None = Field(None, description="its test split's figures at the threshold")
    promotion: PromotionPoints | None = Field(
        None, description="the promotion's comparison with the Production version it replaced"
    )


class ChallengerInfo(BaseModel):
    """The challenger (registry.shadow): scored in shadow on every logged row; its decisions go
    to the prediction log and /metrics, never into a response."""

    version: str
    model_class: str
    since: str | None = Field(None, description="when it became the challenger (tag netsec.challenger_since)")
    threshold: float = Field(..., description="its own decision threshold on P(threat)")
    metrics: dict[str, float] = Field(..., description="test_* metrics of its training run")
    promotion_reason: str | None = Field(None, description="why it passed the promotion gate")
    run_id: str | None = Field(None, description="its MLflow run (with X-API-Key only)")
    inference_path: str | None = Field(None, description="how it scores rows (with X-API-Key only)")
    loaded_at: str


class ModelInfo(BaseModel):
    name: str
    version: str
    run_id: str | None = Field(None, description="the version's MLflow run (with X-API-Key only)")
    model_class: str
    metrics: dict[str, float] = Field(..., description="test_* metrics of the training run")
    dataset_digest: str | None = Field(
        None, description="netsec.dataset_digest of the training data (with X-API-Key only)"
    )
    features: list[FeatureSpec]
    target: str | None
    positive_label: Label
    negative_label: Label
    inference_path: str | None = Field(
        None,
        description="how rows are scored and where the fast path was verified (with X-API-Key only)",
    )
    loaded_at: str
    dataset: str | None = Field(
        None,
        description="the data set the version was trained on "
        "(tag netsec.dataset), else the one whose schema "
        "checks the inputs",
    )
    schema_version: str | None = Field(
        None, description="that schema's version (tag netsec.schema_version, else the schema's)"
    )
    decision: DecisionInfo
    role: Literal["production"] = Field(
        "production", description="this version decides: every answer is its decision"
    )
    challenger: ChallengerInfo | None = Field(
        None, description="the version scored in shadow beside it (registry.shadow), if any"
    )
    challenger_error: str | None = Field(
        None, description="why the registry's challenger is not loaded (with X-API-Key only)"
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    model_name: str
    model_version: str | None = None
    detail: str | None = None


class TrainRequest(BaseModel):
    """The training run's params (the netsec_training DAG's; each None keeps the configured
    value). Any other key is refused; the bounds of a triggered run apply (netsec_tasks.run_params:
    promotion_margin >= 0, min_score >= the configured floor, source_path under
    source.path_roots)."""

    model_config = ConfigDict(extra="forbid")

    force_retrain: bool = Field(False, description="train even when no drift was detected")
    source: Literal["file", "mongo"] | None = Field(None, description="source.kind for this run")
    source_path: str | None = Field(
        None, max_length=4096, description="source.path for this run: only under source.path_roots"
    )
    n_iter: int | None = Field(None, description="training.n_iter for this run")
    cv_folds: int | None = Field(None, description="training.cv_folds for this run")
    candidates: list[str] | None = Field(None, description="training.candidates for this run")
    promotion_margin: float | None = Field(
        None, ge=0, le=1, description="registry.promotion_margin for this run: at least 0"
    )
    min_score: float | None = Field(
        None, ge=0, le=1, description="registry.min_score for this run: at least the configured one"
    )


class TrainResponse(BaseModel):
    dag_id: str
    dag_run_id: str
    state: str | None = None
    conf: dict[str, Any] = {}


class Problem(BaseModel):
    row: int | None = Field(None, description="0-based position among the rows sent")
    where: str | None = Field(
        None,
        description="the row as you find it: records[3], or the CSV's physical line: line 12, lines 12-14",
    )
    column: str | None
    value: Any = None
    reason: str
    allowed: str | None = None


class ErrorResponse(BaseModel):
    detail: str
    column: str | None = None
    row: int | None = None
    where: str | None = Field(None, description="the first problem's row as you find it (see Problem)")
    value: Any = Field(None, description="the offending value, as sent")
    allowed: str | None = Field(None, description="what the column accepts")
    problems: list[Problem] | None = Field(None, description="every row problem found")


ERRORS = {
    401: {"model": ErrorResponse, "description": "missing or wrong X-API-Key"},
    413: {"model": ErrorResponse, "description": "body or row count over the limit"},
    415: {"model": ErrorResponse, "description": "wrong content type"},
    422: {
        "model": ErrorResponse,
        "description": "input breaks the data set's contract: a "
        "missing or unknown column, a value of the wrong "
        "type, outside its domain, or too many nulls",
    },
    503: {"model": ErrorResponse, "description": "no model loaded yet"},
}
