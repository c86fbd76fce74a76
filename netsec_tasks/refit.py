"""The winner refit across Dask workers, and the test split scored partition by partition.

With ``training.engine: dask`` the training step never holds the training split in one
process (:mod:`netsec_tasks.train` keeps the search and the winner's selection as they are; this
module is what changes after it):

- **XGBoost** is refit data-parallel with ``xgboost.dask``: every worker loads its partitions
  of the training split, transforms them with the fitted preprocessor (float32), and the
  workers build one quantile ``DMatrix`` and train one booster together (XGBoost's collective
  over the Dask workers). The rows held out for early stopping (the search's, as in the local
  refit) are the eval set. The booster is then loaded into a plain ``xgboost.XGBClassifier`` with
  the winner's parameters, so the registered model is the same scikit-learn Pipeline as ever,
  saved with skops: serving loads it unchanged.
- **Every other candidate** (random forest, AdaBoost, decision tree, HistGradientBoosting,
  logistic regression: none trains data-parallel, and neither scikit-learn nor dask-ml offers a
  distributed fit of them) is refit on one worker, on a bounded, grouped, stratified sample of
  the split of at most ``training.refit_max_rows`` rows, collected one partition at a time. With
  ``training.refit_max_rows: null`` they are skipped instead when the split has more than one
  partition, and the best candidate that can be refit wins. Either way the training record and
  the run's outcome say so (``refit``).
- The **test split** is scored partition by partition on the workers (the model is sent once);
  only the labels, predictions and scores come back.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from netsec_tasks.errors import ConfigError
from netsec_tasks.partitions import read_partition
from netsec_tasks.sampling import bounded_sample
from netsec_tasks.storage import Partition, open_dataset

if TYPE_CHECKING:  # pragma: no cover
    from netsec_tasks.config import PipelineConfig
    from netsec_tasks.dataset_schema import DatasetSchema
    from netsec_tasks.engine import Engine
    from netsec_tasks.records import CandidateResult
    from netsec_tasks.stored_split import StoredSplit

log = logging.getLogger("netsec.train")

# Candidates that train one model across workers (xgboost.dask).
DATA_PARALLEL = frozenset({"xgboost"})
# Salt of the refit's bounded sample (independent of the search's and the imputer's).
REFIT_SALT = 0x2EF17
_LABEL = "__netsec_y__"


def can_refit(cfg: PipelineConfig, name: str, split: StoredSplit) -> str | None:
    """None when candidate ``name`` can be refit on ``split`` with the Dask engine, else why not."""
    if name in DATA_PARALLEL or cfg.training.refit_max_rows is not None or len(split.partitions) <= 1:
        return None
    return (
        f"{name} cannot train data-parallel and training.refit_max_rows is not set, so it is not "
        f"refit on the {split.rows} rows in {len(split.partitions)} partitions"
    )


def eligible(
    cfg: PipelineConfig, candidates: list[CandidateResult], split: StoredSplit
) -> tuple[list[CandidateResult], list[str]]:
    """(the candidates the winner is chosen from, why each other one was skipped)."""
    keep, skipped = [], []
    for c in candidates:
        why = can_refit(cfg, c.name, split)
        if why is None:
            keep.append(c)
        else:
            skipped.append(f"skipped {c.name} (cv {c.cv_score:.4f}): {why}")
    if not keep:
        raise ConfigError(
            "no candidate can be refit on the partitioned training split with training.engine=dask: "
            + "; ".join(skipped)
            + ". Add xgboost to training.candidates, or set training.refit_max_rows"
        )
    return keep, skipped


@dataclass
class Refit:
    model: Any  # Pipeline([("preprocess", ...), ("model", ...)])
    note: str  # how it was refit, for the record and the outcome


@dataclass(frozen=True)
class RefitJob:
    """The winner to refit and on what: ``split`` the training split in storage (one partition
    at a time), ``preprocessor`` fitted on the search sample, ``engine`` where it runs."""

    cfg: PipelineConfig
    engine: Engine
    schema: DatasetSchema
    split: StoredSplit
    winner: CandidateResult
    preprocessor: Any


def refit(job: RefitJob, *, search_rows: int | None, early_stopping_rows: np.ndarray | None) -> Refit:
    """The winner refit on the training split left in storage (see the module doc)."""
    if job.winner.name in DATA_PARALLEL:
        return _refit_xgboost(job, early_stopping_rows)
    return _refit_on_sample(job, search_rows)


# --------------------------------------------------------------------------- XGBoost, data-parallel


def transformed_partition(
    cfg: PipelineConfig, schema: DatasetSchema, preprocessor: Any, job: tuple[Partition, np.ndarray]
) -> pd.DataFrame:
    """One partition's rows at positions ``job[1]``, transformed (float32 features) with their
    0/1 target in column ``__netsec_y__`` (a worker builds its part of the DMatrix from these)."""
    from netsec_tasks.preprocessing import compute_limits, features_and_target
    from netsec_tasks.storage import storage_for

    part, positions = job
    frame = read_partition(storage_for(cfg), part)
    if len(positions) != len(frame):
        frame = frame.iloc[positions]
    X, y = features_and_target(frame, schema, part.uri)
    del frame
    with compute_limits():
        values = preprocessor.transform(X).astype(np.float32, copy=False)
    out = pd.DataFrame(values, columns=[f"f{i}" for i in range(values.shape[1])])
    out[_LABEL] = y.astype(np.int64)
    return out


def _refit_xgboost(job: RefitJob, early_stopping_rows: np.ndarray | None) -> Refit:
    import dask.dataframe as dd
    import xgboost
    from sklearn.pipeline import Pipeline
    from xgboost import dask as dxgb

    from netsec_tasks.candidates import get_candidate, single_threaded
    from netsec_tasks.engine import redacted
    from netsec_tasks.fitting import EARLY_STOPPING_ROUNDS

    cfg, engine, schema, split, winner, preprocessor = (
        job.cfg,
        job.engine,
        job.schema,
        job.split,
        job.winner,
        job.preprocessor,
    )

    assert engine.client is not None
    spec = get_candidate(winner.name)
    local = spec.build(cfg.training.seed).set_params(**winner.best_params)
    held = early_stopping_rows if early_stopping_rows is not None else np.zeros(split.rows, dtype=bool)
    fit_rows = ~held
    load = functools.partial(transformed_partition, redacted(cfg), schema, preprocessor)
    width = len(preprocessor.get_feature_names_out())
    meta = pd.DataFrame(
        {**{f"f{i}": pd.Series(dtype=np.float32) for i in range(width)}, _LABEL: pd.Series(dtype=np.int64)}
    )
    client = engine.client
    # Persisted once: the features and the label are columns of the same partitions (each
    # loaded and transformed on a worker once, and kept there while the DMatrix is built).
    train = client.persist(dd.from_map(load, split.jobs(fit_rows), meta=meta, enforce_metadata=False))
    features = [f"f{i}" for i in range(width)]
    # xgboost.dask.train on quantile DMatrices rather than DaskXGBClassifier.fit: the same
    # booster, without the classifier's pass over every label to find the classes (a shuffle).
    dtrain = dxgb.DaskQuantileDMatrix(client, train[features], train[_LABEL])
    evals = []
    if held.any():
        local.set_params(early_stopping_rounds=EARLY_STOPPING_ROUNDS)
        evaluation = client.persist(dd.from_map(load, split.jobs(held), meta=meta, enforce_metadata=False))
        evals = [
            (
                dxgb.DaskQuantileDMatrix(client, evaluation[features], evaluation[_LABEL], ref=dtrain),
                "held_out",
            )
        ]
    params = {k: v for k, v in local.get_xgb_params().items() if v is not None}
    params["objective"] = "binary:logistic"
    started = time.perf_counter()
    workers = engine.workers
    log.info(
        "refitting xgboost with xgboost.dask across %d workers on %d rows in %d partitions%s",
        workers,
        int(fit_rows.sum()),
        len(split.partitions),
        f" ({int(held.sum())} held out for early stopping)" if held.any() else "",
    )
    trained = dxgb.train(
        client,
        params,
        dtrain,
        num_boost_round=local.get_num_boosting_rounds(),
        evals=evals,
        early_stopping_rounds=EARLY_STOPPING_ROUNDS if evals else None,
        verbose_eval=False,
    )
    # The registered model is a plain XGBClassifier with the winner's parameters holding the
    # distributed booster: the Pipeline serving loads, with nothing of Dask in it.
    model = xgboost.XGBClassifier(**local.get_params())
    model.load_model(bytearray(trained["booster"].save_raw("ubj")))
    model = single_threaded(model)
    rounds = model.get_booster().num_boosted_rounds()
    note = (
        f"xgboost.dask across {workers} workers on {int(fit_rows.sum())} rows in "
        f"{len(split.partitions)} partitions, {rounds} rounds"
        + (
            f" (best {model.best_iteration + 1}, early stopping on {int(held.sum())} held-out rows)"
            if held.any()
            else ""
        )
        + f", {time.perf_counter() - started:.1f} s"
    )
    log.info("refit: %s", note)
    return Refit(Pipeline([("preprocess", preprocessor), ("model", model)]), note)


# --------------------------------------------------------------------------- a bounded sample, one worker


def fit_on_rows(
    cfg: PipelineConfig,
    schema: DatasetSchema,
    winner: CandidateResult,
    preprocessor: Any,
    search_rows: int | None,
    jobs: list[tuple[Partition, np.ndarray]],
) -> Any:
    """On one worker: the sampled rows, read one partition at a time, then the local refit
    (:func:`netsec_tasks.fitting.fit_final`) on them."""
    from netsec_tasks.fitting import fit_final
    from netsec_tasks.preprocessing import features_and_target
    from netsec_tasks.storage import storage_for

    storage = storage_for(cfg)
    pieces = []
    for part, positions in jobs:
        frame = read_partition(storage, part)
        pieces.append(frame.iloc[positions].reset_index(drop=True))
        del frame
    frame = pd.concat(pieces, ignore_index=True)
    del pieces
    X, y = features_and_target(frame, schema, "the refit sample")
    del frame
    return fit_final(cfg, winner, preprocessor, X, y, search_rows=search_rows)


def _refit_on_sample(job: RefitJob, search_rows: int | None) -> Refit:
    cfg, split, winner = job.cfg, job.split, job.winner
    t = cfg.training
    chosen = bounded_sample(split.row_hashes, split.y, t.refit_max_rows, seed=t.seed, salt=REFIT_SALT)
    rows = int(chosen.sum())
    started = time.perf_counter()
    model = job.engine.submit(
        fit_on_rows,
        cfg,
        job.schema,
        winner,
        job.preprocessor,
        search_rows,
        split.jobs(chosen),
        what=f"refit {winner.name} on {rows} rows",
    )
    whole = rows == split.rows
    note = (
        f"{winner.name} on one worker, on "
        + (
            f"all {rows} rows"
            if whole
            else f"a bounded sample of {rows} of the {split.rows} rows (training.refit_max_rows="
            f"{t.refit_max_rows}; identical rows together, stratified): it cannot train data-parallel"
        )
        + f", {time.perf_counter() - started:.1f} s"
    )
    log.info("refit: %s", note)
    return Refit(model, note)


# --------------------------------------------------------------------------- the test split


def predict_partition(
    cfg: PipelineConfig, schema: DatasetSchema, part: Partition, model: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 target, P(threat)) of one partition of a validated split, scored by the fitted
    ``Pipeline`` ``model``."""
    from netsec_tasks.preprocessing import compute_limits, features_and_target
    from netsec_tasks.storage import storage_for
    from netsec_tasks.threat_metrics import threat_scores

    X, y = features_and_target(read_partition(storage_for(cfg), part), schema, part.uri)
    with compute_limits():
        Xt = model[:-1].transform(X)
        del X
        return y, np.asarray(threat_scores(model[-1], Xt))


@dataclass
class ScoredSplit:
    """A split scored partition by partition: what the one test evaluation needs of it."""

    uri: str
    y: np.ndarray
    y_pred: np.ndarray  # decided at the operating point (operating_point.decide), int8
    scores: np.ndarray  # P(threat)
    frame: None = None  # never in memory as a whole


def score_split(
    cfg: PipelineConfig, engine: Engine, schema: DatasetSchema, model: Any, uri: str, threshold: float
) -> ScoredSplit:
    """Score every partition of the split ``uri`` with the fitted ``Pipeline`` ``model`` (sent to
    each worker once) and decide at ``threshold`` (the operating point) in this process, as
    :func:`netsec_tasks.threat_metrics.evaluate` does for a split in memory."""
    from netsec_tasks.operating_point import decide
    from netsec_tasks.storage import storage_for

    data = open_dataset(storage_for(cfg), uri)
    results = engine.map(
        functools.partial(predict_partition, cfg, schema),
        list(data.partitions),
        what="score the test split",
        shared={"model": model},
    )
    if not results:
        empty = np.zeros(0)
        return ScoredSplit(uri, empty.astype(int), empty.astype(np.int8), empty)
    y, scores = (np.concatenate(parts) for parts in zip(*results))
    return ScoredSplit(uri, y, decide(scores, threshold), scores)
