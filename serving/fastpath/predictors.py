"""The estimator predictors: per estimator type, the fast predictor for small batches and for
large ones (:func:`plan_for`; the measurements are in :mod:`serving.fastpath`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.fastpath.base import NotCompilable


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
