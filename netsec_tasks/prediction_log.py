"""The prediction log's record format: written by serving, read back here for drift checks.

One document per request (large requests split every ``MAX_ROWS_PER_DOCUMENT`` rows), columnar::

    {"time": ..., "model_name": "netsec-phishing", "model_version": "3", "route": "/predict",
     "n_rows": 2,
     "features": {"having_IP_Address": [1, -1], "URL_Length": [1, 0], ...},
     "is_threat": [0, 1], "threat_probability": [0.02, 0.97], "label": [1, -1]}

Columnar per request, like the payload logs of KServe or Databricks inference tables, because a
row-per-document log costs more CPU to format than the forest spends predicting: formatting 1000
rows one JSON line each took ~6 ms under the GIL beside ~27 ms of inference, while encoding the
columns takes ~0.5 ms. ``read_prediction_log`` and ``prediction_frame`` turn documents back into
one row per prediction, so ``netsec drift TRAIN <log dir>`` compares served traffic with the
training data. Files are ``<log dir>/predictions-YYYY-MM-DD.jsonl`` (UTC days); MongoDB holds the
same documents, with ``time`` a BSON date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
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
FILE_GLOB = "predictions-*.jsonl"

_EXACT_INT = 2.0 ** 53  # beyond it float64 no longer holds every integer


def _column_values(values: np.ndarray) -> list:
    """A float column as JSON-ready values: integers when every value is a whole number (the
    usual case for encoded categorical features; ints encode ~5x faster than floats), else
    floats. The numbers are equal either way; the reader casts back to float."""
    if values.dtype.kind == "f" and values.size and np.abs(values).max() < _EXACT_INT \
            and np.array_equal(values, np.rint(values)):  # NaN fails the comparison: stays float
        return values.astype(np.int64).tolist()
    return values.tolist()


def prediction_documents(*, time: dt.datetime, model_name: str, model_version: str, route: str,
                         features: Sequence[str], inputs: Any, is_threat: np.ndarray,
                         probability: np.ndarray, labels: Sequence[Any],
                         max_rows: int = MAX_ROWS_PER_DOCUMENT) -> list[dict[str, Any]]:
    """The log documents of one request. ``inputs`` is the model input: a float matrix in
    ``features`` order, or a DataFrame (models with non-numeric features)."""
    n = len(is_threat)
    docs = []
    for start in range(0, n, max_rows):
        part = slice(start, min(n, start + max_rows))
        if isinstance(inputs, np.ndarray):
            block = inputs[part]
            cols = {name: _column_values(block[:, j]) for j, name in enumerate(features)}
        else:
            block = inputs.iloc[part]
            cols = {name: (_column_values(block[name].to_numpy())
                           if block[name].dtype.kind == "f" else block[name].tolist())
                    for name in features}
        docs.append({
            "time": time, "model_name": model_name, "model_version": model_version,
            "route": route, "n_rows": part.stop - part.start, "features": cols,
            "is_threat": np.asarray(is_threat[part]).astype(np.int64).tolist(),
            "threat_probability": np.asarray(probability[part], dtype=np.float64).tolist(),
            "label": list(labels[part]),
        })
    return docs


def prediction_frame(documents: Iterable[Mapping[str, Any]], *, outputs: bool = True) -> pd.DataFrame:
    """One row per prediction from log documents (parsed JSONL lines or MongoDB documents).

    Columns: the features, then (``outputs=True``) ``is_threat``, ``threat_probability``,
    ``label`` and ``time``, ``model_name``, ``model_version``, ``route``.
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
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"document {i + 1} is not a prediction-log record ({type(exc).__name__}: "
                            f"{exc})") from None
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


def log_files(path: str | os.PathLike) -> list[Path]:
    """The JSONL files of a log directory (``predictions-*.jsonl``), one file, or a glob."""
    from netsec_tasks.table_io import expand_paths

    p = Path(str(path).removeprefix("file://"))
    if p.is_dir():
        files = sorted(p.glob(FILE_GLOB))
        if not files:
            raise DataError(f"no prediction log files ({FILE_GLOB}) in this directory", source=str(p))
        return files
    return expand_paths(p)


def is_prediction_log(path: str | os.PathLike) -> bool:
    """A directory of log files or a ``.jsonl`` file (what ``netsec drift`` should read as a log)."""
    p = Path(str(path).removeprefix("file://"))
    if p.is_dir():
        return any(p.glob(FILE_GLOB))
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
