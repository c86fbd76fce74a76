"""The decision: when a threat score becomes an alert, and what that costs at deployment.

The model is a decision, not a score. A registered netsec model is the fitted
``Pipeline(preprocess, model)`` wrapped in scikit-learn's ``FixedThresholdClassifier`` with the
threshold chosen for the data set's false-positive budget (:mod:`netsec_tasks.train`), so the
artifact's own ``predict`` applies it. Every door that turns scores into alerts (serving's
``/predict``, ``/predict/csv`` and page, ``netsec predict``, ``netsec evaluate``, the promotion
decision, monitoring) calls :func:`decide` with :func:`model_threshold`; nothing else compares a
score with a threshold.

- :func:`decide`: 1 where ``P(threat) >= threshold``, scikit-learn's rule.
- :func:`model_threshold`: the threshold a model carries; a version registered before thresholds
  existed (a bare Pipeline) gets :data:`LEGACY_THRESHOLD`, the ``P(threat) > 0.5`` rule its own
  ``predict`` always applied, with ``recorded=False`` so callers can warn.
- :func:`operating_point`: what a threshold does on labelled rows: FPR with its Clopper-Pearson
  interval, recall, precision at the *expected* threat rate (not the test split's, which is
  40-60% threats), alerts per 10,000 benign rows.
- :func:`choose_threshold`: the highest-recall threshold on out-of-fold scores whose FPR stays
  within the budget *with its confidence interval* (the margin for estimation error, below).
- :func:`decision_policy`: the data set's budget, expected rate and objective (its schema file),
  overridden by the config's ``decision`` section.

**The margin for estimation error.** An FPR measured on ``n`` benign rows is uncertain by about
``sqrt(FPR / n)``. The threshold is therefore chosen so that the *upper* end of the two-sided
Clopper-Pearson interval (``decision.confidence``, 95%) of the out-of-fold FPR is within the
budget, not the FPR itself: on 10,000 benign rows at a 1% budget that keeps the out-of-fold FPR
at about 0.82%; on 1,800 rows (the synthetic sample) at about 0.5%. When even zero false
positives cannot show the budget (fewer than ``log(alpha/2) / log(1 - budget)`` benign rows, 367
at 1%), the threshold is the highest-recall one with no out-of-fold false positive, and the
choice says so. Identical rows count once per copy (the UCI file is half duplicates), so the
intervals are somewhat narrower than the rows' information warrants.

**Over budget.** A measured FPR is over the budget only when the *lower* end of its interval is
above it (:meth:`OperatingPoint.over_budget`): the data show the FPR exceeds the budget, not
merely that it might. Promotion refuses such a candidate and monitoring names such a live FPR as
a retraining reason; the benchmark's goal is that no data set's test FPR is over budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from netsec_tasks.config import PipelineConfig
    from netsec_tasks.dataset_schema import DatasetSchema

# The rule of the versions registered before thresholds existed (their own predict(): threat
# when P(threat) > 0.5; a tie is benign): the smallest float64 above 0.5, so that
# decide(p, LEGACY_THRESHOLD) == (p > 0.5) for float32 and float64 scores alike.
LEGACY_THRESHOLD = float(np.nextafter(0.5, 1.0))
# objective f1 (selection by training.metric, the 0.5 rule): the smallest float32 above 0.5.
# Thresholds in a FixedThresholdClassifier are float32 values (see as_threshold).
HALF_THRESHOLD = float(np.nextafter(np.float32(0.5), np.float32(1.0)))
# The budgets `netsec evaluate` and the benchmark tabulate beside the configured one.
TABLE_BUDGETS = (0.001, 0.005, 0.01, 0.05)
PER_10K = 10_000


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class DecisionPolicy:
    """The resolved operating point settings of one data set (:func:`decision_policy`)."""

    max_false_positive_rate: float
    expected_threat_rate: float
    objective: str  # recall_at_budget | f1
    confidence: float
    min_recall: float = 0.5  # recall_at_budget: the promotion floor of the test recall

    @property
    def budget(self) -> float:
        return self.max_false_positive_rate

    def point(self, y_true: Any, scores: Any, threshold: float | Threshold, *, decisions: Any = None):
        """:func:`operating_point` at this policy's expected threat rate and confidence."""
        return operating_point(
            y_true,
            scores,
            threshold,
            expected_threat_rate=self.expected_threat_rate,
            confidence=self.confidence,
            decisions=decisions,
        )

    def describe(self) -> str:
        return (
            f"budget FPR {pct(self.budget)} (decision.max_false_positive_rate), expected threat "
            f"rate {pct(self.expected_threat_rate)}, objective {self.objective}"
        )


def decision_policy(cfg: PipelineConfig, schema: DatasetSchema | None = None) -> DecisionPolicy:
    """The data set's ``decision`` (its schema file, else the defaults of
    :class:`netsec_tasks.dataset_schema.DecisionSpec`) with the config's non-null ``decision`` keys over it
    (``NETSEC_DECISION__MAX_FALSE_POSITIVE_RATE=0.005`` overrides like any key)."""
    from netsec_tasks.dataset_schema import load_schema

    spec = (schema or load_schema(cfg.schema_path)).decision
    over = cfg.decision
    return DecisionPolicy(
        max_false_positive_rate=(
            over.max_false_positive_rate
            if over.max_false_positive_rate is not None
            else spec.max_false_positive_rate
        ),
        expected_threat_rate=(
            over.expected_threat_rate if over.expected_threat_rate is not None else spec.expected_threat_rate
        ),
        objective=over.objective or spec.objective,
        confidence=over.confidence,
        min_recall=over.min_recall if over.min_recall is not None else spec.min_recall,
    )


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Threshold:
    """A model's decision threshold on P(threat). ``recorded``: False for a model registered
    before thresholds existed (decided at 0.5, see :data:`LEGACY_THRESHOLD`)."""

    value: float
    recorded: bool = True

    def describe(self) -> str:
        return f"{self.value:.6g}" if self.recorded else "0.5 (no threshold recorded: the 0.5 rule)"


def decide(scores: Any, threshold: float | Threshold) -> np.ndarray:
    """The alert decision: 1 (threat) where ``scores >= threshold``, else 0, as int8.

    ``scores``: P(threat) per row (any float array; NaN is never a threat). The comparison is
    scikit-learn's ``FixedThresholdClassifier`` rule; it is made in float64, and thresholds are
    float32 values (:func:`as_threshold`), so a float32 score (XGBoost) and its float64 copy get
    the same decision. The one place a score becomes an alert: every door calls it.
    """
    t = threshold.value if isinstance(threshold, Threshold) else float(threshold)
    return (np.asarray(scores, dtype=np.float64) >= t).astype(np.int8)


def as_threshold(value: float) -> float:
    """``value`` as the float32 number nearest to it (as a Python float): a threshold that
    compares the same way with float32 and float64 scores."""
    return float(np.float32(value))


def with_threshold(pipeline: Any, threshold: float) -> Any:
    """The registered artifact: the fitted ``pipeline`` inside scikit-learn's
    ``FixedThresholdClassifier``, whose ``predict`` applies ``threshold`` to P(threat) (class 1).

    The pipeline is used as fitted (the wrapper accepts a fitted estimator and is not fitted
    itself), so nothing is refit; scikit-learn and skops trust the wrapper's type already."""
    from sklearn.model_selection import FixedThresholdClassifier

    return FixedThresholdClassifier(
        pipeline, threshold=as_threshold(threshold), pos_label=1, response_method="predict_proba"
    )


def _is_wrapper(model: Any) -> bool:
    from sklearn.model_selection import FixedThresholdClassifier

    return isinstance(model, FixedThresholdClassifier)


def inner_pipeline(model: Any) -> Any:
    """The fitted ``Pipeline(preprocess, model)`` of a registered model (the wrapper's estimator),
    or ``model`` itself when it is a bare Pipeline (a version registered before thresholds)."""
    if _is_wrapper(model):
        return getattr(model, "estimator_", model.estimator)
    return model


def model_threshold(model: Any) -> Threshold:
    """The threshold ``model`` decides with: the ``FixedThresholdClassifier``'s, else the 0.5 rule
    of a bare Pipeline (``recorded=False``). Raises ValueError for a wrapper whose threshold is not
    a number on P(threat) (netsec never writes one)."""
    if not _is_wrapper(model):
        return Threshold(LEGACY_THRESHOLD, recorded=False)
    t = model.threshold
    if isinstance(t, str) or model.response_method not in ("predict_proba", "auto"):
        raise ValueError(
            f"the model's FixedThresholdClassifier has threshold={t!r}, "
            f"response_method={model.response_method!r}; netsec models carry a number on "
            "predict_proba (retrain with the current pipeline)"
        )
    return Threshold(float(t), recorded=True)


def threat_probability(model: Any, X: Any) -> np.ndarray:
    """P(threat) (class 1) per row of ``X`` for a registered model, wrapped or bare."""
    proba = np.asarray(model.predict_proba(X))
    classes = list(getattr(model, "classes_", [0, 1]))
    return proba[:, classes.index(1) if 1 in classes else -1]


# --------------------------------------------------------------------------- measuring a point


def rate_interval(successes: int, trials: int, confidence: float) -> tuple[float | None, float | None]:
    """Two-sided Clopper-Pearson (exact binomial) interval of ``successes / trials``
    (``statsmodels.stats.proportion.proportion_confint``, method ``beta``); (None, None) without
    trials. Exact rather than Wilson because an FPR near 0 with few false positives is where the
    normal-based intervals are too narrow."""
    if trials <= 0:
        return None, None
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(int(successes), int(trials), alpha=1 - confidence, method="beta")
    return float(low), float(high)


def precision_at_rate(recall: float | None, fpr: float | None, rate: float) -> float | None:
    """Precision when threats are ``rate`` of the traffic: ``recall * rate / (recall * rate +
    FPR * (1 - rate))``; None when the point raises no alert at all."""
    if recall is None or fpr is None:
        return None
    alerts = recall * rate + fpr * (1 - rate)
    return recall * rate / alerts if alerts > 0 else None


@dataclass(frozen=True)
class OperatingPoint:
    """What one threshold does on labelled rows (the threat class is 1).

    ``fpr_low``/``fpr_high`` and ``recall_low``/``recall_high``: Clopper-Pearson intervals at
    ``confidence``. ``precision``: on these rows (their own threat share); ``precision_at_rate``:
    at ``expected_threat_rate``, the deployment's. ``alerts_per_10k_benign``: false alerts per
    10,000 benign rows (FPR x 10,000). Undefined figures (no benign or no threat rows) are None.
    """

    threshold: float
    rows: int
    benign: int
    threats: int
    tp: int
    fp: int
    tn: int
    fn: int
    fpr: float | None
    fpr_low: float | None
    fpr_high: float | None
    recall: float | None
    recall_low: float | None
    recall_high: float | None
    precision: float | None
    expected_threat_rate: float
    precision_at_rate: float | None
    alerts_per_10k_benign: float | None
    confidence: float

    def over_budget(self, budget: float) -> bool:
        """True when the rows show the FPR above ``budget``: the interval's lower end is above it."""
        return self.fpr_low is not None and self.fpr_low > budget

    @property
    def expected_alert_rate(self) -> float | None:
        """The share of deployed rows expected to alert: recall x rate + FPR x (1 - rate)."""
        if self.recall is None or self.fpr is None:
            return None
        r = self.expected_threat_rate
        return self.recall * r + self.fpr * (1 - r)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, rates rounded to 6 digits (the threshold exact: it is what decides)."""
        return {
            k: round(v, 6) if isinstance(v, float) and k != "threshold" else v
            for k, v in asdict(self).items()
        }

    def summary(self) -> str:
        """One line: ``threshold 0.73: FPR 0.84% (95% CI 0.55-1.2%), recall 0.912, precision at a
        1% threat rate 52.1%, 84 alerts per 10,000 benign rows``."""
        level = f"{self.confidence:.0%}"
        fpr = (
            f"FPR {pct(self.fpr)} ({level} CI {pct(self.fpr_low)}-{pct(self.fpr_high)})"
            if self.fpr is not None
            else "FPR undefined (no benign rows)"
        )
        recall = f"recall {self.recall:.3f}" if self.recall is not None else "recall undefined (no threats)"
        prec = (
            f"precision at a {pct(self.expected_threat_rate)} threat rate {pct(self.precision_at_rate)}"
            if self.precision_at_rate is not None
            else "no alerts"
        )
        alerts = (
            f"{self.alerts_per_10k_benign:.0f} false alerts per 10,000 benign rows"
            if self.alerts_per_10k_benign is not None
            else ""
        )
        return f"threshold {self.threshold:.4g}: " + ", ".join(x for x in (fpr, recall, prec, alerts) if x)


def operating_point(
    y_true: Any,
    scores: Any,
    threshold: float | Threshold,
    *,
    expected_threat_rate: float,
    confidence: float = 0.95,
    decisions: Any = None,
) -> OperatingPoint:
    """The :class:`OperatingPoint` of ``threshold`` on rows with 0/1 truth ``y_true`` and
    P(threat) ``scores`` (``decisions``: the 0/1 decisions when already made, else
    :func:`decide`)."""
    y = np.asarray(y_true).astype(bool)
    pred = (
        np.asarray(decisions).astype(bool)
        if decisions is not None
        else decide(scores, threshold).astype(bool)
    )
    if y.shape != pred.shape:
        raise ValueError(f"{len(y)} labels for {len(pred)} scores")
    tp, fp = int((y & pred).sum()), int((~y & pred).sum())
    fn, tn = int((y & ~pred).sum()), int((~y & ~pred).sum())
    benign, threats = fp + tn, tp + fn
    fpr = fp / benign if benign else None
    recall = tp / threats if threats else None
    fpr_low, fpr_high = rate_interval(fp, benign, confidence)
    rec_low, rec_high = rate_interval(tp, threats, confidence)
    t = threshold.value if isinstance(threshold, Threshold) else float(threshold)
    return OperatingPoint(
        threshold=t,
        rows=int(len(y)),
        benign=benign,
        threats=threats,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        fpr=fpr,
        fpr_low=fpr_low,
        fpr_high=fpr_high,
        recall=recall,
        recall_low=rec_low,
        recall_high=rec_high,
        precision=tp / (tp + fp) if tp + fp else None,
        expected_threat_rate=expected_threat_rate,
        precision_at_rate=precision_at_rate(recall, fpr, expected_threat_rate),
        alerts_per_10k_benign=fpr * PER_10K if fpr is not None else None,
        confidence=confidence,
    )


# --------------------------------------------------------------------------- choosing a point


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold chosen on out-of-fold scores, with what it did there and why it was chosen."""

    threshold: float
    point: OperatingPoint  # on the out-of-fold rows
    basis: str  # one sentence


def _curve(y: np.ndarray, scores: np.ndarray):
    """(fp, tp, thresholds) at every distinct score, highest threshold first (``roc_curve``
    without dropping points, counts instead of rates); thresholds[0] is +inf (no alert)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, scores, pos_label=1, drop_intermediate=False)
    benign, threats = int((y == 0).sum()), int((y == 1).sum())
    return np.rint(fpr * benign).astype(np.int64), np.rint(tpr * threats).astype(np.int64), thr


def choose_threshold(
    y_true: Any, scores: Any, policy: DecisionPolicy, *, what: str = "out-of-fold"
) -> ThresholdChoice:
    """The highest-recall threshold whose FPR on these rows is within the budget with its
    interval: the upper end of the Clopper-Pearson interval of FP / benign at
    ``policy.confidence`` is at most ``policy.budget`` (the module docstring's margin). Among
    thresholds of equal recall the one with the fewest false positives wins, and the threshold
    sits midway between the lowest score it flags and the next lower score, so the counts on
    these rows are exactly the point's. Objective ``f1``: :data:`HALF_THRESHOLD` (the 0.5 rule).

    ``y_true``: 0/1 (both classes needed); ``scores``: P(threat), e.g. out-of-fold
    (``cross_val_predict``) on the training split. Raises ValueError with one class only.
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("choosing a threshold needs benign and threat rows")

    if policy.objective == "f1":
        return ThresholdChoice(
            HALF_THRESHOLD, policy.point(y, s, HALF_THRESHOLD), "objective f1: the 0.5 rule"
        )
    from statsmodels.stats.proportion import proportion_confint

    fp, tp, thr = _curve(y, s)
    benign = int((y == 0).sum())
    # The upper end of each count's interval (the same Clopper-Pearson as rate_interval).
    upper = np.asarray(proportion_confint(fp, benign, alpha=1 - policy.confidence, method="beta")[1])
    ok = upper <= policy.budget
    if ok[1:].any():
        basis = (
            f"the highest {what} recall whose FPR is within the budget of {pct(policy.budget)} with "
            f"the upper end of its {policy.confidence:.0%} interval (on {benign:,} benign rows)"
        )
    else:
        ok = fp == 0
        basis = (
            f"{benign:,} benign {what} rows are too few to show an FPR within {pct(policy.budget)} "
            f"at {policy.confidence:.0%} confidence: the highest recall with no {what} false positive"
        )
    candidates = np.flatnonzero(ok)
    best_tp = tp[candidates].max()
    i = int(candidates[np.flatnonzero(tp[candidates] == best_tp)[0]])  # fewest FPs at that recall
    if i == 0:  # even the top-scored row is benign: nothing can alert without a false positive
        t = 1.0
        basis += "; no threshold below 1 has no false positive, so only P(threat) = 1 alerts"
    else:
        lower = thr[i + 1] if i + 1 < len(thr) else -1.0
        t = _float32_between(lower, float(thr[i]))
    return ThresholdChoice(t, policy.point(y, s, t), basis)


def _float32_between(low: float, high: float) -> float:
    """A float32 value in ``(low, high]``, near their midpoint: the threshold flags every score
    down to ``high`` and none at ``low``. When no float32 lies between them (float64 scores less
    than ~6e-8 apart), the smallest float32 above ``low``: it flags neither, so the false
    positives stay those counted (recall loses the rows at ``high``; the point is measured at the
    returned value either way)."""
    t = np.float32(max((low + high) / 2.0, 0.0))
    if float(t) > high:
        t = np.nextafter(t, np.float32(-1))
    if float(t) <= low:
        t = np.float32(low)
        while float(t) <= low:
            t = np.nextafter(t, np.float32(2))
    return float(t)


def recall_at_fpr(y_true: Any, scores: Any, budget: float) -> float:
    """The highest recall (TPR) of any threshold whose FPR on these rows is at most ``budget``:
    the candidates' selection score for objective ``recall_at_budget`` (one CV fold at a time;
    :func:`objective_scorer`). 0.0 when no row is benign or threat."""
    y = np.asarray(y_true).astype(int)
    benign, threats = int((y == 0).sum()), int((y == 1).sum())
    if not benign or not threats:
        return 0.0
    fp, tp, _ = _curve(y, np.asarray(scores, dtype=np.float64))
    ok = fp <= budget * benign + 1e-9
    return float(tp[ok].max() / threats)


def objective_scorer(policy: DecisionPolicy, metric: str) -> Any:
    """The search's ``scoring``: recall at the budget (a scikit-learn scorer on predict_proba)
    for ``recall_at_budget``, else ``metric`` (``training.metric``) as before."""
    if policy.objective != "recall_at_budget":
        return metric
    from sklearn.metrics import make_scorer

    return make_scorer(recall_at_fpr, response_method="predict_proba", budget=policy.budget)


def budget_table(
    y_true: Any, scores: Any, budgets: tuple[float, ...] = TABLE_BUDGETS, *, expected_threat_rate: float
) -> list[dict[str, Any]]:
    """For each budget, the threshold these rows would give (the highest recall with FPR at most
    the budget, no margin: a description of the rows, not a choice) and its FPR, recall,
    precision at ``expected_threat_rate``. One dict per budget, rates rounded to 6 digits."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    benign, threats = int((y == 0).sum()), int((y == 1).sum())
    if not benign or not threats:
        return []
    fp, tp, thr = _curve(y, s)
    rows = []
    for b in budgets:
        ok = np.flatnonzero(fp <= b * benign + 1e-9)
        i = int(ok[np.flatnonzero(tp[ok] == tp[ok].max())[0]])
        t = float(min(thr[i], 1.0)) if math.isfinite(thr[i]) else 1.0
        fpr, rec = fp[i] / benign, tp[i] / threats
        prec = precision_at_rate(rec, fpr, expected_threat_rate)
        rows.append(
            {
                "budget": b,
                "threshold": round(t, 6),
                "fpr": round(float(fpr), 6),
                "recall": round(float(rec), 6),
                "precision_at_rate": None if prec is None else round(float(prec), 6),
            }
        )
    return rows


def pct(x: float | None) -> str:
    """A rate as a short percentage (0.0084 -> ``0.84%``); ``n/a`` for None."""
    if x is None:
        return "n/a"
    v = 100 * x
    return f"{v:.2g}%" if v < 1 else f"{v:.3g}%"
