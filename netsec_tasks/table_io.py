"""Reading and writing tables with errors that name the file.

``read_table`` accepts CSV (comma, semicolon, tab or pipe delimited; UTF-8 with or without BOM)
and Parquet, by path or glob. Anything else (empty file, binary junk, a header only) raises
:class:`DataError` naming the file and what to do. ``iter_table_chunks`` reads the same files a
chunk at a time (ingest of a large file in bounded memory). ``write_parquet`` writes atomically (temp file
and rename), so a crash never leaves a half-written Parquet behind.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pandas as pd

from netsec_tasks.errors import DataError

PARQUET_MAGIC = b"PAR1"
_DELIMITERS = ",;\t|"


def expand_paths(pattern: str | os.PathLike) -> list[Path]:
    pattern = str(pattern)
    if pattern.startswith("file://"):
        pattern = pattern[len("file://") :]
    matches = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
    paths = [Path(p) for p in matches if Path(p).is_file()]
    if not paths:
        raise DataError("no such file (or the glob matched nothing)", source=pattern)
    return paths


def _sniff_delimiter(text: str, source: str) -> str:
    first = text.splitlines()[0] if text else ""
    try:
        return csv.Sniffer().sniff(first, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        counts = {d: first.count(d) for d in _DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        if counts[best] == 0:
            raise DataError(
                "cannot find a column delimiter in the header line; expected a CSV with a header "
                "row delimited by ',', ';', tab or '|'",
                source=source,
            ) from None
        return best


def header_names(
    first_line: str,
    sep: str,
    names: Sequence[str],
    *,
    required: Iterable[str] = (),
    optional: Iterable[str] = (),
    source: str = "<upload>",
) -> list[str] | None:
    """The column names of a file whose schema lists them (``file_columns``): None when the
    first line is a header row (it names every ``required`` column), else ``names``, or
    ``names`` without the ``optional`` columns (a file to score has no label column) when that
    is the first line's field count. Raises DataError when the field count fits neither."""
    fields = [f.strip() for f in next(csv.reader([first_line], delimiter=sep), [])]
    required = list(required) or list(names)
    if set(required) <= set(fields):
        return None
    if len(fields) == len(names):
        return list(names)
    optional = set(optional)
    without = [n for n in names if n not in optional]
    if optional and len(fields) == len(without):
        return without
    counts = f"{len(names)}" + (
        f" (or {len(without)} without {sorted(optional & set(names))})" if len(without) != len(names) else ""
    )
    raise DataError(
        f"the first line has {len(fields)} fields and is not a header row; the schema's "
        f"file_columns lists {counts} columns: {', '.join(names)}",
        source=source,
    )


def read_csv_bytes(
    data: bytes,
    source: str = "<upload>",
    *,
    max_rows: int | None = None,
    text_columns: Iterable[str] = (),
    names: Sequence[str] | None = None,
    required: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> pd.DataFrame:
    """Parse CSV bytes (BOM and delimiter detected). Raises DataError naming ``source``.

    ``text_columns`` (e.g. ids to echo back) are read as text exactly as written: ``007``
    stays ``007`` and ``NA`` stays ``NA``; every other column is parsed as usual.
    ``names``: the schema's ``file_columns`` for header-less files; a file that does start with
    a header row naming the ``required`` columns is read by its header (see
    :func:`header_names`).
    """
    if not data or not data.strip():
        raise DataError("file is empty; expected a CSV with a header row", source=source)
    if b"\x00" in data[:4096] or data[:4] == PARQUET_MAGIC:
        raise DataError("file is binary, not CSV text", source=source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"file is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV", source=source
        ) from None
    sep = _sniff_delimiter(text, source)
    options: dict = {}
    text_columns = set(text_columns)
    first_line = text.split("\n", 1)[0].rstrip("\r")
    given = (
        header_names(first_line, sep, names, required=required, optional=optional, source=source)
        if names
        else None
    )
    if given is not None:
        options.update(header=None, names=given)
    if text_columns:
        header = given or next(csv.reader([first_line], delimiter=sep), [])
        as_text = [h for h in header if h.strip() in text_columns]
        if as_text:
            from pandas._libs.parsers import STR_NA_VALUES

            options.update(
                {
                    "dtype": {h: str for h in as_text},
                    "keep_default_na": False,
                    "na_values": {h: list(STR_NA_VALUES) for h in header if h not in as_text},
                }
            )
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, nrows=max_rows, skipinitialspace=True, **options)
    except pd.errors.ParserError as exc:
        raise DataError(f"malformed CSV: {exc}", source=source) from None
    except pd.errors.EmptyDataError:
        raise DataError("file has no columns", source=source) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    unnamed = [c for c in frame.columns if c.startswith("Unnamed:")]
    if unnamed and len(unnamed) == len(frame.columns):
        raise DataError("header row is missing or empty", source=source)
    return frame


def first_data_line(
    source: str | os.PathLike | bytes,
    *,
    names: Sequence[str] | None = None,
    required: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> int:
    """The line number of the first data row of a CSV file (a path, or its bytes): 2 after a
    header row, 1 in a header-less file (the schema's ``file_columns``), so messages can name
    lines."""
    if not names:
        return 2
    try:
        if isinstance(source, bytes):
            head = source[:65536]
        else:
            with open(source, "rb") as fh:
                head = fh.readline()
        first = head.decode("utf-8-sig", errors="replace").split("\n", 1)[0].rstrip("\r")
        sep = _sniff_delimiter(first, "<csv>")
        return 2 if header_names(first, sep, names, required=required, optional=optional) is None else 1
    except (OSError, DataError):
        return 2


def _csv_first_line(head: bytes, source: str) -> str:
    """The first line of a CSV file from its first bytes, after the checks ``read_csv_bytes``
    makes (empty, binary, not UTF-8); raises DataError naming ``source``."""
    if not head or not head.strip():
        raise DataError("file is empty; expected a CSV with a header row", source=source)
    if b"\x00" in head[:4096] or head[:4] == PARQUET_MAGIC:
        raise DataError("file is binary, not CSV text", source=source)
    line = head.split(b"\n", 1)[0]
    try:
        return line.decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"file is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV", source=source
        ) from None


def _file_chunks(
    path: Path, chunk_rows: int, names: Sequence[str] | None, required: Iterable[str], optional: Iterable[str]
) -> Iterator[pd.DataFrame]:
    """One CSV or Parquet file, ``chunk_rows`` rows at a time (each chunk's dtypes inferred on
    its own rows; the caller unifies them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = str(path)
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if head[:4] == PARQUET_MAGIC or path.suffix.lower() in (".parquet", ".pq"):
        try:
            pf = pq.ParquetFile(path)
            if not pf.metadata.num_rows:
                yield pf.schema_arrow.empty_table().to_pandas()
            for batch in pf.iter_batches(batch_size=chunk_rows):
                yield pa.Table.from_batches([batch], pf.schema_arrow).to_pandas()
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"cannot read Parquet: {exc}", source=source) from None
        return
    first_line = _csv_first_line(head, source)
    sep = _sniff_delimiter(first_line, source)
    options: dict = {}
    given = (
        header_names(first_line, sep, names, required=required, optional=optional, source=source)
        if names
        else None
    )
    if given is not None:
        options.update(header=None, names=given)
    try:
        with open(path, encoding="utf-8-sig", newline="") as text:
            first = True
            for chunk in pd.read_csv(text, sep=sep, skipinitialspace=True, chunksize=chunk_rows, **options):
                chunk.columns = [str(c).strip() for c in chunk.columns]
                if first and all(c.startswith("Unnamed:") for c in chunk.columns):
                    raise DataError("header row is missing or empty", source=source)
                first = False
                yield chunk
    except UnicodeDecodeError as exc:
        raise DataError(
            f"file is not UTF-8 text ({exc.reason}); save it as UTF-8 CSV", source=source
        ) from None
    except pd.errors.ParserError as exc:
        raise DataError(f"malformed CSV: {exc}", source=source) from None
    except pd.errors.EmptyDataError:
        raise DataError("file has no columns", source=source) from None


def iter_table_chunks(
    path: str | os.PathLike,
    *,
    chunk_rows: int = 65_536,
    names: Sequence[str] | None = None,
    required: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> Iterator[pd.DataFrame]:
    """:func:`read_table` in chunks of at most ``chunk_rows`` rows, so a large file is never
    held whole: the same files (path or glob), options, checks and errors. Each chunk's dtypes
    are inferred on its own rows: a column may be int64 in one chunk and float64 (gaps) or text
    in another; the caller unifies them (:func:`netsec_tasks.sources.unify_schemas`)."""
    columns: list[str] | None = None
    rows = 0
    for p in expand_paths(path):
        for chunk in _file_chunks(p, chunk_rows, names, required, optional):
            if columns is None:
                columns = list(chunk.columns)
            elif list(chunk.columns) != columns:
                raise DataError(
                    "columns differ from the first file of the glob",
                    source=str(p),
                    columns=sorted(set(chunk.columns) ^ set(columns)),
                )
            rows += len(chunk)
            yield chunk
    if rows == 0:
        raise DataError("no data rows (only a header?)", source=str(path))


def read_table(
    path: str | os.PathLike,
    *,
    text_columns: Iterable[str] = (),
    names: Sequence[str] | None = None,
    required: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> pd.DataFrame:
    """One CSV/Parquet file, or all files matching a glob concatenated (same columns).

    ``text_columns``: CSV columns read as text exactly as written; ``names``/``required``/
    ``optional``: header-less CSV files (see ``read_csv_bytes``)."""
    frames = []
    for p in expand_paths(path):
        with open(p, "rb") as fh:
            head = fh.read(4)
        if head == PARQUET_MAGIC or p.suffix.lower() in (".parquet", ".pq"):
            try:
                frames.append(pd.read_parquet(p))
            except Exception as exc:  # pyarrow raises several types for a damaged file
                raise DataError(f"cannot read Parquet: {exc}", source=str(p)) from None
        else:
            frames.append(
                read_csv_bytes(
                    p.read_bytes(),
                    source=str(p),
                    text_columns=text_columns,
                    names=names,
                    required=required,
                    optional=optional,
                )
            )
    if len(frames) > 1:
        cols = list(frames[0].columns)
        for p, f in zip(expand_paths(path)[1:], frames[1:]):
            if list(f.columns) != cols:
                raise DataError(
                    "columns differ from the first file of the glob",
                    source=str(p),
                    columns=sorted(set(f.columns) ^ set(cols)),
                )
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if frame.empty:
        raise DataError("no data rows (only a header?)", source=str(path))
    return frame


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike, *, index: bool = False) -> Path:
    """A local Parquet file, written atomically."""
    from netsec_tasks.storage import atomic_path

    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=index)
    return Path(path)


def frame_digest(frame: pd.DataFrame) -> str:
    """Content digest of a frame: stable across runs for the same rows, columns and dtypes."""
    import hashlib

    h = hashlib.sha256()
    h.update(",".join(f"{c}:{frame[c].dtype}" for c in frame.columns).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return h.hexdigest()
