"""The input contract's pure core: schema keys, row checks, column rules, safe CSV."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from netsec_tasks.contract import Contract, csv_chunks, looks_like_index, neutralise
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.errors import ConfigError, DataError
from netsec_tasks.sample import make_sample

MIXED = """
name: mixed
version: 3
target: {column: label, dtype: str, positive: bad, labels: [bad, good]}
ignore: [url]
id_columns: [flow_id]
columns:
  proto: {dtype: str, allowed: [tcp, udp]}
  bytes: {dtype: int, min: 0, max: 1000000}
  rate: {dtype: float, min: 0, max: 1, nullable: false}
  tls: {dtype: bool}
"""


@pytest.fixture()
def mixed(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    return Contract(load_schema(path), max_row_null_share=0.5)


@pytest.fixture()
def phishing(make_cfg):
    return Contract.from_config(make_cfg())


@pytest.mark.parametrize(
    "extra,needle",
    [
        ("id_columns: [bytes]", "must not name a feature"),
        ("id_columns: [label]", "must not name a feature or the target"),
        ("id_columns: [url]", "in both ignore and id_columns"),
        ("id_columns: [a, a]", "more than once"),
        ("id_columns: [status]", "reserved for the scoring outputs"),
        ("version: 1.10", "version must be text"),
    ],
)
def test_schema_keys_are_validated(tmp_path, extra, needle):
    text = MIXED.replace("id_columns: [flow_id]\n", "").replace("version: 3\n", "")
    path = tmp_path / "bad.yaml"
    path.write_text(text + extra + "\n")
    with pytest.raises(ConfigError, match=needle):
        load_schema(path)


def test_version_and_passthrough(mixed):
    assert mixed.version == "3"
    assert mixed.passthrough == ["flow_id", "url", "label"]


def test_mixed_types_nulls_and_domains(mixed):
    frame = pd.DataFrame(
        {
            "flow_id": ["a", "b", "c", "d", "e", "f"],
            "proto": ["tcp", "icmp", None, "udp", "", "tcp"],
            "bytes": ["10", "-5", "7", "1.5", "", "20"],
            "rate": [0.5, 0.1, np.nan, 0.2, None, 0.3],
            "tls": ["yes", "no", "maybe", "true", "", "0"],
        }
    )
    rows = mixed.check_rows(frame)
    got = {(r.row, r.column): r.reason for r in rows.problems.itertuples()}
    assert got == {
        (1, "proto"): "outside allowed values ['tcp', 'udp']",  # an unseen category
        (1, "bytes"): "below the minimum 0",
        (2, "rate"): "null in a non-nullable column",
        (2, "tls"): "not a boolean (true/false, yes/no, 1/0)",
        (3, "bytes"): "not an integer",
        (4, "*"): "every feature is blank",
        (4, "rate"): "null in a non-nullable column",
    }
    assert rows.valid.tolist() == [True, False, False, False, False, True]
    assert rows.null_cells.tolist() == [0, 0, 2, 0, 4, 0]
    x = mixed.model_input(rows, np.flatnonzero(rows.valid))
    assert x["bytes"].dtype == "float64" and x["proto"].tolist() == ["tcp", "tcp"]
    assert x["tls"].tolist() == [True, False]


def test_strict_types_refuse_what_text_would_allow(mixed):
    frame = pd.DataFrame(
        {"proto": ["tcp", 5], "bytes": ["10", True], "rate": [0.5, "0.5"], "tls": [True, "yes"]}, dtype=object
    )
    rows = mixed.check_rows(frame, strict_types=True)
    assert rows.valid.tolist() == [False, False]
    reasons = set(rows.problems["reason"])
    assert "must be a number (int column)" in reasons and "must be true or false (bool column)" in reasons


def test_unknown_columns_message_says_how_to_allow_and_spots_an_index(phishing):
    frame = make_sample(20, seed=1)
    frame.insert(0, "Unnamed: 0", range(20))
    frame["referrer"] = "x"
    with pytest.raises(DataError) as err:
        phishing.check_columns(frame)
    msg = str(err.value)
    assert "'Unnamed: 0'" in msg and "'referrer'" in msg and "id_columns" in msg
    assert "row index" in msg and "index=False" in msg
    assert looks_like_index("idx", pd.Series(np.arange(1, 21)))
    assert not looks_like_index("SFH", pd.Series([-1, 1, 1]))
    with pytest.raises(DataError, match="missing columns.*SFH"):
        phishing.check_columns(make_sample(5, seed=1).drop(columns="SFH"))


def test_refusal_names_row_column_value_and_what_is_allowed(phishing):
    frame = make_sample(4, seed=2).drop(columns="Result").astype(object)
    frame.loc[2, "having_IP_Address"] = 5
    err = phishing.check_rows(frame).refusal(lambda r: f"line {r + 2}", source="in.csv")
    assert isinstance(err, DataError) and err.exit_code == 2
    assert "in.csv: 1 row breaks" in str(err)
    assert "line 4: column 'having_IP_Address' is 5" in str(err) and "one of [-1, 1]" in str(err)
    assert err.first["row"] == 2 and err.first["value"] == "5"


@pytest.mark.parametrize(
    "cell,out",
    [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-cmd", "'-cmd"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-1", "-1"),
        ("+3.5", "+3.5"),
        ("-1e3", "-1e3"),
        ("plain", "plain"),
        (-1, -1),
        (None, None),
    ],
)
def test_neutralise(cell, out):
    assert neutralise(cell) == out


def test_csv_chunks_stream_in_parts_and_keep_numbers():
    frame = pd.DataFrame({"id": ["=x", "-1", "ok"] * 4, "v": [-1, 0, 1] * 4})
    chunks = list(csv_chunks(frame, chunk_rows=5))
    assert len(chunks) == 3
    back = pd.read_csv(io.BytesIO(b"".join(chunks)), dtype={"id": str})
    assert back["id"].tolist()[:3] == ["'=x", "-1", "ok"]
    assert back["v"].tolist() == frame["v"].tolist()


def test_validate_frame_drops_id_columns_and_hints_at_an_index(phishing, make_cfg):
    from netsec_tasks.validate import validate_frame

    cfg = make_cfg()
    frame = make_sample(50, seed=3)
    frame.insert(0, "id", range(50))
    result = validate_frame(frame, phishing.schema, cfg.validation)
    assert result.passed and "id" not in result.clean.columns
    indexed = make_sample(50, seed=3).reset_index()
    result = validate_frame(indexed, phishing.schema, cfg.validation)
    assert "row index" in result.check("columns_unexpected").details
