"""Bounded samples (search sample, imputer donors) and the bounded KNN imputer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from netsec_tasks.sample import make_sample
from netsec_tasks.sampling import IMPUTER_SALT, SEARCH_SALT, bounded_sample
from netsec_tasks.schema import load_schema
from netsec_tasks.split import row_hashes

TARGET = "Result"


def _data(n: int = 3000, seed: int = 3, copies: int = 600):
    """Sample rows with many exact copies (as the UCI file has), hashes and labels."""
    base = make_sample(n, seed=seed)
    frame = pd.concat([base, base.iloc[:copies], base.iloc[:copies // 3]], ignore_index=True)
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
    from netsec_tasks.transform import compute_limits, fit_preprocessor, imputer_sample, threat_target

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
    from netsec_tasks.schema import DatasetSchema
    from netsec_tasks.transform import fit_preprocessor

    schema = DatasetSchema.model_validate({
        "name": "mixed",
        "target": {"column": "label", "dtype": "str", "positive": "bad", "labels": ["bad", "good"]},
        "columns": {"a": {"dtype": "float"}, "b": {"dtype": "float"}, "proto": {"dtype": "str"}},
    })
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
    from netsec_tasks.transform import fit_preprocessor, load_preprocessor, preprocessor_bytes

    schema = load_schema(PipelineConfig().schema_path)
    X = _with_gaps(300, seed=1)[schema.features]
    pre = fit_preprocessor(schema, X, np.arange(300) < 100)
    data = preprocessor_bytes(pre)
    assert skops.io.get_untrusted_types(data=data) in ([], ["numpy.dtype"])
    np.testing.assert_array_equal(load_preprocessor(data).transform(X), pre.transform(X))
