"""POST /train: trigger the training DAG in Airflow."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from serving.airflow_client import AirflowRefused, AirflowUnavailable, trigger_dag_run
from serving.deps import StateDep, require_api_key
from serving.http_models import ERRORS, ErrorResponse, TrainRequest, TrainResponse
from serving.inputs import InputError

TRAIN_OFF = (
    "POST /train is off: it starts a training run in Airflow with this service's "
    "Airflow credentials, so it needs an API key. To enable it, set "
    "NETSEC_SERVING_API_KEY on the serving service and send that key in the X-API-Key "
    "header."
)


async def require_train_enabled(state: StateDep) -> None:
    """403 unless an API key is configured (checked before the key itself)."""
    if not state.settings.train_enabled:
        raise HTTPException(403, TRAIN_OFF)


router = APIRouter(tags=["train"], dependencies=[Depends(require_train_enabled), Depends(require_api_key)])


@router.post(
    "/train",
    response_model=TrainResponse,
    responses={
        401: ERRORS[401],
        403: {"model": ErrorResponse, "description": "/train is off: no API key is configured"},
        415: ERRORS[415],
        422: ERRORS[422],
        502: {"model": ErrorResponse, "description": "Airflow answered with an error"},
        503: {"model": ErrorResponse, "description": "Airflow is unreachable"},
    },
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": TrainRequest.model_json_schema()}},
        }
    },
    summary="Trigger the netsec_training DAG; extra body keys become the run's conf",
)
async def train(request: Request, state: StateDep) -> JSONResponse:
    conf = _conf_from(await request.body(), request.headers.get("content-type", ""))
    settings = state.settings
    try:
        run = await trigger_dag_run(settings, conf)
    except AirflowUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    except AirflowRefused as exc:
        return JSONResponse({"detail": str(exc)}, status_code=502)
    return JSONResponse(
        TrainResponse(
            dag_id=settings.airflow_dag_id, dag_run_id=run["dag_run_id"], state=run.get("state"), conf=conf
        ).model_dump()
    )


def _conf_from(body: bytes, content_type: str) -> dict:
    if not body.strip():
        return {"force_retrain": False}
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise InputError("send the options as JSON (Content-Type: application/json)", status_code=415)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"body is not valid JSON: {str(exc)[:200]}") from None
    try:
        req = TrainRequest.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        col = ".".join(str(p) for p in err["loc"]) or None
        raise InputError(f"{col or 'body'}: {err['msg']}", column=col) from None
    return req.model_dump()
