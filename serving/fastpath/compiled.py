"""The compiled fast path: :func:`compile_pipeline` builds a :class:`FastPipeline` (preprocessing,
then the plan's predictor, large batches split across threads by :class:`RowSplitter`).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from netsec_tasks.operating_point import LEGACY_THRESHOLD
from serving.fastpath.base import ATOL, NotCompilable, Transform
from serving.fastpath.predictors import Plan, plan_for
from serving.fastpath.preprocess import Preprocess, clean_preprocess, clean_step

log = logging.getLogger("netsec.serving")


class RowSplitter:
    """A large batch split by rows across a thread pool, for predictors that release the GIL.

    Rows are independent, so splitting never changes a row's result. A batch is split only into
    as many parts as other concurrent batches leave threads free: when every core already runs a
    batch, splitting only adds switching and cache misses.
    """

    MIN_ROWS_PER_THREAD = 128

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], threads: int):
        self.fn = fn
        self.threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._active = 0  # batches being predicted right now

    def __call__(self, z: np.ndarray) -> np.ndarray:
        with self._lock:
            self._active += 1
            k = min(self.threads // self._active, z.shape[0] // self.MIN_ROWS_PER_THREAD)
            if k > 1 and self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="netsec-batch")
        try:
            if k <= 1:
                return self.fn(z)
            assert self._pool is not None  # created above under the lock when k > 1
            return np.vstack(list(self._pool.map(self.fn, np.array_split(z, k))))
        finally:
            with self._lock:
                self._active -= 1


class FastPipeline:
    """``predict_proba`` like the Pipeline's, on a float feature matrix (NaN allowed) or a
    DataFrame (models with non-numeric features)."""

    def __init__(
        self,
        preprocess: Preprocess,
        plan: Plan,
        estimator: Any,
        batch_threads: int = 1,
        threshold: float = LEGACY_THRESHOLD,
    ):
        self.preprocess = preprocess
        self.plan = plan
        self.estimator = estimator
        self.threshold = threshold  # the model's decision threshold on P(threat)
        self._large = RowSplitter(plan.large.fn, batch_threads) if plan.split_large else plan.large.fn

    @property
    def exact(self) -> bool:
        return self.plan.small.exact and self.plan.large.exact

    def with_threads(self, batch_threads: int) -> FastPipeline:
        """The same compiled predictors, large batches split across ``batch_threads`` threads
        (a challenger scores in shadow on one: it must not take cores from Production)."""
        out = copy.copy(self)
        out._large = (
            RowSplitter(self.plan.large.fn, batch_threads) if self.plan.split_large else self.plan.large.fn
        )
        return out

    # Rows with NaN go through the fitted imputer here (verified at load on rows with NaN), so
    # serving.inference hands them to the fast path rather than to the Pipeline.
    supports_nan = True

    def describe(self) -> str:
        p = self.plan
        model = (
            p.small.name
            if p.small is p.large
            else f"{p.small.name} up to {p.small_max_rows} rows, {p.large.name} above"
        )
        return f"{model}; preprocessing: {self.preprocess.kind}"

    def predict_proba(self, x: Any) -> np.ndarray:
        return self.from_preprocessed(self.preprocess(x))

    def from_preprocessed(self, z: np.ndarray) -> np.ndarray:
        """The estimator's probabilities for preprocessed rows ``z``."""
        if np.isnan(z).any():
            # The netsec imputers leave no NaN; if a step did, the estimator's own NaN handling
            # decides (compilers differ there), and it is exact by construction.
            return self.estimator.predict_proba(z)
        small = z.shape[0] <= self.plan.small_max_rows
        proba = self.plan.small.fn(z) if small else self._large(z)
        if not (self.plan.small if small else self.plan.large).exact and proba.shape[1] == 2:
            # Within ATOL of the threshold the decision could differ from the Pipeline's (a
            # forest's P(threat) is k / n_trees, exactly on a threshold often): the estimator
            # itself scores those rows, so decide() sees the Pipeline's own probability.
            near = np.flatnonzero(np.abs(proba[:, 1] - self.threshold) <= ATOL)
            if near.size:
                proba[near] = self.estimator.predict_proba(z[near])
        return proba


def compile_pipeline(
    pipeline: Any,
    features: list[str],
    *,
    batch_threads: int = 1,
    frames: bool = False,
    threshold: float = LEGACY_THRESHOLD,
) -> FastPipeline:
    """A fast path for a fitted ``Pipeline`` (or bare estimator, or a registered model: the
    Pipeline inside its threshold wrapper). Raises NotCompilable.

    ``frames``: requests arrive as DataFrames (non-numeric features), so every row goes through
    the fitted preprocessing steps. ``threshold``: the model's decision threshold (rows whose
    fast P(threat) is within :data:`ATOL` of it are scored by the estimator itself).
    """
    from sklearn.pipeline import Pipeline

    from netsec_tasks.operating_point import inner_pipeline

    # A registered model is the Pipeline inside a FixedThresholdClassifier, whose predict_proba
    # is the Pipeline's: the fast path reproduces the Pipeline; the threshold is applied after.
    pipeline = inner_pipeline(pipeline)
    if isinstance(pipeline, Pipeline) and len(pipeline.steps) > 1:
        steps, est = pipeline[:-1], pipeline.steps[-1][1]
        clean: Transform | None
        try:
            if frames:
                raise NotCompilable("DataFrame input")
            pre_fns = [
                clean_preprocess(s, features) if i == 0 else clean_step(s)
                for i, (_, s) in enumerate(steps.steps)
            ]

            def chained(x: np.ndarray) -> np.ndarray:
                for fn in pre_fns:
                    x = fn(x)
                return x

            clean = chained
        except NotCompilable as exc:
            log.debug("preprocessing goes through the fitted steps for every row: %s", exc)
            clean = None
        pre = Preprocess(steps, features, clean)
    else:
        est = pipeline.steps[-1][1] if isinstance(pipeline, Pipeline) else pipeline
        pre = Preprocess(_Identity(), features, lambda x: x)
    n_in = getattr(est, "n_features_in_", None)
    if n_in is None:
        raise NotCompilable(f"{type(est).__name__} without n_features_in_")
    return FastPipeline(pre, plan_for(est, int(n_in)), est, batch_threads, threshold)


class _Identity:
    def transform(self, x):
        return x
