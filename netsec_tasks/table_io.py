"""Reading tables: one CSV reader for every door, plus Parquet; atomic Parquet writes.

Every door that takes a file reads it here: the upload route and the page (``/predict/csv``),
``netsec predict``, ``validate``, ``evaluate``, ``drift`` and ``push-data``, the training source
(a file or glob, local or ``s3://``, read whole or in chunks) and the hold-out file; header-less
files too. :func:`read_csv` is the CSV reader; :func:`load_table` adds Parquet and globs;
:func:`iter_table_chunks` reads the same files a chunk at a time (ingest of a large file in
bounded memory). What the CSV reader guarantees; a file that breaks it is refused with a
:class:`DataError` naming the file, the physical line and the cause:

- **Text.** UTF-8 with or without a BOM. UTF-16 or UTF-32 with a BOM (Excel's "Unicode text")
  is decoded. Compressed files, workbooks, Parquet and other binary data, and text in another
  encoding are refused, saying what the file is and what to save instead.
- **Dialect.** The delimiter (``,``, ``;``, tab or ``|``) is found on the header line, or taken
  from Excel's ``sep=;`` first line. Lines end in LF, CRLF or CR. Blank lines are skipped.
- **Layout.** Pandas never infers an index. Every data line has as many fields as the header row
  (header-less: as one of the layouts the schema allows, see :class:`Layout`). A line with more or
  fewer fields, a header row repeated mid-file, a duplicate or invisible column name, and a quote
  that never closes are refused with their line numbers. One exception: a delimiter at the end of
  every line, header included, is read right (the empty last column is dropped) and a note says
  so. A quoted field that holds line breaks is counted in the notes, so a stray quote never merges
  rows silently (the merged record has the wrong field count, or is listed).
- **Line numbers.** Each row keeps its physical line(s) (:class:`Table`), so every message a door
  writes about a row names the line the user sees in an editor (:meth:`Table.where`).
- **Machine types.** A column holding integers beyond int64 is read as text. Python ints and
  uint64 never reach Arrow, BSON or NumPy; the contract refuses such a value as out of range
  (:mod:`netsec_tasks.contract`).
- **Names.** Column names are stripped; the schema's ``rename`` maps a file's names to the
  schema's before anything else sees them.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.errors import DataError

PARQUET_MAGIC = b"PAR1"
_DELIMITERS = ",;\t|"
_BLOCK_CHARS = 1 << 22  # text per layout-scan block: memory stays flat whatever the file size
_LISTED_LINES = 5
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Leading bytes of files that are not CSV text, and what to do instead.
_NOT_CSV = (
    (b"PAR1", "a Parquet file, not CSV text: upload a CSV, or give the file a .parquet name"),
    (b"\x1f\x8b", "gzip-compressed: decompress it (gunzip) and use the CSV inside"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook is one): export the sheet as 'CSV UTF-8'"),
    (b"\xd0\xcf\x11\xe0", "an Excel 97-2003 workbook (.xls): export the sheet as 'CSV UTF-8'"),
    (b"BZh", "bzip2-compressed: decompress it and use the CSV inside"),
    (b"\xfd7zXZ", "xz-compressed: decompress it and use the CSV inside"),
)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_LINE_END = re.compile(r"\r\n|\r|\n")
_SEP_DIRECTIVE = re.compile(r"^sep=(.)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Layout:
    """One column layout a header-less file may have: ``columns`` in file order, and ``label``
    for messages ("all 16 file_columns", "without difficulty"). ``probe``: (column, values) that
    tell this layout from another of the same field count: the layout fits when most of the
    first lines hold one of ``values`` there (the target column and its known labels)."""

    label: str
    columns: tuple[str, ...]
    probe: tuple[str, frozenset[str]] | None = None

    def fits(self, sample: Sequence[Sequence[str]]) -> bool:
        """Whether the fields of the first lines fit :attr:`probe` (True without a probe)."""
        if self.probe is None or not sample:
            return True
        column, values = self.probe
        at = self.columns.index(column)
        hits = sum(1 for fields in sample if at < len(fields) and _label_key(fields[at]) in values)
        return hits * 2 > len(sample)


def _label_key(text: str) -> str:
    """A field as a label's comparison key (as :func:`netsec_tasks.dataset_schema.label_key`: ``-1.0`` is
    ``-1``)."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


@dataclass
class Table:
    """A table as read, with where each row came from.

    ``lines``: the physical line (1-based) each row starts on, for CSV; None for Parquet.
    ``ends``: the last line of rows that span lines (a quoted field holding line breaks).
    ``files``: (first row, file) per file of a glob. ``notes``: what the reader did that the user
    should know (a dropped trailing delimiter, Excel's ``sep=`` line, a decoded UTF-16 file,
    records spanning lines)."""

    frame: pd.DataFrame
    source: str
    lines: np.ndarray | None = None
    ends: dict[int, int] = field(default_factory=dict)
    files: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def where(self, row: int) -> str:
        """Row ``row`` (0-based position in :attr:`frame`) as the user finds it: ``line 12``,
        ``lines 12-14``, ``row 3`` (Parquet), with the file's name when a glob read several."""
        prefix = ""
        start = 0
        if len(self.files) > 1:
            for first, name in self.files:
                if first <= row:
                    start, prefix = first, f"{name} "
        if self.lines is None:
            return f"{prefix}row {row - start}"
        line = int(self.lines[row])
        end = self.ends.get(row)
        return f"{prefix}lines {line}-{end}" if end else f"{prefix}line {line}"


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


# --------------------------------------------------------------------------- text


def _not_text(head: bytes) -> str | None:
    """Why bytes starting with ``head`` are not CSV text, or None."""
    for magic, what in _NOT_CSV:
        if head.startswith(magic):
            return what
    nul = head[:4096].find(b"\x00")
    if nul >= 0 and not any(head.startswith(bom) for bom, _ in _BOMS):
        return f"binary data (a NUL byte at offset {nul}), not CSV text"
    return None


def _bom_encoding(head: bytes) -> str | None:
    """``utf-16``/``utf-32`` when ``head`` starts with their byte-order mark."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return None


def _utf16_without_bom(head: bytes) -> str | None:
    """``utf-16-le``/``-be`` for text of ASCII characters saved as UTF-16 without a BOM (every
    other byte NUL), else None."""
    sample = head[: len(head) - len(head) % 2][:4096]
    if len(sample) < 4:
        return None
    for name, zeros in (("utf-16-le", sample[1::2]), ("utf-16-be", sample[0::2])):
        if zeros.count(0) == len(zeros):
            return name
    return None


def _not_utf8(data: bytes, exc: UnicodeDecodeError, source: str, line_offset: int = 0) -> DataError:
    byte = data[exc.start : exc.start + 1].hex().upper()
    line = data[: exc.start].count(b"\n") + 1 + line_offset
    return DataError(
        f"line {line} is not UTF-8 text (byte 0x{byte}; Windows-1252 or Latin-1?): save the "
        "file as 'CSV UTF-8'",
        source=source,
    )


def decode_csv(data: bytes, source: str) -> tuple[str, list[str]]:
    """The text of a CSV file's bytes (BOM removed) and notes on any conversion. Raises
    DataError saying what the bytes are when they are not CSV text."""
    if not data or not data.strip():
        raise DataError("file is empty; expected a CSV with a header row", source=source)
    encoding = _bom_encoding(data[:4]) or _utf16_without_bom(data[:4096])
    if encoding is None:
        why = _not_text(data[:4096])
        if why:
            raise DataError(f"file is {why}", source=source)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _not_utf8(data, exc, source) from None
        return text, []
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise DataError(
            f"file starts like {encoding.upper()} text but does not decode as it: save it as 'CSV UTF-8'",
            source=source,
        ) from None
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise DataError("file is binary data (NUL characters), not CSV text", source=source)
    if not text.strip():
        raise DataError("file is empty; expected a CSV with a header row", source=source)
    return text, [f"decoded from {encoding.upper()}"]


def _blocks_of(text: str) -> Iterator[str]:
    """``text`` in blocks of about :data:`_BLOCK_CHARS` that end at a line end."""
    start = 0
    while start < len(text):
        end = _line_cut(text, start + _BLOCK_CHARS)
        yield text[start:end]
        start = end


def _line_cut(text: str, at: int) -> int:
    """A cut position at or after ``at`` just past a line end (or the end of ``text``)."""
    if at >= len(text):
        return len(text)
    nl = text.find("\n", at)
    if nl >= 0:
        return nl + 1
    cr = text.find("\r", at)  # a file with CR line ends only
    return cr + 1 if 0 <= cr < len(text) - 1 else len(text)


def _file_blocks(path: Path, source: str) -> Iterator[str]:
    """A UTF-8 file's text in blocks ending at a line end, decoded as it streams."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    carry = ""
    lines_before = 0
    with open(path, "rb") as fh:
        while True:
            raw = fh.read(_BLOCK_CHARS)
            try:
                text = carry + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise _not_utf8(raw, exc, source, lines_before) from None
            if not raw:
                if text:
                    yield text
                return
            cut = text.rfind("\n") + 1
            if cut == 0:
                carry = text
                continue
            block, carry = text[:cut], text[cut:]
            lines_before += block.count("\n")
            yield block


def _sniff_delimiter(line: str, source: str) -> str:
    try:
        return csv.Sniffer().sniff(line, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        counts = {d: len(_fields(line, d)) for d in _DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        if counts[best] <= 1:
            raise DataError(
                "cannot find a column delimiter in the header line; expected a CSV with a header "
                "row delimited by ',', ';', tab or '|'",
                source=source,
            ) from None
        return best


def _fields(line: str, sep: str) -> list[str]:
    return next(csv.reader([line], delimiter=sep, skipinitialspace=True), [])


# --------------------------------------------------------------------------- layout scan


@dataclass
class _Head:
    """What the first lines say: delimiter, header row (or layout), the frame's column names."""

    sep: str
    skip: int  # physical lines before the header row (or before the first data line)
    header: bool  # the file has a header row (on line ``skip + 1``)
    fields: list[str]  # the header's fields as written (stripped), or the first data line's
    names: list[str]  # the frame's column names (renamed), trailing placeholder excluded
    trailing: bool  # every line ends in the delimiter: an empty last column to drop
    expected: int  # fields per line
    what: str  # the expected count in words, for messages
    notes: list[str]


def _looks_like_data(fields: Sequence[str]) -> bool:
    """A first line of numbers (and blanks): data, not a header row."""
    seen = False
    for f in fields:
        if not f:
            continue
        try:
            float(f)
        except ValueError:
            return False
        seen = True
    return seen


# Unicode categories a reader does not see in a name: format (zero-width, BOM), control, separators.
INVISIBLE_CATEGORIES = {"Cf", "Cc", "Zl", "Zp"}


def visible(name: str) -> str:
    """A name with invisible characters (zero-width, BOM, controls) shown as ``\\u200b``."""
    import unicodedata

    return "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in INVISIBLE_CATEGORIES else c for c in str(name)
    )


def _head(
    first_lines: list[tuple[int, str]],
    source: str,
    *,
    sample: Sequence[str],
    names: Sequence[str] | None,
    layouts: Sequence[Layout],
    required: Iterable[str],
    rename: Mapping[str, str],
) -> _Head:
    """Read the delimiter, the header row (or the layout of a header-less file) from the first
    non-blank lines ``(line number, text)``."""
    notes: list[str] = []
    skip = 0
    sep = None
    it = iter(first_lines)
    line_no, line = next(it)
    directive = _SEP_DIRECTIVE.match(line.strip())
    if directive and directive.group(1) in _DELIMITERS:
        sep = directive.group(1)
        notes.append(f"line {line_no} is Excel's '{line.strip()}' line: the delimiter is {sep!r}")
        try:
            line_no, line = next(it)
        except StopIteration:
            raise DataError("file has no header row after its 'sep=' line", source=source) from None
    skip = line_no - 1
    sep = sep or _sniff_delimiter(line, source)
    fields = [f.strip() for f in _fields(line, sep)]
    if fields:
        fields[0] = fields[0].removeprefix("\ufeff")
    trailing = len(fields) > 1 and fields[-1] == ""
    required = [str(r) for r in required]
    renamed = [rename.get(f, f) for f in fields]
    header = True
    if names:
        header = set(required) <= set(renamed) if required else list(renamed) == list(names)
    if header:
        if required and _looks_like_data(fields) and not set(required) & set(renamed):
            listed_names = ", ".join(required[:6]) + (", ..." if len(required) > 6 else "")
            raise DataError(
                f"line {line_no} holds values, not column names: the file has no header row. Add "
                f"one naming the columns ({listed_names}), or list the file's columns in the "
                "schema's file_columns",
                source=source,
            )
        kept = renamed[:-1] if trailing else renamed
        out = [c if c else f"Unnamed: {i}" for i, c in enumerate(kept)]
        _refuse_duplicates(fields[: len(out)], out, rename, source, line_no)
        if trailing:
            notes.append(
                f"every line ends in {sep!r}, the header (line {line_no}) included: the empty "
                "last column was dropped"
            )
        return _Head(
            sep=sep,
            skip=skip,
            header=True,
            fields=fields,
            names=out,
            trailing=trailing,
            expected=len(fields),
            what=f"the header (line {line_no}) has {len(fields)}",
            notes=notes,
        )
    # Header-less: the field count picks the layout; ties go to the earlier (preferred) layout.
    n = len(fields) - 1 if trailing else len(fields)
    fits = [lay for lay in layouts if len(lay.columns) == n]
    if not fits and trailing:
        trailing, n = False, len(fields)
        fits = [lay for lay in layouts if len(lay.columns) == n]
    if not fits:
        allowed = "; ".join(f"{len(lay.columns)} ({lay.label})" for lay in layouts)
        raise DataError(
            f"line {line_no} has {len(fields)} fields and is not a header row (it does not name "
            f"the features); a file without a header row must have one of the layouts the "
            f"schema's file_columns allow: {allowed}. Add a header row, or fix the field count",
            source=source,
        )
    rows = [[f.strip() for f in _fields(ln, sep)] for ln in sample]
    chosen = next((lay for lay in fits if lay.fits(rows)), fits[-1])
    if len(fits) > 1:
        others = " or ".join(lay.label for lay in fits if lay is not chosen)
        notes.append(
            f"{n} fields per line: read as {chosen.label}; a file {others} has as many. If that "
            "is this file, add a header row"
        )
    elif chosen is not layouts[0]:
        notes.append(f"no header row; {n} fields per line: read as {chosen.label}")
    if trailing:
        notes.append(f"every line ends in {sep!r}: the empty last column was dropped")
    return _Head(
        sep=sep,
        skip=skip,
        header=False,
        fields=fields,
        names=list(chosen.columns),
        trailing=trailing,
        expected=len(fields),
        what=f"line {line_no} has {len(fields)} ({chosen.label})",
        notes=notes,
    )


def _refuse_duplicates(
    fields: list[str], names: list[str], rename: Mapping[str, str], source: str, line_no: int
) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            j = seen[name]
            how = (
                f" ('{visible(fields[j])}' and '{visible(fields[i])}' after the schema's rename)"
                if fields[i] != fields[j]
                else ""
            )
            raise DataError(
                f"the header (line {line_no}) names column '{visible(name)}' twice, as fields "
                f"{j + 1} and {i + 1}{how}; remove or rename one",
                source=source,
                columns=[name],
            )
        seen[name] = i


@dataclass
class _Scan:
    """Per record of the data lines: its first line; the last line of records spanning lines;
    and the faults found."""

    n: int = 0
    starts: list[np.ndarray] = field(default_factory=list)
    ends: dict[int, int] = field(default_factory=dict)
    span_starts: dict[int, int] = field(default_factory=dict)  # row -> first line, spanning rows
    last: int = 0  # the first line of the last record
    bad: list[tuple[int, int, int, str]] = field(default_factory=list)  # (line, end, fields, kind)
    n_bad: int = 0
    n_more: int = 0  # lines with more fields than expected
    n_more_trailing: int = 0  # ... whose extra field is empty (a trailing delimiter)
    n_fewer: int = 0
    repeats: list[int] = field(default_factory=list)  # lines repeating the header row

    def fault(self, start: int, end: int, n_fields: int, kind: str) -> None:
        self.n_bad += 1
        if len(self.bad) < _LISTED_LINES:
            self.bad.append((start, end, n_fields, kind))


def _scan_lines(
    blocks: Iterator[str], head: _Head, first_line: int, *, max_rows: int | None, keep: bool, source: str
) -> _Scan:
    """Check every data line's field count (``head.expected``), starting at physical line
    ``first_line``; quote-free blocks are counted in NumPy (:func:`_line_counts`), the rest with
    the csv module (quoted fields, line breaks inside them)."""
    scan = _Scan()
    sep, expected = head.sep, head.expected
    header_text = sep.join(head.fields) if head.header else None
    line_no = first_line - 1  # the last physical line consumed
    pending = iter(blocks)
    for block in pending:
        if '"' in block:
            _scan_csv(itertools.chain([block], pending), head, line_no, scan, max_rows, keep, source)
            return scan
        counts, line = _line_counts(block, sep)
        numbers = np.arange(line_no + 1, line_no + 1 + len(counts), dtype=np.int64)
        line_no += len(counts)
        ones = np.flatnonzero(counts == 1)
        blank = np.zeros(len(counts), dtype=bool)
        if len(ones):
            blank[ones] = [not line(i).strip() for i in ones.tolist()]
        wrong = np.flatnonzero((counts != expected) & ~blank)
        if head.trailing:  # every line's last field must be empty (rare files: line by line)
            last_empty = [not (ln := line(i))[ln.rfind(sep) + 1 :].strip() for i in range(len(counts))]
            wrong = np.union1d(wrong, np.flatnonzero(~np.asarray(last_empty, dtype=bool) & ~blank))
        for w in wrong.tolist():
            kind = _kind(line(w), sep, int(counts[w]), expected, head.trailing)
            scan.fault(int(numbers[w]), int(numbers[w]), int(counts[w]), kind)
            _count_kind(scan, int(counts[w]), expected, kind)
        if header_text is not None and head.fields[0] and head.fields[0] in block:
            first = re.compile(
                rf"(?:^|(?<=\r))[ \t]*{re.escape(head.fields[0])}[ \t]*{re.escape(sep)}", re.MULTILINE
            )
            for m in first.finditer(block):
                k = len(_LINE_END.findall(block, 0, m.start()))
                if [f.strip() for f in line(k).split(sep)] == head.fields:
                    scan.repeats.append(int(numbers[k]))
        kept = numbers[~blank]
        if len(kept):
            scan.last = int(kept[-1])
        if max_rows is not None and scan.n + len(kept) > max_rows:
            kept = kept[: max_rows - scan.n]
            scan.n += len(kept)
            if keep:
                scan.starts.append(kept)
            return scan
        scan.n += len(kept)
        if keep:
            scan.starts.append(kept)
    return scan


def _line_counts(block: str, sep: str) -> tuple[np.ndarray, Callable[[int], str]]:
    """Fields per line of a quote-free ``block`` (ending at a line end) and a function giving
    line ``i``'s text. Counted in NumPy over the UTF-8 bytes (a multi-byte character never holds
    an ASCII byte); a block with bare CR line ends is split in Python."""
    if "\r" in block and block.count("\r") != block.count("\r\n"):
        lines = _LINE_END.split(block)
        if lines and lines[-1] == "":
            lines.pop()
        counts = np.fromiter((ln.count(sep) + 1 for ln in lines), dtype=np.int64, count=len(lines))
        return counts, lines.__getitem__
    data = block.encode("utf-8")
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    if data and data[-1:] != b"\n":
        ends = np.append(ends, len(data))
    starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else ends
    seps = np.flatnonzero(arr == ord(sep))
    counts = np.diff(np.searchsorted(seps, ends), prepend=0) + 1

    def line(i: int) -> str:
        return data[starts[i] : ends[i]].decode("utf-8").rstrip("\r")

    return counts.astype(np.int64), line


def _scan_csv(
    blocks: Iterator[str],
    head: _Head,
    line_no: int,
    scan: _Scan,
    max_rows: int | None,
    keep: bool,
    source: str,
) -> None:
    """:func:`_scan_lines` for text with quotes: the csv module finds the records."""
    csv.field_size_limit(1 << 30)  # a long text field (a URL, a payload) is data, not an error
    lines = itertools.chain.from_iterable(io.StringIO(b, newline="") for b in blocks)
    reader = csv.reader(lines, delimiter=head.sep, skipinitialspace=True)
    base = line_no
    starts: list[int] = []
    previous_end = line_no
    try:
        for row in reader:
            end = base + reader.line_num
            start = previous_end + 1
            previous_end = end
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if max_rows is not None and scan.n >= max_rows:
                break
            k = len(row)
            scan.last = start
            if end > start:
                scan.ends[scan.n] = end
                scan.span_starts[scan.n] = start
            if k != head.expected or (head.trailing and row[-1].strip()):
                kind = (
                    f"a quoted field runs from line {start} to line {end}: a stray '\"'?"
                    if end > start
                    else _kind_fields(row, k, head.expected, head.trailing)
                )
                scan.fault(start, end, k, kind)
                _count_kind(scan, k, head.expected, kind)
            elif head.header and [f.strip() for f in row] == head.fields:
                scan.repeats.append(start)
            scan.n += 1
            if keep:
                starts.append(start)
    except csv.Error as exc:  # e.g. a field larger than the csv module's limit
        raise DataError(f"line {previous_end + 1}: malformed CSV ({exc})", source=source) from None
    if keep:
        scan.starts.append(np.asarray(starts, dtype=np.int64))


def _kind(line: str, sep: str, k: int, expected: int, trailing: bool) -> str:
    return _kind_fields(line.split(sep), k, expected, trailing)


def _kind_fields(fields: Sequence[str], k: int, expected: int, trailing: bool) -> str:
    """Why a line has ``k`` fields instead of ``expected``, in words."""
    if k > expected:
        if not fields[-1].strip():
            return "a trailing delimiter?"
        return "a value holding an unquoted delimiter? quote it, or remove the extra field"
    if k < expected:
        return "a missing field? each line needs a value (or an empty field) for every column"
    if trailing:
        return "a value after the last column (the other lines end in an empty field)"
    return ""


def _count_kind(scan: _Scan, k: int, expected: int, kind: str) -> None:
    if k > expected:
        scan.n_more += 1
        if kind.startswith("a trailing delimiter"):
            scan.n_more_trailing += 1
    elif k < expected:
        scan.n_fewer += 1


def _layout_error(scan: _Scan, head: _Head, source: str) -> DataError:
    """The refusal of a file whose lines break the layout: the first lines and their causes."""

    def lines(start: int, end: int) -> str:
        return f"lines {start}-{end} (one record)" if end > start else f"line {start}"

    (s0, e0, k0, why0), rest = scan.bad[0], scan.bad[1:3]
    msg = f"{lines(s0, e0)} has {k0} field{'s' if k0 != 1 else ''}, {head.what}: {why0}"
    if head.header and scan.n_more_trailing == scan.n_bad == scan.n:
        msg = (
            f"every data line ends in {head.sep!r} but the header does not: {lines(s0, e0)} has "
            f"{k0} fields, {head.what}. Remove the trailing delimiters, or end the header line "
            "with one too"
        )
    else:
        msg += "".join(f"; {lines(s, e)}: {k} fields ({why})" for s, e, k, why in rest)
        if scan.n_bad > 1 + len(rest):
            msg += f" (+{scan.n_bad - 1 - len(rest)} more lines)"
    return DataError(f"the file's layout is broken: {msg}", source=source)


def _repeat_error(scan: _Scan, source: str) -> DataError:
    shown = ", ".join(str(n) for n in scan.repeats[:_LISTED_LINES])
    more = f" (+{len(scan.repeats) - _LISTED_LINES} more)" if len(scan.repeats) > _LISTED_LINES else ""
    return DataError(
        f"line{'s' if len(scan.repeats) > 1 else ''} {shown}{more} repeat{'s' if len(scan.repeats) == 1 else ''} "
        "the header row (files joined together?): remove the repeated header line",
        source=source,
    )


def _first_lines(
    blocks: Iterator[str], source: str
) -> tuple[list[tuple[int, str]], Iterator[str], int, list[str]]:
    """The first two non-blank lines (number, text), the text after the header line as blocks,
    the physical line number where that text starts, and a sample of the lines after it."""
    taken: list[tuple[int, str]] = []
    line_no = 0
    rest = ""
    for block in blocks:
        buffer = io.StringIO(block, newline="")
        consumed = 0
        for raw in buffer:
            consumed += len(raw)
            line_no += 1
            line = raw.rstrip("\r\n")
            if line.strip():
                taken.append((line_no, line))
                if len(taken) == 2 or not _SEP_DIRECTIVE.match(line.strip()):
                    rest = block[consumed:]
                    sample = [s for s in _LINE_END.split(rest[:65536])[:100] if s.strip()]
                    return taken, itertools.chain([rest] if rest else [], blocks), line_no + 1, sample
    if not taken:
        raise DataError("file is empty; expected a CSV with a header row", source=source)
    return taken, iter([]), line_no + 1, []


# --------------------------------------------------------------------------- the reader


@dataclass
class _Plan:
    """A scanned CSV file: pandas options and the scan."""

    head: _Head
    scan: _Scan
    options: dict
    columns: list[str]  # pandas' names, with the trailing placeholder


_TRAILING = "__netsec_trailing_delimiter__"


def _plan(
    blocks: Iterator[str],
    source: str,
    *,
    max_rows: int | None,
    text_columns: Mapping[str, bool],
    names: Sequence[str] | None,
    layouts: Sequence[Layout] | None,
    required: Iterable[str],
    rename: Mapping[str, str] | None,
    keep_lines: bool,
) -> _Plan:
    taken, rest, next_line, sample = _first_lines(blocks, source)
    if names and not layouts:
        layouts = [Layout(f"all {len(names)} file_columns", tuple(names))]
    head = _head(
        taken,
        source,
        sample=[taken[-1][1], *sample],
        names=names,
        layouts=layouts or [],
        required=required,
        rename=rename or {},
    )
    if head.header:
        body, first = rest, next_line
    else:  # the first data line is the header candidate itself
        first, first_text = taken[-1]
        body = itertools.chain([first_text + "\n"], rest)
    scan = _scan_lines(body, head, first, max_rows=max_rows, keep=keep_lines, source=source)
    if scan.n_bad:
        raise _layout_error(scan, head, source)
    if scan.repeats:
        raise _repeat_error(scan, source)
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
    as_text = [c for c in head.names if c in text_columns]
    exact = [c for c in as_text if text_columns[c]]
    if as_text:
        options["dtype"] = {c: str for c in as_text}
    if exact:
        from pandas._libs.parsers import STR_NA_VALUES

        options.update(
            keep_default_na=False,
            na_values={c: list(STR_NA_VALUES) for c in columns if c not in exact},
        )
    return _Plan(head=head, scan=scan, options=options, columns=columns)


def _frame_of(chunk: pd.DataFrame, plan: _Plan) -> pd.DataFrame:
    if plan.head.trailing:
        chunk = chunk.drop(columns=[_TRAILING])
    return machine_safe(chunk)


def _parse(reader_input, plan: _Plan, source: str, **extra) -> pd.DataFrame | Iterator[pd.DataFrame]:
    try:
        return pd.read_csv(reader_input, **plan.options, **extra)
    except pd.errors.ParserError as exc:
        raise _parser_error(exc, plan, source) from None
    except pd.errors.EmptyDataError:
        raise DataError("file has no columns", source=source) from None


def _parser_error(exc: Exception, plan: _Plan, source: str) -> DataError:
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


def _checked_rows(n: int, plan: _Plan, source: str, max_rows: int | None) -> None:
    want = plan.scan.n if max_rows is None else min(plan.scan.n, max_rows)
    if n != want:  # the layout scan and pandas disagree: never hand on a misaligned table
        raise DataError(
            f"read {n} rows where the layout check counted {want} records; the file has a "
            "construct the reader does not handle consistently (please report it with the file)",
            source=source,
        )


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
    required = list(required)
    spec = _text_spec(text_columns, str_columns)
    if isinstance(data, (bytes, bytearray)):
        source = source or "<upload>"
        text, notes = decode_csv(bytes(data), source)
        plan = _plan(
            _blocks_of(text),
            source,
            max_rows=max_rows,
            text_columns=spec,
            names=names,
            layouts=layouts,
            required=required,
            rename=rename,
            keep_lines=True,
        )
        frame = _parse(io.StringIO(text), plan, source, nrows=max_rows)
        assert isinstance(frame, pd.DataFrame)
    else:
        path = Path(str(data).removeprefix("file://"))
        source = source or str(path)
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        plan, notes, decoded = _plan_file(
            path, head, source, max_rows, spec, names, layouts, required, rename, True
        )
        with io.StringIO(decoded) if decoded is not None else _text_handle(path) as handle:
            frame = _parse(handle, plan, source, nrows=max_rows)
        assert isinstance(frame, pd.DataFrame)
    frame = _frame_of(frame, plan)
    _checked_rows(len(frame), plan, source, max_rows)
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


def _text_handle(path: Path):
    return open(path, encoding="utf-8-sig", newline="")


def _plan_file(
    path: Path,
    head: bytes,
    source: str,
    max_rows: int | None,
    text_columns: Mapping[str, bool],
    names: Sequence[str] | None,
    layouts: Sequence[Layout] | None,
    required: list[str],
    rename: Mapping[str, str] | None,
    keep_lines: bool,
) -> tuple[_Plan, list[str], str | None]:
    """Scan a local CSV file. UTF-8 streams from disk (``text`` None); UTF-16/32 is decoded in
    memory and its text returned."""
    options: dict[str, Any] = dict(
        max_rows=max_rows,
        text_columns=text_columns,
        names=names,
        layouts=layouts,
        required=required,
        rename=rename,
        keep_lines=keep_lines,
    )
    if not head.strip():
        raise DataError("file is empty; expected a CSV with a header row", source=source)
    if _bom_encoding(head[:4]) or _utf16_without_bom(head[:4096]):
        text, notes = decode_csv(path.read_bytes(), source)
        return _plan(_blocks_of(text), source, **options), notes, text
    why = _not_text(head)
    if why:
        raise DataError(f"file is {why}", source=source)
    return _plan(_file_blocks(path, source), source, **options), [], None


def _infinities_as_written(frame: pd.DataFrame, plan: _Plan, data: bytes | None, source: str) -> pd.DataFrame:
    """Float columns where pandas read an overflowing number (``1e400``) as infinity, read again
    as text, so that messages show the value as written; the contract refuses it either way.
    (The chunked reader keeps ``inf``: a nightly run's quarantine names the row and the reason.)"""
    cols = [c for c in frame.columns if frame[c].dtype.kind == "f" and np.isinf(frame[c].to_numpy()).any()]
    if not cols:
        return frame
    options = {**plan.options, "dtype": {**plan.options.get("dtype", {}), **{c: str for c in cols}}}
    options.update(keep_default_na=False, na_values={c: [] for c in cols})
    try:
        handle = io.StringIO(decode_csv(data, source)[0]) if data is not None else _text_handle(Path(source))
        with handle:
            again = pd.read_csv(handle, nrows=len(frame), **options)
    except (OSError, ValueError, DataError, pd.errors.ParserError):
        return frame
    out = frame.copy()
    for c in cols:
        out[c] = again[c].where(again[c].str.strip() != "", np.nan).to_numpy(dtype=object)
    return out


def _text_spec(text_columns: Iterable[str], str_columns: Iterable[str]) -> dict[str, bool]:
    """Column -> read exactly as written (True: null words stay text) or as text with the null
    words null (False)."""
    return {**{c: False for c in str_columns}, **{c: True for c in text_columns}}


def read_csv_bytes(data: bytes, source: str = "<upload>", **options) -> pd.DataFrame:
    """:func:`read_csv` of bytes, the frame only."""
    return read_csv(data, source, **options).frame


def machine_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column that holds integers beyond int64 (uint64 columns, Python
    ints in object columns) as text, so no value reaches Arrow, BSON or NumPy as a type they
    cannot hold; the contract refuses such values by range."""
    out = None
    for col in frame.columns:
        s = frame[col]
        if s.dtype == np.uint64:
            over = bool((s > np.uint64(_INT64_MAX)).any())
        elif s.dtype == object:
            over = any(
                isinstance(v, int) and not isinstance(v, bool) and not _INT64_MIN <= v <= _INT64_MAX
                for v in s.tolist()
            )
        else:
            continue
        if over:
            out = frame.copy() if out is None else out
            out[col] = s.map(
                lambda v: v if v is None or (isinstance(v, float) and v != v) else str(v)
            ).astype(object)
    return frame if out is None else out


# --------------------------------------------------------------------------- tables and chunks


def _read_parquet(path: Path, rename: Mapping[str, str] | None) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"cannot read Parquet: {exc}", source=str(path)) from None
    if rename:
        frame = frame.rename(columns=dict(rename))
    return machine_safe(frame)


def load_table(
    path: str | os.PathLike,
    *,
    text_columns: Iterable[str] = (),
    str_columns: Iterable[str] = (),
    names: Sequence[str] | None = None,
    layouts: Sequence[Layout] | None = None,
    required: Iterable[str] = (),
    rename: Mapping[str, str] | None = None,
) -> Table:
    """One CSV/Parquet file, or all files matching a glob concatenated (same columns), as a
    :class:`Table` (rows keep their file and line). Options: :func:`read_csv`."""
    tables = []
    required = list(required)
    for p in expand_paths(path):
        with open(p, "rb") as fh:
            head = fh.read(4)
        if is_parquet(p, head):
            tables.append(Table(frame=_read_parquet(p, rename), source=str(p), files=[(0, str(p))]))
        else:
            tables.append(
                read_csv(
                    p,
                    str(p),
                    text_columns=text_columns,
                    str_columns=str_columns,
                    names=names,
                    layouts=layouts,
                    required=required,
                    rename=rename,
                )
            )
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
    plan, _, text = _plan_file(
        path, head, source, None, text_columns, names, layouts, list(required), rename, False
    )
    rows = 0
    handle = io.StringIO(text) if text is not None else _text_handle(path)
    with handle:
        chunks = _parse(handle, plan, source, chunksize=chunk_rows)
        try:
            for chunk in chunks:
                chunk = _frame_of(chunk, plan)
                rows += len(chunk)
                yield chunk
        except pd.errors.ParserError as exc:
            raise _parser_error(exc, plan, source) from None
    _checked_rows(rows, plan, source, None)


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
        spec = _text_spec(text_columns, str_columns)
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
