"""Files and globs as tables, local CSV or Parquet: whole (:func:`load_table`) or a chunk at a
time (:func:`iter_table_chunks`), with the same checks and errors."""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Unpack

import numpy as np
import pandas as pd

from netsec_tasks.errors import DataError
from netsec_tasks.table_io.csv_reader import (
    CsvOptions,
    ReadOptions,
    check_row_count,
    parse_planned,
    parser_error,
    plan_file,
    planned_frame,
    read_csv,
    text_handle,
    text_spec,
)
from netsec_tasks.table_io.header import Layout
from netsec_tasks.table_io.machine_types import machine_safe
from netsec_tasks.table_io.table import Table

PARQUET_MAGIC = b"PAR1"


def expand_paths(pattern: str | os.PathLike) -> list[Path]:
    pattern = str(pattern)
    if pattern.startswith("file://"):
        pattern = pattern[len("file://") :]
    matches = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
    paths = [Path(p) for p in matches if Path(p).is_file()]
    if not paths:
        raise DataError("no such file (or the glob matched nothing)", source=pattern)
    return paths


def is_parquet(path: Path, head: bytes) -> bool:
    return head[:4] == PARQUET_MAGIC or path.suffix.lower() in (".parquet", ".pq")


def _read_parquet(path: Path, rename: Mapping[str, str] | None) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"cannot read Parquet: {exc}", source=str(path)) from None
    if rename:
        frame = frame.rename(columns=dict(rename))
    return machine_safe(frame)


def load_table(path: str | os.PathLike, **options: Unpack[ReadOptions]) -> Table:
    """One CSV/Parquet file, or all files matching a glob concatenated (same columns), as a
    :class:`Table` (rows keep their file and line). Options: :func:`read_csv`."""
    tables = []
    # A list, not an iterator: every file of a glob is checked against all of it.
    options["required"] = list(options.get("required", ()))
    for p in expand_paths(path):
        with open(p, "rb") as fh:
            head = fh.read(4)
        if is_parquet(p, head):
            frame = _read_parquet(p, options.get("rename"))
            tables.append(Table(frame=frame, source=str(p), files=[(0, str(p))]))
        else:
            tables.append(read_csv(p, str(p), **options))
    if len(tables) == 1:
        table = tables[0]
        if table.frame.empty:
            raise DataError("no data rows (only a header?)", source=str(path))
        return table
    cols = list(tables[0].frame.columns)
    for t in tables[1:]:
        if list(t.frame.columns) != cols:
            raise DataError(
                "columns differ from the first file of the glob",
                source=t.source,
                columns=sorted(set(t.frame.columns) ^ set(cols)),
            )
    frame = pd.concat([t.frame for t in tables], ignore_index=True)
    if frame.empty:
        raise DataError("no data rows (only a header?)", source=str(path))
    files, offset, lines, ends, notes = [], 0, [], {}, []
    for t in tables:
        files.append((offset, t.source))
        lines.append(t.lines if t.lines is not None else np.full(len(t.frame), -1, dtype=np.int64))
        ends.update({offset + r: e for r, e in t.ends.items()})
        notes += [f"{t.source}: {n}" for n in t.notes]
        offset += len(t.frame)
    all_csv = all(t.lines is not None for t in tables)
    return Table(
        frame=frame,
        source=str(path),
        lines=np.concatenate(lines) if all_csv else None,
        ends=ends,
        files=files,
        notes=notes,
    )


def read_table(path: str | os.PathLike, **options) -> pd.DataFrame:
    """:func:`load_table`, the frame only."""
    return load_table(path, **options).frame


def _file_chunks(
    path: Path,
    chunk_rows: int,
    names: Sequence[str] | None,
    layouts: Sequence[Layout] | None,
    required: Iterable[str],
    rename: Mapping[str, str] | None,
    text_columns: Mapping[str, bool],
) -> Iterator[pd.DataFrame]:
    """One CSV or Parquet file, ``chunk_rows`` rows at a time (each chunk's dtypes inferred on
    its own rows; the caller unifies them). A CSV file's layout is checked in a first pass
    (streamed) before any chunk is handed on."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = str(path)
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if is_parquet(path, head):
        try:
            pf = pq.ParquetFile(path)
            if not pf.metadata.num_rows:
                yield pf.schema_arrow.empty_table().to_pandas()
            for batch in pf.iter_batches(batch_size=chunk_rows):
                frame = pa.Table.from_batches([batch], pf.schema_arrow).to_pandas()
                yield machine_safe(frame.rename(columns=dict(rename)) if rename else frame)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"cannot read Parquet: {exc}", source=source) from None
        return
    opts = CsvOptions(None, text_columns, names, layouts, list(required), rename, keep_lines=False)
    plan, _, text = plan_file(path, head, source, opts)
    rows = 0
    handle = io.StringIO(text) if text is not None else text_handle(path)
    with handle:
        chunks = parse_planned(handle, plan, source, chunksize=chunk_rows)
        try:
            for chunk in chunks:
                chunk = planned_frame(chunk, plan)
                rows += len(chunk)
                yield chunk
        except pd.errors.ParserError as exc:
            raise parser_error(exc, plan, source) from None
    check_row_count(rows, plan, source, None)


def iter_table_chunks(
    path: str | os.PathLike,
    *,
    chunk_rows: int = 65_536,
    names: Sequence[str] | None = None,
    layouts: Sequence[Layout] | None = None,
    required: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
    text_columns: Iterable[str] = (),
    str_columns: Iterable[str] = (),
) -> Iterator[pd.DataFrame]:
    """:func:`read_table` in chunks of at most ``chunk_rows`` rows, so a large file is never
    held whole: the same files (path or glob), options, checks and errors. Each chunk's dtypes
    are inferred on its own rows: a column may be int64 in one chunk and float64 (gaps) or text
    in another; the caller unifies them (:func:`netsec_tasks.sources.unify_schemas`)."""
    columns: list[str] | None = None
    rows = 0
    for p in expand_paths(path):
        spec = text_spec(text_columns, str_columns)
        for chunk in _file_chunks(p, chunk_rows, names, layouts, required, rename, spec):
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
