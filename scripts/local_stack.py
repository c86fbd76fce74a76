#!/usr/bin/env python
"""The local twin of docker-compose.yaml: the same services as processes on loopback, driven
through the users' paths. For machines without a Docker engine (CI, this one).

    python scripts/local_stack.py                  # start, drive, screenshot, tear down
    python scripts/local_stack.py --data sample    # seed with compose's seed job (synthetic rows)
    python scripts/local_stack.py --keep           # keep the temp dir (logs, DBs) afterwards

The plan is read from docker-compose.yaml (interpolated with .env.example like `docker compose`
does), not copied: the services, their commands, environment, dependencies (depends_on with
their conditions) and health checks. What the twin changes, and only that:

* host names: ``<service>:<port>`` in URLs becomes ``127.0.0.1:<loopback port>``; published
  ports (``*_PORT`` in .env) get free ports, so nothing clashes with what runs on the machine;
* container paths: a named volume is a directory of the temp dir, a path the Dockerfile COPYs
  is the repo's own file, anything else is a per-container directory; ``/tmp`` is private;
* stand-ins for the images: PostgreSQL and Redis from Debian packages (installed when missing),
  the ``nx-27017`` MongoDB-wire server for ``mongo`` (it has no authentication, so Mongo URIs
  lose their credentials), moto's S3 server for MinIO (``mc mb`` buckets are created, the
  ``mc admin`` user is not needed: moto accepts any key), this venv's airflow/mlflow/netsec for
  the images built here, and the official Airflow image's entrypoint (db migrate, admin user)
  in miniature;
* two Celery workers (``--scale airflow-worker=2``) on one machine need distinct names:
  ``--celery-hostname`` and ``[core] hostname_callable`` (:func:`worker_hostname`), which in
  compose the container host names provide;
* a few .env values (TWIN_ENV: poll interval, worker slots, seed rows) and a small training
  budget for the Airflow services (TWIN_PIPELINE_ENV), so everything fits 2 cores.

Then, as a user would: seed MongoDB (the seed job), trigger ``netsec_training`` through the
Airflow 3 REST API (token, unpause, POST dagRuns), wait for it, check that both workers ran
tasks, that the run's objects and manifest are in the bucket, that serving picked up the new
Production version and answers /predict, trigger again through serving's POST /train, and take
screenshots of the Airflow DAG page (after the FAB login form) and serving's page in headless
Chromium. Everything is torn down at the end, also on failure or Ctrl-C. Exit status 0 when all
steps passed; otherwise the failed step, its reason and the relevant log tail are printed.

Nothing above the ``main`` helpers imports anything outside the standard library: the Celery
workers import this module for :func:`worker_hostname`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
BIN = Path(sys.executable).parent
DAG_ID = "netsec_training"
CHROMIUM = "/usr/bin/chromium"
SHARED_CSV = REPO.parent / "shared" / "data" / "phishing_websites.csv"
WORKER_NAME_ENV = "LOCAL_STACK_WORKER_NAME"

# .env values the twin sets on top of .env.example (docker compose reads them from .env too).
# Ports are added at run time: every published port gets a free loopback port.
TWIN_ENV = {
    "NETSEC_BIND": "127.0.0.1",
    # Serving checks the registry often, so the new Production version shows up quickly.
    "NETSEC_SERVING_POLL_INTERVAL_SECONDS": "5",
    # Two slots per worker: two workers share 2 cores here; tasks still spread over both.
    "AIRFLOW_WORKER_CONCURRENCY": "2",
    # Rows of the synthetic sample when the seed job makes one (--data sample).
    "SEED_ROWS": "3000",
}

# The training budget of the twin's DAG runs (DAG params, as a user sets them in the trigger form).
RUN_CONF = {"force_retrain": True, "n_iter": 2, "cv_folds": 3,
            "candidates": ["random_forest", "logistic_regression"]}
# The same budget as pipeline config for the Airflow services (NETSEC_<SECTION>__<KEY>, beside
# compose's own NETSEC_* variables): with catchup off, Airflow 3 runs the DAG's latest past
# schedule slot as soon as the unpaused DAG appears, before any manual run (max_active_runs=1),
# and with the full configured budget that first run alone takes many minutes on 2 cores.
TWIN_PIPELINE_ENV = {"NETSEC_TRAINING__N_ITER": "2", "NETSEC_TRAINING__CV_FOLDS": "3",
                     "NETSEC_TRAINING__CANDIDATES": "[random_forest, logistic_regression]"}

# Official Airflow image's entrypoint, in miniature: optional db migrate and admin user
# (_AIRFLOW_DB_MIGRATE, _AIRFLOW_WWW_USER_*), then `airflow <command>`.
AIRFLOW_ENTRYPOINT = r"""
set -e
if [ "${_AIRFLOW_DB_MIGRATE:-}" = "true" ] || [ "${_AIRFLOW_DB_UPGRADE:-}" = "true" ]; then
  airflow db migrate
fi
if [ "${_AIRFLOW_WWW_USER_CREATE:-}" = "true" ]; then
  airflow users create --username "${_AIRFLOW_WWW_USER_USERNAME:-admin}" \
    --firstname "${_AIRFLOW_WWW_USER_FIRSTNAME:-Airflow}" --lastname "${_AIRFLOW_WWW_USER_LASTNAME:-Admin}" \
    --email "${_AIRFLOW_WWW_USER_EMAIL:-airflowadmin@example.com}" --role "${_AIRFLOW_WWW_USER_ROLE:-Admin}" \
    --password "${_AIRFLOW_WWW_USER_PASSWORD}"
fi
exec airflow "$@"
"""

# Airflow settings that choose where a component listens, by the port it uses in the container.
AIRFLOW_LISTENERS = {
    8080: ("AIRFLOW__API__HOST", "AIRFLOW__API__PORT"),
    8974: ("AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST",
           "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"),
}
# The official image's AIRFLOW_HOME (dags, plugins and logs below it unless configured).
AIRFLOW_IMAGE_HOME = "/opt/airflow"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the twin's Celery workers.

    Airflow records ``ti.hostname`` from this callable (default: the machine's FQDN). In compose
    every worker container has its own host name; two worker processes on one machine would
    both report the machine's, so each twin worker reports its own name instead.
    """
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


# =========================================================================== small helpers


class StepFailed(Exception):
    """A step of the twin failed; ``logs`` names the instances whose log tail explains it."""

    def __init__(self, message: str, logs: tuple[str, ...] = (), detail: str = ""):
        super().__init__(message)
        self.logs = logs
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


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, Any]:
    """(status, JSON or text body). Never raises for HTTP errors; connection errors -> status 0."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0,
               logs: tuple[str, ...] = ()) -> Any:
    """Poll ``check`` until it returns something truthy; StepFailed after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise StepFailed(f"timed out after {timeout:.0f} s waiting for {what}", logs=logs)
        time.sleep(interval)


class Watchdog:
    """A small separate process that cleans up if this script dies without its teardown
    (kill -9, an OOM kill): it waits for EOF on a pipe from us, then kills every process group
    and removes every directory listed in a state file. After a normal teardown the state file
    is emptied first, so it does nothing."""

    CODE = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.stdin.buffer.read()
try:
    lines = [l.split(" ", 1) for l in open(sys.argv[1]).read().splitlines() if " " in l]
except OSError:
    lines = []
groups = [int(v) for k, v in lines if k == "pgid"]
for sig in (signal.SIGTERM, signal.SIGKILL):
    for g in groups:
        try:
            os.killpg(g, sig)
        except OSError:
            pass
    if groups:
        time.sleep(5)
for k, v in lines:
    if k == "dir":
        shutil.rmtree(v, ignore_errors=True)
"""

    def __init__(self, state: Path):
        self.state = state
        state.write_text("")
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, str(state)], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def note(self, kind: str, value: Any) -> None:
        with open(self.state, "a", encoding="utf-8") as fh:
            fh.write(f"{kind} {value}\n")

    def close(self) -> None:
        """After our own teardown: nothing left to do for the watchdog."""
        with contextlib.suppress(OSError):
            self.state.write_text("")
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


# =========================================================================== the plan


@dataclass
class Instance:
    """One process (or in-process job) standing in for one container."""

    name: str
    service: str
    kind: str
    one_shot: bool
    depends_on: dict[str, str]
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None
    probe: Callable[[], bool] | None = None
    run_inline: Callable[[], None] | None = None   # one-shot jobs done in this process
    log: Path | None = None
    proc: subprocess.Popen | None = None
    stop_signal: int = signal.SIGTERM
    started: float | None = None
    ready: float | None = None
    done: bool = False            # one-shot finished successfully / long-lived healthy


class Twin:
    """docker-compose.yaml turned into loopback processes."""

    def __init__(self, root: Path, env_file: Path, data: str, workers: int):
        import check_compose as cc  # scripts/ is on sys.path when run as a script

        self.cc = cc
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.taken: set[int] = set()
        self.data = data
        self.raw = cc.load_raw_compose()
        self.vars = {**cc.parse_env_file(env_file), **TWIN_ENV}
        if data == "sample":
            self.vars["SEED_DATA"] = "sample"
        # Published ports (${X_PORT:-n}:container in `ports:`) get free loopback ports.
        for svc in self.raw["services"].values():
            for spec in svc.get("ports") or []:
                for var in re.findall(r"\$\{(\w+_PORT)\b", str(spec)):
                    self.vars[var] = str(free_port(self.taken))
        self.doc = cc.load_compose(env=self.vars)
        self.services: dict[str, dict] = self.doc["services"]
        self.ports: dict[tuple[str, int], int] = {}
        self._map_ports()
        self.pg_dir: Path | None = None
        self.instances: list[Instance] = []
        for name, svc in self.services.items():
            replicas = workers if self._is_worker(svc) else 1
            for i in range(1, replicas + 1):
                self.instances.append(self._instance(name, svc, i if replicas > 1 else None))

    # ------------------------------------------------------------------ ports and names

    @staticmethod
    def _is_worker(svc: dict) -> bool:
        return "worker" in [str(c) for c in svc.get("command") or []] and "build" in svc

    def _map_ports(self) -> None:
        """container port -> loopback port for every (service, port) anything refers to."""
        for name, svc in self.services.items():
            for spec in svc.get("ports") or []:
                parts = str(spec).split(":")
                if len(parts) == 3:
                    self.ports[(name, int(parts[2]))] = int(parts[1])
        text = json.dumps(self.doc)
        names = "|".join(map(re.escape, sorted(self.services, key=len, reverse=True)))
        for host, port in re.findall(rf"://(?:[^@/\s\"']*@)?({names}):(\d+)", text):
            self.ports.setdefault((host, int(port)), free_port(self.taken))
        # A service's own health endpoint (http://localhost:8974/health) listens inside it.
        for name in self.services:
            for url in self._health_urls(name):
                port = urllib.parse.urlparse(url).port
                if port:
                    self.ports.setdefault((name, port), free_port(self.taken))

    def port(self, service: str, container_port: int) -> int:
        return self.ports[(service, container_port)]

    def rewrite_urls(self, text: str) -> str:
        """``scheme://[user:pw@]service:port`` -> ``scheme://127.0.0.1:<port>`` (no credentials
        for the Mongo stand-in, which has no authentication)."""
        names = "|".join(map(re.escape, sorted(self.services, key=len, reverse=True)))

        def sub(m: re.Match) -> str:
            host, port = m.group("host"), int(m.group("port"))
            if (host, port) not in self.ports:
                return m.group(0)
            user = m.group("user") or ""
            if self.kind_of(host) == "mongo":
                user = ""
            return f"{m.group('scheme')}{user}127.0.0.1:{self.ports[(host, port)]}"

        return re.sub(rf"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^@/\s\"']*@)?(?P<host>{names}):(?P<port>\d+)\b",
                      sub, text)

    def rewrite_own(self, service: str, text: str) -> str:
        """Where a service listens on itself: localhost/0.0.0.0 and its container ports."""
        def local(m: re.Match) -> str:
            port = int(m.group(2))
            return f"{m.group(1)}127.0.0.1:{self.ports.get((service, port), port)}"

        text = re.sub(r"(://)(?:localhost|127\.0\.0\.1|0\.0\.0\.0):(\d+)", local, text)
        text = re.sub(r"(--host[= ])0\.0\.0\.0\b", r"\g<1>127.0.0.1", text)
        return re.sub(r"(--port[= ])(\d+)\b",
                      lambda m: f"{m.group(1)}{self.ports.get((service, int(m.group(2))), m.group(2))}", text)

    # ------------------------------------------------------------------ paths

    def dockerfile(self, service: str) -> Path | None:
        build = self.services[service].get("build")
        if not build:
            return None
        return REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")

    def path_map(self, service: str, instance: str) -> list[tuple[str, Path]]:
        """(container path prefix, twin path), longest first."""
        mapping: list[tuple[str, Path]] = []
        for volume in self.services[service].get("volumes") or []:
            source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/")):
                mapping.append((target, (REPO / source).resolve()))
            else:
                mapping.append((target, self.root / "volumes" / source))
        dockerfile = self.dockerfile(service)
        if dockerfile:
            for instr, args in self.cc.parse_dockerfile(dockerfile)[-1].instructions:
                if instr == "COPY" and "--from=" not in args:
                    words = [w for w in args.split() if not w.startswith("--")]
                    if len(words) == 2:
                        mapping.append((words[1].rstrip("/"), REPO / words[0]))
        mapping.append(("/tmp", self.root / "fs" / instance / "tmp"))
        return sorted(mapping, key=lambda item: len(item[0]), reverse=True)

    def to_twin(self, service: str, instance: str, path: str) -> str:
        for prefix, target in self.path_map(service, instance):
            if path == prefix or path.startswith(prefix + "/"):
                return str(target / path[len(prefix):].lstrip("/"))
        return str(self.root / "fs" / instance / path.lstrip("/"))

    # ------------------------------------------------------------------ kinds

    def kind_of(self, service: str) -> str:
        svc = self.services[service]
        dockerfile = self.dockerfile(service)
        if dockerfile:
            base = self.cc.parse_dockerfile(dockerfile)[-1].base
            return "airflow" if base.startswith("apache/airflow:") else "python-image"
        image = str(svc.get("image", ""))
        for prefix, kind in (("postgres:", "postgres"), ("redis:", "redis"), ("mongo:", "mongo"),
                             ("minio/minio:", "s3"), ("minio/mc:", "buckets"),
                             ("ghcr.io/mlflow/mlflow:", "mlflow")):
            if image.startswith(prefix):
                return kind
        raise StepFailed(f"service {service}: the twin has no stand-in for image {image!r}; "
                         "add one to scripts/local_stack.py")

    def _health_urls(self, service: str) -> list[str]:
        return re.findall(r"https?://[^\s'\"]+", " ".join(map(str, self._healthcheck(service))))

    def _healthcheck(self, service: str) -> list[str]:
        test = (self.services[service].get("healthcheck") or {}).get("test") or []
        if not test and self.dockerfile(service):
            for instr, args in self.cc.parse_dockerfile(self.dockerfile(service))[-1].instructions:
                if instr == "HEALTHCHECK":
                    cmd = args[args.index("CMD") + 3:].strip()
                    test = ["CMD", *(json.loads(cmd) if cmd.startswith("[") else [cmd])]
        return [str(t) for t in test]

    # ------------------------------------------------------------------ instances

    def base_env(self, service: str, instance: str) -> dict[str, str]:
        home = self.root / "fs" / instance / "home"
        tmp = self.root / "fs" / instance / "tmp"
        home.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        env = {"PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        dockerfile = self.dockerfile(service)
        image_env = self.cc.dockerfile_env(dockerfile) if dockerfile else {}
        raw = self.services[service].get("environment") or {}
        if isinstance(raw, list):
            raw = dict(item.split("=", 1) for item in raw)
        for key, value in {**image_env, **{k: "" if v is None else str(v) for k, v in raw.items()}}.items():
            if key == "PATH" or key.startswith("PYTHON"):
                continue
            value = self.rewrite_urls(value)
            if value.startswith("/"):
                value = self.to_twin(service, instance, value)
            env[key] = value
        return env

    def _instance(self, service: str, svc: dict, replica: int | None) -> Instance:
        name = f"{service}-{replica}" if replica else service
        kind = self.kind_of(service)
        deps = {dep: spec.get("condition", "service_started")
                for dep, spec in (svc.get("depends_on") or {}).items()}
        inst = Instance(name=name, service=service, kind=kind, depends_on=deps,
                        one_shot=str(svc.get("restart", "no")) == "no",
                        log=self.logs / f"{name}.log")
        inst.env = self.base_env(service, name)
        inst.cwd = self.root / "fs" / name
        getattr(self, f"_plan_{kind.replace('-', '_')}")(inst, svc, replica)
        return inst

    def _plan_postgres(self, inst: Instance, svc: dict, replica: int | None) -> None:
        bindir = postgres_bindir()
        self.pg_dir = Path(tempfile.mkdtemp(prefix="netsec-twin-pg-"))
        port = self.port(inst.service, 5432)
        inst.user = "postgres" if os.geteuid() == 0 else None
        inst.argv = [str(bindir / "postgres"), "-D", str(self.pg_dir / "data"), "-p", str(port),
                     "-k", str(self.pg_dir), "-c", "listen_addresses=127.0.0.1",
                     # A throw-away database: no need to survive a power cut.
                     "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        inst.stop_signal = signal.SIGINT  # fast shutdown
        initialised = {"done": False}

        def probe() -> bool:
            if not initialised["done"]:
                if not tcp_open(port):
                    return False
                self._postgres_init(inst, bindir, port)
                initialised["done"] = True
            return True

        inst.probe = probe

    def postgres_initdb(self, inst: Instance) -> None:
        """initdb as the image does it: POSTGRES_USER as superuser with POSTGRES_PASSWORD,
        trust on the local socket, scram-sha-256 over TCP."""
        bindir = postgres_bindir()
        assert self.pg_dir is not None
        if inst.user:
            shutil.chown(self.pg_dir, inst.user, inst.user)
        os.chmod(self.pg_dir, 0o700)
        pwfile = self.pg_dir / "pw"
        pwfile.write_text(inst.env["POSTGRES_PASSWORD"] + "\n")
        if inst.user:
            shutil.chown(pwfile, inst.user, inst.user)
        cmd = [str(bindir / "initdb"), "-D", str(self.pg_dir / "data"), "--username",
               inst.env.get("POSTGRES_USER", "postgres"), "--pwfile", str(pwfile), "--encoding=UTF8",
               "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, user=inst.user,
                             group=inst.user, cwd=self.pg_dir, env=inst.env)
        pwfile.unlink()
        if out.returncode != 0:
            raise StepFailed(f"initdb failed: {out.stderr.strip()[-2000:]}")

    def _postgres_init(self, inst: Instance, bindir: Path, port: int) -> None:
        """POSTGRES_DB, then the /docker-entrypoint-initdb.d scripts, as the image does once."""
        env = {**inst.env, "PGHOST": str(self.pg_dir), "PGPORT": str(port)}
        user, db = env.get("POSTGRES_USER", "postgres"), env.get("POSTGRES_DB") or env.get("POSTGRES_USER")
        psql = shutil.which("psql") or str(bindir / "psql")
        env["PATH"] = f"{bindir}:{env['PATH']}"
        if db != "postgres":
            run_checked([psql, "-v", "ON_ERROR_STOP=1", "--username", user, "--dbname", "postgres",
                         "-c", f'CREATE DATABASE "{db}"'], env, inst, "create POSTGRES_DB")
        scripts = []
        for volume in self.services[inst.service].get("volumes") or []:
            source, target = str(volume).split(":")[:2]
            if target.startswith("/docker-entrypoint-initdb.d/"):
                scripts.append((target, (REPO / source).resolve()))
        for target, path in sorted(scripts):
            if path.suffix == ".sh":
                run_checked(["bash", str(path)], env, inst, f"init script {target}")
            elif path.suffix == ".sql":
                run_checked([psql, "-v", "ON_ERROR_STOP=1", "--username", user, "--dbname", db,
                             "-f", str(path)], env, inst, f"init script {target}")
            say(f"   postgres: ran {target}")

    def _plan_redis(self, inst: Instance, svc: dict, replica: int | None) -> None:
        port = self.port(inst.service, 6379)
        data = self.root / "fs" / inst.name / "data"
        data.mkdir(parents=True, exist_ok=True)
        inst.argv = [require_exe("redis-server"), "--bind", "127.0.0.1", "--port", str(port),
                     "--save", "", "--appendonly", "no", "--dir", str(data)]

        def probe() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(64).startswith(b"+PONG")
            except OSError:
                return False

        inst.probe = probe

    def _plan_mongo(self, inst: Instance, svc: dict, replica: int | None) -> None:
        port = self.port(inst.service, 27017)
        data = Path(self.to_twin(inst.service, inst.name, "/data/db"))
        data.mkdir(parents=True, exist_ok=True)
        inst.argv = [require_exe("nx-27017"), "--db", str(data / "nx.db"), "--host", "127.0.0.1",
                     "-p", str(port), "--log-file", str(self.logs / f"{inst.name}.nx.log"),
                     "--pid-file", str(inst.cwd / "nx.pid")]

        def probe() -> bool:
            if not tcp_open(port):
                return False
            import pymongo

            client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=2000)
            try:
                return bool(client.admin.command("ping").get("ok"))
            except Exception:
                return False
            finally:
                client.close()

        inst.probe = probe

    def _plan_s3(self, inst: Instance, svc: dict, replica: int | None) -> None:
        port = self.port(inst.service, 9000)
        inst.argv = [require_exe("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        inst.probe = lambda: http("GET", f"http://127.0.0.1:{port}/", timeout=3)[0] == 200

    def _plan_buckets(self, inst: Instance, svc: dict, replica: int | None) -> None:
        """The `mc` job: its alias endpoint and `mc mb` buckets, created with boto3."""
        script = self.rewrite_urls(" ".join(map(str, svc.get("command") or [])))
        alias = re.search(r"\bmc alias set (\S+) (\S+)", script)
        if not alias:
            raise StepFailed(f"{inst.service}: no `mc alias set` in its command")
        endpoint = alias.group(2)
        buckets: list[str] = []
        for line in script.splitlines():
            if re.search(r"\bmc mb\b", line):
                buckets += re.findall(rf"\b{re.escape(alias.group(1))}/([a-z0-9][a-z0-9.-]+)\b", line)
        if not buckets:
            raise StepFailed(f"{inst.service}: no `mc mb` buckets in its command")
        env = inst.env

        def run() -> None:
            import boto3

            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=env.get("MINIO_ROOT_USER", "x"),
                              aws_secret_access_key=env.get("MINIO_ROOT_PASSWORD", "x"))
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            for bucket in buckets:
                if bucket not in existing:
                    s3.create_bucket(Bucket=bucket)
            say(f"   {inst.service}: buckets {', '.join(buckets)} at {endpoint}"
                " (the `mc admin` user is not needed: moto accepts any key)")

        inst.run_inline = run

    def _plan_mlflow(self, inst: Instance, svc: dict, replica: int | None) -> None:
        argv = [self.rewrite_own(inst.service, self.rewrite_urls(str(a))) for a in svc["command"]]
        if argv[0] == "mlflow":
            argv[0] = require_exe("mlflow")
        inst.argv = argv
        self._http_probe(inst)

    def _plan_python_image(self, inst: Instance, svc: dict, replica: int | None) -> None:
        """An image built from this repo without Airflow: entrypoint + command (or the CMD)."""
        final = self.cc.parse_dockerfile(self.dockerfile(inst.service))[-1]
        entrypoint = svc.get("entrypoint")
        command = svc.get("command")
        if command is None and entrypoint is None:
            cmd = [a for i, a in final.instructions if i == "CMD"][-1]
            command = json.loads(cmd) if cmd.startswith("[") else ["/bin/sh", "-c", cmd]
        argv = [*(entrypoint or []), *(command or [])]
        argv = [self.rewrite_own(inst.service, self.rewrite_urls(str(a))) for a in argv]
        argv = [re.sub(r"(?<![\w/.])/tmp/", str(self.root / "fs" / inst.name / "tmp") + "/", a) for a in argv]
        inst.argv = argv
        if inst.one_shot:
            inst.argv = self._seed_argv(inst, argv)
        else:
            self._http_probe(inst)

    def _seed_argv(self, inst: Instance, argv: list[str]) -> list[str]:
        """The seed job runs as compose has it; with a CSV file (``--data PATH``) it runs the job's
        own last step, ``netsec push-data``, on that file (what SEED_DATA=uci loads when online)."""
        if self.data in ("sample",):
            return argv
        if not re.search(r"\bnetsec push-data\b", " ".join(argv)):
            raise StepFailed(f"{inst.service}: its command no longer runs `netsec push-data`")
        return ["netsec", "push-data", self.data]

    def _plan_airflow(self, inst: Instance, svc: dict, replica: int | None) -> None:
        command = [str(c) for c in svc.get("command") or []]
        env = inst.env
        env.update(TWIN_PIPELINE_ENV)
        env["AIRFLOW_HOME"] = str(self.root / "airflow-home")
        env["AIRFLOW__CORE__DAGS_FOLDER"] = self.to_twin(inst.service, inst.name, f"{AIRFLOW_IMAGE_HOME}/dags")
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = self.to_twin(inst.service, inst.name,
                                                            f"{AIRFLOW_IMAGE_HOME}/plugins")
        env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = self.to_twin(inst.service, inst.name,
                                                                f"{AIRFLOW_IMAGE_HOME}/logs")
        Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]).mkdir(parents=True, exist_ok=True)
        for (service, container_port), port in self.ports.items():
            if service == inst.service and container_port in AIRFLOW_LISTENERS:
                host_var, port_var = AIRFLOW_LISTENERS[container_port]
                env[host_var], env[port_var] = "127.0.0.1", str(port)
        # Log servers of workers and triggerers: one per process on one machine.
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port(self.taken))
        env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port(self.taken))
        if replica is not None or self._is_worker(svc):
            command += ["--celery-hostname", f"{inst.name}@%h"]
            env[WORKER_NAME_ENV] = inst.name
            env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "local_stack.worker_hostname"
            env["PYTHONPATH"] = str(SCRIPTS)
        inst.argv = ["/bin/sh", "-c", AIRFLOW_ENTRYPOINT, "airflow-entrypoint", *command]
        if inst.one_shot:
            return
        health = " ".join(self._healthcheck(inst.service))
        job = re.search(r"--job-type\s+(\w+)", health)
        if job:
            inst.probe = lambda: self._job_alive(env, job.group(1))
        elif "worker" in command:
            inst.probe = lambda: bool(re.search(r"\bready\.", tail(inst.log, 400)))
        else:
            self._http_probe(inst)

    def _http_probe(self, inst: Instance) -> None:
        urls = [self.rewrite_own(inst.service, u) for u in self._health_urls(inst.service)]
        if not urls:
            raise StepFailed(f"{inst.service}: no HTTP health check to wait for")
        inst.probe = lambda: http("GET", urls[0], timeout=4)[0] == 200

    @staticmethod
    def _job_alive(env: dict[str, str], job_type: str) -> bool:
        """What `airflow jobs check --job-type X` checks: a running job with a recent heartbeat."""
        import psycopg2

        dsn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://")
        try:
            with contextlib.closing(psycopg2.connect(dsn, connect_timeout=3)) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM job WHERE job_type = %s AND state = 'running' "
                            "AND latest_heartbeat > now() - interval '60 seconds'", (job_type,))
                return cur.fetchone()[0] > 0
        except psycopg2.Error:
            return False

    # ------------------------------------------------------------------ lookups for the steps

    def instance(self, name: str) -> Instance:
        return next(i for i in self.instances if i.name == name)

    def service_of_kind(self, kind: str) -> str:
        found = sorted({i.service for i in self.instances if i.kind == kind})
        if len(found) != 1:
            raise StepFailed(f"expected one {kind} service in docker-compose.yaml, found {found}")
        return found[0]

    def env_of(self, service: str) -> dict[str, str]:
        return next(i.env for i in self.instances if i.service == service)


def postgres_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise StepFailed("PostgreSQL is not installed (Debian package postgresql)")
    return found[-1].parent


def require_exe(name: str) -> str:
    exe = shutil.which(name, path=f"{BIN}:{os.environ.get('PATH', '')}")
    if not exe:
        raise StepFailed(f"{name} not found (install the test extra / the Debian package)")
    return exe


def run_checked(cmd: list[str], env: dict[str, str], inst: Instance, what: str) -> None:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    with open(inst.log, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(cmd)}\n{out.stdout}{out.stderr}")
    if out.returncode != 0:
        raise StepFailed(f"{inst.name}: {what} failed (exit {out.returncode}): "
                         f"{out.stderr.strip()[-1500:]}", logs=(inst.name,))


# =========================================================================== packages


def ensure_debian_packages(need_chromium: bool) -> None:
    """PostgreSQL, Redis (and Chromium for the screenshots) from Debian, when missing and root."""
    missing = []
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        missing.append("postgresql")
    if not shutil.which("redis-server"):
        missing.append("redis-server")
    if need_chromium and not Path(CHROMIUM).exists():
        missing.append("chromium")
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StepFailed(f"missing Debian packages {' '.join(missing)}: install them "
                         f"(sudo apt-get install -y {' '.join(missing)}) or run as root")
    say(f"   apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # The packages must not start system-wide services (a cluster on 5432, redis on 6379):
    # the standard policy-rc.d "deny", only while we install, only if none is there.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        for cmd, limit in ((["apt-get", "update", "-qq"], 600),
                           (["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], 1200)):
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
            if out.returncode != 0:
                raise StepFailed(f"{' '.join(cmd)} failed: {(out.stderr or out.stdout)[-2000:]}")
    finally:
        if created:
            policy.unlink(missing_ok=True)


# =========================================================================== processes


class Supervisor:
    """Starts instances in compose's dependency order and tears them all down."""

    def __init__(self, twin: Twin, watchdog: Watchdog):
        self.twin = twin
        self.watchdog = watchdog

    def start(self, inst: Instance) -> None:
        inst.started = time.monotonic()
        if inst.run_inline:
            with open(inst.log, "a", encoding="utf-8") as log:
                log.write(f"(in process) {inst.service}\n")
            inst.run_inline()
            inst.done = True
            inst.ready = time.monotonic()
            return
        if inst.kind == "postgres":
            self.twin.postgres_initdb(inst)
        inst.cwd.mkdir(parents=True, exist_ok=True)
        log = open(inst.log, "ab")
        log.write(f"$ {shlex.join(inst.argv)}\n".encode())
        log.flush()
        try:
            inst.proc = subprocess.Popen(inst.argv, env=inst.env, cwd=inst.cwd, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, user=inst.user, group=inst.user)
        finally:
            log.close()
        self.watchdog.note("pgid", inst.proc.pid)

    def satisfied(self, inst: Instance) -> bool:
        for dep, condition in inst.depends_on.items():
            members = [i for i in self.twin.instances if i.service == dep]
            if condition in ("service_healthy", "service_completed_successfully"):
                if not all(m.done for m in members):
                    return False
            elif not all(m.started for m in members):
                return False
        return True

    def up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.twin.instances)
        while True:
            for inst in [i for i in pending if self.satisfied(i)]:
                pending.remove(inst)
                say(f"   start {inst.name:<24} ({inst.kind})")
                self.start(inst)
            waiting = [i for i in self.twin.instances if i.started and not i.done]
            for inst in waiting:
                self.check(inst)
            if not pending and all(i.done for i in self.twin.instances):
                return
            if time.monotonic() > deadline:
                late = [i.name for i in self.twin.instances if not i.done]
                raise StepFailed(f"services not ready after {timeout:.0f} s: {', '.join(late)}",
                                 logs=tuple(late))
            time.sleep(0.5)

    def check(self, inst: Instance) -> None:
        code = inst.proc.poll() if inst.proc else None
        if inst.one_shot:
            if code is None:
                return
            if code != 0:
                raise StepFailed(f"{inst.name} exited with {code}", logs=(inst.name,))
            inst.done, inst.ready = True, time.monotonic()
            say(f"   done  {inst.name:<24} in {inst.ready - inst.started:.0f} s")
            return
        if code is not None:
            raise StepFailed(f"{inst.name} exited with {code} before it was healthy", logs=(inst.name,))
        if inst.probe():
            inst.done, inst.ready = True, time.monotonic()
            say(f"   ready {inst.name:<24} in {inst.ready - inst.started:.0f} s")

    def assert_alive(self) -> None:
        for inst in self.twin.instances:
            if inst.proc and not inst.one_shot and inst.proc.poll() is not None:
                raise StepFailed(f"{inst.name} exited with {inst.proc.returncode}", logs=(inst.name,))

    def down(self, grace: float = 20.0) -> None:
        live = [i for i in reversed(self.twin.instances) if i.proc]
        for inst in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(inst.proc.pid, inst.stop_signal)
        deadline = time.monotonic() + grace
        for inst in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                inst.proc.wait(max(0.1, deadline - time.monotonic()))
        # Whatever is left in a group (the leader gone, children not): killed.
        for inst in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(inst.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                inst.proc.wait(5)


# =========================================================================== the user's paths


class Airflow:
    """The Airflow 3 REST API as a client uses it (token from /auth/token)."""

    def __init__(self, base: str, username: str, password: str):
        self.base, self.username, self.password = base.rstrip("/"), username, password
        self.token: str | None = None

    def login(self) -> None:
        status, body = http("POST", f"{self.base}/auth/token",
                            {"username": self.username, "password": self.password})
        if status not in (200, 201) or not isinstance(body, dict) or "access_token" not in body:
            raise StepFailed(f"POST /auth/token: HTTP {status}: {str(body)[:500]}",
                             logs=("airflow-apiserver",))
        self.token = body["access_token"]

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,),
             timeout: float = 30) -> Any:
        status, data = http(method, f"{self.base}{path}", body,
                            {"Authorization": f"Bearer {self.token}"}, timeout=timeout)
        if status not in ok:
            raise StepFailed(f"{method} {path}: HTTP {status}: {str(data)[:800]}",
                             logs=("airflow-apiserver",))
        return data

    def task_instances(self, run_id: str) -> list[dict]:
        q = urllib.parse.quote(run_id, safe="")
        return self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{q}/taskInstances?limit=100")["task_instances"]

    def task_log(self, run_id: str, task_id: str, try_number: int) -> str:
        q = urllib.parse.quote(run_id, safe="")
        status, data = http("GET", f"{self.base}/api/v2/dags/{DAG_ID}/dagRuns/{q}/taskInstances/{task_id}"
                                   f"/logs/{max(try_number, 1)}?full_content=true",
                            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"})
        if status != 200 or not isinstance(data, dict):
            return f"(log unavailable: HTTP {status} {str(data)[:300]})"
        lines = []
        for entry in data.get("content") or []:
            if isinstance(entry, dict):
                lines.append(" ".join(str(entry.get(k, "")) for k in ("timestamp", "level", "event")
                                      if entry.get(k)))
            else:
                lines.append(str(entry))
        return "\n".join(lines)

    def xcom(self, run_id: str, task_id: str, key: str = "return_value") -> Any:
        q = urllib.parse.quote(run_id, safe="")
        data = self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{q}/taskInstances/{task_id}"
                                f"/xcomEntries/{key}?deserialize=true")
        value = data.get("value")
        return json.loads(value) if isinstance(value, str) else value

    def wait_run(self, run_id: str, timeout: float, supervisor: Supervisor) -> list[dict]:
        """Poll the run; print task transitions; on failure the failed tasks' logs."""
        deadline = time.monotonic() + timeout
        q = urllib.parse.quote(run_id, safe="")
        seen: dict[str, str] = {}
        while True:
            supervisor.assert_alive()
            run = self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{q}")
            tis = self.task_instances(run_id)
            for ti in sorted(tis, key=lambda t: t.get("start_date") or "~"):
                state = str(ti.get("state"))
                if seen.get(ti["task_id"]) != state and state not in ("None", "scheduled"):
                    seen[ti["task_id"]] = state
                    where = f" on {ti['hostname']}" if ti.get("hostname") else ""
                    say(f"     {ti['task_id']:<16} {state}{where}")
            if run["state"] == "success":
                return tis
            if run["state"] == "failed" or time.monotonic() > deadline:
                detail = []
                for ti in tis:
                    if ti.get("state") in ("failed", "up_for_retry", "running", "queued"):
                        detail.append(f"--- log of {ti['task_id']} ({ti['state']}, try {ti.get('try_number')}):\n"
                                      + tail_text(self.task_log(run_id, ti["task_id"], ti.get("try_number") or 1), 60))
                what = "failed" if run["state"] == "failed" else f"not finished after {timeout:.0f} s"
                failed = [ti["task_id"] for ti in tis if ti.get("state") == "failed"]
                raise StepFailed(f"DAG run {run_id} {what} (failed tasks: {failed or 'none'})",
                                 logs=("airflow-scheduler",), detail="\n".join(detail))
            time.sleep(3)


def tail_text(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- Chromium


class Browser:
    """Headless Debian Chromium driven over the DevTools protocol (a websocket), one page."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
             "--window-size=1440,1000", "--remote-debugging-port=0", "--remote-allow-origins=*"]

    def __init__(self, profile: Path, log: Path, watchdog: Watchdog):
        self.profile, self.log, self.watchdog = profile, log, watchdog
        self.proc: subprocess.Popen | None = None
        self.ws: Any = None
        self.stack = contextlib.ExitStack()
        self.next_id = 0

    def __enter__(self) -> "Browser":
        from websockets.sync.client import connect

        self.profile.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([CHROMIUM, *self.FLAGS, f"--user-data-dir={self.profile}",
                                          "about:blank"], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.watchdog.note("pgid", self.proc.pid)
        active = self.profile / "DevToolsActivePort"
        wait_until("Chromium's DevTools port", lambda: active.is_file() and active.read_text().strip(),
                   60, 0.3)
        port = int(active.read_text().split()[0])

        def page_targets() -> list[dict]:
            status, targets = http("GET", f"http://127.0.0.1:{port}/json/list")
            return [t for t in (targets if status == 200 else []) if t.get("type") == "page"]

        pages = wait_until("a Chromium page", page_targets, 30, 0.3)
        self.ws = self.stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=20))
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
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
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


# =========================================================================== main


class Run:
    """The whole session: steps with names, timings and a summary."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="netsec-twin-"))
        os.chmod(self.root, 0o755)
        self.watchdog = Watchdog(self.root / ".watchdog")
        if not args.keep:
            self.watchdog.note("dir", self.root)
        self.twin: Twin | None = None
        self.sup: Supervisor | None = None
        self.timings: dict[str, float] = {}
        self.summary: dict[str, Any] = {"steps": self.timings}
        self.step_no = 0

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

    # ------------------------------------------------------------------ steps

    def main(self) -> None:
        a = self.args
        with self.step("Debian packages (PostgreSQL, Redis, Chromium)"):
            ensure_debian_packages(need_chromium=not a.no_screenshots)
        with self.step("plan from docker-compose.yaml"):
            self.twin = Twin(self.root, Path(a.env_file), self.seed_data(), a.workers)
            if self.twin.pg_dir and not a.keep:
                self.watchdog.note("dir", self.twin.pg_dir)
            self.sup = Supervisor(self.twin, self.watchdog)
            for inst in self.twin.instances:
                say(f"   {inst.name:<24} {inst.kind:<12} after {', '.join(inst.depends_on) or '-'}")
        with self.step("start the stack in depends_on order (incl. the mongo-seed job: netsec push-data)"):
            self.sup.up(a.start_timeout)
        twin = self.twin
        api = self.apiserver()
        init = twin.env_of(next(n for n in twin.services if "_AIRFLOW_WWW_USER_USERNAME" in twin.env_of(n)))
        self.airflow = Airflow(f"http://127.0.0.1:{twin.port(api, 8080)}",
                               init["_AIRFLOW_WWW_USER_USERNAME"], init["_AIRFLOW_WWW_USER_PASSWORD"])
        self.serving = self.serving_service()
        self.serving_url = f"http://127.0.0.1:{twin.port(self.serving, 8000)}"

        with self.step("trigger netsec_training through the Airflow REST API"):
            run1 = self.trigger_via_api()
        with self.step(f"wait for DAG run {run1}"):
            self.airflow.wait_run(run1, a.run_timeout, self.sup)
            self.report_outcome(run1)
        with self.step("check the Airflow connections the tasks used"):
            self.check_connections(run1)
        with self.step("run's objects and manifest in the bucket, MLflow artifacts in S3"):
            self.check_bucket(run1)
        with self.step("serving picks up the new Production version and answers /predict"):
            self.check_serving()
        with self.step("trigger again through serving's POST /train"):
            run2 = self.trigger_via_serving()
        with self.step(f"wait for DAG run {run2}"):
            self.airflow.wait_run(run2, a.run_timeout, self.sup)
            self.report_outcome(run2)
        with self.step("every DAG run succeeded; tasks ran on both Celery workers"):
            self.check_all_runs()
        if not a.no_screenshots:
            with self.step("screenshots in headless Chromium (Airflow DAG page, serving page)"):
                self.screenshots()
        self.summary["runs"] = [run1, run2]

    def seed_data(self) -> str:
        if self.args.data == "auto":
            return str(SHARED_CSV) if SHARED_CSV.is_file() else "sample"
        if self.args.data != "sample" and not Path(self.args.data).is_file():
            raise StepFailed(f"--data {self.args.data}: no such file")
        return self.args.data if self.args.data == "sample" else str(Path(self.args.data).resolve())

    def serving_service(self) -> str:
        """The long-lived service of the image built without Airflow (compose's `serving`)."""
        found = sorted({i.service for i in self.twin.instances if i.kind == "python-image" and not i.one_shot})
        if len(found) != 1:
            raise StepFailed(f"expected one serving service in docker-compose.yaml, found {found}")
        return found[0]

    def apiserver(self) -> str:
        for name, svc in self.twin.services.items():
            if self.twin.kind_of(name) == "airflow" and [str(c) for c in svc.get("command") or []] == ["api-server"]:
                return name
        raise StepFailed("no Airflow api-server service in docker-compose.yaml")

    def trigger_via_api(self) -> str:
        af = self.airflow
        af.login()
        dag = wait_until(f"the DAG {DAG_ID} in the API (parsed by the dag-processor)",
                         lambda: self._dag_or_import_error(), 180, 2, logs=("airflow-dag-processor",))
        if dag.get("is_paused"):
            af.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        say(f"   unpaused; triggering with conf {json.dumps(RUN_CONF)}")
        run = af.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": RUN_CONF})
        return run["dag_run_id"]

    def _dag_or_import_error(self) -> dict | None:
        status, dag = http("GET", f"{self.airflow.base}/api/v2/dags/{DAG_ID}",
                           headers={"Authorization": f"Bearer {self.airflow.token}"})
        if status == 200:
            return dag
        errors = self.airflow.call("GET", "/api/v2/importErrors").get("import_errors") or []
        if errors:
            raise StepFailed("DAG import errors: " + "; ".join(
                f"{e.get('filename')}: {str(e.get('stack_trace'))[-800:]}" for e in errors))
        return None

    def report_outcome(self, run_id: str) -> None:
        outcome = self.airflow.xcom(run_id, "record_outcome") or {}
        say(f"   outcome: {outcome.get('outcome')} (model version {outcome.get('model_version')}): "
            f"{outcome.get('reason')}")
        self.summary.setdefault("outcomes", {})[run_id] = outcome.get("outcome")

    def check_connections(self, run_id: str) -> None:
        """The tasks read MongoDB and wrote S3 through netsec_mongo / netsec_s3 (compose's
        AIRFLOW_CONN_* variables), not the config fallback the DAG logs a warning for."""
        for task in ("ingest", "sync_s3"):
            log = self.airflow.task_log(run_id, task, 1)
            if "is not defined" in log:
                raise StepFailed(f"{task}: an Airflow connection was missing:\n{tail_text(log, 30)}")
        ingest = self.airflow.xcom(run_id, "ingest") or {}
        if not str(ingest.get("source", "")).startswith("mongo:"):
            raise StepFailed(f"ingest read {ingest.get('source')!r}, not MongoDB")
        say(f"   ingest: {ingest['rows']} rows from {ingest['source']} (connection netsec_mongo); "
            "sync_s3 through netsec_s3")

    def check_bucket(self, run_id: str) -> None:
        import boto3

        sync = self.airflow.xcom(run_id, "sync_s3")
        dest = urllib.parse.urlparse(sync["destination"])
        if dest.scheme != "s3":
            raise StepFailed(f"sync_s3 wrote to {sync['destination']}, not to S3")
        env = self.twin.env_of(self.apiserver())
        s3 = boto3.client("s3", endpoint_url=env["NETSEC_STORAGE__ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        prefix = dest.path.strip("/") + "/"
        keys = {o["Key"]: o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=dest.netloc, Prefix=prefix) for o in page.get("Contents", [])}
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
        mlflow_bucket = urllib.parse.urlparse(
            self.twin.rewrite_urls(next(a for a in self.twin.instance(self.twin.service_of_kind("mlflow")).argv
                                        if a.startswith("--artifacts-destination")).split("=", 1)[1])).netloc
        mlmodels = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=mlflow_bucket)
                    for o in page.get("Contents", []) if o["Key"].endswith("MLmodel")]
        if not mlmodels:
            raise StepFailed(f"no MLmodel in bucket {mlflow_bucket}: MLflow artifacts are not in S3")
        say(f"   s3://{dest.netloc}/{prefix}: {len(keys)} objects ({len(model_files)} under model/), "
            f"manifest lists {len(listed)}; bucket {mlflow_bucket}: {len(mlmodels)} MLmodel file(s)")
        self.summary["bucket"] = {"prefix": f"s3://{dest.netloc}/{prefix}", "objects": len(keys),
                                  "mlflow_models": len(mlmodels)}

    def production_version(self) -> str:
        mlflow_url = f"http://127.0.0.1:{self.twin.port(self.twin.service_of_kind('mlflow'), 5000)}"
        serving_env = self.twin.env_of(self.serving)
        name = serving_env.get("NETSEC_SERVING_MODEL_NAME", "netsec-phishing")
        alias = serving_env.get("NETSEC_SERVING_MODEL_ALIAS", "production")
        status, body = http("GET", f"{mlflow_url}/api/2.0/mlflow/registered-models/alias?"
                                   + urllib.parse.urlencode({"name": name, "alias": alias}))
        if status != 200:
            raise StepFailed(f"MLflow has no {name}@{alias}: HTTP {status} {str(body)[:300]}", logs=("mlflow",))
        return str(body["model_version"]["version"])

    def check_serving(self) -> None:
        version = self.production_version()
        say(f"   registry: Production = version {version}")

        def serving_has_it() -> dict | None:
            status, body = http("GET", f"{self.serving_url}/model", timeout=10)
            return body if status == 200 and isinstance(body, dict) and body.get("version") == version else None

        # Every serving worker answers with the new version (a few in a row, any worker).
        info = wait_until(f"serving's /model to show version {version}", serving_has_it, 180, 2,
                          logs=(self.serving,))
        for _ in range(6):
            info = wait_until(f"serving's /model to show version {version}", serving_has_it, 60, 1,
                              logs=(self.serving,))
        status, ready = http("GET", f"{self.serving_url}/ready")
        if status != 200:
            raise StepFailed(f"/ready: HTTP {status} {ready}", logs=(self.serving,))
        features = [f["name"] for f in info["features"]]
        rows = self.sample_rows(features, 5)
        status, body = http("POST", f"{self.serving_url}/predict", {"records": rows})
        if status != 200 or len(body.get("predictions", [])) != len(rows):
            raise StepFailed(f"/predict: HTTP {status} {str(body)[:500]}", logs=(self.serving,))
        if body["model_version"] != version:
            raise StepFailed(f"/predict answered with version {body['model_version']}, not {version}")
        threats = sum(p["is_threat"] for p in body["predictions"])
        say(f"   /model version {version} ({info['model_class']}, test F1 "
            f"{info['metrics'].get('test_f1', float('nan')):.3f}); /ready 200; "
            f"/predict: {len(rows)} rows, {threats} threats")
        self.summary["production_version"] = version

    def seed_csv(self) -> Path:
        if self.twin.data != "sample":
            return Path(self.twin.data)
        seed = next(i for i in self.twin.instances if i.kind == "python-image" and i.one_shot)
        found = list((self.root / "fs" / seed.name / "tmp").glob("*.csv"))
        if not found:
            raise StepFailed("the seed job left no CSV behind to take rows from")
        return found[0]

    def upload_csv(self, rows: int) -> Path:
        """The first rows of the seeded data, as a user would upload them on serving's page."""
        path = self.root / "upload" / "rows.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.seed_csv(), encoding="utf-8-sig") as src:
            lines = [line for _, line in zip(range(rows + 1), src)]
        path.write_text("".join(lines), encoding="utf-8")
        return path

    def sample_rows(self, features: list[str], n: int) -> list[dict[str, float]]:
        with open(self.seed_csv(), newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            return [{f: float(row[f]) for f in features} for _, row in zip(range(n), reader)]

    def trigger_via_serving(self) -> str:
        status, body = http("POST", f"{self.serving_url}/train", RUN_CONF, timeout=60)
        if status != 200 or "dag_run_id" not in body:
            raise StepFailed(f"serving POST /train: HTTP {status} {str(body)[:500]}", logs=(self.serving,))
        say(f"   serving triggered {body['dag_run_id']} with conf {json.dumps(body.get('conf'))}")
        return body["dag_run_id"]

    def check_all_runs(self) -> None:
        """All runs of the session, the first scheduled one (see TWIN_PIPELINE_ENV) included."""
        runs = self.airflow.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]
        tis = []
        for run in runs:
            say(f"   {run['dag_run_id']:<48} {run['run_type']:<10} {run['state']}")
            if run["state"] != "success":
                raise StepFailed(f"DAG run {run['dag_run_id']} is {run['state']}")
            tis += self.airflow.task_instances(run["dag_run_id"])
        self.summary["dag_runs"] = {r["dag_run_id"]: r["state"] for r in runs}
        self.check_workers(tis)

    def check_workers(self, tis: list[dict]) -> None:
        workers = [i.name for i in self.twin.instances if WORKER_NAME_ENV in i.env]
        ran: dict[str, list[str]] = {}
        for ti in tis:
            if ti.get("hostname"):
                ran.setdefault(ti["hostname"], []).append(ti["task_id"])
        for host, tasks in sorted(ran.items()):
            say(f"   {host}: {len(tasks)} tasks ({', '.join(tasks)})")
        unused = [w for w in workers if w not in ran]
        strangers = [h for h in ran if h not in workers]
        if strangers:
            raise StepFailed(f"task instances name hosts {strangers}, not the workers {workers}")
        if unused:
            raise StepFailed(f"workers {unused} ran no task of the two DAG runs", logs=tuple(unused))
        self.summary["worker_hostnames"] = {h: len(t) for h, t in ran.items()}

    def screenshots(self) -> None:
        shots = {"airflow": self.out / "airflow_dag.png", "serving": self.out / "serving.png"}
        for path in shots.values():
            path.unlink(missing_ok=True)
        with Browser(self.root / "chromium-profile", self.twin.logs / "chromium.log", self.watchdog) as b:
            try:
                self.airflow_page(b, shots["airflow"])
                self.serving_page(b, shots["serving"])
            except StepFailed:
                # What the browser showed when it gave up, for the report.
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
        b.wait_for("the Airflow login form or the DAG page",
                   "!!document.querySelector('input[name=username]') || "
                   f"document.body.innerText.includes('{DAG_ID}')", 90)
        if b.js("!!document.querySelector('input[name=username]')"):
            say(f"   Airflow: FAB login form at {b.js('location.pathname')}, signing in")
            b.js(f"""(() => {{ const u = document.querySelector('input[name=username]');
                const f = u.form; u.value = {json.dumps(self.airflow.username)};
                f.querySelector('input[name=password]').value = {json.dumps(self.airflow.password)};
                f.submit(); return true; }})()""")
            b.wait_for("the DAG page after signing in",
                       f"location.pathname.startsWith('/dags/{DAG_ID}') && "
                       "!document.querySelector('input[name=password]')", 90)
        # The grid is drawn after its API calls: wait until it names the DAG's tasks.
        b.wait_for("the DAG page's grid with the tasks",
                   "['ingest', 'check_drift', 'record_outcome'].every("
                   "t => document.body.innerText.includes(t))", 90)
        time.sleep(2)
        b.screenshot(path)

    def serving_page(self, b: Browser, path: Path) -> None:
        """Serving's page: the model line, then a CSV scored through its upload form."""
        b.goto(self.serving_url + "/")
        b.wait_for("serving's page to show the model",
                   "document.getElementById('model') && "
                   "!document.getElementById('model').innerText.includes('loading')", 60)
        b.upload("#file", self.upload_csv(200))
        b.js("document.getElementById('score').click(), true")
        b.wait_for("serving's page to show the scored rows",
                   "!document.getElementById('results').hidden && "
                   "document.querySelectorAll('#table tr').length > 1", 60)
        time.sleep(1)
        b.screenshot(path)

    # ------------------------------------------------------------------ teardown

    def teardown(self, failed: bool) -> None:
        if self.sup:
            say("== teardown")
            self.sup.down()
        self.watchdog.close()
        if failed and self.twin:
            dest = self.out / "logs"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(self.twin.logs, dest, dirs_exist_ok=True)
            base = self.root / "volumes" / "airflow-logs"
            if base.is_dir():
                shutil.copytree(base, dest / "airflow-task-logs", dirs_exist_ok=True)
            say(f"   logs kept in {dest}")
        if self.args.keep:
            say(f"   kept {self.root}" + (f" and {self.twin.pg_dir}" if self.twin and self.twin.pg_dir else ""))
            return
        shutil.rmtree(self.root, ignore_errors=True)
        if self.twin and self.twin.pg_dir:
            shutil.rmtree(self.twin.pg_dir, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / ".netsec" / "local_stack"),
                   help="screenshots, summary.json and (on failure) logs (default: .netsec/local_stack)")
    p.add_argument("--env-file", default=str(REPO / ".env.example"),
                   help="compose variables (default: .env.example; ports are always remapped)")
    p.add_argument("--data", default="auto",
                   help="'sample' (compose's seed job, synthetic rows), a CSV path, or 'auto': "
                        "../shared/data/phishing_websites.csv when present, else sample")
    p.add_argument("--workers", type=int, default=2, help="Celery worker replicas (default 2)")
    p.add_argument("--start-timeout", type=float, default=600)
    p.add_argument("--run-timeout", type=float, default=900, help="seconds per DAG run")
    p.add_argument("--no-screenshots", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (databases, logs)")
    args = p.parse_args(argv)
    if args.workers < 2:
        p.error("--workers must be at least 2 (the twin checks that tasks spread over workers)")
    return args


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C, also when started in the background of a script (where SIGINT starts ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    run = Run(args)
    t0 = time.monotonic()
    failed = True
    try:
        run.main()
        failed = False
    except StepFailed as exc:
        say(f"\nFAILED: {exc}")
        if exc.detail:
            say(exc.detail)
        for name in exc.logs:
            if run.twin and any(i.name == name for i in run.twin.instances):
                say(f"--- last lines of {name}'s log:\n{tail(run.twin.instance(name).log)}")
    except KeyboardInterrupt:
        say("\ninterrupted")
    except SystemExit as exc:
        say(f"\nstopped by signal (exit {exc.code})")
    except Exception as exc:  # a bug or an unexpected answer: still tear down, still say where
        import traceback

        say(f"\nFAILED in step {run.step_no}: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the teardown
        run.teardown(failed)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    run.summary["seconds"] = round(time.monotonic() - t0, 1)
    run.summary["ok"] = not failed
    (run.out / "summary.json").write_text(json.dumps(run.summary, indent=2) + "\n", encoding="utf-8")
    say(f"\n{'OK' if not failed else 'FAILED'}: local twin of docker-compose.yaml in "
        f"{run.summary['seconds']:.0f} s (summary: {run.out / 'summary.json'})")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
