"""Live performance of the threat class from analysts' verdicts: counts, precision, recall and
F1 with confidence intervals, and the rule that turns a low F1 into a retraining request.

Precision and recall are binomial proportions (TP of the predicted threats, TP of the real
threats), so their intervals are Wilson score intervals
(``statsmodels.stats.proportion.proportion_confint``), which stay inside [0, 1] and honest for
small counts. F1 is not a proportion: its interval is a percentile bootstrap. Resampling the
labelled rows with replacement is a multinomial draw over the four cells of the confusion
matrix, so ``bootstrap`` resamples cost one ``numpy`` call whatever the number of labels.

Verdicts come from triage: analysts mostly look at what the model flagged, so precision is
estimated from many verdicts and recall only from the benign-predicted rows someone checked.
The report shows the counts behind each figure for that reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netsec_tasks.operating_point import pct, rate_interval


def _wilson(successes: int, trials: int, confidence: float) -> list[float] | None:
    if trials == 0:
        return None
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    return [round(float(low), 6), round(float(high), 6)]


def _f1(tp, fp, fn):
    tp, fp, fn = (np.asarray(v, dtype=float) for v in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def live_metrics(
    y_true: Any, y_pred: Any, *, confidence: float = 0.95, bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Threat-class metrics of predictions ``y_pred`` (0/1) against verdicts ``y_true`` (0/1).

    Returns ``labelled``, ``tp``, ``fp``, ``fn``, ``tn``, ``precision``, ``recall``, ``f1``,
    ``fpr`` (None when undefined: no predicted, no real threats, no benign verdicts) and
    ``precision_ci``, ``recall_ci``, ``f1_ci``, ``fpr_ci`` ([low, high] at ``confidence``, None
    when undefined), ``confidence``.
    """
    t = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f"{len(t)} verdicts for {len(p)} predictions")
    tp, fp = int((t & p).sum()), int((~t & p).sum())
    fn, tn = int((t & ~p).sum()), int((~t & ~p).sum())
    n = len(t)
    out: dict[str, Any] = {"labelled": n, "tp": tp, "fp": fp, "fn": fn, "tn": tn, "confidence": confidence}
    out["precision"] = round(tp / (tp + fp), 6) if tp + fp else None
    out["recall"] = round(tp / (tp + fn), 6) if tp + fn else None
    f1 = float(_f1(tp, fp, fn))
    out["f1"] = None if np.isnan(f1) else round(f1, 6)
    out["precision_ci"] = _wilson(tp, tp + fp, confidence)
    out["recall_ci"] = _wilson(tp, tp + fn, confidence)
    # The false-positive rate among benign verdicts, with the Clopper-Pearson interval every
    # rate at the operating point gets (netsec_tasks.operating_point.rate_interval).
    out["fpr"] = round(fp / (fp + tn), 6) if fp + tn else None
    low, high = rate_interval(fp, fp + tn, confidence)
    out["fpr_ci"] = None if low is None or high is None else [round(low, 6), round(high, 6)]
    out["f1_ci"] = None
    if out["f1"] is not None:
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n, np.array([tp, fp, fn, tn]) / n, size=bootstrap)
        samples = _f1(draws[:, 0], draws[:, 1], draws[:, 2])
        samples = samples[~np.isnan(samples)]
        if len(samples):
            alpha = 1 - confidence
            low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
            out["f1_ci"] = [round(float(low), 6), round(float(high), 6)]
    return out


def f1_below_floor(live: dict[str, Any], *, floor: float, min_labels: int) -> tuple[bool, str]:
    """(alarm?, why): live F1 is below ``floor`` only when there are at least ``min_labels``
    verdicts *and* the whole confidence interval lies below the floor, so a handful of verdicts,
    or an F1 that is merely uncertain, never raises it."""
    n = int(live.get("labelled") or 0)
    f1, ci = live.get("f1"), live.get("f1_ci")
    if n < min_labels:
        return False, f"{n} verdict(s) on Production's predictions, fewer than min_labels={min_labels}"
    if f1 is None or ci is None:
        return False, f"live F1 undefined on {n} verdicts (no real and no predicted threats)"
    level = f"{live.get('confidence', 0.95):.0%}"
    text = f"live F1 {f1:.3f} ({level} CI {ci[0]:.3f}-{ci[1]:.3f}) on {n} verdicts"
    if ci[1] < floor:
        return True, f"{text} is below the floor {floor:.3f}"
    return False, f"{text}: not confidently below the floor {floor:.3f}"


def fpr_over_budget(live: dict[str, Any], *, budget: float, min_labels: int) -> tuple[bool, str]:
    """(alarm?, why): the live false-positive rate is over the budget
    (``decision.max_false_positive_rate``) only when at least ``min_labels`` verdicts judged rows
    benign *and* the lower end of its interval is above the budget: the verdicts show the model
    raises more false alerts than the analysts are staffed for.

    Verdicts come from triage, which looks at alerts first, so benign verdicts over-represent
    alerted rows and the live FPR leans high; the report shows the counts behind it."""
    fp, tn = int(live.get("fp") or 0), int(live.get("tn") or 0)
    fpr, ci = live.get("fpr"), live.get("fpr_ci")
    if fp + tn < min_labels:
        return False, f"{fp + tn} benign verdict(s), fewer than min_labels={min_labels} for a live FPR"
    assert fpr is not None and ci is not None  # defined once there are benign verdicts
    level = f"{live.get('confidence', 0.95):.0%}"
    text = f"live FPR {pct(fpr)} ({level} CI {pct(ci[0])}-{pct(ci[1])}) on {fp + tn} benign verdicts"
    budget_text = f"the false-positive budget {pct(budget)} (decision.max_false_positive_rate)"
    if ci[0] > budget:
        return True, f"{text} is over {budget_text}"
    return False, f"{text}: not over {budget_text}"
