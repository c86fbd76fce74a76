"""Analysts' verdicts on served predictions, and their way into the training data.

**Verdicts.** ``POST /feedback`` (serving) takes ``[{prediction_id, label, source?, note?}]``.
The label is in the data set's label vocabulary (:func:`label_vocabulary`): a target label the
schema names (``-1``/``1`` for the UCI phishing data; any attack name in the "everything but
``normal``" form), or ``"threat"``/``"benign"`` where the schema has exactly one such label. A
verdict store keeps every verdict as an event (prediction id, sequence number, label, time,
source, note): re-sending the verdict that stands changes nothing (idempotent); a different one
is appended with its time, and the latest is the one that counts (:meth:`current`). Stores, one
per registered model like the prediction log they sit beside: :class:`JsonlFeedbackStore`
(``<log dir>/<model>/feedback.jsonl``, :func:`verdict_file`; a file lock serialises writers) and
:class:`MongoFeedbackStore` (collection ``feedback`` beside ``predictions``, every event with
``model_name``, every query filtered on it; ``_id = <prediction id>#<seq>`` makes two racing
writers of the same change collide instead of both writing). A store never returns another
model's verdicts, so a verdict becomes a training row only for the model that made the
prediction.

**Training data** (:func:`feedback_to_training`, a task of the ``netsec_monitoring`` DAG). Each
verdict becomes a training row: the features as logged for that prediction, the analyst's label
as the target, and provenance fields (:data:`PROVENANCE_FIELDS`: ``_netsec_source=feedback``,
the prediction id, the verdict's time, the registered model and version that scored it). Readers of the source
drop the provenance fields like the other bookkeeping fields, so they never become features.

- MongoDB source: inserted into the source collection with ``_netsec_key = feedback:<prediction
  id>`` under push-data's unique index, so a re-run inserts nothing; the next training run reads
  them as new documents after its watermark.
- File source: the user's file is never edited. The rows go to ``<storage>/feedback/<model>/
  training_rows.parquet`` (:func:`feedback_rows_uri`; rewritten atomically, one row per
  prediction id), which the file source of that model's runs reads after ``source.path``
  (``source.include_feedback``, default true).

A prediction becomes a training row once, with the verdict standing at that time; a later change
of verdict is counted and listed (``changed_after_append``), not applied. A verdict whose
features are identical to a row of Production's training or test data with another label is
counted and listed (``conflicts``); ``monitoring.on_conflict`` says whether it is still appended
(``append``, the default: the analyst's verdict is the newer evidence) or held back (``hold``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from netsec_tasks.errors import DataError
from netsec_tasks.sinks import json_text

if TYPE_CHECKING:  # pragma: no cover
    from netsec_tasks.config import PipelineConfig
    from netsec_tasks.dataset_schema import DatasetSchema
    from netsec_tasks.records import FeedbackRecord
    from netsec_tasks.storage import Storage

log = logging.getLogger(__name__)

VERDICT_WORDS = {"threat": True, "benign": False}
SOURCE = "feedback"
KEY_PREFIX = "feedback:"
# Provenance of a training row that came from a verdict (dropped by every source reader).
SOURCE_FIELD = "_netsec_source"
PREDICTION_ID_FIELD = "_netsec_prediction_id"
FEEDBACK_AT_FIELD = "_netsec_feedback_at"
MODEL_VERSION_FIELD = "_netsec_model_version"
MODEL_NAME_FIELD = "_netsec_model_name"
PROVENANCE_FIELDS = (
    SOURCE_FIELD,
    PREDICTION_ID_FIELD,
    FEEDBACK_AT_FIELD,
    MODEL_VERSION_FIELD,
    MODEL_NAME_FIELD,
)
FILE_NAME = "feedback.jsonl"
MAX_EXAMPLES = 20
VERDICT_COLUMNS = ["prediction_id", "label", "is_threat", "source", "note", "at", "first_at", "changes"]


def utcnow() -> dt.datetime:
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
    from netsec_tasks.dataset_schema import THREAT_NAME, label_key

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
        return None, {**result, "status": "unchanged", "at": _iso(last["at"])}
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
    result.update(status="recorded" if last is None else "changed", at=_iso(now))
    if last is not None:
        result.update(previous_label=last["label"], previous_at=_iso(last["at"]))
    return event, result


def _iso(value: Any) -> str:
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
    from netsec_tasks.prediction_log import model_log_dir

    return model_log_dir(root, model_name) / FILE_NAME


class JsonlFeedbackStore:
    """Registered model ``model_name``'s verdict events as JSON lines in one file
    (:func:`verdict_file`); a lock file serialises concurrent writers (several serving workers
    on one machine). Events of another model (written there by a misconfigured writer) are
    never returned."""

    kind = "file"

    def __init__(self, path: str | os.PathLike, model_name: str):
        if not model_name:
            raise ValueError("a verdict store belongs to a registered model: model_name is empty")
        self.path = Path(str(path).removeprefix("file://"))
        self.model_name = model_name

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
                    event = {**event, "at": _iso(now)}
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
        if not model_name:
            raise ValueError("a verdict store belongs to a registered model: model_name is empty")
        self.collection = collection
        self.model_name = model_name
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


# --------------------------------------------------------------------------- training rows


def feedback_rows_uri(storage: Storage, model_name: str) -> str:
    """Where registered model ``model_name``'s verdict rows live for a file source:
    ``<storage>/feedback/<model>/training_rows.parquet`` (only that model's runs read them)."""
    from netsec_tasks.records import safe_name

    if not model_name:
        raise ValueError("verdict rows belong to a registered model: model_name is empty")
    return storage.uri("feedback", safe_name(model_name)[:120], "training_rows.parquet")


def training_rows(
    verdicts: pd.DataFrame, logged: pd.DataFrame, schema: DatasetSchema, model_name: str
) -> pd.DataFrame:
    """Training rows for the verdicts whose prediction registered model ``model_name`` logged
    (``logged``: prediction-log rows; rows another model logged are never used): the schema's
    features as logged, the verdict's label as the target, provenance fields."""
    if "model_name" in logged.columns:
        logged = logged[logged["model_name"] == model_name]
    joined = verdicts.merge(logged, on="prediction_id", how="inner", suffixes=("", "_logged"))
    out = pd.DataFrame(index=joined.index)
    for name, spec in schema.columns.items():
        col = joined[name] if name in joined.columns else pd.Series(np.nan, index=joined.index)
        if spec.dtype == "int":
            numbers = pd.to_numeric(col, errors="coerce")
            whole = numbers.dropna()
            col = numbers.astype("Int64") if (whole == np.round(whole)).all() else numbers
        out[name] = col
    target = schema.target
    labels = joined["label"]
    out[target.column] = labels.astype("Int64") if target.dtype == "int" else labels
    out[SOURCE_FIELD] = SOURCE
    out[PREDICTION_ID_FIELD] = joined["prediction_id"].astype(str)
    out[FEEDBACK_AT_FIELD] = joined["at"].map(_iso)
    out[MODEL_VERSION_FIELD] = (
        joined["model_version"].astype(str) if "model_version" in joined.columns else None
    )
    out[MODEL_NAME_FIELD] = model_name
    return out.reset_index(drop=True)


def find_conflicts(rows: pd.DataFrame, known: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """The rows of ``rows`` whose features equal a row of ``known`` (training data) that has a
    different label: prediction id, the verdict's label, the labels of the identical rows."""
    from netsec_tasks.dataset_schema import label_key
    from netsec_tasks.split import row_hashes

    cols = ["prediction_id", "label", "training_labels", "identical_rows"]
    target = schema.target.column
    features = [c for c in schema.features if c in known.columns]
    if rows.empty or known.empty or target not in known.columns or len(features) < len(schema.features):
        return pd.DataFrame(columns=cols)
    mine = row_hashes(rows, schema.features)
    theirs = pd.DataFrame(
        {"h": row_hashes(known, schema.features), "label": known[target].map(label_key).to_numpy()}
    )
    seen = theirs[theirs["h"].isin(set(mine.tolist()))].groupby("h")["label"].agg(lambda s: sorted(set(s)))
    counts = theirs["h"].value_counts()
    out = []
    for h, pid, label in zip(mine.tolist(), rows[PREDICTION_ID_FIELD], rows[target]):
        labels = seen.get(h)
        if labels is not None and any(lbl != label_key(label) for lbl in labels):
            out.append(
                {
                    "prediction_id": pid,
                    "label": label,
                    "training_labels": labels,
                    "identical_rows": int(counts[h]),
                }
            )
    return pd.DataFrame(out, columns=cols)


def _production_rows(
    cfg: PipelineConfig, storage: Storage, schema: DatasetSchema
) -> tuple[pd.DataFrame, str | None]:
    """Production's training and test splits, features and target only (what a verdict may
    contradict), and its version."""
    from netsec_tasks.registry import get_production

    prod = get_production(cfg)
    if prod is None:
        return pd.DataFrame(), None
    columns = schema.features + [schema.target.column]
    frames = []
    for key in ("netsec.train_uri", "netsec.test_uri"):
        uri = prod.tags.get(key)
        if uri and storage.exists(uri):
            frames.append(storage.read_frame(uri, columns=columns))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), prod.version


class _MongoRows:
    """The verdict rows in a MongoDB source collection (``_netsec_key = feedback:<id>``)."""

    def __init__(self, cfg: PipelineConfig, client, schema: DatasetSchema):
        from netsec_tasks.sources.mongo import ensure_indexes

        self.cfg, self.schema = cfg, schema
        mcfg = cfg.source.mongo
        self.collection = client[mcfg.database][mcfg.collection]
        ensure_indexes(self.collection, mcfg.watermark_field)

    def present(self, ids: list[str]) -> dict[str, Any]:
        """Stored target label by prediction id, for the ids already there."""
        from netsec_tasks.sources.mongo import KEY_FIELD

        keys = [KEY_PREFIX + pid for pid in ids]
        target = self.schema.target.column
        out: dict[str, Any] = {}
        for start in range(0, len(keys), 1000):
            for doc in self.collection.find(
                {KEY_FIELD: {"$in": keys[start : start + 1000]}},
                projection={KEY_FIELD: 1, target: 1, "_id": 0},
            ):
                out[doc[KEY_FIELD][len(KEY_PREFIX) :]] = doc.get(target)
        return out

    def append(self, rows: pd.DataFrame) -> int:
        """Insert ``rows`` (unordered; one racing or repeated insert is skipped by the key)."""
        from netsec_tasks.sources.mongo import (
            INGESTED_AT_FIELD,
            KEY_FIELD,
            LOAD_FIELD,
            frame_documents,
            insert_batch,
        )

        if rows.empty:
            return 0
        schema, mcfg = self.schema, self.cfg.source.mongo
        int_cols = {c for c, spec in schema.columns.items() if spec.dtype == "int"}
        if schema.target.dtype == "int":
            int_cols.add(schema.target.column)
        now = utcnow()
        docs = []
        for doc in frame_documents(rows, int_cols):
            doc.update(
                {KEY_FIELD: KEY_PREFIX + doc[PREDICTION_ID_FIELD], LOAD_FIELD: SOURCE, INGESTED_AT_FIELD: now}
            )
            if mcfg.watermark_field and mcfg.watermark_field not in doc:
                doc[mcfg.watermark_field] = now
            docs.append(doc)
        inserted = 0
        for start in range(0, len(docs), mcfg.batch_size):
            inserted += insert_batch(self.collection, docs[start : start + mcfg.batch_size])[0]
        return inserted


class _FileRows:
    """The verdict rows of a file source: ``<storage>/feedback/<model>/training_rows.parquet``."""

    def __init__(self, storage: Storage, schema: DatasetSchema, model_name: str):
        self.storage, self.schema = storage, schema
        self.uri = feedback_rows_uri(storage, model_name)
        self.frame = storage.read_frame(self.uri) if storage.exists(self.uri) else None

    def present(self, ids: list[str]) -> dict[str, Any]:
        if self.frame is None:
            return {}
        stored = dict(zip(self.frame[PREDICTION_ID_FIELD].astype(str), self.frame[self.schema.target.column]))
        return {pid: stored[pid] for pid in ids if pid in stored}

    def append(self, rows: pd.DataFrame) -> int:
        """Rewrite the file with ``rows`` added (atomically; a prediction id once)."""
        if self.frame is not None:
            rows = rows[~rows[PREDICTION_ID_FIELD].isin(set(self.frame[PREDICTION_ID_FIELD]))]
        if rows.empty:
            return 0
        frame = rows if self.frame is None else pd.concat([self.frame, rows], ignore_index=True)
        self.storage.write_frame(self.uri, frame.reset_index(drop=True))
        self.frame = frame
        return len(rows)


def feedback_to_training(cfg: PipelineConfig, *, store, log_reader, mongo_client=None) -> FeedbackRecord:
    """Append the standing verdicts that are not training rows yet to the training source.

    ``store``: the verdict store (:class:`JsonlFeedbackStore` / :class:`MongoFeedbackStore`);
    ``log_reader``: the prediction log (``netsec_tasks.prediction_log`` readers), for the
    features; both must be ``registry.model_name``'s (ValueError otherwise: one model's verdicts
    never become another's training rows). ``mongo_client``: for a MongoDB source (None:
    ``source.mongo.uri``). Verdicts whose id is not canonical (stored before ids were checked
    exactly) are counted, never used.
    Idempotent: a prediction id is appended once. Only the verdicts not yet appended are looked
    up in the log and checked against Production's data, so a run with nothing new reads
    neither.
    """
    from netsec_tasks.dataset_schema import label_key, load_schema
    from netsec_tasks.prediction_log import canonical_ids, rows_of
    from netsec_tasks.records import FeedbackRecord
    from netsec_tasks.storage import storage_for

    model = cfg.registry.model_name
    for what, part in (("verdict store", store), ("prediction log", log_reader)):
        if getattr(part, "model_name", None) != model:
            raise ValueError(
                f"the {what} {part.describe()} belongs to {getattr(part, 'model_name', None)!r}, "
                f"not to {model!r} (registry.model_name)"
            )
    schema = load_schema(cfg.schema_path)
    storage = storage_for(cfg)
    verdicts = store.current()
    good, malformed = canonical_ids(verdicts["prediction_id"])
    verdicts = verdicts[verdicts["prediction_id"].isin({pid for pid, _, _ in good})]
    destination = (
        f"mongo:{cfg.source.mongo.database}.{cfg.source.mongo.collection}"
        if cfg.source.kind == "mongo"
        else feedback_rows_uri(storage, model)
    )
    if verdicts.empty:
        return FeedbackRecord(
            verdicts=0,
            destination=destination,
            malformed_ids=len(malformed),
            reason="no verdicts yet"
            + (f" ({len(malformed)} with an id that is not canonical, not used)" if malformed else ""),
        )
    own = cfg.source.kind == "mongo" and mongo_client is None
    if own:
        from netsec_tasks.sources.mongo import connect

        mongo_client = connect(cfg.source.mongo.uri, cfg.source.mongo.server_selection_timeout_ms)
    try:
        target_rows = (
            _MongoRows(cfg, mongo_client, schema)
            if cfg.source.kind == "mongo"
            else _FileRows(storage, schema, model)
        )
        ids = verdicts["prediction_id"].astype(str).tolist()
        present = target_rows.present(ids)
        standing = dict(zip(ids, verdicts["label"]))
        changed = sorted(
            pid for pid, stored in present.items() if label_key(stored) != label_key(standing[pid])
        )
        pending = verdicts[~verdicts["prediction_id"].isin(set(present))]

        rows = training_rows(pending, pd.DataFrame(columns=["prediction_id"]), schema, model)
        conflicts = find_conflicts(rows, pd.DataFrame(), schema)
        prod_version, held, appended = None, set(), 0
        if not pending.empty:
            rids = {rid for pid, rid, _ in good if pid in set(pending["prediction_id"])}
            rows = training_rows(
                pending, rows_of(log_reader.find_requests(rids), pending["prediction_id"]), schema, model
            )
            if not rows.empty:
                known, prod_version = _production_rows(cfg, storage, schema)
                conflicts = find_conflicts(rows, known, schema)
            if cfg.monitoring.on_conflict == "hold":
                held = set(conflicts["prediction_id"])
            appended = target_rows.append(rows[~rows[PREDICTION_ID_FIELD].isin(held)])
    finally:
        if own:
            mongo_client.close()
    missing = sorted(set(pending["prediction_id"]) - set(rows[PREDICTION_ID_FIELD]))
    record = FeedbackRecord(
        verdicts=len(verdicts),
        destination=destination,
        with_features=len(rows),
        appended=appended,
        already_present=len(present),
        missing_predictions=len(missing),
        missing_examples=missing[:MAX_EXAMPLES],
        conflicts=len(conflicts),
        conflicts_held=len(held),
        conflict_examples=[
            {
                "prediction_id": r.prediction_id,
                "label": str(r.label),
                "training_labels": list(r.training_labels),
                "identical_rows": int(r.identical_rows),
            }
            for r in conflicts.head(MAX_EXAMPLES).itertuples(index=False)
        ],
        conflicts_checked_against=prod_version,
        changed_after_append=len(changed),
        changed_examples=changed[:MAX_EXAMPLES],
        malformed_ids=len(malformed),
        threat_verdicts=int(verdicts["is_threat"].sum()),
        reason=(
            f"{appended} verdict row(s) of {model} appended to {destination}, {len(present)} already "
            f"there, {len(missing)} without a prediction logged by {model}, {len(conflicts)} "
            f"contradicting identical training rows"
            + (f" ({len(held)} held back)" if held else "")
            + (f", {len(malformed)} with an id that is not canonical (not used)" if malformed else "")
        ),
    )
    log.info("feedback: %s", record.reason)
    return record
