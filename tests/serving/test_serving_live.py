"""The service as a real uvicorn process: hot swap under load, registry outage at start-up,
and schemathesis against its OpenAPI document."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_helpers import (
    DETAILS,
    TARGET,
    fit,
    free_port,
    promote_version,
    records_of,
    register,
    training_frame,
    wait_for_port,
    wait_ready_http,
)

from serving.fastpath import ATOL

pytestmark = pytest.mark.slow  # real servers and processes, ~15-30 s each


def test_hot_swap_under_load_loses_no_request(tmp_path, uvicorn_server):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pipe1, frame = fit("random_forest", seed=0)
    register(uri, pipe1, frame, artifact_root=tmp_path / "artifacts")
    server = uvicorn_server(uri, poll_interval_seconds=0.5)
    wait_ready_http(server.url)

    rows = training_frame(50, seed=77)
    records = records_of(rows)
    answers: list[tuple[int, str, list[float], set[str]]] = []
    errors: list[str] = []
    stop = threading.Event()

    def load_loop(batch: list[dict]):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/predict", json={"records": batch})
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                body = r.json()
                answers.append(
                    (
                        len(batch),
                        body["model_version"],
                        [p["threat_probability"] for p in body["predictions"]],
                        {p["model_version"] for p in body["predictions"]},
                    )
                )

    threads = [threading.Thread(target=load_loop, args=(b,)) for b in (records[:1], records)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        # A different model (other seed and data): its probabilities differ from v1's.
        pipe2, frame2 = fit("random_forest", seed=1, n_rows=700)
        v2 = register(uri, pipe2, frame2, promote=False)
        promote_version(uri, v2)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(a[1] == v2 for a in answers[-5:]):
            time.sleep(0.2)
        time.sleep(1.0)  # keep the load going a little after the swap
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    assert not errors, errors[:5]
    versions = [a[1] for a in answers]
    assert "1" in versions and v2 in versions, set(versions)
    x = rows.drop(columns=[TARGET])
    expected = {"1": pipe1.predict_proba(x)[:, 1].tolist(), v2: pipe2.predict_proba(x)[:, 1].tolist()}
    assert expected["1"] != expected[v2]  # otherwise mixing would go unnoticed
    for n, version, probas, row_versions in answers:
        assert row_versions == {version}  # one version per response
        # and every row scored by that version (served through onnxruntime: within ATOL)
        np.testing.assert_allclose(probas, expected[version][:n], rtol=0, atol=ATOL)
    # Per client, versions only move forward (no flapping back to the old model).
    for n in (1, 50):
        seq = [a[1] for a in answers if a[0] == n]
        assert seq == sorted(seq, key=int)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'netsec_model_version{{name="netsec-phishing"}} {float(v2)}' in metrics


def _mlflow_server(store_uri: str, port: int, log: Path) -> subprocess.Popen:
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    return subprocess.Popen(
        [
            exe,
            "server",
            "--backend-store-uri",
            store_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )


def test_registry_down_at_start_then_ready(registered, uvicorn_server, tmp_path):
    port = free_port()  # nothing listens here yet
    # With a key, /ready names the load error (issue 21: details for key holders only).
    server = uvicorn_server(
        f"http://127.0.0.1:{port}", retry_interval_seconds=0.5, control_key=DETAILS["X-API-Key"]
    )
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/health").status_code == 200
        deadline = time.monotonic() + 60
        ready = c.get("/ready", headers=DETAILS)
        while ready.json()["detail"] in (None, "loading") and time.monotonic() < deadline:
            time.sleep(0.2)
            ready = c.get("/ready", headers=DETAILS)
        assert ready.status_code == 503
        assert "unreachable" in ready.json()["detail"], ready.json()
        assert "unreachable" not in c.get("/ready").json()["detail"]  # not without a key
        assert c.post("/predict", json={"records": [{}]}).status_code == 503

        mlflow_proc = _mlflow_server(registered.tracking_uri, port, tmp_path / "mlflow-server.log")
        try:
            wait_for_port(port, timeout=120, proc=mlflow_proc)
            wait_ready_http(server.url, timeout=120)
            info = c.get("/model").json()
            assert info["version"] == registered.version
            rows = training_frame(5, seed=3)
            got = c.post("/predict", json={"records": records_of(rows)}).json()["predictions"]
            expected = registered.pipeline.predict(rows.drop(columns=[TARGET])).tolist()
            assert [p["is_threat"] for p in got] == expected

            # A later outage keeps the last good model serving.
            mlflow_proc.terminate()
            mlflow_proc.wait(30)
            time.sleep(1.5)
            assert c.get("/ready").status_code == 200
            assert c.post("/predict", json={"records": records_of(rows)}).status_code == 200
        finally:
            if mlflow_proc.poll() is None:
                mlflow_proc.terminate()
                mlflow_proc.wait(30)


def test_schemathesis_finds_no_server_error(registered, uvicorn_server, tmp_path):
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.fail("schemathesis CLI (st) is not installed: pip install -e .[test]")
    server = uvicorn_server(registered.tracking_uri, max_rows=50, max_body_bytes=1_000_000)
    wait_ready_http(server.url)
    proc = subprocess.run(
        [
            st,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--no-color",
            "--request-timeout",
            "30",
            "--exclude-path",
            "/train",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "/predict" in out
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
