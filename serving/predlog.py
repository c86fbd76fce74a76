"""The prediction log: every served prediction, for later drift checks, written off the hot path.

A request only does ``queue.put_nowait`` of references it already holds (the input matrix and the
outputs); a daemon thread turns them into documents and writes them in batches (every
``log_batch_rows`` rows or ``log_flush_seconds``) to MongoDB or to daily JSONL files. The queue is
bounded: when the sink is slower than the traffic, new entries are dropped and counted
(``netsec_prediction_log_dropped_rows_total``) instead of slowing requests down or growing memory.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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

    def jsonl_lines(self) -> list[str]:
        """One JSON line per row, formatted from the matrix without building dicts (a dict and a
        json.dumps per row cost ~25 ms per 1000 rows, more than the forest itself)."""
        if not isinstance(self.inputs, np.ndarray):
            return [json.dumps({**d, "time": d["time"].isoformat()}, default=str)
                    for d in self.documents()]
        head = json.dumps({"time": self.time.isoformat(), "model_name": self.model_name,
                           "model_version": self.model_version, "route": self.route})[:-1]
        feats = ", ".join(f"{json.dumps(f)}: %r" for f in self.features)
        template = (head + ', "features": {' + feats.replace("%", "%%").replace("%%r", "%r")
                    + '}, "is_threat": %d, "threat_probability": %r, "label": %s}')
        encoded = {}
        out = []
        for row, threat, p, label in zip(self.inputs.tolist(), self.is_threat.tolist(),
                                         self.probability.tolist(), self.labels):
            lbl = encoded.get(label)
            if lbl is None:
                lbl = encoded[label] = json.dumps(label)
            out.append(template % (*row, threat, p, lbl))
        return out

    def documents(self) -> list[dict]:
        values = (self.inputs.tolist() if isinstance(self.inputs, np.ndarray)
                  else self.inputs.astype(object).values.tolist())
        docs = []
        for row, threat, p, label in zip(values, self.is_threat.tolist(), self.probability.tolist(),
                                         self.labels):
            docs.append({
                "time": self.time, "model_name": self.model_name,
                "model_version": self.model_version, "route": self.route,
                "features": dict(zip(self.features, row)),
                "is_threat": int(threat), "threat_probability": float(p), "label": label,
            })
        return docs


class JsonlSink:
    """``<dir>/predictions-YYYY-MM-DD.jsonl``, appended; one JSON document per line."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def convert(self, entry: LogEntry) -> list[str]:
        return entry.jsonl_lines()

    def write(self, items: list[tuple[str, str]]) -> None:
        """``items``: (day, JSON line) pairs."""
        self.directory.mkdir(parents=True, exist_ok=True)
        by_day: dict[str, list[str]] = {}
        for day, line in items:
            by_day.setdefault(day, []).append(line)
        for day, lines in by_day.items():
            # One write call per batch: lines from concurrent workers do not interleave mid-line.
            with open(self.directory / f"predictions-{day}.jsonl", "a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")

    def describe(self) -> str:
        return f"jsonl:{self.directory}"

    def close(self) -> None:
        pass


class MongoSink:
    def __init__(self, uri: str, database: str | None, collection: str):
        import pymongo

        self.client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000, connect=False)
        db = database or (pymongo.uri_parser.parse_uri(uri).get("database") or "netsec")
        self.collection = self.client[db][collection]
        self.name = f"mongo:{db}.{collection}"

    def convert(self, entry: LogEntry) -> list[dict]:
        return entry.documents()

    def write(self, items: list[tuple[str, dict]]) -> None:
        self.collection.insert_many([doc for _, doc in items], ordered=False)

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        self.client.close()


class PredictionLog:
    def __init__(self, sink, *, batch_rows: int, flush_seconds: float, max_queued: int,
                 on_drop=None, on_write=None):
        self.sink = sink
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.queue: queue.Queue[LogEntry | None] = queue.Queue(maxsize=max_queued)
        self.dropped_rows = 0
        self.written_rows = 0
        self.failed_rows = 0
        self.on_drop = on_drop
        self.on_write = on_write
        self._thread = threading.Thread(target=self._run, name="netsec-prediction-log", daemon=True)
        self._idle = threading.Event()

    def start(self) -> "PredictionLog":
        self._thread.start()
        return self

    def submit(self, entry: LogEntry) -> bool:
        """Never blocks: a full queue drops the entry and counts its rows."""
        try:
            self.queue.put_nowait(entry)
            return True
        except queue.Full:
            n = len(entry.is_threat)
            self.dropped_rows += n
            if self.on_drop:
                self.on_drop(n)
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued, then stop the thread."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self.sink.close()

    def _run(self) -> None:
        pending: list[tuple[str, Any]] = []
        deadline = time.monotonic() + self.flush_seconds
        while True:
            try:
                entry = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                entry = ...
            if entry is None:
                self._flush(pending)
                return
            if entry is not ...:
                day = entry.time.strftime("%Y-%m-%d")
                pending.extend((day, item) for item in self.sink.convert(entry))
            if len(pending) >= self.batch_rows or time.monotonic() >= deadline:
                self._flush(pending)
                pending = []
                deadline = time.monotonic() + self.flush_seconds

    def _flush(self, docs: list) -> None:
        if not docs:
            return
        try:
            self.sink.write(docs)
            self.written_rows += len(docs)
            if self.on_write:
                self.on_write(len(docs))
        except Exception as exc:  # a sink outage loses this batch, never the service
            self.failed_rows += len(docs)
            log.warning("prediction log: could not write %d rows to %s: %s", len(docs),
                        self.sink.describe(), exc)


def make_prediction_log(settings, on_drop=None, on_write=None) -> PredictionLog | None:
    if not settings.log_enabled:
        return None
    if settings.mongo_uri:
        sink = MongoSink(settings.mongo_uri, settings.mongo_database, settings.mongo_collection)
    else:
        sink = JsonlSink(settings.log_path)
    return PredictionLog(sink, batch_rows=settings.log_batch_rows,
                         flush_seconds=settings.log_flush_seconds,
                         max_queued=settings.log_queue_requests, on_drop=on_drop,
                         on_write=on_write).start()
