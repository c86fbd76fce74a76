"""The input contract: what a valid row is, derived from the data set's schema, for every door.

One object, :class:`Contract`, built from ``config/schema/<dataset>.yaml`` and
``validation.max_row_null_share``, is what training validation (``validate_frame``), serving
(``/predict``, ``/predict/csv``, the page), ``netsec predict`` and drift over the prediction log
apply. The rules:

- **Columns.** Every feature column must be there. The target, the ``id_columns`` and the
  ``ignore`` columns are accepted and echoed back unchanged (:attr:`Contract.passthrough`). Any
  other column is refused, naming it, saying how to allow it, and hinting when it looks like a
  written-out row index.
- **Typing** (one rule per dtype for every door; the README's contract section has the table).
  ``int``/``float``: a number (CSV text such as ``" 1 "``, ``1.0``, ``-1e3``; a JSON number);
  ``int`` also whole. A boolean is never a number (CSV ``TRUE``, JSON ``false``). ``bool``:
  ``true``/``false`` (any case in CSV) or the numbers 1/0. ``str``: any text (a JSON number or
  boolean is taken as its text). The machine's types bound every number on top of the schema's
  ``min``/``max`` (:data:`MACHINE_BOUNDS`): an ``int`` fits int64 (storage, MongoDB's 8-byte
  integers), a ``float`` fits float32 (tree models, XGBoost and the ONNX fast path compute in
  float32), and nothing is infinite. A cell that cannot be typed is a problem of kind
  ``uncoercible``. Under ``strict_types`` (JSON) a number or boolean must also arrive with its
  JSON type: ``"1"`` for a number is refused, as text cannot tell a client's bug from a value.
- **Nulls.** ``None``, NaN, an empty or blank cell and the usual null words (``NA``, ``null``...)
  are null. A nullable column's null is kept (NaN) for the model's own imputer and counted per
  row (:attr:`RowCheck.null_cells`). A null in a non-nullable column, a row with more than
  ``max_row_null_share`` of its features null, and a row whose features are all blank are
  problems.
- **Domains.** A value outside ``allowed`` (for text columns: a category the schema does not
  list), below ``min`` or above ``max`` is a problem of kind ``domain``.

The row checks after typing (domains, nulls, the row null share) are a pandera
``DataFrameSchema`` generated from the schema (:attr:`Contract.pandera_schema`); typing text
cells is ours, because its messages ("not an integer", "not a boolean") are what a user needs.

Problems never raise inside the contract: :meth:`Contract.check_rows` returns them, one line per
(row, column) with the value, the reason and what is allowed, and each door decides: training
quarantines the rows, JSON answers 422, CSV and the CLI refuse by default or flag the rows.

Outputs are the same at every door (:data:`OUTPUT_COLUMNS`): the echoed input columns, then
``predicted_label``, ``is_threat``, ``threat_probability``, ``imputed_cells``, ``status``,
``reason``, ``model_version``, ``prediction_id`` (the id ``POST /feedback`` takes; empty where the
prediction is not logged: ``netsec predict``, invalid rows). CSV outputs go through
:func:`netsec_tasks.sinks.csv_chunks`, which neutralises cells a spreadsheet would run as a
formula.

The package, one concern per module (the names other modules use are importable from
``netsec_tasks.contract``; the rest stay in their module):

| module | what it holds |
|---|---|
| ``rules`` | :class:`Contract`: the rules applied to columns, rows and labels; a record's JSON Schema |
| ``cells`` | typing one column's cells (:func:`coerce`, :func:`null_mask`, :data:`MACHINE_BOUNDS`) |
| ``problems`` | problem lines, :class:`ContractError`, :class:`RowCheck` (the outcome of checking rows) |
| ``labels`` | :class:`LabelCheck` (the target column typed and mapped to the threat class) |
| ``names`` | hints about column names (near matches, a written-out row index) |
| ``output`` | :func:`scored_frame` and :data:`OUTPUT_COLUMNS` (the scored output of every door) |
"""

from __future__ import annotations

# The names other modules use; the rest stay in their module.
from netsec_tasks.contract.cells import FLOAT32_MAX, null_mask
from netsec_tasks.contract.labels import UNLISTED_HINT, LabelCheck
from netsec_tasks.contract.names import looks_like_index
from netsec_tasks.contract.output import OUTPUT_COLUMNS, scored_frame
from netsec_tasks.contract.problems import ROW_SCOPE, ContractError, RowCheck, RowValidity, listed, show
from netsec_tasks.contract.rules import Contract

__all__ = [
    "FLOAT32_MAX",
    "OUTPUT_COLUMNS",
    "ROW_SCOPE",
    "UNLISTED_HINT",
    "Contract",
    "ContractError",
    "LabelCheck",
    "RowCheck",
    "RowValidity",
    "listed",
    "looks_like_index",
    "null_mask",
    "scored_frame",
    "show",
]
