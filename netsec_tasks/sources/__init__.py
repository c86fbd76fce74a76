"""Sources of training data: a file (CSV/Parquet, local or ``s3://``) or a MongoDB collection.

A source is read into a :class:`SourceRead`: Arrow chunks in a stable row order, which of them
are new since the committed watermark, each row's watermark time (for ``source.window_days``),
and whether the chunks *replace* the data (a file; a full MongoDB read) or are *appended* to the
last committed snapshot (an incremental MongoDB read: a night reads only new documents).
Chunks of one read may differ in column types (a CSV part, a MongoDB batch):
:func:`unify_schemas` gives them one schema and :func:`conform` casts a chunk to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
        offset = 0
        for part in self.parts:
            table = pq.read_table(part) if isinstance(part, Path) else part
            table = conform(table, self.schema)
            n = table.num_rows
            yield (table, self.new_mask[offset : offset + n], self.times[offset : offset + n])
            offset += n


# --------------------------------------------------------------------------- one schema for all chunks


def unify_type(types: list[pa.DataType]) -> pa.DataType:
    """One column type for all chunks: widen ints to float, anything else mixed becomes text."""
    seen = [pa.string() if pa.types.is_large_string(t) else t for t in types if not pa.types.is_null(t)]
    if not seen:
        return pa.null()
    if len(set(seen)) == 1:
        return seen[0]
    if all(pa.types.is_integer(t) for t in seen):
        return pa.int64()
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in seen):
        return pa.float64()
    return pa.string()


def unify_schemas(schemas: list[pa.Schema]) -> pa.Schema:
    """Every column of every chunk (first-seen order), each with one unified type."""
    types: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for f in schema:
            types.setdefault(f.name, []).append(f.type)
    return pa.schema([pa.field(name, unify_type(ts)) for name, ts in types.items()])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns and types (missing columns as nulls)."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type:
                try:
                    col = pc.cast(col, f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    col = pc.cast(pc.cast(col, pa.string()), f.type)
            cols.append(col)
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.table(cols, schema=schema)
