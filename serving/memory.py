"""Handing freed heap memory back to the OS after a large request (glibc's ``malloc_trim``).

Called after a large upload is scored (:mod:`serving.routers.predict`), after its rows leave
the prediction log's queue (:mod:`serving.prediction_writer`), whichever lets go last, and after
a large JSON answer is sent (:func:`json_answer`).
"""

from __future__ import annotations

import ctypes
from typing import Any

from fastapi.responses import Response
from starlette.background import BackgroundTask

# After a request this large, freed memory is handed back to the OS (see release_memory).
RELEASE_AFTER_ROWS = 10_000
# An answer body this large is handed back once it is sent (see json_answer).
RELEASE_AFTER_BYTES = 4 * 1024 * 1024


# Allocations this large get their own mapping, unmapped when freed (see fixed_mmap_threshold).
MMAP_THRESHOLD_BYTES = 256 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's <malloc.h>


def _glibc(name: str) -> Any:
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


_TRIM = _glibc("malloc_trim")
_MALLOPT = _glibc("mallopt")


def fixed_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD_BYTES (``mallopt(M_MMAP_THRESHOLD)``).

    By default glibc raises the threshold (up to 32 MB) each time a large mapped block is freed,
    so the next large buffers (a 100k-row answer's body, its frames' columns) come from the heap,
    and one freed after the last trim stays in the process's RSS. With the threshold fixed, a
    buffer above it is a mapping of its own that goes back to the OS the moment it is freed.
    Called once at the app's start; returns False where it does not apply (not glibc).
    """
    return _MALLOPT is not None and _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


def release_memory(n_rows: int) -> None:
    """After a large request, return freed heap pages to the OS.

    A 100k-row upload allocates a few hundred MB of short-lived frames; glibc keeps the freed
    pages in its arenas, so the process RSS stays up although nothing holds them.
    ``malloc_trim(0)`` releases them (a few ms, only after requests of RELEASE_AFTER_ROWS rows).
    """
    if _TRIM is not None and n_rows >= RELEASE_AFTER_ROWS:
        _TRIM(0)


def json_answer(content: bytes) -> Response:
    """The JSON response for an encoded answer. A large answer (a 100k-row upload's is tens of
    MB) is freed only after the last byte is sent, after the request's own release_memory: the
    trim then runs as the response's background task, so RSS comes back after every large
    answer, not only after those whose frames were freed last."""
    background = None
    if _TRIM is not None and len(content) >= RELEASE_AFTER_BYTES:
        background = BackgroundTask(release_memory, RELEASE_AFTER_ROWS)
    return Response(content, media_type="application/json", background=background)
