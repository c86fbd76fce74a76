"""Inference and its bookkeeping: model time, prediction counts, the prediction log, the input
contract's counters. Blocking; called on the inference pool (``ServingState.run``)."""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import time
from typing import Any

import numpy as np

from netsec_tasks.prediction_log import new_request_id
from serving.metrics import Metrics
from serving.model import LoadedModel
from serving.prediction_writer import LogEntry

log = logging.getLogger("netsec.serving")

# After a request this large, freed memory is handed back to the OS (see release_memory).
RELEASE_AFTER_ROWS = 10_000


def infer(state, model: LoadedModel, x) -> tuple[np.ndarray, np.ndarray]:
    """(is_threat 0/1, threat probability) for ``x``; records model time and class counts."""
    start = time.perf_counter()
    is_threat, proba = model.predict(imputable(model, x))
    n = len(is_threat)
    state.metrics.inference.labels(Metrics.rows_bucket(n)).observe(time.perf_counter() - start)
    state.metrics.count_predictions(int(is_threat.sum()), n, version=model.version)
    return is_threat, proba


def imputable(model: LoadedModel, x):
    """Rows holding NaN (nullable cells sent as null) go through the Pipeline, whose imputer
    fills them, unless the compiled fast path says it reproduces the imputer
    (``fast.supports_nan``, verified at load on rows with NaN cells)."""
    fast = getattr(model, "fast", None)
    if (
        isinstance(x, np.ndarray)
        and fast is not None
        and not getattr(fast, "supports_nan", False)
        and np.isnan(x).any()
    ):
        import pandas as pd

        return pd.DataFrame(x, columns=list(model.features))
    return x


def log_predictions(state, model: LoadedModel, x, is_threat, proba, labels, route: str) -> str:
    """Hand the request's rows to the prediction log (never blocks; see serving.prediction_writer),
    with the challenger loaded now, which scores them there in shadow (serving.shadow).
    Returns the request id: row ``k`` is prediction ``<request id>-<k>``."""
    now = dt.datetime.now(dt.UTC)
    request_id = new_request_id(now)
    if state.prediction_log is None or len(is_threat) == 0:
        return request_id
    challenger = state.manager.challenger
    if challenger is not None and challenger.version == model.version:
        challenger = None  # just promoted: the model that answered
    state.prediction_log.submit(
        LogEntry(
            time=now,
            model_name=model.name,
            model_version=model.version,
            features=model.features,
            inputs=x,
            is_threat=is_threat,
            probability=proba,
            labels=labels,
            route=route,
            request_id=request_id,
            challenger=challenger,
        )
    )
    return request_id


def count_inputs(
    state, route: str, *, refused: int = 0, flagged: int = 0, null_cells: np.ndarray | None = None
) -> None:
    """The contract's counters: refused and flagged rows, rows scored with imputed cells."""
    m = state.metrics
    if refused:
        m.input_rows.labels("refused", route).inc(refused)
    if flagged:
        m.input_rows.labels("flagged", route).inc(flagged)
    if null_cells is not None and len(null_cells):
        imputed = int(np.count_nonzero(null_cells))
        if imputed:
            m.input_rows.labels("imputed", route).inc(imputed)
            m.imputed_cells.labels(route).inc(int(null_cells.sum()))


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


_TRIM = _malloc_trim()


def release_memory(n_rows: int) -> None:
    """After a large request, return freed heap pages to the OS.

    A 100k-row upload allocates a few hundred MB of short-lived frames; glibc keeps the freed
    pages in its arenas, so the process RSS stays up although nothing holds them.
    ``malloc_trim(0)`` releases them (a few ms, only after requests of RELEASE_AFTER_ROWS rows).
    """
    if _TRIM is not None and n_rows >= RELEASE_AFTER_ROWS:
        _TRIM(0)
