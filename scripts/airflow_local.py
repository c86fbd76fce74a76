#!/usr/bin/env python
"""Run the Airflow DAG ``netsec_training`` once on the embedded defaults, all state local.

    python scripts/airflow_local.py                       # file source (synthetic sample)
    python scripts/airflow_local.py -c '{"force_retrain": true}'
    python scripts/airflow_local.py -c '{"n_iter": 2, "candidates": ["random_forest"]}'

What it does, from a fresh clone once the package is installed (``scripts/setup.sh``):

1. AIRFLOW_HOME = ``<workdir>/airflow`` (workdir: ``NETSEC_HOME`` or the config's ``workdir``,
   ``.netsec`` by default), SQLite metadata DB, ``airflow db migrate``; ``airflow.cfg`` points at
   this repo's ``dags/`` and ``plugins/`` with the examples off, so ``make airflow-ui``
   (``scripts/airflow_ui.py``: ``airflow standalone`` on loopback) later shows the same runs.
2. ``airflow dags test netsec_training -c <conf>``: the real DAG, task by task, in one process
   (MLflow on SQLite and ``file://`` storage under the workdir, unless the config says otherwise).
3. Prints the outcome, the Production model version with its test metrics, and the commands that
   open the Airflow UI and the MLflow UI on the same local state.

The full Airflow log of the run is kept in ``<workdir>/airflow/last_run.log``; ``--verbose``
streams it. Exit status: 0 when the DAG run succeeded, 1 when it failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "netsec_training"
# Lines of the Airflow log worth showing while the run goes (the rest is in last_run.log).
PROGRESS = re.compile(
    r"\[DAG TEST\] (starting|end)|netsec\.|Marking task as|Task failed|ERROR|"
    r"Traceback|Error:",
    re.IGNORECASE,
)


def _relative(path: Path) -> Path:
    """``path`` relative to the current directory when it lies below it (shorter to copy)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "-c", "--conf", default="{}", help="DAG-run params as JSON, e.g. '{\"force_retrain\": true}'"
    )
    p.add_argument("--home", help="work directory (default: NETSEC_HOME or the config's workdir)")
    p.add_argument("--verbose", action="store_true", help="stream the whole Airflow log")
    p.add_argument("--json", action="store_true", help="print the summary as JSON only")
    args = p.parse_args(argv)
    try:
        conf = json.loads(args.conf)
    except ValueError as exc:
        p.error(f"--conf is not valid JSON: {exc}")
    if not isinstance(conf, dict):
        p.error("--conf must be a JSON object of params")
    args.conf_dict = conf
    return args


def netsec_env(home: str | None) -> tuple[dict[str, str], Any]:
    """Environment for every child process: absolute work dir and config file, Airflow home."""
    if home:
        os.environ["NETSEC_HOME"] = str(Path(home).resolve())
    from netsec_tasks.config import find_config_file, load_config

    cfg = load_config()
    workdir = Path(cfg.workdir)
    airflow_home = workdir / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            # Absolute, so tasks resolve the same work dir whatever their working directory.
            "NETSEC_HOME": str(workdir),
            "NETSEC_CONFIG": str(find_config_file()),
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "GIT_PYTHON_REFRESH": "quiet",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    return env, cfg


def pin_airflow_cfg(path: Path, env: dict[str, str]) -> None:
    """Write our folders into airflow.cfg so `AIRFLOW_HOME=... airflow standalone` finds them."""
    wanted = {
        ("core", "dags_folder"): env["AIRFLOW__CORE__DAGS_FOLDER"],
        ("core", "plugins_folder"): env["AIRFLOW__CORE__PLUGINS_FOLDER"],
        ("core", "load_examples"): "False",
        ("database", "sql_alchemy_conn"): env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
    }
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    section = None
    done = set()
    for i, line in enumerate(lines):
        head = re.match(r"\[(\w+)\]\s*$", line)
        if head:
            section = head.group(1)
            continue
        m = re.match(r"(\w+)\s*=", line)
        if m and (section, m.group(1)) in wanted and (section, m.group(1)) not in done:
            key = (section, m.group(1))
            lines[i] = f"{key[1]} = {wanted[key]}\n"
            done.add(key)
    text = "".join(lines)
    for (section, key), value in wanted.items():
        if (section, key) not in done:  # absent from the file: add it under its section
            text = re.sub(
                rf"^\[{section}\]\s*$", f"[{section}]\n{key} = {value}", text, count=1, flags=re.MULTILINE
            )
    path.write_text(text, encoding="utf-8")


def airflow(args: list[str], env: dict[str, str], log_path: Path, verbose: bool) -> int:
    """Run an airflow CLI command, log to a file, echo the progress lines."""
    exe = Path(sys.executable).parent / "airflow"
    cmd = [str(exe) if exe.exists() else "airflow", *args]
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if verbose or PROGRESS.search(line):
                sys.stderr.write(line)
        return proc.wait()


def new_runs(runs_file: Path, skip: int) -> list[dict]:
    if not runs_file.is_file():
        return []
    lines = runs_file.read_text(encoding="utf-8").splitlines()[skip:]
    return [json.loads(line) for line in lines if line.strip()]


def production_model(cfg: Any) -> dict[str, Any] | None:
    """The Production version (alias) and its test metrics, straight from the MLflow registry."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        return None
    client = MlflowClient(tracking_uri=cfg.registry.tracking_uri, registry_uri=cfg.registry.tracking_uri)
    try:
        mv = client.get_model_version_by_alias(cfg.registry.model_name, cfg.registry.alias)
    except MlflowException:
        return None
    metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
    tags = mv.tags or {}
    return {
        "name": cfg.registry.model_name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        # The operating point serving decides at (None: a version from before thresholds).
        "threshold": tags.get("netsec.threshold"),
        "max_false_positive_rate": tags.get("netsec.max_false_positive_rate"),
        "metrics": {k: round(v, 4) for k, v in sorted(metrics.items()) if k.startswith("test_")},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env, cfg = netsec_env(args.home)
    home = Path(env["AIRFLOW_HOME"])
    log_path = home / "last_run.log"
    log_path.write_text("", encoding="utf-8")
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    say(f"== Airflow home {home} (SQLite), work dir {env['NETSEC_HOME']}")
    t0 = time.monotonic()
    if airflow(["db", "migrate"], env, log_path, args.verbose) != 0:
        say(f"airflow db migrate failed; see {log_path}")
        return 1
    pin_airflow_cfg(home / "airflow.cfg", env)

    runs_file = Path(env["NETSEC_HOME"]) / "dag_runs.jsonl"
    seen = len(new_runs(runs_file, 0))
    say(f"== airflow dags test {DAG_ID} -c '{json.dumps(args.conf_dict)}'")
    rc = airflow(["dags", "test", DAG_ID, "-c", json.dumps(args.conf_dict)], env, log_path, args.verbose)
    runs = new_runs(runs_file, seen)
    run = runs[-1] if runs else None
    summary: dict[str, Any] = {
        "exit_code": rc,
        "seconds": round(time.monotonic() - t0, 1),
        "run_id": run and run["run_id"],
        "state": run and run["state"],
        "failed_tasks": run and run.get("failed_tasks"),
        "outcome": run and run.get("outcome"),
        "production": production_model(cfg),
        "airflow_home": str(home),
        "work_dir": env["NETSEC_HOME"],
        "log": str(log_path),
    }
    ui_env = (
        f"NETSEC_HOME={shlex.quote(env['NETSEC_HOME'])} NETSEC_CONFIG={shlex.quote(env['NETSEC_CONFIG'])}"
    )
    # The commands live in this interpreter's environment (.venv/bin), which need not be on PATH.
    bindir = Path(sys.executable).parent
    python_bin = shlex.quote(str(_relative(bindir / "python")))
    mlflow_bin = shlex.quote(str(_relative(bindir / "mlflow")))
    ui_script = shlex.quote(str(_relative(REPO / "scripts" / "airflow_ui.py")))
    # `airflow standalone` on the same home, listening on 127.0.0.1 only (scripts/airflow_ui.py).
    summary["airflow_ui"] = (
        f"{ui_env} {python_bin} {ui_script}   # or: make airflow-ui; then http://localhost:8080"
    )
    summary["mlflow_ui"] = (
        f"{mlflow_bin} ui --backend-store-uri {cfg.registry.tracking_uri} "
        "--host 127.0.0.1 --port 5000   # then http://localhost:5000"
    )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0 if rc == 0 else 1

    print()
    if rc != 0 or not run or run["state"] != "success":
        print(f"DAG run FAILED (exit {rc}); failed tasks: {summary['failed_tasks']}")
        print(f"full log: {log_path}")
        return 1
    outcome = run.get("outcome") or {}
    print(f"DAG run {run['run_id']}: {run['state']} in {summary['seconds']} s")
    print(f"outcome: {outcome.get('outcome')} - {outcome.get('reason')}")
    prod = summary["production"]
    if prod:
        print(
            f"Production model: {prod['name']} version {prod['version']}"
            + (" (promoted by this run)" if outcome.get("outcome") == "promoted" else "")
        )
        if prod["threshold"]:
            print(
                f"  decides: threat when P(threat) >= {float(prod['threshold']):.4g} "
                f"(false-positive budget {prod['max_false_positive_rate']})"
            )
        for name, value in prod["metrics"].items():
            print(f"  {name:<16} {value}")
    else:
        print("Production model: none")
    from netsec_tasks.records import RunContext

    print(f"run artifacts: {RunContext.create(cfg, run_id=run['run_id']).storage_uri}")
    print()
    print(
        "Airflow UI (same runs; login admin, password in "
        f"{home / 'simple_auth_manager_passwords.json.generated'}):"
    )
    print(f"  {summary['airflow_ui']}")
    print("MLflow UI:")
    print(f"  {summary['mlflow_ui']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
