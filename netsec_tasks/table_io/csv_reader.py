"""The CSV reader: a file's bytes or path, scanned (:mod:`.header`, :mod:`.line_scan`) and then
parsed by pandas with the options the scan found, as a :class:`~netsec_tasks.table_io.table.Table`
whose row count the scan cross-checks."""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd

from netsec_tasks.errors import DataError
from netsec_tasks.table_io.header import Head, Layout, first_lines, read_head
from netsec_tasks.table_io.line_scan import Scan, layout_error, repeat_error, scan_lines
from netsec_tasks.table_io.machine_types import machine_safe
from netsec_tasks.table_io.table import Table
from netsec_tasks.table_io.text import (
    blocks_of,
    bom_encoding,
    decode_csv,
    file_blocks,
    not_text,
    utf16_without_bom,
)


@dataclass
class CsvPlan:
    """A scanned CSV file: pandas options and the scan."""

    head: Head
    scan: Scan
    options: dict
    columns: list[str]  # pandas' names, with the trailing placeholder


_TRAILING = "__netsec_trailing_delimiter__"


@dataclass(frozen=True)
class CsvOptions:
    """How to read one CSV (see :func:`read_table`): at most ``max_rows`` rows; ``text_columns``
    read as text (True: exactly as written, null words included); a header-less file's ``names``
    and the ``layouts`` it allows; the ``required`` columns a header row names; the file name ->
    column name ``rename``; ``keep_lines``: keep every record's first line number."""

    max_rows: int | None
    text_columns: Mapping[str, bool]
    names: Sequence[str] | None
    layouts: Sequence[Layout] | None
    required: list[str]
    rename: Mapping[str, str] | None
    keep_lines: bool


def _plan(blocks: Iterator[str], source: str, opts: CsvOptions) -> CsvPlan:
    taken, rest, next_line, sample = first_lines(blocks, source)
    names, layouts = opts.names, opts.layouts
    if names and not layouts:
        layouts = [Layout(f"all {len(names)} file_columns", tuple(names))]
    head = read_head(
        taken,
        source,
        sample=[taken[-1][1], *sample],
        names=names,
        layouts=layouts or [],
        required=opts.required,
        rename=opts.rename or {},
    )
    if head.header:
        body, first = rest, next_line
    else:  # the first data line is the header candidate itself
        first, first_text = taken[-1]
        body = itertools.chain([first_text + "\n"], rest)
    scan = scan_lines(body, head, first, max_rows=opts.max_rows, keep=opts.keep_lines, source=source)
    if scan.n_bad:
        raise layout_error(scan, head, source)
    if scan.repeats:
        raise repeat_error(scan, source)
    if scan.n == 0:
        raise DataError("no data rows (only a header?)", source=source)
    if scan.ends:
        spans = sorted(scan.ends.items())
        shown = ", ".join(f"lines {scan.span_starts[r]}-{e}" for r, e in spans[:3])
        head.notes.append(
            f"{len(spans)} record{'s' if len(spans) != 1 else ''} span{'s' if len(spans) == 1 else ''} "
            f"several lines (a quoted field holds line breaks): {shown}" + (" ..." if len(spans) > 3 else "")
        )
    columns = [*head.names, _TRAILING] if head.trailing else list(head.names)
    options: dict = {
        "sep": head.sep,
        "index_col": False,
        "skipinitialspace": True,
        "names": columns,
        "header": 0 if head.header else None,
    }
    if head.skip:
        options["skiprows"] = head.skip
    as_text = [c for c in head.names if c in opts.text_columns]
    exact = [c for c in as_text if opts.text_columns[c]]
    if as_text:
        options["dtype"] = {c: str for c in as_text}
    if exact:
        from pandas._libs.parsers import STR_NA_VALUES

        options.update(
            keep_default_na=False,
            na_values={c: list(STR_NA_VALUES) for c in columns if c not in exact},
        )
    return CsvPlan(head=head, scan=scan, options=options, columns=columns)


def planned_frame(chunk: pd.DataFrame, plan: CsvPlan) -> pd.DataFrame:
    if plan.head.trailing:
        chunk = chunk.drop(columns=[_TRAILING])
    return machine_safe(chunk)


def parse_planned(reader_input, plan: CsvPlan, source: str, **extra) -> pd.DataFrame | Iterator[pd.DataFrame]:
    try:
        return pd.read_csv(reader_input, **plan.options, **extra)
    except pd.errors.ParserError as exc:
        raise parser_error(exc, plan, source) from None
    except pd.errors.EmptyDataError:
        raise DataError("file has no columns", source=source) from None


def parser_error(exc: Exception, plan: CsvPlan, source: str) -> DataError:
    text = str(exc)
    if "EOF inside string" in text:
        # The quote is on the last record's first line (the csv module read it to the end).
        where = f"line {plan.scan.last}" if plan.scan.last else "a line"
        return DataError(
            f"a quote opened on {where} never closes, so the rest of the file would be one "
            "value (a stray '\"'?): remove it, or close the quoted field",
            source=source,
        )
    return DataError(f"malformed CSV: {text}", source=source)


def check_row_count(n: int, plan: CsvPlan, source: str, max_rows: int | None) -> None:
    want = plan.scan.n if max_rows is None else min(plan.scan.n, max_rows)
    if n != want:  # the layout scan and pandas disagree: never hand on a misaligned table
        raise DataError(
            f"read {n} rows where the layout check counted {want} records; the file has a "
            "construct the reader does not handle consistently (please report it with the file)",
            source=source,
        )


class ReadOptions(TypedDict, total=False):
    """The keyword options of :func:`read_csv` (its docstring says what each does) that
    :func:`~netsec_tasks.table_io.tables.load_table` hands on to it for every file."""

    text_columns: Iterable[str]
    str_columns: Iterable[str]
    names: Sequence[str] | None
    layouts: Sequence[Layout] | None
    required: Iterable[str]
    rename: Mapping[str, str] | None


def read_csv(
    data: bytes | str | os.PathLike,
    source: str | None = None,
    *,
    max_rows: int | None = None,
    text_columns: Iterable[str] = (),
    str_columns: Iterable[str] = (),
    names: Sequence[str] | None = None,
    layouts: Sequence[Layout] | None = None,
    required: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
) -> Table:
    """A CSV file (its bytes, or a path) as a :class:`Table`; raises DataError naming ``source``
    (default: the path, or ``<upload>``), the line and the cause (see the module doc).

    ``max_rows``: read at most this many rows. ``text_columns`` (e.g. ids to echo back) are read
    as text exactly as written (``007`` stays ``007``, ``NA`` stays ``NA``); ``str_columns`` (the
    schema's text features) as text too, with the null words (``NA``, empty) null; other columns
    are typed by pandas. ``names``/``layouts``/``required``: a header-less file (the schema's
    ``file_columns`` and the layouts it allows, :meth:`DatasetSchema.read_options`); a first line
    naming every ``required`` column is a header row. ``rename``: the schema's file name ->
    column name map."""
    opts = CsvOptions(
        max_rows,
        text_spec(text_columns, str_columns),
        names,
        layouts,
        list(required),
        rename,
        keep_lines=True,
    )
    if isinstance(data, (bytes, bytearray)):
        source = source or "<upload>"
        text, notes = decode_csv(bytes(data), source)
        plan = _plan(blocks_of(text), source, opts)
        frame = parse_planned(io.StringIO(text), plan, source, nrows=max_rows)
        assert isinstance(frame, pd.DataFrame)
    else:
        path = Path(str(data).removeprefix("file://"))
        source = source or str(path)
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        plan, notes, decoded = plan_file(path, head, source, opts)
        with io.StringIO(decoded) if decoded is not None else text_handle(path) as handle:
            frame = parse_planned(handle, plan, source, nrows=max_rows)
        assert isinstance(frame, pd.DataFrame)
    frame = planned_frame(frame, plan)
    check_row_count(len(frame), plan, source, max_rows)
    frame = _infinities_as_written(
        frame, plan, data if isinstance(data, (bytes, bytearray)) else None, source
    )
    lines = np.concatenate(plan.scan.starts) if plan.scan.starts else np.zeros(0, dtype=np.int64)
    return Table(
        frame=frame,
        source=source,
        lines=lines[: len(frame)],
        ends=plan.scan.ends,
        files=[(0, source)],
        notes=[*notes, *plan.head.notes],
    )


def text_handle(path: Path):
    return open(path, encoding="utf-8-sig", newline="")


def plan_file(
    path: Path, head: bytes, source: str, opts: CsvOptions
) -> tuple[CsvPlan, list[str], str | None]:
    """Scan a local CSV file. UTF-8 streams from disk (``text`` None); UTF-16/32 is decoded in
    memory and its text returned."""
    if not head.strip():
        raise DataError("file is empty; expected a CSV with a header row", source=source)
    if bom_encoding(head[:4]) or utf16_without_bom(head[:4096]):
        text, notes = decode_csv(path.read_bytes(), source)
        return _plan(blocks_of(text), source, opts), notes, text
    why = not_text(head)
    if why:
        raise DataError(f"file is {why}", source=source)
    return _plan(file_blocks(path, source), source, opts), [], None


def _infinities_as_written(
    frame: pd.DataFrame, plan: CsvPlan, data: bytes | None, source: str
) -> pd.DataFrame:
    """Float columns where pandas read an overflowing number (``1e400``) as infinity, read again
    as text, so that messages show the value as written; the contract refuses it either way.
    (The chunked reader keeps ``inf``: a nightly run's quarantine names the row and the reason.)"""
    cols = [c for c in frame.columns if frame[c].dtype.kind == "f" and np.isinf(frame[c].to_numpy()).any()]
    if not cols:
        return frame
    options = {**plan.options, "dtype": {**plan.options.get("dtype", {}), **{c: str for c in cols}}}
    options.update(keep_default_na=False, na_values={c: [] for c in cols})
    try:
        handle = io.StringIO(decode_csv(data, source)[0]) if data is not None else text_handle(Path(source))
        with handle:
            again = pd.read_csv(handle, nrows=len(frame), **options)
    except (OSError, ValueError, DataError, pd.errors.ParserError):
        return frame
    out = frame.copy()
    for c in cols:
        out[c] = again[c].where(again[c].str.strip() != "", np.nan).to_numpy(dtype=object)
    return out


def text_spec(text_columns: Iterable[str], str_columns: Iterable[str]) -> dict[str, bool]:
    """Column -> read exactly as written (True: null words stay text) or as text with the null
    words null (False)."""
    return {**{c: False for c in str_columns}, **{c: True for c in text_columns}}


def read_csv_bytes(data: bytes, source: str = "<upload>", **options) -> pd.DataFrame:
    """:func:`read_csv` of bytes, the frame only."""
    return read_csv(data, source, **options).frame
