"""Local files written atomically: a temp file beside the target, renamed onto it when the
writer succeeds, removed when it fails. A reader sees the old file or the whole new one.

The one temp-file-then-rename helper for local files (reports written for a user, the CLI's
outputs, state files under a work dir, Parquet written by :mod:`netsec_tasks.table_io`).
:mod:`netsec_tasks.storage` re-exports these names; objects under a storage URI go through
:class:`netsec_tasks.storage.Storage`, whose local writes use the same helper.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside ``path``; renamed onto ``path`` when the block succeeds, removed if not.

    For writers that want a file name (``skops.io.dump``, ``DataFrame.to_csv``, matplotlib).
    Creates the parent directory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` to the local file ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return Path(path)


def is_temp_name(name: str) -> bool:
    """True for an in-flight :func:`atomic_path` temp file (never a finished artifact)."""
    return name.startswith(".") and ".tmp-" in name


__all__ = ["atomic_path", "atomic_write", "is_temp_name"]
