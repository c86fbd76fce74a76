"""Per-row reasons (netsec_tasks.explain): additivity for every candidate type, folding of one-hot
and imputed features back to schema columns, and the load-time check that turns reasons off."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from netsec_tasks.candidates import CANDIDATES, get_candidate
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.explain import (
    ADDITIVITY_TOL,
    LOG_ODDS,
    PROBABILITY,
    Explainer,
    NotExplainable,
    reasons_text,
    verified_explainer,
)
from netsec_tasks.intrusion_sample import make_intrusion_sample
from netsec_tasks.preprocessing import fit_preprocessor
from netsec_tasks.sample import make_sample

# Small but real versions of every candidate (the search's spaces are larger).
SMALL = {
    "random_forest": {"n_estimators": 40},
    "decision_tree": {"max_depth": 10},
    "hist_gradient_boosting": {"max_iter": 40},
    "logistic_regression": {},
    "adaboost": {"n_estimators": 25},
    "xgboost": {"n_estimators": 60},
}
UNITS = {
    "random_forest": PROBABILITY,
    "decision_tree": PROBABILITY,
    "hist_gradient_boosting": LOG_ODDS,
    "logistic_regression": LOG_ODDS,
    "adaboost": LOG_ODDS,
    "xgboost": LOG_ODDS,
}


def _with_gaps(x: pd.DataFrame, columns: list[str], share: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = x.copy()
    for c in columns:
        x[c] = x[c].astype(float).mask(rng.random(len(x)) < share)
    return x


@pytest.fixture(scope="module")
def phishing():
    """The phishing schema, its preprocessor fitted the netsec way, train and test rows (with
    gaps in five columns, so the KNN imputer has work)."""
    schema = load_schema("config/schema/phishing.yaml")
    frame = make_sample(1500, seed=11)
    x = _with_gaps(frame[schema.features], schema.features[:5], 0.05, seed=1)
    y = np.asarray(schema.is_threat(frame[schema.target.column]), dtype=int)
    pre = fit_preprocessor(schema, x.iloc[:1200])
    return schema, pre, x.iloc[:1200], y[:1200], x.iloc[1200:].reset_index(drop=True)


@pytest.fixture(scope="module")
def intrusion():
    """The intrusion demo: three categorical features (one-hot) and continuous ones."""
    schema = load_schema("config/schema/intrusion_demo.yaml")
    frame = make_intrusion_sample(1500, seed=5)
    x = _with_gaps(frame[schema.features], ["count", "dst_bytes"], 0.05, seed=2)
    y = np.asarray(schema.is_threat(frame[schema.target.column]), dtype=int)
    pre = fit_preprocessor(schema, x.iloc[:1200])
    return schema, pre, x.iloc[:1200], y[:1200], x.iloc[1200:].reset_index(drop=True)


def _fit(data, kind: str):
    schema, pre, x, y, _test = data
    est = get_candidate(kind).build(0).set_params(**SMALL[kind])
    return Pipeline([("preprocess", pre), ("model", est)]).fit(x, y)


def test_every_candidate_is_covered():
    assert set(SMALL) == set(CANDIDATES)


@pytest.mark.parametrize("dataset", ["phishing", "intrusion"])
@pytest.mark.parametrize("kind", sorted(SMALL))
def test_additivity_for_every_candidate_type(kind, dataset, request):
    """base + sum(contributions) = the model's margin on every test row, and that margin is the
    Pipeline's P(threat): per candidate type, on both data sets (one-hot and imputed columns)."""
    data = request.getfixturevalue(dataset)
    schema, _pre, _x, _y, test = data
    pipe = _fit(data, kind)
    explainer, status = verified_explainer(pipe, schema.features, test, rows_source="test")
    assert explainer is not None, status
    assert status.startswith("exact: ") and "additivity verified on 64 rows of test" in status
    assert explainer.unit == UNITS[kind]

    c = explainer.contributions(test)
    assert c.values.shape == (len(test), len(schema.features))
    proba = pipe.predict_proba(test)[:, 1]
    margin = c.margin
    if explainer.unit == LOG_ODDS:
        np.testing.assert_allclose(1 / (1 + np.exp(-margin)), proba, atol=1e-6)
    else:
        np.testing.assert_allclose(margin, proba, atol=ADDITIVITY_TOL)
    np.testing.assert_allclose(
        margin, explainer.method.margin(explainer.preprocessed(test)), atol=ADDITIVITY_TOL
    )
    # The reasons carry real signal: some column moves most rows.
    assert (np.abs(c.values).max(axis=1) > 0).mean() > 0.9


def test_xgboost_with_early_stopping_explains_the_trees_it_predicts_with(phishing):
    """Early stopping keeps trees after the best iteration; predict_proba ignores them and so must
    the contributions."""
    schema, pre, x, y, test = phishing
    est = get_candidate("xgboost").build(0).set_params(n_estimators=300, early_stopping_rounds=5)
    z = pre.transform(x)
    est.fit(z[:1000], y[:1000], eval_set=[(z[1000:], y[1000:])], verbose=False)
    assert est.best_iteration + 1 < est.get_booster().num_boosted_rounds()
    pipe = Pipeline([("preprocess", pre), ("model", est)])
    explainer, status = verified_explainer(pipe, schema.features, test)
    assert explainer is not None, status


def test_one_hot_columns_fold_into_their_source_column(intrusion):
    """A categorical column's contribution is the sum of its one-hot columns' contributions, and
    its reason shows the category the row had."""
    schema, _pre, _x, _y, test = intrusion
    pipe = _fit(intrusion, "logistic_regression")
    explainer = Explainer(pipe, schema.features)
    z = explainer.preprocessed(test)
    raw, _base = explainer.method.contributions(z)
    assert raw.shape[1] > len(schema.features)  # one-hot widened the matrix
    folded = explainer.contributions(test, z).values
    for name in schema.categorical_features:
        j = schema.features.index(name)
        outputs = np.flatnonzero(explainer.folding.sources == j)
        assert len(outputs) > 1
        np.testing.assert_allclose(folded[:, j], raw[:, outputs].sum(axis=1))
    # Every reason names a schema column with the row's own value.
    for i, row in enumerate(explainer.reasons(test.iloc[:50], len(schema.features))):
        for r in row:
            assert r.column in schema.features
            expected = test.iloc[i][r.column]
            assert r.value == (None if pd.isna(expected) else expected)


def test_imputed_cells_say_so_with_the_imputers_value(intrusion):
    schema, pre, _x, _y, test = intrusion
    pipe = _fit(intrusion, "hist_gradient_boosting")
    explainer = Explainer(pipe, schema.features)
    rows = test[test["dst_bytes"].isna()].head(5)
    assert len(rows) == 5
    knn = pre.named_transformers_["numeric"].estimator  # the fitted KNNImputer (frozen)
    filled = knn.transform(rows[schema.numeric_features])[:, schema.numeric_features.index("dst_bytes")]
    reasons = explainer.reasons(rows, len(schema.features))
    for row, value in zip(reasons, filled):
        (r,) = [r for r in row if r.column == "dst_bytes"]
        assert r.imputed and r.value is None
        assert r.imputed_value == pytest.approx(value)
        assert "dst_bytes=(missing, imputed " in reasons_text(row)
    assert not any(
        r.imputed for row in reasons for r in row if r.column != "dst_bytes" and r.value is not None
    )


def test_reasons_are_the_k_strongest_by_absolute_contribution(phishing):
    schema, _pre, _x, _y, test = phishing
    pipe = _fit(phishing, "xgboost")
    explainer = Explainer(pipe, schema.features)
    c = explainer.contributions(test.iloc[:20])
    reasons = explainer.reasons(test.iloc[:20], 3, contributions=c)
    for i, row in enumerate(reasons):
        assert len(row) == 3
        strongest = np.sort(np.abs(c.values[i]))[::-1][:3]
        np.testing.assert_allclose([abs(r.contribution) for r in row], strongest)
        assert all(r.direction == ("threat" if r.contribution > 0 else "benign") for r in row)
    text = reasons_text(reasons[0])
    assert text.count(";") == 2 and text.startswith(reasons[0][0].column + "=")


def test_a_decision_wrapper_is_unwrapped(phishing):
    """The registered artifact may be the Pipeline inside scikit-learn's FixedThresholdClassifier
    (issue 23): the explainer explains the Pipeline inside it."""
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import FixedThresholdClassifier

    schema, _pre, x, y, test = phishing
    pipe = _fit(phishing, "random_forest")
    wrapped = FixedThresholdClassifier(FrozenEstimator(pipe), threshold=0.3).fit(x, y)
    explainer, status = verified_explainer(wrapped, schema.features, test)
    assert explainer is not None, status


def test_an_estimator_without_an_exact_method_has_no_reasons(phishing):
    from sklearn.naive_bayes import GaussianNB

    schema, pre, x, y, test = phishing
    pipe = Pipeline([("preprocess", pre), ("model", GaussianNB())]).fit(x, y)
    explainer, status = verified_explainer(pipe, schema.features, test)
    assert explainer is None
    assert status.startswith("off: GaussianNB has no exact contribution method")
    with pytest.raises(NotExplainable, match="GaussianNB"):
        Explainer(pipe, schema.features)


def test_additivity_failure_turns_reasons_off(phishing):
    """The check compares with the model itself: an explainer that no longer matches the model
    (its coefficients changed after the explainer was built) fails and says by how much."""
    schema, _pre, _x, _y, test = phishing
    pipe = _fit(phishing, "logistic_regression")
    explainer = Explainer(pipe, schema.features)
    assert explainer.verify(pipe, test).ok
    pipe.named_steps["model"].named_steps["clf"].coef_ *= 1.5
    verdict = explainer.verify(pipe, test)
    assert not verdict.ok and verdict.why.startswith("additivity fails on row ")
    assert verdict.max_abs_diff > ADDITIVITY_TOL
    # Scored by another model than the one explained: the margin is not its P(threat).
    other = _fit(phishing, "decision_tree")
    fresh = Explainer(_fit(phishing, "random_forest"), schema.features)
    verdict = fresh.verify(other, test)
    assert not verdict.ok and "is not the model's P(threat)" in verdict.why


def test_big_forests_are_explained_in_bounded_calls(phishing, monkeypatch):
    """A forest is explained in groups of trees and chunks of rows (each call into shap's C code
    holds the GIL): the weighted groups give exactly the whole forest's values."""
    import shap

    from netsec_tasks.explain import methods

    schema, _pre, _x, _y, test = phishing
    pipe = _fit(phishing, "random_forest")
    monkeypatch.setattr(methods, "CALL_WORK", 50_000)  # a budget this small forest exceeds
    explainer = Explainer(pipe, schema.features)
    shap_values = explainer.method.contributions
    assert isinstance(shap_values, methods._TreeShap)
    assert len(shap_values.parts) > 3 and shap_values.rows_per_call < 30
    z = explainer.preprocessed(test.iloc[:30])
    whole = shap.TreeExplainer(pipe.named_steps["model"])
    expected = whole.shap_values(z, check_additivity=False)[..., 1]
    values, base = shap_values(z)
    np.testing.assert_allclose(values, expected, atol=1e-12)
    assert base == pytest.approx(whole.expected_value[1], abs=1e-12)


def test_report_summaries_are_means_of_the_same_contributions(phishing):
    """Global importance, the reasons behind a set of rows (the false positives) and the change
    of mean contributions between two sets of rows, from the one explainer."""
    from netsec_tasks.explain import contribution_shift, explain_sample, global_importance, top_reasons

    schema, _pre, _x, _y, test = phishing
    pipe = _fit(phishing, "hist_gradient_boosting")
    explainer = Explainer(pipe, schema.features)
    alerts = pipe.predict(test) == 1
    everything = explain_sample(explainer, test)
    assert not everything.sampled and everything.describe().startswith(
        f"mean contributions over {len(test)} rows"
    )
    values = everything.contributions.values

    table = global_importance(everything, {"alerts": alerts, "none": np.zeros(len(test), bool)})
    np.testing.assert_allclose(
        table["overall"], np.abs(values).mean(axis=0)[[schema.features.index(c) for c in table.index]]
    )
    np.testing.assert_allclose(table.loc[schema.features[0], "alerts"], np.abs(values[alerts, 0]).mean())
    assert table["none"].isna().all() and list(table["overall"]) == sorted(table["overall"], reverse=True)

    why = top_reasons(everything, alerts, k=3, top=None)
    assert why["rows"].max() <= alerts.sum() and (why["rows"] > 0).all()
    towards = np.where(values[alerts] > 0, values[alerts], 0)
    strongest = np.argmax(towards, axis=1)
    assert why.index[0] in {schema.features[j] for j in np.bincount(strongest).argsort()[-3:]}

    # A sample keeps the rows asked for first and says it is a sample.
    sample = explain_sample(explainer, test, max_rows=40, seed=3, keep=alerts)
    assert sample.sampled and len(sample.rows) == 40 and "40 of 300 rows" in sample.describe()
    assert alerts[sample.rows].sum() == min(40, alerts.sum())

    shift = contribution_shift(everything, explain_sample(explainer, test[alerts]), top=None)
    mean_margin_change = values[alerts].sum(axis=1).mean() - values.sum(axis=1).mean()
    assert shift["change"].sum() == pytest.approx(mean_margin_change)
    assert abs(shift["change"].iloc[0]) == shift["change"].abs().max()
