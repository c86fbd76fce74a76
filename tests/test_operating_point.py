"""The decision (netsec_tasks.operating_point): one rule, the threshold a model carries, the
figures of an operating point, the threshold chosen from a false-positive budget, and the
data set's policy with its overrides."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from netsec_tasks.operating_point import (
    HALF_THRESHOLD,
    LEGACY_THRESHOLD,
    DecisionPolicy,
    budget_table,
    choose_threshold,
    decide,
    decision_policy,
    inner_pipeline,
    model_threshold,
    operating_point,
    precision_at_rate,
    rate_interval,
    recall_at_fpr,
    threat_probability,
    with_threshold,
)
from netsec_testing import REPO

POLICY = DecisionPolicy(
    max_false_positive_rate=0.01, expected_threat_rate=0.01, objective="recall_at_budget", confidence=0.95
)


def _data(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + 0.8 * rng.normal(size=n) > 0).astype(int)
    return X, y


@pytest.mark.parametrize(
    "estimator",
    [RandomForestClassifier(n_estimators=10, random_state=0), XGBClassifier(n_estimators=20, verbosity=0)],
    ids=["forest float64 ties", "xgboost float32"],
)
def test_decide_is_the_wrapped_models_own_predict(estimator):
    """decide(P(threat), threshold) == the artifact's predict() on every row: forests with an even
    number of trees put many rows exactly on a threshold of k/10, XGBoost scores are float32."""
    X, y = _data()
    pipe = Pipeline([("model", estimator)]).fit(X, y)
    p = threat_probability(pipe, X)
    for t in (0.3, 0.5, 0.7, float(np.median(p)), HALF_THRESHOLD):
        model = with_threshold(pipe, t)
        th = model_threshold(model)
        assert th.recorded and isinstance(model, FixedThresholdClassifier)
        assert inner_pipeline(model) is pipe
        np.testing.assert_array_equal(decide(threat_probability(model, X), th), model.predict(X))
    # Ties really were tested: rows scored exactly at a threshold exist for the forest.
    if isinstance(estimator, RandomForestClassifier):
        assert np.isin(p, [0.3, 0.5, 0.7]).any()


def test_a_bare_pipeline_decides_by_its_own_half_rule():
    """A version registered before thresholds is a bare Pipeline: not recorded, and decide()
    reproduces its argmax predict() exactly, ties at 0.5 included (benign)."""
    X, y = _data()
    pipe = Pipeline([("model", RandomForestClassifier(n_estimators=10, random_state=1))]).fit(X, y)
    th = model_threshold(pipe)
    assert not th.recorded and th.value == LEGACY_THRESHOLD
    p = threat_probability(pipe, X)
    assert (p == 0.5).any()
    np.testing.assert_array_equal(decide(p, th), pipe.predict(X))
    assert decide(np.float32([0.5, 0.5000001]), th).tolist() == [0, 1]


def test_operating_point_figures():
    # 10 threats (8 flagged), 1,000 benign (20 flagged).
    y = np.r_[np.ones(10), np.zeros(1000)].astype(int)
    pred = np.r_[np.ones(8), np.zeros(2), np.ones(20), np.zeros(980)].astype(int)
    scores = pred * 0.9 + 0.05
    point = operating_point(y, scores, 0.5, expected_threat_rate=0.01)
    assert (point.tp, point.fp, point.tn, point.fn) == (8, 20, 980, 2)
    assert point.fpr == pytest.approx(0.02) and point.recall == pytest.approx(0.8)
    assert point.alerts_per_10k_benign == pytest.approx(200)
    # At a 1% threat rate: 0.8 * 0.01 / (0.8 * 0.01 + 0.02 * 0.99)
    assert point.precision_at_rate == pytest.approx(0.008 / (0.008 + 0.0198))
    assert point.fpr_low < 0.02 < point.fpr_high
    assert (point.fpr_low, point.fpr_high) == pytest.approx(rate_interval(20, 1000, 0.95))
    assert point.over_budget(0.01) and not point.over_budget(0.02)
    assert "FPR 2%" in point.summary() and "200 false alerts" in point.summary()
    assert precision_at_rate(0.0, 0.0, 0.01) is None


def test_rate_interval_is_clopper_pearson():
    from scipy.stats import beta

    low, high = rate_interval(3, 400, 0.95)
    assert low == pytest.approx(beta.ppf(0.025, 3, 398)) and high == pytest.approx(beta.ppf(0.975, 4, 397))
    assert rate_interval(0, 0, 0.95) == (None, None)
    assert rate_interval(0, 400, 0.95)[0] == 0.0


def test_choose_threshold_keeps_the_upper_bound_within_the_budget():
    """The chosen point's out-of-fold FPR interval ends within the budget; no threshold with more
    recall does; on fresh rows of the same kind the FPR is not over the budget."""
    rng = np.random.default_rng(3)

    def rows(n):
        y = (rng.random(n) < 0.45).astype(int)
        return y, np.where(y == 1, rng.beta(6, 2, n), rng.beta(2, 6, n))

    y, s = rows(20_000)
    choice = choose_threshold(y, s, POLICY)
    pt = choice.point
    assert pt.fpr_high <= 0.01 < rate_interval(pt.fp + 1, pt.benign, 0.95)[1]
    assert pt.fpr < 0.01  # the margin: the FPR itself stays below the budget
    assert "upper end" in choice.basis
    lower = np.sort(s[s < choice.threshold])[-1]
    assert operating_point(y, s, lower, expected_threat_rate=0.01).fpr_high > 0.01
    y2, s2 = rows(20_000)
    fresh = operating_point(y2, s2, choice.threshold, expected_threat_rate=0.01)
    assert not fresh.over_budget(0.01)
    # The threshold sits between two scores: the counts on the rows are exactly the point's.
    assert not np.isin(s, [choice.threshold]).any()


def test_choose_threshold_with_too_few_benign_rows_or_objective_f1():
    y = np.r_[np.zeros(100), np.ones(100)].astype(int)
    s = np.r_[np.linspace(0, 0.6, 100), np.linspace(0.4, 1, 100)]
    choice = choose_threshold(y, s, POLICY)
    assert "too few" in choice.basis and choice.point.fp == 0
    # 0.6 (benign) and 0.6000000000000001 (a threat) have no float32 between them: the threat
    # is not flagged rather than the benign row.
    assert choice.point.recall == pytest.approx((s[100:] > 0.6 + 1e-9).mean())
    f1 = choose_threshold(y, s, DecisionPolicy(0.01, 0.01, "f1", 0.95))
    assert f1.threshold == HALF_THRESHOLD
    with pytest.raises(ValueError, match="benign and threat"):
        choose_threshold(np.ones(5), np.ones(5), POLICY)


def test_recall_at_fpr_and_budget_table():
    y = np.r_[np.zeros(1000), np.ones(100)].astype(int)
    s = np.r_[np.linspace(0, 1, 1000), np.linspace(0.95, 1.0, 100)]
    # 1% of 1,000 benign rows: 10 false positives allowed (benign scores above ~0.99).
    assert recall_at_fpr(y, s, 0.01) == pytest.approx((s[1000:] > s[989]).mean(), abs=0.011)
    table = budget_table(y, s, (0.001, 0.01, 0.05), expected_threat_rate=0.01)
    assert [r["budget"] for r in table] == [0.001, 0.01, 0.05]
    assert [r["fpr"] <= r["budget"] for r in table] == [True, True, True]
    assert table[0]["recall"] <= table[1]["recall"] <= table[2]["recall"] == 1.0


def test_policy_from_the_data_set_with_overrides(make_cfg, tmp_path):
    from netsec_tasks.config import load_config

    cfg = make_cfg()
    policy = decision_policy(cfg)
    assert (policy.budget, policy.expected_threat_rate, policy.objective) == (0.01, 0.01, "recall_at_budget")
    cfg = make_cfg(**{"decision.max_false_positive_rate": 0.005, "decision.objective": "f1"})
    policy = decision_policy(cfg)
    assert (policy.budget, policy.objective, policy.min_recall) == (0.005, "f1", 0.5)
    env = load_config(
        REPO / "config" / "pipeline.yaml",
        environ={"NETSEC_DECISION__EXPECTED_THREAT_RATE": "0.001", "NETSEC_HOME": str(tmp_path)},
    )
    assert decision_policy(env).expected_threat_rate == 0.001
    from netsec_tasks.errors import ConfigError

    with pytest.raises(ConfigError, match="decision.max_false_positive_rate"):
        make_cfg(**{"decision.max_false_positive_rate": 1.5})
