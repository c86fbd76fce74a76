"""Handing freed heap memory back to the OS after a large request (glibc's ``malloc_trim``).

Called after a large upload is scored (:mod:`serving.routers.predict`) and after its rows leave
the prediction log's queue (:mod:`serving.prediction_writer`), whichever lets go last.
"""

from __future__ import annotations

import ctypes
from typing import Any

# After a request this large, freed memory is handed back to the OS (see release_memory).
RELEASE_AFTER_ROWS = 10_000


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


_TRIM = _malloc_trim()


def release_memory(n_rows: int) -> None:
    """After a large request, return freed heap pages to the OS.

    A 100k-row upload allocates a few hundred MB of short-lived frames; glibc keeps the freed
    pages in its arenas, so the process RSS stays up although nothing holds them.
    ``malloc_trim(0)`` releases them (a few ms, only after requests of RELEASE_AFTER_ROWS rows).
    """
    if _TRIM is not None and n_rows >= RELEASE_AFTER_ROWS:
        _TRIM(0)
