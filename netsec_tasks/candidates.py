"""Candidate estimators and their search spaces.

Every candidate is built with ``n_jobs=1``: parallelism lives at the search level (one fold fit
per core), because nested parallelism oversubscribes a small machine. Spaces are deliberately
compact around values that work for tabular threat data; the search budget (``training.n_iter``)
samples from them. Parameter names are those of the estimator itself; :func:`prefixed` adds the
pipeline step prefix used during the search.

The logistic regression is the only candidate that needs scaled inputs, so its estimator is
``Pipeline(StandardScaler, LogisticRegression)``; trees get no scaler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scipy.stats import loguniform, randint, uniform
from sklearn.base import BaseEstimator


@dataclass(frozen=True)
class CandidateSpec:
    name: str
    build: Callable[[int], BaseEstimator]  # seed -> unfitted estimator
    space: Callable[[], dict[str, Any]]  # parameter distributions for the estimator
    # (rows per fit in the search, rows of the refit) -> parameters for the refit of the winner
    # on the whole split, when the search ran on a sample: keeps a slow candidate's refit (time
    # and model size) at what the search measured.
    refit_budget: Callable[[int, int], dict[str, Any]] | None = None
    # Name of the fit parameter that takes an early-stopping eval set ([(X, y)]), if any; the
    # estimator then also gets ``early_stopping_rounds`` (XGBoost's API).
    eval_set_param: str | None = None


def _random_forest(seed: int) -> BaseEstimator:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=seed)


def _random_forest_refit(search_rows: int, rows: int) -> dict[str, Any]:
    # Each tree of the refit draws as many rows as the searched trees had (bootstrap): fully
    # grown trees on the whole split would multiply the refit's time and the model's size by
    # the split's growth, for a forest the search never measured.
    return {"max_samples": search_rows} if rows > search_rows else {}


def _random_forest_space() -> dict[str, Any]:
    return {
        # Fully grown trees win on these indicator features (measured on the UCI file); the
        # search varies what decorrelates the trees rather than how much they may overfit.
        "n_estimators": randint(60, 150),
        "max_features": ["sqrt", "log2", 0.3],
        "min_samples_leaf": [1, 1, 2],
        "criterion": ["gini", "entropy"],
        "class_weight": [None, "balanced_subsample"],
    }


def _decision_tree(seed: int) -> BaseEstimator:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=seed)


def _decision_tree_space() -> dict[str, Any]:
    return {
        "criterion": ["gini", "entropy", "log_loss"],
        "max_depth": [None, 8, 12, 16, 24],
        "min_samples_leaf": [1, 2, 4, 8],
        "ccp_alpha": [0.0, 0.0, 1e-4, 5e-4],
        "class_weight": [None, "balanced"],
    }


def _hist_gradient_boosting(seed: int) -> BaseEstimator:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # No n_jobs parameter: it uses OpenMP threads, which joblib's workers limit to their share.
    # Early stopping on a 10% hold-out of the (fold's) training rows: boosting stops once the
    # loss stalls, which is most of the tuning-time saving on small data.
    return HistGradientBoostingClassifier(
        random_state=seed, early_stopping=True, validation_fraction=0.1, n_iter_no_change=10
    )


def _hist_gradient_boosting_space() -> dict[str, Any]:
    return {
        "learning_rate": loguniform(0.05, 0.3),
        "max_iter": randint(100, 400),
        "max_leaf_nodes": [15, 31, 47],
        "min_samples_leaf": [5, 10, 20],
        "l2_regularization": loguniform(1e-4, 1.0),
    }


def _logistic_regression(seed: int) -> BaseEstimator:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=2000, random_state=seed)),
        ]
    )


def _logistic_regression_space() -> dict[str, Any]:
    return {
        "clf__C": loguniform(1e-2, 1e2),
        "clf__class_weight": [None, "balanced"],
    }


def _adaboost(seed: int) -> BaseEstimator:
    from sklearn.ensemble import AdaBoostClassifier
    from sklearn.tree import DecisionTreeClassifier

    return AdaBoostClassifier(estimator=DecisionTreeClassifier(max_depth=2), random_state=seed)


def _adaboost_space() -> dict[str, Any]:
    return {
        "n_estimators": randint(20, 80),
        "learning_rate": loguniform(0.2, 1.5),
        "estimator__max_depth": [1, 2, 3],
    }


def _xgboost(seed: int) -> BaseEstimator:
    from xgboost import XGBClassifier

    return XGBClassifier(tree_method="hist", n_jobs=1, random_state=seed, eval_metric="logloss", verbosity=0)


def _xgboost_space() -> dict[str, Any]:
    return {
        "n_estimators": randint(200, 600),
        "max_depth": randint(5, 11),
        "learning_rate": loguniform(0.03, 0.2),
        "subsample": uniform(0.7, 0.3),
        "colsample_bytree": uniform(0.5, 0.5),
        "min_child_weight": [1, 2, 4],
        "reg_lambda": loguniform(0.1, 10.0),
    }


CANDIDATES: dict[str, CandidateSpec] = {
    spec.name: spec
    for spec in (
        CandidateSpec(
            "random_forest", _random_forest, _random_forest_space, refit_budget=_random_forest_refit
        ),
        CandidateSpec("decision_tree", _decision_tree, _decision_tree_space),
        CandidateSpec("hist_gradient_boosting", _hist_gradient_boosting, _hist_gradient_boosting_space),
        CandidateSpec("logistic_regression", _logistic_regression, _logistic_regression_space),
        CandidateSpec("adaboost", _adaboost, _adaboost_space),
        CandidateSpec("xgboost", _xgboost, _xgboost_space, eval_set_param="eval_set"),
    )
}


def get_candidate(name: str) -> CandidateSpec:
    try:
        return CANDIDATES[name]
    except KeyError:
        raise KeyError(f"unknown candidate '{name}'; known: {sorted(CANDIDATES)}") from None


def prefixed(params: dict[str, Any], step: str = "model") -> dict[str, Any]:
    """Estimator parameters -> the names they have inside Pipeline([..., (step, estimator)])."""
    return {f"{step}__{k}": v for k, v in params.items()}


def unprefixed(params: dict[str, Any], step: str = "model") -> dict[str, Any]:
    head = f"{step}__"
    return {k[len(head) :] if k.startswith(head) else k: v for k, v in params.items()}


def single_threaded(estimator: BaseEstimator) -> BaseEstimator:
    """Set every explicit ``n_jobs`` inside the estimator to 1 (serving predicts one row at a time).

    ``None`` values are left alone: they already mean one job, and some estimators (logistic
    regression) deprecate setting the parameter at all.
    """
    params = estimator.get_params(deep=True)
    jobs = {
        k: 1
        for k, v in params.items()
        if (k == "n_jobs" or k.endswith("__n_jobs")) and v is not None and v != 1
    }
    return estimator.set_params(**jobs) if jobs else estimator
