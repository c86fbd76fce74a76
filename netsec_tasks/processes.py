"""Processes end together: SIGTERM unwinds the step (so its clean-up runs), and joblib's worker
processes exit when the process that started them is gone.

Why the workers need help: a loky worker notices a dead parent only when it next reads its call
queue, i.e. after the fit it is running finishes; a SIGKILLed ``netsec run`` left its workers
fitting for minutes (measured: bench/bench_faults.py, scenario ``orphans``). The initializer
below starts a watchdog thread in each worker that exits the worker as soon as it is re-parented.
A thread rather than Linux's ``PR_SET_PDEATHSIG``: that signal fires when the *thread* that
forked the worker ends, and loky starts workers from whichever thread submits work (joblib's
completion callbacks run in loky's manager thread); and polling ``getppid`` works on every POSIX
system. (No maintained Python package wraps prctl today.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

from netsec_tasks.errors import Terminated

# How often a worker checks that its parent is still there (seconds).
PARENT_POLL_SECONDS = 0.25


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # re-parented: the pipeline process is gone, and nobody wants our result
        time.sleep(PARENT_POLL_SECONDS)


def exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit this process (within ``PARENT_POLL_SECONDS``) once ``parent_pid``
    is no longer its parent."""
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before we even started
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="netsec-parent-watch", daemon=True
    ).start()


@contextlib.contextmanager
def workers_exit_with_parent() -> Iterator[None]:
    """joblib's loky workers started inside the block exit when this process dies."""
    from joblib import parallel_config

    with parallel_config(backend="loky", initializer=exit_with_parent, initargs=(os.getpid(),)):
        yield


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` in the main thread, so ``except`` /
    ``finally`` clean-up runs (end the MLflow run FAILED, stop the workers) instead of the
    process vanishing. A Python handler already installed (Airflow's task runner calls the
    operator's ``on_kill``) is called first. Outside the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    pid = os.getpid()

    def handler(signum, frame):
        if callable(previous):
            previous(signum, frame)
        if os.getpid() == pid:  # not in a forked child that inherited the handler
            raise Terminated("terminated by SIGTERM")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
