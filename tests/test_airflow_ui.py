"""`make airflow-ui` as an operator uses it (slow): ``scripts/airflow_ui.py`` (``airflow
standalone`` on SQLite) on a fresh home; every server it starts listens on loopback only; the
trigger form in headless Chromium offers the candidates as a multi-select of the known names and
Source as "configured default (file)"; a run triggered from the form carries the chosen names."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from netsec_testing import (
    CHROMIUM_FLAGS,
    REPO,
    Cdp,
    chromium,
    devtools_url,
    free_port,
    stop_process,
    stop_session,
)

pytestmark = [pytest.mark.slow, pytest.mark.airflow]

BIN = Path(sys.executable).parent
PASSWORD = "operator-ui-password"
DAG_ID = "netsec_training"
LOOPBACK = {"127.0.0.1", "::1"}


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory):
    """scripts/airflow_ui.py (what `make airflow-ui` runs) with its defaults: no host given."""
    root = tmp_path_factory.mktemp("airflow-ui")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NETSEC_", "AIRFLOW", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))
    }
    env.update(
        {
            "NETSEC_HOME": str(root / "work"),
            "NETSEC_CONFIG": str(REPO / "config" / "pipeline.yaml"),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
            "GIT_PYTHON_REFRESH": "quiet",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    (root / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
    log_path = root / "airflow.log"
    with open(log_path, "wb") as log:  # the launcher keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "airflow_ui.py")],
            env=env,
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        token = None
        while True:
            assert proc.poll() is None, log_path.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-4000:]
            text = log_path.read_text(errors="replace")
            try:
                if token is None and "Airflow is ready" in text:
                    token = httpx.post(
                        f"{base}/auth/token", timeout=10, json={"username": "admin", "password": PASSWORD}
                    ).json()["access_token"]
                if (
                    token
                    and httpx.get(
                        f"{base}/api/v2/dags/{DAG_ID}",
                        timeout=10,
                        headers={"Authorization": f"Bearer {token}"},
                    ).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            time.sleep(2)
        yield {"proc": proc, "base": base, "port": port, "token": token, "log": log_path}
    finally:
        stop_session(proc)


def _listening(pid: int) -> tuple[list[tuple[str, str, int]], list[str]]:
    """(listening sockets (process, address, port), command lines) of ``pid`` and its
    descendants."""
    import psutil

    top = psutil.Process(pid)
    sockets, commands = [], []
    for p in [top, *top.children(recursive=True)]:
        try:
            cmd = " ".join(p.cmdline())
            conns = p.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        commands.append(cmd)
        sockets += [(cmd[:80], c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return sockets, commands


def test_the_local_servers_listen_on_loopback_only(airflow_ui):
    """API server on 127.0.0.1 (Airflow's default is 0.0.0.0), and no log server on 8793/8794
    (Airflow binds those to every interface, whatever the settings)."""
    sockets, commands = _listening(airflow_ui["proc"].pid)
    # The components that would listen are all running.
    for part in ("scheduler", "triggerer", "dag-processor", "api_server"):
        assert any(part in c or part.replace("_", "-") in c for c in commands), (part, commands)
    assert airflow_ui["port"] in {port for _, _, port in sockets}, sockets
    exposed = [s for s in sockets if s[1] not in LOOPBACK]
    assert exposed == [], f"listening beyond loopback: {exposed}"
    assert "listening on 127.0.0.1: this machine only" in airflow_ui["log"].read_text()


async def _trigger_form(ws_url: str, base: str, token: str) -> dict:
    import websockets

    port = re.search(r":(\d+)/", ws_url).group(1)
    page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page")
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=50_000_000) as ws:
        cdp = Cdp(ws)
        await cdp.call("Page.enable")
        await cdp.call("Network.enable")
        # What the login page sets after a successful sign-in (Airflow's `_token` cookie).
        await cdp.call("Network.setCookie", name="_token", value=token, url=base + "/")
        await cdp.call("Page.navigate", url=f"{base}/dags/{DAG_ID}")
        await cdp.wait_for(
            "[...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Trigger')", 120
        )
        await cdp.js(
            "[...document.querySelectorAll('button')]"
            ".find(b => b.innerText.trim() === 'Trigger').click(), true"
        )
        await cdp.wait_for("!!document.querySelector('#element_candidates input')", 60)
        seen = {
            "source": await cdp.js("document.querySelector('#element_source').innerText"),
            "text": await cdp.js("document.body.innerText"),
        }
        # Open the candidates' menu as a keyboard user does, read the options, pick one.
        arrow = (
            "document.querySelector('#element_candidates input').dispatchEvent(new KeyboardEvent("
            "'keydown', {key: 'ArrowDown', keyCode: 40, bubbles: true}))"
        )
        await cdp.js("document.querySelector('#element_candidates input').focus(), true")
        await cdp.js(arrow)
        options = (
            "[...document.querySelectorAll('#element_candidates [role=option], "
            "[id^=react-select][id*=-option-]')].map(o => o.innerText)"
        )
        seen["options"] = await cdp.wait_for(f"(o => o.length && o)({options})", 30)
        await cdp.js(
            "[...document.querySelectorAll('[id^=react-select][id*=-option-]')]"
            ".find(o => o.innerText === 'decision_tree').click(), true"
        )
        await cdp.wait_for(
            "document.querySelector('#element_candidates').innerText.includes('decision_tree')", 30
        )
        # Leave the DAG paused: the run is created (and stays queued), no training starts.
        await cdp.js(
            "(b => b && b.checked && b.click())([...document.querySelectorAll("
            "'input[type=checkbox]')].find(i => (i.closest('label') || {}).innerText"
            "?.includes('Unpause'))), true"
        )
        await cdp.js(
            "[...document.querySelectorAll('button')].filter(b => b.innerText.trim() "
            "=== 'Trigger').pop().click(), true"
        )
        return seen


def test_trigger_form_offers_candidates_as_a_multi_select(airflow_ui, tmp_path):
    exe = chromium()
    proc = subprocess.Popen(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        seen = asyncio.run(_trigger_form(devtools_url(proc), airflow_ui["base"], airflow_ui["token"]))
    finally:
        stop_process(proc)
    from netsec_tasks.config import TrainingConfig

    known = TrainingConfig.model_json_schema()["properties"]["candidates"]["items"]["enum"]
    # The menu lists exactly the known names, in the config's order (other menus on the page
    # have other entries, so take the names' run at the end).
    assert seen["options"][-len(known) :] == known, seen["options"]
    assert seen["source"].strip() == "configured default (file)"
    assert "Empty: the configured training.candidates (" in seen["text"]
    assert "null" not in seen["source"]
    # The run the form created carries the chosen name (the DAG stays paused: it waits queued).
    headers = {"Authorization": f"Bearer {airflow_ui['token']}"}
    deadline = time.monotonic() + 60
    while True:
        runs = httpx.get(
            f"{airflow_ui['base']}/api/v2/dags/{DAG_ID}/dagRuns", headers=headers, timeout=10
        ).json()["dag_runs"]
        manual = [r for r in runs if r["run_type"] == "manual"]
        if manual or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [r["conf"]["candidates"] for r in manual] == [["decision_tree"]], runs
    dag = httpx.get(f"{airflow_ui['base']}/api/v2/dags/{DAG_ID}", headers=headers, timeout=10).json()
    assert dag["is_paused"] is True
