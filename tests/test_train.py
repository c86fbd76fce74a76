"""Step 5: candidates, honest tuning, one test evaluation, MLflow tracking of the winner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.model_selection import ParameterSampler
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from netsec_tasks import candidates
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.errors import NetsecError
from netsec_tasks.operating_point import decide, inner_pipeline, model_threshold, threat_probability
from netsec_tasks.preprocessing import build_preprocessor, preprocessor_bytes
from netsec_tasks.records import RunContext, TrainRecord, TransformRecord, ValidationRecord
from netsec_tasks.sample import make_sample
from netsec_tasks.tracking import PIPELINE_RUN_TAG, trusted_types_for
from netsec_tasks.train import make_cv, row_groups, train, train_model
from netsec_testing import validated_splits

TARGET = "Result"


def _inputs(
    cfg, tmp_path, train: pd.DataFrame, test: pd.DataFrame
) -> tuple[ValidationRecord, TransformRecord]:
    """Validated splits as Parquet, and a preprocessor fitted on the training split."""
    d = tmp_path / "inputs"
    validation = validated_splits(d, train, test)
    schema = load_schema(cfg.schema_path)
    pre = build_preprocessor(schema).fit(train[schema.features])
    path = d / "preprocessor.skops"
    path.write_bytes(preprocessor_bytes(pre))
    record = TransformRecord(
        preprocessor_uri=str(path),
        numeric_features=schema.numeric_features,
        categorical_features=schema.categorical_features,
        features_out=30,
        missing_values_imputed=0,
        fitted_on_rows=len(train),
    )
    return validation, record


def _sample_splits(n: int = 400, seed: int = 11, test_share: float = 0.25, missing: float = 0.0):
    frame = make_sample(n, seed=seed, missing=missing)
    cut = int(n * (1 - test_share))
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


def _sampled_search_cfg(make_cfg, candidate: str, n_iter: int, search_max_rows: int, imputer_max_rows: int):
    """Config tuning only ``candidate`` (``n_iter`` draws) on a sample of at most
    ``search_max_rows`` rows, its imputer fitted on at most ``imputer_max_rows`` others."""
    return make_cfg(
        **{
            "training.candidates": [candidate],
            "training.n_iter": n_iter,
            "training.search_max_rows": search_max_rows,
            "transform.imputer_max_rows": imputer_max_rows,
        }
    )


# --- candidates --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(candidates.CANDIDATES))
def test_each_candidate_builds_fits_and_serialises(name):
    from netsec_tasks.config import PipelineConfig

    schema = load_schema(PipelineConfig().schema_path)
    train, test = _sample_splits(120, seed=5)
    spec = candidates.get_candidate(name)
    # One thread per fit, as in training (parallelism is at the search level): a busy 2-core
    # machine makes OpenMP thread teams (hist gradient boosting) crawl.
    with threadpool_limits(1):
        _fit_two_settings(spec, schema, train, test)


def _fit_two_settings(spec, schema, train, test):
    for params in ParameterSampler(spec.space(), n_iter=2, random_state=0):
        model = Pipeline([("preprocess", build_preprocessor(schema)), ("model", spec.build(0))])
        model.set_params(**candidates.prefixed(params))
        model.fit(train[schema.features], (train[TARGET] == -1).astype(int))
        proba = model.predict_proba(test[schema.features])
        assert proba.shape == (len(test), 2)
        assert np.allclose(proba.sum(axis=1), 1.0)
        assert set(model.predict(test[schema.features])) <= {0, 1}
    # Every candidate's fitted pipeline round-trips through skops with the allow-listed types.
    import skops.io

    loaded = skops.io.loads(skops.io.dumps(model), trusted=trusted_types_for(model))
    np.testing.assert_allclose(loaded.predict_proba(test[schema.features]), proba)


# --- honest cross-validation -------------------------------------------------------------------


def test_duplicate_aware_folds_keep_identical_rows_together(make_cfg):
    base = make_sample(150, seed=2)
    frame = pd.concat([base, base.iloc[:100]], ignore_index=True)  # 100 rows appear twice
    X, y = frame.drop(columns=[TARGET]), (frame[TARGET] == -1).astype(int).to_numpy()
    groups = row_groups(X)

    def straddling(cfg) -> int:
        cv, g = make_cv(cfg, X, y)
        n = 0
        for tr, va in cv.split(X, y, groups=g):
            n += len(set(groups[tr]) & set(groups[va]))
        return n

    assert straddling(make_cfg(**{"split.duplicate_aware": True})) == 0
    # The check can fail: plain stratified folds do split copies of the same row.
    assert straddling(make_cfg(**{"split.duplicate_aware": False})) > 0


EVENTS: list[tuple[str, int, bool]] = []
SENTINEL = 99  # a feature value only test rows carry


class SpyTree(DecisionTreeClassifier):
    """Records every fit/predict: how many rows and whether any test row was among them."""

    def _note(self, kind, X):
        EVENTS.append((kind, len(X), bool((np.asarray(X) == SENTINEL).any())))

    def fit(self, X, y, *args, **kwargs):
        self._note("fit", X)
        return super().fit(X, y, *args, **kwargs)

    def predict(self, X, *args, **kwargs):
        self._note("predict", X)
        return super().predict(X, *args, **kwargs)

    def predict_proba(self, X, *args, **kwargs):
        self._note("predict_proba", X)
        return super().predict_proba(X, *args, **kwargs)


@pytest.fixture()
def spy_tree(monkeypatch):
    """The decision_tree candidate replaced by SpyTree for this test, EVENTS emptied."""
    spy = candidates.CandidateSpec(
        "decision_tree",
        lambda seed: SpyTree(random_state=seed),
        lambda: {"max_depth": [2, 3, 4, 6, None], "min_samples_leaf": [1, 3]},
    )
    monkeypatch.setitem(candidates.CANDIDATES, "decision_tree", spy)
    EVENTS.clear()


@pytest.mark.parametrize("search", ["halving", "random"])
def test_tuning_never_sees_test_rows_and_test_is_scored_once(make_cfg, tmp_path, spy_tree, search):
    cfg = make_cfg(
        **{"training.candidates": ["decision_tree"], "training.n_iter": 4, "training.search": search}
    )
    train_df, test_df = _sample_splits(400, seed=8)
    test_df["web_traffic"] = SENTINEL
    validation, transform = _inputs(cfg, tmp_path, train_df, test_df)

    record = train(
        cfg, RunContext.create(cfg, run_id=f"test__spy_{search}"), validation, transform, tracking=False
    )

    fits = [i for i, e in enumerate(EVENTS) if e[0] == "fit"]
    cv_fits = [EVENTS[i] for i in fits[:-1]]
    assert len(cv_fits) >= cfg.training.cv_folds  # cross-validation happened ...
    assert all(n < len(train_df) for _, n, _ in cv_fits)  # ... on folds of the training split
    assert not any(e[2] for e in EVENTS[: fits[-1] + 1])  # no fit and no CV score saw a test row
    assert EVENTS[fits[-1]] == ("fit", len(train_df), False)  # final refit: the whole train split
    test_calls = [e for e in EVENTS if e[2]]
    # One evaluation: P(threat) once, decided at the threshold (no second predict pass).
    assert [k for k, _, _ in test_calls] == ["predict_proba"]
    assert all(n == len(test_df) for _, n, _ in test_calls)
    assert record.test_rows == len(test_df) and record.train_rows == len(train_df)


def test_the_threshold_comes_from_training_rows_only(make_cfg, tmp_path):
    """The threshold is chosen on out-of-fold predictions of the training split: the same
    training split with a test split whose labels are all flipped gives the same threshold and
    the same out-of-fold point (while the test figures change, so the test was read), and the
    out-of-fold point counts exactly the training rows."""
    cfg = make_cfg(**{"training.candidates": ["logistic_regression"], "training.n_iter": 2})
    train_df, test_df = _sample_splits(1200, seed=31)  # >= 367 benign rows: the bound can hold
    flipped = test_df.assign(**{TARGET: -test_df[TARGET]})
    records = []
    for name, test in (("as is", test_df), ("flipped", flipped)):
        validation, transform = _inputs(cfg, tmp_path / name.replace(" ", "_"), train_df, test)
        records.append(
            train(
                cfg, RunContext.create(cfg, run_id=f"test__oof_{name}"), validation, transform, tracking=False
            )
        )
    a, b = records
    assert a.threshold == b.threshold and a.oof_operating_point == b.oof_operating_point
    assert a.operating_point != b.operating_point
    oof = a.oof_operating_point
    assert oof["rows"] == len(train_df) and oof["benign"] == int((train_df[TARGET] == 1).sum())
    # Within the budget with its interval (the margin), on the rows it was chosen on.
    assert oof["fpr_high"] <= a.max_false_positive_rate == 0.01
    assert a.objective == "recall_at_budget" and a.metric == "recall_at_budget"
    assert a.test_metrics["recall_at_budget"] == pytest.approx(a.operating_point["recall"])


def test_sampled_search_never_sees_test_rows_and_the_winner_is_refit_on_every_row(
    make_cfg, tmp_path, spy_tree
):
    """Above training.search_max_rows the search tunes on a bounded sample; the winner is still
    refit on the whole split and the test split is scored once."""
    cfg = _sampled_search_cfg(make_cfg, "decision_tree", n_iter=4, search_max_rows=150, imputer_max_rows=60)
    train_df, test_df = _sample_splits(500, seed=8, test_share=0.2, missing=0.03)
    test_df["web_traffic"] = SENTINEL
    validation, transform = _inputs(cfg, tmp_path, train_df, test_df)

    record = train(
        cfg, RunContext.create(cfg, run_id="test__spy_sampled"), validation, transform, tracking=False
    )

    fits = [i for i, e in enumerate(EVENTS) if e[0] == "fit"]
    assert len(fits) > cfg.training.cv_folds
    # CV on the sample: the search's fits and the out-of-fold fits the threshold comes from.
    assert all(n <= 150 for _, n, _ in (EVENTS[i] for i in fits[:-1]))
    assert record.oof_operating_point["rows"] == record.search_rows
    assert not any(e[2] for e in EVENTS[: fits[-1] + 1])
    assert EVENTS[fits[-1]] == ("fit", len(train_df), False)  # refit: every training row
    test_calls = [e for e in EVENTS if e[2]]
    assert [k for k, _, _ in test_calls] == ["predict_proba"]
    assert record.search_rows <= 150 and record.train_rows == len(train_df)


def test_sampled_search_imputes_with_donors_outside_the_sample(make_cfg):
    """Honest CV on a sample: the search's imputer is fitted on training rows outside it (no CV
    row, training or validation, shaped it); early-stopping rows are apart from both."""
    from netsec_tasks.train import LoadedSplit, search_data

    cfg = make_cfg(**{"training.search_max_rows": 300, "transform.imputer_max_rows": 100})
    schema = load_schema(cfg.schema_path)
    frame = make_sample(1000, seed=12, missing=0.03)
    split = LoadedSplit.__new__(LoadedSplit)
    split.uri, split.frame = "mem", frame
    split.X, split.y = frame[schema.features], (frame[TARGET] == -1).astype(int).to_numpy()

    data = search_data(cfg, schema, split)

    assert data.sampled and data.rows == data.sample_rows.sum() <= 300
    assert 90 <= data.imputer_rows.sum() <= 100
    assert not (data.sample_rows & data.imputer_rows).any()
    held = data.early_stopping_rows
    assert held is not None and 0 < held.sum() <= 300 // 4
    assert not (held & (data.sample_rows | data.imputer_rows)).any()
    assert data.X.shape == (data.rows, len(schema.features)) and not np.isnan(data.X).any()
    assert not np.isnan(data.eval_set[0]).any() and len(data.eval_set[1]) == held.sum()
    # Below the bound: the whole split, the imputer fitted inside each fold.
    whole = search_data(make_cfg(**{"training.search_max_rows": 1000}), schema, split)
    assert not whole.sampled and whole.rows == 1000 and whole.imputer_rows is None


def test_boosted_candidates_stop_early_on_a_sampled_search(make_cfg, tmp_path):
    cfg = _sampled_search_cfg(make_cfg, "xgboost", n_iter=2, search_max_rows=200, imputer_max_rows=80)
    validation, transform = _inputs(
        cfg, tmp_path, *_sample_splits(700, seed=14, test_share=0.2, missing=0.02)
    )
    with threadpool_limits(1):
        record, model = train_model(
            cfg, RunContext.create(cfg, run_id="test__early"), validation, transform, tracking=False
        )
    booster = inner_pipeline(model)[-1]
    assert booster.get_params()["early_stopping_rounds"] is not None
    assert booster.best_iteration < record.candidates[0].best_params["n_estimators"]


# --- the threat class is the positive class ----------------------------------------------------


@pytest.mark.parametrize("flip", [False, True])
def test_metrics_are_those_of_the_threat_label(make_cfg, tmp_path, flip):
    cfg = make_cfg(**{"training.candidates": ["decision_tree"], "training.n_iter": 2})
    train_df, test_df = _sample_splits(400, seed=21)
    if flip:  # -1 now marks the other population; the schema still says -1 is the threat
        train_df[TARGET] *= -1
        test_df[TARGET] *= -1
    n_threat = int((test_df[TARGET] == -1).sum())
    assert n_threat != len(test_df) - n_threat  # otherwise a swapped class could pass unnoticed
    validation, transform = _inputs(cfg, tmp_path, train_df, test_df)

    record, model = train_model(
        cfg, RunContext.create(cfg, run_id=f"test__flip_{flip}"), validation, transform, tracking=False
    )

    cm = np.array(record.confusion_matrix)
    assert cm[1].sum() == n_threat  # row 1 = truth "threat" = label -1
    labels_pred = np.where(model.predict(test_df.drop(columns=[TARGET])) == 1, -1, 1)
    truth = test_df[TARGET].to_numpy()
    assert record.test_metrics["recall"] == pytest.approx(skm.recall_score(truth, labels_pred, pos_label=-1))
    assert record.test_metrics["precision"] == pytest.approx(
        skm.precision_score(truth, labels_pred, pos_label=-1)
    )
    assert record.test_metrics["f1"] == pytest.approx(skm.f1_score(truth, labels_pred, pos_label=-1))
    # The threat probability ranks threats first.
    assert record.test_metrics["roc_auc"] > 0.7


# --- MLflow tracking -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_mlflow_uri(tmp_path_factory):
    """One SQLite store for this module's tracking tests (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture()
def tracked_cfg(make_cfg, shared_mlflow_uri, tmp_path, monkeypatch):
    # Loading a logged model deserialises it; MLflow requires this opt-in (even for skops).
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    return make_cfg(
        **{
            "registry.tracking_uri": shared_mlflow_uri,
            "registry.artifact_location": str(tmp_path / "artifacts"),
            "training.candidates": ["logistic_regression", "decision_tree"],
        }
    )


def test_train_tracks_runs_and_logs_a_loadable_model(tracked_cfg, tmp_path):
    import mlflow

    cfg = tracked_cfg
    train_df, test_df = _sample_splits(400, seed=13)
    validation, transform = _inputs(cfg, tmp_path, train_df, test_df)
    run = RunContext.create(cfg, run_id="scheduled__2026-01-01T02:00:00+00:00")

    record, model = train_model(cfg, run, validation, transform)

    assert TrainRecord.from_xcom(record.to_xcom()) == record
    client = mlflow.MlflowClient(cfg.registry.tracking_uri)
    parent = client.get_run(record.mlflow_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == run.run_id
    assert parent.data.tags[PIPELINE_RUN_TAG] == run.run_id
    assert parent.data.params["winner"] == record.winner
    assert record.winner == max(record.candidates, key=lambda c: c.cv_score).name
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc"):
        assert parent.data.metrics[f"test_{key}"] == pytest.approx(record.test_metrics[key])
    assert parent.data.metrics["cv_score"] == pytest.approx(record.cv_score)

    children = client.search_runs(
        [record.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["decision_tree", "logistic_regression"]
    by_name = {c.name: c for c in record.candidates}
    for child in children:
        result = by_name[child.info.run_name]
        assert child.info.run_id == result.mlflow_run_id
        assert child.data.metrics["cv_mean"] == pytest.approx(result.cv_score)
        assert set(child.data.metrics) >= {"cv_mean", "cv_std", "fit_seconds"}
        assert child.data.params == {k: str(v) for k, v in result.best_params.items()}

    (inp,) = [
        d
        for d in parent.inputs.dataset_inputs
        if any(t.key == "mlflow.data.context" and t.value == "training" for t in d.tags)
    ]
    assert inp.dataset.digest == validation.dataset_digest[:32]
    # The data is stored once, in storage: MLflow's dataset input points at it, no copy.
    assert validation.train_uri in inp.dataset.source
    assert [a.path for a in client.list_artifacts(parent.info.run_id) if a.path.startswith("data")] == []
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    order = [
        "plots/confusion_matrix.png",
        "plots/roc_curve.png",
        "plots/pr_curve.png",
        "plots/reliability.png",
    ]
    assert plots == set(order)
    assert record.plots == [
        run.step_uri("train", f"plots/{p.split('/')[-1]}") for p in sorted(plots, key=order.index)
    ]
    # The operating point is on the run: the threshold and budget as params, its figures as metrics.
    assert float(parent.data.params["threshold"]) == record.threshold
    assert float(parent.data.params["max_false_positive_rate"]) == record.max_false_positive_rate
    assert parent.data.metrics["test_fpr"] == pytest.approx(record.operating_point["fpr"], abs=1e-6)
    assert {"oof_fpr_high", "test_precision_at_expected_rate", "test_brier", "oof_brier"} <= set(
        parent.data.metrics
    )
    point = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/operating_point.json")
    assert point["threshold"] == record.threshold and point["policy"]["objective"] == "recall_at_budget"

    loaded = mlflow.sklearn.load_model(record.model_uri)
    X_test = test_df.drop(columns=[TARGET])
    # One artifact: the Pipeline and its threshold; its own predict() decides as decide() does.
    assert model_threshold(loaded).value == record.threshold
    np.testing.assert_array_equal(
        loaded.predict(X_test), decide(threat_probability(loaded, X_test), record.threshold)
    )
    np.testing.assert_array_equal(loaded.predict(X_test), model.predict(X_test))
    np.testing.assert_allclose(loaded.predict_proba(X_test), model.predict_proba(X_test))
    threat_pred = loaded.predict(X_test) == 1
    assert record.test_metrics["f1"] == pytest.approx(skm.f1_score(test_df[TARGET] == -1, threat_pred))


def test_failing_candidate_fails_the_parent_run_and_a_retry_reuses_it(tracked_cfg, tmp_path, monkeypatch):
    import mlflow

    cfg = tracked_cfg
    validation, transform = _inputs(cfg, tmp_path, *_sample_splits(300, seed=17))
    run = RunContext.create(cfg, run_id="manual__retry")
    broken = candidates.CandidateSpec(
        "decision_tree", candidates.CANDIDATES["decision_tree"].build, lambda: {"max_depth": [-3]}
    )  # every fit raises
    monkeypatch.setitem(candidates.CANDIDATES, "decision_tree", broken)

    with pytest.raises(NetsecError, match="decision_tree"):
        train(cfg, run, validation, transform)

    client = mlflow.MlflowClient(cfg.registry.tracking_uri)
    exp = client.get_experiment_by_name(cfg.registry.experiment)

    def parents():
        return client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{run.run_id}'"
        )

    def models_of(run_id):
        return mlflow.search_logged_models(
            experiment_ids=[exp.experiment_id],
            output_format="list",
            filter_string=f"source_run_id = '{run_id}'",
        )

    (failed,) = parents()
    assert failed.info.status == "FAILED"
    assert models_of(failed.info.run_id) == []  # nothing a registry could pick up
    assert mlflow.active_run() is None

    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    record = train(cfg, run, validation, transform)

    (parent,) = parents()  # the retry reused the parent run instead of adding one
    assert parent.info.run_id == failed.info.run_id == record.mlflow_run_id
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["decision_tree", "logistic_regression"]
    (logged,) = models_of(parent.info.run_id)
    assert record.model_uri == f"models:/{logged.model_id}"


def test_single_threaded_sets_every_explicit_n_jobs_to_one():
    """What training's final fit and serving's model load both apply (candidates.single_threaded):
    nested n_jobs become 1, None stays None (LogisticRegression deprecates setting it)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from netsec_tasks.candidates import single_threaded

    forest = single_threaded(Pipeline([("model", RandomForestClassifier(n_jobs=-1))]))
    assert forest.get_params()["model__n_jobs"] == 1
    logistic = single_threaded(Pipeline([("model", LogisticRegression())]))
    assert logistic.get_params()["model__n_jobs"] is None
