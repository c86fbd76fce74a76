"""push-data and MongoDB connections, against a real nx-27017 server."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from netsec_tasks.errors import DataError, SourceUnavailable
from netsec_tasks.sample import make_sample
from netsec_tasks.sources.mongo import INGESTED_AT_FIELD, KEY_FIELD, LOAD_FIELD, connect, mask_uri, push_data
from netsec_testing import free_port


def test_mask_uri_hides_password_only():
    assert (
        mask_uri("mongodb://alice:s3cret@db:27017/netsec?authSource=admin")
        == "mongodb://alice:***@db:27017/netsec?authSource=admin"
    )
    assert mask_uri("mongodb://db:27017/netsec") == "mongodb://db:27017/netsec"
    assert "tok" not in mask_uri("mongodb+srv://u:p@c.example/?authMechanismProperties=AWS_SESSION_TOKEN:tok")


def test_push_is_idempotent_per_load(mongo_cfg, mongo_db, sample_csv, tmp_path):
    client, db = mongo_db
    cfg = mongo_cfg(**{"source.mongo.batch_size": 400})
    first = push_data(sample_csv, cfg)
    n = len(pd.read_csv(sample_csv))
    assert (first.read, first.inserted, first.skipped, first.collection_count) == (n, n, 0, n)

    again = push_data(sample_csv, cfg)
    assert again.load_id == first.load_id
    assert (again.inserted, again.skipped, again.collection_count) == (0, n, n)

    doc = client[db]["phishing"].find_one()
    assert isinstance(doc[INGESTED_AT_FIELD], dt.datetime)
    assert doc[KEY_FIELD].startswith(first.load_id + ":") and doc[LOAD_FIELD] == first.load_id
    assert isinstance(doc["Result"], int)
    # The reader's range queries are answered from indexes push-data made.
    indexed = {tuple(k for k, _ in ix["key"]) for ix in client[db]["phishing"].index_information().values()}
    assert (KEY_FIELD,) in indexed and (INGESTED_AT_FIELD,) in indexed


def test_two_loads_sharing_identical_rows_keep_every_row(mongo_cfg, mongo_db, uci_csv, tmp_path):
    """The issue's operator flow: push UCI rows 1-8,000, then rows 8,001-11,055. Rows of the
    second file equal to rows of the first are real repeated events: all are inserted."""
    cfg = mongo_cfg()
    frame = pd.read_csv(uci_csv)
    day1, day2 = tmp_path / "day1.csv", tmp_path / "day2.csv"
    frame.iloc[:8000].to_csv(day1, index=False)
    frame.iloc[8000:].to_csv(day2, index=False)
    shared = frame.iloc[8000:].merge(frame.iloc[:8000].drop_duplicates(), how="inner")
    assert len(shared) > 300  # the point of the test: day 2 repeats day-1 rows
    first, second = push_data(day1, cfg), push_data(day2, cfg)
    print(f"push-data day 1: {first.model_dump()}\npush-data day 2: {second.model_dump()}")
    assert (first.inserted, second.inserted, second.skipped) == (8000, len(frame) - 8000, 0)
    assert second.collection_count == len(frame)
    assert (push_data(day1, cfg).inserted, push_data(day2, cfg).inserted) == (0, 0)


def test_a_grown_file_under_the_same_load_id_adds_only_new_rows(mongo_cfg, sample_csv, tmp_path):
    cfg = mongo_cfg()
    n = len(pd.read_csv(sample_csv))
    push_data(sample_csv, cfg, load_id="daily-export")
    grown = tmp_path / "grown.csv"
    pd.concat([pd.read_csv(sample_csv), make_sample(120, seed=99)]).to_csv(grown, index=False)
    third = push_data(grown, cfg, load_id="daily-export")
    assert (third.read, third.inserted, third.skipped) == (n + 120, 120, n)
    assert third.collection_count == n + 120


def test_push_real_uci_file_keeps_every_duplicate(mongo_cfg, mongo_db, uci_csv):
    client, db = mongo_db
    frame = pd.read_csv(uci_csv)
    assert frame.duplicated().sum() > 0  # the point of the test: legitimately repeated rows
    result = push_data(uci_csv, mongo_cfg())
    print(f"push-data UCI: {result.model_dump()}")
    assert result.inserted == len(frame) == result.collection_count
    keys = client[db]["phishing"].distinct(KEY_FIELD)
    assert len(keys) == len(frame)


def test_push_missing_columns_inserts_nothing(mongo_cfg, mongo_db, tmp_path):
    client, db = mongo_db
    bad = tmp_path / "bad.csv"
    make_sample(50, seed=1).drop(columns=["Result", "SFH"]).to_csv(bad, index=False)
    with pytest.raises(DataError) as info:
        push_data(bad, mongo_cfg())
    assert "Result" in str(info.value) and "SFH" in str(info.value) and str(bad) in str(info.value)
    assert set(info.value.columns) == {"Result", "SFH"}
    assert client[db]["phishing"].count_documents({}) == 0


def test_push_bom_semicolon_csv(mongo_cfg, mongo_db, tmp_path):
    client, db = mongo_db
    frame = make_sample(40, seed=2)
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + frame.to_csv(index=False, sep=";").encode())
    result = push_data(path, mongo_cfg())
    assert result.inserted == 40
    doc = client[db]["phishing"].find_one({}, {"_id": 0, KEY_FIELD: 0, LOAD_FIELD: 0, INGESTED_AT_FIELD: 0})
    assert list(doc) == list(frame.columns)  # BOM not glued to the first column name


def test_push_with_a_given_client_leaves_it_open(mongo_cfg, mongo_server, sample_csv):
    import pymongo

    client = pymongo.MongoClient(mongo_server.uri, serverSelectionTimeoutMS=3000)
    try:
        result = push_data(sample_csv, mongo_cfg(), client=client, batch_size=700)
        assert result.inserted == result.read
        assert client.admin.command("ping")["ok"] == 1
    finally:
        client.close()


def test_connect_unreachable_names_uri_and_timeout_masks_password():
    port = free_port()  # bound then released: nothing listens there
    uri = f"mongodb://alice:s3cret@127.0.0.1:{port}/netsec"
    with pytest.raises(SourceUnavailable) as info:
        connect(uri, timeout_ms=300)
    msg = str(info.value)
    assert f"mongodb://alice:***@127.0.0.1:{port}/netsec" in msg
    assert "300 ms" in msg and "s3cret" not in msg


def test_push_unreachable_raises_source_unavailable(make_cfg, sample_csv):
    port = free_port()
    cfg = make_cfg(
        **{
            "source.mongo.uri": f"mongodb://127.0.0.1:{port}/netsec",
            "source.mongo.server_selection_timeout_ms": 200,
        }
    )
    with pytest.raises(SourceUnavailable, match=f"127.0.0.1:{port}"):
        push_data(sample_csv, cfg)
