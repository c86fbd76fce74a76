"""Shared state and FastAPI dependencies (state, model, contract, scoring key), with ``Annotated``
aliases as in FastAPI's full-stack template: a route says ``model: ModelDep``."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from netsec_tasks.contract import Contract
from netsec_tasks.feedback import JsonlFeedbackStore, MongoFeedbackStore
from serving.access import require_scoring_key
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.model import LoadedModel
from serving.prediction_writer import MongoSink, PredictionLog
from serving.settings import Settings

# Where analysts' verdicts are kept: beside the prediction log (make_feedback_store).
VerdictStore = JsonlFeedbackStore | MongoFeedbackStore


@dataclass
class ServingState:
    settings: Settings
    metrics: Metrics
    manager: ModelManager
    executor: ThreadPoolExecutor
    contract: Contract
    prediction_log: PredictionLog | None = None
    feedback: VerdictStore | None = None  # None when the prediction log is off
    extra: dict[str, Any] = field(default_factory=dict)

    async def run(self, fn, *args):
        """Run blocking work (parsing, validation, inference) on the small inference pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def run_small(self, size: int, model: LoadedModel, fn, *args):
        """``fn(*args)`` on the event loop itself when the request is small (``size`` bytes up to
        :data:`INLINE_BYTES`) and ``model`` has a verified fast path; else on the pool.

        A few rows on the fast path cost ~50-100 us of CPU, while the hop to the pool and back
        (a queue put, a GIL hand-over each way, the loop's self-pipe wake-up) cost ~200-300 us of
        CPU on a busy 2-core host (measured in process: 776 -> 446 us per one-row request); the
        loop is held no longer than the hop would have taken.
        """
        if size <= INLINE_BYTES and model.fast is not None:
            return fn(*args)
        return await self.run(fn, *args)


def make_feedback_store(settings: Settings, prediction_log: PredictionLog | None) -> VerdictStore | None:
    """The verdict store beside the prediction log: a collection of the log's MongoDB database
    (``settings.feedback_collection``), or the JSONL file ``settings.feedback_file``; None when
    the log is off (verdicts are matched against logged predictions)."""
    if prediction_log is None:
        return None
    # Both are filled in from the pipeline config when Settings is built.
    assert settings.model_name and settings.feedback_collection
    if isinstance(prediction_log.sink, MongoSink):
        db = prediction_log.sink.collection.database
        return MongoFeedbackStore(db[settings.feedback_collection], settings.model_name)
    return JsonlFeedbackStore(settings.feedback_file, settings.model_name)


# /predict bodies up to this size (a few rows of 30 features; one row is ~0.7 kB) are scored on
# the event loop (ServingState.run_small).
INLINE_BYTES = 4096


# The dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
# dependency in its thread pool, and three thread hops per request cost more than a one-row
# prediction. They do no blocking work, so the event loop runs them directly.


async def get_state(request: Request) -> ServingState:
    return request.app.state.serving


StateDep = Annotated[ServingState, Depends(get_state)]


async def current_model(state: StateDep) -> LoadedModel:
    """The model for this request: read once, so a swap mid-request cannot mix versions."""
    model = state.manager.current
    if model is None:
        why = state.manager.last_error or "the first load is still running"
        raise HTTPException(
            503, f"no model loaded yet ({why}); retrying every {state.settings.retry_interval_seconds:g}s"
        )
    contract = state.contract
    if set(model.features) != set(contract.features):
        extra = sorted(set(model.features) - set(contract.features))
        lacking = sorted(set(contract.features) - set(model.features))
        raise HTTPException(
            503,
            f"model {model.name} v{model.version} does not match the "
            f"'{contract.name}' schema this service checks inputs with "
            f"(model-only features: {extra[:5]}, schema-only: {lacking[:5]}); "
            "set NETSEC_DATASET / NETSEC_CONFIG to the model's data set",
        )
    return model


ModelDep = Annotated[LoadedModel, Depends(current_model)]


async def get_contract(state: StateDep) -> Contract:
    return state.contract


ContractDep = Annotated[Contract, Depends(get_contract)]


@dataclass(frozen=True)
class Verdicts:
    """What POST /feedback needs: the store verdicts go to and the log whose ids they name."""

    store: VerdictStore
    log: PredictionLog


async def get_verdicts(state: StateDep) -> Verdicts:
    if state.prediction_log is None or state.feedback is None:
        raise HTTPException(
            503, "feedback needs the prediction log, which is off (NETSEC_SERVING_LOG_ENABLED=false)"
        )
    return Verdicts(state.feedback, state.prediction_log)


VerdictsDep = Annotated[Verdicts, Depends(get_verdicts)]

# The scoring key's dependency (serving.access holds every access rule).
require_api_key = require_scoring_key
