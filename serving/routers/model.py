"""GET /model, /health, /ready, /metrics.

An anonymous client sees what it needs to call the service: the model's name, version, class,
test metrics, data set, input features and labels (``/model``), ready or not (``/ready``), the
counters and figures (``/metrics``). The served version's run id, the training data's digest, the
inference path (which names the storage URI of the rows it was verified on) and the last load
error (registry and artifact URIs) are details, shown only to a request with a configured key
(``serving/access.py``); the server log always has them.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.access import DetailsDep
from serving.deps import ContractDep, ModelDep, StateDep
from serving.http_models import ERRORS, Health, ModelInfo, Readiness
from serving.model import LoadedModel

router = APIRouter(tags=["model"])


@router.get(
    "/model",
    response_model=ModelInfo,
    responses={503: ERRORS[503]},
    summary="The served model: version, test metrics, its operating point (threshold, "
    "false-positive budget, expected precision), features, data set and schema version, and the "
    "challenger scored in shadow beside it (run id, training-data digest and inference path with "
    "X-API-Key)",
)
async def model_info(
    model: ModelDep, contract: ContractDep, details: DetailsDep, state: StateDep
) -> ModelInfo:
    info = model.describe()
    if not details:
        info.update(run_id=None, dataset_digest=None, inference_path=None)
    challenger = state.manager.challenger
    # What the version's tags say it was trained on; the schema checking the inputs otherwise.
    return ModelInfo.model_validate(
        {
            **info,
            "dataset": info["dataset"] or contract.name,
            "schema_version": info["schema_version"] or contract.version,
            "challenger": _challenger(challenger, details) if challenger is not None else None,
            "challenger_error": state.manager.challenger_error if details else None,
        }
    )


def _challenger(model: LoadedModel, details: bool) -> dict:
    from netsec_tasks.registry import CHALLENGER_SINCE_TAG

    return {
        "version": model.version,
        "model_class": model.model_class,
        "since": model.tags.get(CHALLENGER_SINCE_TAG),
        "threshold": model.threshold.value,
        "metrics": model.metrics,
        "promotion_reason": model.tags.get("netsec.promotion_reason"),
        "run_id": model.run_id if details else None,
        "inference_path": model.inference_path if details else None,
        "loaded_at": model.loaded_at.isoformat(),
    }


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="Readiness: a model is loaded",
)
async def ready(state: StateDep, details: DetailsDep):
    model = state.manager.current
    why = state.manager.last_error
    if why and not details:  # registry and artifact URIs, paths: for key holders and the log
        why = "the last load failed; the server log has the error (or send X-API-Key)"
    body = Readiness(
        ready=model is not None,
        model_name=state.settings.model_name,
        model_version=model.version if model else None,
        detail=None if model else (why or "loading"),
    )
    return JSONResponse(body.model_dump(), status_code=200 if model else 503)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (text format); the served version's run and inference path with a key",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(state: StateDep, details: DetailsDep) -> Response:
    text = generate_latest(state.metrics.registry)
    if details:
        text += generate_latest(state.metrics.details)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
