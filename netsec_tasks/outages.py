"""Service outages in one place: which errors mean "unreachable", the per-call budgets, and who
owns a piece of work (so the next run can tell a dead owner from a live one).

- :func:`is_unreachable` decides by exception *type*, walking ``__cause__``/``__context__``
  (MLflow wraps the requests error it gave up on; SQLAlchemy wraps sqlite3's): the connection
  errors of requests/urllib3, botocore and pymongo, the OS's own (refused, reset, timed out, DNS),
  sqlite3's "unable to open database file", and pyarrow's S3 network errors (pyarrow raises a plain
  ``OSError``; its "AWS Error NETWORK_CONNECTION"/curl wording is the only marker it gives).
- :func:`apply_mlflow_budget` puts ``registry.request_timeout_seconds`` / ``registry.max_retries``
  / ``registry.backoff_factor`` into MLflow's own environment settings (``MLFLOW_HTTP_REQUEST_*``,
  read by MLflow at every request), so one MLflow call during an outage costs at most
  :func:`mlflow_budget_seconds` instead of MLflow's default ~4 minutes of retries.
- :func:`quick_mlflow`: a single short attempt, for failure handlers that must not make a second
  long wait.
- :func:`mlflow_errors`: unreachable -> :class:`SourceUnavailable` naming the URI and the budget.
- :func:`owner_id` / :func:`owner_alive`: "this process on this host", recorded on MLflow runs and
  model versions, so reconciliation ends only work whose owner is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from netsec_tasks.errors import NetsecError, SourceUnavailable

if TYPE_CHECKING:
    from netsec_tasks.config import PipelineConfig

log = logging.getLogger(__name__)

# The MLflow settings we own (environment_variables.py of MLflow 3; read per request).
_MLFLOW_TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"
_MLFLOW_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
_MLFLOW_BACKOFF = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
_MLFLOW_JITTER = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"
# urllib3 adds up to this many seconds of random jitter to every back-off sleep.
_JITTER_SECONDS = 1.0


# --------------------------------------------------------------------------- classification


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then everything it was raised from or during (cause, context, DBAPI ``orig``,
    urllib3's ``reason``), each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__, getattr(e, "orig", None), getattr(e, "reason", None)):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _unreachable_types() -> tuple[type, ...]:
    """Connection-failure types of the client libraries that are loaded (an exception of a
    library that was never imported cannot be in hand)."""
    types: list[type] = [ConnectionError, TimeoutError, socket.gaierror, socket.herror]
    if "requests" in sys.modules:
        from requests import exceptions as rq

        types += [rq.ConnectionError, rq.Timeout, rq.RetryError]
    if "urllib3" in sys.modules:
        from urllib3 import exceptions as u3

        types += [
            u3.NewConnectionError,
            u3.ConnectTimeoutError,
            u3.ReadTimeoutError,
            u3.ProtocolError,
            u3.MaxRetryError,
        ]
    if "botocore" in sys.modules:
        from botocore import exceptions as bc

        types += [bc.ConnectionError, bc.HTTPClientError]
    if "pymongo" in sys.modules:
        from pymongo import errors as pm

        types += [pm.ConnectionFailure]
    return tuple(types)


def _unreachable_one(e: BaseException, types: tuple[type, ...]) -> bool:
    if isinstance(e, types):
        return True
    text = str(e)
    if type(e).__name__ == "OperationalError" and "unable to open database file" in text:
        return True  # sqlite3 (and SQLAlchemy's wrapper): the store's file or directory is gone
    if type(e) is OSError or type(e).__name__ == "ArrowIOError":
        # pyarrow's S3 filesystem: "AWS Error NETWORK_CONNECTION ... curlCode: 7, Couldn't connect"
        return "NETWORK_CONNECTION" in text or "curlCode" in text
    return False


def is_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or anything in its chain) means a service could not be reached, as
    opposed to a service that answered and refused."""
    if isinstance(exc, SourceUnavailable):
        return True
    types = _unreachable_types()
    return any(_unreachable_one(e, types) for e in _chain(exc))


def reason(exc: BaseException, limit: int = 160) -> str:
    """The innermost network error of the chain, short: ``ConnectionRefusedError: [Errno 111] ...``."""
    types = _unreachable_types()
    inner = None
    for e in _chain(exc):
        if _unreachable_one(e, types):
            inner = e
    e = inner or exc
    text = " ".join(str(e).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --------------------------------------------------------------------------- MLflow budget


def mlflow_budget_seconds(cfg: PipelineConfig) -> float:
    """Worst case of one MLflow call against a hung server: every attempt times out, plus
    urllib3's back-off sleeps between them (0, then 2f, 4f, ... each with up to 1 s of jitter)."""
    r = cfg.registry
    sleeps = sum(r.backoff_factor * 2 ** (n - 1) + _JITTER_SECONDS for n in range(2, r.max_retries + 1))
    return (r.max_retries + 1) * r.request_timeout_seconds + sleeps


def apply_mlflow_budget(cfg: PipelineConfig) -> None:
    """Set MLflow's HTTP timeout and retry settings from ``cfg.registry`` (process-wide)."""
    r = cfg.registry
    os.environ[_MLFLOW_TIMEOUT] = str(r.request_timeout_seconds)
    os.environ[_MLFLOW_RETRIES] = str(r.max_retries)
    os.environ[_MLFLOW_BACKOFF] = str(r.backoff_factor)
    os.environ[_MLFLOW_JITTER] = str(_JITTER_SECONDS)


@contextlib.contextmanager
def quick_mlflow(timeout_seconds: int = 3) -> Iterator[None]:
    """One attempt with a short timeout for the calls inside (a failure handler's clean-up)."""
    keys = (_MLFLOW_TIMEOUT, _MLFLOW_RETRIES)
    saved = {k: os.environ.get(k) for k in keys}
    current = int(saved[_MLFLOW_TIMEOUT] or timeout_seconds)
    os.environ[_MLFLOW_TIMEOUT] = str(min(current, timeout_seconds))
    os.environ[_MLFLOW_RETRIES] = "0"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def mlflow_unavailable(cfg: PipelineConfig, action: str, exc: BaseException) -> SourceUnavailable:
    r = cfg.registry
    return SourceUnavailable(
        f"MLflow tracking store {r.tracking_uri} is unreachable while trying to {action} "
        f"({reason(exc)}; gave up after {r.max_retries + 1} attempt(s) of at most "
        f"{r.request_timeout_seconds} s, registry.request_timeout_seconds / registry.max_retries). "
        "Check registry.tracking_uri / MLFLOW_TRACKING_URI and that the MLflow server (or the "
        "SQLite file's directory) is up."
    )


@contextlib.contextmanager
def mlflow_errors(cfg: PipelineConfig, action: str) -> Iterator[None]:
    """Turn an unreachable tracking store into SourceUnavailable naming the URI (one line)."""
    try:
        yield
    except NetsecError:
        raise
    except Exception as exc:
        if is_unreachable(exc):
            raise mlflow_unavailable(cfg, action, exc) from exc
        raise


# --------------------------------------------------------------------------- owners


def _pid_namespace() -> str:
    try:  # containers on one host share the hostname space rarely, the pid namespace never
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22): a pid
    reused by a later process has another one. Empty where /proc does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_id(pid: int | None = None) -> str:
    """``host|pid namespace|pid|start time`` of this process (or ``pid`` on this host)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}|{_pid_namespace()}|{pid}|{_start_ticks(pid)}"


def owner_alive(owner: str | None) -> bool | None:
    """True/False when ``owner`` is a process of this host (and pid namespace) that is / is not
    running; None when it cannot be told from here (another host, or no owner recorded)."""
    if not owner:
        return None
    parts = owner.split("|")
    if len(parts) != 4:
        return None
    host, ns, pid_text, ticks = parts
    if host != socket.gethostname() or ns != _pid_namespace() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if ticks and _start_ticks(pid) not in ("", ticks):
        return False  # the pid now belongs to another process
    return not _is_zombie(pid)  # a zombie has exited; only its process-table entry is left


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False
