"""The netsec serving application: ``uvicorn serving.app:app`` or ``netsec serve``.

``create_app(settings)`` builds an app (tests build several); the module-level ``app`` reads the
environment (``NETSEC_SERVING_*``, ``MLFLOW_TRACKING_URI``). Start-up never waits for the model
registry: the model loads in the background and /ready says when it is there.

Closed by default (``serving/access.py``): every state-changing request a browser sends from
another origin is refused (an app-wide dependency, so no route can miss it); CORS is off unless
``NETSEC_SERVING_CORS_ORIGINS`` lists origins; ``/docs`` and ``/redoc`` load Swagger UI and ReDoc
from the pinned ``fastapi-offline`` package's assets, served here (``/static-offline-docs``), so
they work on a network without internet and never fetch code from a CDN.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from serving.access import refuse_cross_site
from serving.deps import ServingState, make_feedback_store
from serving.inputs import InputError
from serving.limits import BodySizeLimitMiddleware, BodyTooLarge, too_large_body
from serving.manager import ModelManager
from serving.memory import fixed_mmap_threshold
from serving.metrics import Metrics, ObserveMiddleware
from serving.prediction_writer import make_prediction_log
from serving.routers import feedback as feedback_router
from serving.routers import model as model_router
from serving.routers import predict as predict_router
from serving.routers import train as train_router
from serving.routers import ui as ui_router
from serving.routers.ui import ASSETS
from serving.settings import Settings, load_contract
from serving.shadow import ShadowScorer

log = logging.getLogger("netsec.serving")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.check_train_settings()  # ConfigError: refuse to start, naming the settings
    assert settings.model_name  # derived from the pipeline config when not set
    metrics = Metrics(settings.model_name)
    contract = load_contract(settings)  # a bad schema stops the start, naming the file

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        fixed_mmap_threshold()  # large request buffers go back to the OS when freed
        state = ServingState(
            settings=settings,
            metrics=metrics,
            manager=ModelManager(
                settings,
                on_swap=metrics.model_swapped,
                on_check=metrics.monitoring_figures,
                on_challenger=metrics.challenger_swapped,
            ),
            executor=ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="netsec-infer"),
            contract=contract,
            # The challenger scores the logged rows in the log's writer thread (serving.shadow).
            prediction_log=make_prediction_log(
                settings,
                on_drop=metrics.log_dropped.inc,
                on_write=metrics.log_written.inc,
                shadow=ShadowScorer(metrics),
            ),
        )
        state.feedback = make_feedback_store(settings, state.prediction_log)
        app.state.serving = state
        await state.manager.start()
        try:
            yield
        finally:
            await state.manager.stop()
            if state.prediction_log:
                state.prediction_log.close()
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(
        title="netsec serving",
        description="Scores rows with the Production model of the MLflow registry.",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(refuse_cross_site)],
    )
    app.include_router(ui_router.router)
    app.include_router(predict_router.make_router(contract, settings.max_rows))
    app.include_router(feedback_router.router)
    app.include_router(model_router.router)
    app.include_router(train_router.router)
    app.mount("/static", StaticFiles(directory=ASSETS / "static"), name="static")
    _install_error_handlers(app)
    if settings.cors_origins:  # closed unless configured: only the listed origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    # Added last = outermost: the size cap's 413 is timed and counted like any response.
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError):
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge):
        limit = request.app.state.serving.settings.max_body_bytes
        return JSONResponse(too_large_body(limit), status_code=413)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # A bug, not bad input: log the traceback here, never send it to the client.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)


app = create_app()
