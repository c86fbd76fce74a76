"""OpenML download: conversion to the schema offline, and fetch_dataset (sklearn's fetch_openml)
against a real loopback HTTP server that speaks the part of OpenML's API fetch_openml uses."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pandas as pd
import pytest
from sklearn.datasets import _openml

from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.datasets import fetch_dataset, to_schema_frame
from netsec_tasks.errors import DataError, NetsecError, SourceUnavailable
from netsec_tasks.sample import make_sample
from netsec_testing import REPO, free_port

SCHEMA = load_schema(REPO / "config" / "schema" / "phishing.yaml")


def as_openml_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as fetch_openml returns OpenML 4534: every column nominal, categories as text."""
    return pd.DataFrame(
        {c: frame[c].map(lambda v: None if pd.isna(v) else str(v)).astype("category") for c in frame.columns}
    )


def arff_text(frame: pd.DataFrame, *, missing_at: tuple[int, str] | None = None) -> str:
    """An ARFF in OpenML 4534's style: every attribute nominal, values as strings like '-1'."""
    lines = ["% UCI Phishing Websites, as OpenML serves it", "@relation 'PhishingWebsites'", ""]
    for col in frame.columns:
        values = ",".join(str(v) for v in sorted(frame[col].unique()))
        name = f"'{col}'" if col == "Result" else col  # quoted names occur too
        lines.append(f"@attribute {name} {{ {values} }}")
    lines += ["", "@data"]
    for i, row in enumerate(frame.itertuples(index=False)):
        values = [str(v) for v in row]
        if missing_at and missing_at[0] == i:
            values[list(frame.columns).index(missing_at[1])] = "?"
        lines.append(",".join(f"'{v}'" if j % 7 == 0 else v for j, v in enumerate(values)))
    return "\n".join(lines) + "\n"


def test_openml_frame_to_schema_frame_matches_the_schema():
    frame = make_sample(60, seed=3)
    shuffled = frame[list(reversed(frame.columns))]  # OpenML's column order need not be the schema's
    nominal = as_openml_frame(shuffled)
    assert nominal.iloc[0, 0] == str(shuffled.iloc[0, 0])  # nominal values arrive as text
    out = to_schema_frame(nominal, SCHEMA, target="Result")
    assert list(out.columns) == SCHEMA.features + ["Result"]
    assert all(str(t) == "int64" for t in out.dtypes)
    pd.testing.assert_frame_equal(out, frame)
    assert set(out["Result"]) == {-1, 1}


def test_missing_values_and_renamed_target():
    frame = make_sample(10, seed=4).rename(columns={"Result": "class", "SFH": "sfh"})
    nominal = as_openml_frame(frame)
    nominal.loc[2, "port"] = None
    out = to_schema_frame(nominal, SCHEMA, target="class")  # OpenML's default target attribute
    assert out["port"].isna().sum() == 1 and str(out["port"].dtype) == "Int64"
    assert list(out["SFH"]) == list(frame["sfh"])


def test_conversion_errors_name_the_problem():
    nominal = as_openml_frame(make_sample(5, seed=1).drop(columns=["Favicon"]))
    with pytest.raises(DataError, match="Favicon") as info:
        to_schema_frame(nominal, SCHEMA, target="Result")
    assert info.value.columns == ["Favicon"]
    bad = make_sample(5, seed=1)
    bad.loc[0, "Redirect"] = -1  # outside {0, 1}
    with pytest.raises(DataError, match="'Redirect' has values \\[-1\\]"):
        to_schema_frame(as_openml_frame(bad), SCHEMA)


class OpenMLStub:
    """A real HTTP server on loopback serving what fetch_openml asks for data id 4534: the data
    description, features and qualities (``/api/v1/json/data/...``) and the ARFF file. Unknown
    data ids get OpenML's HTTP 412, other paths 404; ``requests`` lists the paths asked for."""

    def __init__(self, frame: pd.DataFrame, *, arff: bytes | None = None, md5: str | None = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        arff = arff if arff is not None else arff_text(frame).encode()
        arff_path = "/data/v1/download/1798106/PhishingWebsites.arff"
        description = {
            "data_set_description": {
                "id": "4534",
                "name": "PhishingWebsites",
                "version": "1",
                "status": "active",
                "format": "ARFF",
                "description": "UCI Phishing Websites",
                "url": self.base_url + arff_path,
                "md5_checksum": md5 if md5 is not None else hashlib.md5(arff).hexdigest(),
                "default_target_attribute": "Result",
            }
        }
        names = list(frame.columns)
        feature_list = [
            {
                "index": str(i),
                "name": name,
                "data_type": "nominal",
                "nominal_value": sorted({str(v) for v in frame[name]}),
                "is_target": "true" if name == "Result" else "false",
                "is_ignore": "false",
                "is_row_identifier": "false",
                "number_of_missing_values": "0",
            }
            for i, name in enumerate(names)
        ]
        qualities = {
            "data_qualities": {
                "quality": [
                    {"name": "NumberOfInstances", "value": f"{len(frame)}.0"},
                    {"name": "NumberOfFeatures", "value": f"{len(names)}.0"},
                ]
            }
        }
        routes = {
            "/api/v1/json/data/4534": json.dumps(description).encode(),
            "/api/v1/json/data/features/4534": json.dumps(
                {"data_features": {"feature": feature_list}}
            ).encode(),
            "/api/v1/json/data/qualities/4534": json.dumps(qualities).encode(),
            arff_path: arff,
        }
        no_such_data = json.dumps({"error": {"code": "111", "message": "Unknown dataset"}}).encode()
        self.requests: list[str] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                stub.requests.append(self.path)
                body = routes.get(self.path)
                status = (
                    200 if body is not None else 412 if self.path.startswith("/api/v1/json/data/") else 404
                )
                body = body if body is not None else no_such_data if status == 412 else b"not found"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def point_sklearn_at(monkeypatch, base_url: str) -> None:
    """fetch_openml's API URLs (module constants in sklearn 1.9) on ``base_url``, for one test."""
    for name in ("_DATA_INFO", "_DATA_FEATURES", "_DATA_QUALITIES"):
        monkeypatch.setattr(_openml, name, getattr(_openml, name).replace("https://www.openml.org", base_url))


def fetch(tmp_path, **kw):
    kw.setdefault("timeout", 10)
    return fetch_dataset(tmp_path / "data" / "phishing.csv", data_home=tmp_path / "openml", n_retries=1, **kw)


def test_fetch_dataset_end_to_end_over_http_and_from_the_cache(tmp_path, monkeypatch):
    frame = make_sample(80, seed=9)
    with OpenMLStub(frame) as stub:
        point_sklearn_at(monkeypatch, stub.base_url)
        dest = fetch(tmp_path)
    assert {
        "/api/v1/json/data/4534",
        "/api/v1/json/data/features/4534",
        "/data/v1/download/1798106/PhishingWebsites.arff",
    } <= set(stub.requests)
    pd.testing.assert_frame_equal(pd.read_csv(dest), frame)
    assert not list((tmp_path / "data").glob(".*tmp*"))
    dest.unlink()
    again = fetch(tmp_path)  # the server is gone: everything comes from data_home
    pd.testing.assert_frame_equal(pd.read_csv(again), frame)


def test_fetch_dataset_keeps_missing_values(tmp_path, monkeypatch):
    frame = make_sample(20, seed=5)
    with OpenMLStub(frame, arff=arff_text(frame, missing_at=(3, "port")).encode()) as stub:
        point_sklearn_at(monkeypatch, stub.base_url)
        out = pd.read_csv(fetch(tmp_path))
    assert out["port"].isna().tolist() == [i == 3 for i in range(20)]


def test_fetch_dataset_rejects_a_corrupt_download(tmp_path, monkeypatch):
    with OpenMLStub(make_sample(5), md5="0" * 32) as stub:
        point_sklearn_at(monkeypatch, stub.base_url)
        with pytest.raises(DataError, match="md5 checksum .* does not match") as info:
            fetch(tmp_path)
    assert "OpenML data 4534 is not usable" in str(info.value)
    assert not (tmp_path / "data" / "phishing.csv").exists()


def test_fetch_dataset_rejects_an_arff_that_does_not_parse(tmp_path, monkeypatch):
    frame = make_sample(5)
    arff = arff_text(frame).rstrip("\n").rsplit("\n", 1)[0] + "\n1,-1\n"  # last row: 2 values of 31
    with OpenMLStub(frame, arff=arff.encode()) as stub:
        point_sklearn_at(monkeypatch, stub.base_url)
        with pytest.raises(DataError, match="OpenML data 4534 is not usable") as info:
            fetch(tmp_path)
    assert "1,-1" in str(info.value)  # liac-arff quotes the row it could not read
    assert not (tmp_path / "data" / "phishing.csv").exists()


def test_fetch_dataset_unknown_id_is_a_clear_error(tmp_path, monkeypatch):
    with OpenMLStub(make_sample(5)) as stub:
        point_sklearn_at(monkeypatch, stub.base_url)
        with pytest.raises(DataError, match="OpenML refused data id 999999"):
            fetch(tmp_path, data_id=999999)  # OpenML answers 412 for an id it does not have
        monkeypatch.setattr(_openml, "_DATA_INFO", stub.base_url + "/elsewhere/{}")
        with pytest.raises(SourceUnavailable, match="HTTP 404"):
            fetch(tmp_path, data_id=1)


def test_fetch_dataset_without_network_raises_netsec_error(tmp_path, monkeypatch):
    port = free_port()  # nothing listens here
    point_sklearn_at(monkeypatch, f"http://127.0.0.1:{port}")
    with pytest.raises(NetsecError) as info:
        fetch(tmp_path, timeout=5)
    assert isinstance(info.value, SourceUnavailable)
    assert f"http://127.0.0.1:{port}/api/v1/json/data/4534" in str(info.value)
    assert "source.path" in str(info.value)
    assert not (tmp_path / "data" / "phishing.csv").exists()
