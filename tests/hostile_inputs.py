"""Files and values that break input layers, one list per kind (issue 20), for every door's tests.

Each builder takes the lines of a well-formed CSV file (header first, as text) and returns the
bytes of a broken variant, so every door is tried on the same instances: the upload route, the
CLI commands, the training sources.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# --------------------------------------------------------------------------- 1. layouts

Builder = Callable[[list[str]], bytes]


def _join(lines: list[str], end: str = "\n") -> bytes:
    return (end.join(lines) + end).encode()


def _cut_last_field(line: str) -> str:
    return line.rsplit(",", 1)[0]


# (name, builder, regex the refusal must match). Line numbers are physical: the header is line 1.
BROKEN_LAYOUTS: list[tuple[str, Builder, str]] = [
    (
        "trailing delimiter on data lines",
        lambda ls: _join([ls[0]] + [ln + "," for ln in ls[1:]]),
        r"every data line ends in ',' but the header does not: line 2 has \d+ fields",
    ),
    (
        "one line with a trailing delimiter",
        lambda ls: _join(ls[:4] + [ls[4] + ","] + ls[5:]),
        r"line 5 has \d+ fields, the header \(line 1\) has \d+: a trailing delimiter\?",
    ),
    (
        "too few fields",
        lambda ls: _join(ls[:3] + [_cut_last_field(ls[3])] + ls[4:]),
        r"line 4 has \d+ fields, the header \(line 1\) has \d+: a missing field\?",
    ),
    (
        "an unquoted delimiter in a value",
        lambda ls: _join(ls[:2] + [ls[2] + ",7"] + ls[3:]),
        r"line 3 has \d+ fields.*unquoted delimiter",
    ),
    (
        "a stray quote swallows lines",
        lambda ls: _join(ls[:3] + [ls[3].replace(",", ',"', 1)] + ls[4:]),
        r"lines 4-\d+ \(one record\).*a quoted field runs from line 4",
    ),
    (
        "a quote that never closes",
        lambda ls: _join(ls[:-1] + [ls[-1].rsplit(",", 1)[0] + ',"1']),
        r"a quote opened on line \d+ never closes",
    ),
    (
        "a header repeated mid-file",
        lambda ls: _join(ls[:6] + [ls[0]] + ls[6:]),
        r"line 7 repeats the header row",
    ),
    (
        "a header repeated with CRLF",
        lambda ls: _join(ls[:6] + [ls[0]] + ls[6:], "\r\n"),
        r"line 7 repeats the header row",
    ),
]

# Variants that are read right, with the line the first data row is on.
GOOD_LAYOUTS: list[tuple[str, Builder, int]] = [
    ("trailing delimiter on every line", lambda ls: _join([ln + "," for ln in ls]), 2),
    ("BOM", lambda ls: b"\xef\xbb\xbf" + _join(ls), 2),
    ("CRLF", lambda ls: _join(ls, "\r\n"), 2),
    ("CR", lambda ls: _join(ls, "\r"), 2),
    ("semicolons", lambda ls: _join([ln.replace(",", ";") for ln in ls]), 2),
    ("Excel sep= line", lambda ls: _join(["sep=;"] + [ln.replace(",", ";") for ln in ls]), 3),
    ("UTF-16 (Excel's Unicode text)", lambda ls: "\n".join(ls).encode("utf-16"), 2),
    ("blank lines", lambda ls: _join([ls[0], "", *ls[1:3], "   ", *ls[3:]]), 3),
]


# --------------------------------------------------------------------------- 2. values

HUGE_INT = "9" * 400
# (name, text of one cell of an int feature, regex the reason must match)
BAD_NUMBERS: list[tuple[str, str, str]] = [
    ("400-digit integer", HUGE_INT, r"outside int64"),
    ("2**64", str(2**64), r"outside int64"),
    ("-2**63-1", str(-(2**63) - 1), r"outside int64"),
    ("1e400", "1e400", r"not a finite number"),
    ("-1e400", "-1e400", r"not a finite number"),
    ("a boolean", "TRUE", r"a boolean, not a number"),
    ("a decimal comma", "1,5", r"decimal comma"),
]
# (text, value) pairs every door reads as the same number.
GOOD_NUMBERS = [(" 1 ", 1), ("1.0", 1), ("+1", 1), ("-1e0", -1)]


def with_cell(lines: list[str], column: str, values: list[str], *, first_row: int = 1) -> bytes:
    """The file with ``column`` of data rows ``first_row``, ``first_row + 1``... set to
    ``values`` (quoted when they hold a comma)."""
    header = [h.strip('"') for h in lines[0].split(",")]
    at = header.index(column)
    out = list(lines)
    for k, v in enumerate(values):
        fields = out[first_row + k].split(",")
        fields[at] = f'"{v}"' if "," in v else v
        out[first_row + k] = ",".join(fields)
    return _join(out)


# --------------------------------------------------------------------------- 3. text

HOSTILE_TEXTS = [
    "=1+1",
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "-2+3",
    "\t=cmd",
    "/",
    "..",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    '" onmouseover="alert(1)',
    "x" * 300,
    "ünïcødé ✓ 漢字 🚨",
    "",
    "\ud800 lone surrogate",
    "$x^{$",
    "a\nb\r\nc",
    "key: value\n- item",
    "&amp; %s {0} ${HOME}",
]

_FORMULA = re.compile(r"^[=+\-@\t\r]")


def runs_as_formula(cell: str) -> bool:
    """A CSV cell a spreadsheet would run (the test's own check, not the encoder's)."""
    return bool(_FORMULA.match(cell)) and not re.fullmatch(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?", cell)
