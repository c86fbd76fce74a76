"""The fast path serves the model the pipeline promotes: every candidate type, rows with and
without NaN, verified at load on the model's own test split, and refused when it disagrees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from serving_helpers import DETAILS, TARGET, fit, register, training_frame

from netsec_tasks.candidates import get_candidate
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.preprocessing import build_preprocessor
from netsec_testing import REPO
from serving.fastpath import ATOL, fast_path_for
from serving.loading import verification_rows

# netsec_tasks.candidates, shrunk so that each fits in well under a second.
SMALL = {
    "random_forest": {"n_estimators": 12},
    "decision_tree": {"max_depth": 10},
    "hist_gradient_boosting": {"max_iter": 15, "early_stopping": False},
    "logistic_regression": {},
    "adaboost": {"n_estimators": 8},
    "xgboost": {"n_estimators": 20, "max_depth": 4},
}
# What each type must be served by (the table in the serving.fastpath package doc).
PREDICTOR = {
    "random_forest": "onnxruntime float32",
    "decision_tree": "onnxruntime float32",
    "hist_gradient_boosting": "treelite GTIL up to 128 rows, scikit-learn predict_proba (1 OpenMP "
    "thread) above",
    "logistic_regression": "onnxruntime float64",
    "adaboost": "onnxruntime float32",
    "xgboost": "onnxruntime float32 up to 32 rows, xgboost inplace_predict above",
}


@pytest.fixture(scope="module")
def schema():
    return load_schema(REPO / "config" / "schema" / "phishing.yaml")


def _netsec_pipeline(kind: str, schema, frame: pd.DataFrame):
    """The pipeline netsec_tasks.train builds: the schema's preprocessor, then the candidate."""
    from sklearn.pipeline import Pipeline

    est = get_candidate(kind).build(0).set_params(**SMALL[kind])
    pipe = Pipeline([("preprocess", build_preprocessor(schema)), ("model", est)])
    x = frame[schema.features]
    return pipe.fit(x, (frame[TARGET] == -1).astype(int))


def _assert_agrees(fast, pipe, rows, features):
    got = fast.predict_proba(rows)
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=features)
    ref = pipe.predict_proba(frame)
    if fast.exact:
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got[:, 1], ref[:, 1], rtol=0, atol=ATOL)
    # The decision is the model's own predict() (its threshold; a bare Pipeline's 0.5 rule).
    from netsec_tasks.operating_point import decide, model_threshold

    np.testing.assert_array_equal(decide(got[:, 1], model_threshold(pipe)), pipe.predict(frame))


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_every_candidate_compiles_and_agrees_with_and_without_nan(kind, schema):
    from netsec_tasks.operating_point import with_threshold

    train = training_frame(500, seed=3)
    # The registered form: the Pipeline inside a FixedThresholdClassifier.
    pipe = with_threshold(_netsec_pipeline(kind, schema, train), 0.3)
    features, types = schema.features, ["double"] * len(schema.features)
    rows = verification_rows(training_frame(300, seed=8), features, types)
    assert np.isnan(rows).any(axis=1).sum() == 300 and not np.isnan(rows[:300]).any()

    fast, why = fast_path_for(pipe, features, rows, rows_source="test", batch_threads=2, threshold=0.3)
    assert fast is not None, why
    assert why.startswith(
        f"compiled: {PREDICTOR[kind]}; preprocessing: identity on rows without "
        "NaN, fitted steps otherwise; verified on 600 rows of test"
    ), why

    # Rows it was not verified on: clean, with NaN, mixed in one batch and one at a time.
    fresh = verification_rows(training_frame(400, seed=21), features, types, seed=5)
    with_nan = fresh[np.isnan(fresh).any(axis=1)]
    for part in (fresh, fresh[:1], with_nan[:1], with_nan[:7], fresh[:3]):
        _assert_agrees(fast, pipe, part, features)
    # NaN rows go through the fitted imputer itself: the same matrix as the pipeline's step.
    np.testing.assert_array_equal(
        fast.preprocess(with_nan), pipe.estimator[:-1].transform(pd.DataFrame(with_nan, columns=features))
    )


def test_ties_get_the_pipelines_class():
    """An even number of trees gives P = 0.5 exactly; float32 sums land on either side of it,
    so those rows are decided by the estimator itself."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(4)
    x = rng.normal(size=(1600, 5))
    y = (x[:, 0] + x[:, 1] + rng.normal(0, 1.0, 1600) > 0).astype(int)
    rf = RandomForestClassifier(6, random_state=0).fit(x[:800], y[:800])  # pure leaves: votes
    x = x[800:]
    ref = rf.predict_proba(x)
    assert (ref[:, 1] == 0.5).sum() > 10  # the data does produce ties
    fast, why = fast_path_for(rf, list("abcde"), x)
    assert fast is not None, why
    got = fast.predict_proba(x)
    np.testing.assert_array_equal(got.argmax(axis=1), ref.argmax(axis=1))
    np.testing.assert_array_equal(got[ref[:, 1] == 0.5], ref[ref[:, 1] == 0.5])


@pytest.mark.parametrize("threshold", [1 / 3, 2 / 3, 5 / 6])
def test_rows_on_the_models_threshold_get_its_decision(threshold):
    """A registered model decides at its own threshold: P(threat) of a 6-tree forest is k/6, and
    float32 sums land on either side of k/6, so rows within ATOL of the threshold are scored by
    the estimator itself, and the fast path's decisions equal the artifact's own predict()."""
    from sklearn.ensemble import RandomForestClassifier

    from netsec_tasks.operating_point import as_threshold, decide, with_threshold

    rng = np.random.default_rng(5)
    x = rng.normal(size=(1600, 5))
    y = (x[:, 0] + x[:, 1] + rng.normal(0, 1.0, 1600) > 0).astype(int)
    model = with_threshold(RandomForestClassifier(6, random_state=0).fit(x[:800], y[:800]), threshold)
    t = as_threshold(threshold)
    x = x[800:]
    ref = model.predict_proba(x)[:, 1]
    assert (np.abs(ref - t) < 1e-6).sum() > 10  # rows sit on the threshold
    fast, why = fast_path_for(model, list("abcde"), x, threshold=t)
    assert fast is not None, why
    np.testing.assert_array_equal(decide(fast.predict_proba(x)[:, 1], t), model.predict(x))
    # Verification checks decisions against the model's predict(): a fast path told another
    # threshold than the model's is dropped.
    wrong, why = fast_path_for(model, list("abcde"), x, threshold=0.99)
    assert wrong is None and "decides otherwise than the model's predict()" in why


def test_thresholds_that_round_up_in_float32_route_like_scikit_learn():
    """Large integer counts (bytes on an intrusion data set) are not all float32 values: a
    midpoint threshold can round up to a value the data holds, which ONNX then sends left."""
    from sklearn.tree import DecisionTreeClassifier

    base = 2**25  # float32 spacing is 4 here
    x = np.array([[base], [base + 4], [base + 8], [base + 12]], dtype=float)
    y = np.array([0, 1, 0, 1])
    tree = DecisionTreeClassifier(random_state=0).fit(x, y)
    thr = tree.tree_.threshold[tree.tree_.feature >= 0]
    assert (thr.astype(np.float32).astype(float) > thr).any()  # the case this test is about
    fast, why = fast_path_for(tree, ["bytes"], x)
    assert fast is not None, why
    np.testing.assert_array_equal(fast.predict_proba(x), tree.predict_proba(x))


def test_mixed_type_model_uses_the_fitted_preprocessing_and_a_fast_estimator():
    """Models with a categorical column score DataFrames: the fitted ColumnTransformer (imputers,
    one-hot) runs, then the compiled estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import KNNImputer, SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(2)
    n = 600
    frame = pd.DataFrame(
        {
            "duration": rng.exponential(10, n),
            "src_bytes": rng.integers(0, 10**6, n),
            "protocol_type": rng.choice(["tcp", "udp", "icmp"], n),
        }
    )
    y = ((frame["protocol_type"] == "icmp") | (frame["src_bytes"] > 8 * 10**5)).astype(int)
    pre = ColumnTransformer(
        [
            ("numeric", KNNImputer(keep_empty_features=True), ["duration", "src_bytes"]),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                ["protocol_type"],
            ),
        ],
        sparse_threshold=0.0,
    )
    pipe = Pipeline([("preprocess", pre), ("model", HistGradientBoostingClassifier(max_iter=10))])
    pipe.fit(frame, y)
    features, types = list(frame.columns), ["double", "long", "string"]
    rows = verification_rows(frame.head(200), features, types)
    assert isinstance(rows, pd.DataFrame) and rows[["duration", "src_bytes"]].isna().any(axis=1).sum() == 200
    fast, why = fast_path_for(pipe, features, rows)
    assert fast is not None and "preprocessing: fitted steps;" in why, why
    _assert_agrees(fast, pipe, verification_rows(frame.tail(100), features, types, seed=9), features)


# --- at load time, through the service ----------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One registry, one XGBoost pipeline registered three times: its test split in storage
    (``netsec.test_uri``), logged in its run (before the storage hand-off), and without one."""
    root = tmp_path_factory.mktemp("fastpath-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    pipe, frame = fit("xgboost", n_rows=400)
    register(uri, pipe, frame, name="netsec-xgb", artifact_root=root / "artifacts")
    register(uri, pipe, frame, name="netsec-legacy", artifact_root=root / "artifacts", test_split="artifact")
    register(uri, pipe, frame, name="netsec-no-test", artifact_root=root / "artifacts", test_split=None)
    return uri, pipe


def test_loaded_model_is_verified_on_its_test_split_and_scores_nan_rows(store, make_client):
    uri, pipe = store
    client = make_client(uri, model_name="netsec-xgb")
    info = client.get("/model", headers=DETAILS).json()
    assert info["model_class"] == "XGBClassifier"
    assert info["inference_path"].startswith(
        "compiled: onnxruntime float32 up to 32 rows, xgboost inplace_predict above"
    ), info["inference_path"]
    assert "-test.parquet: max |dp|" in info["inference_path"]  # netsec.test_uri, read from storage
    model = client.app.state.serving.manager.current
    assert model.fast is not None
    rows = training_frame(60, seed=31).drop(columns=[TARGET])
    x = rows.to_numpy(dtype=float, copy=True)
    x[::3, 2] = np.nan
    x[1::3, [0, 5, 9]] = np.nan
    is_threat, proba = model.predict(x)
    expected = pipe.predict_proba(pd.DataFrame(x, columns=rows.columns))[:, 1]
    np.testing.assert_array_equal(proba, expected)  # 60 rows: inplace_predict, exact
    np.testing.assert_array_equal(is_threat, (expected > 0.5).astype(np.int8))
    for i in (0, 1, 2):  # one row: onnxruntime, within ATOL
        _is_threat, p = model.predict(x[i : i + 1])
        assert abs(p[0] - expected[i]) <= ATOL


def test_version_from_before_the_storage_hand_off_is_verified_on_its_logged_split(store, make_client):
    uri, _pipe = store
    info = make_client(uri, model_name="netsec-legacy").get("/model", headers=DETAILS).json()
    assert info["inference_path"].startswith("compiled: "), info["inference_path"]
    assert "data/test.parquet: max |dp|" in info["inference_path"]


def test_version_without_test_split_keeps_the_pipeline(store, make_client):
    uri, pipe = store
    client = make_client(uri, model_name="netsec-no-test")
    info = client.get("/model", headers=DETAILS).json()
    assert info["inference_path"].startswith("scikit-learn (no test split to verify a fast path on"), info
    # Nor reasons: their additivity is checked on the same rows.
    assert info["reasons"] == {
        "available": False,
        "unit": None,
        "base_value": None,
        "method": None,
        "detail": "off: no test split to verify reasons on (the server log has why)",
    }
    rows = training_frame(20, seed=2).drop(columns=[TARGET])
    got = client.post("/predict", json={"records": rows.to_dict(orient="records")}).json()["predictions"]
    np.testing.assert_array_equal([p["threat_probability"] for p in got], pipe.predict_proba(rows)[:, 1])


def test_wrong_fast_path_is_dropped_at_load(store, make_client, monkeypatch, caplog):
    """A fast path that disagrees with the pipeline is logged and dropped; the service serves the
    plain pipeline."""
    from serving import fastpath

    real_plan = fastpath.plan_for

    def off_by_a_bit(est, n):
        plan = real_plan(est, n)
        wrong = fastpath.Predictor("wrong", lambda z: np.clip(plan.small.fn(z) + 1e-3, 0, 1), exact=True)
        return fastpath.Plan(wrong, wrong, 0, False)

    # compile_pipeline looks plan_for up in its own module.
    monkeypatch.setattr(fastpath.compiled, "plan_for", off_by_a_bit)
    uri, pipe = store
    with caplog.at_level("WARNING", logger="netsec.serving"):
        client = make_client(uri, model_name="netsec-xgb")
    info = client.get("/model", headers=DETAILS).json()
    assert info["inference_path"].startswith("scikit-learn (fast path disagreed on "), info
    assert "differs (exact predictor)" in info["inference_path"], info["inference_path"]
    assert any("fast path dropped" in r.getMessage() for r in caplog.records)
    assert client.app.state.serving.manager.current.fast is None
    rows = training_frame(20, seed=2).drop(columns=[TARGET])
    got = client.post("/predict", json={"records": rows.to_dict(orient="records")}).json()["predictions"]
    np.testing.assert_array_equal([p["threat_probability"] for p in got], pipe.predict_proba(rows)[:, 1])
