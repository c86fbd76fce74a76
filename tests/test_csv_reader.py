"""The one CSV reader every door uses (netsec_tasks.table_io): layouts, dialects, encodings,
physical line numbers, machine-safe columns, the schema's rename. The doors' own tests
(tests/serving/test_input_faults.py, test_ingest, test_mongo) feed the same corpus
(hostile_inputs) through the upload route, the CLI and the nightly run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hostile_inputs import BROKEN_LAYOUTS, GOOD_LAYOUTS

import netsec_tasks.table_io.text as table_text
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.errors import DataError
from netsec_tasks.table_io import iter_table_chunks, load_table, read_csv
from netsec_testing import REPO, UCI_CSV

PHISHING = load_schema(REPO / "config" / "schema" / "phishing.yaml")
OPTIONS = PHISHING.read_options(labelled=True)


@pytest.fixture(scope="module")
def uci_lines() -> list[str]:
    return UCI_CSV.read_text().splitlines()[:41]  # the header (quoted names) and 40 rows


@pytest.fixture(scope="module")
def clean(uci_lines) -> pd.DataFrame:
    return read_csv(("\n".join(uci_lines) + "\n").encode(), **OPTIONS).frame


@pytest.mark.parametrize("name,build,message", BROKEN_LAYOUTS, ids=[c[0] for c in BROKEN_LAYOUTS])
def test_a_broken_layout_is_refused_with_its_physical_line(uci_lines, tmp_path, name, build, message):
    data = build(uci_lines)
    with pytest.raises(DataError, match=message):
        read_csv(data, "in.csv", **OPTIONS)
    # The same from disk, whole and chunked (the chunked reader checks the layout first).
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message):
        load_table(path, **OPTIONS)
    with pytest.raises(DataError, match=message):
        list(iter_table_chunks(path, chunk_rows=7, **OPTIONS))


@pytest.mark.parametrize("name,build,first_line", GOOD_LAYOUTS, ids=[c[0] for c in GOOD_LAYOUTS])
def test_dialects_are_read_as_the_same_table(uci_lines, clean, tmp_path, name, build, first_line):
    data = build(uci_lines)
    table = read_csv(data, "in.csv", **OPTIONS)
    pd.testing.assert_frame_equal(table.frame, clean)
    assert table.where(0) == f"line {first_line}"
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    chunks = list(iter_table_chunks(path, chunk_rows=7, **OPTIONS))
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), clean)
    if name.startswith("trailing"):
        assert "the empty last column was dropped" in table.notes[0]


def test_lines_survive_blank_lines_and_records_spanning_lines():
    data = b'id,url,v\n\n1,"http://a/\nb",2\n\n   \n2,x,3\n3,"q""uote",4\n'
    table = read_csv(data, "in.csv")
    assert [table.where(r) for r in range(3)] == ["lines 3-4", "line 7", "line 8"]
    assert table.frame["url"].tolist() == ["http://a/\nb", "x", 'q"uote']
    assert "1 record spans several lines" in table.notes[0] and "lines 3-4" in table.notes[0]


def test_pandas_never_infers_an_index_and_the_header_names_are_checked():
    # One field more on every data line: pandas alone makes the first column the index.
    with pytest.raises(DataError, match="every data line ends in ','"):
        read_csv(b"a,b\n1,2,\n3,4,\n")
    with pytest.raises(DataError, match=r"names column 'a' twice, as fields 1 and 3") as err:
        read_csv(b"a,b,a\n1,2,3\n")
    assert err.value.columns == ["a"]
    with pytest.raises(DataError, match=r"'status' and 'label' after the schema's rename"):
        read_csv(b"status,label\n1,2\n", rename={"status": "label"})
    assert list(read_csv(b"status,x\n1,2\n", rename={"status": "label"}).frame.columns) == ["label", "x"]
    with pytest.raises(DataError, match="line 1 holds values, not column names.*file_columns"):
        read_csv(b"1,-1,1\n-1,1,1\n", required=["a", "b"])


def test_a_large_file_is_scanned_in_blocks_and_switches_to_the_csv_module_for_quotes(tmp_path, monkeypatch):
    monkeypatch.setattr(table_text, "_BLOCK_CHARS", 64)  # many blocks, the quote in a later one
    lines = ["a,b,c"] + [f"{i},{i + 1},{i + 2}" for i in range(60)]
    lines[45] = '45,"4\n6",47'
    lines[50] = "50,51"
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 52 has 2 fields.*a missing field"):
        load_table(path)
    lines[50] = "50,51,52"
    path.write_text("\n".join(lines) + "\n")
    table = load_table(path)
    assert len(table.frame) == 60 and table.where(44) == "lines 46-47" and table.where(59) == "line 62"


@pytest.mark.parametrize(
    "data,message",
    [
        (b"a,b\n" + "é,1\n".encode("latin-1"), r"line 2 is not UTF-8 text \(byte 0xE9"),
        ("a,b\n1,2\n".encode("utf-16-le")[:-1] + b"\x00\x00\x01", "binary|UTF-16"),
        (b"sep=,\n", "no header row after its 'sep=' line"),
    ],
)
def test_text_faults_name_the_cause(data, message):
    with pytest.raises(DataError, match=message):
        read_csv(data, "in.csv")


def test_integers_beyond_int64_are_read_as_text_never_as_python_ints(tmp_path):
    big = str(2**64)
    table = read_csv(f"a,b,c\n1,{big},{2**63}\n2,1,1\n".encode())
    assert table.frame["b"].tolist() == [big, "1"] and table.frame["c"].tolist() == [str(2**63), "1"]
    assert table.frame["a"].dtype == np.int64
    parquet = tmp_path / "u.parquet"
    pd.DataFrame({"u": np.array([2**64 - 1, 1], dtype=np.uint64)}).to_parquet(parquet)
    assert load_table(parquet).frame["u"].tolist() == [str(2**64 - 1), "1"]
    assert load_table(parquet).where(1) == "row 1"
