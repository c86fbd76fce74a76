"""Reasons with every alert: per-row feature contributions per schema column.

- :mod:`netsec_tasks.explain.methods`: the exact method of each candidate estimator (XGBoost's
  ``pred_contribs``, ``shap.TreeExplainer``, exact linear contributions) and its unit;
- :mod:`netsec_tasks.explain.folding`: preprocessed columns (one-hot, imputed) back to the
  schema column they came from;
- :mod:`netsec_tasks.explain.explainer`: :class:`Explainer` (contributions, the K strongest
  reasons of a row) and the load-time additivity check (:func:`verified_explainer`);
- :mod:`netsec_tasks.explain.importance`: the reports' summaries (global importance, the reasons
  behind false positives, the change of mean contributions between two sets of rows).

**Unit.** Contributions are in the model's own margin: **log-odds** of P(threat) for XGBoost,
HistGradientBoosting, AdaBoost and logistic regression; **probability** (P(threat) points) for
random forests, extra trees and a decision tree. For every row, ``base value + sum of the
contributions of all columns = the margin``; a positive contribution pushes the row towards an
alert. Each door states the unit of the model it answers with (``reasons_unit``).
"""

from netsec_tasks.explain.explainer import (
    ADDITIVITY_TOL,
    Contributions,
    Explainer,
    Reason,
    plain_value,
    reasons_text,
    verified_explainer,
)
from netsec_tasks.explain.folding import Folding, NotExplainable, folding_for
from netsec_tasks.explain.importance import (
    REPORT_ROWS,
    Explained,
    contribution_shift,
    explain_sample,
    global_importance,
    top_reasons,
)
from netsec_tasks.explain.methods import LOG_ODDS, PROBABILITY, Method, method_for

__all__ = [
    "ADDITIVITY_TOL",
    "LOG_ODDS",
    "PROBABILITY",
    "REPORT_ROWS",
    "Contributions",
    "Explained",
    "Explainer",
    "Folding",
    "Method",
    "NotExplainable",
    "Reason",
    "contribution_shift",
    "explain_sample",
    "folding_for",
    "global_importance",
    "method_for",
    "plain_value",
    "reasons_text",
    "top_reasons",
    "verified_explainer",
]
