"""One encoder per output sink: text that came from data is never syntax where we write it.

Values, labels, column names, file names and the reasons that quote them come from files,
spreadsheets, API callers and attackers. Every writer of the project hands such text to the
encoder of its sink, so that it cannot run, break the document, escape a folder or fail the write:

============================  ===========================  =========================================
sink                          encoder                      guarantee
============================  ===========================  =========================================
CSV (scored rows, invalid.csv,:func:`csv_chunks`,          a cell a spreadsheet would run as a formula
anything a spreadsheet opens) :func:`write_csv`,           (``=`` ``+`` ``-`` ``@`` tab CR) starts with
                              :func:`csv_text`             ``'``; quoting by the csv module; CRLF
YAML (reports)                :func:`yaml_text`            plain data through ``yaml.safe_dump``: a
                                                           string is always a scalar, never a tag,
                                                           anchor or document marker
HTML (reports)                :func:`html_text`            escaped for text and quoted attributes
plot labels (PNG, matplotlib) :func:`plot_text`            drawn as written, never parsed as math
JSON (API answers, logs,      :func:`json_bytes`,          valid JSON (non-finite numbers as null)
state, MLflow JSON tags)      :func:`json_text`
MongoDB documents (BSON)      :func:`bson_document`        integers beyond 8 bytes as text; field
                                                           names without ``$``/``.``/NUL
MLflow metric, param and      :func:`mlflow_key`           MLflow's characters only, no path
tag names                                                  segment, <= 250 characters, distinct
MLflow param and tag values   :func:`mlflow_value`         within MLflow's length limits
Prometheus label values       :func:`prom_label`           one of a fixed set, or short plain text
file and object names         :func:`file_name`            ``[A-Za-z0-9._=-]`` only, never ``.``/
                                                           ``..``/hidden, <= 100 characters
============================  ===========================  =========================================

Every encoder first makes its text valid UTF-8 (:func:`text`): a lone surrogate (a JSON body's
``"\\ud800"``, a file name that is not UTF-8) becomes U+FFFD instead of failing the write.
``tests/test_sinks.py`` feeds every writer of the project hostile text through these encoders.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

_SURROGATE = re.compile("[\ud800-\udfff]")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_MLFLOW_KEY = re.compile(r"[^A-Za-z0-9_\-. ]")
_FILE_NAME = re.compile(r"[^A-Za-z0-9._=-]+")
_BSON_KEY = re.compile(r"[.\x00]")
MLFLOW_KEY_CHARS = 250
MLFLOW_PARAM_CHARS = 6000
MLFLOW_TAG_CHARS = 8000
PROM_LABEL_CHARS = 64
FILE_NAME_CHARS = 100
_INT64 = (-(2**63), 2**63 - 1)


def text(value: Any) -> str:
    """``value`` as valid UTF-8 text: ``str(value)`` with lone surrogates replaced by U+FFFD."""
    s = value if isinstance(value, str) else str(value)
    return _SURROGATE.sub("\ufffd", s) if _SURROGATE.search(s) else s


def _digest(value: str, n: int = 8) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def _clean(obj: Any) -> Any:
    """Plain data with valid UTF-8 strings (keys too) and no non-finite floats (null)."""
    if isinstance(obj, str):
        return text(obj)
    if isinstance(obj, Mapping):
        return {text(k) if isinstance(k, str) else k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    return obj


# --------------------------------------------------------------------------- CSV


def neutralise(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, made inert with a leading ``'``
    (OWASP's advice for CSV injection). Numbers, and text that is a plain number such as
    ``-1``, stay as they are."""
    if isinstance(value, str):
        value = text(value)
        if value.startswith(_FORMULA_START) and not _NUMBER.match(value):
            return "'" + value
    return value


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells and column names are :func:`neutralise`-d; numeric columns are
    untouched."""
    out = frame.copy(deep=False)
    for col in out.columns:
        s = out[col]
        if s.dtype == object or pd.api.types.is_string_dtype(s):
            # A list, not Series.map: map re-infers the dtype and would print -1 as -1.0.
            out[col] = pd.Series([neutralise(v) for v in s], index=s.index, dtype=object)
    out.columns = [neutralise(text(c)) for c in out.columns]
    return out


def csv_chunks(frame: pd.DataFrame, *, chunk_rows: int = 5000) -> Iterator[bytes]:
    """``frame`` as UTF-8 CSV (header first), neutralised, ``chunk_rows`` rows per chunk, so a
    large result is streamed instead of built as one string."""
    for start in range(0, max(len(frame), 1), chunk_rows):
        part = csv_frame(frame.iloc[start : start + chunk_rows])
        buf = io.StringIO()
        # CRLF (RFC 4180): the csv module then quotes any cell holding a CR or LF; with "\n"
        # alone a bare CR inside a cell would be written unquoted and split the row on reading.
        part.to_csv(buf, index=False, header=start == 0, lineterminator="\r\n")
        yield buf.getvalue().encode("utf-8")


def csv_text(frame: pd.DataFrame) -> str:
    """``frame`` as neutralised CSV text (a small table: a report's quarantined rows)."""
    return b"".join(csv_chunks(frame)).decode("utf-8")


def write_csv(frame: pd.DataFrame, fh) -> None:
    """Write ``frame`` as neutralised CSV to a binary or text file object."""
    for chunk in csv_chunks(frame):
        fh.write(chunk if "b" in getattr(fh, "mode", "b") else chunk.decode("utf-8"))


# --------------------------------------------------------------------------- YAML, HTML, JSON


def yaml_text(doc: Any) -> str:
    """A report as YAML: plain data (:func:`netsec_tasks.plain.plain`), valid UTF-8, through
    ``yaml.safe_dump``, which quotes any string that YAML would read as something else."""
    import yaml

    from netsec_tasks.plain import plain

    return yaml.safe_dump(_clean(plain(doc)), sort_keys=False, allow_unicode=True, width=120)


def html_text(value: Any) -> str:
    """``value`` escaped for HTML text and double- or single-quoted attributes."""
    return html.escape(text(value), quote=True)


def json_text(obj: Any, **options: Any) -> str:
    """``obj`` as JSON text: valid UTF-8, non-finite numbers as null, other objects as ``str``."""
    return json.dumps(_clean(obj), default=lambda v: text(v), allow_nan=False, **options)


_msgspec_encode: Any = None  # msgspec's encoder once loaded; False without msgspec


def json_bytes(obj: Any) -> bytes:
    """``obj`` as compact UTF-8 JSON, fast (msgspec) when its text is valid UTF-8, else through
    :func:`json_text`'s cleaning; non-finite floats are null either way."""
    global _msgspec_encode
    if _msgspec_encode is None:
        try:
            import msgspec

            _msgspec_encode = msgspec.json.Encoder(enc_hook=str).encode
        except ImportError:  # pragma: no cover - msgspec is in the serving extra
            _msgspec_encode = False
    if _msgspec_encode:
        try:
            return _msgspec_encode(obj)  # msgspec writes NaN/inf as null
        except (UnicodeEncodeError, TypeError, ValueError, OverflowError):
            pass
    return json_text(obj, separators=(",", ":")).encode("utf-8")


def plot_text(value: Any, *, limit: int | None = None) -> str:
    """Text for a matplotlib label or title: ``$`` escaped, so a label such as ``$x$`` or a lone
    ``$`` is drawn as written instead of parsed as math (where a malformed one fails the plot);
    cut to ``limit`` characters with an ellipsis."""
    s = text(value)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


# --------------------------------------------------------------------------- MongoDB


def bson_value(value: Any) -> Any:
    """A value BSON can hold: NaN -> None, numpy scalars -> Python, an integer beyond 8 bytes
    -> its text (validation refuses it by value, as any other out-of-range value), text made
    valid UTF-8."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return bson_document(value)
    if isinstance(value, (list, tuple)):
        return [bson_value(v) for v in value]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        return str(value)
    if isinstance(value, str):
        return text(value)
    return value


def bson_key(name: Any) -> str:
    """A field name MongoDB stores as it is: no ``.``, NUL or leading ``$``."""
    key = _BSON_KEY.sub("_", text(name))
    return "_" + key if key.startswith("$") or not key else key


def bson_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`bson_value` and :func:`bson_key` over one document (nested documents too)."""
    return {bson_key(k): bson_value(v) for k, v in doc.items()}


# --------------------------------------------------------------------------- MLflow, Prometheus


def mlflow_key(name: Any, *, prefix: str = "") -> str:
    """An MLflow metric, param or tag name for ``prefix`` + data text ``name``: letters, digits,
    ``_ - . space`` only (a ``/`` would make a path), never ``.``/``..``, at most 250
    characters. A name that had to change gets a short hash of the original, so two labels
    never share a key."""
    raw = text(name)
    key = _MLFLOW_KEY.sub("_", raw).strip()
    if not key.strip("."):
        key = "_" + key
    changed = key != raw
    limit = MLFLOW_KEY_CHARS - len(prefix)
    if changed or len(key) > limit:
        key = f"{key[: limit - 9]}-{_digest(raw)}"
    return prefix + key


def mlflow_value(value: Any, *, limit: int = MLFLOW_PARAM_CHARS) -> str:
    """An MLflow param (``limit`` 6000) or tag (:data:`MLFLOW_TAG_CHARS`) value: text cut to the
    limit with a marker, so MLflow never refuses or silently truncates it."""
    s = text(value)
    if len(s) <= limit:
        return s
    marker = f"... ({len(s)} characters)"
    return s[: limit - len(marker)] + marker


def prom_label(value: Any, *, allowed: Iterable[str] | None = None, other: str = "other") -> str:
    """A Prometheus label value: one of ``allowed`` (else ``other``: an attacker must not make
    one time series per request), or printable text of at most 64 characters. The client
    library escapes quotes and backslashes itself."""
    s = text(value)
    if allowed is not None:
        return s if s in set(allowed) else other
    s = "".join(c if c.isprintable() else "_" for c in s)
    return s if len(s) <= PROM_LABEL_CHARS else s[: PROM_LABEL_CHARS - 9] + "-" + _digest(s)


# --------------------------------------------------------------------------- file and object names


def file_name(value: Any, *, unique: bool = False, fallback: str = "run") -> str:
    """A file-system- and S3-key-safe name component for data text (a run id, a file or model
    name): ``[A-Za-z0-9._=-]`` only (runs of others become ``_``), never ``.``, ``..`` or a
    hidden name, at most 100 characters. ``unique``: append a short hash of the original when it
    had to change, so two names never meet in one folder. Names that need no change are kept
    as they are (existing run folders keep their paths)."""
    raw = text(value)
    name = _FILE_NAME.sub("_", raw).strip("_")
    if name.startswith("."):
        name = "_" + name.lstrip(".")
    if not name.strip("._"):
        name = fallback
    changed = name != raw
    if len(name) > FILE_NAME_CHARS or (unique and changed):
        name = f"{name[: FILE_NAME_CHARS - 9]}-{_digest(raw)}"
    return name


__all__ = [
    "bson_document",
    "bson_key",
    "bson_value",
    "csv_chunks",
    "csv_frame",
    "csv_text",
    "file_name",
    "html_text",
    "json_bytes",
    "json_text",
    "mlflow_key",
    "mlflow_value",
    "neutralise",
    "plot_text",
    "prom_label",
    "text",
    "write_csv",
    "yaml_text",
]
