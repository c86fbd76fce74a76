"""Monitoring: served traffic and analysts' verdicts, and the evidence to retrain on.

- :mod:`~netsec_tasks.monitoring.live`: live precision/recall/F1 from verdicts, with intervals,
  and the F1-floor rule (pure).
- :mod:`~netsec_tasks.monitoring.traffic`: drift of the logged traffic from Production's training
  data; volume, threat rate and scores against its test split.
- :mod:`~netsec_tasks.monitoring.state`: the log watermark, the last request, the run history.
- :mod:`~netsec_tasks.monitoring.report`: the YAML and the self-contained HTML report.
- :mod:`~netsec_tasks.monitoring.labelled`: the verdicts joined with the predictions they judge.
- :mod:`~netsec_tasks.monitoring.decision`: whether to request a retraining, and the contract
  violations finding.
- :mod:`~netsec_tasks.monitoring.publish`: the figures to MLflow and the model version's tags.
- :mod:`~netsec_tasks.monitoring.step`: the step (``monitor``), its inputs and ``commit``.

Verdicts themselves (the stores, and their way into the training data) are
:mod:`netsec_tasks.feedback`.
"""

from netsec_tasks.monitoring.decision import decide
from netsec_tasks.monitoring.live import f1_below_floor, fpr_over_budget, live_metrics
from netsec_tasks.monitoring.publish import served_tags
from netsec_tasks.monitoring.step import commit, monitor

__all__ = ["commit", "decide", "f1_below_floor", "fpr_over_budget", "live_metrics", "monitor", "served_tags"]
