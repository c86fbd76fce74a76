"""Issue 20's kinds of input faults at the doors that take files or values: the upload route
(which the page uses), JSON records, and the CLI's predict, evaluate, validate, drift and
push-data. The corpus is tests/hostile_inputs.py; the reader's own tests are
tests/test_csv_reader.py, the nightly run's tests/test_ingest.py, the sinks' tests/test_sinks.py.

Never a wrong score (a refused file, or flagged rows while the others score as in the clean
file), never a 500 and never a traceback: a 4xx or exit 2 naming the line, column and value."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from hostile_inputs import BAD_NUMBERS, BROKEN_LAYOUTS, GOOD_LAYOUTS, GOOD_NUMBERS, HUGE_INT, with_cell
from serving_helpers import TARGET, records_of, training_frame

from netsec_tasks.contract import OUTPUT_COLUMNS, Contract
from netsec_testing import REPO, netsec

SCHEMA_PATH = REPO / "config" / "schema" / "phishing.yaml"
CONFIG = str(REPO / "config" / "pipeline.yaml")


@pytest.fixture()
def client(registered, make_client):
    return make_client(registered.tracking_uri, max_rows=1000)


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """A clean labelled file of 30 rows with an id column, as lines (header first)."""
    frame = training_frame(30, seed=90)
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    return frame.to_csv(index=False).splitlines()


def _upload(client, data: bytes, query: str = ""):
    return client.post(f"/predict/csv{query}", files={"file": ("in.csv", data, "text/csv")})


def _probabilities(client, data: bytes, query: str = "?invalid=flag") -> dict[str, float | None]:
    resp = _upload(client, data, query)
    assert resp.status_code == 200, resp.text
    return {r["id"]: r["threat_probability"] for r in resp.json()["records"]}


# --------------------------------------------------------------------------- 1. layouts


@pytest.mark.parametrize("name,build,message", BROKEN_LAYOUTS, ids=[c[0] for c in BROKEN_LAYOUTS])
def test_upload_refuses_a_broken_layout_naming_the_line(client, lines, name, build, message):
    for query in ("", "?invalid=flag"):  # flagging rows never scores a shifted table
        resp = _upload(client, build(lines), query)
        assert resp.status_code == 422, resp.text
        assert __import__("re").search(message, resp.json()["detail"]), resp.json()["detail"]


def test_upload_reads_dialects_as_the_same_table_with_the_same_scores(client, lines):
    clean = _probabilities(client, ("\n".join(lines) + "\n").encode())
    for name, build, _ in GOOD_LAYOUTS:
        resp = _upload(client, build(lines), "?invalid=flag")
        assert resp.status_code == 200, (name, resp.text)
        body = resp.json()
        assert {r["id"]: r["threat_probability"] for r in body["records"]} == clean, name
        if name.startswith(("trailing", "Excel", "UTF-16")):
            assert body["notes"], name  # the reader says what it did


# --------------------------------------------------------------------------- 2. values


@pytest.mark.parametrize("name,cell,reason", BAD_NUMBERS, ids=[c[0] for c in BAD_NUMBERS])
def test_a_value_the_machine_cannot_hold_is_refused_or_flagged_never_scored(
    client, lines, name, cell, reason
):
    data = with_cell(lines, "Favicon", [cell], first_row=3)
    resp = _upload(client, data)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert (body["where"], body["column"]) == ("line 4", "Favicon"), body
    assert body["value"].startswith(cell[:20].strip()) and __import__("re").search(reason, body["detail"])
    flagged = _probabilities(client, data)
    clean = _probabilities(client, ("\n".join(lines) + "\n").encode())
    assert flagged.pop("r2") is None and clean.pop("r2") is not None
    assert flagged == clean  # every other row scores exactly as in the clean file


@pytest.mark.parametrize(
    "raw",
    [HUGE_INT, str(2**64), str(-(2**63) - 1), "1e400", "true", '"1"', "1.5", str(2**63 - 1)],
)
def test_json_door_refuses_the_same_values_with_a_422(client, raw):
    record = records_of(training_frame(2, seed=91))
    body = json.dumps({"records": record}).replace(f'"SFH": {record[1]["SFH"]}', f'"SFH": {raw}', 1)
    resp = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert (resp.json()["row"], resp.json()["column"], resp.json()["where"]) == (1, "SFH", "records[1]")


@pytest.mark.parametrize("text,value", GOOD_NUMBERS)
def test_numbers_as_spreadsheets_write_them_are_read(client, lines, text, value):
    data = with_cell(lines, "Favicon", [text], first_row=1)
    resp = _upload(client, data, "?echo=true")
    assert resp.status_code == 200, resp.text
    assert resp.json()["records"][0]["Favicon"] in (text, value, float(value))


def test_fast_decode_declines_what_the_contract_refuses_near_the_machine_bounds(tmp_path):
    """The msgspec decoder's bounds are the contract's: a value near int64's or float32's edge
    is either decoded alike by both paths or declined by the fast one and judged by the other."""
    from netsec_tasks.dataset_schema import load_schema
    from serving.inputs import InputError, fast_json_input, json_input

    path = tmp_path / "numbers.yaml"
    path.write_text(
        "name: numbers\ntarget: {column: y, dtype: int, positive: 1, labels: [0, 1]}\n"
        "columns:\n  i: {dtype: int}\n  f: {dtype: float}\n"
    )
    contract = Contract(load_schema(path), max_row_null_share=0.5)
    model = SimpleNamespace(features=("i", "f"), numeric_only=True)
    edges = [
        ("i", 2**63 - 1),
        ("i", 2**63 - 1024),
        ("i", 2**63),
        ("i", 2**64),
        ("i", -(2**63)),
        ("i", -(2**63) - 1),
        ("f", 3.4e38),
        ("f", 3.5e38),
        ("f", -1e39),
        ("f", 1e308),
    ]
    for column, value in edges:
        record = {"i": 1, "f": 0.5, column: value}
        body = json.dumps({"records": [record]}).encode()
        fast = fast_json_input(body, contract, model, 10)
        try:
            slow = json_input(body, contract, model, 10)
        except InputError:
            assert fast is None, (column, value)
            continue
        if fast is not None:
            np.testing.assert_array_equal(fast.x, slow.x)


# --------------------------------------------------------------------------- 5. names


def test_a_file_may_use_the_output_names_through_the_schemas_rename(registered, make_client, tmp_path):
    """A label column called ``status`` (the 2021 phishing data set) and an id called
    ``reason``: rename maps them to the schema's names; outputs never overwrite an input."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    schema["rename"] = {"status": TARGET, "reason": "source_reason"}
    schema["id_columns"] = ["id", "source_reason"]
    path = tmp_path / "renamed.yaml"
    path.write_text(yaml.safe_dump(schema))
    client = make_client(registered.tracking_uri, schema_path=str(path))
    rows = training_frame(4, seed=92).rename(columns={TARGET: "status"})
    rows["reason"] = ["=cmd", "b", "c", "d"]
    resp = _upload(client, rows.to_csv(index=False).encode(), "?format=csv")
    assert resp.status_code == 200, resp.text
    out = pd.read_csv(io.StringIO(resp.text))
    assert list(out.columns)[-len(OUTPUT_COLUMNS) - 2 :] == [TARGET, "source_reason", *OUTPUT_COLUMNS]
    assert len(set(out.columns)) == len(out.columns)  # no output overwrote an input
    assert out[TARGET].tolist() == rows["status"].tolist() and set(out["status"]) == {"ok"}
    assert out["source_reason"].tolist() == ["'=cmd", "b", "c", "d"]
    records = records_of(training_frame(2, seed=93))
    records[0]["status"], records[0]["reason"] = -1, "x"
    resp = client.post("/predict", json={"records": records})
    assert resp.status_code == 200, resp.text
    assert (
        resp.json()["predictions"][0][TARGET] == -1 and resp.json()["predictions"][0]["source_reason"] == "x"
    )
    # Without the rename, the advice is the rename, never "list it under id_columns" alone.
    plain = make_client(registered.tracking_uri)
    resp = _upload(plain, training_frame(3, seed=94).assign(status=1).to_csv(index=False).encode())
    assert resp.status_code == 422 and "rename" in resp.json()["detail"]


def test_a_schema_naming_an_output_column_is_told_to_rename_not_sent_in_a_circle(tmp_path):
    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.errors import ConfigError

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    schema["target"]["column"] = "status"
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump(schema))
    with pytest.raises(ConfigError, match=r"rename \(e.g. rename: \{status: source_status\}"):
        load_schema(path)
    schema["target"]["column"] = "label"
    schema["rename"] = {"status": "label"}
    path.write_text(yaml.safe_dump(schema))
    assert load_schema(path).rename == {"status": "label"}


# --------------------------------------------------------------------------- the CLI doors


def _netsec(*args: str, registered, home: Path) -> subprocess.CompletedProcess:
    return netsec(
        "--config",
        CONFIG,
        *args,
        home=home,
        env={"MLFLOW_TRACKING_URI": registered.tracking_uri},
        timeout=300,
    )


def test_cli_predict_and_evaluate_refuse_the_issues_files(registered, lines, tmp_path):
    """The issue's instances: a trailing delimiter on every data line (was: 9 rows scored on
    shifted columns) and a 400-digit integer (was: a traceback, exit 1)."""
    trailing = tmp_path / "trailing.csv"
    trailing.write_bytes(BROKEN_LAYOUTS[0][1](lines))
    huge = tmp_path / "huge.csv"
    huge.write_bytes(with_cell(lines, "Favicon", [HUGE_INT, str(2**64)], first_row=2))
    for args in (
        ("predict", str(trailing), "--invalid", "flag"),
        ("evaluate", str(trailing), "--no-mlflow"),
    ):
        done = _netsec(*args, registered=registered, home=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "line 2 has 33 fields" in done.stderr and "trailing delimiters" in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = _netsec("evaluate", str(huge), "--no-mlflow", registered=registered, home=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert (
        "line 3: column 'Favicon' is 99999" in done.stderr
        and "(400 characters): outside int64" in done.stderr
    )
    assert "line 4: column 'Favicon' is 18446744073709551616: outside int64" in done.stderr
    out = tmp_path / "scored.csv"
    done = _netsec(
        "predict", str(huge), "--out", str(out), "--invalid", "flag", registered=registered, home=tmp_path
    )
    assert done.returncode == 0, done.stderr
    scored = pd.read_csv(out)
    assert scored["status"].tolist()[1:3] == ["invalid", "invalid"]
    assert scored["threat_probability"].notna().sum() == len(scored) - 2


def _main(*args: str) -> int:
    from netsec_tasks.cli import main

    return main(["--config", CONFIG, *args])


def test_cli_validate_drift_and_push_data_refuse_a_broken_layout_and_quarantine_bad_values(
    lines, tmp_path, monkeypatch, capsys, mongo_server
):
    monkeypatch.setenv("NETSEC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETSEC_SOURCE__MONGO__URI", mongo_server.uri)
    monkeypatch.setenv("NETSEC_SOURCE__MONGO__DATABASE", "faults")
    clean = tmp_path / "clean.csv"
    clean.write_text("\n".join(lines) + "\n")
    broken = tmp_path / "broken.csv"
    broken.write_bytes(BROKEN_LAYOUTS[2][1](lines))  # line 4 has a field too few
    for args in (("validate", str(broken)), ("drift", str(clean), str(broken)), ("push-data", str(broken))):
        assert _main(*args) == 2, args
        err = capsys.readouterr().err
        assert "line 4 has 31 fields" in err and "a missing field" in err, err
    values = tmp_path / "values.csv"
    cells = [cell for _, cell, _ in BAD_NUMBERS]
    values.write_bytes(with_cell(lines, "Favicon", cells, first_row=1))
    assert (
        _main(
            "--set", "validation.max_invalid_share=0.5", "validate", str(values), "--out", str(tmp_path / "v")
        )
        == 0
    )
    invalid = pd.read_csv(tmp_path / "v" / "invalid.csv", dtype=str)
    assert invalid["line"].tolist()[: len(cells)] == [f"line {n}" for n in range(2, 2 + len(cells))]
    assert invalid["value"].iloc[1] == str(2**64)
    assert _main("push-data", str(values)) == 0  # an integer beyond 8 bytes goes in as text
    capsys.readouterr()


# --------------------------------------------------------------------------- 3. text at the doors


def test_json_text_that_is_not_unicode_is_refused_and_a_clients_method_is_no_label(client):
    record = records_of(training_frame(1, seed=95))[0]
    body = json.dumps({"records": [{**record, "id": "@@"}]})
    resp = client.post(
        "/predict", content=body.replace("@@", "\\ud800"), headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422 and resp.json()["column"] == "id", resp.text
    assert "lone UTF-16 surrogate" in resp.json()["detail"]
    resp = client.post(
        "/predict", content=body.replace("@@", "\\ud83d\\udea8"), headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 200 and resp.json()["predictions"][0]["id"] == "\U0001f6a8"
    assert client.request("PROPFIND", "/health").status_code == 405
    metrics = client.get("/metrics").text
    assert 'method="other"' in metrics and "PROPFIND" not in metrics
