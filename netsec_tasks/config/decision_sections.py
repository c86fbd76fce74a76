"""The sections about judging a trained model: ``decision`` (the operating point), ``shadow``
(promoting or retiring a challenger) and ``evaluation`` (the hold-out file)."""

from __future__ import annotations

from pydantic import Field

from netsec_tasks.config.section import ConfidenceLevel, Section
from netsec_tasks.dataset_schema import Objective


class DecisionConfig(Section):
    """Overrides of the data set's operating point (``decision`` in its schema file,
    :class:`netsec_tasks.dataset_schema.DecisionSpec`); a null key keeps the data set's value. Resolved by
    :func:`netsec_tasks.operating_point.decision_policy`."""

    max_false_positive_rate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="The false-positive budget: the share of benign rows that may raise an alert "
        "(0.01 = 100 false alerts per 10,000 benign rows). Empty: the data set's (its schema file).",
    )
    expected_threat_rate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="The share of threats in deployed traffic, for precision and alert load.",
    )
    objective: Objective | None = Field(
        None, description="recall_at_budget or f1. Empty: the data set's (its schema file)."
    )
    min_recall: float | None = Field(
        None,
        ge=0,
        le=1,
        description="With decision.objective=recall_at_budget: the floor of the test recall at the "
        "operating point (registry.min_score is the floor for objective f1). Empty: the data set's.",
    )
    confidence: ConfidenceLevel = Field(
        0.95,
        description="Confidence of every interval of a rate at the operating point "
        "(Clopper-Pearson): the margin the threshold keeps from the budget, the promotion's "
        "budget check, monitoring's live false-positive rate.",
    )


class ShadowConfig(Section):
    """When the monitoring DAG decides a challenger (``registry.shadow``): it waits until the
    challenger has been scored in shadow for ``min_hours`` *and* on ``min_rows`` served rows, then
    promotes it only if its alert rate is within the budget and it is not worse than Production
    on analysts' verdicts at ``confidence`` (one-sided); otherwise it retires it."""

    min_hours: float = Field(24.0, ge=0)
    min_rows: int = Field(1000, ge=1)
    confidence: ConfidenceLevel = 0.95
    max_listed_disagreements: int = Field(
        50,
        ge=0,
        le=10_000,
        description="Rows where the two models disagree, listed in the report for analysts to label.",
    )


class EvaluationConfig(Section):
    holdout_path: str | None = Field(
        None,
        description="A labelled hold-out file (CSV/Parquet path or s3:// URI) that every newly "
        "registered version is evaluated on after training (netsec evaluate; reports beside the "
        "run and on the version in MLflow). Unset (null): off.",
    )
