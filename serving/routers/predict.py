"""POST /predict (JSON records) and POST /predict/csv (multipart CSV upload)."""

from __future__ import annotations

import io
import itertools
import json
import math

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from netsec_tasks.errors import DataError
from serving.deps import ServingState, current_model, get_state, require_api_key
from serving.inputs import InputError, frame_to_input, records_from_payload, records_to_input
from serving.metrics import BodyTooLarge
from serving.model import LoadedModel
from serving.schemas import ERRORS, CsvPredictResponse, PredictRequest, PredictResponse

router = APIRouter(tags=["predict"], dependencies=[Depends(require_api_key)])

OUTPUT_COLUMNS = ("label", "is_threat", "threat_probability", "model_version")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


@router.post(
    "/predict", response_model=PredictResponse,
    responses={k: ERRORS[k] for k in (401, 413, 415, 422, 503)},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/PredictRequest"}}}}},
    summary="Score rows sent as JSON records",
)
async def predict(request: Request, model: LoadedModel = Depends(current_model),
                  state: ServingState = Depends(get_state)) -> Response:
    # The body is parsed by hand: FastAPI's body parameter would answer a wrong content type
    # with 422 (we owe 415) and validate every cell twice.
    if not _is_json(request.headers.get("content-type", "")):
        raise InputError("send the records as JSON (Content-Type: application/json)", status_code=415)
    body = await request.body()
    if not body.strip():
        raise InputError('empty body; send {"records": [{feature: value, ...}]}')
    content = await state.run(_score_json, state, model, body)
    return Response(content, media_type="application/json")


def _score_json(state: ServingState, model: LoadedModel, body: bytes) -> bytes:
    x = _fast_numeric_input(model, body, state.settings.max_rows)
    if x is None:
        x = _checked_input(model, body, state.settings.max_rows)
    is_threat, proba = state.infer(model, x)
    labels = [model.label_for(t) for t in is_threat.tolist()]
    state.log_predictions(model, x, is_threat, proba, labels, "/predict")
    version = model.version
    preds = [{"label": lbl, "is_threat": t, "threat_probability": p, "model_version": version}
             for lbl, t, p in zip(labels, is_threat.tolist(), proba.tolist())]
    return _encode({"model_name": model.name, "model_version": version, "predictions": preds})


def _checked_input(model: LoadedModel, body: bytes, max_rows: int):
    """The general path: every problem reported with its row and column."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"body is not valid JSON: {str(exc)[:200]}") from None
    records = records_from_payload(payload, max_rows)
    # numpy turns JSON booleans into 1/0 silently; only pay for the per-cell check if one is there.
    maybe_bools = b"true" in body or b"false" in body
    return records_to_input(records, model, strict_types=maybe_bools)


try:  # msgspec (C) decodes and type-checks {"records": [{feature: number}]} ~5x faster than
    # json.loads plus per-cell checks in Python.
    import msgspec
    import msgspec.structs

    _encode = msgspec.json.encode
except ImportError:  # pragma: no cover - msgspec is in the serving extra
    msgspec = None

    def _encode(obj) -> bytes:
        return json.dumps(obj).encode()

_decoders: dict[tuple[str, ...], object] = {}


def _decoder_for(features: tuple[str, ...]):
    """A decoder whose row type has exactly the model's features, all required floats: missing,
    unknown, non-numeric (incl. booleans and null) and out-of-range cells are refused in C."""
    dec = _decoders.get(features)
    if dec is None:
        row = msgspec.defstruct("Row", [(f"f{i}", float) for i in range(len(features))],
                                rename={f"f{i}": name for i, name in enumerate(features)},
                                forbid_unknown_fields=True)
        payload = msgspec.defstruct("Payload", [("records", list[row])], forbid_unknown_fields=True)
        dec = msgspec.json.Decoder(payload)
        if len(_decoders) > 16:  # a few model versions at most; never grow without bound
            _decoders.clear()
        _decoders[features] = dec
    return dec


def _fast_numeric_input(model: LoadedModel, body: bytes, max_rows: int):
    """Valid numeric payloads in one C pass; None means "take the checked path", which then
    produces the precise error message with row and column."""
    if msgspec is None or not model.numeric_only:
        return None
    try:
        records = _decoder_for(model.features).decode(body).records
    except (msgspec.DecodeError, RecursionError):
        return None
    if not 0 < len(records) <= max_rows:
        return None
    cells = itertools.chain.from_iterable(map(msgspec.structs.astuple, records))
    return np.fromiter(cells, dtype=np.float64,
                       count=len(records) * len(model.features)).reshape(len(records), -1)


@router.post(
    "/predict/csv",
    response_model=CsvPredictResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV when Accept: "
                                                                 "text/csv or ?format=csv"},
               400: ERRORS[422] | {"description": "malformed multipart body"},
               **{k: ERRORS[k] for k in (401, 413, 415, 422, 503)}},
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "CSV with a header row: the model's feature columns "
                                    "(the target column may be present and is passed through)"}}}}}}},
    summary="Score an uploaded CSV; answers JSON or CSV (Accept: text/csv)",
)
async def predict_csv(request: Request, model: LoadedModel = Depends(current_model),
                      state: ServingState = Depends(get_state), format: str | None = None) -> Response:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InputError("upload the CSV as multipart/form-data with the field 'file'",
                         status_code=415)
    upload = await _read_upload(request)
    name, data = upload
    want_csv = (format or "").lower() == "csv" or "text/csv" in request.headers.get("accept", "")
    content, media = await state.run(_score_csv, state, model, data, name, want_csv)
    headers = {"Content-Disposition": 'attachment; filename="predictions.csv"'} if want_csv else None
    return Response(content, media_type=media, headers=headers)


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


def _score_csv(state: ServingState, model: LoadedModel, data: bytes, name: str,
               want_csv: bool) -> tuple[bytes, str]:
    from netsec_tasks.table_io import read_csv_bytes

    max_rows = state.settings.max_rows
    try:
        frame = read_csv_bytes(data, source=name, max_rows=max_rows + 1)
    except DataError as exc:
        raise InputError(str(exc), column=(exc.columns or [None])[0]) from None
    passthrough = (model.target,) if model.target else ()
    x = frame_to_input(frame, model, max_rows, passthrough=passthrough)
    is_threat, proba = state.infer(model, x)
    labels = [model.label_for(t) for t in is_threat.tolist()]
    state.log_predictions(model, x, is_threat, proba, labels, "/predict/csv")
    out = frame.copy()
    out["label"] = labels
    out["is_threat"] = is_threat.astype(int)
    out["threat_probability"] = proba
    out["model_version"] = model.version
    if want_csv:
        buf = io.StringIO()
        out.to_csv(buf, index=False)
        return buf.getvalue().encode(), "text/csv"
    records = [{k: _jsonable(v) for k, v in row.items()} for row in out.to_dict(orient="records")]
    return json.dumps({
        "model_name": model.name, "model_version": model.version,
        "columns": [str(c) for c in out.columns], "records": records,
        "n_rows": len(out), "n_threats": int(is_threat.sum()),
    }).encode(), "application/json"


def _jsonable(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


__all__ = ["router", "PredictRequest"]
