"""netsec Airflow plugin: links from task instances to MLflow and to the drift report, and a
listener that appends every ``netsec_training`` DAG-run outcome to ``<workdir>/dag_runs.jsonl``.

* Extra links (computed on the API server from the XCom the tasks pushed):
  "MLflow run" on ``train`` and ``register`` (the pipeline run's parent MLflow run),
  "MLflow model version" on ``register``, "Drift report" on ``check_drift``.
  The MLflow UI address is ``[netsec] mlflow_ui_url`` (``AIRFLOW__NETSEC__MLFLOW_UI_URL``), else
  the tracking URI when it is http(s), else http://localhost:5000.
* ``/netsec/drift/{dag_id}/{run_id}``: the drift report HTML of a run, for the link above. Plugin
  apps are not protected by Airflow, so the route checks the caller's Airflow token itself
  (read access to the DAG's runs) and only serves the ``.html`` object the run recorded, under
  the runs of the configured storage (file:// or s3://).
* The listener runs where DAG-run states change (scheduler, API server, ``dags test``); it never
  raises, a failure to write is only logged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin
from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator
from airflow.sdk import BaseOperatorLink

log = logging.getLogger("netsec.plugin")

DAG_ID = "netsec_training"
RUNS_FILE = "dag_runs.jsonl"
DRIFT_ROUTE_PREFIX = "/netsec"


# --------------------------------------------------------------------------- helpers


def _config() -> Any:
    from netsec_tasks.config import load_config

    return load_config()


def read_xcom(dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """A task's XCom value from the metadata DB (API-server side), or None.

    The one place this plugin touches Airflow's ORM. Its links and its route run inside the API
    server, where Airflow 3 has no public Python accessor: ``airflow.sdk``'s ``XCom`` talks to a
    task's supervisor and only works while a task runs, and the public REST API (``GET
    /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}``) would
    mean a token and an HTTP round trip from the API server to itself. Airflow's own
    XCom-backed operator links (``airflow/serialization/definitions/operatorlink.py``) read
    ``XComModel.get_many`` in the same way.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key=key, run_id=run_id, dag_ids=dag_id, task_ids=task_id, map_indexes=map_index
            ).with_only_columns(XComModel.value)
        ).first()
    if not row or row[0] is None:
        return None
    value = row[0]
    # Stored as JSON text; plain dicts of str/number come back as they went in.
    while isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def mlflow_ui_url() -> str:
    from airflow.configuration import conf

    url = conf.get("netsec", "mlflow_ui_url", fallback=None)
    if not url:
        try:
            tracking = _config().registry.tracking_uri
        except Exception:  # a broken config must not break the UI
            tracking = ""
        url = tracking if tracking.startswith(("http://", "https://")) else "http://localhost:5000"
    return url.rstrip("/")


def airflow_base_url() -> str:
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback=None) or "").rstrip("/")


# --------------------------------------------------------------------------- extra links


class _NetsecLink(BaseOperatorLink):
    """A link shown on some tasks of netsec_training only; empty elsewhere, and empty until the
    XCom record it is built from has the field it needs (``source``: task id, key, field)."""

    operators: ClassVar[list[type]] = [PythonOperator, BranchPythonOperator]
    task_ids: ClassVar[tuple[str, ...]] = ()
    source: ClassVar[tuple[str, str, str]] = ("", "return_value", "")

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if ti_key.dag_id != DAG_ID or ti_key.task_id not in self.task_ids:
            return ""
        try:
            task_id, key, needs = self.source
            rec = read_xcom(ti_key.dag_id, ti_key.run_id, task_id, key=key)
            if not rec or not rec.get(needs):
                return ""
            return self.url(rec, ti_key)
        except Exception:
            log.exception("netsec link %r for %s failed", self.name, ti_key)
            return ""

    def url(self, rec: dict[str, Any], ti_key: Any) -> str:
        raise NotImplementedError


class DriftReportLink(_NetsecLink):
    name = "Drift report"
    task_ids = ("check_drift",)
    source = ("check_drift", "drift", "html_uri")

    def url(self, rec: dict[str, Any], ti_key: Any) -> str:
        if rec["html_uri"].startswith(("http://", "https://")):
            return rec["html_uri"]
        return (
            f"{airflow_base_url()}{DRIFT_ROUTE_PREFIX}/drift/{quote(ti_key.dag_id, safe='')}"
            f"/{quote(ti_key.run_id, safe='')}"
        )


class MlflowRunLink(_NetsecLink):
    name = "MLflow run"
    task_ids = ("train", "register")
    source = ("train", "return_value", "mlflow_run_id")

    def url(self, rec: dict[str, Any], ti_key: Any) -> str:
        return (
            f"{mlflow_ui_url()}/#/experiments/{quote(str(rec['experiment_id']))}"
            f"/runs/{quote(rec['mlflow_run_id'])}"
        )


class MlflowModelVersionLink(_NetsecLink):
    name = "MLflow model version"
    task_ids = ("register",)
    source = ("register", "return_value", "version")

    def url(self, rec: dict[str, Any], ti_key: Any) -> str:
        return (
            f"{mlflow_ui_url()}/#/models/{quote(rec['model_name'], safe='')}"
            f"/versions/{quote(str(rec['version']))}"
        )


# --------------------------------------------------------------------------- drift report route


def safe_report_uri(uri: str | None, storage_root: str) -> str | None:
    """``uri`` only if it is an ``.html`` object under the runs of the configured storage."""
    import posixpath

    if not uri or not uri.endswith(".html"):
        return None
    runs = storage_root.rstrip("/") + "/runs/"
    scheme, sep, rest = uri.partition("://")
    normalised = f"{scheme}{sep}{posixpath.normpath(rest)}" if sep else posixpath.normpath(uri)
    if normalised != uri or not uri.startswith(runs):
        return None
    return uri


def _drift_app() -> Any:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="netsec", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(
        "/drift/{dag_id}/{run_id}", dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))]
    )
    def drift_report(dag_id: str, run_id: str) -> HTMLResponse:
        from netsec_tasks.errors import NetsecError
        from netsec_tasks.storage import storage_for

        cfg = _config()
        if cfg.storage.uri.startswith("s3://"):
            from netsec_airflow import use_storage_connection

            use_storage_connection()
        storage = storage_for(cfg)
        rec = read_xcom(dag_id, run_id, "check_drift", key="drift") or {}
        uri = safe_report_uri(rec.get("html_uri"), storage.root)
        if uri is None:
            raise HTTPException(404, f"no drift report recorded for run {run_id!r} of {dag_id!r}")
        try:
            return HTMLResponse(storage.read_text(uri))
        except NetsecError as exc:
            raise HTTPException(404, f"drift report of run {run_id!r} unavailable: {exc}") from None

    return app


class LazyDriftApp:
    """ASGI app that builds the FastAPI route on first use.

    Every Airflow process loads plugins (workers too, for macros); the API-server security module
    costs ~0.8 s to import, so only the API server, which serves requests, pays for it.
    """

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = _drift_app()
        await self._app(scope, receive, send)


# --------------------------------------------------------------------------- listener


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else None


class DagRunOutcomeListener:
    """Appends one JSON line per finished netsec_training run: state, reason, failed tasks, outcome."""

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        self.record(dag_run, "success", msg)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        self.record(dag_run, "failed", msg)

    def record(self, dag_run: Any, state: str, msg: str) -> None:
        if dag_run.dag_id != DAG_ID:
            return
        try:
            line = self.describe(dag_run, state, msg)
            workdir = Path(_config().workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            # One write() with O_APPEND: concurrent writers never interleave within a line.
            fd = os.open(workdir / RUNS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                from netsec_tasks.sinks import json_text  # the JSON sink's encoder

                os.write(fd, (json_text(line) + "\n").encode("utf-8"))
            finally:
                os.close(fd)
        except Exception:
            log.exception("netsec listener could not record run %s", getattr(dag_run, "run_id", "?"))

    @staticmethod
    def describe(dag_run: Any, state: str, msg: str) -> dict[str, Any]:
        start, end = dag_run.start_date, dag_run.end_date
        line: dict[str, Any] = {
            "dag_id": dag_run.dag_id,
            "run_id": dag_run.run_id,
            "state": state,
            "msg": msg,
            "run_type": str(getattr(dag_run.run_type, "value", dag_run.run_type)),
            "start_date": _iso(start),
            "end_date": _iso(end),
            "duration_seconds": round((end - start).total_seconds(), 3) if start and end else None,
            "conf": dag_run.conf or {},
        }
        try:
            try:
                tis = list(dag_run.task_instances)
            except Exception:  # detached from its session: read them in a session of our own
                tis = list(dag_run.get_task_instances())
            line["failed_tasks"] = sorted(
                ti.task_id for ti in tis if str(getattr(ti.state, "value", ti.state)) == "failed"
            )
            line["task_states"] = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in tis}
        except Exception:  # the states are a bonus, not the record
            log.warning("netsec listener: no task states for %s", dag_run.run_id, exc_info=True)
            line["failed_tasks"] = None
        from netsec_tasks.catalog import RunCatalog
        from netsec_tasks.records import RunContext

        cfg = _config()
        catalog = RunCatalog.of(cfg, RunContext.create(cfg, run_id=dag_run.run_id))
        try:
            line["outcome"] = json.loads(catalog.load_text("outcome")) if catalog.exists("outcome") else None
        except Exception:  # storage unreachable: the rest of the line still matters
            log.warning("netsec listener: outcome of %s unreadable", dag_run.run_id, exc_info=True)
            line["outcome"] = None
        return line


# --------------------------------------------------------------------------- plugin


class NetsecPlugin(AirflowPlugin):
    name = "netsec"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink(), DriftReportLink()]
    listeners = [DagRunOutcomeListener()]
    fastapi_apps = [{"app": LazyDriftApp(), "url_prefix": DRIFT_ROUTE_PREFIX, "name": "netsec drift reports"}]
