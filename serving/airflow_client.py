"""Trigger the training DAG through the Airflow 3 REST API (no Airflow import).

Airflow 3: ``POST {base}/auth/token`` with ``{"username", "password"}`` returns
``{"access_token"}`` (201); ``POST {base}/api/v2/dags/{dag_id}/dagRuns`` with a bearer token and
``{"logical_date": null, "conf": {...}}`` creates a manual run and returns ``dag_run_id``
(``logical_date`` is required in the body but may be null; ``TriggerDAGRunPostBody`` in
airflow.api_fastapi.core_api.datamodels.dag_run).
"""

from __future__ import annotations

from typing import Any

import httpx


class AirflowUnavailable(Exception):
    """Airflow could not be reached (-> 503)."""


class AirflowRefused(Exception):
    """Airflow answered with an error (-> 502)."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


async def trigger_dag_run(settings, conf: dict[str, Any]) -> dict[str, Any]:
    if not settings.airflow_url:
        raise AirflowUnavailable(
            "Airflow is not configured: set NETSEC_SERVING_AIRFLOW_URL (e.g. http://airflow-apiserver:8080)"
        )
    base = settings.airflow_url.rstrip("/")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=settings.airflow_timeout_seconds) as http:
            token = await _token(http, settings)
            resp = await http.post(
                f"/api/v2/dags/{settings.airflow_dag_id}/dagRuns",
                json={"logical_date": None, "conf": conf},
                headers={"Authorization": f"Bearer {token}"},
            )
            _raise_for(resp, f"triggering DAG '{settings.airflow_dag_id}'")
            body = resp.json()
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        raise AirflowUnavailable(
            f"Airflow at {base} is unreachable ({type(exc).__name__}: {exc}); is the api-server running?"
        ) from None
    except ValueError:
        raise AirflowRefused(f"Airflow at {base} answered with a body that is not JSON", 502) from None
    if "dag_run_id" not in body:
        raise AirflowRefused(f"Airflow at {base} answered without a dag_run_id", 502)
    return body


async def _token(http: httpx.AsyncClient, settings) -> str:
    resp = await http.post(
        "/auth/token",
        json={
            "username": settings.airflow_username,
            "password": settings.airflow_password.get_secret_value(),
        },
    )
    _raise_for(resp, "logging in (POST /auth/token)")
    token = resp.json().get("access_token")
    if not token:
        raise AirflowRefused("Airflow's /auth/token answered without an access_token", 502)
    return token


def _raise_for(resp: httpx.Response, doing: str) -> None:
    if resp.is_success:
        return
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    raise AirflowRefused(
        f"Airflow refused {doing}: HTTP {resp.status_code}: {str(detail)[:500]}", resp.status_code
    )
