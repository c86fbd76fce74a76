"""Serving with a challenger in shadow (issue 25), against a real ``mlflow server``: both models
loaded and hot-swapped each, every logged row scored by the challenger beside Production, the
response carrying Production's decision only, and never waiting for the challenger."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from serving_helpers import DETAILS, TARGET, fit, records_of, register, training_frame

from netsec_tasks.operating_point import decide

MODEL = "netsec-phishing"  # the schema the service checks inputs with: the phishing sample's


class Blocking:
    """A fast path that waits for ``release`` before it scores (a challenger that is slow)."""

    def __init__(self, inner):
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.supports_nan = True

    def predict_proba(self, x):
        self.entered.set()
        assert self.release.wait(120), "the test never released the challenger"
        return self.inner.predict_proba(x)


class Broken:
    supports_nan = True

    def predict_proba(self, x):
        raise RuntimeError("challenger broke")


def _log_documents(root) -> list[dict]:
    return [json.loads(line) for f in sorted(root.rglob("*.jsonl")) for line in f.read_text().splitlines()]


def _metrics_with(app, needle: str) -> str | None:
    text = app.get("/metrics").text
    return text if needle in text else None


def _wait(cond, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def store(mlflow_server, tmp_path):
    """Production v_p (a forest at threshold 0.5) and challenger v_c (XGBoost at 0.35), in a
    registered model of its own on the shared server."""
    from mlflow import MlflowClient

    name = f"{MODEL}-shadow-{tmp_path.name[-12:]}"
    uri = mlflow_server.uri
    prod_pipe, frame = fit("random_forest", seed=0)
    chal_pipe, _ = fit("xgboost", seed=1)
    prod = register(uri, prod_pipe, frame, name=name, artifact_root=tmp_path / "a", threshold=0.5)
    chal = register(
        uri, chal_pipe, frame, name=name, artifact_root=tmp_path / "a", threshold=0.35, promote=False
    )
    client = MlflowClient(uri)
    client.set_registered_model_alias(name, "challenger", chal)
    client.set_model_version_tag(name, chal, "netsec.challenger_since", "2026-12-01T00:00:00+00:00")
    return uri, name, client, (prod, prod_pipe), (chal, chal_pipe)


def test_production_answers_the_challenger_scores_in_shadow_and_each_swaps(store, make_client, tmp_path):
    uri, name, client, (prod, prod_pipe), (chal, chal_pipe) = store
    app = make_client(uri, model_name=name, log_flush_seconds=0.1)
    state = app.app.state.serving
    info = _wait(
        lambda: (i := app.get("/model", headers=DETAILS).json()).get("challenger") and i, "challenger"
    )
    assert (info["version"], info["role"], info["challenger"]["version"]) == (prod, "production", chal)
    assert info["challenger"]["threshold"] == pytest.approx(0.35)
    assert info["challenger"]["since"] == "2026-12-01T00:00:00+00:00"
    assert info["challenger"]["inference_path"].startswith("compiled: onnxruntime")
    assert app.get("/model").json()["challenger"]["inference_path"] is None  # details need a key

    rows = training_frame(40, seed=21)
    x = rows.drop(columns=[TARGET])
    body = app.post("/predict", json={"records": records_of(rows)}).json()
    # The answer is Production's decision only, at Production's threshold.
    assert body["model_version"] == prod
    assert all(
        set(p) >= {"is_threat", "threat_probability"} and "challenger" not in str(p)
        for p in body["predictions"]
    )
    assert [p["is_threat"] for p in body["predictions"]] == decide(
        prod_pipe.predict_proba(x)[:, 1], 0.5
    ).tolist()
    one = app.post("/predict", json={"records": records_of(rows.head(1))}).json()  # scored inline
    assert one["predictions"][0]["is_threat"] == body["predictions"][0]["is_threat"]

    # The log has both decisions on the same rows: the challenger's at its own threshold.
    docs = _wait(lambda: [d for d in _log_documents(tmp_path / "predictions") if d["n_rows"] == 40], "log")
    doc = docs[0]
    assert (doc["model_version"], doc["challenger_version"]) == (prod, chal)
    p_chal = chal_pipe.predict_proba(x)[:, 1]
    np.testing.assert_allclose(doc["challenger_threat_probability"], p_chal, atol=1e-5)
    assert doc["challenger_is_threat"] == decide(p_chal, 0.35).tolist()
    assert doc["is_threat"] == [p["is_threat"] for p in body["predictions"]]
    # /metrics counts per version and role.
    scored = f'netsec_shadow_rows_total{{model="{name}",outcome="scored",version="{chal}"}} 41.0'
    text = _wait(lambda: _metrics_with(app, scored), "41 rows scored in shadow")
    chal_threats = int(decide(p_chal, 0.35).sum() + decide(p_chal[:1], 0.35).sum())
    prod_threats = (
        int(decide(prod_pipe.predict_proba(x)[:, 1], 0.5).sum()) + one["predictions"][0]["is_threat"]
    )
    for role, version, threats in (("challenger", chal, chal_threats), ("production", prod, prod_threats)):
        line = f'netsec_predictions_total{{class_="threat",model="{name}",role="{role}",version="{version}"}}'
        assert f"{line} {float(threats)}" in text, (line, text)
    assert f'netsec_challenger_version{{name="{name}"}} {float(chal)}' in text

    # A response never waits for the challenger: while the challenger is stuck scoring one
    # batch in the log's thread, requests are answered (the log waits, not they).
    slow = Blocking(state.manager.challenger.fast)
    state.manager.challenger = replace(state.manager.challenger, fast=slow)
    assert app.post("/predict", json={"records": records_of(rows.head(3))}).status_code == 200
    assert slow.entered.wait(60)  # the writer thread is now inside the challenger
    for k in range(5):  # answered while it is stuck, inline (one row) and on the pool (40 rows)
        r = app.post("/predict", json={"records": records_of(rows.head(1 if k % 2 else 40))})
        assert r.status_code == 200 and not slow.release.is_set()
    slow.release.set()
    _wait(lambda: sum(d["n_rows"] for d in _log_documents(tmp_path / "predictions")) >= 40 * 4 + 3 + 3, "log")

    # A challenger that fails loses only its own columns: Production's rows are logged.
    state.manager.challenger = replace(state.manager.challenger, fast=Broken())
    before = len(_log_documents(tmp_path / "predictions"))
    app.post("/predict", json={"records": records_of(rows.head(7))})
    new = _wait(lambda: _log_documents(tmp_path / "predictions")[before:], "log after a failure")
    assert new[0]["n_rows"] == 7 and "challenger_version" not in new[0]
    assert f'outcome="failed",version="{chal}"}} 7.0' in app.get("/metrics").text

    # Hot swap of each model. The challenger alias moves to v3: the challenger is swapped,
    # Production stays the same object.
    third_pipe, frame = fit("hist_gradient_boosting", seed=2)
    third = register(
        uri, third_pipe, frame, name=name, artifact_root=tmp_path / "a", threshold=0.4, promote=False
    )
    client.set_registered_model_alias(name, "challenger", third)
    production = state.manager.current
    app.portal.call(state.manager.refresh)
    assert state.manager.challenger.version == third and state.manager.current is production
    # Promoted: Production becomes the challenger already loaded (no second download), and the
    # challenger slot empties when its alias is gone.
    loaded = state.manager.challenger
    client.set_registered_model_alias(name, "production", third)
    client.delete_registered_model_alias(name, "challenger")
    assert app.portal.call(state.manager.refresh) is True
    current = state.manager.current
    assert current.version == third and current.loaded_at == loaded.loaded_at  # not loaded again
    assert current.fast.plan is loaded.fast.plan and state.manager.challenger is None
    assert app.get("/model").json()["challenger"] is None
    assert f'netsec_challenger_version{{name="{name}"}} NaN' in app.get("/metrics").text
    answer = app.post("/predict", json={"records": records_of(rows)}).json()
    assert answer["model_version"] == third
    assert [p["is_threat"] for p in answer["predictions"]] == decide(
        third_pipe.predict_proba(x)[:, 1], 0.4
    ).tolist()
