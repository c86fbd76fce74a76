"""The storage layer (pyarrow.fs) on a local directory and on moto's real S3 server."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from netsec_tasks.errors import DataError, SourceUnavailable
from netsec_tasks.storage import atomic_write, storage_for
from netsec_testing import free_port


@pytest.fixture(params=["file", "s3"])
def storage(request, make_cfg, tmp_path):
    if request.param == "file":
        return storage_for(make_cfg(**{"storage.uri": (tmp_path / "store").as_uri()}))
    s3_server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return storage_for(
        make_cfg(**{"storage.uri": f"s3://{bucket}/root", "storage.endpoint_url": s3_server.endpoint_url})
    )


def test_round_trips_and_listing(storage):
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"]})
    uri = storage.uri("runs", "r1", "ingest", "train.parquet")
    assert uri.startswith(storage.root + "/runs/r1/")
    assert not storage.exists(uri)
    storage.write_frame(uri, frame)
    storage.write_text(storage.uri("runs", "r1", "report.yaml"), "passed: true\n")
    pd.testing.assert_frame_equal(storage.read_frame(uri), frame)
    assert storage.read_text(storage.uri("runs", "r1", "report.yaml")) == "passed: true\n"
    listed = {o.uri: o.size for o in storage.list(storage.uri("runs", "r1"))}
    assert set(listed) == {uri, storage.uri("runs", "r1", "report.yaml")}
    assert listed[uri] == storage.size(uri) > 0
    assert storage.list(storage.uri("runs", "nothing-here")) == []
    storage.delete(uri)
    assert not storage.exists(uri)


def test_a_failed_write_leaves_nothing(storage):
    uri = storage.uri("runs", "r2", "half.parquet")
    with pytest.raises(RuntimeError), storage.open_output(uri) as f:
        f.write(b"PAR1 partial")
        raise RuntimeError("killed mid-write")
    assert not storage.exists(uri)
    assert storage.list(storage.uri("runs", "r2")) == []


def test_missing_object_names_the_uri(storage):
    uri = storage.uri("runs", "r3", "missing.parquet")
    with pytest.raises(DataError) as info:
        storage.read_frame(uri)
    assert uri in str(info.value)


def test_damaged_parquet_is_a_data_error(storage):
    uri = storage.uri("bad.parquet")
    storage.write_bytes(uri, b"not parquet at all")
    with pytest.raises(DataError, match="cannot read Parquet"):
        storage.read_frame(uri)


def test_unreachable_s3_fails_within_the_budget(make_cfg):
    endpoint = f"http://127.0.0.1:{free_port()}"
    cfg = make_cfg(
        **{
            "storage.uri": "s3://netsec",
            "storage.endpoint_url": endpoint,
            "storage.connect_timeout_seconds": 1,
            "storage.max_attempts": 2,
        }
    )
    start = time.monotonic()
    with pytest.raises(SourceUnavailable) as info:
        storage_for(cfg).write_text("s3://netsec/x.txt", "x")
    assert endpoint in str(info.value) and "s3://netsec/x.txt" in str(info.value)
    assert time.monotonic() - start < 60  # a bounded budget, not minutes of retries


def test_unwritable_local_storage_is_reported(make_cfg, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    storage = storage_for(make_cfg(**{"storage.uri": (blocker / "store").as_uri()}))
    with pytest.raises(SourceUnavailable, match="cannot write"):
        storage.write_text(storage.uri("x.txt"), "x")


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_state_kept_across_runs_reads_back_or_names_the_broken_file(make_cfg, tmp_path):
    """The three states kept across runs (a source's watermark, monitoring's place in the log, a
    challenger's shadow count) are read one way: nothing there is None, a valid file is its
    record, a broken one is a DataError naming the file and saying what deleting it does."""
    from netsec_tasks.monitoring.shadow import read_shadow_state
    from netsec_tasks.monitoring.shadow import state_uri as shadow_uri
    from netsec_tasks.monitoring.state import read_state as read_monitoring_state
    from netsec_tasks.monitoring.state import state_uri as monitoring_uri
    from netsec_tasks.state import SourceState, commit, read_state, state_uri

    storage = storage_for(make_cfg(**{"storage.uri": (tmp_path / "store").as_uri()}))
    readers = [
        (lambda: read_state(storage, "src"), state_uri(storage, "src"), "source state", "re-ingest"),
        (
            lambda: read_monitoring_state(storage, "m", "log"),
            monitoring_uri(storage, "m", "log"),
            "monitoring state",
            "read the whole prediction log again",
        ),
        (
            lambda: read_shadow_state(storage, "m", "3"),
            shadow_uri(storage, "m", "3"),
            "shadow state",
            "count the challenger's rows again",
        ),
    ]
    for read, uri, what, remedy in readers:
        assert read() is None
        storage.write_text(uri, '{"rows": "not json')
        with pytest.raises(DataError, match=f"{what} is unreadable .*; delete it to .*{remedy}") as err:
            read()
        assert err.value.source == uri
    commit(storage, SourceState(source="src", watermark="w1"))
    assert read_state(storage, "src").watermark == "w1"
