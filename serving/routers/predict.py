"""POST /predict (JSON records) and POST /predict/csv (multipart CSV upload).

Both apply the data set's input contract (serving.inputs, netsec_tasks.contract) and answer with
the same output columns as ``netsec predict``: the echoed input columns, then
``predicted_label, is_threat, threat_probability, imputed_cells, status, reason, model_version,
prediction_id``; the prediction id is what ``POST /feedback`` takes back.

``explain=K`` (both routes, default 0) adds each scored row's K strongest reasons
(:mod:`netsec_tasks.explain`, through :meth:`serving.model.LoadedModel.explain`): a ``reasons``
list per prediction in JSON, one ``reasons`` text cell per row in CSV, and the answer's
``reasons_unit`` and ``reasons_base_value``. Without it the answer is byte for byte what it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from netsec_tasks.contract import Contract, scored_frame
from netsec_tasks.dataset_schema import REASONS_COLUMN
from netsec_tasks.explain import reasons_text
from netsec_tasks.prediction_log import prediction_ids
from netsec_tasks.sinks import csv_chunks
from netsec_tasks.sinks import json_bytes as _encode  # the JSON sink: text from data stays valid
from serving.deps import ContractDep, ModelDep, ServingState, StateDep, require_api_key
from serving.http_models import ERRORS, CsvPredictResponse, PredictResponse, predict_request_schema
from serving.inference import count_inputs, explain, infer, log_predictions
from serving.inputs import InputError, InvalidPolicy, ModelInput, csv_input, fast_json_input, json_input
from serving.limits import BodyTooLarge, is_json
from serving.memory import json_answer, release_memory
from serving.model import LoadedModel

EchoQuery = Annotated[
    bool,
    Query(
        description="also return every input column (features included); passthrough columns always come back"
    ),
]


MAX_EXPLAIN = 1000
# explain=K and explain_rows are read from the query string by hand (explain_ask), not declared
# as Query parameters: FastAPI's validation of one more declared parameter costs every request
# ~20-35 us (measured), explain or not, and a one-row answer takes under 1 ms. Documented here.
EXPLAIN_PARAMETERS = [
    {
        "name": "explain",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_EXPLAIN, "default": 0},
        "description": "the K strongest reasons of each scored row: column, value, contribution and "
        "direction (capped at the number of features), with reasons_unit (log-odds or probability) "
        "and reasons_base_value in the answer; 0 (default): none, and the answer is unchanged",
    },
    {
        "name": "explain_rows",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["all", "alerts"], "default": "all"},
        "description": "with explain=K: reasons for every scored row (all), or for the rows "
        "predicted a threat only (alerts; the others get null): reasons cost time per row "
        "(TreeSHAP), and an analyst triages alerts",
    },
]


@dataclass(frozen=True)
class ExplainAsk:
    """What a request asks of the reasons: the K strongest per row, for all rows or alerts only."""

    k: int
    alerts_only: bool = False


def explain_ask(request: Request) -> ExplainAsk | None:
    """The request's ``explain`` / ``explain_rows`` (None: no reasons asked, the common case,
    decided without parsing the query string). Raises InputError (422) naming the value."""
    if b"explain" not in request.scope.get("query_string", b""):
        return None
    params = request.query_params
    raw = params.get("explain", "0")
    try:
        k = int(raw)
    except ValueError:
        k = -1
    if not 0 <= k <= MAX_EXPLAIN:
        raise InputError(
            f"query parameter explain={raw[:40]!r}: expected a whole number from 0 to {MAX_EXPLAIN} "
            "(the K strongest reasons of each row)",
            value=raw[:80],
            allowed=f"0..{MAX_EXPLAIN}",
        )
    rows = params.get("explain_rows", "all")
    if rows not in ("all", "alerts"):
        raise InputError(
            f"query parameter explain_rows={rows[:40]!r}: expected all or alerts",
            value=rows[:80],
            allowed="all, alerts",
        )
    return ExplainAsk(k, rows == "alerts") if k else None


def make_router(contract: Contract, max_rows: int) -> APIRouter:
    """The predict routes; the JSON request schema is generated from ``contract``."""
    router = APIRouter(tags=["predict"], dependencies=[Depends(require_api_key)])

    @router.post(
        "/predict",
        response_model=PredictResponse,
        responses={k: ERRORS[k] for k in (401, 413, 415, 422, 503)},
        openapi_extra={
            "parameters": EXPLAIN_PARAMETERS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": predict_request_schema(contract, max_rows)}},
            },
        },
        summary="Score rows sent as JSON records",
    )
    async def predict(
        request: Request, model: ModelDep, state: StateDep, echo: EchoQuery = False
    ) -> Response:
        # The body is parsed by hand: FastAPI's body parameter would answer a wrong content
        # type with 422 (we owe 415) and validate every cell twice.
        ask = explain_ask(request)
        if not is_json(request.headers.get("content-type", "")):
            raise InputError("send the records as JSON (Content-Type: application/json)", status_code=415)
        body = await request.body()
        if not body.strip():
            raise InputError('empty body; send {"records": [{feature: value, ...}]}')
        if ask is None:
            content = await state.run_small(len(body), model, _score_json, state, model, body, echo, ask)
        else:
            # Reasons can cost a forest's TreeSHAP time per row: never on the event loop.
            content = await state.run(_score_json, state, model, body, echo, ask)
        return json_answer(content)

    @router.post(
        "/predict/csv",
        response_model=CsvPredictResponse,
        responses={
            200: {
                "content": {"text/csv": {}},
                "description": "JSON, or CSV (streamed) when Accept: text/csv or ?format=csv",
            },
            400: ERRORS[422] | {"description": "malformed multipart body"},
            **{k: ERRORS[k] for k in (401, 413, 415, 422, 503)},
        },
        openapi_extra={
            "parameters": EXPLAIN_PARAMETERS,
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {
                                    "type": "string",
                                    "format": "binary",
                                    "description": "CSV with a header row: the feature columns of the "
                                    f"'{contract.name}' schema; "
                                    f"{', '.join(contract.passthrough)} may be present and "
                                    "are echoed back",
                                }
                            },
                        }
                    }
                },
            },
        },
        summary="Score an uploaded CSV; answers JSON or CSV (Accept: text/csv)",
    )
    async def predict_csv(
        request: Request,
        model: ModelDep,
        state: StateDep,
        contract: ContractDep,
        format: Annotated[
            Literal["json", "csv"] | None,
            Query(description="csv: answer CSV (streamed), as Accept: text/csv does"),
        ] = None,
        invalid: Annotated[
            Literal["refuse", "flag"],
            Query(
                description="refuse (default): a row that breaks the contract makes the request "
                "422. flag: valid rows are scored, invalid ones come back unscored with "
                "status=invalid and the reason"
            ),
        ] = "refuse",
        echo: EchoQuery = False,
    ) -> Response:
        ask = explain_ask(request)
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise InputError("upload the CSV as multipart/form-data with the field 'file'", status_code=415)
        name, data = await _read_upload(request)
        want_csv = format == "csv" or (format is None and "text/csv" in request.headers.get("accept", ""))
        out, summary = await state.run(
            _score_csv,
            state,
            model,
            contract,
            data,
            name,
            invalid,
            echo or want_csv,
            ask,
        )
        del data
        if want_csv:
            # Streamed: the body is encoded chunk by chunk as the client reads it.
            return StreamingResponse(
                _streamed(out),
                media_type="text/csv",
                headers={"Content-Disposition": 'attachment; filename="predictions.csv"'},
            )
        content = await state.run(_csv_json, model, out, summary)
        return json_answer(content)

    return router


def _streamed(out: pd.DataFrame):
    n = len(out)
    if REASONS_COLUMN in out.columns:  # one text cell per row (the CSV encoder neutralises it)
        out[REASONS_COLUMN] = [reasons_text(r) for r in out[REASONS_COLUMN]]
    yield from csv_chunks(out)
    del out
    release_memory(n)


def _score_json(
    state: ServingState, model: LoadedModel, body: bytes, echo: bool, ask: ExplainAsk | None = None
) -> bytes:
    contract = state.contract
    max_rows = state.settings.max_rows
    inp = None if echo else fast_json_input(body, contract, model, max_rows)
    try:
        if inp is None:
            inp = json_input(body, contract, model, max_rows)
    except InputError as exc:
        count_inputs(state, "/predict", refused=len({p["row"] for p in exc.problems}))
        raise
    is_threat, proba = infer(state, model, inp.x)
    labels = [model.label_for(t) for t in is_threat.tolist()]
    request_id = log_predictions(state, model, inp.x, is_threat, proba, labels, "/predict")
    count_inputs(state, "/predict", null_cells=inp.null_cells)
    version = model.version
    preds = [
        {
            "predicted_label": lbl,
            "is_threat": t,
            "threat_probability": p,
            "imputed_cells": k,
            "model_version": version,
            "prediction_id": pid,
        }
        for lbl, t, p, k, pid in zip(
            labels,
            is_threat.tolist(),
            proba.tolist(),
            inp.null_cells.tolist(),
            prediction_ids(request_id, len(labels)),
        )
    ]
    for name, values in _json_echo(inp, contract, echo).items():
        for pred, v in zip(preds, values):
            pred[name] = v
    answer: dict[str, Any] = {"model_name": model.name, "model_version": version}
    if ask is not None:
        reasons, fields = explain(
            state, model, inp.x, ask.k, only=is_threat == 1 if ask.alerts_only else None
        )
        answer.update(fields)
        for i, pred in enumerate(preds):
            pred["reasons"] = reasons[i] if reasons is not None else None
    answer["predictions"] = preds
    return _encode(answer)


def _json_echo(inp: ModelInput, contract: Contract, echo: bool) -> dict[str, list]:
    """Columns to send back as they came: passthrough columns, and every column with echo."""
    if inp.frame is None:
        return inp.echo
    keep = [c for c in inp.frame.columns if echo or c not in set(contract.features)]
    return {c: [_jsonable(v) for v in inp.frame[c].tolist()] for c in keep}


async def _read_upload(request: Request) -> tuple[str, bytes]:
    try:
        form = await request.form(max_files=1, max_fields=5)
    except BodyTooLarge:
        raise
    except Exception as exc:  # starlette raises several types for a malformed multipart body
        raise InputError(f"malformed multipart body: {str(exc)[:200]}", status_code=400) from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InputError("multipart field 'file' (the CSV upload) is missing", column="file")
    data = await upload.read()
    await form.close()
    return upload.filename or "upload.csv", data


def _score_csv(
    state: ServingState,
    model: LoadedModel,
    contract: Contract,
    data: bytes,
    name: str,
    policy: InvalidPolicy,
    echo_all: bool,
    ask: ExplainAsk | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    try:
        inp = csv_input(data, name, contract, model, state.settings.max_rows, policy=policy)
    except InputError as exc:
        count_inputs(state, "/predict/csv", refused=len({p["row"] for p in exc.problems}))
        raise
    if inp.x is not None and len(inp.valid) and inp.valid.any():
        is_threat, proba = infer(state, model, inp.x)
    else:
        is_threat, proba = np.zeros(0, dtype=np.int8), np.zeros(0)
    labels = [model.label_for(t) for t in is_threat.tolist()]
    request_id = log_predictions(state, model, inp.x, is_threat, proba, labels, "/predict/csv")
    count_inputs(state, "/predict/csv", flagged=inp.n_invalid, null_cells=inp.null_cells[inp.valid])
    frame = inp.frame
    assert frame is not None and inp.check is not None  # the CSV door always runs the contract
    keep = [c for c in frame.columns if echo_all or c not in set(contract.features)]
    out = scored_frame(
        frame[keep],
        inp.check,
        is_threat=is_threat,
        probability=proba,
        labels=labels,
        model_version=model.version,
        prediction_ids=prediction_ids(request_id, len(labels)),
    )
    summary = {
        "n_rows": inp.n_rows,
        "n_threats": int(is_threat.sum()),
        "n_invalid": inp.n_invalid,
        "n_imputed_rows": int(np.count_nonzero(inp.null_cells[inp.valid])),
        "notes": inp.notes,
    }
    if ask is not None:
        only = is_threat == 1 if ask.alerts_only else None
        scored = len(is_threat) > 0
        reasons, fields = explain(state, model, inp.x, ask.k, only=only) if scored else (None, {})
        cells = np.full(len(out), None, dtype=object)
        if reasons is not None:
            for i, row in zip(np.flatnonzero(inp.valid).tolist(), reasons):
                cells[i] = row  # one by one: numpy would read equal-length lists as a 2-D block
        out[REASONS_COLUMN] = cells
        summary.update(fields or model.reasons_fields())
    return out, summary


def _csv_json(model: LoadedModel, out: pd.DataFrame, summary: dict[str, Any]) -> bytes:
    """The JSON answer, encoded a few thousand records at a time: a 100k-row answer never
    exists as 100k Python dicts at once."""
    columns = [str(c) for c in out.columns]
    head = _encode({"model_name": model.name, "model_version": model.version, "columns": columns, **summary})
    parts = [head[:-1], b',"records":[']
    for start in range(0, len(out), 5000):
        part = out.iloc[start : start + 5000]
        values = [[_jsonable(v) for v in part[c].tolist()] for c in out.columns]
        chunk = _encode([dict(zip(columns, row)) for row in zip(*values)])
        parts.append((b"," if start else b"") + chunk[1:-1])
    parts.append(b"]}")
    n = len(out)
    del out
    content = b"".join(parts)
    del parts
    release_memory(n)
    return content


def _jsonable(v):
    if isinstance(v, np.generic):
        v = v.item()
    if v is pd.NA or v is None:
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


__all__ = ["make_router"]
