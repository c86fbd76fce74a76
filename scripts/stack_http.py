"""Talking to a running stack over HTTP, for the scripts that drive one (``compose_test.py``,
``loop_check.py``): JSON requests with the standard library only, and the Airflow 3 REST API
as a client uses it.

A sibling module: ``python scripts/x.py`` puts ``scripts/`` on ``sys.path``; the test kit does
the same (``netsec_testing.load_script``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, Any]:
    """(status, JSON or text body). Never raises for HTTP errors; connection errors -> status 0.
    ``body`` (any JSON value) is sent as JSON; ``timeout`` in seconds."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


class AirflowRest:
    """The Airflow 3 REST API at ``base`` (``http://host:port``) as a client uses it: a token
    from ``/auth/token`` (``login()`` first), taken again when it expires during a long wait.

    A request that fails raises ``self.failure(message)``, the message starting with the method
    and path: a subclass names the exception its script reports (RuntimeError here).
    ``timeout``: seconds a request may take.
    """

    def __init__(self, base: str, username: str, password: str, timeout: float = 30):
        self.base, self.username, self.password = base.rstrip("/"), username, password
        self.timeout = timeout
        self.token: str | None = None

    def failure(self, message: str) -> Exception:
        return RuntimeError(message)

    def login(self) -> None:
        status, body = http(
            "POST",
            f"{self.base}/auth/token",
            {"username": self.username, "password": self.password},
            {"Accept": "application/json"},
            timeout=self.timeout,
        )
        if status not in (200, 201) or not isinstance(body, dict) or "access_token" not in body:
            raise self.failure(f"POST /auth/token: HTTP {status}: {str(body)[:500]}")
        self.token = body["access_token"]

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        ok: tuple[int, ...] = (200,),
        timeout: float | None = None,
    ) -> Any:
        """The JSON answer of ``method path`` (``path`` from ``/api/v2/...``); a status not in
        ``ok`` fails."""

        def send() -> tuple[int, Any]:
            return http(
                method,
                f"{self.base}{path}",
                body,
                {"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
                timeout=self.timeout if timeout is None else timeout,
            )

        status, data = send()
        if status == 401:  # the token expired during a long wait
            self.login()
            status, data = send()
        if status not in ok:
            raise self.failure(f"{method} {path}: HTTP {status}: {str(data)[:800]}")
        return data

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """The run's task instances (dicts with ``task_id``, ``state``, ``hostname``, ...)."""
        q = urllib.parse.quote(run_id, safe="")
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{q}/taskInstances?limit=100")[
            "task_instances"
        ]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The task's XCom ``key`` as the task returned it (a JSON string is parsed)."""
        q = urllib.parse.quote(run_id, safe="")
        data = self.call(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{q}/taskInstances/{task_id}/xcomEntries/{key}?deserialize=true",
        )
        value = data.get("value")
        return json.loads(value) if isinstance(value, str) else value
