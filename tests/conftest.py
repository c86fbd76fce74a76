"""Shared fixtures: real servers on loopback, and configs rooted in temp dirs.

- ``mongo_server``: the ``nx-27017`` MongoDB-wire server (SQLite underneath) as a subprocess.
- ``s3_server``: moto's standalone S3 server (ThreadedMotoServer); boto3 talks HTTP to it.
- ``mlflow_uri``: an MLflow SQLite tracking store in a temp dir.
- ``make_cfg``: a PipelineConfig with its work dir in a temp dir and a small training budget.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UCI_CSV = REPO.parent / "shared" / "data" / "phishing_websites.csv"

# Never let a developer's environment leak into tests.
for _k in [k for k in os.environ if k.startswith("NETSEC_") or k == "MLFLOW_TRACKING_URI"]:
    os.environ.pop(_k)
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class MongoServer:
    """A running nx-27017 process; ``uri`` is what pymongo and Airflow's MongoHook get."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/netsec"

    def start(self) -> "MongoServer":
        exe = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or shutil.which("nx-27017")
        if exe is None:
            pytest.fail("nx-27017 is not installed: run the README's test command (it installs .[test])")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--db", str(self.workdir / "mongo.db"), "--host", "127.0.0.1", "-p", str(self.port),
             "--log-file", str(self.workdir / "nx.log"), "--pid-file", str(self.workdir / "nx.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


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


class S3Server:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


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
    from netsec_tasks.config import load_config

    def _make(**overrides):
        base = {
            "workdir": str(tmp_path / "work"),
            "training.candidates": ["random_forest", "logistic_regression"],
            "training.n_iter": 2,
            "training.cv_folds": 3,
            "training.n_jobs": 1,
            "training.progress": False,
        }
        base.update({k.replace("__", "."): v for k, v in overrides.items()})
        return load_config(REPO / "config" / "pipeline.yaml", environ={}, overrides=base)

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
