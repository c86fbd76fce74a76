"""Fixtures for the serving tests: a small pipeline registered in a temp MLflow store, the app
in-process (TestClient) and as a real uvicorn subprocess on a loopback port."""

from __future__ import annotations

import pytest
from serving_helpers import Registered, UvicornServer, fit, register, serving_settings, wait_ready

from netsec_testing import environ_restored


@pytest.fixture(scope="session")
def registered(tmp_path_factory) -> Registered:
    """A random-forest pipeline registered and promoted once per session (read-only users)."""
    root = tmp_path_factory.mktemp("mlflow-ro")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    pipe, frame = fit("random_forest")
    with environ_restored():  # register() points MLflow's globals (and env) at this store
        version = register(uri, pipe, frame, artifact_root=root / "artifacts")
    return Registered(uri, pipe, frame, version, root)


@pytest.fixture()
def make_client(tmp_path):
    """An in-process app (TestClient) on a registry; waits until the model is loaded."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    opened = []

    def _make(tracking_uri: str, *, ready: bool = True, **kw) -> TestClient:
        client = TestClient(create_app(serving_settings(tracking_uri, tmp_path, **kw)))
        client.__enter__()
        opened.append(client)
        if ready:
            wait_ready(client)
        return client

    yield _make
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture()
def uvicorn_server(tmp_path):
    started = []

    def _start(tracking_uri: str, **env) -> UvicornServer:
        full = {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "NETSEC_SERVING_LOG_DIR": str(tmp_path / "predictions"),
            "NETSEC_SERVING_INFERENCE_THREADS": "1",
        }
        full.update({f"NETSEC_SERVING_{k.upper()}": str(v) for k, v in env.items()})
        srv = UvicornServer(full, tmp_path / f"uvicorn-{len(started)}.log").start()
        started.append(srv)
        return srv

    yield _start
    for s in started:
        s.stop()
