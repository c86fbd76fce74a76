"""Test support shared by every test directory: paths, ports, and real servers on loopback.

Imported as ``netsec_testing`` (a unique module name: ``conftest`` is ambiguous once several
test directories have one).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UCI_CSV = REPO.parent / "shared" / "data" / "phishing_websites.csv"

# Never let a developer's environment leak into tests.
_LEAKY = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
for _k in [k for k in os.environ if k.startswith(("NETSEC_", "AIRFLOW")) or k in _LEAKY]:
    os.environ.pop(_k)

# Airflow reads its configuration once, at first import, and several test modules import it
# in process (DAG structure, plugin, compose connection checks): give the whole session one
# consistent, throw-away Airflow home that sees this repo's dags/ and plugins/.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="netsec-test-airflow-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
})
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def stop_process(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """Terminate a server process started by a fixture; kill it if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


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
        stop_process(self.proc, 10)


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
