"""The synthetic generator and table reading."""

import numpy as np
import pandas as pd
import pytest

from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.errors import DataError
from netsec_tasks.sample import FEATURES, TARGET, make_sample
from netsec_tasks.table_io import frame_digest, read_csv_bytes, read_table, write_parquet
from netsec_testing import REPO


def test_sample_is_deterministic_and_matches_the_schema():
    a, b = make_sample(2000, seed=3), make_sample(2000, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(make_sample(2000, seed=4))
    schema = load_schema(REPO / "config" / "schema" / "phishing.yaml")
    assert list(a.columns) == schema.features + [schema.target.column]
    for col, spec in schema.columns.items():
        assert set(a[col].unique()) <= set(spec.allowed), col


def test_sample_matches_the_class_balance_and_per_class_frequencies():
    frame = make_sample(40_000, seed=1)
    assert abs((frame[TARGET] == -1).mean() - 0.4431) < 0.01
    for name, values, p_threat, p_legit in FEATURES:
        for label, probs in ((-1, p_threat), (1, p_legit)):
            got = frame.loc[frame[TARGET] == label, name].value_counts(normalize=True)
            for v, p in zip(values, probs):
                assert abs(got.get(v, 0.0) - p) < 0.02, (name, label, v)


def test_sample_features_depend_on_each_other_within_a_class():
    frame = make_sample(20_000, seed=2)
    legit = frame[frame[TARGET] == 1]
    # Same latent group in the generator (and correlated in the real data).
    assert legit["Favicon"].corr(legit["popUpWidnow"]) > 0.3
    # Unrelated columns stay near independent.
    assert abs(legit["having_IP_Address"].corr(legit["URL_Length"])) < 0.05


def test_shifted_sample_moves_frequencies():
    base, shifted = make_sample(20_000, seed=5), make_sample(20_000, seed=5, shift=0.8)
    assert abs(base["SSLfinal_State"].mean() - shifted["SSLfinal_State"].mean()) > 0.3


@pytest.mark.parametrize(
    "payload",
    [
        b"a,b,Result\n1,-1,1\n0,1,-1\n",
        b"\xef\xbb\xbfa,b,Result\n1,-1,1\n0,1,-1\n",  # UTF-8 BOM
        b"a;b;Result\n1;-1;1\n0;1;-1\n",  # semicolons (European Excel)
        b"a\tb\tResult\n1\t-1\t1\n0\t1\t-1\n",
        "a\tb\tResult\r\n1\t-1\t1\r\n0\t1\t-1\r\n".encode("utf-16"),  # Excel's "Unicode text"
        "a,b,Result\n1,-1,1\n0,1,-1\n".encode("utf-16-le"),  # UTF-16 without a BOM
        b"sep=;\na;b;Result\n1;-1;1\n0;1;-1\n",  # Excel's delimiter line
        b"a,b,Result,\n1,-1,1,\n0,1,-1,\n",  # a trailing delimiter on every line, header included
        b"a,b,Result\r1,-1,1\r0,1,-1\r",  # CR line ends
    ],
)
def test_csv_dialects_read_the_same(payload):
    frame = read_csv_bytes(payload, source="x.csv")
    assert list(frame.columns) == ["a", "b", "Result"]
    assert frame["a"].tolist() == [1, 0]


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"\x00\x01\x02garbage\x00", "binary"),
        (b"PAR1\x00\x00", "Parquet"),
        (b"a,b\ncaf\xe9,1\n", "line 2 is not UTF-8 text .*'CSV UTF-8'"),
        (b"justoneword\n1\n", "delimiter"),
        (b"\x1f\x8b\x08\x00rest", "gzip-compressed"),
        (b"PK\x03\x04rest", "xlsx workbook"),
        (b"\xd0\xcf\x11\xe0rest", "Excel 97-2003"),
    ],
)
def test_bad_csv_is_a_named_data_error(payload, message):
    with pytest.raises(DataError, match=message) as err:
        read_csv_bytes(payload, source="upload.csv")
    assert "upload.csv" in str(err.value)


def test_read_table_globs_parquet_and_reports_missing(tmp_path):
    frame = make_sample(50, seed=1)
    write_parquet(frame.iloc[:20], tmp_path / "part-1.parquet")
    frame.iloc[20:].to_csv(tmp_path / "part-2.csv", index=False)
    both = read_table(str(tmp_path / "part-*"))
    assert len(both) == 50
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="no data rows"):
        read_table(tmp_path / "header.csv")


def test_frame_digest_tracks_content():
    a = make_sample(100, seed=1)
    assert frame_digest(a) == frame_digest(a.copy())
    b = a.copy()
    b.iloc[0, 0] = -b.iloc[0, 0]
    assert frame_digest(a) != frame_digest(b)
    assert frame_digest(a) != frame_digest(a.astype({"URL_Length": np.float64}))
