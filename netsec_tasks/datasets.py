"""Fetching the real UCI Phishing Websites data from OpenML (``netsec fetch-dataset``).

Plain HTTP with urllib, no OpenML client: ``GET /api/v1/json/data/<id>`` gives the data
description (ARFF file URL, MD5 checksum, default target), then the ARFF file is downloaded,
checked against the checksum, parsed here (:func:`parse_arff`) and converted to the exact
columns and types of the configured schema (:func:`to_schema_frame`): OpenML 4534 stores every
attribute as nominal ``{-1,1}``-style strings, the schema wants ints, and the target ``Result``
in ``-1/1`` (-1 = phishing).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

from netsec_tasks.errors import DataError, SourceUnavailable
from netsec_tasks.schema import DatasetSchema

log = logging.getLogger(__name__)

OPENML_URL = "https://www.openml.org"
UCI_PHISHING_ID = 4534
_MISSING = "?"


def _http_get(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "netsec-fetch-dataset"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        raise SourceUnavailable(f"GET {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceUnavailable(
            f"cannot download {url} within {timeout:g} s: {reason}. Without internet, put the "
            "CSV on this machine yourself and set source.path (or NETSEC_SOURCE__PATH)") from None


def describe(data_id: int, *, base_url: str = OPENML_URL, timeout: float = 60) -> dict:
    """OpenML's data description of ``data_id`` (``url``, ``md5_checksum``, ``format``, ...)."""
    url = f"{base_url.rstrip('/')}/api/v1/json/data/{data_id}"
    raw = _http_get(url, timeout)
    try:
        desc = json.loads(raw)["data_set_description"]
    except (ValueError, KeyError, TypeError):
        raise DataError("not an OpenML data description (no data_set_description)", source=url) from None
    if str(desc.get("format", "ARFF")).lower() != "arff":
        raise DataError(f"format {desc.get('format')!r} is not supported (ARFF only)", source=url)
    if not desc.get("url"):
        raise DataError("the data description has no file url", source=url)
    return desc


# ----------------------------------------------------------------------------- ARFF

_ATTR = re.compile(r"""^@attribute\s+(?P<name>'[^']*'|"[^"]*"|\S+)\s+(?P<type>.+?)\s*$""", re.I)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_arff(text: str, source: str = "<arff>") -> pd.DataFrame:
    """A dense ARFF as a frame: nominal and string attributes as text, numeric ones as numbers.

    Handles comments (``%``), quoted names and values, ``{ a, b }`` with spaces and ``?`` for a
    missing value. Sparse ARFF (``{0 x, 3 y}`` data rows) is rejected with a DataError.
    """
    names: list[str] = []
    numeric: list[bool] = []
    lines = text.splitlines()
    data_at = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("%"):
            continue
        low = stripped.lower()
        if low.startswith("@relation"):
            continue
        if low.startswith("@attribute"):
            m = _ATTR.match(stripped)
            if not m:
                raise DataError(f"line {i + 1}: cannot parse attribute {stripped!r}", source=source)
            names.append(_unquote(m["name"]))
            kind = m["type"].strip().lower()
            numeric.append(kind in ("numeric", "real", "integer"))
            continue
        if low.startswith("@data"):
            data_at = i + 1
            break
        raise DataError(f"line {i + 1}: unexpected header line {stripped!r}", source=source)
    if not names:
        raise DataError("no @attribute lines: not an ARFF file", source=source)
    if data_at is None:
        raise DataError("no @data section: not an ARFF file", source=source)

    rows = []
    body = [(n, ln) for n, ln in enumerate(lines[data_at:], start=data_at + 1)
            if ln.strip() and not ln.lstrip().startswith("%")]
    for (lineno, line), values in zip(body, csv.reader(
            (ln for _, ln in body), quotechar="'", skipinitialspace=True)):
        if line.lstrip().startswith("{"):
            raise DataError(f"line {lineno}: sparse ARFF rows are not supported", source=source)
        if len(values) != len(names):
            raise DataError(f"line {lineno}: {len(values)} values, expected {len(names)}",
                            source=source, rows=[lineno])
        rows.append([None if v.strip() == _MISSING else _unquote(v) for v in values])
    if not rows:
        raise DataError("the @data section has no rows", source=source)
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    for name, is_num in zip(names, numeric):
        if is_num:
            frame[name] = pd.to_numeric(frame[name], errors="raise")
    return frame


def to_schema_frame(frame: pd.DataFrame, schema: DatasetSchema, *, target: str | None = None,
                    source: str = "<arff>") -> pd.DataFrame:
    """Exactly the schema's feature columns then the target, with the schema's types.

    Columns are matched by name, then case-insensitively; ``target`` (OpenML's default target
    attribute) is renamed to the schema's target column when the names differ.
    """
    lookup = {str(c).lower(): c for c in frame.columns}
    if target and target in frame.columns and schema.target.column not in frame.columns:
        frame = frame.rename(columns={target: schema.target.column})
        lookup[schema.target.column.lower()] = schema.target.column
    wanted = schema.features + [schema.target.column]
    resolved = {col: (col if col in frame.columns else lookup.get(col.lower())) for col in wanted}
    missing = [c for c, found in resolved.items() if found is None]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}; the file has "
                        f"{', '.join(map(str, frame.columns))}", source=source, columns=missing)
    out = pd.DataFrame({col: frame[found] for col, found in resolved.items()})
    specs = dict(schema.columns)
    for col in wanted:
        dtype = specs[col].dtype if col in specs else schema.target.dtype
        allowed = specs[col].allowed if col in specs else schema.target.labels
        out[col] = _convert(out[col], dtype, col, source)
        if allowed is not None:
            bad = sorted(set(out[col].dropna().tolist()) - set(allowed), key=str)
            if bad:
                raise DataError(f"column {col!r} has values {bad[:5]} outside {allowed}",
                                source=source, columns=[col])
    return out


def _convert(values: pd.Series, dtype: str, col: str, source: str) -> pd.Series:
    if dtype == "str":
        return values.astype("string")
    if dtype == "bool":
        mapped = values.map(lambda v: None if v is None else str(v).strip().lower() in ("1", "true", "yes"))
        return mapped.astype("boolean")
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values[numbers.isna() & values.notna()]
    if len(bad):
        raise DataError(f"column {col!r} has non-numeric values {sorted(set(bad.astype(str)))[:5]}",
                        source=source, columns=[col])
    if dtype == "int":
        if (numbers.dropna() % 1 != 0).any():
            raise DataError(f"column {col!r} has fractional values, expected integers",
                            source=source, columns=[col])
        return numbers.astype("int64") if not numbers.isna().any() else numbers.astype("Int64")
    return numbers.astype("float64")


# ----------------------------------------------------------------------------- entry point

def fetch_dataset(dest_csv: str | os.PathLike, *, data_id: int = UCI_PHISHING_ID, timeout: float = 60,
                  base_url: str = OPENML_URL, schema: DatasetSchema | None = None) -> Path:
    """Download OpenML ``data_id``, convert it to the schema, write ``dest_csv`` atomically.

    Network failures raise SourceUnavailable naming the URL; a checksum mismatch or data that
    does not fit the schema raises DataError. The default schema is the packaged phishing one.
    """
    if schema is None:
        from netsec_tasks.config import PACKAGE_CONFIG_DIR
        from netsec_tasks.schema import load_schema

        schema = load_schema(PACKAGE_CONFIG_DIR / "schema" / "phishing.yaml")
    desc = describe(data_id, base_url=base_url, timeout=timeout)
    url = desc["url"]
    raw = _http_get(url, timeout)
    expected = desc.get("md5_checksum")
    if expected and hashlib.md5(raw).hexdigest() != expected:
        raise DataError(f"checksum mismatch (md5 {hashlib.md5(raw).hexdigest()}, OpenML says "
                        f"{expected}): truncated or altered download, try again", source=url)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    frame = to_schema_frame(parse_arff(text, source=url), schema,
                            target=desc.get("default_target_attribute"), source=url)
    dest = Path(dest_csv)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    tmp.replace(dest)
    log.info("OpenML %s (%s, %d rows) written to %s", data_id, desc.get("name"), len(frame), dest)
    return dest
