"""Small pieces: no Airflow import, the prediction log's bounded queue and its MongoDB sink,
the compiled fast path's refusal of what it cannot reproduce."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time

import numpy as np
from serving_helpers import REPO

from serving.predlog import LogEntry, MongoSink, PredictionLog

FEATURES = ("a", "b")


def _entry(n: int = 3) -> LogEntry:
    return LogEntry(time=dt.datetime.now(dt.timezone.utc), model_name="m", model_version="7",
                    features=FEATURES, inputs=np.arange(2 * n, dtype=float).reshape(n, 2),
                    is_threat=np.array([1, 0, 1][:n] * (n // 3 + 1))[:n].astype(np.int8),
                    probability=np.linspace(0, 1, n), labels=[-1] * n, route="/predict")


def test_serving_never_imports_airflow():
    code = ("import sys, serving.app, serving.cli; "
            "bad = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


class BlockingSink:
    def __init__(self):
        self.release = threading.Event()
        self.rows = 0

    def convert(self, entry):
        return entry.jsonl_lines()

    def write(self, items):
        self.release.wait(30)
        self.rows += len(items)

    def describe(self):
        return "blocking"

    def close(self):
        pass


def test_full_queue_drops_and_counts_instead_of_blocking():
    sink = BlockingSink()
    dropped = []
    plog = PredictionLog(sink, batch_rows=1, flush_seconds=0.05, max_queued=2,
                         on_drop=dropped.append).start()
    start = time.perf_counter()
    accepted = sum(plog.submit(_entry()) for _ in range(50))
    assert time.perf_counter() - start < 5  # generous: submit never waits for the sink
    assert accepted < 50 and plog.dropped_rows == 3 * (50 - accepted) == sum(dropped)
    sink.release.set()
    plog.close()
    assert sink.rows == 3 * accepted


def test_mongo_sink_writes_documents(mongo_server, mongo_db):
    client, name = mongo_db
    plog = PredictionLog(MongoSink(mongo_server.uri, name, "predictions"), batch_rows=100,
                         flush_seconds=0.1, max_queued=100).start()
    plog.submit(_entry(3))
    plog.close()
    docs = list(client[name]["predictions"].find({}, {"_id": 0}))
    assert len(docs) == 3
    assert docs[1]["features"] == {"a": 2.0, "b": 3.0}
    assert docs[0]["model_version"] == "7" and docs[0]["label"] == -1
    assert [d["is_threat"] for d in docs] == [1, 0, 1]


def test_jsonl_lines_are_the_documents():
    import json

    e = _entry(3)
    lines = [json.loads(line) for line in e.jsonl_lines()]
    docs = e.documents()
    for line, doc in zip(lines, docs):
        assert line == {**doc, "time": doc["time"].isoformat()}


def test_fast_path_refuses_unknown_steps_and_disagreement():
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import PolynomialFeatures

    from serving.fastpath import compile_pipeline

    rng = np.random.default_rng(0)
    x = rng.integers(-1, 2, size=(300, 4)).astype(float)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    feats = ["a", "b", "c", "d"]
    frame = pd.DataFrame(x, columns=feats)
    pipe = Pipeline([("poly", PolynomialFeatures()), ("model", RandomForestClassifier(5, random_state=0))])
    pipe.fit(frame, y)
    fast, why = compile_pipeline(pipe, feats, x, lambda a: pipe.predict_proba(pd.DataFrame(a, columns=feats)))
    assert fast is None and "PolynomialFeatures" in why

    plain = Pipeline([("model", RandomForestClassifier(5, random_state=0))]).fit(frame, y)
    fast, why = compile_pipeline(plain, feats, x, lambda a: plain.predict_proba(a) * 0.5)
    assert fast is None and "disagreed" in why
    fast, why = compile_pipeline(plain, feats, x, lambda a: plain.predict_proba(pd.DataFrame(a, columns=feats)))
    assert why == "compiled"
