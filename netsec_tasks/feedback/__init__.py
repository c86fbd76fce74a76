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

The package, one concern per module (the names other modules use are importable from
``netsec_tasks.feedback``; the rest stay in their module):

| module | what it holds |
|---|---|
| ``verdicts`` | the label vocabulary and the verdict stores: what serving uses on every ``POST /feedback`` |
| ``training`` | the step that makes training rows of the verdicts (:func:`feedback_to_training`) |
| :mod:`netsec_tasks.sources.verdict_rows` | the provenance fields and the file of verdict rows, which the sources read back |
"""

from __future__ import annotations

# The names other modules use; the rest stay in their module.
from netsec_tasks.feedback.training import feedback_to_training
from netsec_tasks.feedback.verdicts import (
    JsonlFeedbackStore,
    MongoFeedbackStore,
    feedback_label,
    label_vocabulary,
    verdict_file,
)
from netsec_tasks.sources.verdict_rows import PREDICTION_ID_FIELD, PROVENANCE_FIELDS, feedback_rows_uri

__all__ = [
    "PREDICTION_ID_FIELD",
    "PROVENANCE_FIELDS",
    "JsonlFeedbackStore",
    "MongoFeedbackStore",
    "feedback_label",
    "feedback_rows_uri",
    "feedback_to_training",
    "label_vocabulary",
    "verdict_file",
]
