"""Verdicts into training data (:func:`feedback_to_training`, a task of the
``netsec_monitoring`` DAG and ``netsec monitor``): each standing verdict that is not a training
row yet becomes one (the features as logged, the analyst's label, provenance fields), appended
to the training source once; verdicts that contradict Production's training rows are counted
and listed (:func:`find_conflicts`). The package docstring (:mod:`netsec_tasks.feedback`) has the
whole story.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from netsec_tasks.feedback.verdicts import iso_utc, utcnow
from netsec_tasks.sources.verdict_rows import (
    FEEDBACK_AT_FIELD,
    KEY_PREFIX,
    MODEL_NAME_FIELD,
    MODEL_VERSION_FIELD,
    PREDICTION_ID_FIELD,
    SOURCE,
    SOURCE_FIELD,
    feedback_rows_uri,
)

if TYPE_CHECKING:  # pragma: no cover
    from netsec_tasks.config import PipelineConfig
    from netsec_tasks.dataset_schema import DatasetSchema
    from netsec_tasks.records import FeedbackRecord
    from netsec_tasks.storage import Storage

log = logging.getLogger("netsec_tasks.feedback")

MAX_EXAMPLES = 20


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
    out[FEEDBACK_AT_FIELD] = joined["at"].map(iso_utc)
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
