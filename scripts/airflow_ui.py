#!/usr/bin/env python
"""``make airflow-ui``: the Airflow UI on the local state ``make run`` left, listening on loopback.

This is ``airflow standalone`` (SQLite, LocalExecutor, the simple auth manager with a generated
admin password, the same Airflow home as ``scripts/airflow_local.py``) with two changes, made
here because ``standalone`` passes no options to the components it starts:

* The API server (UI, REST API, Execution API) binds ``AIRFLOW__API__HOST``, 127.0.0.1 unless
  that variable is set (Airflow's own default is 0.0.0.0). ``make airflow-ui HOST=0.0.0.0``
  exposes the UI and the REST API to every network the machine is on: anyone there can try the
  admin login, and a login can trigger training runs.
* The scheduler and the triggerer run with ``--skip-serve-logs``. Their log servers (ports 8793
  and 8794) always bind every interface (``airflow.utils.serve_logs`` has no host setting), and
  they are not needed here: with the LocalExecutor the tasks write their logs to this Airflow
  home, where the API server reads them.

The port is ``AIRFLOW__API__PORT`` (8080). Stop it with Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
# Extra options per component of `airflow standalone` (the names it gives them).
EXTRA_OPTIONS = {"scheduler": ["--skip-serve-logs"], "triggerer": ["--skip-serve-logs"]}


def local_environment() -> dict[str, str]:
    """The environment of `scripts/airflow_local.py` (same Airflow home, DAGs, plugins, DB), with
    the API server on loopback unless AIRFLOW__API__HOST says otherwise."""
    sys.path.insert(0, str(REPO / "scripts"))
    from airflow_local import netsec_env

    env, _ = netsec_env(None)
    env.setdefault("AIRFLOW__API__HOST", LOOPBACK)
    port = env.setdefault("AIRFLOW__API__PORT", "8080")
    # Tasks reach the Execution API on this machine whatever address the server binds.
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://{LOOPBACK}:{port}/execution/")
    # The LocalExecutor starts `parallelism` worker processes (Airflow's default 32): one per
    # core is what a laptop can run at once anyway.
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(os.cpu_count() or 2))
    # `standalone` starts its components as `airflow ...`: this interpreter's one.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def main() -> int:
    os.environ.update(local_environment())  # before Airflow reads its configuration

    from airflow.cli.commands.standalone_command import StandaloneCommand

    class _WithOptions(dict):
        """``StandaloneCommand.run`` registers each component here before starting it."""

        def __setitem__(self, name: str, sub) -> None:
            sub.command = [*sub.command, *EXTRA_OPTIONS.get(name, [])]
            super().__setitem__(name, sub)

    class LoopbackStandalone(StandaloneCommand):
        def __init__(self) -> None:
            super().__init__()
            self.subcommands = _WithOptions()

    host, port = os.environ["AIRFLOW__API__HOST"], os.environ["AIRFLOW__API__PORT"]
    local = host in (LOOPBACK, "localhost", "::1")
    passwords = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") or (
        Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    )
    print(
        f"Airflow UI: http://localhost:{port} (listening on {host}: "
        f"{'this machine only' if local else 'EVERY NETWORK this machine is on'}); "
        f"login admin, password in {passwords}",
        flush=True,
    )
    LoopbackStandalone().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
