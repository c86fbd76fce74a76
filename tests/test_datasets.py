"""OpenML download: ARFF parsing/conversion offline, and fetch_dataset against a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pandas as pd
import pytest

from netsec_testing import REPO, free_port
from netsec_tasks.datasets import fetch_dataset, parse_arff, to_schema_frame
from netsec_tasks.errors import DataError, NetsecError, SourceUnavailable
from netsec_tasks.sample import make_sample
from netsec_tasks.schema import load_schema

SCHEMA = load_schema(REPO / "config" / "schema" / "phishing.yaml")


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


def test_arff_to_schema_frame_matches_the_schema():
    frame = make_sample(60, seed=3)
    shuffled = frame[list(reversed(frame.columns))]  # ARFF column order need not be the schema's
    parsed = parse_arff(arff_text(shuffled))
    assert parsed.shape == (60, 31)
    assert parsed.iloc[0, 0] == str(shuffled.iloc[0, 0])  # nominal values arrive as text
    out = to_schema_frame(parsed, SCHEMA, target="Result")
    assert list(out.columns) == SCHEMA.features + ["Result"]
    assert all(str(t) == "int64" for t in out.dtypes)
    pd.testing.assert_frame_equal(out, frame)
    assert set(out["Result"]) == {-1, 1}


def test_arff_missing_values_and_renamed_target():
    frame = make_sample(10, seed=4).rename(columns={"Result": "class", "SFH": "sfh"})
    parsed = parse_arff(arff_text(frame, missing_at=(2, "port")))
    assert parsed.loc[2, "port"] is None
    out = to_schema_frame(parsed, SCHEMA, target="class")  # OpenML's default target attribute
    assert out["port"].isna().sum() == 1 and str(out["port"].dtype) == "Int64"
    assert list(out["SFH"]) == list(frame["sfh"])


def test_arff_errors_name_the_problem():
    with pytest.raises(DataError, match="@data"):
        parse_arff("@relation x\n@attribute a {0,1}\n")
    with pytest.raises(DataError, match="line 5: 1 values, expected 2"):
        parse_arff("@relation x\n@attribute a {0,1}\n@attribute b {0,1}\n@data\n1\n", source="x.arff")
    with pytest.raises(DataError, match="sparse"):
        parse_arff("@relation x\n@attribute a numeric\n@data\n{0 1}\n")
    parsed = parse_arff(arff_text(make_sample(5, seed=1).drop(columns=["Favicon"])))
    with pytest.raises(DataError, match="Favicon") as info:
        to_schema_frame(parsed, SCHEMA, target="Result")
    assert info.value.columns == ["Favicon"]
    bad = make_sample(5, seed=1)
    bad.loc[0, "Redirect"] = -1  # outside {0, 1}
    with pytest.raises(DataError, match="'Redirect' has values \\[-1\\]"):
        to_schema_frame(parse_arff(arff_text(bad)), SCHEMA)


class OpenMLStub:
    """A real HTTP server on loopback serving a data description and its ARFF file."""

    def __init__(self, arff: bytes, md5: str | None = None):
        self.port = free_port()
        base = f"http://127.0.0.1:{self.port}"
        description = {"data_set_description": {
            "id": "4534", "name": "PhishingWebsites", "format": "ARFF",
            "url": f"{base}/data/v1/download/1798106/PhishingWebsites.arff",
            "md5_checksum": md5 if md5 is not None else hashlib.md5(arff).hexdigest(),
            "default_target_attribute": "Result"}}
        routes = {"/api/v1/json/data/4534": json.dumps(description).encode(),
                  "/data/v1/download/1798106/PhishingWebsites.arff": arff}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = routes.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, *args):
                pass

        self.base_url = base
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_fetch_dataset_end_to_end_over_http(tmp_path):
    frame = make_sample(80, seed=9)
    with OpenMLStub(arff_text(frame).encode()) as stub:
        dest = fetch_dataset(tmp_path / "data" / "phishing.csv", base_url=stub.base_url, timeout=10)
    pd.testing.assert_frame_equal(pd.read_csv(dest), frame)
    assert not list((tmp_path / "data").glob(".*tmp*"))


def test_fetch_dataset_rejects_a_corrupt_download(tmp_path):
    with OpenMLStub(arff_text(make_sample(5)).encode(), md5="0" * 32) as stub:
        with pytest.raises(DataError, match="checksum mismatch"):
            fetch_dataset(tmp_path / "x.csv", base_url=stub.base_url, timeout=10)
    assert not (tmp_path / "x.csv").exists()


def test_fetch_dataset_unknown_id_is_a_clear_error(tmp_path):
    with OpenMLStub(b"") as stub:
        with pytest.raises(SourceUnavailable, match="HTTP 404"):
            fetch_dataset(tmp_path / "x.csv", data_id=1, base_url=stub.base_url, timeout=10)


def test_fetch_dataset_without_network_raises_netsec_error(tmp_path):
    port = free_port()  # nothing listens here
    with pytest.raises(NetsecError) as info:
        fetch_dataset(tmp_path / "x.csv", base_url=f"http://127.0.0.1:{port}", timeout=5)
    assert isinstance(info.value, SourceUnavailable)
    assert f"http://127.0.0.1:{port}/api/v1/json/data/4534" in str(info.value)
    assert "source.path" in str(info.value)
    assert not (tmp_path / "x.csv").exists()
