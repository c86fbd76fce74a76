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

Modules, lowest first: :mod:`.text` (bytes to text), :mod:`.header` (delimiter, header row or
layout, names), :mod:`.line_scan` (every data line's field count), :mod:`.table` (the
:class:`Table` record), :mod:`.machine_types` (integers beyond int64 as text),
:mod:`.csv_reader` (:func:`read_csv`), :mod:`.tables` (files, globs, Parquet, chunks) and
:mod:`.writing` (atomic Parquet writes, frame digests).
"""

from netsec_tasks.table_io.csv_reader import read_csv, read_csv_bytes
from netsec_tasks.table_io.header import INVISIBLE_CATEGORIES, Layout, visible
from netsec_tasks.table_io.machine_types import machine_safe
from netsec_tasks.table_io.table import Table
from netsec_tasks.table_io.tables import (
    PARQUET_MAGIC,
    expand_paths,
    is_parquet,
    iter_table_chunks,
    load_table,
    read_table,
)
from netsec_tasks.table_io.text import decode_csv
from netsec_tasks.table_io.writing import frame_digest, write_parquet

__all__ = [
    "INVISIBLE_CATEGORIES",
    "PARQUET_MAGIC",
    "Layout",
    "Table",
    "decode_csv",
    "expand_paths",
    "frame_digest",
    "is_parquet",
    "iter_table_chunks",
    "load_table",
    "machine_safe",
    "read_csv",
    "read_csv_bytes",
    "read_table",
    "visible",
    "write_parquet",
]
