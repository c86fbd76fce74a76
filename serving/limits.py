"""The request-body size cap, as plain ASGI middleware, and the parsing of (capped) JSON bodies
that the JSON endpoints share: :func:`is_json` (the media type), :func:`json_body` (decoding) and
:func:`validated` (the request's pydantic model, its first error as a 422 naming the place).

A declared ``Content-Length`` over the limit is answered 413 before the body is read; a body
without one (chunked) is counted while it streams and cut off with :class:`BodyTooLarge` at
the limit, so a client cannot make the service buffer more than ``max_body_bytes``.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


class BodySizeLimitMiddleware:
    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_413(send, limit)
            return
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_413(send, limit)


def _content_length(scope) -> int | None:
    for k, v in scope.get("headers", []):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def too_large_body(limit: int) -> dict:
    return {"detail": f"request body is larger than the limit of {limit} bytes"}


async def send_413(send, limit: int) -> None:
    body = json.dumps(too_large_body(limit)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def json_body(body: bytes, content_type: str, what: str) -> object:
    """The decoded JSON of a request ``body`` sent as ``Content-Type: application/json`` (or any
    ``+json`` type; parameters such as ``charset`` ignored). Raises ``InputError`` 415 naming
    ``what`` ("the verdicts", "the options") for another media type, and 400 with the decoder's
    message (at most 200 characters) for text that is not JSON."""
    from serving.inputs import InputError

    if not is_json(content_type):
        raise InputError(f"send {what} as JSON (Content-Type: application/json)", status_code=415)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"body is not valid JSON: {str(exc)[:200]}") from None


def is_json(content_type: str) -> bool:
    """Whether a ``Content-Type`` header names JSON: ``application/json`` or any ``+json`` type,
    parameters such as ``charset`` ignored."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def validated(model: TypeAdapter[T], payload: object, *, item: str | None = None) -> T:
    """``payload`` (a decoded body) as the request's pydantic ``model``. Raises ``InputError``
    (422) with the first error and its place: the field (``column``); for a list body, ``item``
    names an element, so the message reads "verdict 3: label: ..." with ``row`` 3."""
    from serving.inputs import InputError

    try:
        return model.validate_python(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        first = loc[0] if loc else None
        row = first if item is not None and isinstance(first, int) else None
        column = ".".join(str(p) for p in (loc[1:] if row is not None else loc)) or None
        where = f"{item} {row}: " if row is not None else ""
        raise InputError(
            f"{where}{column or item or 'body'}: {err['msg']}",
            row=row,
            column=column,
            value=err.get("input") if column else None,
        ) from None
