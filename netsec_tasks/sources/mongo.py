"""MongoDB source: connecting with errors that name the server, loading files (``push-data``)
and reading documents incrementally (server-side queries after the committed watermark).

**Loading** (:func:`push_data`) is idempotent per *load*: every document carries
``_netsec_key = <load id>:<row position>`` under a unique index, where the load id is the file's
content hash unless ``--load-id`` names it. Re-running the same load inserts nothing; a different
file's rows are all inserted, including rows identical to rows already in the collection
(identical rows are real repeated events in threat data, and carry weight); re-pushing a file that
grew under the same ``--load-id`` inserts only the rows past those already loaded. Duplicate-key
errors (code 11000) of an unordered ``insert_many`` are counted as skipped, so a batch is one round
trip. ``push_data`` also creates the indexes the reader's range queries use.

**Reading** (:func:`read_documents`): the documents after the committed watermark (their
ObjectId, or ``source.mongo.watermark_field``) are a ``find`` with a range that the server
answers from an index, sorted by the watermark. With ``source.mongo.incremental`` (default) that
is all a night reads: the rows are appended to the last committed snapshot in storage. Without
a committed snapshot (first run, lost state, ``incremental: false``), the training window is
read with one server-side query (all documents, or those within ``source.window_days`` of the
newest) and the new ones are the rows after the watermark.

ObjectIds are made by the inserting client: with several writers whose clocks differ, use a
server-side increasing ``watermark_field`` instead. Documents without the watermark field never
match a range query: they are read only by a full read.

Bookkeeping fields (``_id``, ``_netsec_key``, ``_netsec_load``, ``ingested_at``, and the
provenance of rows that came from analysts' verdicts, ``netsec_tasks.feedback.PROVENANCE_FIELDS``)
are never data: the reader drops them (:data:`BOOKKEEPING_FIELDS`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Set
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import DataError, SourceUnavailable
from netsec_tasks.feedback import PROVENANCE_FIELDS
from netsec_tasks.sinks import bson_key, bson_value

if TYPE_CHECKING:
    import pymongo

    from netsec_tasks.sources import SourceRead
    from netsec_tasks.state import SourceState

log = logging.getLogger(__name__)

KEY_FIELD = "_netsec_key"
LOAD_FIELD = "_netsec_load"
INGESTED_AT_FIELD = "ingested_at"
BOOKKEEPING_FIELDS = ("_id", KEY_FIELD, LOAD_FIELD, INGESTED_AT_FIELD, *PROVENANCE_FIELDS)
KEY_INDEX_NAME = "netsec_key_unique"
DUPLICATE_KEY = 11000

_USERINFO = re.compile(r"^(?P<scheme>mongodb(?:\+srv)?://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@")
# Query options that carry secrets, e.g. authMechanismProperties=AWS_SESSION_TOKEN:<token>.
_SECRET_PARAM = re.compile(r"(?i)((?:password|secret|token)[^=&:,]*[=:])[^&,]*")


def mask_uri(uri: str) -> str:
    """The URI with its password (and any secret-looking query parameter) replaced by ``***``."""
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri)
    return _SECRET_PARAM.sub(r"\1***", masked)


def describe_client(client: pymongo.MongoClient) -> str:
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
        hint = (
            "is the server running and reachable? Set NETSEC_SOURCE__MONGO__URI or the "
            "Airflow connection netsec_mongo"
        )
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
    return {
        "serverSelectionTimeoutMS": mcfg.server_selection_timeout_ms,
        "connectTimeoutMS": mcfg.connect_timeout_ms,
        "socketTimeoutMS": mcfg.socket_timeout_ms,
    }


def connect_source(mcfg: Any) -> pymongo.MongoClient:
    """:func:`connect` to ``source.mongo.uri`` with its configured budget."""
    return connect(
        mcfg.uri,
        mcfg.server_selection_timeout_ms,
        connect_timeout_ms=mcfg.connect_timeout_ms,
        socket_timeout_ms=mcfg.socket_timeout_ms,
    )


def connect(
    uri: str,
    timeout_ms: int = 5000,
    *,
    connect_timeout_ms: int | None = None,
    socket_timeout_ms: int | None = None,
) -> pymongo.MongoClient:
    """A client whose server answered ``ping``; SourceUnavailable (password masked) otherwise.

    ``timeout_ms`` bounds server selection (and, unless given, connecting); ``socket_timeout_ms``
    bounds the wait for each reply (None: pymongo's default, no limit).
    """
    import pymongo
    from pymongo import errors

    if uri.startswith("mongo://"):  # Airflow's connection form
        uri = "mongodb://" + uri[len("mongo://") :]
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=connect_timeout_ms or timeout_ms,
            socketTimeoutMS=socket_timeout_ms,
            appname="netsec",
        )
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
    load_id: str  # the idempotency key of this load (file content hash by default)
    collection: str  # <database>.<collection>
    read: int  # rows in the file
    inserted: int  # documents inserted by this call
    skipped: int  # rows of this load already in the collection (a re-run)
    collection_count: int  # documents in the collection afterwards


def _native(value: Any, as_int: bool) -> Any:
    """A value BSON holds (the BSON sink's :func:`~netsec_tasks.sinks.bson_value`: NaN -> None,
    numpy scalars -> Python, an integer beyond 8 bytes -> its text, which validation refuses by
    value), with 1.0 -> 1 for int columns."""
    value = bson_value(value)
    if as_int and isinstance(value, float) and value.is_integer():
        return bson_value(int(value))
    return value


def frame_documents(frame: pd.DataFrame, int_columns: Set[str] = frozenset()) -> list[dict]:
    """Rows as dicts of native values, in column order (nulls as None); field names as MongoDB
    stores them (:func:`~netsec_tasks.sinks.bson_key`)."""
    cols = list(frame.columns)
    values = [[_native(v, c in int_columns) for v in frame[c].tolist()] for c in cols]
    keys = [bson_key(c) for c in cols]
    return [dict(zip(keys, row)) for row in zip(*values)] if cols else []


def load_keys(load_id: str, start: int, count: int) -> list[str]:
    """``<load id>:<row position>`` for rows ``start .. start+count-1`` of one load."""
    return [f"{load_id}:{i}" for i in range(start, start + count)]


def ensure_indexes(collection: pymongo.collection.Collection, watermark_field: str | None) -> None:
    """The unique idempotency key (sparse: foreign documents without it coexist) and an index on
    the watermark field, so the reader's range queries are answered from an index."""
    collection.create_index([(KEY_FIELD, 1)], unique=True, sparse=True, name=KEY_INDEX_NAME)
    collection.create_index([(watermark_field or INGESTED_AT_FIELD, 1)])


def insert_batch(collection, docs: list[dict]) -> tuple[int, int]:
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
            raise DataError(
                f"MongoDB rejected {len(other)} document(s); first: code "
                f"{first.get('code')}: {first.get('errmsg')}",
                source=collection.full_name,
            ) from None
        return int(exc.details.get("nInserted", 0)), dup


def push_data(
    csv_path: str | os.PathLike,
    cfg: PipelineConfig,
    *,
    client: pymongo.MongoClient | None = None,
    batch_size: int | None = None,
    load_id: str | None = None,
) -> PushResult:
    """Load a CSV (or Parquet) file into ``cfg.source.mongo``'s collection, idempotently per load.

    ``load_id`` defaults to the file's content hash (see the module doc). The header is checked
    against the schema first: a file missing feature or target columns raises DataError naming
    them and nothing is inserted.
    """
    from pymongo import errors

    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.records import sha256_file
    from netsec_tasks.table_io import expand_paths, read_table

    mcfg = cfg.source.mongo
    schema = load_schema(cfg.schema_path)
    source = str(csv_path)
    # The one CSV reader (layout checked; header-less: the schema's file_columns; rename).
    frame = read_table(csv_path, **schema.read_options(labelled=True))
    required = schema.features + [schema.target.column]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)} required by schema "
            f"{schema.name!r}; nothing was inserted",
            source=source,
            columns=missing,
        )
    frame = frame.drop(columns=[c for c in BOOKKEEPING_FIELDS if c in frame.columns])
    int_cols = {c for c, spec in schema.columns.items() if spec.dtype == "int"}
    if schema.target.dtype == "int":
        int_cols.add(schema.target.column)
    docs = frame_documents(frame, int_cols)
    if load_id is None:
        digest = hashlib.sha256()
        for p in expand_paths(csv_path):
            digest.update(f"{p.name}:{sha256_file(p)}\n".encode())
        load_id = digest.hexdigest()[:32]
    batch = batch_size or mcfg.batch_size
    if batch < 1:
        raise DataError(f"batch size must be at least 1 (got {batch})", source=source)

    own = client is None
    where = mask_uri(mcfg.uri) if own else None
    client = client or connect_source(mcfg)
    where = where or describe_client(client)
    inserted = skipped = 0
    try:
        collection = client[mcfg.database][mcfg.collection]
        ensure_indexes(collection, mcfg.watermark_field)
        for start in range(0, len(docs), batch):
            now = dt.datetime.now(dt.UTC)
            chunk = docs[start : start + batch]
            chunk = [
                {**doc, KEY_FIELD: key, LOAD_FIELD: load_id, INGESTED_AT_FIELD: now}
                for doc, key in zip(chunk, load_keys(load_id, start, len(chunk)))
            ]
            ins, dup = insert_batch(collection, chunk)
            inserted += ins
            skipped += dup
        count = collection.count_documents({})
    except errors.PyMongoError as exc:
        raise unavailable(exc, where, mcfg.server_selection_timeout_ms if own else None) from None
    finally:
        if own:
            client.close()
    log.info(
        "push-data %s (load %s) -> %s.%s: %d read, %d inserted, %d skipped (already "
        "loaded), %d in collection",
        source,
        load_id,
        mcfg.database,
        mcfg.collection,
        len(docs),
        inserted,
        skipped,
        count,
    )
    return PushResult(
        source=source,
        load_id=load_id,
        collection=f"{mcfg.database}.{mcfg.collection}",
        read=len(docs),
        inserted=inserted,
        skipped=skipped,
        collection_count=count,
    )


# --------------------------------------------------------------------------- reading


def _utc(value: dt.datetime) -> dt.datetime:
    # pymongo returns naive UTC datetimes unless the client is tz_aware.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def watermark_type(value: Any) -> str:
    """The type name a watermark value is stored under in the source state."""
    from bson import ObjectId

    if isinstance(value, ObjectId):
        return "objectid"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, bool):
        raise DataError(
            "a boolean cannot be a watermark; set source.mongo.watermark_field to a "
            "field that increases with inserts (e.g. ingested_at)"
        )
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def format_watermark(value: Any) -> str:
    return _utc(value).isoformat() if isinstance(value, dt.datetime) else str(value)


def parse_watermark(text: str, kind: str | None, source: str) -> Any:
    """The typed value of a stored watermark (ObjectId, UTC datetime, int, float or str)."""
    from bson import ObjectId
    from bson.errors import InvalidId

    try:
        if kind in (None, "objectid"):
            return ObjectId(text)
        if kind == "datetime":
            return _utc(dt.datetime.fromisoformat(text))
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        return text
    except (InvalidId, ValueError, TypeError) as exc:
        raise DataError(
            f"committed watermark {text!r} is not a valid {kind or 'objectid'} ({exc});"
            " delete the source state under <storage>/state/ to re-ingest everything",
            source=source,
        ) from None


def _key_time(key: Any) -> float:
    from bson import ObjectId

    if isinstance(key, ObjectId):
        return key.generation_time.timestamp()
    if isinstance(key, dt.datetime):
        return _utc(key).timestamp()
    return np.nan


def _data_fields(doc: dict, rename: dict[str, str]) -> dict:
    """A document's data fields (bookkeeping dropped), under the schema's names (``rename``; a
    document that has both names keeps the schema's)."""
    return {
        rename.get(k, k): v
        for k, v in doc.items()
        if k not in BOOKKEEPING_FIELDS and not (k in rename and rename[k] in doc)
    }


def docs_table(docs: list[dict]) -> pa.Table:
    """One batch of documents as an Arrow table (columns in first-seen order)."""
    names: dict[str, None] = {}
    for doc in docs:
        for k in doc:
            names.setdefault(k, None)
    return pa.table({name: _arrow_column([d.get(name) for d in docs]) for name in names})


def _arrow_column(values: list) -> pa.Array:
    """Typed when the values allow it; nested documents, ObjectIds and mixed types become text."""
    try:
        arr = pa.array(values)
        if not (pa.types.is_nested(arr.type) or pa.types.is_binary(arr.type)):
            return arr
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        pass
    return pa.array(
        [
            None
            if v is None
            else json.dumps(v, default=str, sort_keys=True)
            if isinstance(v, (dict, list))
            else str(v)
            for v in values
        ],
        type=pa.string(),
    )


def _batched(cursor, size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for doc in cursor:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_documents(
    cfg: PipelineConfig,
    *,
    previous: SourceState | None,
    base_snapshot: str | None,
    scratch: Path,
    client: pymongo.MongoClient | None = None,
) -> SourceRead:
    """Read this run's documents: only those after the committed watermark when ``base_snapshot``
    (the committed snapshot) is given, else the training window. Staged as Parquet parts in
    ``scratch`` (this task's private temp dir), one per batch, so memory holds one batch.
    """
    from pymongo import errors

    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.sources import SourceRead, unify_schemas

    mcfg = cfg.source.mongo
    source = f"mongo:{mcfg.database}.{mcfg.collection}"
    field = mcfg.watermark_field or "_id"
    rename = load_schema(cfg.schema_path).rename
    prev_value = (
        parse_watermark(previous.watermark, previous.watermark_type, source)
        if previous is not None and previous.watermark is not None
        else None
    )
    own = client is None
    if client is None:
        client, where = connect_source(mcfg), mask_uri(mcfg.uri)
    else:
        where = describe_client(client)
    collection = client[mcfg.database][mcfg.collection]
    sort = [(field, 1)] + ([("_id", 1)] if field != "_id" else [])
    incremental = base_snapshot is not None and prev_value is not None
    if incremental:
        # $gte and a strict comparison below: documents equal to the watermark are read again and
        # dropped (the few at the boundary), which also suits servers that compare datetimes at
        # second resolution (nx-27017, the tests' MongoDB-wire server).
        query: dict = {field: {"$gte": prev_value}}
        mode = f"documents with {field} after {format_watermark(prev_value)}"
    else:
        query = {}
        mode = "every document (no committed snapshot to extend)"
        if cfg.source.window_days is not None:
            try:
                newest = collection.find_one(
                    {} if field == "_id" else {field: {"$exists": True}}, sort=[(field, -1)]
                )
            except errors.PyMongoError as exc:
                raise unavailable(exc, where, mcfg.server_selection_timeout_ms if own else None) from None
            newest_time = _key_time(newest[field]) if newest else np.nan
            if np.isfinite(newest_time):
                cutoff = dt.datetime.fromtimestamp(newest_time - cfg.source.window_days * 86_400, tz=dt.UTC)
                if field == "_id":
                    from bson import ObjectId

                    query = {"_id": {"$gte": ObjectId.from_datetime(cutoff)}}
                else:
                    query = {field: {"$gte": cutoff}}
                mode = f"documents within source.window_days={cfg.source.window_days:g} ({field} >= {cutoff.isoformat()})"
    parts: list[Path] = []
    schemas = []
    new_masks, times_list = [], []
    max_key, kind, missing, fetched = None, None, 0, 0
    try:
        cursor = collection.find(
            query, projection={KEY_FIELD: 0, LOAD_FIELD: 0}, sort=sort, batch_size=mcfg.batch_size
        )
        with cursor:
            for docs in _batched(cursor, mcfg.batch_size):
                keys = [d.get(field) for d in docs]
                new = np.zeros(len(docs), bool)
                times = np.full(len(docs), np.nan)
                for i, key in enumerate(keys):
                    if key is None:
                        missing += 1
                        continue
                    if isinstance(key, dt.datetime):
                        key = _utc(key)
                    kind = kind or watermark_type(key)
                    if field == "_id" and kind != "objectid":
                        raise DataError(
                            f"document _id {key!r} is not an ObjectId, so it cannot order the "
                            "rows; set source.mongo.watermark_field to a field that increases "
                            "with inserts (e.g. ingested_at)",
                            source=source,
                        )
                    try:
                        new[i] = prev_value is None or key > prev_value
                        if max_key is None or key > max_key:
                            max_key = key
                    except TypeError:
                        raise DataError(
                            f"{field} value {key!r} cannot be compared with the "
                            f"committed watermark {format_watermark(prev_value)!r}; "
                            "delete the source state under <storage>/state/ to "
                            "re-ingest everything",
                            source=source,
                        ) from None
                    times[i] = _key_time(key)
                fetched += len(docs)
                if incremental:  # only documents after the watermark extend the snapshot
                    keep = new.copy()
                    docs = [d for d, k in zip(docs, keep) if k]
                    new, times = new[keep], times[keep]
                    if not docs:
                        continue
                table = docs_table([_data_fields(d, rename) for d in docs])
                part = scratch / f"part-{len(parts):06d}.parquet"
                pq.write_table(table, part)
                parts.append(part)
                schemas.append(table.schema)
                new_masks.append(new)
                times_list.append(times)
    except errors.PyMongoError as exc:
        raise unavailable(exc, where, mcfg.server_selection_timeout_ms if own else None) from None
    finally:
        if own:
            client.close()  # ours: opened above
    read = sum(len(m) for m in new_masks)
    if missing:
        log.warning(
            "%d document(s) of %s have no %s: they are never new, and read only by a full read",
            missing,
            source,
            field,
        )
    log.info("read %d documents of %s from %s (%s; %d fetched)", read, source, where, mode, fetched)
    if not parts and base_snapshot is None:
        raise DataError(
            "the collection is empty; load data first (netsec push-data <csv>)", source=f"{source} at {where}"
        )
    return SourceRead(
        source=source,
        schema=unify_schemas(schemas) if schemas else pa.schema([]),
        previous_watermark=previous.watermark if previous else None,
        watermark=format_watermark(max_key)
        if max_key is not None
        else (previous.watermark if previous else None),
        watermark_type=kind or (previous.watermark_type if previous else None),
        documents_read=read,
        base_snapshot_uri=base_snapshot,
        parts=list(parts),
        new_mask=np.concatenate(new_masks) if new_masks else np.zeros(0, bool),
        times=np.concatenate(times_list) if times_list else np.zeros(0, float),
    )
