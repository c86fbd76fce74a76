"""Shared fixtures: real servers on loopback, and configs rooted in temp dirs.

- ``mongo_server``: the ``nx-27017`` MongoDB-wire server (SQLite underneath) as a subprocess.
- ``s3_server``: moto's standalone S3 server (ThreadedMotoServer); boto3 talks HTTP to it.
- ``mlflow_uri``: an MLflow SQLite tracking store in a temp dir.
- ``mlflow_server``: a real ``mlflow server`` (SQLite backend, served artifacts) shared by the
  session; tests keep apart by registered-model name.
- ``make_cfg``: a PipelineConfig with its work dir in a temp dir and a small training budget.
The helpers behind them live in ``netsec_testing.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netsec_testing import (  # noqa: F401
    REPO,
    SMALL_TRAINING,
    UCI_CSV,
    MongoServer,
    S3Server,
    free_port,
    pipeline_config,
    wait_for_port,
)


@pytest.fixture(autouse=True, scope="module")
def _restore_environment_per_module():
    """The same for module-scoped fixtures (set up before any test's own restore point): an
    MLflow store a module's fixture points the process at must not outlive the module."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _restore_environment():
    """Undo what a test leaves in os.environ. MLflow's set_tracking_uri/set_registry_uri write
    MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI there, and later tests' subprocesses (netsec run,
    airflow dags test) would otherwise inherit another test's registry."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    server = MongoServer(tmp_path_factory.mktemp("mongo")).start()
    yield server
    server.stop()


@pytest.fixture()
def mongo_db(mongo_server, request):
    """A fresh database name per test on the shared server; dropped afterwards."""
    import pymongo

    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:50]
    client = pymongo.MongoClient(mongo_server.uri, serverSelectionTimeoutMS=5000)
    client.drop_database(name)
    yield client, name
    client.drop_database(name)
    client.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    from netsec_testing import MlflowServerProcess

    server = MlflowServerProcess(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server():
    # Credentials moto accepts; set before any boto3 client is created.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    srv = S3Server()
    srv.server.start()
    wait_for_port(srv.port)
    yield srv
    srv.server.stop()


@pytest.fixture()
def s3_bucket(s3_server, request):
    name = ("t-" + "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower()))[:55].strip("-")
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    yield name


@pytest.fixture()
def mlflow_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture()
def make_cfg(tmp_path):
    """Build a PipelineConfig rooted in tmp_path, with dotted-key overrides."""

    def _make(**overrides):
        base = {
            "workdir": str(tmp_path / "work"),
            "training.candidates": ["random_forest", "logistic_regression"],
            **SMALL_TRAINING,
        }
        base.update({k.replace("__", "."): v for k, v in overrides.items()})
        return pipeline_config(base)

    return _make


@pytest.fixture()
def mongo_cfg(make_cfg, mongo_server, mongo_db):
    """Like make_cfg, with the MongoDB source on the test server's fresh database."""
    _, db = mongo_db

    def _make(**overrides):
        return make_cfg(
            **{
                "source.kind": "mongo",
                "source.mongo.uri": mongo_server.uri,
                "source.mongo.database": db,
                **overrides,
            }
        )

    return _make


@pytest.fixture(scope="session")
def uci_csv() -> Path:
    if not UCI_CSV.is_file():
        pytest.fail(f"the UCI data set is expected at {UCI_CSV} (shared/ beside the repo)")
    return UCI_CSV


@pytest.fixture()
def sample_csv(tmp_path) -> Path:
    from netsec_tasks.sample import make_sample

    path = tmp_path / "sample.csv"
    make_sample(1500, seed=7).to_csv(path, index=False)
    return path
