"""Step 2, validation: schema and data-quality checks, row quarantine, YAML report.

Two levels of problems:

- *Data-set* problems make the data unusable as a whole (missing or unexpected columns, no rows,
  one class only, a column that is mostly null, unknown target labels, too few rows, too many
  invalid rows). They fail the run with :class:`ValidationFailed` after the report is written,
  so the operator has the full picture, not only the first problem.
- *Row* problems (a value that is not a number, a value outside the allowed set or range, a null
  where none is allowed, a row that is mostly null, a missing label) quarantine the row: it goes
  to ``invalid.csv`` with its split, original row index, column and reason. Rows are never
  dropped silently.

Clean rows are typed per the schema (int columns holding nulls become float64 so the imputer
can fill them; str columns are strings) and written as Parquet for the next steps.

``validate_frame`` is the pure core (also used by ``netsec validate FILE``); ``validate`` is the
pipeline step built on it.

Four modules: :mod:`.checks` (the pure core), :mod:`.outcome` (what it returns: Check and
FrameValidation), :mod:`.report` (the YAML report and ``invalid.csv``), :mod:`.step` (the
pipeline step over a run's partitions).
"""

from netsec_tasks.validate.checks import INVALID_COLUMNS, harmonise_dtypes, validate_frame
from netsec_tasks.validate.outcome import Check, FrameValidation
from netsec_tasks.validate.report import invalid_csv, render_report, write_invalid, write_report
from netsec_tasks.validate.step import validate

__all__ = [
    "INVALID_COLUMNS",
    "Check",
    "FrameValidation",
    "harmonise_dtypes",
    "invalid_csv",
    "render_report",
    "validate",
    "validate_frame",
    "write_invalid",
    "write_report",
]
