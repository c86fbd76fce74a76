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
            "tls": ["TRUE", "false", "maybe", "true", "", "0"],
        }
    )
    rows = mixed.check_rows(frame)
    got = {(r.row, r.column): r.reason for r in rows.problems.itertuples()}
    assert got == {
        (1, "proto"): "outside allowed values ['tcp', 'udp']",  # an unseen category
        (1, "bytes"): "below the minimum 0",
        (2, "rate"): "null in a non-nullable column",
        (2, "tls"): "not a boolean (true/false or 1/0)",
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
    assert "must be a JSON number (int column), not text" in reasons
    assert "a boolean, not a number (int column)" in reasons
    assert "must be JSON true or false (bool column), not text" in reasons


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


# --------------------------------------------------------------------------- one typing rule

TYPES = """
name: types
target: {column: label, dtype: int, positive: 1, labels: [0, 1]}
columns:
  i: {dtype: int}
  f: {dtype: float}
  b: {dtype: bool}
  s: {dtype: str}
"""
OK_ROW = {"i": "1", "f": "0.5", "b": "true", "s": "x"}
# (column, CSV cell as written, the same value as JSON text, typed value or the refusal's words).
# Each door reads its own form of the same value; both must agree (the README's contract table).
TYPING = [
    ("i", "1", "1", 1.0),
    ("i", " 1 ", "1", 1.0),
    ("i", "1.0", "1.0", 1.0),
    ("i", "-1e3", "-1e3", -1000.0),
    ("i", "TRUE", "true", "a boolean, not a number"),
    ("i", "false", "false", "a boolean, not a number"),
    ("i", "1.5", "1.5", "not an integer"),
    ("i", str(2**64), str(2**64), "outside int64"),
    ("i", str(-(2**63) - 1), str(-(2**63) - 1), "outside int64"),
    ("i", "9" * 400, "9" * 400, "outside int64"),
    ("i", "1e400", "1e400", "not a finite number"),
    ("f", "0.25", "0.25", 0.25),
    ("f", "3e38", "3e38", 3e38),
    ("f", "1e39", "1e39", "beyond float32"),
    ("f", "-3.5e38", "-3.5e38", "beyond float32"),
    ("f", "TRUE", "true", "a boolean, not a number"),
    ("f", "Infinity", "Infinity", "not a finite number"),
    ("b", "true", "true", True),
    ("b", "FALSE", "false", False),
    ("b", "1", "1", True),
    ("b", "0", "0", False),
    ("b", "2", "2", "not a boolean"),
    ("s", "007", '"007"', "007"),
    ("s", "a b", '"a b"', "a b"),
    ("s", "true", "true", "true"),
    ("s", "12", "12", "12"),
]


@pytest.fixture()
def types_contract(tmp_path):
    path = tmp_path / "types.yaml"
    path.write_text(TYPES)
    return Contract(load_schema(path), max_row_null_share=0.9)


def _csv_door(contract: Contract, column: str, cell: str):
    """What /predict/csv and `netsec predict` do with a cell: the one CSV reader, then the
    contract (text cells)."""
    from netsec_tasks.table_io import read_csv

    row = {**OK_ROW, column: f'"{cell}"' if "," in cell else cell}
    data = ("i,f,b,s\n" + ",".join(row[c] for c in ("i", "f", "b", "s")) + "\n").encode()
    table = read_csv(data, "in.csv", **contract.schema.read_options(echo=True))
    return contract.check_rows(table.frame)


def _json_door(contract: Contract, column: str, value_json: str):
    """What /predict does with a value: json.loads, the records' column rules, the contract
    with strict JSON types."""
    import json

    from serving.inputs import records_frame

    ok = {"i": 1, "f": 0.5, "b": True, "s": "x"}
    record = json.loads(
        "{"
        + ", ".join(f'"{k}": {json.dumps(v)}' for k, v in ok.items() if k != column)
        + f', "{column}": {value_json}'
        + "}"
    )
    return contract.check_rows(records_frame([record], contract), strict_types=True)


@pytest.mark.parametrize(
    "column,cell,value_json,expected", TYPING, ids=[f"{c[0]}:{c[1][:12]}" for c in TYPING]
)
def test_one_typing_rule_for_the_csv_and_json_doors(types_contract, column, cell, value_json, expected):
    for door, check in (
        ("csv", _csv_door(types_contract, column, cell)),
        ("json", _json_door(types_contract, column, value_json)),
    ):
        if isinstance(expected, str) and column != "s":
            assert not check.valid[0], door
            reason = check.problems.loc[check.problems["column"] == column, "reason"].iloc[0]
            assert expected in reason, (door, reason)
        else:
            assert check.valid[0], (door, check.problems.to_dict("records"))
            assert check.typed[column].iloc[0] == expected, door


def test_json_text_for_a_number_is_a_client_bug_a_csv_cell_is_always_text(types_contract):
    check = _json_door(types_contract, "i", '"1"')
    assert not check.valid[0] and "must be a JSON number" in check.problems["reason"].iloc[0]
    check = _json_door(types_contract, "b", '"true"')
    assert not check.valid[0] and "must be JSON true or false" in check.problems["reason"].iloc[0]


def test_values_the_machine_cannot_hold_never_reach_numpy(types_contract):
    """Python ints of any size (a JSON body), uint64 and object columns: refused by value,
    never an OverflowError."""
    frame = pd.DataFrame(
        {
            "i": [10**400, 2**64, -(2**63) - 1, 2**63 - 2048, 5],
            "f": [1.0] * 5,
            "b": [True] * 5,
            "s": ["x"] * 5,
        },
        dtype=object,
    )
    check = types_contract.check_rows(frame, strict_types=True)
    assert check.valid.tolist() == [False, False, False, True, True]
    shown = check.problems["value"].tolist()
    assert shown[0].endswith("(401 characters)") and shown[1] == str(2**64)
    check = types_contract.check_rows(
        pd.DataFrame({"i": np.array([2**64 - 1, 1], dtype=np.uint64), "f": 1.0, "b": True, "s": "x"})
    )
    assert check.valid.tolist() == [False, True]


def test_column_messages_name_the_cause(phishing):
    """An invisible character, another case, an empty header field, an output's name: each
    message says what it is and what to do, never "missing Favicon" alone."""
    frame = make_sample(3, seed=1).rename(columns={"Favicon": "Fav\u200bicon", "port": "Port"})
    with pytest.raises(DataError) as err:
        phishing.check_columns(frame)
    msg = str(err.value)
    assert (
        "found 'Fav\\u200bicon': it holds the invisible character U+200B; retype the name as 'Favicon'" in msg
    )
    assert "found 'Port': names are case-sensitive" in msg
    frame = make_sample(3, seed=1).assign(**{"Unnamed: 31": 1, "status": 1})
    with pytest.raises(DataError) as err:
        phishing.check_columns(frame)
    msg = str(err.value)
    assert "field 32 of the header, which is empty" in msg and "row index" not in msg
    assert "'status' is also the name of an output column" in msg and "rename" in msg
