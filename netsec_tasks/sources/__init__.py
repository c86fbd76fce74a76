"""Sources of training data: a file (CSV/Parquet, local or ``s3://``) or a MongoDB collection.

A source is read into a :class:`SourceRead`: Arrow chunks in a stable row order, which of them
are new since the committed watermark, each row's watermark time (for ``source.window_days``),
and whether the chunks *replace* the data (a file; a full MongoDB read) or are *appended* to the
last committed snapshot (an incremental MongoDB read: a night reads only new documents).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class SourceRead:
    """What a source gave this run. ``chunks()`` yields (table, is_new mask, watermark times)."""

    source: str
    schema: pa.Schema
    previous_watermark: str | None
    watermark: str | None
    watermark_type: str | None = None  # objectid | datetime | int | float | str | file
    documents_read: int = 0
    # None: the chunks are the whole data; else the committed snapshot the chunks extend.
    base_snapshot_uri: str | None = None
    parts: list[pa.Table | Path] = field(default_factory=list)
    new_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    times: np.ndarray = field(default_factory=lambda: np.zeros(0, float))  # epoch s, NaN: none

    def chunks(self) -> Iterator[tuple[pa.Table, np.ndarray, np.ndarray]]:
        from netsec_tasks.snapshot import conform

        offset = 0
        for part in self.parts:
            table = pq.read_table(part) if isinstance(part, Path) else part
            table = conform(table, self.schema)
            n = table.num_rows
            yield (table, self.new_mask[offset : offset + n], self.times[offset : offset + n])
            offset += n
