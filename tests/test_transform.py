"""Step 4: the preprocessing ColumnTransformer and the transform step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from netsec_tasks.dataset_schema import DatasetSchema, load_schema
from netsec_tasks.errors import DataError
from netsec_tasks.preprocessing import (
    build_preprocessor,
    features_and_target,
    load_preprocessor,
    preprocessor_bytes,
)
from netsec_tasks.records import RunContext
from netsec_tasks.sample import make_sample
from netsec_tasks.storage import file_uri_to_path
from netsec_tasks.transform import transform
from netsec_testing import validated_splits


def _mixed_schema() -> DatasetSchema:
    return DatasetSchema.model_validate(
        {
            "name": "mixed",
            "target": {"column": "label", "dtype": "str", "positive": "bad", "labels": ["bad", "good"]},
            "columns": {"a": {"dtype": "float"}, "b": {"dtype": "float"}, "proto": {"dtype": "str"}},
        }
    )


def _mixed_frame() -> pd.DataFrame:
    # a == b on complete rows, so a KNN imputation of a (neighbours by b) lands near b, far from
    # the column mean (49.5) that a mean imputer would give.
    b = np.arange(100, dtype=float)
    frame = pd.DataFrame({"a": b.copy(), "b": b, "proto": ["tcp"] * 60 + ["udp"] * 40})
    frame.loc[100] = [np.nan, 95.0, None]
    frame.loc[101] = [3.0, np.nan, "udp"]
    frame["proto"] = frame["proto"].astype("str")
    return frame


def test_preprocessor_knn_imputes_numbers_and_one_hot_encodes_strings(tmp_path):
    schema = _mixed_schema()
    frame = _mixed_frame()
    pre = build_preprocessor(schema)
    out = pre.fit_transform(frame[schema.features])
    names = list(pre.get_feature_names_out())

    assert names == ["a", "b", "proto_tcp", "proto_udp"]
    assert not np.isnan(out).any()
    # KNN: the 5 rows nearest to b=95 have a in 93..97 -> 95; a mean imputer would give ~49.
    assert out[100, 0] == pytest.approx(95.0)
    assert out[101, 1] == pytest.approx(3.0)
    # The missing protocol becomes the most frequent one (tcp), one-hot.
    assert out[100, 2:].tolist() == [1.0, 0.0]
    assert out[0, 2:].tolist() == [1.0, 0.0] and out[99, 2:].tolist() == [0.0, 1.0]
    # An unseen category at serving time encodes as all zeros instead of failing.
    unseen = pd.DataFrame({"a": [1.0], "b": [1.0], "proto": pd.array(["icmp"], dtype="str")})
    assert pre.transform(unseen)[0, 2:].tolist() == [0.0, 0.0]
    # It survives the skops round trip the transform step relies on.
    loaded = load_preprocessor(preprocessor_bytes(pre))
    np.testing.assert_array_equal(loaded.transform(frame[schema.features]), out)


def test_transform_fits_on_the_training_split_only(make_cfg, tmp_path):
    cfg = make_cfg()
    frame = make_sample(300, seed=3)
    train, test = frame.iloc[:240].copy(), frame.iloc[240:].copy()
    train["URL_Length"] = train["URL_Length"].astype(float)
    train.loc[train.index[:7], "URL_Length"] = np.nan
    # Sentinel values only the test rows carry: if the preprocessor saw them, they would be in
    # its stored neighbour table.
    test["web_traffic"] = 99
    validation = validated_splits(tmp_path, train, test)
    run = RunContext.create(cfg, run_id="test__transform")

    record = transform(cfg, run, validation)

    assert record.fitted_on_rows == 240
    assert record.missing_values_imputed == 7
    assert record.features_out == 30
    assert record.numeric_features == list(frame.columns[:-1]) and record.categorical_features == []
    assert record.preprocessor_uri == run.step_uri("transform", "preprocessor.skops")
    pre = load_preprocessor(file_uri_to_path(record.preprocessor_uri).read_bytes())
    knn = pre.named_transformers_["numeric"]
    assert knn._fit_X.shape[0] == 240
    col = list(pre.feature_names_in_).index("web_traffic")
    assert 99 not in set(knn._fit_X[:, col].tolist())
    # The saved preprocessor is the fitted one: it imputes the training NaNs.
    X_train, _ = features_and_target(pd.read_parquet(validation.train_uri), load_schema(cfg.schema_path))
    assert not np.isnan(pre.transform(X_train)).any()


def test_transform_names_a_missing_feature_column(make_cfg, tmp_path):
    cfg = make_cfg()
    frame = make_sample(60, seed=4).drop(columns=["SFH"])
    validation = validated_splits(tmp_path, frame.iloc[:40], frame.iloc[40:])
    with pytest.raises(DataError, match="SFH") as err:
        transform(cfg, RunContext.create(cfg, run_id="test__missing"), validation)
    assert err.value.columns == ["SFH"]
