"""Bad input gets a 4xx that names the problem, never a 5xx or a stack trace."""

from __future__ import annotations

import json

import pytest
from serving_helpers import TARGET, records_of, training_frame


@pytest.fixture()
def client(registered, make_client):
    return make_client(registered.tracking_uri, max_rows=100, max_body_bytes=200_000)


def _row():
    return records_of(training_frame(1, seed=4))[0]


def _json_cases():
    r = _row()
    first = next(iter(r))
    missing = {k: v for k, v in r.items() if k != "SFH"}
    return [
        ("missing column", {"records": [r, missing]}, 422, "SFH", 1),
        ("unexpected column", {"records": [{**r, "evil": 1}]}, 422, "evil", 0),
        ("text value", {"records": [r, r, {**r, "port": "abc"}]}, 422, "port", 2),
        ("numeric string", {"records": [{**r, "port": "1"}]}, 422, "port", 0),
        ("boolean", {"records": [{**r, "Iframe": True}]}, 422, "Iframe", 0),
        ("out of domain", {"records": [r, {**r, first: 5}]}, 422, first, 1),
        ("not an integer", {"records": [{**r, "URL_Length": 0.5}]}, 422, "URL_Length", 0),
        ("nested", {"records": [{**r, "SFH": [1]}]}, 422, "SFH", 0),
        ("empty records", {"records": []}, 422, None, None),
        ("no records key", {"rows": [r]}, 422, None, None),
        ("records not a list", {"records": r}, 422, "records", None),
        ("row not an object", {"records": [[1, 2]]}, 422, None, 0),
        ("too many rows", {"records": [r] * 101}, 413, None, None),
    ]


@pytest.mark.parametrize("name,payload,status,column,row", _json_cases(), ids=[c[0] for c in _json_cases()])
def test_bad_json_records(client, name, payload, status, column, row):
    resp = client.post("/predict", json=payload)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["column"] == column and body["row"] == row
    if column:
        assert column in body["detail"]
    assert "Traceback" not in resp.text


@pytest.mark.parametrize("raw", [b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers(client, raw):
    r = _row()
    body = json.dumps({"records": [r]}).replace(f'"SFH": {r["SFH"]}', '"SFH": ' + raw.decode())
    resp = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422 and resp.json()["column"] == "SFH", resp.text


@pytest.mark.parametrize(
    "body,ctype,status",
    [
        (b"", "application/json", 422),
        (b"   ", "application/json", 422),
        (b"{not json", "application/json", 422),
        (b"[1,2,3]", "application/json", 422),
        (b'{"records": [{}]}', "text/plain", 415),
        (b'{"records": [{}]}', "", 415),
        (b"a,b\n1,2\n", "text/csv", 415),
        (b"[" * 100_000, "application/json", 422),
    ],
)
def test_bad_bodies(client, body, ctype, status):
    headers = {"Content-Type": ctype} if ctype else {}
    resp = client.post("/predict", content=body, headers=headers)
    assert resp.status_code == status, resp.text


def test_body_over_limit_is_413(client):
    big = b'{"records": [' + b" " * 300_000 + b"]}"
    assert (
        client.post("/predict", content=big, headers={"Content-Type": "application/json"}).status_code == 413
    )

    def chunks():  # no Content-Length: the cap is enforced while streaming
        for _ in range(30):
            yield b" " * 10_000

    resp = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413


def _csv(frame) -> bytes:
    return frame.to_csv(index=False).encode()


def _broken_csvs():
    good = training_frame(20, seed=8)
    feats = good.drop(columns=[TARGET])
    text_col = feats.astype(object)
    text_col.loc[3, "URL_Length"] = "long"
    domain = feats.astype(object)
    domain.loc[5, "Favicon"] = 7
    return [
        ("wrong columns", _csv(feats.rename(columns={"SFH": "sfh_renamed"})), 422, "SFH"),
        ("extra column", _csv(feats.assign(extra=1)), 422, "extra"),
        ("text in numeric column", _csv(text_col), 422, "URL_Length"),
        ("outside allowed", _csv(domain), 422, "Favicon"),
        ("inf", _csv(feats.assign(port=float("inf"))), 422, "port"),
        ("empty file", b"", 422, None),
        ("header only", _csv(feats.head(0)), 422, None),
        ("whitespace", b"  \n\n ", 422, None),
        ("binary junk", bytes(range(256)) * 40, 422, None),
        ("parquet magic", b"PAR1" + b"\x01" * 100, 422, None),
        ("latin-1 text", "caf\xe9,b\n1,2\n".encode("latin-1"), 422, None),
        ("no delimiter", b"justoneword\nvalue\n", 422, None),
        (
            "ragged rows",
            _csv(feats) + b"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,"
            b"24,25,26,27,28,29,30,31,32,33\n",
            422,
            None,
        ),
        ("duplicate header", _csv(feats.assign(port2=1).rename(columns={"port2": "port"})), 422, "port"),
        ("too many rows", _csv(training_frame(101, seed=9).drop(columns=[TARGET])), 413, None),
        ("huge", b"a" * 300_000, 413, None),
    ]


@pytest.mark.parametrize("name,data,status,column", _broken_csvs(), ids=[c[0] for c in _broken_csvs()])
def test_broken_csv_corpus(client, name, data, status, column):
    resp = client.post("/predict/csv", files={"file": ("broken.csv", data, "text/csv")})
    assert resp.status_code == status, resp.text
    if column:
        assert resp.json()["column"] == column and column in resp.json()["detail"]
    assert "Traceback" not in resp.text


@pytest.mark.parametrize("variant", ["bom", "semicolon", "bom+semicolon", "crlf", "with target"])
def test_valid_csv_variants(client, registered, variant):
    frame = training_frame(15, seed=12)
    if variant != "with target":
        frame = frame.drop(columns=[TARGET])
    sep = ";" if "semicolon" in variant else ","
    text = frame.to_csv(index=False, sep=sep, lineterminator="\r\n" if variant == "crlf" else "\n")
    data = ("\ufeff" if "bom" in variant else "").encode() + text.encode()
    resp = client.post("/predict/csv", files={"file": ("ok.csv", data, "text/csv")})
    assert resp.status_code == 200, resp.text
    expected = registered.pipeline.predict(frame.drop(columns=[TARGET], errors="ignore"))
    assert [r["is_threat"] for r in resp.json()["records"]] == expected.tolist()


def test_csv_endpoint_content_types(client):
    resp = client.post("/predict/csv", content=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"})
    assert resp.status_code == 415
    resp = client.post("/predict/csv", data={"other": "x"}, files={"nofile": ("a.csv", b"a\n1\n")})
    assert resp.status_code == 422 and resp.json()["column"] == "file"
    resp = client.post(
        "/predict/csv",
        content=b"--xx\r\ngarbage",
        headers={"Content-Type": "multipart/form-data; boundary=xx"},
    )
    assert 400 <= resp.status_code < 500


def test_api_key_required_when_configured(registered, make_client):
    client = make_client(registered.tracking_uri, api_key="s3cret")
    body = {"records": records_of(training_frame(2, seed=1))}
    assert client.post("/predict", json=body).status_code == 401
    assert client.post("/predict", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/predict", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.post("/train", headers={"X-API-Key": "nope"}).status_code == 401
    # Read-only endpoints stay open for probes and scrapers.
    for path in ("/health", "/ready", "/model", "/metrics", "/"):
        assert client.get(path).status_code == 200, path


def test_no_model_yet_is_503(tmp_path, make_client):
    client = make_client(f"sqlite:///{tmp_path / 'empty.db'}", ready=False)
    assert client.get("/health").status_code == 200
    resp = client.get("/ready")
    assert resp.status_code == 503 and resp.json()["ready"] is False
    resp = client.post("/predict", json={"records": [{"a": 1}]})
    assert resp.status_code == 503 and "no model loaded" in resp.json()["detail"]
