"""The layout scan of a CSV file's data lines: every line's field count against the header's (in
NumPy for quote-free text, with the csv module where quotes are), repeated header rows, records
that span lines, and the refusal naming the first broken lines."""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from netsec_tasks.errors import DataError
from netsec_tasks.table_io.header import LINE_END, Head

_LISTED_LINES = 5


@dataclass
class Scan:
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


def scan_lines(
    blocks: Iterator[str], head: Head, first_line: int, *, max_rows: int | None, keep: bool, source: str
) -> Scan:
    """Check every data line's field count (``head.expected``), starting at physical line
    ``first_line``; quote-free blocks are counted in NumPy (:func:`_line_counts`), the rest with
    the csv module (quoted fields, line breaks inside them)."""
    scan = Scan()
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
                k = len(LINE_END.findall(block, 0, m.start()))
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
        lines = LINE_END.split(block)
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
    head: Head,
    line_no: int,
    scan: Scan,
    max_rows: int | None,
    keep: bool,
    source: str,
) -> None:
    """:func:`scan_lines` for text with quotes: the csv module finds the records."""
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


def _count_kind(scan: Scan, k: int, expected: int, kind: str) -> None:
    if k > expected:
        scan.n_more += 1
        if kind.startswith("a trailing delimiter"):
            scan.n_more_trailing += 1
    elif k < expected:
        scan.n_fewer += 1


def layout_error(scan: Scan, head: Head, source: str) -> DataError:
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


def repeat_error(scan: Scan, source: str) -> DataError:
    shown = ", ".join(str(n) for n in scan.repeats[:_LISTED_LINES])
    more = f" (+{len(scan.repeats) - _LISTED_LINES} more)" if len(scan.repeats) > _LISTED_LINES else ""
    return DataError(
        f"line{'s' if len(scan.repeats) > 1 else ''} {shown}{more} repeat{'s' if len(scan.repeats) == 1 else ''} "
        "the header row (files joined together?): remove the repeated header line",
        source=source,
    )
