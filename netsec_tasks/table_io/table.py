"""The :class:`Table` every reader returns: the frame and where each row came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


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
