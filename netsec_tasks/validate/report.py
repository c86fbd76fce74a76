"""Validation's report: the YAML verdict with every check per section, and the quarantined rows
as CSV (through the sinks' encoders, so a value from the data is never syntax in them)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from netsec_tasks.plain import plain
from netsec_tasks.sinks import csv_text, yaml_text
from netsec_tasks.storage import atomic_write
from netsec_tasks.validate.checks import INVALID_COLUMNS
from netsec_tasks.validate.outcome import FrameValidation

if TYPE_CHECKING:  # pragma: no cover
    pass


def render_report(
    sections: dict[str, FrameValidation] | FrameValidation,
    *,
    passed: bool | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """The YAML report: overall verdict, then every check per section."""
    if isinstance(sections, FrameValidation):
        sections = {"data": sections}
    if passed is None:
        passed = all(s.passed for s in sections.values())
    failures = [f"{name}: {c.details}" for name, s in sections.items() for c in s.failures]
    doc: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "passed": bool(passed),
        "failures": failures,
    }
    doc.update(plain(extra or {}))
    doc["sections"] = {name: s.summary() for name, s in sections.items()}
    return yaml_text(doc)


def invalid_csv(invalid: pd.DataFrame, where: Callable[[int], str] | None = None) -> str:
    """The quarantined rows as CSV text (split, row, column, value, reason; with ``where``, the
    row as the user finds it in the file, e.g. ``line 12``, after ``row``), through the CSV
    sink's encoder: a value such as ``=1+1`` is written inert (``'=1+1``)."""
    frame = invalid.reindex(columns=INVALID_COLUMNS)
    if where is not None:
        frame.insert(2, "line", [where(int(r)) for r in frame["row"]])
    return csv_text(frame)


def write_report(
    sections: dict[str, FrameValidation] | FrameValidation,
    path: str | os.PathLike,
    *,
    passed: bool | None = None,
    extra: dict[str, Any] | None = None,
    where: Callable[[int], str] | None = None,
) -> Path:
    """Write the YAML report to a local file (atomic).

    ``path`` is the report file, or a directory: then ``validation_report.yaml`` and the
    quarantined rows (``invalid.csv``) are written into it (what ``netsec validate`` wants).
    ``where``: a row's place in the file it was read from (``Table.where``), for invalid.csv.
    """
    if isinstance(sections, FrameValidation):
        sections = {"data": sections}
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        write_invalid(
            path / "invalid.csv",
            pd.concat([s.invalid for s in sections.values()], ignore_index=True),
            where=where,
        )
        path = path / "validation_report.yaml"
    return atomic_write(path, render_report(sections, passed=passed, extra=extra))


def write_invalid(
    path: str | os.PathLike, invalid: pd.DataFrame, where: Callable[[int], str] | None = None
) -> Path:
    return atomic_write(path, invalid_csv(invalid, where))
