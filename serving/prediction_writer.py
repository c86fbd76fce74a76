"""Writing the prediction log: every served prediction, for later drift checks, off the hot path.

A request only appends references it already holds (the input matrix and the outputs) to a
buffer; a daemon thread turns them into columnar documents, one per request (the format is
``netsec_tasks.prediction_log``, which also reads it back), and writes them in batches (every
``log_batch_rows`` rows or ``log_flush_seconds``) to MongoDB or to daily JSONL files. The buffer is
bounded: when the sink is slower than the traffic, new entries are dropped and counted
(``netsec_prediction_log_dropped_rows_total``) instead of slowing requests down or growing memory.

The log is the served registered model's own (``NETSEC_SERVING_MODEL_NAME``): the day files go
to ``<log dir>/<model>/``, MongoDB documents carry ``model_name`` and the sink's reader only
finds that model's requests, so a verdict is accepted only for a prediction this model made.

Every request has a request id (``netsec_tasks.prediction_log.new_request_id``); its rows' ids are
the prediction ids ``POST /feedback`` takes back. :meth:`PredictionLog.known` says which ids the
log holds: the ids of recent requests are remembered here (so feedback on rows still waiting in
the buffer is accepted), older ones are looked up in the sink.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netsec_tasks.prediction_log import (
    JsonlLogReader,
    MongoLogReader,
    has_prediction,
    parse_prediction_id,
    prediction_documents,
)
from netsec_tasks.sinks import bson_document, json_bytes

log = logging.getLogger("netsec.serving")


@dataclass(frozen=True)
class LogEntry:
    time: dt.datetime
    model_name: str
    model_version: str
    features: tuple[str, ...]
    inputs: Any  # float matrix or DataFrame, in feature order
    is_threat: np.ndarray
    probability: np.ndarray
    labels: list
    route: str
    request_id: str | None = None
    # The challenger loaded when the request was served (serving.shadow scores the rows with it
    # in the writer's thread, off the request path), then its version, decisions and P(threat).
    challenger: Any = field(default=None, repr=False, compare=False)
    challenger_version: str | None = None
    challenger_is_threat: np.ndarray | None = None
    challenger_probability: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return len(self.is_threat)

    def documents(self) -> list[dict]:
        return prediction_documents(
            time=self.time,
            model_name=self.model_name,
            model_version=self.model_version,
            route=self.route,
            features=self.features,
            inputs=self.inputs,
            is_threat=self.is_threat,
            probability=self.probability,
            labels=self.labels,
            request_id=self.request_id,
            challenger_version=self.challenger_version,
            challenger_is_threat=self.challenger_is_threat,
            challenger_probability=self.challenger_probability,
        )


class JsonlSink:
    """``<root>/<model>/predictions-YYYY-MM-DD.jsonl``, appended; one JSON document (request) per
    line."""

    def __init__(self, root: str | Path, model_name: str):
        self.reader = JsonlLogReader(root, model_name)
        self.directory = self.reader.directory

    def convert(self, entry: LogEntry) -> list[tuple[int, bytes]]:
        # The JSON sink's encoder: times as RFC 3339, anything else JSON lacks (a Timestamp in a
        # text column) as its str(), text from data made valid UTF-8.
        return [(doc["n_rows"], json_bytes(doc)) for doc in entry.documents()]

    def write(self, items: list[tuple[str, bytes]]) -> None:
        """``items``: (day, JSON line) pairs."""
        self.directory.mkdir(parents=True, exist_ok=True)
        by_day: dict[str, list[bytes]] = {}
        for day, line in items:
            by_day.setdefault(day, []).append(line)
        for day, lines in by_day.items():
            # One write call per batch: lines from concurrent workers do not interleave mid-line.
            with open(self.directory / f"predictions-{day}.jsonl", "ab") as fh:
                fh.write(b"\n".join(lines) + b"\n")

    def describe(self) -> str:
        return f"jsonl:{self.directory}"

    def close(self) -> None:
        pass


class MongoSink:
    """The shared collection; the documents carry ``model_name`` (the reader filters on it)."""

    def __init__(self, uri: str, database: str | None, collection: str, model_name: str):
        import pymongo

        self.client: pymongo.MongoClient = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=5000, connect=False
        )
        db = database or (pymongo.uri_parser.parse_uri(uri).get("database") or "netsec")
        self.collection = self.client[db][collection]
        self.name = f"mongo:{db}.{collection}"
        self.reader = MongoLogReader(self.collection, model_name)
        self._indexed = False

    def convert(self, entry: LogEntry) -> list[tuple[int, dict]]:
        return [(doc["n_rows"], bson_document(doc)) for doc in entry.documents()]  # the BSON sink

    def write(self, items: list[tuple[str, dict]]) -> None:
        if not self._indexed:  # here, not at start-up: the service starts with MongoDB down
            self.reader.ensure_indexes()
            self._indexed = True
        self.collection.insert_many([doc for _, doc in items], ordered=False)

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        self.client.close()


class PredictionLog:
    """Entries wait in a bounded buffer; one thread writes them every ``flush_seconds``, or as
    soon as ``batch_rows`` rows wait.

    A request only appends to the buffer: the writer is not woken per request (with one-row
    traffic, waking it on every request cost ~0.4 ms of GIL hand-overs, a third of the
    request), only when a batch is due.

    ``shadow`` (:class:`serving.shadow.ShadowScorer`): called on each batch before it is
    encoded, it adds the challenger's decisions to the entries, so the challenger scores the
    batch's rows in one call each, in this thread, never in a request's.
    """

    # Request ids remembered for feedback lookups, newest last (~100 bytes each).
    RECENT_REQUESTS = 100_000

    def __init__(
        self,
        sink,
        *,
        batch_rows: int,
        flush_seconds: float,
        max_queued: int,
        on_drop=None,
        on_write=None,
        shadow=None,
    ):
        self.sink = sink
        self.shadow = shadow
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_queued = max_queued  # requests waiting; beyond it new ones are dropped
        self.dropped_rows = 0
        self.written_rows = 0
        self.failed_rows = 0
        self.on_drop = on_drop
        self.on_write = on_write
        self._buffer: list[LogEntry] = []
        self._buffered_rows = 0
        self._recent: OrderedDict[str, int] = OrderedDict()  # request id -> rows
        self._lock = threading.Lock()
        self._due = threading.Event()  # a batch is due, or close() was called
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="netsec-prediction-log", daemon=True)

    def start(self) -> PredictionLog:
        self._thread.start()
        return self

    def submit(self, entry: LogEntry) -> bool:
        """Never blocks: a full buffer drops the entry and counts its rows."""
        n = entry.n_rows
        with self._lock:
            accepted = len(self._buffer) < self.max_queued and not self._closing
            if accepted:
                self._buffer.append(entry)
                self._buffered_rows += n
                due = self._buffered_rows >= self.batch_rows
                if entry.request_id is not None:
                    self._recent[entry.request_id] = n
                    if len(self._recent) > self.RECENT_REQUESTS:
                        self._recent.popitem(last=False)
        if not accepted:
            self.dropped_rows += n
            if self.on_drop:
                self.on_drop(n)
            return False
        if due:
            self._due.set()
        return True

    def known(self, prediction_ids: Iterable[str]) -> set[str]:
        """The ids among ``prediction_ids`` that this log holds (or is about to write). Blocking:
        ids of older requests are looked up in the sink."""
        wanted: dict[str, list[tuple[str, int]]] = {}
        for pid in prediction_ids:
            try:
                rid, row = parse_prediction_id(pid)
            except ValueError:
                continue
            wanted.setdefault(rid, []).append((pid, row))
        found: set[str] = set()
        with self._lock:
            recent = {rid: self._recent.get(rid) for rid in wanted}
        for rid, n in recent.items():
            if n is not None:
                found.update(pid for pid, row in wanted.pop(rid) if row < n)
        if wanted:
            docs = self.sink.reader.find_requests(list(wanted))
            for rid, rows in wanted.items():
                found.update(pid for pid, row in rows if has_prediction(docs.get(rid, []), row))
        return found

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered, then stop the thread."""
        with self._lock:
            self._closing = True
        self._due.set()
        self._thread.join(timeout)
        self.sink.close()

    def _take(self) -> tuple[list[LogEntry], bool]:
        """(the buffered entries, whether this is the last take)."""
        with self._lock:
            entries, self._buffer, self._buffered_rows = self._buffer, [], 0
            if not self._closing:
                self._due.clear()
            return entries, self._closing

    def _run(self) -> None:
        while True:
            self._due.wait(self.flush_seconds)
            entries, closing = self._take()
            if self.shadow is not None and entries:
                entries = self.shadow(entries)
            items: list[tuple[str, Any]] = []  # (day, sink item)
            rows = 0
            for entry in entries:
                try:
                    converted = self.sink.convert(entry)
                except Exception as exc:  # an unencodable value loses this entry, never the log
                    self._failed(entry.n_rows, exc)
                    continue
                day = entry.time.strftime("%Y-%m-%d")
                for n, item in converted:
                    items.append((day, item))
                    rows += n
            self._flush(items, rows)
            if closing:
                return

    def _flush(self, items: list, rows: int) -> None:
        if not items:
            return
        try:
            self.sink.write(items)
            self.written_rows += rows
            if self.on_write:
                self.on_write(rows)
        except Exception as exc:  # a sink outage loses this batch, never the service
            self._failed(rows, exc)
        finally:
            del items[:]
            # A large upload's rows were held until now: hand their memory back to the OS.
            from serving.inference import release_memory

            release_memory(rows)

    def _failed(self, rows: int, exc: Exception) -> None:
        self.failed_rows += rows
        log.warning("prediction log: could not write %d rows to %s: %s", rows, self.sink.describe(), exc)


def make_prediction_log(settings, on_drop=None, on_write=None, shadow=None) -> PredictionLog | None:
    if not settings.log_enabled:
        return None
    sink: MongoSink | JsonlSink
    if settings.mongo_uri:
        sink = MongoSink(
            settings.mongo_uri, settings.mongo_database, settings.mongo_collection, settings.model_name
        )
    else:
        sink = JsonlSink(settings.log_path, settings.model_name)
    return PredictionLog(
        sink,
        batch_rows=settings.log_batch_rows,
        flush_seconds=settings.log_flush_seconds,
        max_queued=settings.log_queue_requests,
        on_drop=on_drop,
        on_write=on_write,
        shadow=shadow,
    ).start()
