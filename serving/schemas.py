"""Request and response models: what the OpenAPI document shows and clients can rely on."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Label = int | float | str | bool | None


class PredictRequest(BaseModel):
    """Rows to score. Every record has exactly the model's feature columns (GET /model)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "example": {"records": [{"having_IP_Address": -1, "URL_Length": 1, "...": 0}]}})

    records: list[dict[str, float]] = Field(..., min_length=1)


class Prediction(BaseModel):
    label: Label = Field(..., description="the data set's label, e.g. -1 (phishing) or 1")
    is_threat: Literal[0, 1]
    threat_probability: float | None = Field(..., ge=0, le=1)
    model_version: str


class PredictResponse(BaseModel):
    model_name: str
    model_version: str
    predictions: list[Prediction]


class CsvPredictResponse(BaseModel):
    model_name: str
    model_version: str
    columns: list[str] = Field(..., description="input columns, then label, is_threat, "
                                                "threat_probability, model_version")
    records: list[dict[str, Any]]
    n_rows: int
    n_threats: int


class FeatureSpec(BaseModel):
    name: str
    type: str = Field(..., description="MLflow signature type: long, double, string...")


class ModelInfo(BaseModel):
    name: str
    version: str
    run_id: str | None
    model_class: str
    metrics: dict[str, float] = Field(..., description="test_* metrics of the training run")
    dataset_digest: str | None = Field(..., description="netsec.dataset_digest of the training data")
    dataset: str | None = Field(None, description="netsec.dataset: the data set's schema name")
    schema_version: str | None = Field(None, description="netsec.schema_version of that schema")
    features: list[FeatureSpec]
    target: str | None
    positive_label: Label
    negative_label: Label
    inference_path: str
    loaded_at: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    model_name: str
    model_version: str | None = None
    detail: str | None = None


class TrainRequest(BaseModel):
    """Optional: any extra keys are passed to the DAG run's conf."""

    model_config = ConfigDict(extra="allow")

    force_retrain: bool = Field(False, description="train even when no drift was detected")


class TrainResponse(BaseModel):
    dag_id: str
    dag_run_id: str
    state: str | None = None
    conf: dict[str, Any] = {}


class ErrorResponse(BaseModel):
    detail: str
    column: str | None = None
    row: int | None = None


ERRORS = {
    401: {"model": ErrorResponse, "description": "missing or wrong X-API-Key"},
    413: {"model": ErrorResponse, "description": "body or row count over the limit"},
    415: {"model": ErrorResponse, "description": "wrong content type"},
    422: {"model": ErrorResponse, "description": "input does not match the model's features"},
    503: {"model": ErrorResponse, "description": "no model loaded yet"},
}
