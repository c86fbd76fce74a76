"""Step 5, training: tune candidates by CV on the training split, evaluate the winner once.

Honesty rules this module keeps:

- Tuning sees the training split only, and the imputer never sees a CV fold's validation rows.
  On a split of at most ``training.search_max_rows`` rows each candidate is tuned as
  ``Pipeline([("preprocess", <unfitted preprocessor>), ("model", estimator)])``, so the imputer
  is fitted inside every CV fold on the fold's training rows. On a larger split the search runs
  on a bounded sample of it (below) and the imputer is fitted on training rows **outside** that
  sample: no row it learnt from is ever a CV row, so the folds are as honest as before, and the
  sample is imputed once instead of once per fit.
- With ``split.duplicate_aware`` the folds are ``StratifiedGroupKFold`` over a hash of the feature
  values: identical rows never sit on both sides of a fold (they would inflate CV scores).
- The winner is chosen by mean CV score; the test split is read for one evaluation of that winner.

Cost that stops growing where growth buys nothing: the search tunes on a bounded, grouped
(identical rows together) and stratified sample of the split (:mod:`netsec_tasks.sampling`,
``training.search_max_rows``); only the winner is refit on the whole split. Boosted candidates
stop early (histogram gradient boosting on its own 10% hold-out; XGBoost on rows held out from
both the search sample and the refit), and a random forest's refit draws as many rows per tree
as its trees had in the search (:attr:`CandidateSpec.refit_budget`). Progress, with an estimate
of the time left, is logged after every candidate.

The final model is ``Pipeline([("preprocess", <the transform step's fitted preprocessor>),
("model", <winner refit on the transformed training split>)])``. Everything is tracked in MLflow:
a parent run per pipeline run (reused when a task is retried), a nested run per candidate, and the
model logged with skops. Any failure ends the parent run FAILED without a logged model, so nothing
half-trained can be registered.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.candidates import get_candidate, prefixed, unprefixed
from netsec_tasks.catalog import RunCatalog
from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema, load_schema
from netsec_tasks.engine import duration
from netsec_tasks.errors import DataError, NetsecError
from netsec_tasks.fitting import fit_final, with_early_stopping
from netsec_tasks.operating_point import (
    DecisionPolicy,
    OperatingPoint,
    ThresholdChoice,
    choose_threshold,
    decision_policy,
    objective_scorer,
    with_threshold,
)
from netsec_tasks.outages import mlflow_errors, owner_id, quick_mlflow
from netsec_tasks.preprocessing import (
    build_preprocessor,
    compute_limits,
    feature_frame,
    fit_preprocessor,
    load_preprocessor,
    threat_target,
)
from netsec_tasks.processes import sigterm_raises, workers_exit_with_parent
from netsec_tasks.records import CandidateResult, RunContext, TrainRecord, TransformRecord, ValidationRecord
from netsec_tasks.sampling import EARLY_STOPPING_SALT, IMPUTER_SALT, SEARCH_SALT, bounded_sample
from netsec_tasks.split import lineage_hashes
from netsec_tasks.storage import scratch_dir
from netsec_tasks.threat_metrics import evaluate, save_plots
from netsec_tasks.tracking import (
    END_REASON_TAG,
    OWNER_TAG,
    PIPELINE_RUN_TAG,
    configure_mlflow,
    log_pipeline_model,
)

log = logging.getLogger("netsec.train")

ROLE_TAG = "netsec.role"
CANDIDATE_TAG = "netsec.candidate"
MODEL_FILE = "model.skops"

# The most rows held out for early stopping (a bounded, grouped, stratified sample, as the
# search's); the rounds without improvement: netsec_tasks.fitting.EARLY_STOPPING_ROUNDS.
EARLY_STOPPING_MAX_ROWS = 10_000


# ---------------------------------------------------------------------------------------------
# Data and cross-validation


class _Split:
    """A validated split: the raw frame (for MLflow), features and the 0/1 threat target.

    What the search needs of a training split (:func:`search_data`) is asked through
    :meth:`lineage`, :meth:`features` and :meth:`preprocessor_outside`, which
    :class:`netsec_tasks.stored_split.StoredSplit` also offers for a split left in storage."""

    def __init__(self, catalog: RunCatalog, uri: str, schema: DatasetSchema):
        self.uri = uri
        self.frame = catalog.load_frame(uri)
        self.X = feature_frame(self.frame, schema, uri)
        self.y = threat_target(self.frame, schema, uri)

    def lineage(self, schema: DatasetSchema) -> np.ndarray:
        return lineage_hashes(self.frame, schema)

    def features(self, mask: np.ndarray) -> pd.DataFrame:
        return self.X if mask.all() else self.X[mask]

    def preprocessor_outside(
        self, schema: DatasetSchema, sample: pd.DataFrame, donors: np.ndarray, outside: np.ndarray
    ):
        return fit_preprocessor(schema, self.X, imputer_rows=donors, rows=outside)

    def example(self, rows: int = 50) -> pd.DataFrame:
        return self.X.head(rows)


def row_groups(X: pd.DataFrame) -> np.ndarray:
    """One group id per distinct feature vector (identical rows share a group)."""
    return pd.util.hash_pandas_object(X, index=False).to_numpy()


@dataclass
class SearchData:
    """What the hyperparameter search fits on.

    ``preprocess`` is the unfitted preprocessor each CV fit clones (``X`` is then the raw feature
    frame), or None when ``X`` is already imputed by an imputer fitted outside the sample.
    ``eval_set``: (X, y) held out of the sample for early stopping, imputed like ``X``; None
    when there is no row to spare (the split fits in the sample). ``groups``: the CV groups
    (identical feature rows), None unless ``split.duplicate_aware``.
    """

    X: Any
    y: np.ndarray
    groups: np.ndarray | None
    cv: Any
    preprocess: Any | None
    eval_set: tuple[np.ndarray, np.ndarray] | None
    rows: int
    description: str
    # Masks over the training split: the sample (all rows when not sampled), the search imputer's
    # donors (None when the imputer is fitted inside each fold) and the early-stopping rows (held
    # out of the refit too; None when there are none).
    sample_rows: np.ndarray | None = None
    imputer_rows: np.ndarray | None = None
    early_stopping_rows: np.ndarray | None = None

    @property
    def sampled(self) -> bool:
        """True when the search ran on a sample (and on rows the imputer already filled)."""
        return self.preprocess is None


def search_data(cfg: PipelineConfig, schema: DatasetSchema, train: Any) -> SearchData:
    """The rows the search tunes on (see the module doc): the whole split when it has at most
    ``training.search_max_rows`` rows, else a bounded, grouped, stratified sample of it, imputed
    by a KNN imputer whose donors are training rows outside the sample. ``train``: a
    :class:`_Split`, or a :class:`~netsec_tasks.stored_split.StoredSplit` (only the sample, the
    donors and the early-stopping rows are read)."""
    t = cfg.training
    chosen, donors, held = search_masks(cfg, train.lineage(schema), train.y)
    if chosen.all():
        X = train.features(chosen)
        cv, groups = make_cv(cfg, X, train.y)
        return SearchData(
            X=X,
            y=train.y,
            groups=groups,
            cv=cv,
            preprocess=build_preprocessor(schema),
            eval_set=None,
            rows=len(train.y),
            sample_rows=chosen,
            description="the whole training split (the imputer is fitted inside each CV fold)",
        )
    sample = train.features(chosen)
    # Fitted on rows outside the sample only: the categorical parts on all of them, the KNN
    # imputer on its bounded donors. No CV row (training or validation) shaped it.
    preprocess = train.preprocessor_outside(schema, sample, donors, ~chosen)
    with compute_limits():
        X = preprocess.transform(sample)
        eval_set = (
            (preprocess.transform(train.features(held)), train.y[held])
            if held.any() and len(np.unique(train.y[held])) == 2
            else None
        )
    y = train.y[chosen]
    cv, groups = make_cv(cfg, sample, y)
    return SearchData(
        X=X,
        y=y,
        groups=groups,
        cv=cv,
        preprocess=None,
        eval_set=eval_set,
        rows=len(y),
        sample_rows=chosen,
        imputer_rows=donors,
        early_stopping_rows=held if eval_set is not None else None,
        description=(
            f"a sample of {len(y)} of the {len(train.y)} training rows "
            f"(training.search_max_rows={t.search_max_rows}; identical rows together, "
            f"stratified), imputed by a KNN imputer on {int(donors.sum())} rows outside it"
            + (f"; {int(held.sum())} other rows held out for early stopping" if eval_set is not None else "")
        ),
    )


def search_masks(
    cfg: PipelineConfig, hashes: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks over the training split (its rows' lineage hashes and 0/1 target): the search's
    bounded sample; the KNN imputer's donors outside it; rows outside both held out for early
    stopping. When the sample is the whole split, the other two select nothing."""
    t = cfg.training
    chosen = bounded_sample(hashes, y, t.search_max_rows, seed=t.seed, salt=SEARCH_SALT)
    donors = np.zeros_like(chosen)
    held = np.zeros_like(chosen)
    if chosen.all():
        return chosen, donors, held
    outside = ~chosen
    donors[outside] = bounded_sample(
        hashes[outside], y[outside], cfg.transform.imputer_max_rows, seed=t.seed, salt=IMPUTER_SALT
    )
    spare = outside & ~donors
    if spare.any():
        held[spare] = bounded_sample(
            hashes[spare],
            y[spare],
            min(EARLY_STOPPING_MAX_ROWS, int(chosen.sum()) // 4 or 1),
            seed=t.seed,
            salt=EARLY_STOPPING_SALT,
        )
    return chosen, donors, held


def make_cv(cfg: PipelineConfig, X: pd.DataFrame, y: np.ndarray) -> tuple[Any, np.ndarray | None]:
    """The CV splitter and its groups (None unless duplicate-aware)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    folds, seed = cfg.training.cv_folds, cfg.training.seed
    minority = int(min(np.bincount(y, minlength=2)))
    if minority < folds:
        raise DataError(
            f"the training split has only {minority} rows of its smaller class, fewer "
            f"than training.cv_folds={folds}; lower cv_folds or add data"
        )
    if cfg.split.duplicate_aware:
        return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed), row_groups(X)
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed), None


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


# ---------------------------------------------------------------------------------------------
# MLflow helpers


def _find_parent_run(client, experiment_id: str, pipeline_run_id: str):
    """The parent run of this pipeline run from an earlier attempt, if any (oldest first)."""
    quoted = pipeline_run_id.replace("'", "\\'")
    return _oldest_run(
        client, experiment_id, f"tags.`{PIPELINE_RUN_TAG}` = '{quoted}' and tags.`{ROLE_TAG}` = 'pipeline'"
    )


def _find_child_run(client, experiment_id: str, parent_id: str, candidate: str):
    return _oldest_run(
        client,
        experiment_id,
        f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{CANDIDATE_TAG}` = '{candidate}'",
    )


def _oldest_run(client, experiment_id: str, filter_string: str):
    """The oldest MLflow run of the experiment that ``filter_string`` matches, or None."""
    runs = client.search_runs(
        [experiment_id], filter_string=filter_string, order_by=["attributes.start_time ASC"], max_results=1
    )
    return runs[0] if runs else None


def _log_params(params: dict[str, Any]) -> None:
    """Log params; on a reused run a changed value goes to a tag (MLflow params are immutable)."""
    import mlflow

    run = mlflow.active_run()
    assert run is not None  # called inside the training run
    existing = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    fresh = {}
    for key, value in params.items():
        text = str(value)[:6000]
        if key not in existing:
            fresh[key] = text
        elif existing[key] != text:
            log.warning(
                "param %s changed on retry (%s -> %s); recorded as tag netsec.param.%s",
                key,
                existing[key],
                text,
                key,
            )
            mlflow.set_tag(f"netsec.param.{key}", text[:5000])
    if fresh:
        mlflow.log_params(fresh)


def _log_candidate_run(
    client, experiment_id: str, parent_id: str, result: CandidateResult, owner: str
) -> str:
    import mlflow

    previous = _find_child_run(client, experiment_id, parent_id, result.name)
    kwargs = {"run_id": previous.info.run_id} if previous else {"run_name": result.name}
    with mlflow.start_run(
        nested=True, tags={CANDIDATE_TAG: result.name, ROLE_TAG: "candidate", OWNER_TAG: owner}, **kwargs
    ) as child:
        _log_params(result.best_params)
        mlflow.log_metrics(
            {"cv_mean": result.cv_score, "cv_std": result.cv_std, "fit_seconds": result.fit_seconds}
        )
        return child.info.run_id


def _log_data(
    cfg: PipelineConfig, schema: DatasetSchema, validation: ValidationRecord, train: Any, test: Any
) -> None:
    """Both splits as MLflow dataset inputs that point at their copy in storage (the data itself
    is stored once, in storage; the registry's ``netsec.train_uri`` tag is the drift reference).
    A split not in memory (the Dask engine) is logged by its URI and digest alone."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.pandas_dataset import from_pandas

    target = schema.target.column
    columns = [*schema.features, target]
    splits = (
        ("train", "training", train, validation.train_uri, validation.dataset_digest[:32]),
        ("test", "testing", test, validation.test_uri, None),
    )
    for part, context, split, uri, digest in splits:
        with warnings.catch_warnings():
            # Schema-inference hints about int columns and source-type guessing: not actionable.
            warnings.simplefilter("ignore", category=UserWarning)
            # MLflow stores at most 36 characters of a dataset digest.
            name = f"{cfg.dataset}-{part}"
            dataset: Any
            if split.frame is None:
                dataset = MetaDataset(resolve_dataset_source(uri), name=name, digest=digest or uri[-32:])  # type: ignore[abstract]
            else:
                dataset = from_pandas(
                    split.frame[columns], source=uri, targets=target, name=name, digest=digest
                )
            mlflow.log_input(dataset, context=context)


# ---------------------------------------------------------------------------------------------
# The step


class _Progress:
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


def _tune_all(
    cfg: PipelineConfig, data: SearchData, policy: DecisionPolicy, on_result=None, engine: Any = None
) -> list[CandidateResult]:
    """Tune every candidate for ``policy``'s selection metric, in turn here (``n_jobs``
    processes each) or, with a Dask ``engine``, one candidate per worker task at a time."""
    t = cfg.training
    metric = selection_metric(cfg, policy)
    say = _Progress(t.progress)
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


def _train_and_evaluate(
    cfg: PipelineConfig,
    run: RunContext,
    schema: DatasetSchema,
    validation: ValidationRecord,
    transform: TransformRecord,
    on_result=None,
):
    from netsec_tasks.engine import engine_for

    start = time.perf_counter()
    catalog = RunCatalog.of(cfg, run)
    engine = engine_for(cfg)
    # With the Dask engine the splits stay in storage: the search reads its sample of the
    # training split, the refit and the test evaluation run on the workers (netsec_tasks.refit).
    scaled = engine.client is not None
    if scaled:
        from netsec_tasks.stored_split import StoredSplit

        train_split: Any = StoredSplit(
            cfg, engine, schema, validation.train_uri, what="train: index the training split"
        )
    else:
        train_split = _Split(catalog, validation.train_uri, schema)
    if len(np.unique(train_split.y)) < 2:
        raise DataError(
            f"the training split has only one class; both threat and benign rows are "
            f"needed (label mapping: {schema.target.mapping()})",
            source=validation.train_uri,
        )
    preprocessor = load_preprocessor(
        catalog.storage.read_bytes(transform.preprocessor_uri), transform.preprocessor_uri
    )
    data = search_data(cfg, schema, train_split)
    policy = decision_policy(cfg, schema)
    candidates = _tune_all(cfg, data, policy, on_result, engine)  # on the workers with Dask
    skipped: list[str] = []
    choices = candidates
    if scaled:
        from netsec_tasks.refit import eligible

        choices, skipped = eligible(cfg, candidates, train_split)
        for line in skipped:
            log.warning("%s", line)
    winner = max(choices, key=lambda c: c.cv_score)  # first listed wins a tie
    say = _Progress(cfg.training.progress)
    choice, oof = choose_operating_point(cfg, winner, data, policy)
    say("operating point of %s: %s (%s)", winner.name, choice.point.summary(), choice.basis)
    say("refitting %s on the %d training rows", winner.name, len(train_split.y))
    refit_start = time.perf_counter()
    # Rows per fit in the search: what a budgeted refit keeps per tree.
    search_rows = data.rows * (cfg.training.cv_folds - 1) // cfg.training.cv_folds if data.sampled else None
    refit_note = None
    if scaled:
        from netsec_tasks.refit import refit

        done = refit(
            cfg,
            engine,
            schema,
            train_split,
            winner,
            preprocessor,
            search_rows=search_rows,
            early_stopping_rows=data.early_stopping_rows,
        )
        model, refit_note = done.model, "; ".join([done.note, *skipped])
    else:
        model = fit_final(
            cfg,
            winner,
            preprocessor,
            train_split.X,
            train_split.y,
            search_rows=search_rows,
            early_stopping_rows=data.early_stopping_rows,
        )
    say("refit in %.1f s", time.perf_counter() - refit_start)
    training_seconds = time.perf_counter() - start

    # The one and only look at the test split: imputed once, then scored by the refit model and
    # decided at the operating point chosen above (with Dask: partition by partition on the
    # workers, decided here).
    if scaled:
        from netsec_tasks.refit import score_split
        from netsec_tasks.threat_metrics import evaluate_predictions

        test_split: Any = score_split(cfg, engine, schema, model, validation.test_uri, choice.threshold)
        y_pred, scores = test_split.y_pred, test_split.scores
        scored = evaluate_predictions(test_split.y, y_pred, scores)
        metrics, cm = scored["metrics"], scored["confusion_matrix"]
    else:
        test_split = _Split(catalog, validation.test_uri, schema)
        with compute_limits():
            test_features = model[:-1].transform(test_split.X)
            metrics, cm, y_pred, scores = evaluate(model[-1], test_features, test_split.y, choice.threshold)
    test_point = policy.point(test_split.y, scores, choice.threshold, decisions=y_pred)
    if policy.objective == "recall_at_budget":
        metrics["recall_at_budget"] = float(test_point.recall or 0.0)
    plot_dir = Path(tempfile.mkdtemp(prefix="netsec-plots-", dir=scratch_dir(cfg)))
    plot_files = save_plots(
        test_split.y,
        y_pred,
        scores,
        plot_dir,
        labels=schema.class_names,
        title=f"- {winner.name}",
        threshold=choice.threshold,
    )
    plots = [catalog.save_file("plots", path, Path(path).name) for path in plot_files]
    _Progress(cfg.training.progress)(
        "winner %s (cv %s %.4f); test at the operating point: %s; %s; trained in %.1f s",
        winner.name,
        selection_metric(cfg, policy),
        winner.cv_score,
        test_point.summary(),
        ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
        training_seconds,
    )
    from sklearn.metrics import brier_score_loss

    return _Trained(
        # The registered artifact: the Pipeline wrapped so that its own predict() applies the
        # threshold (FixedThresholdClassifier, no refit).
        model=with_threshold(model, choice.threshold),
        policy=policy,
        choice=choice,
        test_point=test_point,
        oof_brier=float(brier_score_loss(data.y, oof, pos_label=1)),
        train=train_split,
        test=test_split,
        candidates=candidates,
        winner=winner,
        metrics=metrics,
        cm=cm,
        plots=plots,
        plot_dir=plot_dir,
        training_seconds=training_seconds,
        search_rows=data.rows,
        refit=refit_note,
        engine=engine.name,
    )


@dataclass
class _Trained:
    """What tuning, refitting and the one test evaluation produced, before tracking."""

    model: Any  # the registered artifact: FixedThresholdClassifier(Pipeline, threshold)
    policy: DecisionPolicy
    choice: ThresholdChoice  # the threshold and its out-of-fold operating point
    test_point: OperatingPoint
    oof_brier: float  # of the out-of-fold P(threat) the threshold was chosen on
    train: Any  # _Split, or a StoredSplit (Dask engine)
    test: Any  # _Split, or a ScoredSplit (Dask engine)
    candidates: list[CandidateResult]
    winner: CandidateResult
    metrics: dict[str, float]
    cm: list[list[int]]
    plots: list[str]  # URIs in storage
    plot_dir: Path  # this task's local copies (logged to MLflow, then removed)
    training_seconds: float
    search_rows: int
    refit: str | None = None  # how the Dask engine refit the winner (None: in this process)
    engine: str = "local"

    def record(self, cfg: PipelineConfig, *, model_uri: str, run_id: str, experiment_id: str) -> TrainRecord:
        return TrainRecord(
            model_uri=model_uri,
            mlflow_run_id=run_id,
            experiment_id=experiment_id,
            winner=self.winner.name,
            metric=selection_metric(cfg, self.policy),
            cv_score=self.winner.cv_score,
            threshold=self.choice.threshold,
            threshold_basis=self.choice.basis,
            objective=self.policy.objective,
            max_false_positive_rate=self.policy.budget,
            expected_threat_rate=self.policy.expected_threat_rate,
            operating_point=self.test_point.to_dict(),
            oof_operating_point=self.choice.point.to_dict(),
            test_metrics=self.metrics,
            confusion_matrix=self.cm,
            candidates=self.candidates,
            plots=self.plots,
            train_rows=len(self.train.y),
            test_rows=len(self.test.y),
            training_seconds=round(self.training_seconds, 3),
            search_rows=self.search_rows,
            refit=self.refit,
        )


def train(
    cfg: PipelineConfig,
    run: RunContext,
    validation: ValidationRecord,
    transform: TransformRecord,
    *,
    tracking: bool = True,
) -> TrainRecord:
    """Tune every configured candidate, refit the best, evaluate it once, track it in MLflow.

    ``tracking=False`` skips MLflow (benchmarks): the record's model URI is then the local skops
    file and its run/experiment ids are empty.
    """
    record = train_model(cfg, run, validation, transform, tracking=tracking)[0]
    log.info("winner %s: %s", record.winner, record.test_metrics)
    return record


def train_model(
    cfg: PipelineConfig,
    run: RunContext,
    validation: ValidationRecord,
    transform: TransformRecord,
    *,
    tracking: bool = True,
):
    """:func:`train`, also returning the in-memory fitted pipeline: ``(record, model)``.

    With tracking, every MLflow call runs under the ``registry.*`` request budget and an
    unreachable store raises :class:`SourceUnavailable` (exit 3) naming it. Whatever ends the
    step early (an error, SIGTERM, Ctrl-C) ends its MLflow runs FAILED with one short attempt;
    when even that cannot reach the store, the next run's reconciliation ends them. joblib's
    worker processes exit with this process, even when it is SIGKILLed.
    """
    schema = load_schema(cfg.schema_path)
    with sigterm_raises(), workers_exit_with_parent():
        if not tracking:
            import skops.io

            out = _train_and_evaluate(cfg, run, schema, validation, transform)
            shutil.rmtree(out.plot_dir, ignore_errors=True)
            storage = RunCatalog.of(cfg, run).storage
            uri = storage.write_bytes(run.step_uri("train", MODEL_FILE), skops.io.dumps(out.model))
            return out.record(cfg, model_uri=uri, run_id="", experiment_id=""), out.model
        return _train_tracked(cfg, run, schema, validation, transform)


def _train_tracked(
    cfg: PipelineConfig,
    run: RunContext,
    schema: DatasetSchema,
    validation: ValidationRecord,
    transform: TransformRecord,
):
    import mlflow

    experiment_id = configure_mlflow(cfg)
    owner = owner_id()
    with mlflow_errors(cfg, f"start the MLflow run of pipeline run {run.run_id}"):
        client = mlflow.MlflowClient()
        previous = _find_parent_run(client, experiment_id, run.run_id)
        if mlflow.active_run() is not None:  # a run leaked from an earlier crash in this process
            _end_runs_quietly("FAILED", "a run left open in this process")
        kwargs = (
            {"run_id": previous.info.run_id}
            if previous
            else {"run_name": run.run_id, "experiment_id": experiment_id}
        )
        parent = mlflow.start_run(
            tags={
                PIPELINE_RUN_TAG: run.run_id,
                ROLE_TAG: "pipeline",
                OWNER_TAG: owner,
                "netsec.dataset_digest": validation.dataset_digest,
            },
            **kwargs,
        )
    parent_id = parent.info.run_id
    if previous:
        log.info("reusing MLflow parent run %s of pipeline run %s (retry)", parent_id, run.run_id)
    try:
        with mlflow_errors(cfg, f"track MLflow run {parent_id} of pipeline run {run.run_id}"):
            out = _train_and_evaluate(
                cfg,
                run,
                schema,
                validation,
                transform,
                on_result=lambda r: _log_candidate_run(client, experiment_id, parent_id, r, owner),
            )
            model_uri = _log_parent(cfg, schema, validation, out)
            shutil.rmtree(out.plot_dir, ignore_errors=True)
            mlflow.end_run(status="FINISHED")
    except BaseException as exc:
        # Ends nested runs still open too; no model was logged, so nothing can be registered.
        _end_runs_quietly("FAILED", _end_reason(exc))
        raise
    record = out.record(cfg, model_uri=model_uri, run_id=parent_id, experiment_id=experiment_id)
    return record, out.model


def _end_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _end_runs_quietly(status: str, reason: str) -> None:
    """End every active MLflow run with ``status`` and tag why; never raises, never waits long.

    A failure handler: the store may be the very thing that failed, so each call gets one short
    attempt (:func:`quick_mlflow`), the first unreachable answer stops the rest, and what could
    not be ended is left to the next run's reconciliation (it ends runs whose owner is gone).
    """
    import mlflow

    reachable = True
    while (active := mlflow.active_run()) is not None:
        run_id = active.info.run_id
        # Once the store proved unreachable, the remaining runs get a 1 s attempt each: ending
        # them only pops MLflow's local run stack, and the next run's reconciliation ends them.
        with quick_mlflow(3 if reachable else 1):
            try:
                if reachable:
                    mlflow.MlflowClient().set_tag(run_id, END_REASON_TAG, reason[:5000])
                mlflow.end_run(status=status)  # pops the run before its request: the loop advances
            except Exception as exc:
                if reachable:
                    log.warning(
                        "could not mark MLflow run %s %s (%s); the next run's reconciliation will end it",
                        run_id,
                        status,
                        _end_reason(exc)[:200],
                    )
                reachable = False


def _point_metrics(prefix: str, point: OperatingPoint) -> dict[str, float]:
    """An operating point's figures as MLflow metrics (``test_fpr``, ``test_fpr_high``,
    ``oof_recall_at_op``...; undefined figures left out)."""
    figures = {
        "threshold": point.threshold,
        "fpr": point.fpr,
        "fpr_low": point.fpr_low,
        "fpr_high": point.fpr_high,
        "recall_at_op": point.recall,
        "precision_at_expected_rate": point.precision_at_rate,
        "alerts_per_10k_benign": point.alerts_per_10k_benign,
    }
    return {f"{prefix}_{k}": float(v) for k, v in figures.items() if v is not None}


def _log_parent(
    cfg: PipelineConfig, schema: DatasetSchema, validation: ValidationRecord, out: _Trained
) -> str:
    """Params, metrics, data, plots and (last) the model into the active parent run."""
    import mlflow

    t = cfg.training
    winner = out.winner
    policy, oof, test = out.policy, out.choice.point, out.test_point
    _log_params(
        {
            "winner": winner.name,
            "metric": selection_metric(cfg, policy),
            "objective": policy.objective,
            "max_false_positive_rate": policy.budget,
            "expected_threat_rate": policy.expected_threat_rate,
            "confidence": policy.confidence,
            "threshold": out.choice.threshold,
            "threshold_basis": out.choice.basis,
            "cv_folds": t.cv_folds,
            "search": t.search,
            "n_iter": t.n_iter,
            "candidates": ",".join(t.candidates),
            "training_seed": t.seed,
            "split_seed": cfg.split.seed,
            "duplicate_aware": cfg.split.duplicate_aware,
            "train_rows": len(out.train.y),
            "test_rows": len(out.test.y),
            "search_rows": out.search_rows,
            "search_max_rows": t.search_max_rows,
            "imputer_max_rows": cfg.transform.imputer_max_rows,
            "engine": out.engine,
            **({"refit": out.refit} if out.refit else {}),
            "target": schema.target.column,
            "positive_label": schema.positive_label,
            "label_mapping": schema.target.mapping(),
            **{f"winner.{k}": v for k, v in winner.best_params.items()},
        }
    )
    mlflow.log_metrics(
        {
            **{f"test_{k}": v for k, v in out.metrics.items()},
            "cv_score": winner.cv_score,
            "cv_std": winner.cv_std,
            "training_seconds": out.training_seconds,
            **_point_metrics("oof", oof),
            **_point_metrics("test", test),
            "oof_brier": out.oof_brier,
        }
    )
    mlflow.log_dict(
        {
            "policy": dataclasses.asdict(policy),
            "threshold": out.choice.threshold,
            "basis": out.choice.basis,
            "out_of_fold": oof.to_dict(),
            "test": test.to_dict(),
        },
        "operating_point.json",
    )
    cm = out.cm
    mlflow.log_dict({"labels": ["benign", "threat"], "rows_truth_cols_pred": cm}, "confusion_matrix.json")
    _log_data(cfg, schema, validation, out.train, out.test)
    mlflow.log_artifacts(str(out.plot_dir), artifact_path="plots")
    # Logged last: a model in the run means everything before it succeeded.
    return log_pipeline_model(out.model, out.train.example(), name="model")
