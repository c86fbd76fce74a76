#!/usr/bin/env python
"""Drive the closed loop on a running stack, through its published ports only (issue 13).

    python scripts/loop_check.py --serving http://127.0.0.1:8000 --airflow http://127.0.0.1:8080 \\
        --user admin --password <AIRFLOW_ADMIN_PASSWORD> [--api-key KEY]

Callable too (``scripts/compose_test.py`` runs it as a step): ``run_loop(...)`` returns a summary
and raises :class:`LoopFailed` naming the step that failed. Needs only the standard library and
``netsec_tasks.sample`` (the repo's venv).

1. serving is ready; its Production version is noted;
2. shifted traffic (``make_sample(shift=0.8)``: the first 10 columns' frequencies reversed) is
   scored through ``POST /predict``, and analysts' verdicts (the rows' true labels) are sent to
   ``POST /feedback`` with the returned prediction ids (retried until every id is in the
   prediction log: a request served by another worker is known once that worker flushed);
3. ``netsec_monitoring`` is triggered through the Airflow REST API and succeeds; its
   ``request_retraining`` task succeeded (the asset event), with traffic drift as the reason;
4. ``netsec_training`` starts by itself: a run of type ``asset_triggered`` appears and succeeds;
   its outcome says ``trigger: monitoring`` and why, and its snapshot took the verdict rows
   (``feedback_to_training`` appended them; ``ingest`` read them);
5. when the run promoted a new version, serving swaps to it (``GET /model``).

The stack must serve the Production model already (a first training run) and run both DAGs
(compose: ``NETSEC_MONITORING__STORE=mongo``; locally the JSONL log is the default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stack_http
from stack_http import AirflowRest

REPO = Path(__file__).resolve().parent.parent
MONITORING, TRAINING = "netsec_monitoring", "netsec_training"


class LoopFailed(RuntimeError):
    """A step of the loop failed; the message says which and what was seen."""


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, Any]:
    """``stack_http.http`` asking for JSON, with the loop's longer timeout (seconds)."""
    return stack_http.http(method, url, body, {"Accept": "application/json", **(headers or {})}, timeout)


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise LoopFailed(f"{what}: not after {timeout:.0f} s (last: {str(last)[:300]})")


class Airflow(AirflowRest):
    """The Airflow 3 REST API as the loop uses it: a failed request raises LoopFailed."""

    def __init__(self, base: str, username: str, password: str):
        super().__init__(base, username, password, timeout=60)

    def failure(self, message: str) -> Exception:
        return LoopFailed(f"Airflow {message}")

    def runs(self, dag_id: str) -> list[dict]:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=50")["dag_runs"]

    def tasks(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {t["task_id"]: str(t.get("state")) for t in self.task_instances(dag_id, run_id)}

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, str]:
        q = urllib.parse.quote(run_id, safe="")

        def done():
            state = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{q}")["state"]
            return state if state in ("success", "failed") else None

        state = wait_until(f"{dag_id} run {run_id} to finish", done, timeout, 3)
        tasks = self.tasks(dag_id, run_id)
        if state != "success":
            raise LoopFailed(f"{dag_id} run {run_id} {state}: tasks {tasks}")
        return tasks


def run_loop(
    serving: str,
    airflow_url: str,
    username: str,
    password: str,
    *,
    api_key: str | None = None,
    rows: int = 1500,
    verdicts: int = 1500,
    shift: float = 0.8,
    seed: int = 4242,
    timeout: float = 1800,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the loop (module doc); returns what each step saw."""
    from netsec_tasks.sample import TARGET, make_sample

    serving = serving.rstrip("/")
    key = {"X-API-Key": api_key} if api_key else {}
    summary: dict[str, Any] = {}

    # 1. serving answers with a Production model.
    def served() -> dict | None:
        status, body = http("GET", f"{serving}/model")
        return body if status == 200 else None

    model = wait_until("serving ready with a Production model", served, 300)
    before = str(model["version"])
    summary["production_before"] = before
    say(f"1. serving answers with {model['name']} v{before}")

    # 2. shifted traffic, and the analysts' verdicts on it.
    traffic = make_sample(rows, seed=seed, shift=shift)
    records = [
        {k: int(v) for k, v in r.items()} for r in traffic.drop(columns=[TARGET]).to_dict(orient="records")
    ]
    ids: list[str] = []
    for start in range(0, rows, 500):
        status, body = http("POST", f"{serving}/predict", {"records": records[start : start + 500]}, key)
        if status != 200:
            raise LoopFailed(f"POST /predict: HTTP {status}: {str(body)[:300]}")
        ids += [p["prediction_id"] for p in body["predictions"]]
    labels = traffic[TARGET].tolist()
    stored = 0
    for start in range(0, min(verdicts, rows), 500):
        batch = [
            {"prediction_id": i, "label": int(y), "source": "loop_check"}
            for i, y in zip(ids[start : start + 500], labels[start : start + 500])
        ][: verdicts - start]

        def send(batch=batch):
            status, body = http("POST", f"{serving}/feedback", batch, key)
            if status == 404:  # another worker has not flushed its log yet
                return None
            if status != 200:
                raise LoopFailed(f"POST /feedback: HTTP {status}: {str(body)[:300]}")
            return body

        body = wait_until("POST /feedback to know every prediction id", send, 120)
        stored += body["recorded"] + body["changed"] + body["unchanged"]
    summary.update(rows_scored=len(ids), verdicts=stored)
    say(f"2. {len(ids)} shifted rows scored, {stored} verdicts stored")

    # 3. the monitoring DAG finds the drift and requests a retraining.
    af = Airflow(airflow_url, username, password)
    af.login()
    for dag_id in (MONITORING, TRAINING):
        wait_until(
            f"the DAG {dag_id} in the API",
            lambda d=dag_id: (
                http("GET", f"{af.base}/api/v2/dags/{d}", headers={"Authorization": f"Bearer {af.token}"})[0]
                == 200
            ),
            300,
            3,
        )
        if af.call("GET", f"/api/v2/dags/{dag_id}").get("is_paused"):
            af.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    seen_training = {r["dag_run_id"] for r in af.runs(TRAINING)}
    run = af.call("POST", f"/api/v2/dags/{MONITORING}/dagRuns", {"logical_date": None})
    tasks = af.wait_run(MONITORING, run["dag_run_id"], timeout)
    monitor = af.xcom(MONITORING, run["dag_run_id"], "monitor")
    feedback = af.xcom(MONITORING, run["dag_run_id"], "feedback_to_training")
    summary["monitoring"] = {
        "run_id": run["dag_run_id"],
        "tasks": tasks,
        "drift_share": monitor.get("drift_share"),
        "live_f1": (monitor.get("live") or {}).get("f1"),
        "trigger_reason": monitor.get("trigger_reason"),
        "verdict_rows_appended": feedback.get("appended"),
        "report": monitor.get("html_uri"),
    }
    if tasks.get("request_retraining") != "success" or not monitor.get("trigger"):
        raise LoopFailed(
            f"netsec_monitoring did not request a retraining: {monitor.get('trigger_reason')} (tasks {tasks})"
        )
    say(f"3. netsec_monitoring requested a retraining: {monitor['trigger_reason'][:160]}")

    # 4. netsec_training starts by itself, on the asset event.
    def asset_run():
        return next(
            (
                r
                for r in af.runs(TRAINING)
                if r["dag_run_id"] not in seen_training and r.get("run_type") == "asset_triggered"
            ),
            None,
        )

    started = wait_until("an asset-triggered netsec_training run", asset_run, 600, 3)
    tasks = af.wait_run(TRAINING, started["dag_run_id"], timeout)
    outcome = af.xcom(TRAINING, started["dag_run_id"], "record_outcome")
    ingest = af.xcom(TRAINING, started["dag_run_id"], "ingest")
    summary["training"] = {
        "run_id": started["dag_run_id"],
        "outcome": outcome.get("outcome"),
        "model_version": (outcome.get("candidate") or {}).get("version"),
        "trigger": outcome.get("trigger"),
        "trigger_reason": outcome.get("trigger_reason"),
        "snapshot_rows": ingest.get("rows"),
        "new_rows": ingest.get("new_rows"),
    }
    if outcome.get("trigger") != "monitoring" or not outcome.get("trigger_reason"):
        raise LoopFailed(f"the training run's outcome does not say monitoring started it: {outcome}")
    appended = feedback.get("appended") or 0
    if appended and (ingest.get("new_rows") or 0) < appended:
        raise LoopFailed(
            f"{appended} verdict rows were appended but the training run read "
            f"{ingest.get('new_rows')} new rows"
        )
    say(
        f"4. netsec_training {started['dag_run_id']} ran by itself: {outcome['outcome']} "
        f"(candidate v{(outcome.get('candidate') or {}).get('version')}); trigger {outcome['trigger']}"
    )

    # 5. serving swaps to a promoted version.
    if outcome.get("outcome") == "promoted":
        new = str(outcome["production_after"])

        def swapped() -> bool:
            status, body = http("GET", f"{serving}/model")
            return status == 200 and str(body.get("version")) == new

        wait_until(f"serving to swap to v{new}", swapped, 600, 3)
        summary["production_after"] = new
        say(f"5. serving swapped v{before} -> v{new}")
    else:
        summary["production_after"] = before
        say(f"5. no swap: the new version was not promoted ({outcome.get('reason')})")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serving", default="http://127.0.0.1:8000")
    p.add_argument("--airflow", default="http://127.0.0.1:8080")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", required=True)
    p.add_argument("--api-key")
    p.add_argument("--rows", type=int, default=1500)
    p.add_argument("--verdicts", type=int, default=1500)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    try:
        summary = run_loop(
            args.serving,
            args.airflow,
            args.user,
            args.password,
            api_key=args.api_key,
            rows=args.rows,
            verdicts=args.verdicts,
            timeout=args.timeout,
            say=(lambda s: None) if args.json else print,
        )
    except LoopFailed as exc:
        print(f"loop check failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=None if args.json else 2, default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
