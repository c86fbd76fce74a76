"""Small pieces: no Airflow import, the prediction log's bounded queue, its record format and its
MongoDB sink, the compiled fast path's refusal of what it cannot reproduce."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from serving_helpers import REPO

from netsec_tasks.errors import DataError
from netsec_tasks.prediction_log import (
    new_request_id,
    prediction_documents,
    prediction_frame,
    read_prediction_log,
    request_time,
)
from serving.prediction_writer import JsonlSink, LogEntry, MongoSink, PredictionLog

FEATURES = ("a", "b")


def _entry(n: int = 3) -> LogEntry:
    return LogEntry(
        time=dt.datetime.now(dt.UTC),
        model_name="m",
        model_version="7",
        features=FEATURES,
        inputs=np.arange(2 * n, dtype=float).reshape(n, 2),
        is_threat=np.array([1, 0, 1][:n] * (n // 3 + 1))[:n].astype(np.int8),
        probability=np.linspace(0, 1, n),
        labels=[-1] * n,
        route="/predict",
    )


def test_serving_never_imports_airflow():
    code = (
        "import sys, serving.app, serving.cli; "
        "bad = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


class BlockingSink:
    def __init__(self):
        self.release = threading.Event()
        self.rows = 0

    def convert(self, entry):
        return [(entry.n_rows, entry)]

    def write(self, items):
        self.release.wait(30)
        self.rows += sum(entry.n_rows for _, entry in items)

    def describe(self):
        return "blocking"

    def close(self):
        pass


def test_full_queue_drops_and_counts_instead_of_blocking():
    sink = BlockingSink()
    dropped = []
    plog = PredictionLog(sink, batch_rows=1, flush_seconds=0.05, max_queued=2, on_drop=dropped.append).start()
    start = time.perf_counter()
    accepted = sum(plog.submit(_entry()) for _ in range(50))
    assert time.perf_counter() - start < 5  # generous: submit never waits for the sink
    assert accepted < 50 and plog.dropped_rows == 3 * (50 - accepted) == sum(dropped)
    sink.release.set()
    plog.close()
    assert sink.rows == 3 * accepted


class ListSink(BlockingSink):
    def __init__(self):
        super().__init__()
        self.release.set()
        self.writes = 0

    def write(self, items):
        super().write(items)
        self.writes += 1


def test_log_writes_when_a_batch_is_due_not_per_request():
    sink = ListSink()
    plog = PredictionLog(sink, batch_rows=10, flush_seconds=60, max_queued=100).start()
    for _ in range(3):
        plog.submit(_entry(3))  # 9 rows: below the batch, and the flush is a minute away
    time.sleep(0.3)
    assert sink.rows == 0
    plog.submit(_entry(3))  # 12 rows: a batch is due now
    deadline = time.monotonic() + 5
    while sink.rows < 12 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (sink.rows, sink.writes) == (12, 1)
    plog.submit(_entry(1))
    plog.close()  # writes the rest
    assert (sink.rows, sink.writes, plog.written_rows) == (13, 2, 13)
    assert not plog.submit(_entry(1)) and plog.dropped_rows == 1  # closed: dropped, counted


def test_mongo_sink_writes_documents(mongo_server, mongo_db):
    client, name = mongo_db
    plog = PredictionLog(
        MongoSink(mongo_server.uri, name, "predictions", "m"),
        batch_rows=100,
        flush_seconds=0.1,
        max_queued=100,
    ).start()
    entry = _entry(3)
    plog.submit(entry)
    plog.close()
    assert plog.written_rows == 3
    docs = list(client[name]["predictions"].find({}, {"_id": 0}))
    assert len(docs) == 1 and docs[0]["n_rows"] == 3  # one columnar document per request
    assert docs[0]["features"] == {"a": [0, 2, 4], "b": [1, 3, 5]}
    frame = prediction_frame(docs)  # what a drift check on the Mongo log reads back
    np.testing.assert_array_equal(frame[["a", "b"]].to_numpy(float), entry.inputs)
    assert frame["is_threat"].tolist() == [1, 0, 1] and frame["label"].tolist() == [-1] * 3
    assert set(frame["model_version"]) == {"7"}


def test_jsonl_log_reads_back_row_for_row(tmp_path):
    now = dt.datetime(2026, 11, 21, 23, 59, 59, 123456, tzinfo=dt.UTC)
    rng = np.random.default_rng(0)
    whole = rng.integers(-1, 2, size=(25, 2)).astype(float)
    fractional = np.column_stack([whole[:, 0], rng.random(25)])
    fractional[3, 1] = np.nan  # a missing value the imputer would fill
    plog = PredictionLog(JsonlSink(tmp_path, "m"), batch_rows=10_000, flush_seconds=60, max_queued=10).start()
    entries = [
        LogEntry(
            time=now,
            model_name="m",
            model_version=v,
            features=FEATURES,
            inputs=x,
            is_threat=(x[:, 0] > 0).astype(np.int8),
            probability=np.linspace(0, 1, 25),
            labels=["phish" if t else "ok" for t in (x[:, 0] > 0)],
            route="/predict",
            request_id=new_request_id(now),
        )
        for v, x in (("1", whole), ("2", fractional))
    ]
    for e in entries:
        plog.submit(e)
    plog.close()
    assert plog.written_rows == 50
    # The log is the model's own folder under the log root.
    assert [f.relative_to(tmp_path).as_posix() for f in tmp_path.rglob("*.jsonl")] == [
        "m/predictions-2026-11-21.jsonl"
    ]
    lines = (tmp_path / "m" / "predictions-2026-11-21.jsonl").read_text().splitlines()
    assert len(lines) == 2
    # Whole-number columns are written as integers (cheaper to encode), others as floats.
    first, second = (json.loads(line)["features"] for line in lines)
    assert all(type(v) is int for col in ("a", "b") for v in first[col])
    assert all(type(v) is int for v in second["a"])
    assert all(type(v) is float for i, v in enumerate(second["b"]) if i != 3)
    frame = read_prediction_log(tmp_path)  # a root with one model's folder reads that folder
    assert list(frame.columns) == [
        "a",
        "b",
        "is_threat",
        "threat_probability",
        "label",
        "time",
        "model_name",
        "model_version",
        "route",
        "prediction_id",
        "challenger_version",
        "challenger_is_threat",
        "challenger_threat_probability",
    ]
    assert frame["prediction_id"].tolist() == [f"{e.request_id}-{k}" for e in entries for k in range(25)]
    assert request_time(entries[0].request_id) == now.replace(microsecond=123000)
    np.testing.assert_array_equal(
        frame[["a", "b"]].to_numpy(float), np.vstack([whole, fractional])
    )  # NaN included
    assert frame["is_threat"].tolist() == [int(t) for e in entries for t in e.is_threat]
    assert frame["threat_probability"].tolist() == np.linspace(0, 1, 25).tolist() * 2
    assert frame["label"].tolist() == entries[0].labels + entries[1].labels
    assert frame["model_version"].tolist() == ["1"] * 25 + ["2"] * 25
    assert (frame["time"] == pd.Timestamp(now)).all()
    assert list(read_prediction_log(tmp_path, outputs=False).columns) == ["a", "b"]


def test_log_documents_split_large_requests_and_keep_text_columns():
    frame = pd.DataFrame({"a": [1.5, 2.0, np.nan, 4.0, 5.0], "b": ["x", "y", "z", None, "w"]})
    docs = prediction_documents(
        time=dt.datetime.now(dt.UTC),
        model_name="m",
        model_version="1",
        route="/predict/csv",
        features=("a", "b"),
        inputs=frame,
        is_threat=np.array([0, 1, 0, 1, 0]),
        probability=np.full(5, 0.25),
        labels=[1, -1, 1, -1, 1],
        max_rows=2,
        request_id="0" * 22,
    )
    assert [d["n_rows"] for d in docs] == [2, 2, 1]
    back = prediction_frame(docs)
    # One request id across the documents of a split request: ids number its rows.
    assert back["prediction_id"].tolist() == [f"{'0' * 22}-{k}" for k in range(5)]
    pd.testing.assert_series_equal(back["a"], frame["a"])
    assert back["b"].tolist()[:3] == ["x", "y", "z"] and back["b"].isna().tolist()[3]


def test_log_of_models_with_other_features_keeps_log_order():
    now = dt.datetime.now(dt.UTC)

    def docs(features, x, version):
        return prediction_documents(
            time=now,
            model_name="m",
            model_version=version,
            route="/predict",
            features=features,
            inputs=np.asarray(x, dtype=float),
            is_threat=np.zeros(len(x)),
            probability=np.zeros(len(x)),
            labels=[1] * len(x),
        )

    log = (
        docs(("a", "b"), [[1, 2]], "1")
        + docs(("a", "c"), [[3, 4], [5, 6]], "2")
        + docs(("a", "b"), [[7, 8]], "1")
    )
    frame = prediction_frame(log)
    assert frame["a"].tolist() == [1, 3, 5, 7]
    assert frame["model_version"].tolist() == ["1", "2", "2", "1"]
    assert frame["b"].tolist()[::3] == [2, 8] and frame["b"].isna().tolist()[1:3] == [True, True]
    assert frame["c"].tolist()[1:3] == [4, 6]


def test_damaged_log_is_named(tmp_path):
    path = tmp_path / "predictions-2026-11-21.jsonl"
    path.write_text('{"n_rows": 1, "features": {"a": [1]}')  # cut short mid-write
    with pytest.raises(DataError, match=r"predictions-2026-11-21.jsonl: line 1 is not JSON"):
        read_prediction_log(tmp_path)
    path.write_text('{"n_rows": 2, "features": {"a": [1]}}\n')
    with pytest.raises(DataError, match="document 1 is not a prediction-log record"):
        read_prediction_log(path, outputs=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no prediction log files"):
        read_prediction_log(empty)


def test_fast_path_calls_unknown_preprocessing_steps_and_refuses_disagreement(monkeypatch):
    """A step the fast path does not know is the identity on clean rows is called itself; a fast
    path that disagrees with the pipeline is refused, naming what disagreed."""
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import PolynomialFeatures

    from serving import fastpath

    rng = np.random.default_rng(0)
    x = rng.integers(-1, 2, size=(300, 4)).astype(float)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    feats = ["a", "b", "c", "d"]
    frame = pd.DataFrame(x, columns=feats)
    pipe = Pipeline([("poly", PolynomialFeatures()), ("model", RandomForestClassifier(5, random_state=0))])
    pipe.fit(frame, y)
    fast, why = fastpath.fast_path_for(pipe, feats, x)
    assert fast is not None and "preprocessing: fitted steps;" in why, why

    plain = Pipeline([("model", RandomForestClassifier(5, random_state=0))]).fit(frame, y)
    fast, why = fastpath.fast_path_for(plain, feats, x)
    assert why.startswith("compiled: onnxruntime"), why

    real_plan = fastpath.plan_for

    def half(est, n):
        plan = real_plan(est, n)
        wrong = fastpath.Predictor("wrong", lambda z: plan.small.fn(z) * 0.5, exact=False)
        return fastpath.Plan(wrong, wrong, 0, False)

    # compile_pipeline looks plan_for up in its own module.
    monkeypatch.setattr(fastpath.compiled, "plan_for", half)
    fast, why = fastpath.fast_path_for(plain, feats, x)
    assert fast is None and "disagreed" in why and "differs by" in why, why


def test_concurrent_split_batches_give_the_same_probabilities():
    """Large batches are split across threads only when other batches leave threads free; either
    way every row gets the result it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.ensemble import RandomForestClassifier

    from serving.fastpath import RowSplitter, plan_for

    rng = np.random.default_rng(1)
    x = rng.integers(-1, 2, size=(2000, 6)).astype(float)
    y = (x[:, 0] + x[:, 1] + rng.normal(0, 0.5, 2000) > 0).astype(int)
    rf = RandomForestClassifier(20, random_state=0).fit(x, y)
    plan = plan_for(rf, 6)
    assert plan.split_large
    split = RowSplitter(plan.large.fn, threads=2)
    expected = plan.large.fn(x)
    np.testing.assert_array_equal(split(x), expected)  # alone: split in two
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: split(x), range(16)))
    for got in results:
        np.testing.assert_array_equal(got, expected)
    assert split._active == 0
