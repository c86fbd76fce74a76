"""Test support shared by every test directory: paths, ports, and real servers on loopback.

Imported as ``netsec_testing`` (a unique module name: ``conftest`` is ambiguous once several
test directories have one).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UCI_CSV = REPO.parent / "shared" / "data" / "phishing_websites.csv"
# The repo's scripts import their sibling modules as `python scripts/x.py` finds them (scripts/
# on sys.path): tests load them the same way (load_script), and share chromium_flags with them.
SCRIPTS = REPO / "scripts"
sys.path.append(str(SCRIPTS))

from chromium_flags import HEADLESS_CHROMIUM  # noqa: E402

# Never let a developer's environment leak into tests.
_LEAKY = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
for _k in [k for k in os.environ if k.startswith(("NETSEC_", "AIRFLOW")) or k in _LEAKY]:
    os.environ.pop(_k)

# Airflow reads its configuration once, at first import, and several test modules import it
# in process (DAG structure, plugin, compose connection checks): give the whole session one
# consistent, throw-away Airflow home that sees this repo's dags/ and plugins/.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="netsec-test-airflow-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
    }
)
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def load_script(name: str) -> types.ModuleType:
    """``scripts/<name>.py`` as the module ``name``, imported once a session."""
    return importlib.import_module(name)


@contextlib.contextmanager
def environ_restored():
    """Undo what the enclosed code writes to os.environ. For session-scoped fixtures: pytest
    sets them up before the per-module and per-test restore points are taken, so anything they
    leave there (MLflow's set_tracking_uri writes MLFLOW_TRACKING_URI) would outlive them."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


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


def stop_session(proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """Stop a process started with ``start_new_session=True`` and every process in its session
    (``airflow standalone`` and the components it started): SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


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


class ServerProcess:
    """A server run as a local process on a loopback ``port`` (a free one unless given), its
    files in ``workdir``; subclasses say how to start it (:meth:`_spawn`) and stop it."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def _spawn(self, cmd: list[str], *, log: str | None = None, timeout: float = 30.0, **popen) -> None:
        """Run ``cmd`` with stdout and stderr appended to ``workdir/log`` (discarded without
        one) and wait up to ``timeout`` seconds for the port to accept connections (fails the
        test if the process exits first). ``popen``: more ``subprocess.Popen`` arguments."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = open(self.workdir / log, "ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **popen)
        wait_for_port(self.port, timeout=timeout, proc=self.proc)


class MongoServer(ServerProcess):
    """A running nx-27017 process; ``uri`` is what pymongo and Airflow's MongoHook get."""

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/netsec"

    def start(self) -> MongoServer:
        exe = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or shutil.which("nx-27017")
        if exe is None:
            pytest.fail("nx-27017 is not installed: run the README's test command (it installs .[test])")
        self._spawn(
            [
                exe,
                "--db",
                str(self.workdir / "mongo.db"),
                "--host",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--log-file",
                str(self.workdir / "nx.log"),
                "--pid-file",
                str(self.workdir / "nx.pid"),
            ]
        )
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

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


class TcpGate:
    """A TCP forwarder in front of a real server that can be cut and restored: a network outage
    (connection refused, open connections reset) that keeps the server's state, which killing an
    in-memory server like moto's would lose.
    """

    def __init__(self, target_port: int, port: int | None = None):
        import threading

        self.target_port = target_port
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self.open()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        import threading

        with self._lock:
            if self._listener is not None:
                return
            srv = socket.socket()
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", self.port))
            srv.listen(64)
            self._listener = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def close(self) -> None:
        """Refuse new connections and reset the open ones."""
        import struct

        with self._lock:
            srv, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if srv is not None:
            srv.close()
        for c in conns:
            try:  # SO_LINGER 0: close sends RST, as a vanished peer would
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()
            except OSError:
                pass

    def _accept(self, srv: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not srv:
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def bin_path(name: str) -> str:
    """An executable of this virtualenv (mlflow, moto_server, netsec)."""
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed: run `make setup-test`")
    return exe


class MlflowServerProcess(ServerProcess):
    """A real ``mlflow server`` (SQLite backend, artifacts served by the server) in its own
    process group, so a test can kill it (and its uvicorn workers) or freeze it with SIGSTOP."""

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> MlflowServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self._spawn(
            [
                bin_path("mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.workdir / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.workdir / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            log="server.log",
            timeout=timeout,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        return self

    def signal(self, sig: int) -> None:
        import signal as _signal

        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        if sig == _signal.SIGKILL and self.proc is not None:
            self.proc.wait(30)

    def stop(self) -> None:
        import signal as _signal

        if self.proc is not None and self.proc.poll() is None:
            self.signal(_signal.SIGCONT)
            self.signal(_signal.SIGKILL)


class MotoServerProcess(ServerProcess):
    """moto's standalone S3 server as a process (state in memory: see :class:`TcpGate`)."""

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServerProcess:
        self._spawn(
            [bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            log="moto.log",
            timeout=60,
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        stop_process(self.proc, 10)


def netsec_launch(
    home: Path,
    sets: typing.Iterable[str] = (),
    *,
    code: Path = REPO,
    env: dict | None = None,
    dropped: tuple[str, ...] = ("NETSEC_", "MLFLOW_"),
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run the netsec CLI of the source tree ``code``
    (``PYTHONPATH``, its ``config/pipeline.yaml``) with work directory ``home``
    (``NETSEC_HOME``), each of ``sets`` (``key=value``) as a ``--set``; the sub-command and its
    arguments go after. The environment is this process's without the variables starting with
    one of ``dropped``, plus ``env``; MLflow's progress bars are off."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    full_env.update(
        {
            "NETSEC_HOME": str(home),
            "PYTHONPATH": str(code),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            **(env or {}),
        }
    )
    cmd = [sys.executable, "-m", "netsec_tasks.cli", "--config", str(code / "config" / "pipeline.yaml")]
    for s in sets:
        cmd += ["--set", s]
    return cmd, full_env


class NetsecProcess:
    """``netsec <args>`` as a subprocess whose stderr lines are kept with their arrival time.

    ``code`` is the source tree to run (PYTHONPATH; default this checkout) and ``home`` its work
    directory (NETSEC_HOME). The environment is cleaned of the settings starting with one of
    ``dropped`` (NETSEC_*/MLFLOW_*), plus ``env``.
    """

    def __init__(
        self,
        home: Path,
        *args: str,
        sets: tuple[str, ...] = (),
        code: Path = REPO,
        env: dict | None = None,
        dropped: tuple[str, ...] = ("NETSEC_", "MLFLOW_"),
    ):
        import threading

        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        cmd, full_env = netsec_launch(home, sets, code=code, env=env, dropped=dropped)
        self.proc = subprocess.Popen(
            [*cmd, *args],
            cwd=Path(home).parent,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout = ""
        threading.Thread(target=self._read_err, daemon=True).start()
        self._out_reader = threading.Thread(target=self._read_out, daemon=True)
        self._out_reader.start()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()

    def _read_out(self) -> None:
        self.stdout = self.proc.stdout.read()

    def wait_for(self, pattern: str, timeout: float = 600) -> str:
        """The first stderr line matching ``pattern``; fails if the process exits first."""
        import re

        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, line in self.lines:
                    if rx.search(line):
                        return line
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"netsec exited ({self.proc.returncode}) before a line "
                        f"matching {pattern!r}:\n{self.stderr[-3000:]}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no line matching {pattern!r} within {timeout} s")
                self._cond.wait(min(left, 1.0))

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None when it was still running after ``timeout`` (then killed)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        self._out_reader.join(10)
        time.sleep(0.2)  # the stderr reader takes the last lines
        return self.proc.returncode

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def lines_since(self, t: float) -> list[str]:
        return [line for at, line in self.lines if at >= t]

    def worker_pids(self) -> list[int]:
        """pids of this process's joblib/loky children (and their children), from /proc."""
        return [pid for pid in _descendants(self.proc.pid) if "loky" in _cmdline(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[-1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pid_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# --------------------------------------------------------------------------- services run by tests


def serving_command(port: int, *options: str) -> list[str]:
    """The command that serves ``serving.app:app`` under uvicorn on 127.0.0.1:``port`` (run it
    with the repo as its working folder); ``options``: more uvicorn options."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "serving.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *options,
    ]


def airflow_db_migrate(env: dict[str, str]) -> None:
    """``airflow db migrate`` (the venv's Airflow) under ``env``, whose ``AIRFLOW_HOME`` and
    ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` say where; fails the test with the tail of its output
    when it exits non-zero (10 minutes at most)."""
    migrate = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]


# --------------------------------------------------------------------------- models in MLflow


def log_skops_model(model, x, signature_rows: int):
    """Log the fitted sklearn ``model`` into the active MLflow run as ``model``, in skops format
    trusting exactly the types it needs, as training logs a pipeline: the signature from the
    first ``signature_rows`` rows of the feature frame ``x`` (and ``model.predict`` on them), the
    first 5 rows as input example. MLflow's ``ModelInfo``."""
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    head = x.head(signature_rows)
    return mlflow.sklearn.log_model(
        model,
        name="model",
        serialization_format="skops",
        skops_trusted_types=trusted,
        signature=infer_signature(head, model.predict(head)),
        input_example=x.head(5),
    )


# --------------------------------------------------------------------------- step inputs


def validated_splits(folder: Path, train, test):
    """What validation hands the later steps (a ``ValidationRecord``): the ``train`` and ``test``
    frames written as ``train.parquet`` and ``test.parquet`` in ``folder`` (made if missing), every
    row valid, the data set's digest that of ``train``. For tests and benchmarks of transform and
    train that start after validation."""
    from netsec_tasks.table_io import frame_digest, write_parquet

    tr, te = folder / "train.parquet", folder / "test.parquet"
    write_parquet(train, tr)
    write_parquet(test, te)
    return validation_record(
        report_uri=str(folder / "report.yaml"),
        train_uri=str(tr),
        test_uri=str(te),
        new_batch_uri=str(tr),
        rows_checked=len(train) + len(test),
        train_rows=len(train),
        test_rows=len(test),
        dataset_digest=frame_digest(train),
        train_row_hashes_uri=str(folder / "train_row_hashes.parquet"),
    )


# A placeholder for each field of the step records that tests of later steps leave alone: a
# plain split (seed 42, test share 0.2, the v1 row hash, no duplicate rows) of a file source,
# validated with no invalid row, trained as a decision tree scored by f1 0.9; URIs and digests
# are placeholders.
PLACEHOLDERS: dict[str, object] = {
    "run_id": "test",
    "source": "file:test",
    "snapshot_uri": "s",
    "snapshot_sha256": "0" * 64,
    "new_batch_uri": "n",
    "train_uri": "t",
    "test_uri": "u",
    "row_hash": "netsec-row-v1",
    "split_seed": 42,
    "test_size": 0.2,
    "duplicate_rows": 0,
    "duplicate_leak_rows": 0,
    "duplicate_aware": True,
    "passed": True,
    "report_uri": "r",
    "train_row_hashes_uri": "h",
    "rows_invalid": 0,
    "invalid_share": 0.0,
    "dataset_digest": "d" * 64,
    "model_uri": "models:/m-1",
    "mlflow_run_id": "run123",
    "experiment_id": "7",
    "winner": "decision_tree",
    "metric": "f1",
    "cv_score": 0.9,
    "test_metrics": {"f1": 0.9},
    "confusion_matrix": [[0, 0], [0, 0]],
    "candidates": [],
    "train_rows": 1,
    "test_rows": 1,
    "training_seconds": 0.0,
}


def step_record(cls, **fields):
    """A ``cls`` step record (``IngestRecord``, ``ValidationRecord``, ``TrainRecord``): ``fields``
    as given, every other field of ``cls`` that :data:`PLACEHOLDERS` names from there (a copy)."""
    import copy

    base = {k: copy.deepcopy(PLACEHOLDERS[k]) for k in cls.model_fields if k in PLACEHOLDERS}
    return cls(**(base | fields))


def ingest_record(**fields):
    from netsec_tasks.records import IngestRecord

    return step_record(IngestRecord, **fields)


def validation_record(**fields):
    from netsec_tasks.records import ValidationRecord

    return step_record(ValidationRecord, **fields)


def train_record(**fields):
    from netsec_tasks.records import TrainRecord

    return step_record(TrainRecord, **fields)


# --------------------------------------------------------------------------- pipeline configs

# A small training budget (dotted config keys): few search iterations and folds, one process,
# no progress bars.
SMALL_TRAINING = {
    "training.n_iter": 2,
    "training.cv_folds": 3,
    "training.n_jobs": 1,
    "training.progress": False,
}


def pipeline_config(overrides: dict[str, typing.Any]):
    """``config/pipeline.yaml`` as a test runs it: no environment variables, ``overrides``
    (dotted keys -> values) over it. The ``PipelineConfig``."""
    from netsec_tasks.config import load_config

    return load_config(REPO / "config" / "pipeline.yaml", environ={}, overrides=overrides)


# --------------------------------------------------------------------------- the netsec CLI

NETSEC = [sys.executable, "-m", "netsec_tasks.cli"]
# A small training budget for CLI runs (after the sub-command or before it: both are accepted).
SMALL_BUDGET = [
    "--set",
    "training.candidates=[random_forest, logistic_regression]",
    "--set",
    "training.n_iter=2",
    "--set",
    "training.cv_folds=3",
    "--set",
    "training.n_jobs=1",
]


def netsec(*args: str, home: Path, env: dict | None = None, timeout: int = 600):
    """``netsec *args`` as a user runs it, in a subprocess with ``NETSEC_HOME=home`` (the
    CompletedProcess, text). No NETSEC_* and no MLflow URIs from the test process (another
    test's registry)."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NETSEC_") and k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    }
    full_env.update({"NETSEC_HOME": str(home), **(env or {})})
    return subprocess.run(
        [*NETSEC, *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------- headless Chromium


CHROMIUM_FLAGS = [*HEADLESS_CHROMIUM, "--disable-dev-shm-usage", "--window-size=1366,860"]


def chromium() -> str:
    """The Debian `chromium` binary; skips the test when it is not installed."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the UI test needs it")
    return exe


class Cdp:
    """Minimal Chrome DevTools Protocol client: numbered commands, events ignored."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        res = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise TimeoutError(f"never true: {expression}")


def devtools_url(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """The browser's DevTools websocket URL, read from its stderr (--remote-debugging-port=0)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        seen.append(line)
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            return m.group(1)
        if not line and proc.poll() is not None:
            break
    raise RuntimeError("chromium did not start: " + "".join(seen)[-2000:])
