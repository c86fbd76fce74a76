"""What steps write: local Parquet files, atomically, and a frame's content digest."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from netsec_tasks.atomic_files import atomic_path


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike, *, index: bool = False) -> Path:
    """A local Parquet file, written atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=index)
    return Path(path)


def frame_digest(frame: pd.DataFrame) -> str:
    """Content digest of a frame: stable across runs for the same rows, columns and dtypes."""
    import hashlib

    h = hashlib.sha256()
    h.update(",".join(f"{c}:{frame[c].dtype}" for c in frame.columns).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return h.hexdigest()
