"""Partitioned data sets (netsec_tasks.partitions) and the steps that read them partition by
partition, on the local engine: the same rows, sides, checks, digest and preprocessor as the
single-file layout, and a data set that exists only once its manifest does."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from netsec_tasks.errors import DataError
from netsec_tasks.partitions import MANIFEST, DatasetWriter
from netsec_tasks.records import RunContext
from netsec_tasks.storage import Storage, join_uri, open_dataset, partitions_digest, path_to_uri, read_dataset

ROWS = 2600


def _digest(schema, hashes):
    return f"{schema.names[0]}:{int(np.concatenate(hashes).sum()) if hashes else 0}"


@pytest.mark.parametrize("rows, parts", [(0, 1), (5, 1), (10, 1), (11, 2), (35, 4)])
def test_a_writer_keeps_small_data_one_file_and_partitions_larger_data(tmp_path, rows, parts):
    storage = Storage(path_to_uri(tmp_path / "store"))
    uri = storage.uri("x.parquet")
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    writer = DatasetWriter(
        storage, uri, schema, partition_rows=10, scratch=tmp_path / "scratch", digest=_digest
    )
    values = np.arange(rows)
    for start in range(0, rows, 7):  # tables that straddle partition boundaries
        chunk = values[start : start + 7]
        table = pa.table({"a": chunk, "b": [str(v) for v in chunk]}, schema=schema)
        writer.write_table(table, chunk.astype(np.uint64))
    data = writer.close()
    again = open_dataset(storage, uri)
    assert (data.partitioned, len(data), data.rows) == (parts > 1, parts, rows)
    assert [(p.rows, p.offset) for p in again.partitions] == [(p.rows, p.offset) for p in data.partitions]
    assert data.digest is not None
    assert again.digest == (data.digest if parts > 1 else None)  # a single file has no manifest
    assert read_dataset(storage, uri)["a"].tolist() == list(range(rows))
    assert storage.read_frame(uri)["a"].tolist() == list(range(rows))  # what other consumers call
    assert storage.exists(uri)
    assert not list((tmp_path / "scratch").iterdir())  # nothing left staged
    if parts > 1:
        assert data.digest == partitions_digest([p.digest for p in data.partitions])
        names = sorted(p.name for p in (tmp_path / "store" / "x.parquet").iterdir())
        assert names == [MANIFEST] + [f"part-{i:05d}.parquet" for i in range(parts)]


def test_a_data_set_exists_only_once_its_manifest_is_written(tmp_path):
    storage = Storage(path_to_uri(tmp_path / "store"))
    uri = storage.uri("x.parquet")
    schema = pa.schema([("a", pa.int64())])
    with (
        pytest.raises(RuntimeError),
        DatasetWriter(storage, uri, schema, partition_rows=3, scratch=tmp_path / "s") as w,
    ):
        w.write_table(pa.table({"a": list(range(8))}, schema=schema))  # two partitions uploaded
        raise RuntimeError("the task dies before close()")
    assert (tmp_path / "store" / "x.parquet" / "part-00000.parquet").is_file()
    assert not storage.exists(uri)
    with pytest.raises(DataError, match="neither a Parquet object nor a partitioned data set"):
        open_dataset(storage, uri)
    (tmp_path / "store" / "x.parquet" / MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="unreadable data set manifest"):
        open_dataset(storage, uri)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """ingest -> validate -> transform on the same file twice: one file per data set, and
    partitions of 500 rows (local engine). Rows with gaps, so the imputer has work."""
    from netsec_tasks.ingest import ingest
    from netsec_tasks.sample import make_sample
    from netsec_tasks.transform import transform
    from netsec_tasks.validate import validate
    from netsec_testing import pipeline_config

    root = tmp_path_factory.mktemp("partitions")
    frame = make_sample(ROWS, seed=11, missing=0.03)
    frame.loc[[5, 900, 2100], "URL_Length"] = 7  # quarantined rows, in three partitions
    frame = pd.concat([frame, frame.iloc[:300]], ignore_index=True)  # copies in a later partition
    path = root / "data.csv"
    frame.to_csv(path, index=False)
    out = {}
    for name, rows in (("file", 1_000_000), ("parts", 500)):
        cfg = pipeline_config(
            {
                "workdir": str(root / name),
                "source.path": str(path),
                "storage.partition_rows": rows,
                "transform.imputer_max_rows": 400,
            },
        )
        run = RunContext.create(cfg, run_id="r")
        ing = ingest(cfg, run)
        val = validate(cfg, run, ing)
        out[name] = (cfg, ing, val, transform(cfg, run, val))
    return out


def test_partitioned_ingest_keeps_every_rows_side_and_names_the_snapshot_by_its_partitions(runs):
    from netsec_tasks.snapshot import snapshot_digest
    from netsec_tasks.storage import storage_for

    (cfg1, one, _, _), (cfg2, many, _, _) = runs["file"], runs["parts"]
    s1, s2 = storage_for(cfg1), storage_for(cfg2)
    snap = open_dataset(s2, many.snapshot_uri)
    assert snap.partitioned and len(snap) == 6 and not open_dataset(s1, one.snapshot_uri).partitioned
    # Content-addressed: the hash of the partitions' digests, recomputed from the content.
    assert snapshot_digest(s2, many.snapshot_uri) == many.snapshot_sha256 == snap.digest
    assert many.snapshot_uri.endswith(f"/snapshots/{many.snapshot_sha256}.parquet")
    for split in ("train_uri", "test_uri", "new_batch_uri"):
        pd.testing.assert_frame_equal(s1.read_frame(getattr(one, split)), s2.read_frame(getattr(many, split)))
    assert open_dataset(s2, many.train_uri).partitioned
    same = {"train_rows", "test_rows", "rows", "new_rows", "duplicate_rows", "duplicate_leak_rows"}
    assert one.model_dump(include=same) == many.model_dump(include=same)


def test_partitioned_validation_reports_and_writes_what_the_single_file_does(runs):
    from netsec_tasks.storage import storage_for

    (cfg1, _, one, _), (cfg2, _, many, _) = runs["file"], runs["parts"]
    s1, s2 = storage_for(cfg1), storage_for(cfg2)
    uris = {"report_uri", "invalid_uri", "train_uri", "test_uri", "new_batch_uri", "train_row_hashes_uri"}
    assert one.model_dump(exclude=uris) == many.model_dump(exclude=uris)  # the digest too
    assert one.rows_invalid == 4  # rows 5, 900, 2100 and the copy of row 5
    for split in ("train_uri", "test_uri", "new_batch_uri", "train_row_hashes_uri", "invalid_uri"):
        pd.testing.assert_frame_equal(s1.read_frame(getattr(one, split)), s2.read_frame(getattr(many, split)))
    data = open_dataset(s2, many.train_uri)
    assert data.partitioned and sum(p.rows for p in data.partitions) == many.train_rows
    # The staged pieces are gone.
    assert not [o.uri for o in s2.list(join_uri(s2.root, "runs")) if "_staging" in o.uri]


def test_a_partitioned_split_gives_the_same_preprocessor(runs):
    from netsec_tasks.preprocessing import load_preprocessor
    from netsec_tasks.storage import storage_for

    (cfg1, _, val, one), (cfg2, _, _, many) = runs["file"], runs["parts"]
    assert one.model_dump(exclude={"preprocessor_uri"}) == many.model_dump(exclude={"preprocessor_uri"})
    assert one.missing_values_imputed > 0
    storage = storage_for(cfg1)
    rows = storage.read_frame(val.test_uri)
    pre = [
        load_preprocessor(storage_for(c).read_bytes(t.preprocessor_uri))
        for c, t in ((cfg1, one), (cfg2, many))
    ]
    features = list(pre[0].feature_names_in_)
    np.testing.assert_array_equal(pre[0].transform(rows[features]), pre[1].transform(rows[features]))


def test_categories_counted_per_partition_fit_what_every_row_would():
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from netsec_tasks.stored_split import categorical_frame, category_counts, merge_counts

    frame = pd.DataFrame(
        {
            "proto": pd.Series(["udp", "tcp", "tcp", None, "udp", "icmp"], dtype="str"),
            "flag": pd.Series(["S0", "SF", "REJ", "SF", "S0", None], dtype="str"),  # a tie: S0 and SF
            "empty": pd.Series([None] * 6, dtype="str"),
        }
    )
    columns = list(frame.columns)
    counts = merge_counts(
        [category_counts(frame.iloc[:4], columns), category_counts(frame.iloc[4:], columns)]
    )
    small = categorical_frame(counts, columns, {c: str(frame[c].dtype) for c in columns})

    def fitted(data):
        return Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        ).fit(data)

    whole, counted = fitted(frame), fitted(small)
    assert list(counted[0].statistics_) == list(whole[0].statistics_)
    assert [list(c) for c in counted[1].categories_] == [list(c) for c in whole[1].categories_]
    np.testing.assert_array_equal(counted.transform(frame), whole.transform(frame))


def test_a_winner_that_cannot_train_data_parallel_is_refit_on_a_bounded_sample_or_skipped(runs):
    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.engine import Engine
    from netsec_tasks.errors import ConfigError
    from netsec_tasks.preprocessing import load_preprocessor
    from netsec_tasks.records import CandidateResult
    from netsec_tasks.refit import RefitJob, eligible, refit
    from netsec_tasks.storage import storage_for
    from netsec_tasks.stored_split import StoredSplit

    cfg, _, val, tr = runs["parts"]
    cfg = cfg.with_overrides({"training.refit_max_rows": 700})
    schema = load_schema(cfg.schema_path)
    split = StoredSplit(cfg, Engine(), schema, val.train_uri, what="index")
    tree = CandidateResult(
        name="decision_tree", cv_score=0.9, cv_std=0.0, best_params={"max_depth": 4}, fit_seconds=0
    )
    boost = CandidateResult(name="xgboost", cv_score=0.8, cv_std=0.0, best_params={}, fit_seconds=0)
    pre = load_preprocessor(storage_for(cfg).read_bytes(tr.preprocessor_uri))
    done = refit(
        RefitJob(cfg, Engine(), schema, split, tree, pre), search_rows=None, early_stopping_rows=None
    )
    assert "a bounded sample of" in done.note and "it cannot train data-parallel" in done.note
    assert 600 <= done.model[-1].tree_.n_node_samples[0] <= 700
    assert eligible(cfg, [tree, boost], split) == ([tree, boost], [])
    unbounded = cfg.with_overrides({"training.refit_max_rows": None})
    keep, skipped = eligible(unbounded, [tree, boost], split)
    assert (
        keep == [boost] and "skipped decision_tree" in skipped[0] and "training.refit_max_rows" in skipped[0]
    )
    with pytest.raises(ConfigError, match="Add xgboost to training.candidates"):
        eligible(unbounded, [tree], split)


def _numbers(tmp_path, storage, name: str, values: np.ndarray, shift: float = 0.0) -> str:
    uri = storage.uri(name)
    schema = pa.schema([("a", pa.int64()), ("b", pa.float64())])
    writer = DatasetWriter(storage, uri, schema, partition_rows=1000, scratch=tmp_path / "s", digest=_digest)
    for start in range(0, len(values), 700):  # tables that straddle partition boundaries
        chunk = values[start : start + 700]
        writer.write_table(
            pa.table({"a": chunk, "b": chunk * 0.5 + shift}, schema=schema), chunk.astype(np.uint64)
        )
    writer.close()
    return uri


def test_drift_reads_a_fixed_sample_of_the_same_rows_for_every_column(tmp_path):
    from netsec_tasks.config import DriftConfig
    from netsec_tasks.drift.stats import column_drift
    from netsec_tasks.drift.step import ParquetColumns

    storage = Storage(path_to_uri(tmp_path / "store"))
    rows = np.random.default_rng(3).permutation(10_000)
    ref = _numbers(tmp_path, storage, "ref.parquet", rows)
    cur = _numbers(tmp_path, storage, "cur.parquet", rows, shift=400.0)
    whole = ParquetColumns(storage, ref)
    assert not whole.sampled and len(whole["a"]) == 10_000
    sample = ParquetColumns(storage, ref, max_rows=2500)
    a, b = sample["a"], sample["b"]
    assert sample.sampled and len(sample) == 10_000  # len() is the data set's, for the record
    assert len(a) == len(b) == 2500 and a.is_unique
    assert (b == a * 0.5).all()  # the same rows in every column
    assert a.tolist() == ParquetColumns(storage, ref, max_rows=2500)["a"].tolist()  # every run
    position = pd.Series(rows).reset_index().set_index(0)["index"]  # value -> row number
    assert np.bincount(position[a].to_numpy() // 1000, minlength=10).min() > 150  # every partition
    # The sample's verdict and effect are the whole column's.
    dcfg = DriftConfig()
    full = column_drift("b", None, whole, ParquetColumns(storage, cur), dcfg)
    sampled = column_drift("b", None, sample, ParquetColumns(storage, cur, max_rows=2500), dcfg)
    assert (full.test, sampled.test) == ("ks", "ks")
    assert (full.n_reference, sampled.n_reference) == (10_000, 2500)
    assert full.p_value < 1e-6 and sampled.p_value < 1e-6
    assert sampled.effect == pytest.approx(full.effect, rel=0.1)
