"""Step 1, ingestion: file and MongoDB sources, watermarks, snapshots in storage, the split."""

from __future__ import annotations

import datetime as dt
import os
import re
import struct

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from netsec_tasks.errors import ConfigError, DataError, SourceUnavailable
from netsec_tasks.ingest import commit, ingest
from netsec_tasks.records import IngestRecord, RunContext, sha256_file
from netsec_tasks.sample import make_sample
from netsec_tasks.snapshot import TIME_COLUMN, snapshot_digest
from netsec_tasks.sources.mongo import push_data
from netsec_tasks.state import read_state, state_uri
from netsec_tasks.storage import file_uri_to_path, storage_for
from netsec_testing import free_port

FEATURES_AND_TARGET = [c for c in make_sample(1).columns]


def local(uri: str) -> str:
    return str(file_uri_to_path(uri))


def read(uri: str) -> pd.DataFrame:
    """A Parquet artifact in (file://) storage; a snapshot without its bookkeeping column."""
    frame = pd.read_parquet(local(uri))
    return frame.drop(columns=[TIME_COLUMN]) if TIME_COLUMN in frame.columns else frame


def run_ingest(cfg, run_id, **kw) -> IngestRecord:
    record = ingest(cfg, RunContext.create(cfg, run_id, trigger="test"), **kw)
    return IngestRecord.from_xcom(record.to_xcom())  # what the next Airflow task would get


def write_csv(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def threat_share(uri) -> float:
    return float((read(uri)["Result"] == -1).mean())


# ----------------------------------------------------------------------------- file source


def test_default_file_source_is_the_sample_written_once(make_cfg):
    cfg = make_cfg()
    rec = run_ingest(cfg, "first")
    sample = os.path.join(cfg.workdir, "sample", "phishing_sample.csv")
    assert rec.source == f"file:{sample}"
    assert len(pd.read_csv(sample)) == 5000 == rec.rows == rec.new_rows
    assert rec.train_rows + rec.test_rows == rec.rows
    assert rec.watermark == sha256_file(sample) and rec.previous_watermark is None
    # Everything is in storage, under the run or content-addressed.
    store = storage_for(cfg)
    assert rec.snapshot_uri == store.uri("snapshots", f"{rec.snapshot_sha256}.parquet")
    assert rec.train_uri == store.uri("runs", "first", "ingest", "train.parquet")
    assert snapshot_digest(store, rec.snapshot_uri) == rec.snapshot_sha256
    mtime = os.stat(local(rec.snapshot_uri)).st_mtime_ns
    again = run_ingest(cfg, "second")
    assert again.snapshot_uri == rec.snapshot_uri
    assert os.stat(local(rec.snapshot_uri)).st_mtime_ns == mtime  # immutable: not rewritten
    snap = read(rec.snapshot_uri)
    assert list(snap.columns) == FEATURES_AND_TARGET
    pd.testing.assert_frame_equal(snap, pd.read_csv(sample))
    train, test = read(rec.train_uri), read(rec.test_uri)
    assert list(train.columns) == FEATURES_AND_TARGET  # no bookkeeping column in the splits
    assert len(train) == rec.train_rows and len(test) == rec.test_rows
    assert len(read(rec.new_batch_uri)) == rec.rows


def test_file_watermark_previous_is_last_committed(make_cfg, sample_csv, tmp_path):
    cfg = make_cfg(**{"source.path": str(sample_csv)})
    first = run_ingest(cfg, "a")
    store = storage_for(cfg)
    assert first.previous_watermark is None
    assert not store.exists(state_uri(store, first.source))
    commit(cfg, first)
    state = read_state(store, first.source)
    assert state.watermark == first.watermark == sha256_file(sample_csv)
    assert state.snapshot_uri == first.snapshot_uri and state.run_id == "a"
    write_csv(make_sample(300, seed=5), sample_csv)  # the file is replaced with new data
    second = run_ingest(cfg, "b")
    assert second.previous_watermark == first.watermark != second.watermark
    assert second.rows == second.new_rows == 300


def test_uci_duplicate_aware_split_has_no_leak_and_plain_split_leaks(make_cfg, uci_csv):
    frame = pd.read_csv(uci_csv)
    overall = float((frame["Result"] == -1).mean())
    aware = run_ingest(make_cfg(**{"source.path": str(uci_csv)}), "aware")
    plain = run_ingest(make_cfg(**{"source.path": str(uci_csv), "split.duplicate_aware": False}), "plain")
    print(
        f"UCI: duplicate rows {aware.duplicate_rows}; leak rows dup-aware "
        f"{aware.duplicate_leak_rows}, plain {plain.duplicate_leak_rows} of {plain.test_rows}"
    )
    assert aware.duplicate_rows == plain.duplicate_rows == int(frame.duplicated().sum())
    assert aware.duplicate_leak_rows == 0
    assert plain.duplicate_leak_rows > 0
    # The leak count is what it claims: test rows with an exact copy in train.
    for rec in (aware, plain):
        train, test = read(rec.train_uri), read(rec.test_uri)
        in_train = test.merge(train.drop_duplicates(), how="left", indicator=True)["_merge"] == "both"
        assert int(in_train.sum()) == rec.duplicate_leak_rows
        assert abs(rec.test_rows / rec.rows - 0.2) < 0.01
        for split in (rec.train_uri, rec.test_uri):
            assert abs(threat_share(split) - overall) < 0.02


def test_split_is_deterministic_per_seed(make_cfg, uci_csv):
    def split(seed, run_id):
        rec = run_ingest(make_cfg(**{"source.path": str(uci_csv), "split.seed": seed}), run_id)
        return read(rec.train_uri), read(rec.test_uri)

    a_train, a_test = split(7, "a")
    b_train, b_test = split(7, "b")
    c_train, c_test = split(8, "c")
    pd.testing.assert_frame_equal(a_train, b_train)
    pd.testing.assert_frame_equal(a_test, b_test)
    assert not a_test.equals(c_test)


def test_missing_target_column_names_it_and_the_file(make_cfg, tmp_path):
    path = write_csv(make_sample(100, seed=1).drop(columns=["Result"]), tmp_path / "no_target.csv")
    with pytest.raises(DataError) as info:
        run_ingest(make_cfg(**{"source.path": path}), "r")
    assert "'Result'" in str(info.value) and path in str(info.value)
    assert info.value.columns == ["Result"]


def test_empty_file_is_a_data_error(make_cfg, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        run_ingest(make_cfg(**{"source.path": str(empty)}), "r")


@pytest.mark.parametrize("sep,bom", [(";", False), (",", True), (";", True)])
def test_bom_and_semicolon_csvs_read_fine(make_cfg, tmp_path, sep, bom):
    frame = make_sample(200, seed=4)
    path = tmp_path / "export.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + frame.to_csv(index=False, sep=sep).encode())
    rec = run_ingest(make_cfg(**{"source.path": str(path)}), "r")
    assert rec.rows == 200
    pd.testing.assert_frame_equal(read(rec.snapshot_uri), frame)


def test_file_read_in_chunks_equals_the_file_read_whole(make_cfg, tmp_path, monkeypatch):
    """A local file is staged chunk by chunk (bounded memory); chunks infer their own dtypes
    (gaps make a column float in one chunk, int in another; text in one chunk), yet the snapshot's
    rows, its digest and the split are those of the file read whole (a number in a column that
    also holds text may be spelt "0" instead of "0.0": the content hash reads them alike)."""
    import netsec_tasks.sources.file as file_source
    from netsec_tasks.split import row_hashes

    frame = make_sample(300, seed=6, missing=0.01).astype(object)
    frame.loc[250, "SFH"] = "abc"  # text in the last chunk only
    frame.loc[:99, "Favicon"] = frame.loc[:99, "Favicon"].fillna(1)  # no gap in the first chunk
    path = write_csv(frame, tmp_path / "gaps.csv")
    records = {}
    for rows in (10**6, 100):
        monkeypatch.setattr(file_source, "CHUNK_ROWS", rows)
        cfg = make_cfg(**{"source.path": path, "workdir": str(tmp_path / f"w{rows}")})
        records[rows] = run_ingest(cfg, f"r{rows}")
    whole, chunked = records.values()
    assert chunked.snapshot_sha256 == whole.snapshot_sha256
    assert (chunked.train_rows, chunked.test_rows) == (whole.train_rows, whole.test_rows)
    for uri in ("snapshot_uri", "train_uri", "test_uri"):
        a, b = read(getattr(chunked, uri)), read(getattr(whole, uri))
        assert list(a.columns) == list(b.columns) == FEATURES_AND_TARGET
        np.testing.assert_array_equal(row_hashes(a, list(a.columns)), row_hashes(b, list(b.columns)))
    snap = read(chunked.snapshot_uri)
    assert snap["SFH"].tolist()[250] == "abc" and snap["Favicon"].isna().sum() > 0


def test_glob_source_concatenates_files(make_cfg, tmp_path):
    write_csv(make_sample(100, seed=1), tmp_path / "part-1.csv")
    write_csv(make_sample(150, seed=2), tmp_path / "part-2.csv")
    rec = run_ingest(make_cfg(**{"source.path": str(tmp_path / "part-*.csv")}), "r")
    assert rec.rows == rec.new_rows == 250


# ----------------------------------------------------------------------------- MongoDB source


def test_mongo_ingest_of_uci_equals_the_file_and_a_night_of_bad_values_is_quarantined(
    mongo_cfg, make_cfg, uci_csv, tmp_path
):
    cfg = mongo_cfg()
    push_data(uci_csv, cfg)
    from_mongo = run_ingest(cfg, "mongo")
    from_file = run_ingest(make_cfg(**{"source.path": str(uci_csv)}), "file")
    snap = read(from_mongo.snapshot_uri)
    assert list(snap.columns) == FEATURES_AND_TARGET  # no _id, _netsec_key, ingested_at
    pd.testing.assert_frame_equal(snap, pd.read_csv(uci_csv))
    assert from_mongo.snapshot_sha256 == from_file.snapshot_sha256
    assert from_mongo.rows == from_mongo.new_rows == from_mongo.documents_read == 11055
    assert from_mongo.duplicate_leak_rows == 0
    assert from_mongo.source == f"mongo:{cfg.source.mongo.database}.phishing"
    # Same rows, same sides, whichever source they came from.
    pd.testing.assert_frame_equal(read(from_mongo.test_uri), read(from_file.test_uri))

    # The next night brings values no machine type holds, booleans and text in a number column,
    # by both sources (push-data stores an integer beyond 8 bytes as text). Each is quarantined
    # by validation with its reason; neither night fails.
    from hostile_inputs import BAD_NUMBERS, with_cell

    from netsec_tasks.validate import validate

    lines = uci_csv.read_text().splitlines()
    cells = [cell for _, cell, _ in BAD_NUMBERS] + ["=1+1", "@SUM(1+1)"]
    night = tmp_path / "night2.csv"
    night.write_bytes(with_cell(lines[:201], "Favicon", cells, first_row=1))
    assert push_data(night, cfg).inserted == 200
    grown = tmp_path / "uci-and-night2.csv"
    grown.write_bytes(
        uci_csv.read_bytes() + b"".join(ln.encode() + b"\n" for ln in night.read_text().splitlines()[1:])
    )
    for night_cfg, run_id in ((cfg, "mongo-2"), (make_cfg(**{"source.path": str(grown)}), "file-2")):
        rec = run_ingest(night_cfg, run_id)
        assert rec.rows == 11055 + 200
        checked = validate(night_cfg, RunContext.create(night_cfg, run_id, trigger="test"), rec)
        assert checked.passed and checked.rows_invalid == len(cells), run_id
        invalid = pd.read_csv(local(checked.invalid_uri), dtype=str, keep_default_na=False)
        invalid = invalid[invalid["split"] != "new_batch"]  # the new batch (every row, here) too
        assert set(invalid["column"]) == {"Favicon"} and len(invalid) == len(cells)
        values = set(invalid["value"])
        assert str(2**64) in values and str(-(2**63) - 1) in values and "'=1+1" in values, values
        reasons = " ".join(invalid["reason"])
        for _, _, reason in BAD_NUMBERS:
            assert re.search(reason, reasons), (reason, reasons)


@pytest.mark.parametrize("partition_rows", [None, 1500])
def test_two_nights_read_only_new_documents(mongo_cfg, uci_csv, tmp_path, partition_rows):
    """Night 1 trains on UCI rows 1-8,000; rows 8,001-11,055 arrive; night 2 reads only them
    from MongoDB (the rest comes from night 1's snapshot in storage) and no row changes side.
    With partitions of 1,500 rows the snapshots are partitioned data sets (issue 26), night 2
    extends night 1's partitions, and every row keeps its side all the same."""
    cfg = mongo_cfg(**({"storage.partition_rows": partition_rows} if partition_rows else {}))
    frame = pd.read_csv(uci_csv)
    push_data(write_csv(frame.iloc[:8000], tmp_path / "day1.csv"), cfg)
    night1 = run_ingest(cfg, "night1")
    assert (night1.documents_read, night1.rows, night1.rows_reused) == (8000, 8000, 0)
    commit(cfg, night1)

    push_data(write_csv(frame.iloc[8000:], tmp_path / "day2.csv"), cfg)
    night2 = run_ingest(cfg, "night2")
    print(
        f"night 2 read {night2.documents_read} documents of a {len(frame)}-document collection "
        f"({night2.rows_reused} rows reused from night 1's snapshot)"
    )
    assert night2.documents_read == night2.new_rows == len(frame) - 8000
    assert (night2.rows, night2.rows_reused) == (len(frame), 8000)
    assert night2.previous_watermark == night1.watermark != night2.watermark
    pd.testing.assert_frame_equal(read(night2.new_batch_uri), frame.iloc[8000:].reset_index(drop=True))
    pd.testing.assert_frame_equal(read(night2.snapshot_uri), frame)
    if partition_rows:
        from netsec_tasks.storage import open_dataset

        snap = open_dataset(storage_for(cfg), night2.snapshot_uri)
        assert snap.partitioned and len(snap) == 8
        assert snapshot_digest(storage_for(cfg), night2.snapshot_uri) == night2.snapshot_sha256
    # Training sees the whole window; nothing of night 1's training rows is in night 2's test.
    key = list(frame.columns)
    train1 = read(night1.train_uri).drop_duplicates()
    test2 = read(night2.test_uri)
    assert test2.merge(train1, on=key, how="inner").empty
    assert night2.train_rows + night2.test_rows == len(frame)
    old_test = read(night1.test_uri)
    assert len(old_test.merge(read(night2.train_uri).drop_duplicates(), on=key)) == 0


def test_watermark_advances_only_on_commit(mongo_cfg, tmp_path):
    cfg = mongo_cfg()
    batch1 = make_sample(300, seed=11)
    batch2 = make_sample(80, seed=12)
    push_data(write_csv(batch1, tmp_path / "b1.csv"), cfg)

    run1 = run_ingest(cfg, "run1")
    assert (run1.rows, run1.new_rows, run1.previous_watermark) == (300, 300, None)
    commit(cfg, run1)
    store = storage_for(cfg)
    assert read_state(store, run1.source).watermark == run1.watermark

    push_data(write_csv(batch2, tmp_path / "b2.csv"), cfg)
    run2 = run_ingest(cfg, "run2")
    assert run2.previous_watermark == run1.watermark
    assert run2.watermark > run1.watermark  # ObjectId hex order is insertion order
    assert (run2.rows, run2.new_rows, run2.documents_read) == (380, 80, 80)
    pd.testing.assert_frame_equal(read(run2.new_batch_uri), batch2)

    # run2 fails (never committed): the next run gets the same new batch again.
    run3 = run_ingest(cfg, "run3")
    assert run3.previous_watermark == run1.watermark and run3.new_rows == 80
    assert run3.snapshot_sha256 == run2.snapshot_sha256
    commit(cfg, run3)
    run4 = run_ingest(cfg, "run4")
    assert (run4.previous_watermark, run4.new_rows, run4.rows) == (run3.watermark, 0, 380)
    assert run4.documents_read == 0
    empty = read(run4.new_batch_uri)
    assert len(empty) == 0 and list(empty.columns) == FEATURES_AND_TARGET


def test_lost_snapshot_falls_back_to_a_full_read(mongo_cfg, tmp_path):
    cfg = mongo_cfg()
    push_data(write_csv(make_sample(200, seed=1), tmp_path / "a.csv"), cfg)
    first = run_ingest(cfg, "a")
    commit(cfg, first)
    push_data(write_csv(make_sample(50, seed=2), tmp_path / "b.csv"), cfg)
    os.remove(local(first.snapshot_uri))
    again = run_ingest(cfg, "b")
    assert (again.documents_read, again.rows, again.new_rows, again.rows_reused) == (250, 250, 50, 0)
    # Not incremental: every run reads the window, the new batch is still what came after.
    full = run_ingest(mongo_cfg(**{"source.mongo.incremental": False}), "c")
    assert (full.documents_read, full.new_rows) == (250, 50)


def test_watermark_on_a_datetime_field(mongo_cfg, tmp_path):
    cfg = mongo_cfg(**{"source.mongo.watermark_field": "ingested_at"})
    first = make_sample(120, seed=1)
    later = make_sample(30, seed=2)
    push_data(write_csv(first, tmp_path / "a.csv"), cfg)
    run1 = run_ingest(cfg, "r1")
    assert run1.new_rows == 120 and run1.watermark_type == "datetime"
    assert dt.datetime.fromisoformat(run1.watermark).tzinfo is not None
    commit(cfg, run1)
    push_data(write_csv(later, tmp_path / "b.csv"), cfg)
    run2 = run_ingest(cfg, "r2")
    assert (run2.previous_watermark, run2.rows, run2.new_rows) == (run1.watermark, 150, 30)
    assert run2.documents_read == 30
    pd.testing.assert_frame_equal(read(run2.new_batch_uri), later)
    assert "ingested_at" not in read(run2.snapshot_uri).columns


def _oid_at(when: dt.datetime, n: int):
    from bson import ObjectId

    return ObjectId(struct.pack(">I", int(when.timestamp())) + struct.pack(">Q", n)[-8:])


def test_window_days_trains_on_recent_rows_only(mongo_cfg, mongo_db):
    client, db = mongo_db
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rows = make_sample(400, seed=3).to_dict("records")
    ages = [40] * 100 + [10] * 100 + [0] * 100  # days before now
    docs = [
        {"_id": _oid_at(now - dt.timedelta(days=age), i), **row}
        for i, (age, row) in enumerate(zip(ages, rows[:300]))
    ]
    client[db]["phishing"].insert_many(docs)

    cfg = mongo_cfg(**{"source.window_days": 15})
    windowed = run_ingest(cfg, "w")
    assert windowed.rows == windowed.documents_read == 200  # the server answered the window
    everything = run_ingest(mongo_cfg(), "all")
    assert everything.rows == 300

    # The window moves with the data: 12 days later, the 10-day-old rows fall out of it.
    commit(cfg, windowed)
    later = [
        {"_id": _oid_at(now + dt.timedelta(days=12), 1000 + i), **row} for i, row in enumerate(rows[300:])
    ]
    client[db]["phishing"].insert_many(later)
    moved = run_ingest(cfg, "w2")
    assert (moved.documents_read, moved.new_rows) == (100, 100)
    assert (moved.rows, moved.rows_reused) == (200, 100)  # now 22 days old: dropped


def test_window_days_needs_a_time_watermark(mongo_cfg, mongo_db):
    client, db = mongo_db
    client[db]["phishing"].insert_many(
        [{"seq": i, **r} for i, r in enumerate(make_sample(50, seed=1).to_dict("records"))]
    )
    with pytest.raises(ConfigError, match="window_days"):
        run_ingest(mongo_cfg(**{"source.mongo.watermark_field": "seq", "source.window_days": 3}), "r")
    rec = run_ingest(mongo_cfg(**{"source.mongo.watermark_field": "seq"}), "ok")
    assert rec.watermark == "49" and "seq" in read(rec.snapshot_uri).columns


def test_mongo_reads_in_batches_and_writes_in_chunks(mongo_cfg, mongo_server, sample_csv):
    import pymongo
    from pymongo import monitoring

    class Commands(monitoring.CommandListener):
        def __init__(self):
            self.names = []

        def started(self, event):
            self.names.append(event.command_name)

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    cfg = mongo_cfg(**{"source.mongo.batch_size": 100})
    push_data(sample_csv, cfg)
    listener = Commands()
    client = pymongo.MongoClient(mongo_server.uri, event_listeners=[listener])
    try:
        rec = run_ingest(cfg, "batched", mongo_client=client)
        client.admin.command("ping")  # the caller's client (e.g. MongoHook's) stays open
    finally:
        client.close()
    n = len(pd.read_csv(sample_csv))
    assert listener.names.count("getMore") >= n // 100 - 1
    meta = pq.ParquetFile(local(rec.snapshot_uri)).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert len(sizes) > 1 and max(sizes) <= 100 and sum(sizes) == n


def test_heterogeneous_documents_are_kept_for_validation(mongo_cfg, mongo_db):
    client, db = mongo_db
    rows = make_sample(60, seed=8).to_dict("records")
    rows[5]["SFH"] = "n/a"  # a bad value: validation's job, not a crash here
    rows[50]["url"] = "http://example.test"  # a field only late documents have
    client[db]["phishing"].insert_many(rows)
    rec = run_ingest(mongo_cfg(**{"source.mongo.batch_size": 20}), "r")
    snap = read(rec.snapshot_uri)
    assert rec.rows == 60
    assert snap["url"].notna().sum() == 1 and snap.loc[50, "url"] == "http://example.test"
    assert snap.loc[5, "SFH"] == "n/a" and snap.loc[6, "SFH"] == str(rows[6]["SFH"])


def test_mongo_missing_target_names_it_and_the_collection(mongo_cfg, mongo_db):
    client, db = mongo_db
    client[db]["phishing"].insert_many(make_sample(30, seed=1).drop(columns=["Result"]).to_dict("records"))
    with pytest.raises(DataError) as info:
        run_ingest(mongo_cfg(), "r")
    assert "'Result'" in str(info.value) and f"mongo:{db}.phishing" in str(info.value)


def test_empty_collection_is_a_data_error(mongo_cfg):
    with pytest.raises(DataError, match="empty"):
        run_ingest(mongo_cfg(), "r")


def test_non_objectid_ids_need_a_watermark_field(mongo_cfg, mongo_db):
    client, db = mongo_db
    client[db]["phishing"].insert_many(
        [{"_id": i, **r} for i, r in enumerate(make_sample(20, seed=1).to_dict("records"))]
    )
    with pytest.raises(DataError, match="watermark_field"):
        run_ingest(mongo_cfg(), "r")


def test_unreachable_mongo_names_the_uri_and_timeout(make_cfg):
    port = free_port()
    cfg = make_cfg(
        **{
            "source.kind": "mongo",
            "source.mongo.uri": f"mongodb://netsec:hunter2@127.0.0.1:{port}/netsec",
            "source.mongo.server_selection_timeout_ms": 300,
        }
    )
    with pytest.raises(SourceUnavailable) as info:
        run_ingest(cfg, "r")
    msg = str(info.value)
    assert f"mongodb://netsec:***@127.0.0.1:{port}/netsec" in msg and "300 ms" in msg
    assert "hunter2" not in msg
