"""The upload page in headless Chromium, driven over the DevTools protocol (websockets)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from serving_helpers import MODEL_NAME, TARGET, training_frame, wait_ready_http

from netsec_tasks.contract import OUTPUT_COLUMNS
from netsec_tasks.feedback import JsonlFeedbackStore, verdict_file
from netsec_testing import CHROMIUM_FLAGS, Cdp, stop_process
from netsec_testing import chromium as _chromium
from netsec_testing import devtools_url as _devtools_url

pytestmark = pytest.mark.slow  # real servers and processes, ~15-30 s each


async def _drive(ws_browser: str, page_url: str, csv_path: Path, shot: Path) -> dict:
    import websockets

    port = re.search(r":(\d+)/", ws_browser).group(1)
    targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
    page = next(t for t in targets if t["type"] == "page")
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=50_000_000) as ws:
        cdp = Cdp(ws)
        await cdp.call("Page.enable")
        await cdp.call("Page.navigate", url=page_url)
        await cdp.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
        await cdp.wait_for("document.getElementById('model').textContent.startsWith('model ')")
        root = await cdp.call("DOM.getDocument")
        node = await cdp.call("DOM.querySelector", nodeId=root["root"]["nodeId"], selector="#file")
        await cdp.call("DOM.setFileInputFiles", files=[str(csv_path)], nodeId=node["nodeId"])
        # setFileInputFiles fires 'change', which uploads; submitting covers older builds.
        try:
            await cdp.wait_for("document.querySelectorAll('#table tbody tr').length > 0", 10)
        except TimeoutError:
            await cdp.js("document.getElementById('upload').requestSubmit()")
            await cdp.wait_for("document.querySelectorAll('#table tbody tr').length > 0", 60)
        result = await cdp.js("""(async () => ({
            rows: document.querySelectorAll('#table tbody tr').length,
            threats: document.querySelectorAll('#table tbody tr.threat').length,
            threatBg: getComputedStyle(document.querySelector('#table tbody tr.threat td')).backgroundColor,
            benignBg: getComputedStyle(document.querySelector('#table tbody tr.benign td')).backgroundColor,
            header: [...document.querySelectorAll('#table th')].map(th => th.textContent),
            status: document.getElementById('status').textContent,
            download: document.getElementById('download').href,
            csv: await (await fetch(document.getElementById('download').href)).text(),
            external: [...document.querySelectorAll('script[src],link[href]')]
                .map(e => e.src || e.href).filter(u => !u.startsWith(location.origin)),
        }))()""")
        # An analyst marks the first row threat, then benign (a changed verdict), the second
        # benign twice (the second click stores nothing).
        marks = []
        for row, verdict in ((1, "threat"), (1, "benign"), (2, "benign"), (2, "benign")):
            before = await cdp.js("document.getElementById('status').textContent")
            await cdp.js(
                f"document.querySelector('#table tbody tr:nth-child({row}) button.mark.{verdict}').click()"
            )
            status = await cdp.wait_for(
                f"(s => s !== {json.dumps(before)} && s.startsWith('Verdict') && s)"
                "(document.getElementById('status').textContent)",
                30,
            )
            marks.append(status)
        result["marks"] = marks
        result["pressed"] = await cdp.js("""[...document.querySelectorAll('#table tbody tr')]
            .slice(0, 2).map(tr => [...tr.querySelectorAll('button.mark[aria-pressed=true]')]
            .map(b => b.textContent + ':' + b.dataset.id))""")
        shot_data = await cdp.call("Page.captureScreenshot", format="png")
        shot.write_bytes(base64.b64decode(shot_data["data"]))
        return result


def test_upload_page_renders_results(registered, uvicorn_server, tmp_path):
    exe = _chromium()
    server = uvicorn_server(registered.tracking_uri)
    wait_ready_http(server.url)
    rows = training_frame(40, seed=31)
    # A schema id column with cells a spreadsheet would run: the download must neutralise them.
    ids = [f"row-{i}" for i in range(40)]
    ids[:3] = ['=HYPERLINK("http://evil.example","x")', "@SUM(1+1)", "-1"]
    rows.insert(0, "id", ids)
    csv_path = tmp_path / "traffic.csv"
    rows.to_csv(csv_path, index=False)
    expected = registered.pipeline.predict(rows.drop(columns=[TARGET, "id"]))

    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    shot = tmp_path / "ui.png"
    try:
        result = asyncio.run(_drive(_devtools_url(proc), f"{server.url}/", csv_path, shot))
    finally:
        stop_process(proc, 15)

    assert result["rows"] == 40
    assert result["threats"] == int(expected.sum()) > 0
    assert result["threatBg"] != result["benignBg"]  # threats are highlighted
    assert result["header"][:6] == [
        "#",
        "verdict",
        "analyst",
        "P(threat)",
        "predicted_label",
        "imputed_cells",
    ]
    assert "Scored 40 rows" in result["status"]
    assert result["download"].startswith("blob:")
    csv_lines = result["csv"].strip().splitlines()
    assert len(csv_lines) == 41 and csv_lines[0].endswith(",".join(OUTPUT_COLUMNS))
    assert csv_lines[1].startswith('"\'=HYPERLINK(""http://evil.example"",""x"")"')
    assert csv_lines[2].startswith("'@SUM(1+1),") and csv_lines[3].startswith("-1,")
    assert result["external"] == []  # no CDN: every asset comes from the service
    assert shot.stat().st_size > 10_000
    # The verdicts went to POST /feedback with the rows' prediction ids, and were stored.
    assert [m.split('"')[1] for m in result["marks"]] == ["threat", "benign", "benign", "benign"]
    assert [
        "recorded" in result["marks"][0],
        "changed" in result["marks"][1],
        "recorded" in result["marks"][2],
        "unchanged" in result["marks"][3],
    ] == [True] * 4
    (first,), (second,) = result["pressed"]
    assert first.startswith("benign:") and second.startswith("benign:")
    events = JsonlFeedbackStore(verdict_file(tmp_path / "predictions", MODEL_NAME), MODEL_NAME).events()
    assert [(e["prediction_id"], e["verdict"], e["source"]) for e in events] == [
        (first[7:], "threat", "page"),
        (first[7:], "benign", "page"),
        (second[7:], "benign", "page"),
    ]
    if os.environ.get("SERVING_TEST_ARTIFACTS"):
        dest = Path(os.environ["SERVING_TEST_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / "serving-ui.png")
