"""Exact per-row contributions of each estimator a netsec candidate can produce, by the
libraries' own methods, on the preprocessed columns the estimator sees.

=====================================  ===================================================  ============
estimator                              method                                               unit
=====================================  ===================================================  ============
XGBClassifier                          XGBoost's ``Booster.predict(pred_contribs=True)``    log-odds
                                       (TreeSHAP, path-dependent)
HistGradientBoostingClassifier         ``shap.TreeExplainer`` (TreeSHAP, path-dependent)    log-odds
RandomForest / ExtraTrees /            ``shap.TreeExplainer`` (TreeSHAP, path-dependent)    probability
DecisionTree classifiers
AdaBoostClassifier (trees)             ``shap.TreeExplainer`` on the boosted trees with     log-odds
                                       their SAMME votes as leaf values (exact: the
                                       decision function is a weighted sum of the trees)
LogisticRegression (+StandardScaler)   exact linear: ``coef * (x - training mean) / scale``  log-odds
=====================================  ===================================================  ============

The unit is the estimator's own margin: log-odds where P(threat) is the logistic of a sum
(boosting, the linear model), probability where P(threat) is an average of leaf frequencies
(forests, a single tree). In both, for every row, ``base + sum(contributions) = margin``; the
explainer verifies that at load time (:mod:`netsec_tasks.explain.explainer`).

**Cost.** TreeSHAP costs O(trees x leaves x depth^2) per row. Boosted models are shallow (XGBoost
depth 5-10, HistGradientBoosting 15-47 leaves): about 1-1.5 ms per row for 300 trees. Forests of
fully grown trees are deep (depth ~24, ~650 leaves on the UCI file): about 0.6 ms per tree and
row, 190 ms for 300 trees (measured; bench/bench_serving.py --explain). There is no exact method
that is faster by more than a constant; we keep exactness and bound what one call holds:
shap's C extension keeps Python's GIL for a whole call, so sklearn ensembles are explained in
calls of about :data:`CALL_WORK` units (groups of trees x chunks of rows) and other requests run
between them. XGBoost's call releases the GIL itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from netsec_tasks.explain.folding import NotExplainable

LOG_ODDS = "log-odds"
PROBABILITY = "probability"
# Work units (leaves x depth^2, summed over the trees of a call, times its rows) per call into
# shap's C extension: ~2e6 units take ~3 ms here, so no call holds the GIL much longer.
CALL_WORK = 2_000_000


@dataclass(frozen=True)
class Method:
    """How one fitted estimator's contributions are computed.

    ``contributions(z)``: (n, n_in) contributions of the preprocessed rows ``z`` and the base
    value (float), in ``unit``. ``margin(z)``: the estimator's own output in ``unit``, by its
    public API (the reference the additivity check compares with). ``probability(m)``: P(threat)
    from a margin.
    """

    name: str
    unit: str
    contributions: Callable[[np.ndarray], tuple[np.ndarray, float]]
    margin: Callable[[np.ndarray], np.ndarray]

    def probability(self, margin: np.ndarray) -> np.ndarray:
        if self.unit == PROBABILITY:
            return np.asarray(margin, dtype=np.float64)
        from scipy.special import expit

        return expit(np.asarray(margin, dtype=np.float64))


def _sign(threat_column: int) -> float:
    # Binary margins (decision_function, XGBoost's margin) are for classes_[1]; when the threat
    # class is classes_[0] the contributions change sign.
    return 1.0 if threat_column == 1 else -1.0


# --- XGBoost ------------------------------------------------------------------------------------


def _xgboost(est: Any, threat_column: int) -> Method:
    import xgboost

    objective = str(getattr(est, "objective", ""))
    if getattr(est, "n_classes_", 2) != 2 or objective != "binary:logistic":
        raise NotExplainable(f"XGBClassifier with objective {objective!r} (binary:logistic only)")
    booster = est.get_booster()
    try:  # the trees predict_proba uses: up to the best iteration when early stopping ran
        iteration_range = (0, int(est.best_iteration) + 1)
    except AttributeError:
        iteration_range = (0, 0)
    missing, sign = est.missing, _sign(threat_column)

    def contributions(z: np.ndarray) -> tuple[np.ndarray, float]:
        # nthread=1: the DMatrix's thread count is the prediction's; the default (all cores)
        # costs ~20 ms per one-row call in OpenMP start-up on a busy host, against ~1 ms.
        data = xgboost.DMatrix(np.asarray(z, dtype=np.float32), missing=missing, nthread=1)
        out = booster.predict(
            data, pred_contribs=True, iteration_range=iteration_range, validate_features=False
        )
        out = np.asarray(out, dtype=np.float64)
        return sign * out[:, :-1], sign * float(out[0, -1]) if len(out) else 0.0

    def margin(z: np.ndarray) -> np.ndarray:
        return sign * np.asarray(est.predict(z, output_margin=True), dtype=np.float64)

    return Method("XGBoost pred_contribs (TreeSHAP)", LOG_ODDS, contributions, margin)


# --- shap.TreeExplainer -------------------------------------------------------------------------


def _work(explainer: Any) -> float:
    """TreeSHAP work units of one row on ``explainer``'s trees: sum of leaves x depth^2."""
    total = 0.0
    for tree in explainer.model.trees:
        leaves = int(np.count_nonzero(np.asarray(tree.children_left) < 0))
        total += leaves * max(1, int(tree.max_depth)) ** 2
    return total


class _TreeShap:
    """``shap.TreeExplainer`` over parts of one ensemble: ``parts`` are (explainer, weight) whose
    weighted sum is the ensemble (a forest averages its trees, so a group of g of T trees
    weighs g/T); rows go in chunks so that one call does about :data:`CALL_WORK` units."""

    def __init__(self, parts: list[tuple[Any, float]], output: int | None):
        self.parts = parts
        self.output = output
        worst = max(_work(ex) for ex, _ in parts)
        self.rows_per_call = max(1, int(CALL_WORK // max(worst, 1.0)))
        base = 0.0
        for ex, w in parts:
            ev = np.ravel(np.asarray(ex.expected_value, dtype=np.float64))
            base += w * float(ev[output if output is not None else 0])
        self.base = base

    def __call__(self, z: np.ndarray) -> tuple[np.ndarray, float]:
        z = np.asarray(z)
        out = np.zeros(z.shape, dtype=np.float64)
        for start in range(0, len(z), self.rows_per_call):
            chunk = z[start : start + self.rows_per_call]
            for ex, w in self.parts:
                sv = np.asarray(ex.shap_values(chunk, check_additivity=False))
                if self.output is not None:
                    sv = sv[..., self.output]
                out[start : start + len(chunk)] += w * sv
        return out, self.base


def _tree_explainer(model: Any) -> Any:
    import shap

    return shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")


def _forest(est: Any, threat_column: int) -> Method:
    import copy

    if getattr(est, "n_outputs_", 1) != 1:
        raise NotExplainable(f"multi-output {type(est).__name__}")
    trees = list(getattr(est, "estimators_", []))
    if not trees:  # a single decision tree
        parts = [(_tree_explainer(est), 1.0)]
    else:
        # Groups of trees whose work fits one call; each group is a shallow copy of the forest
        # holding only those trees (shap averages the trees it is given).
        per_tree = [t.tree_.n_leaves * max(1, t.tree_.max_depth) ** 2 for t in trees]
        groups: list[list[Any]] = [[]]
        work = 0.0
        for tree, w in zip(trees, per_tree):
            if groups[-1] and work + w > CALL_WORK:
                groups.append([])
                work = 0.0
            groups[-1].append(tree)
            work += w
        parts = []
        for group in groups:
            part = copy.copy(est)
            part.estimators_ = group
            parts.append((_tree_explainer(part), len(group) / len(trees)))
    shap_values = _TreeShap(parts, output=threat_column)

    def margin(z: np.ndarray) -> np.ndarray:
        return np.asarray(est.predict_proba(z), dtype=np.float64)[:, threat_column]

    what = f"{len(trees)} trees" if trees else "one tree"
    return Method(f"shap TreeExplainer (TreeSHAP, {what})", PROBABILITY, shap_values, margin)


def _hist_gradient_boosting(est: Any, threat_column: int) -> Method:
    if getattr(est, "n_trees_per_iteration_", 1) != 1:
        raise NotExplainable("multi-class HistGradientBoostingClassifier")
    sign = _sign(threat_column)
    shap_values = _TreeShap([(_tree_explainer(est), sign)], output=None)

    def margin(z: np.ndarray) -> np.ndarray:
        return sign * np.asarray(est.decision_function(z), dtype=np.float64)

    return Method("shap TreeExplainer (TreeSHAP)", LOG_ODDS, shap_values, margin)


def _adaboost(est: Any, threat_column: int) -> Method:
    """AdaBoost (SAMME, scikit-learn >= 1.6) on two classes: ``decision_function`` is
    ``2 * sum_m w_m * s_m(x) / sum_m w_m`` with ``s_m = +1`` where tree m predicts classes_[1],
    else -1, and P(classes_[1]) is its logistic. Each tree with leaf values ``2 w_m s_m / W`` is
    explained exactly by TreeSHAP; the sum over trees is the decision function's."""
    from sklearn.tree import DecisionTreeClassifier

    if len(est.classes_) != 2:
        raise NotExplainable("multi-class AdaBoostClassifier")
    positive = est.classes_[1]
    total = float(np.sum(est.estimator_weights_))
    trees = []
    for tree, weight in zip(est.estimators_, est.estimator_weights_):
        if not isinstance(tree, DecisionTreeClassifier):
            raise NotExplainable(f"AdaBoostClassifier of {type(tree).__name__}")
        t = tree.tree_
        votes = np.where(tree.classes_[np.argmax(t.value[:, 0, :], axis=1)] == positive, 1.0, -1.0)
        default = t.children_left
        if hasattr(t, "missing_go_to_left"):
            default = np.where(t.missing_go_to_left, t.children_left, t.children_right)
        trees.append(
            {
                "children_left": t.children_left,
                "children_right": t.children_right,
                "children_default": default,
                "features": t.feature,
                "thresholds": t.threshold,
                "values": (2.0 * float(weight) / total * votes).reshape(-1, 1),
                "node_sample_weight": t.weighted_n_node_samples.astype(np.float64),
            }
        )
    # scikit-learn trees compare float32 features with float64 thresholds: the same input dtype.
    model = {"trees": trees, "base_offset": 0.0, "input_dtype": np.float32, "internal_dtype": np.float64}
    sign = _sign(threat_column)
    shap_values = _TreeShap([(_tree_explainer(model), sign)], output=None)

    def margin(z: np.ndarray) -> np.ndarray:
        return sign * np.asarray(est.decision_function(z), dtype=np.float64)

    return Method(
        f"shap TreeExplainer on the {len(trees)} boosted trees' votes (TreeSHAP)",
        LOG_ODDS,
        shap_values,
        margin,
    )


# --- linear -------------------------------------------------------------------------------------


def _logistic(est: Any, threat_column: int) -> Method:
    """``decision_function = intercept + coef . (z - c) / scale`` (StandardScaler, then the
    regression): each column's contribution is ``coef_j (z_j - mean_j) / scale_j`` against the
    training mean the scaler recorded (SHAP's linear values with independent features), and the
    base value is the margin at that mean."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [s for _, s in est.steps] if isinstance(est, Pipeline) else [est]
    clf, before = steps[-1], [s for s in steps[:-1] if not (s is None or s == "passthrough")]
    if not isinstance(clf, LogisticRegression) or np.asarray(clf.coef_).shape[0] != 1:
        raise NotExplainable(f"{type(clf).__name__} is not a binary LogisticRegression")
    if len(before) != 1 or not isinstance(before[0], StandardScaler) or before[0].mean_ is None:
        raise NotExplainable(
            "LogisticRegression without its StandardScaler: no training mean to measure contributions from"
        )
    scaler = before[0]
    mean = np.asarray(scaler.mean_, dtype=np.float64)
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else np.ones_like(mean)
    centre = mean if scaler.with_mean else np.zeros_like(mean)
    sign = _sign(threat_column)
    coef = sign * np.asarray(clf.coef_, dtype=np.float64)[0] / scale
    base = sign * float(np.ravel(clf.intercept_)[0]) + float(coef @ (mean - centre))

    def contributions(z: np.ndarray) -> tuple[np.ndarray, float]:
        return (np.asarray(z, dtype=np.float64) - mean) * coef, base

    def margin(z: np.ndarray) -> np.ndarray:
        return sign * np.asarray(est.decision_function(z), dtype=np.float64)

    return Method(
        "exact linear (coefficient x distance from the training mean)", LOG_ODDS, contributions, margin
    )


# --- dispatch -----------------------------------------------------------------------------------

SUPPORTED = (
    "XGBClassifier, HistGradientBoostingClassifier, RandomForestClassifier, ExtraTreesClassifier, "
    "DecisionTreeClassifier, AdaBoostClassifier (trees), LogisticRegression with its StandardScaler"
)


def method_for(estimator: Any, threat_column: int = 1) -> Method:
    """The exact contribution method of a fitted estimator (the model step of the Pipeline).
    Raises NotExplainable for any other estimator, naming it."""
    from sklearn.ensemble import (
        AdaBoostClassifier,
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    if type(final).__name__ == "LogisticRegression":  # with the scaler it carries
        return _logistic(estimator, threat_column)
    if final is not estimator:  # steps inside the estimator: only the linear candidate has them
        raise NotExplainable(f"{type(final).__name__} inside a Pipeline of its own")
    if type(final).__name__ == "XGBClassifier":
        return _xgboost(final, threat_column)
    if isinstance(final, HistGradientBoostingClassifier):
        return _hist_gradient_boosting(final, threat_column)
    if isinstance(final, (RandomForestClassifier, ExtraTreesClassifier, DecisionTreeClassifier)):
        return _forest(final, threat_column)
    if isinstance(final, AdaBoostClassifier):
        return _adaboost(final, threat_column)
    raise NotExplainable(
        f"{type(final).__name__} has no exact contribution method in netsec (supported: {SUPPORTED})"
    )
