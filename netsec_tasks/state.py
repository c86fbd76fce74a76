"""State kept across runs, in storage: the committed watermark and snapshot of each source.

``<storage>/state/<source key>.json`` holds what the last **successful** run of a source saw: its
watermark (the largest ObjectId, watermark-field value or file content hash), the snapshot it
trained on, and when it was committed. A run reads it at ingest (rows after the watermark are the
new batch; a MongoDB source appends them to the committed snapshot) and :func:`commit` writes it
only at the end of a successful run, so a failed run leaves it alone and the next run processes
the same new rows again. It lives in storage, not on a local disk, so any worker can read it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from netsec_tasks.errors import DataError
from netsec_tasks.records import safe_name
from netsec_tasks.storage import Storage

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def read_json_model(storage: Storage, uri: str, model: type[M], *, what: str, remedy: str) -> M | None:
    """The ``model`` stored as JSON at ``uri`` in ``storage``; None when nothing is there (the
    state of every step kept across runs is read this way). Raises DataError naming the URI,
    ``"<what> is unreadable (<why>); <remedy>"``, when the file is not a valid ``model``."""
    if not storage.exists(uri):
        return None
    try:
        return model.model_validate(json.loads(storage.read_text(uri)))
    except ValueError as exc:
        raise DataError(f"{what} is unreadable ({exc}); {remedy}", source=uri) from None


class SourceState(BaseModel):
    """The committed state of one source."""

    model_config = ConfigDict(extra="ignore")

    source: str
    watermark: str | None
    watermark_field: str | None = None
    watermark_type: str | None = None  # objectid | datetime | int | float | str | file
    snapshot_uri: str | None = None
    snapshot_sha256: str | None = None
    rows: int | None = None
    run_id: str | None = None
    committed_at: str | None = None


def state_uri(storage: Storage, source: str) -> str:
    """``<storage>/state/watermark-<safe source key>.json``."""
    key = safe_name(source)
    if len(key) > 100:  # long globs/paths: keep it readable but unique
        key = key[:80] + "-" + hashlib.sha256(source.encode()).hexdigest()[:12]
    return storage.uri("state", f"watermark-{key}.json")


def read_state(storage: Storage, source: str) -> SourceState | None:
    """The committed state of ``source``; None before its first successful run."""
    return read_json_model(
        storage,
        state_uri(storage, source),
        SourceState,
        what="source state",
        remedy="delete it to re-ingest everything",
    )


def commit(storage: Storage, state: SourceState) -> str:
    """Write ``state`` as the last successful run's (atomically); returns its URI."""
    data: dict[str, Any] = state.model_dump()
    data["committed_at"] = dt.datetime.now(dt.UTC).isoformat()
    uri = storage.write_text(state_uri(storage, state.source), json.dumps(data, indent=2))
    log.info(
        "state of %s committed: watermark %s, snapshot %s",
        state.source,
        state.watermark,
        (state.snapshot_sha256 or "")[:12],
    )
    return uri
