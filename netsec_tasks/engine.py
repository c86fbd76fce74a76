"""Where partition-by-partition work runs: this process, or a Dask cluster.

``training.engine`` is the one switch:

- ``local`` (the default): :meth:`Engine.map` calls the step's per-partition function on each
  partition in turn, in the task's own process. Nothing else changes.
- ``dask``: the same function runs on the workers of the cluster at ``dask.scheduler`` (compose:
  ``tcp://dask-scheduler:8786``; dask-kubernetes or any hosted Dask gives one), through a
  ``distributed.Client``: Airflow 3 has no Dask executor, so a task is a Dask client, which is
  how Airflow users run Dask. Without an address the task starts a ``LocalCluster`` on loopback
  (``dask.workers`` processes of one thread each, ``dask.memory_limit`` each): for tests and for
  one large machine. The cluster is kept for the rest of the process (``netsec run`` runs every
  step on one cluster) and closed at exit.

Workers have no disk in common with the task: every function reads its inputs from and writes
its outputs to storage (``storage.uri``; S3 in compose), and returns small results (counts,
tallies, hashes). Workers of a remote cluster reach S3 with their own credentials (the AWS
variables of their environment, as Dask deployments do); a LocalCluster gets the task's.

Each worker runs one task at a time (one thread), so it holds one partition at a time
(:mod:`netsec_tasks.partitions` counts them). Progress goes to the task log: partitions done,
elapsed time, an estimate of the time left.

Errors: an unreachable scheduler (or no worker within ``dask.connect_timeout_seconds``) raises
:class:`SourceUnavailable` (exit 3) naming the address; a worker that died while running a
partition (e.g. killed above its memory limit) raises :class:`NetsecError` naming the step and the
partition; errors the function itself raises (a DataError naming a file) come back unchanged.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from netsec_tasks.errors import NetsecError, SourceUnavailable

if TYPE_CHECKING:  # pragma: no cover
    import distributed

    from netsec_tasks.config import PipelineConfig

log = logging.getLogger("netsec.engine")

# Seconds between two progress lines of one step.
PROGRESS_SECONDS = 10.0

T = TypeVar("T")
R = TypeVar("R")


def duration(seconds: float) -> str:
    """``1m05s`` / ``42s``: how progress lines show time."""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Logs ``<what>: k/n <unit> done in <elapsed>, about <eta> left`` as items complete (at
    most every :data:`PROGRESS_SECONDS`, and when the last one is done), so the task log shows a
    long step moving without a line per item of a short one."""

    def __init__(self, what: str, total: int, unit: str = "partitions"):
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self.started = self._said = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if now - self._said < PROGRESS_SECONDS and self.done != self.total:
            return
        self._said = now
        elapsed = now - self.started
        left = self.total - self.done
        eta = f", about {duration(elapsed / self.done * left)} left" if left else ""
        log.info(
            "%s: %d/%d %s done in %s%s", self.what, self.done, self.total, self.unit, duration(elapsed), eta
        )


class Engine:
    """Runs a function over items (partitions, columns) here or on Dask workers."""

    name = "local"
    client: distributed.Client | None = None

    @property
    def workers(self) -> int:
        return 1

    def describe(self) -> str:
        return "the local engine (this process)"

    def map(
        self,
        fn: Callable[..., R],
        items: Sequence[T],
        *,
        what: str,
        unit: str = "partitions",
        shared: dict[str, Any] | None = None,
    ) -> list[R]:
        """``[fn(item, **shared) for item in items]``, in order, with progress in the log.
        ``shared``: large arguments every call takes (a model): sent to each worker once."""
        if not items:
            return []
        return self._run(fn, items, what, Progress(what, len(items), unit), shared or {})

    def _run(
        self, fn: Callable[..., R], items: Sequence[T], what: str, progress: Progress, shared: dict[str, Any]
    ) -> list[R]:
        """:meth:`map` for a non-empty ``items``: here, one item after the other."""
        out = []
        for item in items:
            out.append(fn(item, **shared))
            progress.step()
        return out

    def submit(self, fn: Callable[..., R], *args: Any, what: str) -> R:
        """``fn(*args)``: here, or on one worker."""
        log.info("%s: running in this process", what)
        return fn(*args)


_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/]*):[^@/]*@")


def redacted(cfg: PipelineConfig) -> PipelineConfig:
    """``cfg`` without the secrets workers never need (the passwords in ``source.mongo.uri`` and
    ``registry.tracking_uri``): what a step's function receives on a Dask worker, so they never
    travel through the scheduler."""
    mask = functools.partial(_USERINFO.sub, r"\g<head>:***@")
    return cfg.with_overrides(
        {
            "source.mongo.uri": mask(cfg.source.mongo.uri),
            "registry.tracking_uri": mask(cfg.registry.tracking_uri),
        }
    )


def _for_workers(fn: Callable[..., R], args: tuple = ()) -> tuple[Callable[..., R], tuple]:
    """``fn`` (a function or a ``functools.partial``) and ``args`` with every config redacted."""
    from netsec_tasks.config import PipelineConfig

    def clean(values: tuple) -> tuple:
        return tuple(redacted(v) if isinstance(v, PipelineConfig) else v for v in values)

    if isinstance(fn, functools.partial):
        fn = functools.partial(fn.func, *clean(fn.args), **fn.keywords)
    return fn, clean(args)


class DaskEngine(Engine):
    name = "dask"

    def __init__(self, client: distributed.Client, where: str):
        self.client = client
        self.where = where

    @property
    def workers(self) -> int:
        assert self.client is not None
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))

    def describe(self) -> str:
        return f"the Dask cluster at {self.where} ({self.workers} workers)"

    def _run(
        self, fn: Callable[..., R], items: Sequence[T], what: str, progress: Progress, shared: dict[str, Any]
    ) -> list[R]:
        """:meth:`map` for a non-empty ``items``: one task per item on the workers, ``shared``
        scattered to every worker once, results in the items' order."""
        from distributed import as_completed

        assert self.client is not None
        log.info("%s: %d %s on %s", what, len(items), progress.unit, self.describe())
        fn, _ = _for_workers(fn)
        scattered = {k: self.client.scatter(v, broadcast=True, hash=False) for k, v in shared.items()}
        futures = self.client.map(fn, list(items), pure=False, **scattered)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        try:
            for future in as_completed(futures):
                results[index[future.key]] = _result(future, what, items[index[future.key]])
                progress.step()
        finally:
            for f in [*futures, *scattered.values()]:
                f.release()
        return results

    def submit(self, fn: Callable[..., R], *args: Any, what: str) -> R:
        assert self.client is not None
        log.info("%s: on one worker of %s", what, self.describe())
        fn, args = _for_workers(fn, args)
        future = self.client.submit(fn, *args, pure=False)
        try:
            return _result(future, what, None)
        finally:
            future.release()


def _result(future: Any, what: str, item: Any) -> Any:
    """A future's result; a worker that died becomes a NetsecError naming the work."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        on = f" ({_name(item)})" if item is not None else ""
        raise NetsecError(
            f"{what}{on}: a Dask worker died while running it ({exc}); a worker killed above "
            "its memory limit is the usual cause: give workers more memory (dask.memory_limit, "
            "or the workers' --memory-limit) or use smaller partitions (storage.partition_rows)"
        ) from None


def _name(item: Any) -> str:
    uri = getattr(item, "uri", None)
    return str(uri) if uri else repr(item)[:200]


# --------------------------------------------------------------------------- the cluster

# Dask's own periodic work made less frequent (system monitor, event-loop tick, the worker's
# statistical profiler, the memory monitor): an idle scheduler with two workers used 0.12 CPU
# seconds per second with Dask's defaults and 0.02-0.035 with these (measured on this 2-core
# box), which a shared machine and every long step pay. compose sets the same as DASK_* variables.
DASK_RUNTIME = {
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "500ms",
}

_CLUSTERS: dict[tuple, tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def _local_cluster(cfg: PipelineConfig) -> tuple[Any, distributed.Client]:
    """This process's LocalCluster for these settings (started once, closed at exit)."""
    import distributed

    d = cfg.dask
    key = (d.workers, d.memory_limit)
    with _LOCK:
        if key in _CLUSTERS:
            cluster, client = _CLUSTERS[key]
            if client.status == "running":
                return cluster, client
        log.info(
            "starting a Dask LocalCluster: %d worker processes, 1 thread and %s each, on loopback",
            d.workers,
            d.memory_limit,
        )
        import dask

        with dask.config.set(DASK_RUNTIME):  # the nannies pass it on to their workers
            cluster = distributed.LocalCluster(
                n_workers=d.workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=d.memory_limit,
                host="127.0.0.1",
                dashboard_address=None,  # nothing listens beyond what the work needs
                silence_logs=logging.WARNING,
            )
        client = distributed.Client(cluster, timeout=d.connect_timeout_seconds)
        _share_task_state(client)
        _CLUSTERS[key] = (cluster, client)
        return cluster, client


def _share_task_state(client: distributed.Client) -> None:
    """Give a LocalCluster's workers (our own processes, on loopback) the task's S3 credentials
    (e.g. from Airflow's netsec_s3 connection), and end them with this process even when it is
    killed (:func:`netsec_tasks.processes.exit_with_parent`, watching the task's pid)."""
    from netsec_tasks.storage import current_s3_credentials, use_s3_credentials

    creds = current_s3_credentials()
    if creds is not None:
        client.run(use_s3_credentials, creds)
    client.run(_watch_task, os.getpid())


def _watch_task(pid: int) -> None:
    """Worker side: exit this worker once the task process ``pid`` is gone."""

    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            time.sleep(0.5)

    threading.Thread(target=watch, name="netsec-task-watch", daemon=True).start()


def _connect(cfg: PipelineConfig) -> distributed.Client:
    """A client of the scheduler at ``dask.scheduler`` with at least one worker."""
    import distributed

    d = cfg.dask
    address = d.scheduler
    assert address is not None
    with _LOCK:
        cached = _CLUSTERS.get(("remote", address))
        if cached is not None and cached[1].status == "running":
            return cached[1]
    try:
        client = distributed.Client(address, timeout=d.connect_timeout_seconds)
    except (OSError, TimeoutError) as exc:
        raise SourceUnavailable(
            f"cannot reach the Dask scheduler at {address} within {d.connect_timeout_seconds:g} s "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); is it "
            "running? Set dask.scheduler (NETSEC_DASK__SCHEDULER), or unset it for a LocalCluster"
        ) from None
    try:
        client.wait_for_workers(1, timeout=d.connect_timeout_seconds)
    except (OSError, TimeoutError):
        client.close()
        raise SourceUnavailable(
            f"the Dask scheduler at {address} has no worker after {d.connect_timeout_seconds:g} s; "
            "start dask-worker processes (compose: docker compose up -d --scale dask-worker=2)"
        ) from None
    with _LOCK:
        _CLUSTERS[("remote", address)] = (None, client)
    return client


@atexit.register
def close_clusters() -> None:
    """Close every client and LocalCluster this process opened (also at exit)."""
    with _LOCK:
        items = list(_CLUSTERS.values())
        _CLUSTERS.clear()
    for cluster, client in items:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


def engine_for(cfg: PipelineConfig) -> Engine:
    """The engine of ``training.engine`` (a connected one for ``dask``)."""
    if cfg.training.engine == "local":
        return Engine()
    if cfg.dask.scheduler:
        return DaskEngine(_connect(cfg), cfg.dask.scheduler)
    _, client = _local_cluster(cfg)
    return DaskEngine(client, f"a LocalCluster ({client.scheduler_info().get('address', 'loopback')})")


def runtime_environment() -> dict[str, str]:
    """:data:`DASK_RUNTIME` as the ``DASK_*`` environment variables a ``dask scheduler`` or
    ``dask worker`` process reads (compose sets the same; bench_scale's cluster uses this)."""
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
        for key, value in DASK_RUNTIME.items()
    }
