"""Analysts' verdicts and where they are kept: what ``POST /feedback`` uses on every request.

A verdict's label is in the data set's label vocabulary (:func:`label_vocabulary`,
:func:`feedback_label`). A verdict store keeps every verdict as an event, one store per
registered model (:class:`JsonlFeedbackStore` beside the JSONL prediction log,
:func:`verdict_file`; :class:`MongoFeedbackStore` in the verdict collection); :meth:`current`
gives the standing verdicts (:func:`current_verdicts`). The package docstring
(:mod:`netsec_tasks.feedback`) has the whole story.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from netsec_tasks.dataset_schema import THREAT_NAME, label_key
from netsec_tasks.errors import DataError
from netsec_tasks.prediction_log import model_log_dir, require_model_name
from netsec_tasks.sinks import json_text

if TYPE_CHECKING:  # pragma: no cover
    from netsec_tasks.dataset_schema import DatasetSchema

VERDICT_WORDS = {"threat": True, "benign": False}
FILE_NAME = "feedback.jsonl"
VERDICT_COLUMNS = ["prediction_id", "label", "is_threat", "source", "note", "at", "first_at", "changes"]


def utcnow() -> dt.datetime:
    """Now, timezone-aware UTC (the time of a verdict event)."""
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- label vocabulary


def label_vocabulary(schema: DatasetSchema) -> list[Any]:
    """What a verdict's label may be: ``threat``, ``benign``, or a label the schema names
    (in the "everything but" form, any label: every label but the benign ones is a threat)."""
    return [*VERDICT_WORDS, *schema.target.known_labels]


def feedback_label(schema: DatasetSchema, value: Any) -> tuple[Any, bool]:
    """(the target label to train with, is it the threat class) for a verdict's ``value``.

    ``threat``/``benign`` (any case) stand for the schema's threat label and its benign label
    when there is exactly one of each; a target label is taken as it is (labels compare by
    value: ``"-1"`` is ``-1``). Raises ValueError naming the value and the vocabulary.
    """
    target = schema.target
    allowed = ", ".join(json.dumps(v, default=str) for v in label_vocabulary(schema))
    if isinstance(value, str) and value.strip().lower() in VERDICT_WORDS:
        is_threat = VERDICT_WORDS[value.strip().lower()]
        label = target.threat_label if is_threat else target.benign_label
        if label == (THREAT_NAME if is_threat else "benign") and not any(
            label_key(v) == label_key(label) for v in target.known_labels
        ):
            kind = "threat" if is_threat else "benign"
            raise ValueError(
                f"label {value!r}: the '{schema.name}' data set has several {kind} "
                f"labels; send the row's own label ({allowed})"
            )
        return label, is_threat
    if isinstance(value, bool) and target.dtype != "bool" or value is None:
        raise ValueError(
            f"label {json.dumps(value)} is not in the label vocabulary of the "
            f"'{schema.name}' data set ({allowed})"
        )
    for label in target.known_labels:
        if label_key(label) == label_key(value):
            return label, bool(schema.is_threat(label))
    if target.everything_but and isinstance(value, (str, int)) and str(value).strip():
        # Any label but the benign ones is a threat in this form (a new attack type).
        label = str(value).strip() if target.dtype == "str" else value
        return label, True
    raise ValueError(
        f"label {json.dumps(value, default=str)} is not in the label vocabulary of "
        f"the '{schema.name}' data set ({allowed})"
    )


# --------------------------------------------------------------------------- verdict stores


def _event(
    model_name: str,
    prediction_id: str,
    seq: int,
    label: Any,
    is_threat: bool,
    source: str | None,
    note: str | None,
    at: dt.datetime,
) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "prediction_id": prediction_id,
        "seq": seq,
        "label": label,
        "verdict": "threat" if is_threat else "benign",
        "source": source,
        "note": note,
        "at": at,
    }


def _decide(
    model_name: str, last: Mapping[str, Any] | None, verdict: Mapping[str, Any], now: dt.datetime
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the event to append or None, the result to answer) for one verdict."""
    pid = verdict["prediction_id"]
    result: dict[str, Any] = {"prediction_id": pid, "label": verdict["label"]}
    if last is not None and last["label"] == verdict["label"]:
        return None, {**result, "status": "unchanged", "at": iso_utc(last["at"])}
    event = _event(
        model_name,
        pid,
        0 if last is None else int(last["seq"]) + 1,
        verdict["label"],
        bool(verdict["is_threat"]),
        verdict.get("source"),
        verdict.get("note"),
        now,
    )
    result.update(status="recorded" if last is None else "changed", at=iso_utc(now))
    if last is not None:
        result.update(previous_label=last["label"], previous_at=iso_utc(last["at"]))
    return event, result


def iso_utc(value: Any) -> str:
    """A time as ISO 8601 text in UTC to the millisecond (a naive datetime is taken as UTC);
    any other value as ``str``."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    return str(value)


def current_verdicts(events: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per prediction id: its standing (latest) verdict, when it was given, when the
    first one was, and how many times it changed. Columns :data:`VERDICT_COLUMNS`."""
    latest: dict[str, Mapping[str, Any]] = {}
    first: dict[str, Any] = {}
    for e in events:
        pid = e["prediction_id"]
        if pid not in latest or int(e["seq"]) >= int(latest[pid]["seq"]):
            latest[pid] = e
        if int(e["seq"]) == 0:
            first[pid] = e["at"]
    rows = [
        {
            "prediction_id": pid,
            "label": e["label"],
            "is_threat": e["verdict"] == "threat",
            "source": e.get("source"),
            "note": e.get("note"),
            "at": e["at"],
            "first_at": first.get(pid, e["at"]),
            "changes": int(e["seq"]),
        }
        for pid, e in latest.items()
    ]
    frame = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    for col in ("at", "first_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    return frame


def verdict_file(root: str | os.PathLike, model_name: str) -> Path:
    """Registered model ``model_name``'s verdict file: ``<root>/<model>/feedback.jsonl``, in the
    folder of its JSONL prediction log (:func:`netsec_tasks.prediction_log.model_log_dir`)."""
    return model_log_dir(root, model_name) / FILE_NAME


class JsonlFeedbackStore:
    """Registered model ``model_name``'s verdict events as JSON lines in one file
    (:func:`verdict_file`); a lock file serialises concurrent writers (several serving workers
    on one machine). Events of another model (written there by a misconfigured writer) are
    never returned."""

    kind = "file"

    def __init__(self, path: str | os.PathLike, model_name: str):
        self.path = Path(str(path).removeprefix("file://"))
        self.model_name = require_model_name(model_name, "a verdict store")

    def describe(self) -> str:
        return f"jsonl:{self.path}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def events(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if not line.endswith("\n"):  # a write cut short: never acknowledged
                    break
                try:
                    event = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"line {lineno} is not JSON ({exc})", source=str(self.path)) from None
                if event.get("model_name") == self.model_name:
                    out.append(event)
        return out

    def record(self, verdicts: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store ``verdicts`` (``prediction_id``, ``label``, ``is_threat``, ``source``,
        ``note``), in order; the result of each: recorded, changed or unchanged."""
        now = utcnow()
        with self._locked():
            last: dict[str, dict[str, Any]] = {}
            for e in self.events():
                last[e["prediction_id"]] = e
            new, results = [], []
            for v in verdicts:
                event, result = _decide(self.model_name, last.get(v["prediction_id"]), v, now)
                if event is not None:
                    event = {**event, "at": iso_utc(now)}
                    last[v["prediction_id"]] = event
                    new.append(event)
                results.append(result)
            if new:
                data = "".join(json_text(e) + "\n" for e in new)  # the JSON sink's encoder
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
        return results

    def current(self) -> pd.DataFrame:
        return current_verdicts(self.events())


class MongoFeedbackStore:
    """Registered model ``model_name``'s verdict events in the (shared) verdict collection, as
    documents ``{_id: "<prediction id>#<seq>", model_name, prediction_id, seq, label, verdict,
    source, note, at}``; every query filters on ``model_name`` (an index starts with it)."""

    kind = "mongo"

    def __init__(self, collection, model_name: str):
        self.collection = collection
        self.model_name = require_model_name(model_name, "a verdict store")
        self._indexed = False

    def describe(self) -> str:
        return f"mongo:{self.collection.full_name}[model_name={self.model_name}]"

    def _index(self) -> None:
        if not self._indexed:
            self.collection.create_index(
                [("model_name", 1), ("prediction_id", 1), ("seq", -1)],
                name="netsec_feedback_model_prediction",
            )
            self._indexed = True

    def events(self) -> list[dict[str, Any]]:
        return list(self.collection.find({"model_name": self.model_name}, projection={"_id": 0}))

    def record(self, verdicts: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        from pymongo.errors import DuplicateKeyError

        self._index()
        now = utcnow()
        results = []
        for v in verdicts:
            for _ in range(5):  # another writer took this sequence number: read and decide again
                last = self.collection.find_one(
                    {"model_name": self.model_name, "prediction_id": v["prediction_id"]},
                    sort=[("seq", -1)],
                    projection={"_id": 0},
                )
                event, result = _decide(self.model_name, last, v, now)
                if event is None:
                    break
                try:
                    self.collection.insert_one({"_id": f"{event['prediction_id']}#{event['seq']}", **event})
                    break
                except DuplicateKeyError:
                    continue
            results.append(result)
        return results

    def current(self) -> pd.DataFrame:
        return current_verdicts(self.events())
