"""POST /feedback: analysts' verdicts on served predictions (netsec_tasks.feedback).

Body: ``[{"prediction_id": "...", "label": "threat", "source": "soc-triage", "note": "..."}]``.
The label is in the data set's label vocabulary (``threat``, ``benign`` or a target label of the
schema); every prediction id must be one this service's model logged, exactly as /predict
returned it (``<rid>-05`` is not row 5: a 422), else the request is a 404 naming the unknown ids
and nothing is stored. One request gives one prediction one verdict: an id twice is a 422 naming
both verdicts. Re-sending the verdict that stands changes nothing; a different verdict is stored
with its time and the earlier one stays in the history.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from netsec_tasks.feedback import feedback_label, label_vocabulary
from netsec_tasks.prediction_log import parse_prediction_id
from serving.deps import StateDep, VerdictsDep, require_api_key
from serving.http_models import ERRORS, ErrorResponse, Label
from serving.inputs import InputError
from serving.limits import json_body, validated

router = APIRouter(tags=["feedback"], dependencies=[Depends(require_api_key)])


class FeedbackItem(BaseModel):
    """One verdict."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(
        ..., max_length=40, description="the prediction_id /predict or /predict/csv returned for the row"
    )
    label: Label = Field(..., description="threat, benign, or one of the data set's target labels")
    source: str | None = Field(None, max_length=200, description="who or what gave the verdict")
    note: str | None = Field(None, max_length=2000)


class FeedbackResult(BaseModel):
    prediction_id: str
    label: Label = Field(..., description="the label stored, in the data set's vocabulary")
    status: str = Field(
        ...,
        description="recorded (first verdict), changed (a new verdict "
        "replaces the standing one) or unchanged (the same "
        "verdict again: nothing stored)",
    )
    at: str = Field(..., description="when the standing verdict was given (UTC)")
    previous_label: Label = None
    previous_at: str | None = None


class FeedbackResponse(BaseModel):
    recorded: int
    changed: int
    unchanged: int
    results: list[FeedbackResult]


# The body of POST /feedback: a JSON array of verdicts.
VERDICTS = TypeAdapter(list[FeedbackItem])


def _items(body: bytes, content_type: str, max_items: int) -> list[FeedbackItem]:
    payload = json_body(body, content_type, "the verdicts")
    if not isinstance(payload, list) or not payload:
        raise InputError('send a non-empty JSON array: [{"prediction_id": "...", "label": "threat"}, ...]')
    if len(payload) > max_items:  # before validating each one
        raise InputError(f"{len(payload)} verdicts in one request; at most {max_items}", status_code=413)
    return validated(VERDICTS, payload, item="verdict")


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    responses={
        401: ERRORS[401],
        413: ERRORS[413],
        415: ERRORS[415],
        422: ERRORS[422],
        404: {
            "model": ErrorResponse,
            "description": "a prediction id this service never logged (problems lists each)",
        },
        503: {"model": ErrorResponse, "description": "the prediction log is off"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "minItems": 1, "items": FeedbackItem.model_json_schema()},
                    "example": [
                        {
                            "prediction_id": "0192f3a4b5c6d7e8f9a0b1-0",
                            "label": "threat",
                            "source": "soc-triage",
                        }
                    ],
                }
            },
        }
    },
    summary="Analysts' verdicts on predictions: recorded, changed or unchanged",
)
async def feedback(request: Request, state: StateDep, verdict_place: VerdictsDep) -> JSONResponse:
    items = _items(
        await request.body(), request.headers.get("content-type", ""), state.settings.max_feedback_items
    )
    _refuse_repeated_ids(items)
    schema = state.contract.schema
    verdicts: list[dict[str, Any]] = []
    for row, item in enumerate(items):
        try:
            parse_prediction_id(item.prediction_id)
        except ValueError as exc:
            raise InputError(
                f"verdict {row}: {exc}", row=row, column="prediction_id", value=item.prediction_id
            ) from None
        try:
            label, is_threat = feedback_label(schema, item.label)
        except ValueError as exc:
            raise InputError(
                f"verdict {row}: {exc}",
                row=row,
                column="label",
                value=item.label,
                allowed=", ".join(map(str, label_vocabulary(schema))),
            ) from None
        verdicts.append(
            {
                "prediction_id": item.prediction_id,
                "label": label,
                "is_threat": is_threat,
                "source": item.source,
                "note": item.note,
            }
        )
    ids = [v["prediction_id"] for v in verdicts]
    log = verdict_place.log
    known = await _store_call(log.sink.describe(), log.known, ids)
    unknown = [(row, pid) for row, pid in enumerate(ids) if pid not in known]
    if unknown:
        names = ", ".join(pid for _, pid in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise InputError(
            f"unknown prediction id(s): {names}; nothing was stored (ids come from /predict "
            "or /predict/csv of this service, and are known once logged)",
            status_code=404,
            row=unknown[0][0],
            column="prediction_id",
            value=unknown[0][1],
            problems=[
                {"row": row, "column": "prediction_id", "value": pid, "reason": "unknown prediction id"}
                for row, pid in unknown
            ],
        )
    store = verdict_place.store
    results = await _store_call(store.describe(), store.record, verdicts)
    counts = {k: sum(r["status"] == k for r in results) for k in ("recorded", "changed", "unchanged")}
    for outcome, n in counts.items():
        if n:
            state.metrics.count_verdicts(outcome, n)
    return JSONResponse(FeedbackResponse(**counts, results=results).model_dump(mode="json"))


def _refuse_repeated_ids(items: list[FeedbackItem]) -> None:
    """One verdict per prediction id and request: which of two would stand is not the
    client's to leave to us. 422 naming every repeated id and the verdicts that give it."""
    rows: dict[str, list[int]] = {}
    for row, item in enumerate(items):
        rows.setdefault(item.prediction_id, []).append(row)
    repeated = {pid: r for pid, r in rows.items() if len(r) > 1}
    if not repeated:
        return
    first_pid, first_rows = next(iter(repeated.items()))
    names = "; ".join(f"{pid} in verdicts {', '.join(map(str, r))}" for pid, r in list(repeated.items())[:10])
    raise InputError(
        f"a prediction id is given more than one verdict: {names}; send one verdict per "
        "prediction id (nothing was stored)",
        row=first_rows[1],
        column="prediction_id",
        value=first_pid,
        problems=[
            {"row": row, "column": "prediction_id", "value": pid, "reason": "repeated prediction id"}
            for pid, r in repeated.items()
            for row in r[1:]
        ],
    )


async def _store_call(where: str, fn, *args):
    """Run a blocking store call off the event loop; an unreachable store is a 503 naming it."""
    from pymongo.errors import PyMongoError

    try:
        return await asyncio.to_thread(fn, *args)
    except (PyMongoError, OSError) as exc:
        raise InputError(
            f"{where} is unavailable ({type(exc).__name__}: {str(exc)[:200]}); "
            "nothing was stored, send the verdicts again later",
            status_code=503,
        ) from None
