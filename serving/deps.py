"""Shared state and FastAPI dependencies (model, API key)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.model import LoadedModel
from serving.predlog import LogEntry, PredictionLog
from serving.settings import Settings


@dataclass
class ServingState:
    settings: Settings
    metrics: Metrics
    manager: ModelManager
    executor: ThreadPoolExecutor
    predlog: PredictionLog | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def run(self, fn, *args):
        """Run blocking work (parsing, validation, inference) on the small inference pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def infer(self, model: LoadedModel, x) -> tuple[Any, Any]:
        """Blocking: predict and record model time. Called on the inference pool."""
        start = time.perf_counter()
        is_threat, proba = model.predict(x)
        n = len(is_threat)
        self.metrics.inference.labels(Metrics.rows_bucket(n)).observe(time.perf_counter() - start)
        self.metrics.count_predictions(int(is_threat.sum()), n)
        return is_threat, proba

    def log_predictions(self, model: LoadedModel, x, is_threat, proba, labels, route: str) -> None:
        if self.predlog is None:
            return
        self.predlog.submit(LogEntry(
            time=dt.datetime.now(dt.timezone.utc), model_name=model.name,
            model_version=model.version, features=model.features, inputs=x,
            is_threat=is_threat, probability=proba, labels=labels, route=route))


# The dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
# dependency in its thread pool, and three thread hops per request cost more than a one-row
# prediction. They do no blocking work, so the event loop runs them directly.

async def get_state(request: Request) -> ServingState:
    return request.app.state.serving


async def current_model(state: ServingState = Depends(get_state)) -> LoadedModel:
    """The model for this request: read once, so a swap mid-request cannot mix versions."""
    model = state.manager.current
    if model is None:
        why = state.manager.last_error or "the first load is still running"
        raise HTTPException(503, f"no model loaded yet ({why}); retrying every "
                                 f"{state.settings.retry_interval_seconds:g}s")
    return model


api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required on /predict* and /train when the server "
                                          "sets NETSEC_SERVING_API_KEY")


async def require_api_key(key: str | None = Depends(api_key_header),
                          state: ServingState = Depends(get_state)) -> None:
    expected = state.settings.api_key
    if expected is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong X-API-Key header",
                            headers={"WWW-Authenticate": "X-API-Key"})
