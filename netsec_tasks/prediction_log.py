"""The prediction log's record format and readers (``serving.prediction_writer`` writes it).

One document per request (large requests split every ``MAX_ROWS_PER_DOCUMENT`` rows), columnar::

    {"time": ..., "model_name": "netsec-phishing", "model_version": "3", "route": "/predict",
     "request_id": "0192f3a4b5c6d7e8f9a0b1", "row_offset": 0, "n_rows": 2,
     "features": {"having_IP_Address": [1, -1], "URL_Length": [1, 0], ...},
     "is_threat": [0, 1], "threat_probability": [0.02, 0.97], "label": [1, -1]}

**Prediction ids.** Row ``k`` of a request is ``<request_id>-<k>`` (:func:`prediction_ids`); the
API returns it with every scored row and ``POST /feedback`` takes it back. A request id is 12 hex
digits of the log time in milliseconds, then 10 random hex digits (:func:`new_request_id`): ids
sort by time, and the id alone says which day file holds the request. A request split into
several documents keeps one request id; ``row_offset`` is the first row of each document.
Documents written before ids existed read back with ``prediction_id`` None. An id is taken back
only in its canonical form, the one :func:`prediction_ids` writes (lower-case hex, the row in
ASCII digits without leading zeros): ``<rid>-05`` or ``<rid>-٥`` are not ids of row 5.

**One log per registered model.** Every piece of served state belongs to the registered model
that served it (``model_name``), so two data sets served from one home never meet: the JSONL log
of model ``M`` is the folder ``<log dir>/<M>/`` (:func:`model_log_dir`), and in MongoDB the
documents of the shared collection carry ``model_name``, which every reader filters on (the
request-id lookups through an index that starts with it). A reader is made for one model and never returns another model's documents.

Columnar per request, like the payload logs of KServe or Databricks inference tables, because a
row-per-document log costs more CPU to format than the forest spends predicting: formatting 1000
rows one JSON line each took ~6 ms under the GIL beside ~27 ms of inference, while encoding the
columns takes ~0.5 ms. ``read_prediction_log`` and ``prediction_frame`` turn documents back into
one row per prediction, so ``netsec drift TRAIN <log dir>`` compares served traffic with the
training data. Files are ``<log dir>/<model>/predictions-YYYY-MM-DD.jsonl`` (UTC days); MongoDB
holds the same documents, with ``time`` a BSON date.

Readers for the monitoring step and the feedback route: :class:`JsonlLogReader` (a directory of
day files; its watermark is the byte offset read in each file, so a line still being written is
left for the next read) and :class:`MongoLogReader` (its watermark is the last ``_id``, an
ObjectId that grows with insert time). Both find the documents of given request ids.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.errors import DataError

# 10,000 rows x 30 features stay far below MongoDB's 16 MB document limit (~3.3 MB as BSON).
MAX_ROWS_PER_DOCUMENT = 10_000
OUTPUT_COLUMNS = ("is_threat", "threat_probability", "label")
META_COLUMNS = ("time", "model_name", "model_version", "route")
# The challenger's decision on the same rows, scored in shadow (issue 25): present in documents
# of requests served while a challenger was loaded; None in the frame for rows without.
CHALLENGER_COLUMNS = ("challenger_version", "challenger_is_threat", "challenger_threat_probability")
FILE_GLOB = "predictions-*.jsonl"
FILE_PREFIX = "predictions-"

_REQUEST_ID = re.compile(r"[0-9a-f]{22}")
# Canonical only: ASCII digits ([0-9], never \d, which takes any Unicode digit), no leading zero.
_PREDICTION_ID = re.compile(r"([0-9a-f]{22})-(0|[1-9][0-9]{0,8})")
MODEL_FIELD = "model_name"
_REQUEST_ID_FIELD = re.compile(rb'"request_id"\s*:\s*"([0-9a-f]{22})"')


# --------------------------------------------------------------------------- ids


def new_request_id(time: dt.datetime) -> str:
    """A request id: ``time`` in ms since the epoch (12 hex digits), then 10 random hex digits."""
    ms = int(time.timestamp() * 1000)
    return f"{ms:012x}{secrets.token_hex(5)}"


def request_time(request_id: str) -> dt.datetime:
    """The log time a request id was made from (UTC, millisecond resolution)."""
    return dt.datetime.fromtimestamp(int(request_id[:12], 16) / 1000, tz=dt.UTC)


def prediction_ids(request_id: str, n: int, offset: int = 0) -> list[str]:
    """The prediction ids of rows ``offset .. offset+n-1`` of a request."""
    return [f"{request_id}-{k}" for k in range(offset, offset + n)]


def parse_prediction_id(prediction_id: Any) -> tuple[str, int]:
    """(request id, row) of a prediction id in its canonical form (the form
    :func:`prediction_ids` writes); ValueError saying what a valid one looks like otherwise
    (``<rid>-05`` is not row 5: one row has one id)."""
    m = _PREDICTION_ID.fullmatch(prediction_id) if isinstance(prediction_id, str) else None
    if m is None:
        raise ValueError(
            f"{prediction_id!r} is not a prediction id as /predict returns them (22 lower-case "
            "hex digits, '-', the row number without leading zeros); send the id exactly as "
            "it was returned"
        )
    return m.group(1), int(m.group(2))


def canonical_ids(ids: Iterable[Any]) -> tuple[list[tuple[str, str, int]], list[Any]]:
    """([(id, request id, row)] of the canonical ids, [the others]): stores written before ids
    were checked exactly may hold ``<rid>-05``; readers count those instead of failing on them."""
    good, bad = [], []
    for pid in ids:
        try:
            rid, row = parse_prediction_id(pid)
        except ValueError:
            bad.append(pid)
            continue
        good.append((pid, rid, row))
    return good, bad


def model_log_dir(root: str | os.PathLike, model_name: str) -> Path:
    """The folder of registered model ``model_name``'s JSONL log (and its verdicts) under the
    log directory ``root``: ``<root>/<model name as a file name>``."""
    from netsec_tasks.records import safe_name

    if not model_name:
        raise ValueError("a prediction log belongs to a registered model: model_name is empty")
    return Path(str(root).removeprefix("file://")) / safe_name(model_name)[:120]


_EXACT_INT = 2.0**53  # beyond it float64 no longer holds every integer


def _column_values(values: np.ndarray) -> list:
    """A float column as JSON-ready values: integers when every value is a whole number (the
    usual case for encoded categorical features; ints encode ~5x faster than floats), else
    floats. The numbers are equal either way; the reader casts back to float."""
    if (
        values.dtype.kind == "f"
        and values.size
        and np.abs(values).max() < _EXACT_INT
        and np.array_equal(values, np.rint(values))
    ):  # NaN fails the comparison: stays float
        return values.astype(np.int64).tolist()
    return values.tolist()


def _matrix_columns(block: np.ndarray, features: Sequence[str]) -> dict[str, list]:
    """:func:`_column_values` of every column of a float matrix, decided in one numpy pass for
    all columns: per column it costs ~4 us, which for a one-row request was most of the log's
    CPU (30 columns: ~120 us; this: ~15 us)."""
    if block.dtype.kind != "f" or not block.size:
        return {name: _column_values(block[:, j]) for j, name in enumerate(features)}
    with np.errstate(invalid="ignore"):
        whole = ((np.abs(block) < _EXACT_INT) & (block == np.rint(block))).all(axis=0)
    ints = iter(block[:, whole].astype(np.int64).T.tolist())
    floats = iter(block[:, ~whole].T.tolist())
    return {name: next(ints) if w else next(floats) for name, w in zip(features, whole.tolist())}


def prediction_documents(
    *,
    time: dt.datetime,
    model_name: str,
    model_version: str,
    route: str,
    features: Sequence[str],
    inputs: Any,
    is_threat: np.ndarray,
    probability: np.ndarray,
    labels: Sequence[Any],
    request_id: str | None = None,
    max_rows: int = MAX_ROWS_PER_DOCUMENT,
    challenger_version: str | None = None,
    challenger_is_threat: np.ndarray | None = None,
    challenger_probability: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The log documents of one request. ``inputs`` is the model input: a float matrix in
    ``features`` order, or a DataFrame (models with non-numeric features). ``request_id``
    (:func:`new_request_id`) makes the rows' prediction ids. ``challenger_*``: the challenger's
    version, decisions and P(threat) on the same rows (scored in shadow), beside Production's."""
    n = len(is_threat)
    docs = []
    for start in range(0, n, max_rows):
        part = slice(start, min(n, start + max_rows))
        if isinstance(inputs, np.ndarray):
            cols = _matrix_columns(inputs[part], features)
        else:
            block = inputs.iloc[part]
            cols = {
                name: (
                    _column_values(block[name].to_numpy())
                    if block[name].dtype.kind == "f"
                    else block[name].tolist()
                )
                for name in features
            }
        docs.append(
            {
                "time": time,
                "model_name": model_name,
                "model_version": model_version,
                "route": route,
                "request_id": request_id,
                "row_offset": start,
                "n_rows": part.stop - part.start,
                "features": cols,
                "is_threat": np.asarray(is_threat[part]).astype(np.int64).tolist(),
                "threat_probability": np.asarray(probability[part], dtype=np.float64).tolist(),
                "label": list(labels[part]),
            }
        )
        if challenger_version is not None and challenger_is_threat is not None:
            assert challenger_probability is not None
            docs[-1].update(
                challenger_version=challenger_version,
                challenger_is_threat=np.asarray(challenger_is_threat[part]).astype(np.int64).tolist(),
                challenger_threat_probability=np.asarray(
                    challenger_probability[part], dtype=np.float64
                ).tolist(),
            )
    return docs


def prediction_frame(documents: Iterable[Mapping[str, Any]], *, outputs: bool = True) -> pd.DataFrame:
    """One row per prediction from log documents (parsed JSONL lines or MongoDB documents).

    Columns: the features, then (``outputs=True``) ``is_threat``, ``threat_probability``,
    ``label`` and ``time``, ``model_name``, ``model_version``, ``route``, ``prediction_id``, and
    the challenger's ``challenger_version``, ``challenger_is_threat``,
    ``challenger_threat_probability`` (None on rows no challenger scored).
    """
    # Columns grow by list.extend and become one frame per feature set at the end: a frame per
    # document took 41 s for 20,000 one-row requests, this takes 0.65 s.
    groups: dict[tuple[str, ...], dict[str, list]] = {}
    rows = 0
    for i, doc in enumerate(documents):
        try:
            n = int(doc["n_rows"])
            features = doc["features"]
            names = tuple(features)
            values = {k: features[k] for k in names}
            if outputs:
                values.update({k: doc[k] for k in OUTPUT_COLUMNS})
            for k, v in values.items():
                if len(v) != n:
                    raise ValueError(f"{len(v)} values of {k} for n_rows={n}")
            if outputs:
                values.update({k: [doc[k]] * n for k in META_COLUMNS})
                rid = doc.get("request_id")
                values["prediction_id"] = (
                    prediction_ids(rid, n, int(doc.get("row_offset") or 0)) if rid else [None] * n
                )
                shadow = doc.get("challenger_version")
                values["challenger_version"] = [shadow] * n
                for k in CHALLENGER_COLUMNS[1:]:
                    values[k] = doc[k] if shadow is not None else [None] * n
                    if len(values[k]) != n:
                        raise ValueError(f"{len(values[k])} values of {k} for n_rows={n}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                f"document {i + 1} is not a prediction-log record ({type(exc).__name__}: {exc})"
            ) from None
        columns = groups.setdefault(names, {"_row": [], **{k: [] for k in values}})
        columns["_row"].extend(range(rows, rows + n))
        for k, v in values.items():
            columns[k].extend(v)
        rows += n
    if not rows:
        raise DataError("the prediction log holds no predictions")
    frames = [pd.DataFrame(cols) for cols in groups.values()]
    if len(frames) > 1:  # several feature sets (models with other features): back in log order
        frame = pd.concat(frames, ignore_index=True).sort_values("_row", kind="stable")
    else:
        frame = frames[0]
    frame = frame.drop(columns="_row").reset_index(drop=True)
    if outputs:
        frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
        frame["model_version"] = frame["model_version"].astype(str)
    return frame


def _model_folders(p: Path) -> list[Path]:
    """The per-model folders of a log root (sub-folders holding day files)."""
    return sorted(d for d in p.iterdir() if d.is_dir() and any(d.glob(FILE_GLOB)))


def log_files(path: str | os.PathLike) -> list[Path]:
    """The JSONL files of one model's log folder (``predictions-*.jsonl``), one file, or a glob.
    A log root (``<log dir>``) holding one model's folder reads that folder; holding several, it
    is refused, naming them: their rows have other features and never belong in one comparison."""
    from netsec_tasks.table_io import expand_paths

    p = Path(str(path).removeprefix("file://"))
    if p.is_dir():
        files = sorted(p.glob(FILE_GLOB))
        if not files:
            models = _model_folders(p)
            if len(models) == 1:  # one model's log under the root: unambiguous
                return sorted(models[0].glob(FILE_GLOB))
            if models:
                raise DataError(
                    f"this is a log root with the logs of {len(models)} registered model(s) "
                    f"({', '.join(d.name for d in models)}); give one model's folder, e.g. "
                    f"{models[0]}",
                    source=str(p),
                )
            raise DataError(f"no prediction log files ({FILE_GLOB}) in this directory", source=str(p))
        return files
    return expand_paths(p)


def is_prediction_log(path: str | os.PathLike) -> bool:
    """A directory of log files (or a log root of per-model folders) or a ``.jsonl`` file: what
    ``netsec drift`` should read as a log."""
    p = Path(str(path).removeprefix("file://"))
    if p.is_dir():
        return any(p.glob(FILE_GLOB)) or bool(_model_folders(p))
    return p.suffix.lower() == ".jsonl"


def read_prediction_log(path: str | os.PathLike, *, outputs: bool = True) -> pd.DataFrame:
    """The log files under ``path`` as one row per prediction (see ``prediction_frame``).

    A line cut short (the service killed mid-write) is reported with its file and line number.
    """

    def documents():
        for f in log_files(path):
            with open(f, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)
                    except ValueError as exc:
                        raise DataError(f"line {lineno} is not JSON ({exc})", source=str(f)) from None

    return prediction_frame(documents(), outputs=outputs)


# --------------------------------------------------------------------------- readers


def _parse_line(line: bytes, source: str, lineno: int | None = None) -> dict[str, Any]:
    try:
        return json.loads(line)
    except ValueError as exc:
        where = f"line {lineno} " if lineno else "a line "
        raise DataError(f"{where}is not JSON ({exc})", source=source) from None


def _mine(doc: Mapping[str, Any], model_name: str) -> bool:
    return doc.get(MODEL_FIELD) == model_name


class JsonlLogReader:
    """Registered model ``model_name``'s JSONL log: ``<root>/<model>/predictions-YYYY-MM-DD.jsonl``
    (:func:`model_log_dir`). Documents of another model (a writer pointed at the wrong folder)
    are skipped: a reader never returns them.

    The watermark is ``{"offsets": {file name: bytes read}}``: files are only appended to, so a
    read continues where the last one ended, and a line not yet ended by its newline (being
    written) is left for the next read.
    """

    kind = "file"

    def __init__(self, root: str | os.PathLike, model_name: str):
        self.model_name = model_name
        self.directory = model_log_dir(root, model_name)

    def describe(self) -> str:
        return f"jsonl:{self.directory}"

    def files(self) -> list[Path]:
        return sorted(self.directory.glob(FILE_GLOB)) if self.directory.is_dir() else []

    def watermark_at(self, time: dt.datetime) -> dict[str, Any]:
        """A watermark before every document logged at or after ``time``: the day files of
        earlier days are skipped whole (a reader from it still sees earlier rows of that day)."""
        day = f"{FILE_PREFIX}{time.astimezone(dt.UTC):%Y-%m-%d}.jsonl"
        return {"offsets": {f.name: f.stat().st_size for f in self.files() if f.name < day}}

    def read_since(
        self, watermark: Mapping[str, Any] | None, max_documents: int | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(this model's documents after ``watermark``, the watermark after them)."""
        offsets = dict((watermark or {}).get("offsets") or {})
        docs: list[dict[str, Any]] = []
        for f in self.files():
            start = int(offsets.get(f.name, 0))
            size = f.stat().st_size
            if size < start:  # the file was replaced (restored from a backup): read it again
                start = 0
            if size == start:
                continue
            with open(f, "rb") as fh:
                fh.seek(start)
                data = fh.read(size - start)
            end = data.rfind(b"\n") + 1  # only whole lines
            pos = start
            for line in data[:end].splitlines(keepends=True):
                if max_documents is not None and len(docs) >= max_documents:
                    break
                pos += len(line)
                if line.strip():
                    doc = _parse_line(line, str(f))
                    if _mine(doc, self.model_name):
                        docs.append(doc)
            offsets[f.name] = pos
            if max_documents is not None and len(docs) >= max_documents:
                break
        return docs, {"offsets": offsets}

    def find_requests(self, request_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """This model's documents of each request id found, by id (a request may span
        documents). Only the day files the ids' times point at are read."""
        wanted: dict[str, set[str]] = {}
        for rid in request_ids:
            if _REQUEST_ID.fullmatch(rid or ""):
                wanted.setdefault(request_time(rid).strftime("%Y-%m-%d"), set()).add(rid)
        found: dict[str, list[dict[str, Any]]] = {}
        for day, rids in sorted(wanted.items()):
            path = self.directory / f"{FILE_PREFIX}{day}.jsonl"
            if not path.is_file():
                continue
            with open(path, "rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    m = _REQUEST_ID_FIELD.search(line)
                    if m is None or m.group(1).decode() not in rids or not line.endswith(b"\n"):
                        continue
                    doc = _parse_line(line, str(path), lineno)
                    if _mine(doc, self.model_name):
                        found.setdefault(doc["request_id"], []).append(doc)
        return found


class MongoLogReader:
    """Registered model ``model_name``'s documents in the (shared) prediction-log collection:
    every query filters on ``model_name``, through indexes that start with it. The watermark is
    ``{"last_id": <ObjectId hex>}``."""

    kind = "mongo"

    def __init__(self, collection, model_name: str):
        if not model_name:
            raise ValueError("a prediction log belongs to a registered model: model_name is empty")
        self.collection = collection
        self.model_name = model_name

    def describe(self) -> str:
        return f"mongo:{self.collection.full_name}[{MODEL_FIELD}={self.model_name}]"

    def watermark_at(self, time: dt.datetime) -> dict[str, Any]:
        """A watermark before every document inserted at or after ``time`` (an ObjectId holds its
        insert time in seconds; the log writer inserts after the request, never before)."""
        from bson import ObjectId

        return {"last_id": str(ObjectId.from_datetime(time - dt.timedelta(seconds=1)))}

    def read_since(
        self, watermark: Mapping[str, Any] | None, max_documents: int | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from bson import ObjectId

        last = (watermark or {}).get("last_id")
        query: dict[str, Any] = {MODEL_FIELD: self.model_name}
        if last:
            query["_id"] = {"$gt": ObjectId(last)}
        cursor = self.collection.find(query, sort=[("_id", 1)])
        if max_documents is not None:
            cursor = cursor.limit(max_documents)
        docs = list(cursor)
        if docs:
            last = str(docs[-1]["_id"])
        for d in docs:
            d.pop("_id", None)
            if isinstance(d.get("time"), dt.datetime) and d["time"].tzinfo is None:
                d["time"] = d["time"].replace(tzinfo=dt.UTC)  # BSON dates are UTC
        return docs, {"last_id": last}

    def find_requests(self, request_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        ids = sorted({r for r in request_ids if _REQUEST_ID.fullmatch(r or "")})
        found: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(ids), 1000):
            for doc in self.collection.find(
                {MODEL_FIELD: self.model_name, "request_id": {"$in": ids[start : start + 1000]}},
                projection={"_id": 0},
            ):
                if isinstance(doc.get("time"), dt.datetime) and doc["time"].tzinfo is None:
                    doc["time"] = doc["time"].replace(tzinfo=dt.UTC)
                found.setdefault(doc["request_id"], []).append(doc)
        return found

    def ensure_indexes(self) -> None:
        """The index ``find_requests`` (the feedback route, the monitoring join) reads through:
        (model, request id). ``read_since`` walks the ``_id`` index from the watermark and skips
        other models' documents: it reads only what was logged since its last run."""
        self.collection.create_index([(MODEL_FIELD, 1), ("request_id", 1)], name="netsec_model_request")


def rows_of(docs_by_request: Mapping[str, list[dict[str, Any]]], wanted: Iterable[str]) -> pd.DataFrame:
    """The logged rows of the prediction ids ``wanted`` (one row each, in ``prediction_frame``
    columns); ids whose request or row is not in ``docs_by_request`` are left out."""
    docs = [d for ds in docs_by_request.values() for d in ds]
    if not docs:
        return pd.DataFrame(columns=["prediction_id"])
    frame = prediction_frame(docs)
    return frame[frame["prediction_id"].isin(set(wanted))].reset_index(drop=True)


def has_prediction(docs: list[dict[str, Any]], row: int) -> bool:
    """True when one of a request's documents holds row ``row``."""
    return any(
        int(d.get("row_offset") or 0) <= row < int(d.get("row_offset") or 0) + int(d["n_rows"]) for d in docs
    )
