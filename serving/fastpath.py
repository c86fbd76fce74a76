"""The fast path: the promoted Pipeline's own preprocessing, then the estimator through a fast
predictor from its library or a maintained compiler, verified against the Pipeline at load time.

Why: a one-row ``Pipeline.predict_proba`` costs 2-16 ms (300-tree forest ~15 ms, XGBoost ~4 ms,
HistGradientBoosting ~4 ms, AdaBoost ~10 ms), almost all of it per-call overhead (the
ColumnTransformer's pandas bookkeeping, the imputer's checks, per-tree input validation), not
arithmetic.

**Preprocessing** is never re-implemented. The netsec ``preprocess`` step is a ColumnTransformer
of imputers (KNNImputer on numeric columns, SimpleImputer + OneHotEncoder on categorical ones):

- a row without NaN passes a numeric imputer unchanged (the imputer only fills gaps), so its
  numeric block is the identity (minus columns the imputer drops because they were empty in
  training); any other fitted transformer in a block (a scaler...) is called itself;
- a row with NaN, and every row of a model with non-numeric features (a DataFrame input), goes
  through the fitted ``preprocess`` step itself: the real KNNImputer fills its gaps. Imputation of
  a row does not depend on the other rows of the batch, so rows are split by "has NaN".

**Estimators** (the ``netsec_tasks.candidates``). Measured in process on the UCI file, bench
sizes (300 trees...), as "one row; per row in a 1000-row batch"; the machine was shared (+-30%):

- RandomForest, ExtraTrees, DecisionTree, AdaBoost: onnxruntime on the skl2onnx conversion,
  float32. Forest: 13 us; 25-45 us/row (Pipeline 15.7 ms; 47 us/row. The former hand-written
  walker: 190 us; 30-40 us/row with its threaded batch path, so it no longer earned its place
  and is gone). AdaBoost: 240 us; 5 us/row (Pipeline 10.6 ms; 15 us/row).
- XGBClassifier: onnxruntime on the onnxmltools conversion, float32, up to 32 rows (10 us CPU
  for one row: ``Booster.inplace_predict`` costs ~240 us even for one row, treelite GTIL ~56 us),
  ``inplace_predict`` above (exact, 3.4 us/row; Pipeline 4.3 ms; 11 us/row).
- HistGradientBoosting: treelite GTIL up to 128 rows (55 us; GTIL 27 us/row), above them
  scikit-learn's own predictor on one OpenMP thread, split over our threads (exact; 19 us/row.
  Pipeline 4.4 ms; 15 us/row on idle cores but up to 800 us/row when its per-tree OpenMP
  regions compete with other work: see :func:`plan_for`).
- LogisticRegression (with its StandardScaler): onnxruntime, float64: 10 us; 0.1 us/row.
- anything else: the estimator's own ``predict_proba`` (exact; skips the ColumnTransformer).

Large batches of the onnxruntime, XGBoost and HistGradientBoosting predictors are split by rows
across ``batch_threads`` threads (:class:`RowSplitter`; all release the GIL).

**Exactness.** Preprocessing, ``inplace_predict`` and the estimator's own ``predict_proba`` are
*exact*: bit-identical probabilities. onnxruntime and treelite are *within* :data:`ATOL`
(``|p_fast - p_pipeline| <= 1e-5`` on P(threat); measured 1e-6 or less), because they sum leaf
values in float32 in another order (onnxruntime) or apply the sigmoid with another libm call
(treelite on HistGradientBoosting). The decision is always the model's: a row whose fast
P(threat) is within ATOL of the model's threshold is re-scored by the estimator itself (on the
same, exact, preprocessed row), so :func:`netsec_tasks.operating_point.decide` sees the
Pipeline's own probability where it matters. ONNX stores split
thresholds in float32 while scikit-learn compares float32 features with float64 thresholds, so
before conversion each threshold is lowered to the largest float32 not above it
(:func:`_float32_thresholds`): routing is then identical for every float32 input, not just for
the rows we happen to test.

Nothing is trusted blindly: :func:`verify` runs the fast path and the Pipeline on real rows (the
model's own test split plus copies with cells set to NaN) through both the small-batch and the
large-batch predictor, checks every row's decision against the registered model's own
``predict`` (its threshold), and :func:`fast_path_for` keeps the fast path only when it agrees.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from netsec_tasks.operating_point import LEGACY_THRESHOLD

log = logging.getLogger("netsec.serving")

# |P(threat) fast - P(threat) Pipeline| allowed for predictors that are not bit-identical.
ATOL = 1e-5
Transform = Callable[[np.ndarray], np.ndarray]


class NotCompilable(Exception):
    """The pipeline contains a step the fast path does not reproduce."""


# --- preprocessing ------------------------------------------------------------------------------


def _clean_step(step: Any) -> Transform:
    """One fitted transformer, for rows *without* NaN -> a function on the float matrix.

    Imputers are the identity there (they only fill gaps); any other transformer is called itself.
    """
    from sklearn.impute import KNNImputer, SimpleImputer
    from sklearn.pipeline import Pipeline

    if step == "passthrough" or step is None:
        return lambda x: x
    if isinstance(step, Pipeline):
        parts = [_clean_step(s) for _, s in step.steps]

        def chain(x: np.ndarray) -> np.ndarray:
            for part in parts:
                x = part(x)
            return x

        return chain
    if isinstance(step, KNNImputer):
        if step.add_indicator:
            raise NotCompilable("KNNImputer(add_indicator=True)")
        # Without missing values KNNImputer only drops the columns that were empty in training.
        if getattr(step, "keep_empty_features", False):
            return lambda x: x
        return _column_subset(np.flatnonzero(step._valid_mask), step._valid_mask.size)
    if isinstance(step, SimpleImputer):
        if step.add_indicator:
            raise NotCompilable("SimpleImputer(add_indicator=True)")
        if getattr(step, "keep_empty_features", False):
            return lambda x: x
        import pandas as pd

        stats = np.asarray(step.statistics_)  # strings for most_frequent on text columns
        return _column_subset(np.flatnonzero(~pd.isna(stats)), stats.size)
    if hasattr(step, "feature_names_in_"):
        # Fitted on a DataFrame: calling it on a bare matrix would warn on every request.
        raise NotCompilable(f"{type(step).__name__} fitted on named columns")
    if not hasattr(step, "transform"):
        raise NotCompilable(type(step).__name__)
    return step.transform


def _column_subset(keep: np.ndarray, width: int) -> Transform:
    if keep.size == width:
        return lambda x: x
    return lambda x: x[:, keep]


def _clean_preprocess(pre: Any, features: list[str]) -> Transform:
    """The fitted ``preprocess`` step, for float rows without NaN."""
    from sklearn.compose import ColumnTransformer

    if not isinstance(pre, ColumnTransformer):
        return _clean_step(pre)
    if getattr(pre, "sparse_output_", False):
        raise NotCompilable("sparse ColumnTransformer output")
    position = {name: i for i, name in enumerate(features)}
    blocks: list[tuple[np.ndarray, Transform]] = []
    for _name, trans, cols in pre.transformers_:
        if trans == "drop":
            continue
        idx = _column_indices(cols, position, len(features))
        if idx.size == 0:
            continue
        blocks.append((idx, _clean_step(trans)))
    if len(blocks) == 1 and np.array_equal(blocks[0][0], np.arange(len(features))):
        # One block over every column in order (the netsec numeric preprocessor): no column
        # gather, which cost more than the rest of a one-row preprocessing.
        return blocks[0][1]

    def transform(x: np.ndarray) -> np.ndarray:
        parts = [fn(x[:, idx]) for idx, fn in blocks]
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    return transform


def _column_indices(cols: Any, position: dict[str, int], width: int) -> np.ndarray:
    if isinstance(cols, slice):
        return np.arange(width)[cols]
    cols = list(np.atleast_1d(cols))
    if cols and isinstance(cols[0], (bool, np.bool_)):
        return np.flatnonzero(cols)
    if cols and isinstance(cols[0], str):
        try:
            return np.array([position[c] for c in cols], dtype=np.intp)
        except KeyError as exc:
            raise NotCompilable(f"column {exc} is not a model feature") from None
    return np.asarray(cols, dtype=np.intp)


class Preprocess:
    """The Pipeline's steps before the estimator, on a float matrix or a DataFrame.

    ``clean`` (rows without NaN) is None when a step is not known to be the identity on them;
    then every row goes through the fitted steps themselves.
    """

    def __init__(self, steps: Any, features: list[str], clean: Transform | None):
        self.steps = steps  # the fitted Pipeline slice before the estimator
        self.features = list(features)
        self.clean = clean

    @property
    def kind(self) -> str:
        return "identity on rows without NaN, fitted steps otherwise" if self.clean else "fitted steps"

    def fitted(self, x: Any) -> np.ndarray:
        import pandas as pd

        frame = x if isinstance(x, pd.DataFrame) else pd.DataFrame(x, columns=self.features)
        return np.asarray(self.steps.transform(frame))

    def __call__(self, x: Any) -> np.ndarray:
        if self.clean is None or not isinstance(x, np.ndarray):
            return self.fitted(x)
        missing = np.isnan(x).any(axis=1)
        if not missing.any():
            return self.clean(x)
        if missing.all():
            return self.fitted(x)
        clean, filled = self.clean(x[~missing]), self.fitted(x[missing])
        z = np.empty((len(x), clean.shape[1]), dtype=np.result_type(clean, filled))
        z[~missing] = clean
        z[missing] = filled
        return z


# --- estimator predictors -----------------------------------------------------------------------


@dataclass(frozen=True)
class Predictor:
    """``fn(z)`` -> (rows, classes) probabilities in the estimator's class order."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    exact: bool


def _final_estimator(est: Any) -> Any:
    from sklearn.pipeline import Pipeline

    from netsec_tasks.operating_point import inner_pipeline

    est = inner_pipeline(est)  # a registered model: the Pipeline inside its threshold wrapper
    while isinstance(est, Pipeline):
        est = est.steps[-1][1]
    return est


def estimator_name(pipeline: Any) -> str:
    """The class name of the estimator at the end of (nested) Pipelines, e.g. ``XGBClassifier``."""
    return type(_final_estimator(pipeline)).__name__


def _sklearn(est: Any) -> Predictor:
    return Predictor("scikit-learn predict_proba", est.predict_proba, exact=True)


def _xgboost(est: Any) -> Predictor:
    """What ``XGBClassifier.predict_proba`` does for a binary model, minus the sklearn wrapper:
    the same ``inplace_predict`` call, with the same iteration range and missing value."""
    if getattr(est, "n_classes_", 2) != 2:
        raise NotCompilable("multi-class XGBClassifier")
    booster = est.get_booster()
    iteration_range = est._get_iteration_range(None) if hasattr(est, "_get_iteration_range") else (0, 0)
    missing = est.missing

    def proba(z: np.ndarray) -> np.ndarray:
        p = booster.inplace_predict(
            z, iteration_range=iteration_range, missing=missing, validate_features=False
        )
        return np.vstack((1.0 - p, p)).T  # as xgboost's _cls_predict_proba (float32)

    return Predictor("xgboost inplace_predict", proba, exact=True)


def _gtil(model: Any, dtype: type) -> Callable[[np.ndarray], np.ndarray]:
    import treelite.gtil

    def proba(z: np.ndarray) -> np.ndarray:
        p = treelite.gtil.predict(model, np.ascontiguousarray(z, dtype=dtype), nthread=1)
        p = p.reshape(len(z))
        return np.stack((1.0 - p, p), axis=1)

    return proba


def _treelite_hgb(est: Any) -> Predictor:
    import treelite

    if getattr(est, "n_trees_per_iteration_", 1) != 1:
        raise NotCompilable("multi-class HistGradientBoostingClassifier")
    # HGB compares float64 features with float64 thresholds; so does GTIL on float64 input.
    return Predictor("treelite GTIL", _gtil(treelite.sklearn.import_model(est), np.float64), exact=False)


def _hgb_one_thread(est: Any) -> Predictor:
    """``HistGradientBoostingClassifier.predict_proba`` (``_loss.predict_proba(_raw_predict(X))``)
    on one OpenMP thread. The predictor loops over rows without the GIL, and a row's sum does
    not depend on the thread count, so the result is identical."""
    if not (hasattr(est, "_raw_predict") and hasattr(est, "_loss")):
        raise NotCompilable("HistGradientBoostingClassifier without _raw_predict")

    def proba(z: np.ndarray) -> np.ndarray:
        return est._loss.predict_proba(est._raw_predict(z, n_threads=1))

    return Predictor("scikit-learn predict_proba (1 OpenMP thread)", proba, exact=True)


def _float32_thresholds(est: Any) -> Any:
    """A copy of ``est`` whose tree thresholds are float32 values that route like the originals.

    scikit-learn sends a row left when ``float32(x) <= threshold`` (float64); ONNX compares with
    ``float32(threshold)``, which rounds up about half the time, and then a feature equal to the
    rounded value goes the wrong way. The largest float32 not above the threshold routes every
    float32 input exactly as the float64 threshold does.
    """
    from sklearn.tree import BaseDecisionTree

    est = copy.deepcopy(est)
    trees = [est] if isinstance(est, BaseDecisionTree) else list(getattr(est, "estimators_", []))
    for tree in trees:
        if not isinstance(tree, BaseDecisionTree):
            raise NotCompilable(f"{type(tree).__name__} inside {type(est).__name__}")
        thr = tree.tree_.threshold  # a writable view of the copy's node array
        f32 = thr.astype(np.float32)
        up = f32.astype(np.float64) > thr
        thr[up] = np.nextafter(f32[up], np.float32(-np.inf)).astype(np.float64)
    return est


def _onnx(est: Any, n_features: int, *, double: bool) -> Predictor:
    """A scikit-learn estimator (or Pipeline of them) converted by skl2onnx."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    if not double:
        est = _float32_thresholds(est)
    tensor = DoubleTensorType if double else FloatTensorType
    final = _final_estimator(est)
    onx = to_onnx(
        est, initial_types=[("x", tensor([None, n_features]))], options={id(final): {"zipmap": False}}
    )
    return _onnx_session(onx, type(final).__name__, double=double)


def _onnx_xgboost(est: Any, n_features: int) -> Predictor:
    """A binary ``XGBClassifier`` converted by onnxmltools (the ONNX project's converter for
    XGBoost; it keeps the trees ``predict_proba`` uses after early stopping, ``best_iteration``).

    XGBoost compares float32 features with float32 split values, and so does ONNX on float32
    input, so routing is the same; the leaf sum differs from XGBoost's by float32 rounding
    (measured <= 3e-7 on the UCI file, 300 trees). One row: ~15-50 us against ~190 us for
    ``Booster.inplace_predict`` and ~60-200 us for treelite GTIL, whose Python wrapper builds a
    JSON configuration on every call; 1000 rows: on a par with ``inplace_predict``, and it
    releases the GIL, so large batches are split across threads.
    """
    from onnxmltools.convert import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    if getattr(est, "n_classes_", 2) != 2:
        raise NotCompilable("multi-class XGBClassifier")
    onx = convert_xgboost(est, initial_types=[("x", FloatTensorType([None, n_features]))])
    return _onnx_session(onx, type(est).__name__, double=False)


def _onnx_session(onx: Any, what: str, *, double: bool) -> Predictor:
    """An onnxruntime session on one thread for the ONNX model ``onx`` of a classifier whose
    second output is the (rows, classes) probabilities."""
    import onnxruntime as ort

    dtype = np.float64 if double else np.float32
    opts = ort.SessionOptions()
    # One thread per call: concurrency comes from requests (and from splitting large batches).
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    # No CPU memory arena: a large batch's buffers go back to the allocator after the call
    # instead of staying reserved by the session (a 100k-row upload left ~40 MB behind).
    opts.enable_cpu_mem_arena = False
    session = ort.InferenceSession(onx.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    if len(outputs) != 2:
        raise NotCompilable(f"ONNX graph of {what} has outputs {outputs}")
    prob_name = outputs[1]

    def proba(z: np.ndarray) -> np.ndarray:
        out = session.run([prob_name], {"x": np.ascontiguousarray(z, dtype=dtype)})[0]
        return np.asarray(out, dtype=np.float64)

    return Predictor(f"onnxruntime float{'64' if double else '32'}", proba, exact=False)


@dataclass(frozen=True)
class Plan:
    """Which predictor serves which batch size."""

    small: Predictor
    large: Predictor
    small_max_rows: int  # batches up to this size use ``small``
    split_large: bool  # ``large`` releases the GIL: split big batches across threads


def plan_for(est: Any, n_features: int) -> Plan:
    """The predictors for one fitted estimator (see the table in the module docstring)."""
    from sklearn.ensemble import (
        AdaBoostClassifier,
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    final = _final_estimator(est)
    if type(final).__name__ == "XGBClassifier":
        # onnxruntime costs ~10 us + ~9 us/row (CPU time), inplace_predict ~240 us + ~3.4 us/row:
        # ONNX up to 32 rows (measured at 1/4/32/1000 rows: 10/26/300/8600 us against
        # 245/288/402/3600 us). Both release the GIL; XGBoost's predictions are thread-safe.
        return Plan(_onnx_xgboost(final, n_features), _xgboost(final), small_max_rows=32, split_large=True)
    if isinstance(final, HistGradientBoostingClassifier):
        # Small batches: GTIL, 55 us for one row against 2 ms. Large batches: scikit-learn's
        # own predictor (exact; 1.5-2x faster than GTIL per row) on ONE OpenMP thread, split
        # over our threads instead: its default opens an OpenMP region per tree with every
        # core, and with concurrent requests or a busy host those oversubscribe the cores
        # (1000 rows: 14-800 ms against 19-50 ms single-threaded on the same shared machine).
        return Plan(_treelite_hgb(final), _hgb_one_thread(final), small_max_rows=128, split_large=True)
    if isinstance(
        final,
        (
            RandomForestClassifier,
            ExtraTreesClassifier,
            DecisionTreeClassifier,
            ExtraTreeClassifier,
            AdaBoostClassifier,
        ),
    ):
        if getattr(final, "n_outputs_", 1) != 1:
            raise NotCompilable(f"multi-output {type(final).__name__}")
        p = _onnx(est, n_features, double=False)
        return Plan(p, p, small_max_rows=0, split_large=True)
    if isinstance(final, LogisticRegression):
        p = _onnx(est, n_features, double=True)
        return Plan(p, p, small_max_rows=0, split_large=False)
    p = _sklearn(est)
    return Plan(p, p, small_max_rows=0, split_large=False)


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
                _clean_preprocess(s, features) if i == 0 else _clean_step(s)
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


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str  # what disagreed, or the summary of what was checked
    rows: int
    max_abs_diff: float


SINGLE_ROWS = 32  # rows also checked one request at a time (half clean, half with NaN)


def verify(fast: FastPipeline, pipeline: Any, rows: Any, threat_column: int = 1) -> Verdict:
    """Compare ``fast`` with ``pipeline.predict_proba`` on ``rows`` (float matrix or DataFrame),
    and its decisions with the registered model's own ``predict``.

    All rows go through the whole fast path at once (large-batch predictor); their preprocessed
    matrix goes through the small-batch predictor in chunks of its size (imputing a row does not
    depend on the batch, so the costly KNN imputation runs once); :data:`SINGLE_ROWS` rows, with
    and without NaN, go through the whole fast path one at a time. Exact predictors must give
    identical probabilities; the others must stay within :data:`ATOL` on P(threat). Every row
    must get the decision ``pipeline.predict`` gives it (the artifact's FixedThresholdClassifier
    at its threshold, or a bare Pipeline's 0.5 rule), through
    :func:`netsec_tasks.operating_point.decide` at ``fast.threshold``, as serving decides.
    """
    import pandas as pd

    from netsec_tasks.operating_point import decide, inner_pipeline

    is_frame = isinstance(rows, pd.DataFrame)
    # A FixedThresholdClassifier does not expose the names its Pipeline was fitted with.
    named = is_frame or not hasattr(inner_pipeline(pipeline), "feature_names_in_")
    frame = rows if named else pd.DataFrame(rows, columns=fast.preprocess.features)
    expected = np.asarray(pipeline.predict_proba(frame))
    decided = np.asarray(pipeline.predict(frame)).astype(np.int8)
    if not np.array_equal(decide(expected[:, threat_column], fast.threshold), decided):
        bad = int(np.flatnonzero(decide(expected[:, threat_column], fast.threshold) != decided)[0])
        return Verdict(
            False,
            f"row {bad}: threshold {fast.threshold:.6g} decides otherwise than the model's predict()",
            0,
            np.inf,
        )
    n = len(expected)
    take = (lambda idx: rows.iloc[idx]) if is_frame else (lambda idx: rows[idx])
    z = fast.preprocess(rows)
    runs: list[tuple[str, np.ndarray, np.ndarray]] = [
        ("whole batch", fast.from_preprocessed(z), np.arange(n))
    ]
    step = fast.plan.small_max_rows
    if step:
        runs.append(
            (
                f"batches of {step}",
                np.vstack([fast.from_preprocessed(z[i : i + step]) for i in range(0, n, step)]),
                np.arange(n),
            )
        )
    gaps = (frame.isna() if is_frame else pd.DataFrame(np.isnan(rows))).any(axis=1).to_numpy()
    picks = np.concatenate(
        [np.flatnonzero(~gaps)[: SINGLE_ROWS // 2], np.flatnonzero(gaps)[: SINGLE_ROWS // 2]]
    )
    runs.append(
        ("one row at a time", np.vstack([fast.predict_proba(take(slice(i, i + 1))) for i in picks]), picks)
    )
    worst = 0.0
    for label, got, idx in runs:
        ref = expected[idx]
        if got.shape != ref.shape:
            return Verdict(False, f"{label}: shape {got.shape}, the pipeline's is {ref.shape}", n, np.inf)
        diff = np.abs(got[:, threat_column].astype(np.float64) - ref[:, threat_column])
        worst = max(worst, float(diff.max(initial=0.0)))
        if fast.exact:
            if not np.array_equal(got, ref):
                bad = int(idx[np.flatnonzero((got != ref).any(axis=1))[0]])
                return Verdict(False, f"{label}: row {bad} differs (exact predictor)", n, worst)
            continue
        if not np.all(diff <= ATOL):
            bad = int(np.argmax(diff))
            return Verdict(
                False, f"{label}: row {int(idx[bad])} differs by {diff[bad]:.3g} > {ATOL:g}", n, worst
            )
        flipped = decide(got[:, threat_column], fast.threshold) != decided[idx]
        if flipped.any():
            bad = int(idx[np.flatnonzero(flipped)[0]])
            return Verdict(False, f"{label}: row {bad} gets another decision", n, worst)
    return Verdict(True, "exact" if fast.exact else f"max |dp| {worst:.1e} <= {ATOL:g}", n, worst)


def fast_path_for(
    pipeline: Any,
    features: list[str],
    rows: Any,
    *,
    threat_column: int = 1,
    threshold: float = LEGACY_THRESHOLD,
    batch_threads: int = 1,
    rows_source: str = "",
) -> tuple[FastPipeline | None, str]:
    """A verified fast path, or (None, why not). ``pipeline``: the registered model (its
    ``predict`` is the decision the fast path must reproduce at ``threshold``, the model's);
    ``rows``: real rows to verify on (float matrix for numeric models, DataFrame otherwise),
    including rows with NaN."""
    import pandas as pd

    try:
        fast = compile_pipeline(
            pipeline,
            features,
            batch_threads=batch_threads,
            frames=isinstance(rows, pd.DataFrame),
            threshold=threshold,
        )
    except NotCompilable as exc:
        return None, f"scikit-learn ({exc} has no fast path)"
    except Exception as exc:  # a converter or an unexpected fitted layout: keep the safe path
        log.warning("fast path failed to build: %s: %s", type(exc).__name__, exc)
        return None, f"scikit-learn (fast path failed to build: {type(exc).__name__}: {str(exc)[:200]})"
    try:
        verdict = verify(fast, pipeline, rows, threat_column)
    except Exception as exc:
        log.warning("fast path failed on the verification rows: %s: %s", type(exc).__name__, exc)
        return None, f"scikit-learn (fast path failed on verification rows: {type(exc).__name__})"
    where = f" on {verdict.rows} rows{' of ' + rows_source if rows_source else ''}"
    if not verdict.ok:
        log.warning(
            "fast path dropped, it disagreed with the pipeline%s: %s (%s)",
            where,
            verdict.why,
            fast.describe(),
        )
        return None, f"scikit-learn (fast path disagreed{where}: {verdict.why})"
    return fast, f"compiled: {fast.describe()}; verified{where}: {verdict.why}"
