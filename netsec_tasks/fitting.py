"""Fitting the winner: the served model's Pipeline (the fitted preprocessor + the winning
candidate refit on the transformed training split), with early stopping for candidates that take
an eval set. Called by training (:mod:`netsec_tasks.train`) and by the Dask engine's bounded
refit on a worker (:mod:`netsec_tasks.refit`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.candidates import get_candidate, single_threaded
from netsec_tasks.config import PipelineConfig
from netsec_tasks.preprocessing import compute_limits
from netsec_tasks.records import CandidateResult

# Early stopping of candidates that take an eval set (XGBoost): rounds without improvement.
EARLY_STOPPING_ROUNDS = 20


def with_early_stopping(spec, estimator, eval_set, prefix: str = "") -> tuple[Any, dict[str, Any]]:
    """(estimator, fit params): early stopping on ``eval_set`` for a candidate that takes one."""
    if eval_set is None or spec.eval_set_param is None:
        return estimator, {}
    estimator = estimator.set_params(early_stopping_rounds=EARLY_STOPPING_ROUNDS)
    return estimator, {f"{prefix}{spec.eval_set_param}": [eval_set], f"{prefix}verbose": False}


def fit_final(
    cfg: PipelineConfig,
    winner: CandidateResult,
    preprocessor,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    search_rows: int | None = None,
    early_stopping_rows: np.ndarray | None = None,
):
    """The served model: fitted preprocessor + winner refit on the transformed training split.

    ``search_rows``: rows the search fitted on, for the candidate's refit budget;
    ``early_stopping_rows``: mask of rows held out of the refit for early stopping (candidates
    that take an eval set; the others are fitted on every row).
    """
    from sklearn.pipeline import Pipeline

    spec = get_candidate(winner.name)
    estimator = spec.build(cfg.training.seed).set_params(**winner.best_params)
    if spec.refit_budget is not None and search_rows:
        estimator.set_params(**spec.refit_budget(search_rows, len(y)))
    estimator = single_threaded(estimator)
    held = early_stopping_rows if spec.eval_set_param is not None else None
    with compute_limits():
        Xt = preprocessor.transform(X)
        if held is not None and held.any():
            fit_rows, eval_set = Xt[~held], (Xt[held], y[held])
            del Xt  # one copy of the transformed split at a time
            estimator, fit_params = with_early_stopping(spec, estimator, eval_set)
            estimator.fit(fit_rows, y[~held], **fit_params)
        else:
            estimator.fit(Xt, y)
    return Pipeline([("preprocess", preprocessor), ("model", estimator)])
