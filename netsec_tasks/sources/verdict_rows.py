"""Training rows that came from analysts' verdicts, as the sources see them.

:func:`netsec_tasks.feedback.feedback_to_training` turns verdicts into training rows; the
sources read them back. What both sides must agree on lives here, below both (the sources never
import the feedback step):

- the provenance fields (:data:`PROVENANCE_FIELDS`: ``_netsec_source=feedback``, the prediction
  id, the verdict's time, the registered model and version that scored it), which every source
  reader drops like its other bookkeeping fields, so they never become features;
- a MongoDB source's key of such a row (``_netsec_key = feedback:<prediction id>``,
  :data:`KEY_PREFIX`);
- a file source's file of them (:func:`feedback_rows_uri`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsec_tasks.records import safe_name

if TYPE_CHECKING:  # pragma: no cover
    from netsec_tasks.storage import Storage

SOURCE = "feedback"  # the value of SOURCE_FIELD
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


def feedback_rows_uri(storage: Storage, model_name: str) -> str:
    """Where registered model ``model_name``'s verdict rows live for a file source:
    ``<storage>/feedback/<model>/training_rows.parquet`` (only that model's runs read them)."""
    if not model_name:
        raise ValueError("verdict rows belong to a registered model: model_name is empty")
    return storage.uri("feedback", safe_name(model_name)[:120], "training_rows.parquet")
