"""The split of a growing collection: a row's side never moves (split.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.split import lineage_hashes, occurrence_hashes, row_hashes, side_scores, split_rows


def sides(frame: pd.DataFrame, columns, seed=42, test_size=0.2) -> pd.Series:
    hashes = row_hashes(frame, columns)
    test, _ = split_rows(hashes, frame["Result"], test_size=test_size, seed=seed)
    return pd.Series(test, index=frame.index)


def test_growing_uci_file_no_row_changes_side(uci_csv):
    """The issue's measurement: day 1 = first 8,000 rows, day 2 = all 11,055."""
    frame = pd.read_csv(uci_csv)
    columns = list(frame.columns)
    day1 = sides(frame.iloc[:8000], columns)
    day2 = sides(frame, columns)
    moved = int((day1 != day2.iloc[:8000]).sum())
    day1_train = set(row_hashes(frame.iloc[:8000][~day1.to_numpy()], columns).tolist())
    day2_test_hashes = row_hashes(frame[day2.to_numpy()], columns)
    seen = int(np.isin(day2_test_hashes, list(day1_train)).sum())
    print(
        f"UCI day 1 -> day 2: {moved} rows changed side; {seen} of {int(day2.sum())} day-2 test "
        "rows were day-1 training rows"
    )
    assert moved == 0 and seen == 0


def test_test_share_stays_near_test_size_as_data_grows(uci_csv):
    frame = pd.read_csv(uci_csv)
    for n in (1000, 2000, 4000, 8000, len(frame)):
        test = sides(frame.iloc[:n], list(frame.columns))
        share = float(test.mean())
        assert abs(share - 0.2) <= 0.01, (n, share)
        for label in (-1, 1):  # every label on both sides, near its share
            in_label = frame.iloc[:n]["Result"].to_numpy() == label
            assert 0 < test[in_label].sum() < in_label.sum()
            assert abs(float(test[in_label].mean()) - 0.2) <= 0.03, (n, label)


def test_identical_rows_share_a_side_and_seed_changes_sides(uci_csv):
    frame = pd.read_csv(uci_csv)
    hashes = row_hashes(frame, list(frame.columns))
    test = sides(frame, list(frame.columns)).to_numpy()
    assert not set(hashes[test].tolist()) & set(hashes[~test].tolist())
    other = sides(frame, list(frame.columns), seed=7).to_numpy()
    assert (test != other).mean() > 0.2


def test_values_that_mean_the_same_hash_the_same():
    a = pd.DataFrame({"x": [1, -0.0, None, 2.5], "s": ["a", " b ", None, "7"]})
    b = pd.DataFrame({"s": ["a", "b", "", 7], "x": ["1", "0", float("nan"), "2.5"]})
    np.testing.assert_array_equal(row_hashes(a, ["x", "s"]), row_hashes(b, ["s", "x"]))
    c = pd.DataFrame({"x": [1, 0, None, 2.5], "s": ["a", "c", None, "7"]})
    assert (row_hashes(a, ["x", "s"]) != row_hashes(c, ["x", "s"])).sum() == 1
    # A column's name is part of the hash: swapping values between columns changes it.
    d = pd.DataFrame({"x": [1], "y": [2]})
    e = pd.DataFrame({"x": [2], "y": [1]})
    assert row_hashes(d, ["x", "y"])[0] != row_hashes(e, ["x", "y"])[0]


def test_row_hash_is_stable_across_versions():
    """A changed hash would move every row to a new side: this pins the scheme."""
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    assert row_hashes(frame, ["a", "b"]).tolist() == [12688337030587908661, 10753874027502452331]
    assert side_scores(np.array([1, 2], dtype=np.uint64), 42).round(6).tolist() == [0.950438, 0.446588]


def test_per_row_sides_keep_occurrence_numbers_as_data_grows():
    hashes = np.array([5, 5, 7, 5, 9], dtype=np.uint64)
    once = occurrence_hashes(hashes)
    seen: dict = {}
    chunked = np.concatenate([occurrence_hashes(hashes[:2], seen), occurrence_hashes(hashes[2:], seen)])
    np.testing.assert_array_equal(once, chunked)
    assert len(set(once.tolist())) == 5  # copies get distinct side hashes


def test_a_rare_label_lands_on_both_sides():
    hashes = np.arange(1, 2001, dtype=np.uint64)
    labels = np.where(hashes <= 3, "rare", "common")
    scores = side_scores(hashes, 42)
    assert (scores[:3] >= 0.2).all() or (scores[:3] < 0.2).all()  # all three on one side by chance
    test, notes = split_rows(hashes, labels, test_size=0.2, seed=42)
    assert 0 < test[labels == "rare"].sum() < 3 and len(notes) == 1


def test_lineage_hashes_use_features_and_target(make_cfg):
    schema = load_schema(make_cfg().schema_path)
    from netsec_tasks.sample import make_sample

    frame = make_sample(50, seed=1)
    frame["url"] = "http://x"  # not a feature: not part of the example's identity
    np.testing.assert_array_equal(
        lineage_hashes(frame, schema), row_hashes(frame.drop(columns=["url"]), list(frame.columns[:-1]))
    )


@pytest.mark.parametrize("rows", [1, 0])
def test_too_few_rows_is_a_data_error(rows):
    from netsec_tasks.errors import DataError

    with pytest.raises(DataError):
        split_rows(np.arange(rows, dtype=np.uint64), ["a"] * rows, test_size=0.2, seed=1)
