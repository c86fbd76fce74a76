"""The first lines of a CSV file: its delimiter, its header row (or, header-less, which of the
schema's layouts it has), and the frame's column names. Names are checked here (a duplicate or
invisible name is refused with its line)."""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from netsec_tasks.errors import DataError

_DELIMITERS = ",;\t|"
LINE_END = re.compile(r"\r\n|\r|\n")
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


@dataclass
class Head:
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


def read_head(
    first_lines: list[tuple[int, str]],
    source: str,
    *,
    sample: Sequence[str],
    names: Sequence[str] | None,
    layouts: Sequence[Layout],
    required: Iterable[str],
    rename: Mapping[str, str],
) -> Head:
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
        return Head(
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
    return Head(
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


def first_lines(
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
                    sample = [s for s in LINE_END.split(rest[:65536])[:100] if s.strip()]
                    return taken, itertools.chain([rest] if rest else [], blocks), line_no + 1, sample
    if not taken:
        raise DataError("file is empty; expected a CSV with a header row", source=source)
    return taken, iter([]), line_no + 1, []
