"""Scale benchmark: ``netsec run`` (default config) on 100k, 300k and 1M generated rows.

    .venv/bin/python bench/bench_scale.py                       # 100k, 300k, 1M rows, 2% missing
    .venv/bin/python bench/bench_scale.py --sizes 100k --whole  # also time `netsec run` in one process
    .venv/bin/python bench/bench_scale.py --sizes 1M --until validate   # the data steps only

Prints figures, asserts nothing. For each size:

- the data: ``netsec make-sample --rows N --missing 0.02`` (deterministic; cached under
  ``--data-dir``), a fresh work dir (storage, MLflow on SQLite) and the default config;
- the steps of ``netsec run`` in its order (ingest, validate, drift, transform, train, register,
  sync, record_outcome), **each in a child process of its own** (``bench_scale.py --step``),
  handed the previous steps' records as JSON, as Airflow hands them over XCom. Per step:

  - ``wall s``: wall seconds of the step function (measured in the child, imports excluded);
  - ``cpu s``: CPU seconds of the step's process and its worker processes (joblib/loky) over the
    same span: ``getrusage`` of the process and of reaped children plus psutil's ``cpu_times``
    of live workers (the bench_training.py clock);
  - ``peak RSS``: the largest sum of the resident set sizes of the step's process and all its
    descendants, sampled by this process with psutil every 0.1 s over the child's whole life
    (so it includes the interpreter and the imported libraries), and ``main maxrss``: the
    kernel's exact peak of the step's own process (``ru_maxrss``);

- ``drift@ref``: the drift step once more with a reference: the new batch (the whole file)
  against this run's validated training split, which is what the Production model's
  ``netsec.train_uri`` points at once this run is registered, so it is the comparison every
  later night makes (a first run has no Production model: its ``drift`` compares nothing). It
  runs under a run id of its own so the run's drift report stays, and it is counted in the end
  to end total (a conservative total: a first run does not pay it);
- the model artifact (``model.skops`` in MLflow's store), where copies of it are stored
  (files with its sha256 under the work dir), the bytes a run leaves in storage, and the
  threat-class test F1 of the winner;
- ``--whole``: ``netsec run`` once more in a single process on a fresh work dir, sampled the
  same way (what a user sees: one process holding every step);
- at the end: the growth factor of every figure from the smallest to the largest size.

``--engine dask`` runs the same steps with ``training.engine=dask`` against a Dask cluster of
``--dask-workers`` worker processes (one thread each) that this script starts on loopback for
the size (``dask scheduler`` and ``dask worker`` processes, as compose runs them), with the data
sets in partitions of ``--partition-rows`` rows. Per step it adds:

- ``cpu s``: the step's process tree **plus** every cluster process (scheduler, nannies,
  workers) over the step (psutil ``cpu_times`` before and after);
- ``peak RSS per worker``: each worker process's own peak over the step, sampled every 0.1 s
  (the task's process tree is the ``peak RSS`` column, as for the local engine).

``--engine both`` runs the local engine first (for sizes up to ``--local-max-rows``, where one
process can still run it) and prints the comparison the scale issue asks for: threat F1 of both,
CPU seconds per row of both and their ratio, and every worker's peak.

    .venv/bin/python bench/bench_scale.py --engine both --sizes 1M,3M,10M   # issue 26's table

The machine is shared: wall seconds move with other people's load, CPU seconds much less.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
STEPS = ["ingest", "validate", "drift", "drift@ref", "transform", "train", "register", "sync", "outcome"]
MB = 1024 * 1024


# --------------------------------------------------------------------------- child side


def run_step(step: str, state_file: Path) -> int:
    """Run one pipeline step with the records in ``state_file``; add its record there."""
    import logging
    import resource

    from bench_training import Clock  # the bench/ folder is the script's: on sys.path

    from netsec_tasks import records as R
    from netsec_tasks.pipeline import load_pipeline_config

    logging.basicConfig(
        level=logging.INFO, format="    %(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("alembic", "urllib3", "botocore", "matplotlib", "git", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    state = json.loads(state_file.read_text())
    cfg = load_pipeline_config()
    run = R.RunContext.from_xcom(state["run"])
    get = lambda name, cls: cls.from_xcom(state[name]) if state.get(name) else None  # noqa: E731
    ing, val = get("ingest", R.IngestRecord), get("validate", R.ValidationRecord)
    clock = Clock()  # wall and CPU seconds, this process and its workers
    if step == "ingest":
        from netsec_tasks.ingest import ingest

        out = ingest(cfg, run)
    elif step == "validate":
        from netsec_tasks.validate import validate

        out = validate(cfg, run, ing)
    elif step == "drift":
        from netsec_tasks.drift import check_drift
        from netsec_tasks.registry import production_reference_uri

        out = check_drift(cfg, run, val, reference_uri=production_reference_uri(cfg))
    elif step == "drift@ref":
        from netsec_tasks.drift import check_drift

        # Its own run id: the run's drift report stays as the first run wrote it.
        other = R.RunContext.create(cfg, run_id=run.run_id + "-drift-at-ref", trigger="cli")
        out = check_drift(cfg, other, val, reference_uri=val.train_uri)
    elif step == "transform":
        from netsec_tasks.transform import transform

        out = transform(cfg, run, val)
    elif step == "train":
        from netsec_tasks.train import train

        out = train(cfg, run, val, get("transform", R.TransformRecord))
    elif step == "register":
        from netsec_tasks.registry import register

        out = register(cfg, run, get("train", R.TrainRecord), val)
    elif step == "sync":
        from netsec_tasks.sync import sync

        out = sync(cfg, run, register=get("register", R.RegisterRecord))
    elif step == "outcome":
        from netsec_tasks.pipeline import record_outcome

        out = record_outcome(
            cfg,
            run,
            ingest=ing,
            drift=get("drift", R.DriftRecord),
            train=get("train", R.TrainRecord),
            register=get("register", R.RegisterRecord),
            branch_reason="bench",
        )
    else:
        raise SystemExit(f"unknown step {step}")
    wall, cpu = clock.stop()
    state[step] = out.to_xcom()
    state.setdefault("_measured", {})[step] = {
        "wall": wall,
        "cpu": cpu,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    state_file.write_text(json.dumps(state))
    return 0


# --------------------------------------------------------------------------- parent side


class TreeSampler:
    """Peak summed RSS of a process and its descendants, and the CPU seconds each of them used
    (last sample per pid), sampled every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, pid: int, interval: float = 0.1):
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_procs = 0
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            if total > self.peak:
                self.peak, self.peak_procs = total, len(procs)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu.values())


class Cluster:
    """A Dask cluster on loopback: ``dask scheduler`` and ``dask worker --nworkers N`` processes
    (children of this script, so their CPU and memory are measured apart from the steps')."""

    def __init__(self, workers: int, memory_limit: str, work: Path, log_file: Path):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        self.log = open(log_file, "a")  # noqa: SIM115 (open for the cluster's life)
        from netsec_tasks.engine import runtime_environment

        dask = str(Path(PY).with_name("dask"))
        env = {**os.environ, **runtime_environment()}
        common = dict(stdout=self.log, stderr=subprocess.STDOUT, cwd=work, env=env)
        self.procs = [
            subprocess.Popen(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **common
            )
        ]
        self.procs.append(
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    self.address,
                    f"--nworkers={workers}",
                    "--nthreads=1",
                    f"--memory-limit={memory_limit}",
                    "--no-dashboard",
                    f"--local-directory={work / 'dask-worker'}",
                ],
                **common,
            )
        )
        from distributed import Client

        deadline = time.monotonic() + 120
        while True:
            try:
                self.client = Client(self.address, timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        self.client.wait_for_workers(workers, timeout=120)
        self.worker_pids = dict(self.client.run(os.getpid))  # address -> pid

    def processes(self) -> list[Any]:
        """Every process of the cluster (scheduler, worker CLI, nannies, workers)."""
        import psutil

        out = []
        for proc in self.procs:
            try:
                root = psutil.Process(proc.pid)
                out += [root, *root.children(recursive=True)]
            except psutil.Error:
                pass
        return out

    def cpu(self) -> float:
        import psutil

        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return total

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()


class WorkerSampler:
    """Each Dask worker process's peak RSS, sampled every ``interval`` s until :meth:`stop`;
    a worker that is gone (restarted by its nanny above its memory limit) is reported."""

    def __init__(self, cluster: Cluster, interval: float = 0.1):
        import psutil

        self.procs = {addr: psutil.Process(pid) for addr, pid in cluster.worker_pids.items()}
        self.peak = dict.fromkeys(self.procs, 0)
        self.lost: set[str] = set()
        self.cpu0 = cluster.cpu()
        self.cluster = cluster
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            for addr, p in self.procs.items():
                try:
                    self.peak[addr] = max(self.peak[addr], p.memory_info().rss)
                except psutil.Error:
                    self.lost.add(addr)
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        return {
            "worker_peak_mb": [self.peak[a] / MB for a in sorted(self.peak)],
            "cluster_cpu": self.cluster.cpu() - self.cpu0,
            "workers_lost": sorted(self.lost),
        }


def _env(home: Path, sets: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSEC_") and k != "MLFLOW_TRACKING_URI"}
    env.update(
        {
            "NETSEC_HOME": str(home),
            "GIT_PYTHON_REFRESH": "quiet",
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)])),
        }
    )
    for item in sets:
        key, _, value = item.partition("=")
        env["NETSEC_" + key.strip().upper().replace(".", "__")] = value
    return env


def make_data(rows: int, missing: float, data_dir: Path) -> Path:
    path = data_dir / f"phishing_{rows}_missing{missing:g}.csv"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        print(f"  generating {path.name} ...", flush=True)
        subprocess.run(
            [
                PY,
                "-m",
                "netsec_tasks.cli",
                "make-sample",
                "--rows",
                str(rows),
                "--missing",
                str(missing),
                "--out",
                str(path),
            ],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    return path


def run_steps(
    data: Path, home: Path, sets: list[str], until: str | None, log_file: Path, cluster: Cluster | None = None
) -> dict[str, Any]:
    """Every step in a child process; returns per-step figures and the records. With a
    ``cluster``, the cluster's CPU seconds over each step are added to the step's, and each
    worker's peak RSS is recorded."""
    from netsec_tasks.config import load_config
    from netsec_tasks.records import RunContext

    env = _env(home, [*sets, f"source.path={data}"])
    cfg = load_config(environ=env)
    run = RunContext.create(cfg, run_id="bench", trigger="cli")
    state_file = home / "bench_state.json"
    home.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"run": run.to_xcom()}))
    steps = STEPS[: STEPS.index(until) + 1] if until else STEPS
    figures: dict[str, dict[str, float]] = {}
    with open(log_file, "a") as log:
        for step in steps:
            log.write(f"== {step}\n")
            log.flush()
            # cwd: the work dir, so the config is the imported package's own (config/ beside it)
            proc = subprocess.Popen(
                [PY, str(Path(__file__).resolve()), "--step", step, "--state", str(state_file)],
                cwd=home,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            sampler = TreeSampler(proc.pid)
            workers = WorkerSampler(cluster) if cluster is not None else None
            rc = proc.wait()
            sampler.stop()
            on_workers = workers.stop() if workers is not None else {}
            if rc != 0:
                raise SystemExit(f"step {step} failed (exit {rc}); see {log_file}")
            measured = json.loads(state_file.read_text())["_measured"][step]
            figures[step] = {**measured, "peak_mb": sampler.peak / MB, "procs": sampler.peak_procs}
            extra = ""
            if on_workers:
                figures[step].update(on_workers, task_cpu=measured["cpu"])
                figures[step]["cpu"] = measured["cpu"] + on_workers["cluster_cpu"]
                extra = (
                    f" (task {measured['cpu']:.1f} + cluster {on_workers['cluster_cpu']:.1f}); workers "
                    + " / ".join(f"{mb:.0f}" for mb in on_workers["worker_peak_mb"])
                    + " MB peak"
                    + (f"; LOST {on_workers['workers_lost']}" if on_workers["workers_lost"] else "")
                )
            print(
                f"    {step:<11} {measured['wall']:8.1f} s {figures[step]['cpu']:8.1f} cpu-s "
                f"{sampler.peak / MB:8.0f} MB peak ({sampler.peak_procs} proc){extra}",
                flush=True,
            )
    return {"steps": figures, "state": json.loads(state_file.read_text())}


def run_whole(data: Path, home: Path, sets: list[str], log_file: Path) -> dict[str, float]:
    """``netsec run`` in one process, sampled like a step."""
    env = _env(home, [*sets, f"source.path={data}"])
    with open(log_file, "a") as log:
        log.write("== netsec run (one process)\n")
        log.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [PY, "-m", "netsec_tasks.cli", "run"], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        sampler = TreeSampler(proc.pid)
        _, status, ru = os.wait4(proc.pid, 0)
        sampler.stop()
        wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"netsec run failed (status {status}); see {log_file}")
    workers = sum(c for pid, c in sampler.cpu.items() if pid != proc.pid)
    return {
        "wall": wall,
        "cpu": ru.ru_utime + ru.ru_stime + workers,
        "peak_mb": sampler.peak / MB,
        "maxrss_mb": ru.ru_maxrss / 1024,
        "procs": sampler.peak_procs,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def artifacts(home: Path) -> dict[str, Any]:
    """The model file's size and every copy of it under the work dir; bytes per area."""
    models = sorted(home.rglob("model.skops"))
    out: dict[str, Any] = {"model_mb": None, "model_copies": [], "areas_mb": {}}
    if models:
        model = max(models, key=lambda p: p.stat().st_mtime)
        out["model_mb"] = model.stat().st_size / MB
        digest = _sha256(model)
        size = model.stat().st_size
        out["model_copies"] = [
            str(p.relative_to(home))
            for p in home.rglob("*")
            if p.is_file() and p.stat().st_size == size and _sha256(p) == digest
        ]
    for area in ("storage/runs", "storage/snapshots", "mlartifacts"):
        root = home / area
        out["areas_mb"][area] = (
            sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / MB if root.exists() else 0.0
        )
    pre = sorted(home.rglob("preprocessor.skops"))
    out["preprocessor_mb"] = pre[0].stat().st_size / MB if pre else None
    return out


def _rows(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if text[-1] in "km" else text) * mult)


def _label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows // 1000}k"


def print_tables(results: dict[int, dict[str, Any]]) -> None:
    sizes = sorted(results)
    print("\nper step (wall s / cpu s / peak RSS MB of the step's process tree):")
    head = "| step | " + " | ".join(_label(n) for n in sizes) + " |"
    print(head)
    print("|---" * (len(sizes) + 1) + "|")
    steps = [s for s in STEPS if any(s in results[n]["steps"] for n in sizes)]
    for step in steps:
        cells = []
        for n in sizes:
            f = results[n]["steps"].get(step)
            cells.append(f"{f['wall']:.1f} / {f['cpu']:.1f} / {f['peak_mb']:.0f}" if f else "-")
        print(f"| {step} | " + " | ".join(cells) + " |")
    print("\nper size:")
    print(
        "| rows | end to end wall s | cpu s | peak RSS MB (largest step) | model MB | "
        "preprocessor MB | model copies | storage per run MB | threat F1 (test) | winner |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        r = results[n]
        wall = sum(v["wall"] for v in r["steps"].values())
        cpu = sum(v["cpu"] for v in r["steps"].values())
        peak = max(v["peak_mb"] for v in r["steps"].values())
        a = r.get("artifacts", {})
        train = r["state"].get("train") or {}
        f1 = (train.get("test_metrics") or {}).get("f1")
        fmt = lambda v, p=1: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        print(
            f"| {_label(n)} | {wall:.0f} | {cpu:.0f} | {peak:.0f} | {fmt(a.get('model_mb'))} | "
            f"{fmt(a.get('preprocessor_mb'), 2)} | {len(a.get('model_copies') or [])} | "
            f"{fmt((a.get('areas_mb') or {}).get('storage/runs'))} | {fmt(f1, 4)} | "
            f"{train.get('winner', '-')} |"
        )
        if r.get("whole"):
            w = r["whole"]
            print(
                f"|   `netsec run`, one process | {w['wall']:.0f} | {w['cpu']:.0f} | "
                f"{w['peak_mb']:.0f} (main maxrss {w['maxrss_mb']:.0f}) | | | | | | |"
            )
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"\ngrowth {_label(lo)} -> {_label(hi)} (x{hi / lo:g} rows):")
        for step in steps:
            a, b = results[lo]["steps"].get(step), results[hi]["steps"].get(step)
            if a and b:
                print(
                    f"  {step:<11} wall x{b['wall'] / max(a['wall'], 1e-9):5.2f}  "
                    f"cpu x{b['cpu'] / max(a['cpu'], 1e-9):5.2f}  "
                    f"peak RSS x{b['peak_mb'] / max(a['peak_mb'], 1e-9):5.2f}"
                )
        tot = {
            n: (
                sum(v["wall"] for v in results[n]["steps"].values()),
                sum(v["cpu"] for v in results[n]["steps"].values()),
            )
            for n in (lo, hi)
        }
        print(
            f"  {'end to end':<11} wall x{tot[hi][0] / tot[lo][0]:5.2f}  cpu x{tot[hi][1] / tot[lo][1]:5.2f}"
        )


def print_dask(results: dict[int, dict[str, Any]]) -> None:
    """Per step and size: each Dask worker's peak RSS (MB) and the cluster's CPU seconds."""
    sizes = sorted(results)
    print("\nDask workers per step (peak RSS MB of each worker / cluster cpu s, task cpu s):")
    print("| step | " + " | ".join(_label(n) for n in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    for step in [s for s in STEPS if any(s in results[n]["steps"] for n in sizes)]:
        cells = []
        for n in sizes:
            f = results[n]["steps"].get(step)
            cells.append(
                "-"
                if not f or "worker_peak_mb" not in f
                else " / ".join(f"{mb:.0f}" for mb in f["worker_peak_mb"])
                + f"; {f['cluster_cpu']:.1f}, {f['task_cpu']:.1f}"
                + (" LOST" if f.get("workers_lost") else "")
            )
        print(f"| {step} | " + " | ".join(cells) + " |")


def _totals(r: dict[str, Any]) -> dict[str, Any]:
    steps = r["steps"].values()
    train = r["state"].get("train") or {}
    return {
        "wall": sum(v["wall"] for v in steps),
        "cpu": sum(v["cpu"] for v in steps),
        "task_peak": max(v["peak_mb"] for v in steps),
        "worker_peak": max((max(v.get("worker_peak_mb") or [0]) for v in steps), default=0),
        "f1": (train.get("test_metrics") or {}).get("f1"),  # at the operating point
        "pr_auc": (train.get("test_metrics") or {}).get("pr_auc"),  # threshold-free
        "threshold": train.get("threshold"),
        "winner": train.get("winner"),
        "refit": train.get("refit"),
        "model_mb": (r.get("artifacts") or {}).get("model_mb"),
    }


def print_comparison(local: dict[int, dict[str, Any]], dask: dict[int, dict[str, Any]]) -> None:
    """The scale issue's table: per size, both engines side by side, and the goals."""
    print("\nlocal engine vs Dask engine (end to end, every step):")
    print(
        "| rows | engine | wall s | cpu s | cpu s per 1k rows | peak RSS MB task | peak RSS MB per worker "
        "(max) | model MB | threat F1 | winner |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sorted(set(local) | set(dask)):
        for name, results in (("local", local), ("dask", dask)):
            if n not in results:
                print(f"| {_label(n)} | {name} | not run (one process cannot hold it) | | | | | | | |")
                continue
            t = _totals(results[n])
            f1 = "-" if t["f1"] is None else f"{t['f1']:.4f}"
            print(
                f"| {_label(n)} | {name} | {t['wall']:.0f} | {t['cpu']:.0f} | {t['cpu'] / n * 1000:.3f} | "
                f"{t['task_peak']:.0f} | {t['worker_peak']:.0f} | {t['model_mb'] or 0:.1f} | {f1} | "
                f"{t['winner']} |"
            )
        if n in dask and _totals(dask[n])["refit"]:
            print(f"|   | dask refit | {_totals(dask[n])['refit']} | | | | | | | |")
    print("\ngoals:")
    for n in sorted(set(local) & set(dask)):
        a, b = _totals(local[n]), _totals(dask[n])
        if a["f1"] is not None and b["f1"] is not None:
            print(
                f"  {_label(n)}: |F1 dask - F1 local| = {abs(b['f1'] - a['f1']):.4f} (goal at 1M: <= 0.005)"
                f" at thresholds {a['threshold']} / {b['threshold']}"
            )
        if a["pr_auc"] is not None and b["pr_auc"] is not None:
            print(f"  {_label(n)}: |PR AUC dask - PR AUC local| = {abs(b['pr_auc'] - a['pr_auc']):.4f}")
        print(f"  {_label(n)}: cpu s per row, dask / local = {b['cpu'] / a['cpu']:.2f} (goal: <= 1.3)")
    for n in sorted(dask):
        print(
            f"  {_label(n)}: largest worker peak {_totals(dask[n])['worker_peak']:.0f} MB (goal at 10M: <= 3000)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100k,300k,1M", help="comma-separated row counts")
    ap.add_argument("--missing", type=float, default=0.02, help="share of empty feature cells")
    ap.add_argument("--data-dir", default=str(REPO / ".netsec" / "bench_scale" / "data"))
    ap.add_argument(
        "--work-dir",
        default=str(REPO / ".netsec" / "bench_scale" / "work"),
        help="one fresh sub-directory per size (removed first)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every step, e.g. training.search_max_rows=50000",
    )
    ap.add_argument("--until", choices=STEPS, help="stop after this step (e.g. validate)")
    ap.add_argument("--whole", action="store_true", help="also time `netsec run` in one process")
    ap.add_argument("--json", help="write every figure to this JSON file")
    ap.add_argument(
        "--engine",
        choices=("local", "dask", "both"),
        default="local",
        help="training.engine of the runs; both: local, then dask, compared (default local)",
    )
    ap.add_argument("--dask-workers", type=int, default=2, help="Dask worker processes (default 2)")
    ap.add_argument(
        "--dask-memory-limit",
        default="8GiB",
        help="each worker's Dask memory limit (default 8GiB: above the 3 GB goal, so a miss is "
        "measured, not a worker restarted)",
    )
    ap.add_argument(
        "--partition-rows", default="250k", help="storage.partition_rows of the Dask runs (default 250k)"
    )
    ap.add_argument(
        "--local-max-rows", default="3M", help="with --engine both: the largest size the local engine runs"
    )
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        return run_step(args.step, Path(args.state))

    sys.path.insert(0, str(REPO))
    import psutil

    sizes = [_rows(s) for s in args.sizes.split(",")]
    engines = ["local", "dask"] if args.engine == "both" else [args.engine]
    load = os.getloadavg()
    print(
        f"cores: {os.cpu_count()} (psutil: {psutil.cpu_count()}), load average {load[0]:.1f} "
        f"{load[1]:.1f} {load[2]:.1f}; missing cells {args.missing:.0%}; engine(s) {', '.join(engines)}; "
        f"overrides {args.set or 'none'}"
        + (
            f"; Dask: {args.dask_workers} workers x 1 thread, limit {args.dask_memory_limit}, partitions of "
            f"{_rows(args.partition_rows)} rows"
            if "dask" in engines
            else ""
        ),
        flush=True,
    )
    results: dict[str, dict[int, dict[str, Any]]] = {e: {} for e in engines}
    for n in sizes:
        data = make_data(n, args.missing, Path(args.data_dir))
        for engine in engines:
            if engine == "local" and args.engine == "both" and n > _rows(args.local_max_rows):
                print(f"{_label(n)} rows, local engine: skipped (--local-max-rows {args.local_max_rows})")
                continue
            name = _label(n) + ("" if engine == "local" else "-dask")
            home = Path(args.work_dir) / name
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            log_file = home / "bench.log"
            print(f"{_label(n)} rows ({data.name}), {engine} engine; log {log_file}", flush=True)
            started = time.perf_counter()
            sets, cluster = list(args.set), None
            if engine == "dask":
                cluster = Cluster(args.dask_workers, args.dask_memory_limit, home, home / "dask.log")
                sets += [
                    "training.engine=dask",
                    f"dask.scheduler={cluster.address}",
                    f"storage.partition_rows={_rows(args.partition_rows)}",
                ]
            try:
                result = run_steps(data, home, sets, args.until, log_file, cluster)
            finally:
                if cluster is not None:
                    cluster.stop()
            results[engine][n] = result
            result["artifacts"] = artifacts(home)
            a = result["artifacts"]
            print(
                f"    model {a['model_mb'] or 0:.1f} MB, copies: {a['model_copies']}; "
                f"stored MB: {json.dumps({k: round(v, 1) for k, v in a['areas_mb'].items()})}; "
                f"{time.perf_counter() - started:.0f} s for the size",
                flush=True,
            )
            if args.whole and engine == "local":
                whole_home = Path(args.work_dir) / f"{_label(n)}-whole"
                shutil.rmtree(whole_home, ignore_errors=True)
                whole_home.mkdir(parents=True)
                result["whole"] = run_whole(data, whole_home, args.set, whole_home / "bench.log")
                w = result["whole"]
                print(
                    f"    netsec run in one process: {w['wall']:.1f} s, {w['cpu']:.1f} cpu-s, "
                    f"{w['peak_mb']:.0f} MB peak",
                    flush=True,
                )
    load = os.getloadavg()
    print(
        f"\nload average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (2 shared cores: "
        "wall seconds include other people's work)"
    )
    for engine in engines:
        if results[engine]:
            print(f"\n## {engine} engine")
            print_tables(results[engine])
    if results.get("dask"):
        print_dask(results["dask"])
    if args.engine == "both":
        print_comparison(results["local"], results["dask"])
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {e: {str(k): v for k, v in r.items()} for e, r in results.items()}, indent=1, default=str
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
