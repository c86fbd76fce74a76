"""The sections about fitting models: ``training`` (candidates, search, sampling, engine) and
``transform`` (the imputer)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from netsec_tasks.config.section import Section

Candidate = Literal[
    "random_forest",
    "decision_tree",
    "hist_gradient_boosting",
    "logistic_regression",
    "adaboost",
    "xgboost",
]


class TrainingConfig(Section):
    candidates: list[Candidate] = Field(
        default_factory=lambda: list(get_args(Candidate)),
        description="The models tuned and compared by cross-validation; the best one is "
        "evaluated on the test split and registered.",
    )
    metric: Literal["f1", "precision", "recall", "roc_auc", "average_precision", "accuracy"] = Field(
        "f1",
        description="Selection metric, computed for the threat class: f1, precision, recall, "
        "roc_auc, average_precision or accuracy.",
    )
    cv_folds: int = Field(5, ge=2, le=20, description="Cross-validation folds of the search.")
    search: Literal["halving", "random"] = "halving"
    n_iter: int = Field(
        12,
        ge=1,
        le=500,
        description=(
            "Parameter settings tried per candidate model (random search), or the first-round "
            "settings of successive halving (training.search)."
        ),
    )
    n_jobs: int = Field(2, ge=-1)
    seed: int = 42
    progress: bool = True
    search_max_rows: int | None = Field(
        20_000,
        ge=100,
        description="Rows of the bounded, grouped, stratified sample of the training split the "
        "search tunes on; the winner is refit on the whole split. Unset (null): the whole split.",
    )
    engine: Literal["local", "dask"] = Field(
        "local",
        description="local: every step in the task's own process. dask: validate, drift and "
        "transform run partition by partition on Dask workers, and the winner is refit across "
        "them (xgboost.dask); see dask.scheduler.",
    )
    refit_max_rows: int | None = Field(
        1_000_000,
        ge=100,
        description="engine=dask: a winner that cannot train data-parallel (random forest, "
        "AdaBoost, decision tree, HistGradientBoosting, logistic regression) is refit on a bounded, "
        "grouped, stratified sample of the training split this big, on one worker. Unset (null): "
        "such a winner is skipped when the split is larger than one partition, and the best "
        "data-parallel candidate wins instead.",
    )


class TransformConfig(Section):
    imputer_max_rows: int | None = Field(
        2_000,
        ge=10,
        description="Training rows the KNN imputer keeps as its donors (a bounded sample), so the "
        "model's size and the cost of imputing a row stop growing with the data. Unset (null): "
        "every training row.",
    )
