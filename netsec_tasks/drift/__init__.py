"""Step 3, drift: has the data moved enough that the Production model may be stale?

- :mod:`~netsec_tasks.drift.stats`: the per-column tests and the data-set decision (pure).
- :mod:`~netsec_tasks.drift.report`: the YAML record and the self-contained HTML page.
- :mod:`~netsec_tasks.drift.step`: the pipeline step and ``netsec drift``, with their I/O.
"""

from netsec_tasks.drift.report import render_html, render_yaml
from netsec_tasks.drift.stats import (
    ColumnDrift,
    DriftResult,
    adjust_pvalues,
    chi_square_test,
    detect_drift,
    jensen_shannon,
)
from netsec_tasks.drift.step import check_drift, checked_rows, drift_between_files, load_reference

__all__ = [
    "ColumnDrift",
    "DriftResult",
    "adjust_pvalues",
    "check_drift",
    "checked_rows",
    "chi_square_test",
    "detect_drift",
    "drift_between_files",
    "jensen_shannon",
    "load_reference",
    "render_html",
    "render_yaml",
]
