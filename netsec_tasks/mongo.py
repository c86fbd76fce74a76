"""MongoDB access: connecting with errors that name the server, and loading CSVs (``push-data``).

``push_data`` is idempotent: every document carries ``_netsec_key`` = hash of the row's content
plus the row's occurrence number among identical rows of the file, under a unique index. Loading
the same file again inserts nothing; loading a file with rows appended inserts only the new rows;
and rows that are legitimately duplicated inside one file (the UCI file has thousands) are all
kept, because their occurrence numbers differ. The key is the content, not the file: a row of
another file that equals an already loaded row (same occurrence number) counts as already
present, so re-exporting or renaming a file never double-loads it. Duplicate-key errors (code 11000) from an
unordered ``insert_many`` are counted as "already present" instead of failing the load, so a
batch is one round trip, not one upsert per row.

Bookkeeping fields (``_id``, ``_netsec_key``, ``ingested_at``) are never data: ingestion drops
them (:data:`BOOKKEEPING_FIELDS`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import DataError, SourceUnavailable

if TYPE_CHECKING:
    import pymongo

log = logging.getLogger(__name__)

KEY_FIELD = "_netsec_key"
INGESTED_AT_FIELD = "ingested_at"
BOOKKEEPING_FIELDS = ("_id", KEY_FIELD, INGESTED_AT_FIELD)
KEY_INDEX_NAME = "netsec_key_unique"
DUPLICATE_KEY = 11000

_USERINFO = re.compile(r"^(?P<scheme>mongodb(?:\+srv)?://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@")
# Query options that carry secrets, e.g. authMechanismProperties=AWS_SESSION_TOKEN:<token>.
_SECRET_PARAM = re.compile(r"(?i)((?:password|secret|token)[^=&:,]*[=:])[^&,]*")


def mask_uri(uri: str) -> str:
    """The URI with its password (and any secret-looking query parameter) replaced by ``***``."""
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri)
    return _SECRET_PARAM.sub(r"\1***", masked)


def describe_client(client: "pymongo.MongoClient") -> str:
    """``host:port[,host:port]`` of a client we did not build (e.g. from Airflow's MongoHook)."""
    try:
        seeds = client.topology_description.server_descriptions().keys()
        return "mongodb://" + ",".join(f"{h}:{p}" for h, p in seeds)
    except Exception:  # never let the error path raise its own error
        return "<MongoClient>"


def unavailable(exc: Exception, where: str, timeout_ms: int | None = None) -> SourceUnavailable:
    """Translate a pymongo error into a SourceUnavailable that says where and what to check."""
    from pymongo import errors

    within = f" within {timeout_ms} ms (serverSelectionTimeoutMS)" if timeout_ms else ""
    if isinstance(exc, errors.OperationFailure) and exc.code in (13, 18):
        what = f"MongoDB at {where} refused the credentials ({exc.code}: {exc.details and exc.details.get('errmsg')})"
        hint = "check the user, password and authSource in the URI / Airflow connection netsec_mongo"
    elif isinstance(exc, (errors.ConnectionFailure, errors.ServerSelectionTimeoutError)):
        what = f"cannot reach MongoDB at {where}{within}: {_short(exc)}"
        hint = ("is the server running and reachable? Set NETSEC_SOURCE__MONGO__URI or the "
                "Airflow connection netsec_mongo")
    else:
        what = f"MongoDB at {where} failed: {type(exc).__name__}: {_short(exc)}"
        hint = "see the server log"
    return SourceUnavailable(f"{what}; {hint}")


def _short(exc: Exception, limit: int = 300) -> str:
    text = str(exc).split(", Timeout:")[0]  # pymongo appends a long topology dump
    return text if len(text) <= limit else text[:limit] + "..."


def client_options(mcfg: Any) -> dict[str, int]:
    """The per-call budget of ``source.mongo`` as MongoClient options: choosing a server,
    opening a connection, and waiting for a reply on an open one (pymongo's default for the
    last is to wait for ever, so a server that stops answering would hang the step)."""
    return {"serverSelectionTimeoutMS": mcfg.server_selection_timeout_ms,
            "connectTimeoutMS": mcfg.connect_timeout_ms,
            "socketTimeoutMS": mcfg.socket_timeout_ms}


def connect_source(mcfg: Any) -> "pymongo.MongoClient":
    """:func:`connect` to ``source.mongo.uri`` with its configured budget."""
    return connect(mcfg.uri, mcfg.server_selection_timeout_ms,
                   connect_timeout_ms=mcfg.connect_timeout_ms, socket_timeout_ms=mcfg.socket_timeout_ms)


def connect(uri: str, timeout_ms: int = 5000, *, connect_timeout_ms: int | None = None,
            socket_timeout_ms: int | None = None) -> "pymongo.MongoClient":
    """A client whose server answered ``ping``; SourceUnavailable (password masked) otherwise.

    ``timeout_ms`` bounds server selection (and, unless given, connecting); ``socket_timeout_ms``
    bounds the wait for each reply (None: pymongo's default, no limit).
    """
    import pymongo
    from pymongo import errors

    if uri.startswith("mongo://"):  # Airflow's connection form
        uri = "mongodb://" + uri[len("mongo://"):]
    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms,
                                     connectTimeoutMS=connect_timeout_ms or timeout_ms,
                                     socketTimeoutMS=socket_timeout_ms, appname="netsec")
    except errors.ConfigurationError as exc:
        raise SourceUnavailable(f"invalid MongoDB URI {mask_uri(uri)}: {exc}") from None
    try:
        client.admin.command("ping")
    except errors.PyMongoError as exc:
        client.close()
        raise unavailable(exc, mask_uri(uri), timeout_ms) from None
    return client


class PushResult(BaseModel):
    source: str
    collection: str          # <database>.<collection>
    read: int                # rows in the file
    inserted: int            # documents inserted by this call
    already_present: int     # rows whose key was already in the collection
    collection_count: int    # documents in the collection afterwards


def _native(value: Any, as_int: bool) -> Any:
    """A BSON-friendly Python value: NaN -> None, numpy scalars -> Python, 1.0 -> 1 for int columns."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if as_int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def frame_documents(frame: pd.DataFrame, int_columns: set[str] = frozenset()) -> list[dict]:
    """Rows as dicts of native values, in column order (nulls as None)."""
    cols = list(frame.columns)
    values = [[_native(v, c in int_columns) for v in frame[c].tolist()] for c in cols]
    return [dict(zip(cols, row)) for row in zip(*values)] if cols else []


def row_keys(docs: list[dict]) -> list[str]:
    """``<content hash>-<occurrence>`` per row: stable across column order and re-runs."""
    seen: Counter[str] = Counter()
    keys = []
    for doc in docs:
        canonical = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
        keys.append(f"{digest}-{seen[digest]}")
        seen[digest] += 1
    return keys


def ensure_key_index(collection: "pymongo.collection.Collection") -> None:
    """Unique index on the idempotency key; sparse so foreign documents without it coexist."""
    collection.create_index([(KEY_FIELD, 1)], unique=True, sparse=True, name=KEY_INDEX_NAME)


def _insert_batch(collection, docs: list[dict]) -> tuple[int, int]:
    """Insert unordered; returns (inserted, already_present). Other write errors raise."""
    from pymongo import errors

    try:
        result = collection.insert_many(docs, ordered=False)
        return len(result.inserted_ids), 0
    except errors.BulkWriteError as exc:
        write_errors = exc.details.get("writeErrors", [])
        dup = sum(1 for e in write_errors if e.get("code") == DUPLICATE_KEY)
        other = [e for e in write_errors if e.get("code") != DUPLICATE_KEY]
        if other:
            first = other[0]
            raise DataError(f"MongoDB rejected {len(other)} document(s); first: code "
                            f"{first.get('code')}: {first.get('errmsg')}",
                            source=collection.full_name) from None
        return int(exc.details.get("nInserted", 0)), dup


def push_data(csv_path: str | os.PathLike, cfg: PipelineConfig, *,
              client: "pymongo.MongoClient | None" = None,
              batch_size: int | None = None) -> PushResult:
    """Load a CSV (or Parquet) into ``cfg.source.mongo``'s collection, idempotently, in batches.

    The header is checked against the schema first: a file missing feature or target columns
    raises DataError naming them and nothing is inserted.
    """
    from pymongo import errors

    from netsec_tasks.schema import load_schema
    from netsec_tasks.tabular import read_table

    mcfg = cfg.source.mongo
    schema = load_schema(cfg.schema_path)
    source = str(csv_path)
    frame = read_table(csv_path)
    required = schema.features + [schema.target.column]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)} required by schema "
                        f"{schema.name!r}; nothing was inserted", source=source, columns=missing)
    frame = frame.drop(columns=[c for c in BOOKKEEPING_FIELDS if c in frame.columns])
    int_cols = {c for c, spec in schema.columns.items() if spec.dtype == "int"}
    if schema.target.dtype == "int":
        int_cols.add(schema.target.column)
    docs = frame_documents(frame, int_cols)
    keys = row_keys(docs)
    batch = batch_size or mcfg.batch_size
    if batch < 1:
        raise DataError(f"batch size must be at least 1 (got {batch})", source=source)

    own = client is None
    where = mask_uri(mcfg.uri) if own else None
    client = client or connect_source(mcfg)
    where = where or describe_client(client)
    inserted = present = 0
    try:
        collection = client[mcfg.database][mcfg.collection]
        ensure_key_index(collection)
        for start in range(0, len(docs), batch):
            now = dt.datetime.now(dt.timezone.utc)
            chunk = [{**doc, KEY_FIELD: key, INGESTED_AT_FIELD: now}
                     for doc, key in zip(docs[start:start + batch], keys[start:start + batch])]
            ins, dup = _insert_batch(collection, chunk)
            inserted += ins
            present += dup
        count = collection.count_documents({})
    except errors.PyMongoError as exc:
        raise unavailable(exc, where, mcfg.server_selection_timeout_ms if own else None) from None
    finally:
        if own:
            client.close()
    log.info("push-data %s -> %s.%s: %d read, %d inserted, %d already present, %d in collection",
             source, mcfg.database, mcfg.collection, len(docs), inserted, present, count)
    return PushResult(source=source, collection=f"{mcfg.database}.{mcfg.collection}",
                      read=len(docs), inserted=inserted, already_present=present,
                      collection_count=count)
