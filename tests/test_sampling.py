"""Bounded samples (search sample, imputer donors) and the bounded KNN imputer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.sample import make_sample
from netsec_tasks.sampling import IMPUTER_SALT, SEARCH_SALT, bounded_sample
from netsec_tasks.split import row_hashes
from netsec_testing import validated_splits

TARGET = "Result"


def _data(n: int = 3000, seed: int = 3, copies: int = 600):
    """Sample rows with many exact copies (as the UCI file has), hashes and labels."""
    base = make_sample(n, seed=seed)
    frame = pd.concat([base, base.iloc[:copies], base.iloc[: copies // 3]], ignore_index=True)
    return frame, row_hashes(frame, list(frame.columns)), frame[TARGET].to_numpy()


def test_sample_is_bounded_grouped_and_stratified():
    frame, hashes, labels = _data()
    chosen = bounded_sample(hashes, labels, 800, seed=42)

    assert 780 <= chosen.sum() <= 800  # bounded, and close to the bound
    # Grouped: every copy of a row is in, or none.
    by_hash = pd.Series(chosen).groupby(hashes).agg(["min", "max"])
    assert (by_hash["min"] == by_hash["max"]).all()
    assert len(by_hash[by_hash["max"]]) < chosen.sum()  # copies were taken together
    # Stratified: each label's share as in the split (to a group's size).
    for label in (-1, 1):
        assert abs((labels[chosen] == label).mean() - (labels == label).mean()) < 0.01
    # Everything when the bound is not below the rows.
    assert bounded_sample(hashes, labels, len(hashes), seed=42).all()
    assert bounded_sample(hashes, labels, None, seed=42).all()


def test_sample_is_deterministic_whatever_the_row_order():
    frame, hashes, labels = _data()
    chosen = bounded_sample(hashes, labels, 500, seed=42)
    np.testing.assert_array_equal(chosen, bounded_sample(hashes, labels, 500, seed=42))
    order = np.random.default_rng(0).permutation(len(hashes))
    shuffled = bounded_sample(hashes[order], labels[order], 500, seed=42)
    assert set(hashes[order][shuffled].tolist()) == set(hashes[chosen].tolist())
    # The seed and the salt choose another sample; the search and the imputer draw apart.
    assert not np.array_equal(chosen, bounded_sample(hashes, labels, 500, seed=7))
    assert not np.array_equal(chosen, bounded_sample(hashes, labels, 500, seed=42, salt=IMPUTER_SALT))
    assert SEARCH_SALT != IMPUTER_SALT


def test_every_label_keeps_a_group_when_its_groups_are_all_large():
    # Label "b" has one row copied 30 times: larger than its share of a 40-row sample (3 rows).
    hashes = np.concatenate([np.arange(1, 401, dtype=np.uint64), np.full(30, 999, np.uint64)])
    labels = np.array(["a"] * 400 + ["b"] * 30)
    chosen = bounded_sample(hashes, labels, 40, seed=1)
    assert (labels[chosen] == "b").sum() == 30  # the whole group, not a part of it
    assert (labels[chosen] == "a").sum() <= 40
    with pytest.raises(ValueError):
        bounded_sample(hashes, labels, 0, seed=1)


# --- the bounded imputer -------------------------------------------------------------------------


def _with_gaps(n: int, seed: int, share: float = 0.05) -> pd.DataFrame:
    return make_sample(n, seed=seed, missing=share)


def test_bounded_imputer_keeps_its_donors_only_and_fills_every_gap():
    from netsec_tasks.config import PipelineConfig
    from netsec_tasks.preprocessing import compute_limits, fit_preprocessor, imputer_sample, threat_target

    cfg = PipelineConfig().with_overrides({"transform.imputer_max_rows": 300})
    schema = load_schema(cfg.schema_path)
    sizes = {}
    for n in (1000, 4000):
        frame = _with_gaps(n, seed=n)
        X, y = frame[schema.features], threat_target(frame, schema)
        donors = imputer_sample(cfg, frame, schema, y)
        pre = fit_preprocessor(schema, X, donors)
        knn = pre.named_transformers_["numeric"]
        # The model keeps the donor rows, not the split: its size stops growing with the data.
        np.testing.assert_array_equal(knn._fit_X, X[donors].to_numpy(dtype=float))
        sizes[n] = knn._fit_X.shape[0]
        with compute_limits():
            out = pre.transform(X)
        assert X.isna().to_numpy().sum() > 0 and not np.isnan(out).any()
        kept = ~X.isna().to_numpy()
        np.testing.assert_array_equal(out[kept], X.to_numpy(dtype=float)[kept])  # values untouched
        # Imputed values come from the column's own value set (neighbours' mean of -1/0/1 codes).
        assert out.min() >= -1 and out.max() <= 1
    assert 290 <= sizes[1000] <= 300 and 290 <= sizes[4000] <= 300


def test_bounded_imputer_votes_with_neighbours_and_keeps_every_category():
    """Donors are a sample, yet KNN still imputes from neighbours (not a column mean), and the
    categorical parts are fitted on every row: a category outside the donors stays known."""
    from netsec_tasks.dataset_schema import DatasetSchema
    from netsec_tasks.preprocessing import fit_preprocessor

    schema = DatasetSchema.model_validate(
        {
            "name": "mixed",
            "target": {"column": "label", "dtype": "str", "positive": "bad", "labels": ["bad", "good"]},
            "columns": {"a": {"dtype": "float"}, "b": {"dtype": "float"}, "proto": {"dtype": "str"}},
        }
    )
    b = np.arange(200, dtype=float)
    frame = pd.DataFrame({"a": b.copy(), "b": b, "proto": ["tcp"] * 199 + ["icmp"]})
    donors = np.zeros(200, dtype=bool)
    donors[::4] = True  # every 4th row: b = 0, 4, 8, ...
    donors[-1] = False
    pre = fit_preprocessor(schema, frame[schema.features], donors)
    query = pd.DataFrame({"a": [np.nan], "b": [21.0], "proto": pd.array(["icmp"], dtype="str")})
    out = pre.transform(query)
    assert pre.named_transformers_["numeric"]._fit_X.shape[0] == 50
    # The 5 donors nearest b=21 have a in 12..28 -> 20; a mean imputer would give ~98.
    assert out[0, 0] == pytest.approx(20.0)
    assert list(pre.get_feature_names_out()) == ["a", "b", "proto_icmp", "proto_tcp"]
    assert out[0, 2:].tolist() == [1.0, 0.0]  # icmp is known though no donor row had it


def test_preprocessor_with_frozen_parts_is_plain_sklearn_for_skops():
    import skops.io

    from netsec_tasks.config import PipelineConfig
    from netsec_tasks.preprocessing import fit_preprocessor, load_preprocessor, preprocessor_bytes

    schema = load_schema(PipelineConfig().schema_path)
    X = _with_gaps(300, seed=1)[schema.features]
    pre = fit_preprocessor(schema, X, np.arange(300) < 100)
    data = preprocessor_bytes(pre)
    assert skops.io.get_untrusted_types(data=data) in ([], ["numpy.dtype"])
    np.testing.assert_array_equal(load_preprocessor(data).transform(X), pre.transform(X))


# --- the bounded imputer through the steps ---------------------------------------------------------


def _validated_splits(tmp_path, frame: pd.DataFrame, test_share: float = 0.2):
    """The frame's rows as validated train/test splits in Parquet (what validate hands over)."""
    cut = int(len(frame) * (1 - test_share))
    train, test = frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)
    return validated_splits(tmp_path, train, test)


def test_transform_step_stores_an_imputer_that_stops_growing_with_the_rows(make_cfg, tmp_path):
    """The transform step on data with gaps: the KNN imputer keeps at most
    transform.imputer_max_rows training rows, so the stored preprocessor has the same size
    whatever the split's size, and it still fills every gap of the split."""
    from netsec_tasks.preprocessing import load_preprocessor
    from netsec_tasks.records import RunContext
    from netsec_tasks.storage import file_uri_to_path
    from netsec_tasks.transform import transform

    cfg = make_cfg(**{"transform.imputer_max_rows": 150})
    schema = load_schema(cfg.schema_path)
    stored = {}
    for n in (500, 3000):
        d = tmp_path / str(n)
        d.mkdir()
        validation = _validated_splits(d, _with_gaps(n, seed=n, share=0.03))
        record = transform(cfg, RunContext.create(cfg, run_id=f"test__imputer_{n}"), validation)

        data = file_uri_to_path(record.preprocessor_uri).read_bytes()
        pre = load_preprocessor(data)
        donors = pre.named_transformers_["numeric"]._fit_X
        assert record.fitted_on_rows == int(n * 0.8) and record.missing_values_imputed > 0
        assert 140 <= record.imputer_rows <= 150 and donors.shape[0] == record.imputer_rows
        X = pd.read_parquet(validation.train_uri)[schema.features]
        # The donors are training rows (some with gaps of their own: KNNImputer keeps them).
        key = lambda a: map(tuple, np.nan_to_num(a, nan=-99.0).tolist())  # noqa: E731
        assert set(key(donors)) <= set(key(X.to_numpy(dtype=float)))
        assert not np.isnan(pre.transform(X)).any()
        stored[n] = len(data)
    # Six times the rows, the same stored size (to a few hundred bytes of encoding noise).
    assert abs(stored[3000] - stored[500]) < 0.02 * stored[500]


def test_the_model_pipeline_imputes_with_the_transform_steps_bounded_imputer(make_cfg, tmp_path):
    """The trained model is Pipeline([preprocess, model]) whose preprocess is the transform
    step's bounded imputer, not one refit on the whole split: a skops round trip (what MLflow
    stores and serving loads) scores raw rows with gaps exactly as training scored them."""
    import skops.io

    from netsec_tasks.preprocessing import load_preprocessor
    from netsec_tasks.records import RunContext
    from netsec_tasks.storage import file_uri_to_path
    from netsec_tasks.tracking import trusted_types_for
    from netsec_tasks.train import train_model
    from netsec_tasks.transform import transform

    cfg = make_cfg(
        **{
            "transform.imputer_max_rows": 100,
            "training.search_max_rows": 300,
            "training.candidates": ["decision_tree"],
            "training.n_iter": 2,
        }
    )
    schema = load_schema(cfg.schema_path)
    validation = _validated_splits(tmp_path, _with_gaps(1200, seed=21, share=0.03))
    run = RunContext.create(cfg, run_id="test__pipeline_imputes")
    transformed = transform(cfg, run, validation)
    record, model = train_model(cfg, run, validation, transformed, tracking=False)
    from netsec_tasks.operating_point import inner_pipeline

    model = inner_pipeline(model)  # the registered artifact wraps the Pipeline with its threshold
    assert [name for name, _ in model.steps] == ["preprocess", "model"]
    assert record.search_rows <= 300  # the sampled search ran
    stored = load_preprocessor(file_uri_to_path(transformed.preprocessor_uri).read_bytes())
    knn = model.named_steps["preprocess"].named_transformers_["numeric"]
    np.testing.assert_array_equal(knn._fit_X, stored.named_transformers_["numeric"]._fit_X)
    assert knn._fit_X.shape[0] <= 100

    test = pd.read_parquet(validation.test_uri)[schema.features]
    gappy = test[test.isna().any(axis=1)]
    assert len(gappy) > 10
    loaded = skops.io.loads(skops.io.dumps(model), trusted=trusted_types_for(model))
    proba = loaded.predict_proba(gappy)
    np.testing.assert_array_equal(proba, model.predict_proba(gappy))
    np.testing.assert_array_equal(proba, model.named_steps["model"].predict_proba(stored.transform(gappy)))
