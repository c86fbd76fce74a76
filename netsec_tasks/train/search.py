"""Tuning the candidates: each candidate's hyperparameter search by CV on the search data
(in turn here, or one candidate per Dask worker task), progress with the time left, and the
winner's operating point from out-of-fold predictions on the same folds.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from typing import Any

import numpy as np

from netsec_tasks.candidates import get_candidate, prefixed, unprefixed
from netsec_tasks.config import PipelineConfig
from netsec_tasks.engine import duration
from netsec_tasks.errors import NetsecError
from netsec_tasks.fitting import with_early_stopping
from netsec_tasks.operating_point import (
    DecisionPolicy,
    ThresholdChoice,
    choose_threshold,
    decision_policy,
    objective_scorer,
)
from netsec_tasks.preprocessing import compute_limits
from netsec_tasks.records import CandidateResult
from netsec_tasks.train.data import SearchData

log = logging.getLogger("netsec.train")


def _make_search(cfg: PipelineConfig, pipeline, space: dict[str, Any], cv, policy: DecisionPolicy):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers the class)
    from sklearn.model_selection import HalvingRandomSearchCV, RandomizedSearchCV

    t = cfg.training
    common = dict(
        # The objective (decision.objective): recall at the false-positive budget, per CV fold;
        # or training.metric (objective f1).
        scoring=objective_scorer(policy, t.metric),
        cv=cv,
        n_jobs=t.n_jobs,
        refit=False,
        random_state=t.seed,
        error_score=np.nan,
    )
    if t.search == "halving":
        # n_iter first-round candidates on a small subsample; the best third go on with 3x the rows.
        return HalvingRandomSearchCV(
            pipeline, space, n_candidates=t.n_iter, factor=3, min_resources="exhaust", **common
        )
    return RandomizedSearchCV(pipeline, space, n_iter=t.n_iter, **common)


def _search_pipeline(spec, estimator, data: SearchData, prefix: str = "model__"):
    """(Pipeline as the search fits it, fit params): the unfitted preprocessor first when ``data``
    is not imputed yet; early stopping on ``data.eval_set`` for a candidate that takes one."""
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    estimator, fit_params = with_early_stopping(spec, estimator, data.eval_set, prefix=prefix)
    steps = [("preprocess", clone(data.preprocess))] if data.preprocess is not None else []
    return Pipeline([*steps, ("model", estimator)]), fit_params


def selection_metric(cfg: PipelineConfig, policy: DecisionPolicy) -> str:
    """The name of what candidates are selected and promoted by: ``recall_at_budget``, or
    ``training.metric`` (objective f1)."""
    return "recall_at_budget" if policy.objective == "recall_at_budget" else cfg.training.metric


def tune_candidate(
    cfg: PipelineConfig, name: str, data: SearchData, policy: DecisionPolicy | None = None
) -> CandidateResult:
    """Search one candidate's space by CV on ``data``; best params and mean CV score (of the
    objective, ``policy``: the data set's decision policy, resolved when None)."""
    policy = policy or decision_policy(cfg)
    spec = get_candidate(name)
    pipeline, fit_params = _search_pipeline(spec, spec.build(cfg.training.seed), data)
    search = _make_search(cfg, pipeline, prefixed(spec.space()), data.cv, policy)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(), compute_limits():
            # Partial fit failures are counted below; sklearn's per-fit warnings are noise here.
            warnings.simplefilter("ignore", category=UserWarning)
            search.fit(data.X, data.y, groups=data.groups, **fit_params)
    except Exception as exc:
        raise NetsecError(
            f"training candidate '{name}' failed during cross-validation: {type(exc).__name__}: {exc}"
        ) from exc
    seconds = time.perf_counter() - start
    i = search.best_index_
    score = float(search.cv_results_["mean_test_score"][i])
    if not math.isfinite(score):
        raise NetsecError(
            f"training candidate '{name}' has no finite CV {selection_metric(cfg, policy)} score "
            "(its fits failed); check its search space in netsec_tasks/candidates.py"
        )
    return CandidateResult(
        name=name,
        cv_score=score,
        cv_std=float(search.cv_results_["std_test_score"][i]),
        best_params=_plain(unprefixed(search.best_params_)),
        fit_seconds=round(seconds, 3),
    )


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe parameter values (numpy scalars -> Python)."""
    out = {}
    for k, v in params.items():
        out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def choose_operating_point(
    cfg: PipelineConfig, winner: CandidateResult, data: SearchData, policy: DecisionPolicy
) -> tuple[ThresholdChoice, np.ndarray]:
    """The winner's decision threshold, from out-of-fold predictions on the search rows only.

    ``cross_val_predict`` fits the winner (its best parameters) once per fold of the search's own
    CV (the same folds and groups: identical rows stay on one side, and on a sampled search the
    imputer never saw a fold row) and keeps every row's P(threat) from the fold that left it out.
    :func:`netsec_tasks.operating_point.choose_threshold` picks the highest-recall threshold whose
    out-of-fold FPR is within the budget with its interval. The test split is not read.
    Returns (the choice, the out-of-fold scores).

    Why not ``TunedThresholdClassifierCV``: it maximizes the mean over folds of a score at each
    candidate threshold, whereas the rule here constrains one rate pooled over all folds (with its
    interval), and it refits the estimator on all rows itself, where our refit is bounded and
    early-stopped (:func:`netsec_tasks.fitting.fit_final`).
    """
    from sklearn.model_selection import cross_val_predict

    spec = get_candidate(winner.name)
    estimator = spec.build(cfg.training.seed).set_params(**winner.best_params)
    pipeline, fit_params = _search_pipeline(spec, estimator, data)
    with warnings.catch_warnings(), compute_limits():
        warnings.simplefilter("ignore", category=UserWarning)
        proba = cross_val_predict(
            pipeline,
            data.X,
            data.y,
            groups=data.groups,
            cv=data.cv,
            method="predict_proba",
            n_jobs=cfg.training.n_jobs,
            params=fit_params,
        )
    oof = np.asarray(proba)[:, 1]
    return choose_threshold(data.y, oof, policy), oof


class Progress:
    """A progress line logger: INFO with ``training.progress``, else DEBUG."""

    def __init__(self, enabled: bool):
        self.level = logging.INFO if enabled else logging.DEBUG

    def __call__(self, msg: str, *args: Any) -> None:
        log.log(self.level, msg, *args)


def tune_on_worker(
    cfg: PipelineConfig, name: str, data: SearchData | None = None, *, policy: DecisionPolicy
) -> CandidateResult:
    """:func:`tune_candidate` on a Dask worker: one process of one thread, so the search's own
    parallelism is off (``n_jobs=1``); the candidates run side by side on the workers instead.
    (Dispatching each CV fit to the workers through joblib's dask backend cost 2.4x the CPU
    seconds of the same fits in loky's processes: measured, see docs/scale.md.)"""
    assert data is not None
    return tune_candidate(cfg.with_overrides({"training.n_jobs": 1}), name, data, policy)


def tune_all(
    cfg: PipelineConfig, data: SearchData, policy: DecisionPolicy, on_result=None, engine: Any = None
) -> list[CandidateResult]:
    """Tune every candidate for ``policy``'s selection metric, in turn here (``n_jobs``
    processes each) or, with a Dask ``engine``, one candidate per worker task at a time."""
    t = cfg.training
    metric = selection_metric(cfg, policy)
    say = Progress(t.progress)
    groups = data.groups
    fold_kind = (
        f"StratifiedGroupKFold over {len(np.unique(groups))} distinct rows"
        if groups is not None
        else "StratifiedKFold"
    )
    on_workers = engine is not None and engine.client is not None
    say(
        "tuning %d candidates on %s: %s search, n_iter=%d, %d-fold %s, %s, metric=%s",
        len(t.candidates),
        data.description,
        t.search,
        t.n_iter,
        t.cv_folds,
        fold_kind,
        "one candidate per task on the Dask workers" if on_workers else f"n_jobs={t.n_jobs}",
        metric + (f" (FPR <= {policy.budget:g})" if policy.objective == "recall_at_budget" else ""),
    )
    results: list[CandidateResult] = []
    started = time.perf_counter()
    done = None
    if on_workers:
        done = engine.map(
            functools.partial(tune_on_worker, cfg, policy=policy),
            list(t.candidates),
            what="search",
            unit="candidates",
            shared={"data": data},
        )
    for i, name in enumerate(t.candidates, 1):
        result = done[i - 1] if done is not None else tune_candidate(cfg, name, data, policy)
        if on_result is not None:
            result = result.model_copy(update={"mlflow_run_id": on_result(result)})
        results.append(result)
        elapsed = time.perf_counter() - started
        left = len(t.candidates) - i
        # A rough estimate: the candidates so far took this long on average (the Dask engine
        # logged its own while the candidates ran side by side).
        eta = f", about {duration(elapsed / i * left)} left" if left and done is None else ""
        say(
            "[%d/%d] %-22s cv %s %.4f ± %.4f  %.1f s (search %s so far%s)",
            i,
            len(t.candidates),
            name,
            metric,
            result.cv_score,
            result.cv_std,
            result.fit_seconds,
            duration(elapsed),
            eta,
        )
    if t.n_jobs != 1 and data.sampled and done is None:
        # The search's worker processes idle from here on, holding ~250 MB each: stop them
        # before the refit of a split larger than the sample, the step's largest allocation
        # (joblib starts new ones when needed). Below the bound the refit is small, and a
        # process that trains again (bench_training) would pay ~4 CPU s per worker to restart.
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    return results
