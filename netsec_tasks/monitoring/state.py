"""What the monitoring DAG keeps across runs, in storage (like ingest's watermark), one set per
registered model (two data sets monitored from one home never share a watermark or a trend):

- ``<storage>/state/monitoring-<model>-<log>.json``: the model's prediction-log watermark (what
  was read up to), written by the last successful run's commit task only, so a failed run reads
  the same rows again; and the last retraining request (version, time, reason), for the cooldown.
- ``<storage>/monitoring/<model>/history.jsonl``: one line of figures per run, for the report's
  trend (rewritten whole: a run's line replaces an earlier attempt's, at most ``keep`` lines stay).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict

from netsec_tasks.records import safe_name
from netsec_tasks.sinks import json_text
from netsec_tasks.state import read_json_model
from netsec_tasks.storage import Storage

log = logging.getLogger(__name__)


class LastTrigger(BaseModel):
    model_config = ConfigDict(extra="ignore")

    at: dt.datetime
    model_version: str | None
    reason: str
    run_id: str


class MonitoringState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model_name: str
    log: str
    watermark: dict[str, Any] = {}
    run_id: str | None = None
    committed_at: dt.datetime | None = None
    last_trigger: LastTrigger | None = None


def model_dir(storage: Storage, model_name: str, *parts: str) -> str:
    """``<storage>/monitoring/<model>/<parts>``: where a model's reports and trend live."""
    return storage.uri("monitoring", safe_name(model_name)[:120], *parts)


def run_dir(storage: Storage, model_name: str, run_id: str) -> str:
    """``<storage>/monitoring/<model>/runs/<run>``: where one monitoring run's reports go."""
    return model_dir(storage, model_name, "runs", safe_name(run_id))


def state_uri(storage: Storage, model_name: str, log_name: str) -> str:
    return storage.uri("state", f"monitoring-{safe_name(model_name)[:80]}-{safe_name(log_name)[:100]}.json")


def read_state(storage: Storage, model_name: str, log_name: str) -> MonitoringState | None:
    return read_json_model(
        storage,
        state_uri(storage, model_name, log_name),
        MonitoringState,
        what="monitoring state",
        remedy="delete it to read the whole prediction log again",
    )


def write_state(storage: Storage, state: MonitoringState) -> str:
    state = state.model_copy(update={"committed_at": dt.datetime.now(dt.UTC)})
    return storage.write_text(
        state_uri(storage, state.model_name, state.log), state.model_dump_json(indent=2)
    )


def history_uri(storage: Storage, model_name: str) -> str:
    return model_dir(storage, model_name, "history.jsonl")


def read_history(storage: Storage, model_name: str) -> list[dict[str, Any]]:
    uri = history_uri(storage, model_name)
    if not storage.exists(uri):
        return []
    out = []
    for line in storage.read_text(uri).splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                log.warning("%s: skipping a damaged history line", uri)
    return out


def append_history(
    storage: Storage, model_name: str, entry: dict[str, Any], keep: int
) -> list[dict[str, Any]]:
    """Model ``model_name``'s history with ``entry`` last (replacing an earlier line of the same
    run), trimmed."""
    history = [h for h in read_history(storage, model_name) if h.get("run_id") != entry["run_id"]]
    history = (history + [entry])[-keep:]
    storage.write_text(history_uri(storage, model_name), "".join(json_text(h) + "\n" for h in history))
    return history
