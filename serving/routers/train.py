"""POST /train: trigger the training DAG in Airflow (the control plane).

It needs the control-plane key (``NETSEC_SERVING_CONTROL_KEY``, never the scoring key;
``serving/access.py``) and is off without one. The body is the run's params, each checked here
before anything reaches Airflow: a known param (an unknown key is a 422 naming it), within the
config field's range and the bounds of a triggered run (``netsec_tasks.run_params``), else a 422
naming the param, its value and the bound. The DAG checks the same bounds again (its Params, and
each task before it reads its config).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from serving.access import require_control_key
from serving.airflow_client import AirflowRefused, AirflowUnavailable, trigger_dag_run
from serving.deps import StateDep
from serving.http_models import ERRORS, ErrorResponse, TrainRequest, TrainResponse
from serving.inputs import InputError
from serving.limits import json_body, validated

router = APIRouter(tags=["train"], dependencies=[Depends(require_control_key)])


@router.post(
    "/train",
    response_model=TrainResponse,
    responses={
        401: ERRORS[401],
        403: {
            "model": ErrorResponse,
            "description": "/train is off (no control key configured), or the key sent is not the control key",
        },
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
    summary="Trigger the netsec_training DAG with the run's params (bounded: see TrainRequest)",
)
async def train(request: Request, state: StateDep) -> JSONResponse:
    conf = _conf_from(await request.body(), request.headers.get("content-type", ""))
    _check_bounds(conf)
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
    req = validated(TRAIN_REQUEST, json_body(body, content_type, "the options"))
    return req.model_dump(exclude_none=True)


# The body of POST /train (optional): the run's params.
TRAIN_REQUEST = TypeAdapter(TrainRequest)


def _check_bounds(conf: dict) -> None:
    """The params applied to this deployment's config: the config's own ranges (n_iter,
    cv_folds, candidates...) and a triggered run's bounds; a 422 naming the param otherwise.
    Paths are checked lexically (the worker resolves links when it reads them)."""
    from netsec_tasks.config import load_config
    from netsec_tasks.errors import ConfigError
    from netsec_tasks.run_params import check_run_params, run_overrides

    cfg = load_config()
    try:
        check_run_params(cfg, conf, resolve=False)
        cfg.with_overrides(run_overrides(conf))
    except ConfigError as exc:
        raise InputError(str(exc)) from None
