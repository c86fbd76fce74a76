"""The upload page in headless Chromium, driven over the DevTools protocol (websockets): the page
scores, shows and takes verdicts; a page on another site, in the same browser, cannot write
into the prediction log or the verdicts; /docs renders from the service's own assets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from serving_helpers import MODEL_NAME, TARGET, training_frame, wait_ready_http

from netsec_tasks.contract import OUTPUT_COLUMNS
from netsec_tasks.feedback import JsonlFeedbackStore, verdict_file
from netsec_tasks.prediction_log import read_prediction_log
from netsec_testing import CHROMIUM_FLAGS, Cdp, stop_process
from netsec_testing import chromium as _chromium
from netsec_testing import devtools_url as _devtools_url

pytestmark = pytest.mark.slow  # real servers and processes, ~15-30 s each


EVIL_PAGE = """<!doctype html><title>loading</title><script>
(async () => {
  const target = %s, csv = %s, out = [];
  for (let i = 0; i < 3; i++) {
    const body = new FormData();
    body.append("file", new Blob([csv], {type: "text/csv"}), "traffic.csv");
    try { await fetch(target + "/predict/csv", {method: "POST", mode: "no-cors", body}); out.push("ok"); }
    catch (e) { out.push(String(e)); }
  }
  try {
    await fetch(target + "/feedback", {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify([{prediction_id: %s, label: "benign"}])});
    out.push("ok");
  } catch (e) { out.push(String(e)); }
  document.title = "sent " + out.join(",");
})();
</script>"""


def _serve_dir(directory: Path):
    """A static file server on localhost (another site than 127.0.0.1), in a thread."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def _drive(ws_browser: str, page_url: str, csv_path: Path, shot: Path, evil_url: str) -> dict:
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

        # The API docs, offline: Swagger UI renders from the service's own assets.
        await cdp.call("Page.navigate", url=page_url + "docs")
        result["docs"] = await cdp.wait_for(
            "(document.querySelector('.swagger-ui .info .title') || {}).textContent", 60
        )
        result["docs_assets"] = await cdp.js(
            "performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(u => !u.startsWith(location.origin))"
        )

        # A page of another site, in the same browser: three no-cors CSV uploads and a verdict.
        await cdp.call("Page.navigate", url=evil_url)
        result["evil"] = await cdp.wait_for("document.title.startsWith('sent') && document.title", 60)
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

    # The other site: http://localhost:<port> is another site than http://127.0.0.1:<port>.
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    evil = _serve_dir(evil_dir)
    (evil_dir / "index.html").write_text(
        EVIL_PAGE
        % (json.dumps(server.url), json.dumps(rows.to_csv(index=False)), json.dumps("0" * 22 + "-0"))
    )
    evil_url = f"http://localhost:{evil.server_address[1]}/index.html"

    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    shot = tmp_path / "ui.png"
    try:
        result = asyncio.run(_drive(_devtools_url(proc), f"{server.url}/", csv_path, shot, evil_url))
    finally:
        stop_process(proc, 15)
        evil.shutdown()

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
    # /docs rendered offline, from the service's own copy of Swagger UI (fastapi-offline).
    assert result["docs"].startswith("netsec serving") and result["docs_assets"] == []

    # The other site's requests reached the service (the browser sent them: no-cors hides only
    # the answer) and were refused: nothing of theirs is in the log or the verdicts.
    assert result["evil"] == "sent ok,ok,ok,ok", result["evil"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "netsec_cross_site_refused_total 4.0" in metrics, metrics
    logged = httpx.get(f"{server.url}/metrics").text  # the page's own upload: 40 rows, no more
    deadline = time.monotonic() + 30
    while 'netsec_prediction_log_written_rows_total{model="netsec-phishing"} 40.0' not in logged:
        assert time.monotonic() < deadline, logged
        time.sleep(0.2)
        logged = httpx.get(f"{server.url}/metrics").text
    assert len(read_prediction_log(tmp_path / "predictions")) == 40
    assert len(events) == 3  # the page's verdicts only
    if os.environ.get("SERVING_TEST_ARTIFACTS"):
        dest = Path(os.environ["SERVING_TEST_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / "serving-ui.png")
