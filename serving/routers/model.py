"""GET /model, /health, /ready, /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import ContractDep, ModelDep, StateDep
from serving.http_models import ERRORS, Health, ModelInfo, Readiness

router = APIRouter(tags=["model"])


@router.get(
    "/model",
    response_model=ModelInfo,
    responses={503: ERRORS[503]},
    summary="The served model: version, test metrics, training-data digest, features, data set and schema version",
)
async def model_info(model: ModelDep, contract: ContractDep) -> ModelInfo:
    info = model.describe()
    # What the version's tags say it was trained on; the schema checking the inputs otherwise.
    return ModelInfo.model_validate(
        {
            **info,
            "dataset": info["dataset"] or contract.name,
            "schema_version": info["schema_version"] or contract.version,
        }
    )


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="Readiness: a model is loaded",
)
async def ready(state: StateDep):
    model = state.manager.current
    body = Readiness(
        ready=model is not None,
        model_name=state.settings.model_name,
        model_version=model.version if model else None,
        detail=None if model else (state.manager.last_error or "loading"),
    )
    return JSONResponse(body.model_dump(), status_code=200 if model else 503)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (text format)",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
