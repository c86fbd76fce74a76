"""Partitioned Parquet data sets in storage: data that never has to fit in one process.

A data set (a snapshot, the splits, the validated splits, the new batch) of at most
``storage.partition_rows`` rows is one Parquet object, as it always was. A larger one is a
**partitioned data set**: under its URI (which keeps its ``.parquet`` name, as Spark and Dask
name such directories)

    <uri>/part-00000.parquet, part-00001.parquet, ...   partitions of partition_rows rows
    <uri>/_manifest.json                                 written last

The manifest lists the partitions in row order with their row counts (and a content digest when
the writer had one), so a reader knows every partition's rows and offset without opening it, and
a data set exists only once its manifest does: a writer that fails part-way leaves no data set
behind (its orphan partitions are overwritten by the next attempt).

:func:`netsec_tasks.storage.open_dataset` describes either layout as a :class:`Dataset` of one or more
:class:`Partition` s, so a step processes any data set partition by partition
(:mod:`netsec_tasks.engine` maps the partitions onto Dask workers or loops over them locally);
:func:`netsec_tasks.storage.read_dataset` is for the consumers that need a whole (small) data set in one frame.

Every partition a step loads into pandas goes through :func:`read_partition` or
:func:`loading`, which count the partitions alive in this process (:func:`load_stats`): the test
that no step holds more than one partition at a time in a worker's process reads those counts
from every worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from netsec_tasks.storage import (  # the layout's reading side lives with the storage that reads it
    DATASET_FORMAT,
    DATASET_MANIFEST,
    Dataset,
    Partition,
    describe_partitions,
    join_uri,
    manifest_uri,
    partitions_digest,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from netsec_tasks.storage import Storage

MANIFEST = DATASET_MANIFEST


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def is_partitioned(storage: Storage, uri: str) -> bool:
    """True when ``uri`` is a partitioned data set (its manifest exists)."""
    return storage.exists(manifest_uri(uri))


# --------------------------------------------------------------------------- loading, counted

_LOCK = threading.Lock()
_STATS = {"live": 0, "peak": 0, "loads": 0}


def _acquire() -> None:
    with _LOCK:
        _STATS["live"] += 1
        _STATS["loads"] += 1
        _STATS["peak"] = max(_STATS["peak"], _STATS["live"])


def _release() -> None:
    with _LOCK:
        _STATS["live"] -= 1


def load_stats() -> dict[str, int]:
    """This process's partition loads: ``live`` now, the ``peak`` of partitions alive at once,
    and the ``loads`` so far (since :func:`reset_load_stats`)."""
    with _LOCK:
        return dict(_STATS)


def reset_load_stats() -> dict[str, int]:
    with _LOCK:
        before = dict(_STATS)
        _STATS.update(peak=_STATS["live"], loads=0)
        return before


@contextlib.contextmanager
def loading(part: Partition) -> Iterator[Partition]:
    """Count ``part`` as loaded in this process for the block (a step that streams it in
    batches holds the partition, piece by piece, until the block ends)."""
    _acquire()
    try:
        yield part
    finally:
        _release()


def read_partition(storage: Storage, part: Partition, columns: list[str] | None = None) -> pd.DataFrame:
    """One partition as a DataFrame, counted as loaded for as long as the frame lives."""
    frame = storage.read_frame(part.uri, columns=columns)
    _acquire()
    weakref.finalize(frame, _release)
    return frame


def iter_batches(
    storage: Storage, part: Partition, batch_rows: int, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """The partition's rows as Arrow tables of at most ``batch_rows`` rows (an empty partition:
    one empty table with its schema), counted as one loaded partition meanwhile."""
    import pyarrow as pa

    with loading(part), storage.parquet_file(part.uri) as pf:
        schema = pf.schema_arrow
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        if not pf.metadata.num_rows:
            yield schema.empty_table()
            return
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            yield pa.Table.from_batches([batch], schema)


def read_column(storage: Storage, data: Dataset, name: str, rows: np.ndarray | None = None) -> pd.Series:
    """One column of every partition, concatenated (8 bytes a row for a number); with ``rows``
    (sorted row numbers of the whole data set, e.g. :func:`sample_rows`) only those rows, read
    one partition at a time."""
    import pandas as pd
    import pyarrow as pa

    pieces = []
    for part in data.partitions:
        if rows is not None:
            lo, hi = np.searchsorted(rows, [part.offset, part.offset + part.rows])
            if lo == hi:
                continue
        with storage.parquet_file(part.uri) as pf:
            column = pf.read(columns=[name]).column(0)
        if rows is not None:
            column = column.take(pa.array(rows[lo:hi] - part.offset))
        pieces.append(column)
    values = pa.chunked_array([c for p in pieces for c in p.chunks], type=pieces[0].type) if pieces else []
    return pd.Series(values.to_pandas() if pieces else [], name=name)  # type: ignore[union-attr]


def sample_rows(total: int, size: int, seed: int = 0) -> np.ndarray:
    """``size`` distinct row numbers of ``range(total)``, sorted, drawn uniformly with a fixed
    ``seed`` (the same rows on every call, for every column); int64 (size,)."""
    return np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))


# --------------------------------------------------------------------------- writing


class DatasetWriter:
    """Write a data set in partitions of ``partition_rows`` rows (see the module doc).

    Each partition is staged in ``scratch`` (this process's private disk) and uploaded as soon
    as it is full, so local disk and memory hold one partition whatever the data set's size.
    :meth:`close` decides the layout: one partition becomes one Parquet object at ``uri`` (the
    small-data layout, unchanged); several become ``<uri>/part-NNNNN.parquet`` and the manifest,
    written last.

    ``uri=None``: the URI is only known at the end (a content-addressed snapshot is named by the
    digest of what was written): every partition stays staged until ``close(uri)``.
    ``keep_local``: the staged files stay after upload (:attr:`local_parts`, in row order) for a
    second pass over them in this process; the caller removes ``scratch``.

    ``digest``: (schema, the row hashes of one partition) -> that partition's digest; with it,
    :meth:`write_table` takes each table's row hashes and the data set's digest is
    :func:`partitions_digest` of its partitions' (a single-partition data set's digest is its
    one partition's, which is what a single file's digest always was).
    """

    def __init__(
        self,
        storage: Storage,
        uri: str | None,
        schema: pa.Schema,
        *,
        partition_rows: int,
        scratch: Path,
        digest: Callable[[pa.Schema, list[np.ndarray]], str] | None = None,
        keep_local: bool = False,
    ):
        if partition_rows < 1:
            raise ValueError("partition_rows must be at least 1")
        self.storage, self.uri, self.schema = storage, uri, schema
        self.partition_rows = partition_rows
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.keep_local = keep_local
        self._digest = digest
        self._token = hashlib.sha256(f"{uri}:{id(self)}:{time.time_ns()}".encode()).hexdigest()[:12]
        self._writer: Any = None
        self._local: Path | None = None
        self._rows_in_part = 0
        self._hashes: list[np.ndarray] = []
        self._done: list[dict[str, Any]] = []  # finished partitions: name, rows, digest, local
        self.local_parts: list[Path] = []
        self.rows = 0

    @property
    def digest(self) -> str | None:
        """The digest of what was written so far (complete after the last write)."""
        digests = [d["digest"] for d in self._done]
        if self._writer is not None or not digests or any(d is None for d in digests):
            return None
        return digests[0] if len(digests) == 1 else partitions_digest(digests)

    # -- parts ---------------------------------------------------------------------------

    def _open_part(self) -> None:
        import pyarrow.parquet as pq

        self._local = self.scratch / f".dataset-{self._token}-{len(self._done):05d}.parquet"
        self._writer = pq.ParquetWriter(self._local, self.schema)
        self._rows_in_part = 0
        self._hashes = []

    def _finish_part(self) -> None:
        """Close the open partition; upload what is staged once the data set is partitioned."""
        assert self._writer is not None and self._local is not None
        self._writer.close()
        self._writer = None
        digest = self._digest(self.schema, self._hashes) if self._digest is not None else None
        self._done.append(
            {
                "name": part_name(len(self._done)),
                "rows": self._rows_in_part,
                "digest": digest,
                "local": self._local,
            }
        )
        self.local_parts.append(self._local)
        self._local = None
        if len(self._done) >= 2 and self.uri is not None:  # partitioned for sure: send what is staged
            for done in self._done:
                self._upload(done, join_uri(self.uri, done["name"]))

    def _upload(self, done: dict[str, Any], uri: str) -> None:
        local = done.get("local")
        if local is None:
            return
        self.storage.upload(local, uri)
        done["local"] = None
        if not self.keep_local:
            Path(local).unlink(missing_ok=True)

    # -- writing -------------------------------------------------------------------------

    def write_table(self, table: pa.Table, hashes: np.ndarray | None = None) -> None:
        """Append ``table`` (this writer's schema); ``hashes``: its row hashes (with ``digest``)."""
        if self._digest is not None and hashes is None:
            raise ValueError("this writer computes digests: pass the table's row hashes")
        start = 0
        n = table.num_rows
        while start < n:
            if self._writer is None:
                self._open_part()
            elif self._rows_in_part >= self.partition_rows:
                self._finish_part()
                self._open_part()
            take = min(n - start, self.partition_rows - self._rows_in_part)
            self._writer.write_table(table.slice(start, take))
            if hashes is not None:
                self._hashes.append(hashes[start : start + take])
            self._rows_in_part += take
            self.rows += take
            start += take

    def finish(self) -> None:
        """End the last partition (after it, :attr:`digest` is the data set's); idempotent."""
        if self._writer is None and not self._done:
            self._open_part()  # an empty data set is still one (empty) file with the schema
        if self._writer is not None:
            self._finish_part()

    def close(self, uri: str | None = None, *, upload: bool = True) -> Dataset:
        """Finish the data set at ``uri`` (the writer's, unless it had none) and describe it;
        its manifest is written last when partitioned. ``upload=False``: the data set is
        already in storage (a content-addressed snapshot seen before): nothing is sent."""
        uri = uri or self.uri
        if uri is None:
            raise ValueError("this writer has no URI: pass close(uri)")
        self.uri = uri
        self.finish()
        columns = tuple(self.schema.names)
        if len(self._done) == 1:
            done = self._done[0]
            if upload:
                self._upload(done, uri)
            part = Partition(uri, 0, done["rows"], 0, done["digest"])
            return Dataset(uri, done["rows"], (part,), False, columns, done["digest"])
        parts = [{k: d[k] for k in ("name", "rows", "digest")} for d in self._done]
        if not upload:
            return describe_partitions(uri, parts, list(columns))
        for done in self._done:
            self._upload(done, join_uri(uri, done["name"]))
        return write_manifest(self.storage, uri, parts, list(columns))

    def abort(self) -> None:
        """Drop what is staged locally (uploaded partitions without a manifest are no data set)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        for path in [self._local, *self.local_parts]:
            if path is not None:
                Path(path).unlink(missing_ok=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_manifest(storage: Storage, uri: str, parts: list[dict[str, Any]], columns: list[str]) -> Dataset:
    """Write the manifest of partitions already under ``uri`` (last: the data set then exists).
    ``parts``: dicts of ``name`` (under ``uri``), ``rows`` and ``digest`` (or None), in row order."""
    data = describe_partitions(uri, parts, columns)
    doc = {
        "format": DATASET_FORMAT,
        "rows": data.rows,
        "columns": list(columns),
        "digest": data.digest,
        "partitions": [{"name": p["name"], "rows": int(p["rows"]), "digest": p.get("digest")} for p in parts],
    }
    storage.write_text(manifest_uri(uri), json.dumps(doc, indent=1))
    return data
