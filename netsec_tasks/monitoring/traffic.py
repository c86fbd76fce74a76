"""What the served traffic looks like: drift of its features from Production's training data,
and volume, threat rate and score distribution against Production's test split.

Feature drift is the drift step's own test (``netsec_tasks.drift``: chi-square or KS per column,
multiple-testing correction, an effect-size floor, a share of drifted columns) on the rows logged
since the last run, after the input contract: rows that break it (logged under an older schema,
or by another writer) are left out and reported, never compared. Fewer than
``monitoring.min_rows`` valid rows are not tested at all: the rows wait for the next run.

The served alert rate is compared with the rate Production's operating point expects in
deployment (recall x the expected threat rate + FPR x the rest), with its interval. The threat
rate and the score distribution are compared with the Production model's own decisions (at its
threshold) on its test split (a two-sample chi-square on the counts, and KS with the
Wasserstein distance in IQRs on the probabilities). They are reported, not acted on: a change
in the share of threats is what a threat detector exists to see.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.drift.stats import DriftResult, chi_square_test, continuous_test, detect_drift
from netsec_tasks.errors import ValidationFailed
from netsec_tasks.operating_point import LEGACY_THRESHOLD, decide, rate_interval


def traffic_drift(
    reference: pd.DataFrame | None,
    traffic: pd.DataFrame,
    schema: DatasetSchema,
    cfg: PipelineConfig,
    *,
    source: str,
) -> tuple[DriftResult | None, dict[str, Any], str]:
    """(the drift result or None when not tested, the excluded rows' summary, one-line reason).

    ``traffic``: logged rows (``prediction_frame``), of which the schema's features are tested.
    """
    from netsec_tasks.drift import checked_rows

    empty = {"rows_checked": len(traffic), "rows_excluded": 0, "reasons": {}, "examples": []}
    if reference is None:
        return None, empty, "no Production model with a training reference (netsec.train_uri)"
    if traffic.empty:
        return None, empty, "no new traffic since the last run"
    features = [c for c in schema.features if c in traffic.columns]
    if not features:
        return (
            None,
            empty,
            ("the logged rows hold none of the schema's features (a model of another data set?)"),
        )
    try:
        clean, excluded = checked_rows(traffic[features], schema, cfg, source=source, what="traffic")
    except ValidationFailed as exc:
        return (
            None,
            {**empty, "rows_excluded": len(traffic), "reasons": {str(exc): len(traffic)}},
            (f"traffic cannot be compared: {exc}"),
        )
    n = len(clean)
    if n < cfg.monitoring.min_rows:
        return (
            None,
            excluded,
            (
                f"{n} valid new row(s), fewer than monitoring.min_rows="
                f"{cfg.monitoring.min_rows}: they are tested with the next run's"
            ),
        )
    result = detect_drift(reference, clean, schema, cfg.drift)
    return result, excluded, result.reason()


def threat_scores(model: Any, test: pd.DataFrame, schema: DatasetSchema) -> np.ndarray:
    """Production's threat probability for each row of its test split."""
    from netsec_tasks.operating_point import threat_probability

    return np.asarray(threat_probability(model, test[schema.features]), dtype=float)


def expected_alert_rate(tags: dict[str, str]) -> float | None:
    """The share of served rows Production is expected to alert on in deployment: recall x rate +
    FPR x (1 - rate), from its test operating point and the expected threat rate it was chosen
    for (version tags ``netsec.operating_point``, written at registration); None for a version
    without them (registered before operating points)."""
    import json

    from netsec_tasks.operating_point import OperatingPoint

    try:
        point = json.loads(tags.get("netsec.operating_point") or "null")
        return OperatingPoint(**point).expected_alert_rate if point else None
    except (TypeError, ValueError):
        return None


def traffic_figures(
    traffic: pd.DataFrame,
    *,
    production_version: str | None,
    test_scores: np.ndarray | None,
    cfg: PipelineConfig,
    threshold: float | None = None,
    expected_rate: float | None = None,
    documents: int,
    since: dt.datetime | None,
    until: dt.datetime,
) -> dict[str, Any]:
    """Volume (rows, requests, rows per hour from ``since``, the previous run, to ``until``;
    from the first logged row on a first run), threat rate and score distribution of the
    Production version's rows against its test split (decided at ``threshold``, the model's),
    and the served alert rate with its interval against ``expected_rate``, the rate its
    operating point expects in deployment (:func:`expected_alert_rate`)."""
    out: dict[str, Any] = {"rows": int(len(traffic)), "requests": int(documents)}
    if traffic.empty:
        out["rows_per_hour"] = 0.0 if since is not None else None
        return out
    times = pd.to_datetime(traffic["time"], utc=True)
    first, last = times.min(), times.max()
    start = pd.Timestamp(since) if since is not None else first
    hours = max((pd.Timestamp(until) - start).total_seconds() / 3600.0, 1.0 / 60)
    out.update(
        first_time=first.isoformat(),
        last_time=last.isoformat(),
        rows_per_hour=round(len(traffic) / hours, 3),
        by_version={str(k): int(v) for k, v in traffic["model_version"].value_counts().items()},
    )
    mine = traffic[traffic["model_version"] == str(production_version)]
    out["production_rows"] = int(len(mine))
    if mine.empty:
        return out
    alpha, min_effect = cfg.drift.alpha, cfg.drift.min_effect
    threats = int(pd.to_numeric(mine["is_threat"]).sum())
    rate = threats / len(mine)
    out["threat_rate"] = round(rate, 6)
    # The served alert rate (the same share: the served decisions) against what the operating
    # point expects at the deployment's threat rate: above it when the interval's lower end is.
    low, high = rate_interval(threats, len(mine), cfg.monitoring.confidence)
    out["alert_rate"] = round(rate, 6)
    out["alert_rate_ci"] = [round(low or 0.0, 6), round(high or 0.0, 6)]
    if expected_rate is not None:
        out["expected_alert_rate"] = round(expected_rate, 6)
        out["alert_rate_vs_expected"] = (
            "above"
            if (low or 0.0) > expected_rate
            else "below"
            if (high or 1.0) < expected_rate
            else "within"
        )
    if test_scores is None or not len(test_scores):
        return out
    # The test split decided as serving decides (the model's threshold; 0.5 without one).
    test_threats = int(decide(test_scores, LEGACY_THRESHOLD if threshold is None else threshold).sum())
    test_rate = test_threats / len(test_scores)
    stat, p, _, _ = chi_square_test(
        np.array([test_threats, len(test_scores) - test_threats]), np.array([threats, len(mine) - threats])
    )
    out["threat_rate_test"] = round(test_rate, 6)
    out["threat_rate_p"] = round(p, 6)
    out["threat_rate_shifted"] = bool(p < alpha and abs(rate - test_rate) >= min_effect)
    scores = pd.to_numeric(mine["threat_probability"], errors="coerce").dropna()
    if len(scores):
        col = continuous_test("threat_probability", pd.Series(test_scores), scores)
        out["score"] = {
            "mean": round(float(scores.mean()), 6),
            "mean_test": round(float(np.mean(test_scores)), 6),
            "ks": round(col.statistic, 6),
            "p": round(col.p_value, 6),
            "wasserstein_iqr": round(col.effect, 6),
            "shifted": bool(col.p_value < alpha and col.effect >= min_effect),
            "edges": col.labels,
            "test_share": [round(x, 6) for x in col.reference_share],
            "traffic_share": [round(x, 6) for x in col.current_share],
        }
    return out
