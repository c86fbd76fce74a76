"""Fault injection against real servers: time to fail, exit code and what each fault leaves behind.

    .venv/bin/python bench/bench_faults.py                       # every scenario, this checkout
    .venv/bin/python bench/bench_faults.py --code /tmp/before    # the same against another checkout
    .venv/bin/python bench/bench_faults.py -s registry_killed -s orphans --cap 600

``--code DIR`` runs ``netsec`` from the source tree in DIR (PYTHONPATH), so a checkout of an older
commit can be measured with this virtualenv. Scenarios (UCI data, 2 candidates, n_iter 2):

- ``registry_killed``: a real ``mlflow server`` is SIGKILLed while ``netsec run`` is tuning.
- ``registry_hung``: the same server frozen with SIGSTOP instead (requests hang, nothing refuses).
- ``s3_down``: moto's S3 server behind a TCP gate that is cut when the run logs "registered";
  then the gate is restored and a second run (no drift: skips training) follows.
- ``s3_hung``: as ``s3_down`` with moto frozen (SIGSTOP) instead of cut.
- ``kill_after_register``: SIGKILL of ``netsec run`` at "registered vN"; then a second run.
- ``orphans``: SIGKILL of ``netsec run`` (the process alone) while its joblib workers fit.
- ``sigterm``: SIGTERM of ``netsec run`` while tuning.

Prints one row per scenario: seconds from the fault to the exit (``>cap`` when it was still running
at ``--cap``), exit code, stderr lines / tracebacks, and what was left (run status, storage, the
version's decision, orphan lifetime). The machine may be shared: times are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from netsec_testing import UCI_CSV, MlflowServerProcess, MotoServerProcess, NetsecProcess, TcpGate  # noqa: E402

SMALL = [
    "training.candidates=[random_forest, logistic_regression]",
    "training.n_iter=2",
    "training.cv_folds=3",
    "training.n_jobs=2",
]


class NetsecRun(NetsecProcess):
    """``netsec <command>`` (``run`` reads the UCI file) as the test kit's NetsecProcess runs it,
    timed: :meth:`seconds_to_exit` under a cap."""

    def __init__(
        self,
        code: Path,
        home: Path,
        sets: list[str],
        *args: str,
        env: dict | None = None,
        command: str = "run",
    ):
        source = ["--source-path", str(UCI_CSV)] if command == "run" else []
        super().__init__(
            home,
            command,
            *source,
            *args,
            sets=tuple(sets),
            code=code,
            env=env,
            dropped=("NETSEC_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"),
        )
        self.capped = False

    def seconds_to_exit(self, cap: float) -> float | None:
        """Seconds until exit, or None when still running after ``cap`` (then it is killed)."""
        t0 = time.monotonic()
        if self.wait(cap) is None:
            self.capped = True
            return None
        return time.monotonic() - t0

    def error_lines(self, after: float = 0.0) -> list[str]:
        return [line for t, line in self.lines if t >= after and "netsec run:" in line]


def _runs_left(code: Path, tmp: Path, uri: str) -> dict:
    """The row's fields on the MLflow parent runs at ``uri`` the fault left (``_parent_runs``):
    ``mlflow_runs_after`` as they are now, ``after_netsec_reconcile`` once the next run's
    ``netsec reconcile`` went over them (the code under test may predate that command)."""
    runs_after = _parent_runs(uri)
    rec = NetsecRun(code, tmp / "work", [f"registry.tracking_uri={uri}"], command="reconcile")
    rec.seconds_to_exit(300)
    after_reconcile = _parent_runs(uri) if rec.proc.returncode == 0 else "no reconcile command"
    return {"mlflow_runs_after": runs_after, "after_netsec_reconcile": after_reconcile}


def _row(
    name: str,
    seconds: float | None,
    cap: float,
    rc: int | None,
    run: NetsecRun | None,
    after: float = 0.0,
    **left,
) -> dict:
    capped = run is not None and run.capped
    row = {"scenario": name, "exit_code": "none: still running at the cap" if capped else rc}
    if capped or rc != -9:  # -9 otherwise: SIGKILLed by the scenario itself, no time to fail
        row["time_to_fail_s"] = round(seconds, 1) if seconds is not None else f">{cap:.0f}"
    if run is not None:
        late = [line for t, line in run.lines if t >= after]
        row["stderr_lines_after_fault"] = len(late)
        row["tracebacks"] = sum("Traceback (most recent call last)" in line for line in late)
        errors = run.error_lines(after)
        row["error"] = errors[-1][:240] if errors else (late[-1][:240] if late else "")
        if not errors and late:
            row["stderr_tail"] = [line[:160] for line in late[-4:]]
    row.update(left)
    print(json.dumps(row), flush=True)
    return row


def _parent_runs(tracking_uri: str) -> list[tuple[str, str]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exps = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in exps], max_results=100)
    return sorted((r.data.tags.get("netsec.role", "?"), r.info.status) for r in runs)


def _versions(tracking_uri: str, name: str = "netsec-phishing") -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return {
        str(mv.version): (mv.tags or {}).get("netsec.promotion", "<undecided>")
        for mv in client.search_model_versions(f"name = '{name}'")
    }


def _registry_fault(code: Path, tmp: Path, cap: float, sig: int, name: str) -> dict:
    server = MlflowServerProcess(tmp / "mlflow").start()
    try:
        run = NetsecRun(
            code,
            tmp / "work",
            SMALL + [f"registry.tracking_uri={server.uri}"],
            "--force-retrain",
            "--run-id",
            "faulty",
        )
        run.wait_for(r"tuning \d+ candidates")
        t_fault = time.monotonic()
        server.signal(sig)
        seconds = run.seconds_to_exit(cap)
        server.signal(signal.SIGCONT)
        server.stop()
        server.start()
        return _row(
            name, seconds, cap, run.proc.returncode, run, t_fault, **_runs_left(code, tmp, server.uri)
        )
    finally:
        server.stop()


def registry_killed(code: Path, tmp: Path, cap: float) -> dict:
    return _registry_fault(code, tmp, cap, signal.SIGKILL, "registry_killed")


def registry_hung(code: Path, tmp: Path, cap: float) -> dict:
    return _registry_fault(code, tmp, cap, signal.SIGSTOP, "registry_hung")


def _s3_fault(code: Path, tmp: Path, cap: float, mode: str) -> dict:
    import boto3

    moto = MotoServerProcess(tmp / "moto").start()
    gate = TcpGate(moto.port)
    creds = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=moto.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="netsec")
    sets = SMALL + [
        "storage.uri=s3://netsec/runs",
        f"storage.endpoint_url={gate.url}",
        f"registry.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
    ]
    try:
        first = NetsecRun(code, tmp / "work", sets, "--run-id", "first", env=creds)
        first.wait_for(r"registered \S+ v\d+")
        t_fault = time.monotonic()
        if mode == "down":
            gate.close()
        else:
            os.kill(moto.proc.pid, signal.SIGSTOP)
        seconds = first.seconds_to_exit(cap)
        rc1 = first.proc.returncode
        if mode == "down":
            gate.open()
        else:
            os.kill(moto.proc.pid, signal.SIGCONT)
        second = NetsecRun(code, tmp / "work", sets, "--run-id", "second", env=creds)
        second.seconds_to_exit(900)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="netsec").get("Contents", [])]
        first_keys = [k for k in keys if "/first/" in k or k.startswith("runs/first")]
        return _row(
            f"s3_{mode}",
            seconds,
            cap,
            rc1,
            first,
            t_fault,
            second_rc=second.proc.returncode,
            second_says=(second.stderr.splitlines() or [""])[-1][:200],
            first_run_objects_in_storage=len(first_keys),
            first_run_manifest=any(k.endswith("manifest.json") for k in first_keys),
        )
    finally:
        gate.close()
        if moto.proc is not None and moto.proc.poll() is None:
            os.kill(moto.proc.pid, signal.SIGCONT)
        moto.stop()


def s3_down(code: Path, tmp: Path, cap: float) -> dict:
    return _s3_fault(code, tmp, cap, "down")


def s3_hung(code: Path, tmp: Path, cap: float) -> dict:
    return _s3_fault(code, tmp, cap, "hung")


def kill_after_register(code: Path, tmp: Path, cap: float) -> dict:
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    sets = SMALL + [f"registry.tracking_uri={uri}"]
    first = NetsecRun(code, tmp / "work", sets, "--run-id", "killed")
    line = first.wait_for(r"registered \S+ v\d+")
    first.proc.kill()
    first.seconds_to_exit(60)
    killed_version = re.search(r" v(\d+)", line).group(1)
    before = _versions(uri).get(killed_version)
    second = NetsecRun(code, tmp / "work", sets, "--run-id", "next")
    seconds = second.seconds_to_exit(cap)
    after = _versions(uri)
    return _row(
        "kill_after_register",
        None,
        cap,
        -9,
        None,
        killed_version=killed_version,
        decision_after_kill=before,
        next_run_rc=second.proc.returncode,
        next_run_seconds=round(seconds, 1) if seconds else None,
        versions_after_next_run=after,
        runs_after=_parent_runs(uri),
    )


def _orphan_lifetime(pids: list[int], cap: float) -> tuple[float | None, int]:
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    t0 = time.monotonic()
    while time.monotonic() - t0 < cap:
        alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return time.monotonic() - t0, len(procs)
        time.sleep(0.2)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return None, len(procs)


def _signal_during_tuning(code: Path, tmp: Path, cap: float, sig: int, name: str) -> dict:
    import psutil

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    # A longer search so the workers are mid-fit when the signal lands.
    sets = [
        "training.candidates=[random_forest]",
        "training.n_iter=12",
        "training.search=random",
        "training.cv_folds=5",
        "training.n_jobs=2",
        f"registry.tracking_uri={uri}",
    ]
    run = NetsecRun(code, tmp / "work", sets, "--force-retrain", "--run-id", name)
    run.wait_for(r"tuning \d+ candidates")
    deadline = time.monotonic() + 60
    children: list = []
    while time.monotonic() < deadline:
        children = psutil.Process(run.proc.pid).children(recursive=True)
        if len([c for c in children if "loky" in " ".join(c.cmdline())]) >= 2:
            break
        time.sleep(0.2)
    time.sleep(2.0)  # workers busy fitting
    children = psutil.Process(run.proc.pid).children(recursive=True)
    t_fault = time.monotonic()
    run.proc.send_signal(sig)
    seconds = run.seconds_to_exit(cap)
    lifetime, n = _orphan_lifetime([c.pid for c in children], cap)
    left = _runs_left(code, tmp, uri)
    return _row(
        name,
        seconds,
        cap,
        run.proc.returncode,
        run,
        t_fault,
        child_processes=n,
        orphans_gone_after_s=(round(lifetime, 1) if lifetime is not None else f">{cap:.0f}"),
        **left,
    )


def orphans(code: Path, tmp: Path, cap: float) -> dict:
    return _signal_during_tuning(code, tmp, cap, signal.SIGKILL, "orphans")


def sigterm(code: Path, tmp: Path, cap: float) -> dict:
    return _signal_during_tuning(code, tmp, cap, signal.SIGTERM, "sigterm")


SCENARIOS = {
    f.__name__: f
    for f in (registry_killed, registry_hung, s3_down, s3_hung, kill_after_register, orphans, sigterm)
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-s", "--scenario", action="append", choices=list(SCENARIOS))
    p.add_argument("--code", type=Path, default=REPO, help="source tree to run netsec from")
    p.add_argument("--cap", type=float, default=900, help="give up waiting after this many seconds")
    args = p.parse_args()
    rows = []
    for name in args.scenario or list(SCENARIOS):
        with tempfile.TemporaryDirectory(prefix=f"netsec-fault-{name}-") as tmp:
            try:
                rows.append(SCENARIOS[name](args.code.resolve(), Path(tmp), args.cap))
            except Exception as exc:  # one broken scenario must not hide the others' figures
                print(
                    json.dumps({"scenario": name, "bench_error": f"{type(exc).__name__}: {exc}"[:2000]}),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
