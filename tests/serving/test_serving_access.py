"""Access rules (serving/access.py) in process: cross-site browser writes refused on every
state-changing route, CORS closed unless configured, details only for key holders, API docs
from the service's own assets. The browser itself is tested in test_serving_browser.py."""

from __future__ import annotations

import re

import pytest
from serving_helpers import DETAILS, records_of, training_frame


def test_cross_site_browser_writes_are_refused_on_every_state_changing_route(registered, make_client):
    client = make_client(registered.tracking_uri, cors_origins="https://soc.example.org")
    body = {"records": records_of(training_frame(2, seed=1))}
    csv = {"file": ("x.csv", training_frame(2, seed=1).to_csv(index=False))}
    verdict = [{"prediction_id": "0" * 22 + "-0", "label": "threat"}]
    cross = [
        {"Origin": "http://evil.test"},
        {"Origin": "http://evil.test", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://127.0.0.1:9999", "Sec-Fetch-Site": "same-site"},  # another port
        {"Origin": "null"},  # a sandboxed frame or a file:// page
        {"Sec-Fetch-Site": "cross-site"},
    ]
    for headers in cross:
        for path, kw in (("/predict", {"json": body}), ("/predict/csv", {"files": csv})):
            resp = client.post(path, headers=headers, **kw)
            assert resp.status_code == 403, (path, headers, resp.text)
            assert "cross-site request refused" in resp.json()["detail"]
            assert "NETSEC_SERVING_CORS_ORIGINS" in resp.json()["detail"]
        assert client.post("/feedback", json=verdict, headers=headers).status_code == 403
        assert client.post("/train", json={}, headers={**headers, **DETAILS}).status_code == 403
        assert client.get("/model", headers=headers).status_code == 200  # reads are not writes
    metrics = client.get("/metrics").text
    assert f"netsec_cross_site_refused_total {float(len(cross) * 4)}" in metrics
    assert 'route="/predict",status="403"' in metrics  # counted on the route it was refused on

    # The service's own page, a user's own navigation, clients that are not browsers, and an
    # origin the operator listed are let through.
    for headers in (
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": "http://testserver"},  # a browser without Fetch Metadata, same origin
        {},
        {"Origin": "https://soc.example.org", "Sec-Fetch-Site": "cross-site"},
    ):
        assert client.post("/predict", json=body, headers=headers).status_code == 200, headers
    # CORS answers only the listed origin.
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = client.options("/predict", headers={"Origin": "https://soc.example.org", **pre})
    assert ok.headers.get("access-control-allow-origin") == "https://soc.example.org"
    other = client.options("/predict", headers={"Origin": "http://evil.test", **pre})
    assert "access-control-allow-origin" not in other.headers


def test_cors_is_closed_unless_configured_and_never_open_to_every_origin(registered, make_client, tmp_path):
    from pydantic import ValidationError

    from serving.settings import Settings

    client = make_client(registered.tracking_uri)
    pre = {"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/predict", headers=pre).headers
    for bad in ("*", "evil.test", "https://soc.example.org/app", "ftp://x"):
        with pytest.raises(ValidationError, match="origin"):
            Settings(cors_origins=bad, log_dir=str(tmp_path))
    assert Settings(cors_origins="https://a.example, http://b:8080/", log_dir=str(tmp_path)).cors_origins == [
        "https://a.example",
        "http://b:8080",
    ]


def test_details_are_for_key_holders_only(tmp_path, make_client):
    """/ready's load error names the registry (a path, a URI): anonymous clients get that the
    load failed, key holders and the server log get why."""
    client = make_client(f"sqlite:///{tmp_path / 'empty.db'}", ready=False, retry_interval_seconds=0.2)
    ready = client.get("/ready", headers=DETAILS)
    while ready.json()["detail"] == "loading":
        ready = client.get("/ready", headers=DETAILS)
    assert "empty.db" in ready.json()["detail"]
    anonymous = client.get("/ready").json()["detail"]
    assert "empty.db" not in anonymous and "server log" in anonymous
    assert "empty.db" not in client.get("/ready", headers={"X-API-Key": "guess"}).json()["detail"]


def test_api_docs_load_only_the_services_own_assets(registered, make_client):
    client = make_client(registered.tracking_uri)
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)""", html) + re.findall(r"url: ?'([^']+)'", html)
        assert urls, html
        assert not [u for u in urls if u.startswith(("http:", "https:", "//"))], (page, urls)
        for u in urls:
            assert client.get(u).status_code == 200, (page, u)
    assert "fonts.googleapis" not in client.get("/redoc").text
