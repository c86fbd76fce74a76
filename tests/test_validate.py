"""Step 2, validation: data-set failures, row quarantine, typing, report, string labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from netsec_tasks.catalog import RunCatalog
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.errors import DataError, ValidationFailed
from netsec_tasks.records import IngestRecord, RunContext
from netsec_tasks.sample import make_sample
from netsec_tasks.storage import file_uri_to_path
from netsec_tasks.table_io import frame_digest, read_table
from netsec_tasks.validate import validate, validate_frame
from netsec_testing import ingest_record

ALL_CHECKS = {
    "columns_missing",
    "columns_unexpected",
    "not_empty",
    "uncoercible_values",
    "out_of_domain_values",
    "null_in_non_nullable",
    "row_null_share",
    "column_null_share",
    "target_missing",
    "target_labels",
    "invalid_share",
    "min_rows",
    "target_classes",
    "duplicate_rows",
}


def make_ingest(
    tmp_path: Path, train: pd.DataFrame, test: pd.DataFrame, batch: pd.DataFrame | None = None
) -> IngestRecord:
    """An IngestRecord over Parquet files written here (independent of ingest.py)."""
    d = tmp_path / "ingest"
    d.mkdir(exist_ok=True)
    batch = pd.concat([train, test], ignore_index=True) if batch is None else batch
    paths = {}
    for name, frame in (("train", train), ("test", test), ("new_batch", batch)):
        paths[name] = d / f"{name}.parquet"
        _storable(frame).to_parquet(paths[name], index=False)
    return ingest_record(
        snapshot_uri=paths["new_batch"].as_uri(),
        rows=len(train) + len(test),
        new_rows=len(batch),
        documents_read=len(batch),
        new_batch_uri=paths["new_batch"].as_uri(),
        train_uri=paths["train"].as_uri(),
        test_uri=paths["test"].as_uri(),
        train_rows=len(train),
        test_rows=len(test),
    )


def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """Mixed-type columns as text, the way a raw snapshot holds them (Parquet needs one type)."""
    frame = frame.copy()
    for col in frame.columns[frame.dtypes == object]:  # noqa: E721 (a dtype, not a type)
        frame[col] = frame[col].map(lambda v: None if v is None or v != v else str(v)).astype(object)
    return frame


@pytest.fixture()
def cfg(make_cfg):
    return make_cfg()


@pytest.fixture()
def run(cfg):
    return RunContext.create(cfg, run_id="test__validate", trigger="test")


def split(frame: pd.DataFrame, test_share: float = 0.2, seed: int = 0):
    idx = np.random.default_rng(seed).permutation(len(frame))
    cut = int(len(frame) * (1 - test_share))
    return (frame.iloc[idx[:cut]].reset_index(drop=True), frame.iloc[idx[cut:]].reset_index(drop=True))


def artifact(cfg, run: RunContext, name: str) -> Path:
    """The local file of a run artifact in (file://) storage."""
    return file_uri_to_path(RunCatalog.of(cfg, run).uri(name))


def report_of(run: RunContext) -> dict:
    return yaml.safe_load(file_uri_to_path(run.step_uri("validate", "validation_report.yaml")).read_text())


def check_status(report: dict, name: str, section: str = "train+test") -> dict:
    return next(c for c in report["sections"][section]["checks"] if c["name"] == name)


# --------------------------------------------------------------------------- happy path


def test_uci_file_passes_and_is_typed(tmp_path, cfg, run, uci_csv):
    train, test = split(pd.read_csv(uci_csv))
    rec = validate(cfg, run, make_ingest(tmp_path, train, test))

    assert rec.passed and rec.rows_invalid == 0 and rec.invalid_share == 0
    assert (rec.train_rows, rec.test_rows) == (len(train), len(test))
    assert rec.rows_checked == len(train) + len(test)
    out_train = pd.read_parquet(rec.train_uri)
    schema = load_schema(cfg.schema_path)
    assert list(out_train.columns) == schema.features + [schema.target.column]
    assert set(out_train.dtypes.astype(str)) == {"int64"}
    pd.testing.assert_frame_equal(out_train, train[out_train.columns])
    assert rec.dataset_digest == frame_digest(out_train)
    assert len(pd.read_parquet(rec.new_batch_uri)) == len(train) + len(test)

    report = report_of(run)
    assert report["passed"] is True and report["failures"] == []
    names = {c["name"] for c in report["sections"]["train+test"]["checks"]}
    assert names >= ALL_CHECKS
    assert all(c["status"] in ("pass", "warn") for c in report["sections"]["train+test"]["checks"])
    dup = check_status(report, "duplicate_rows")
    # The UCI file is about half exact duplicates: counted and reported as a warning.
    assert dup["status"] == "warn"
    assert dup["count"] == int(pd.concat([train, test]).duplicated().sum())


def test_ignored_columns_are_dropped_not_unexpected(tmp_path, cfg, run):
    frame = make_sample(200, seed=1)
    frame.insert(0, "url", [f"http://site{i}.example" for i in range(len(frame))])
    frame["_id"] = range(len(frame))
    train, test = split(frame)
    rec = validate(cfg, run, make_ingest(tmp_path, train, test))
    out = pd.read_parquet(rec.train_uri)
    assert "url" not in out.columns and "_id" not in out.columns
    assert check_status(report_of(run), "columns_unexpected")["status"] == "pass"


# --------------------------------------------------------------------------- row quarantine


def test_bad_rows_are_quarantined_with_split_row_column_and_reason(tmp_path, cfg, run):
    train, test = split(make_sample(400, seed=2))
    schema = load_schema(cfg.schema_path)
    train = train.astype(object)
    test = test.astype(object)
    train.loc[17, "URL_Length"] = "abc"  # not a number
    train.loc[18, "SFH"] = 0.5  # not an integer
    train.loc[19, "Favicon"] = 7  # outside allowed
    train.loc[20, schema.features[:20]] = None  # 20 of 30 features null
    train.loc[21, "Result"] = None  # missing target
    test.loc[3, "port"] = "  "  # blank = null: kept, imputed later
    test.loc[4, "web_traffic"] = 2  # outside allowed, in the test split
    rec = validate(cfg, run, make_ingest(tmp_path, train, test))

    assert rec.passed
    assert rec.rows_invalid == 6
    assert rec.rows_checked == 400
    assert rec.invalid_share == pytest.approx(6 / 400)
    assert rec.train_rows == len(train) - 5 and rec.test_rows == len(test) - 1

    invalid = pd.read_csv(rec.invalid_uri)
    assert list(invalid.columns) == ["split", "row", "column", "value", "reason"]
    got = {(r.split, r.row, r.column) for r in invalid.itertuples() if r.split != "new_batch"}
    assert got == {
        ("train", 17, "URL_Length"),
        ("train", 18, "SFH"),
        ("train", 19, "Favicon"),
        ("train", 20, "*"),
        ("train", 21, "Result"),
        ("test", 4, "web_traffic"),
    }
    reasons = dict(((r.split, r.row), r.reason) for r in invalid.itertuples())
    assert "not a number" in reasons[("train", 17)]
    assert "not an integer" in reasons[("train", 18)]
    assert "allowed" in reasons[("train", 19)]
    assert "null" in reasons[("train", 20)]
    assert "missing target" in reasons[("train", 21)]
    # The same rows are quarantined in the new batch (the whole file for a file source).
    assert (invalid["split"] == "new_batch").sum() == 6

    out_test = pd.read_parquet(rec.test_uri)
    out_train = pd.read_parquet(rec.train_uri)
    # One null in 'port' (test split): float64 with NaN for the imputer, in every split alike.
    assert out_test["port"].dtype == "float64" and out_test["port"].isna().sum() == 1
    assert out_train["port"].dtype == "float64"
    assert out_train["URL_Length"].dtype == "int64"
    assert out_train["Result"].dtype == "int64" and set(out_train["Result"]) == {-1, 1}

    report = report_of(run)
    assert check_status(report, "uncoercible_values")["status"] == "warn"
    assert check_status(report, "uncoercible_values")["count"] == 2
    assert check_status(report, "out_of_domain_values")["count"] == 2
    assert check_status(report, "row_null_share")["count"] == 1
    assert check_status(report, "target_missing")["count"] == 1


@pytest.mark.parametrize("case", ["quarantine", "labels", "single_class"])
def test_batches_give_the_same_result_as_one_pass(tmp_path, cfg, monkeypatch, case):
    """The step validates each split in batches (bounded memory); every output is the same as
    when a split is one batch: record, report, quarantine file, typed splits and their dtypes."""
    import netsec_tasks.validate.step as validate_module

    train, test = split(make_sample(400, seed=2))
    train, test = train.astype(object), test.astype(object)
    train.loc[17, "URL_Length"] = "abc"
    train.loc[150, "Favicon"] = 7
    train.loc[151, "Favicon"] = 7
    train.loc[301, "Result"] = None
    test.loc[70, "port"] = None  # a null in the last batch only: float64 in every batch
    if case == "labels":
        train.loc[[0, 200], "Result"] = 0
    elif case == "single_class":
        train["Result"] = 1
    train = pd.concat([train, train.iloc[:40]], ignore_index=True)  # copies (row 17 too) in a later batch
    ingest = make_ingest(tmp_path, train, test)

    outcomes = {}
    for rows in (10**6, 37):
        monkeypatch.setattr(validate_module, "BATCH_ROWS", rows)
        run = RunContext.create(cfg, run_id=f"test__batches_{rows}")
        try:
            rec = validate(cfg, run, ingest)
            error = None
        except ValidationFailed as exc:
            rec, error = None, str(exc).replace(f"test__batches_{rows}", "RUN")
        report = report_of(run)
        report.pop("generated_at"), report.pop("run_id")
        frames = {}
        if rec is not None:
            frames = {k: pd.read_parquet(getattr(rec, f"{k}_uri")) for k in ("train", "test", "new_batch")}
            rec = rec.model_dump(
                exclude={
                    "report_uri",
                    "invalid_uri",
                    "train_uri",
                    "test_uri",
                    "new_batch_uri",
                    "train_row_hashes_uri",
                }
            )
            frames["hashes"] = pd.read_parquet(RunCatalog.of(cfg, run).uri("train_row_hashes"))
        invalid = pd.read_csv(RunCatalog.of(cfg, run).uri("invalid_rows"))
        outcomes[rows] = (rec, error, report, invalid, frames)

    (rec1, err1, report1, inv1, frames1), (rec2, err2, report2, inv2, frames2) = outcomes.values()
    assert (rec1, err1) == (rec2, err2)
    assert report1 == report2
    pd.testing.assert_frame_equal(inv1, inv2)
    assert frames1.keys() == frames2.keys()
    for k in frames1:
        pd.testing.assert_frame_equal(frames1[k], frames2[k])
    if case == "quarantine":
        assert rec1["rows_invalid"] == 5 and frames1["train"]["port"].dtype == "float64"
        assert check_status(report1, "duplicate_rows")["count"] >= 40
    else:
        assert err1 is not None


def test_null_in_non_nullable_column_is_quarantined(tmp_path, cfg):
    schema = load_schema(cfg.schema_path)
    schema.columns["SSLfinal_State"] = schema.columns["SSLfinal_State"].model_copy(update={"nullable": False})
    frame = make_sample(100, seed=3).astype(object)
    frame.loc[[5, 6], "SSLfinal_State"] = None
    frame.loc[7, "Favicon"] = None  # nullable: kept
    result = validate_frame(frame, schema, cfg.validation, source="mem")
    assert result.passed
    assert result.rows_invalid == 2
    assert set(result.invalid["row"]) == {5, 6}
    assert set(result.invalid["reason"]) == {"null in a non-nullable column"}
    assert result.check("null_in_non_nullable").columns == ["SSLfinal_State"]
    assert len(result.clean) == 98 and result.clean["Favicon"].isna().sum() == 1


# --------------------------------------------------------------------------- data-set failures


def _corrupt(name: str, train: pd.DataFrame, test: pd.DataFrame):
    train, test = train.copy(), test.copy()
    if name == "missing":
        train, test = train.drop(columns=["SFH", "Iframe"]), test.drop(columns=["SFH", "Iframe"])
    elif name == "unexpected":
        train["referrer"], test["referrer"] = 1, 1
    elif name == "case":
        train, test = train.rename(columns={"Result": "result"}), test.rename(columns={"Result": "result"})
    elif name == "empty":
        train, test = train.iloc[0:0], test.iloc[0:0]
    elif name == "single_class":
        train["Result"], test["Result"] = 1, 1
    elif name == "null_column":
        train = train.astype({"Favicon": "float64"})
        train.loc[train.index[: int(len(train) * 0.3)], "Favicon"] = np.nan
    elif name == "labels":
        train.loc[[0, 1, 2], "Result"] = 0
        test = test.astype({"Result": object})
        test.loc[0, "Result"] = "spam"
    elif name == "min_rows":
        train, test = train.iloc[:12], test.iloc[:3]
    elif name == "invalid_share":
        train = train.astype({"Iframe": object})
        train.loc[train.index[:30], "Iframe"] = "abc"
    return train, test


@pytest.mark.parametrize(
    "case, check, needles",
    [
        ("missing", "columns_missing", ["SFH", "Iframe"]),
        ("unexpected", "columns_unexpected", ["referrer"]),
        ("case", "columns_missing+columns_unexpected", ["Result", "case-sensitive", "result"]),
        ("empty", "not_empty", ["no rows"]),
        ("single_class", "target_classes", ["single class (1 x400)"]),
        ("null_column", "column_null_share", ["Favicon (24.0%)"]),
        ("labels", "target_labels", ["Result", "'0' x3", "'spam' x1"]),
        ("min_rows", "min_rows", ["15", "min_rows=20"]),
        ("invalid_share", "invalid_share", ["30 of 400", "max_invalid_share"]),
    ],
)
def test_dataset_failures_raise_after_writing_the_report(tmp_path, cfg, run, case, check, needles):
    train, test = split(make_sample(400, seed=4))
    train, test = _corrupt(case, train, test)
    ingest = make_ingest(tmp_path, train, test, batch=make_sample(50, seed=5))
    with pytest.raises(ValidationFailed) as err:
        validate(cfg, run, ingest)
    message = str(err.value)
    for needle in needles:
        assert needle in message, message
    assert "validation_report.yaml" in message

    report = report_of(run)
    assert report["passed"] is False
    failing = {c["name"] for c in report["sections"]["train+test"]["checks"] if c["status"] == "fail"}
    # Only the problem we made, not a cascade (a renamed column is missing AND unexpected).
    assert failing == set(check.split("+"))
    assert report["sections"]["new_batch"]["passed"] is True
    # Nothing half-written: no typed splits for a failed run, but the quarantine file is there.
    assert not artifact(cfg, run, "validated_train").exists()
    assert artifact(cfg, run, "invalid_rows").exists()


def test_single_class_in_train_split_fails(tmp_path, cfg, run):
    frame = make_sample(300, seed=6)
    train = frame[frame["Result"] == 1].reset_index(drop=True)
    test = frame[frame["Result"] == -1].reset_index(drop=True)
    with pytest.raises(ValidationFailed, match="train split: target Result has a single class"):
        validate(cfg, run, make_ingest(tmp_path, train, test))


def test_empty_or_single_class_new_batch_only_warns(tmp_path, cfg, run):
    train, test = split(make_sample(300, seed=7))
    batch = train[train["Result"] == -1].head(5)
    rec = validate(cfg, run, make_ingest(tmp_path, train, test, batch=batch))
    assert rec.passed
    report = report_of(run)
    assert check_status(report, "target_classes", "new_batch")["status"] == "warn"
    assert check_status(report, "min_rows", "new_batch")["status"] == "warn"

    empty_run = RunContext.create(cfg, run_id="test__empty_batch")
    rec = validate(cfg, empty_run, make_ingest(tmp_path, train, test, batch=train.iloc[0:0]))
    assert rec.passed and len(pd.read_parquet(rec.new_batch_uri)) == 0
    assert check_status(report_of(empty_run), "not_empty", "new_batch")["status"] == "warn"


def test_missing_split_file_names_the_split(tmp_path, cfg, run):
    train, test = split(make_sample(100, seed=8))
    ingest = make_ingest(tmp_path, train, test)
    file_uri_to_path(ingest.test_uri).unlink()
    with pytest.raises(DataError, match="ingest/test.parquet: not found"):
        validate(cfg, run, ingest)


# --------------------------------------------------------------------------- string labels

STRING_SCHEMA = """
name: phish-strings
target: {column: label, dtype: str, positive: phish, labels: [phish, legit]}
ignore: [url]
columns:
  tld: {dtype: str, allowed: [com, net, org, ru]}
  agent: {dtype: str}
  length: {dtype: int, min: 0, max: 500}
  score: {dtype: float, min: 0, max: 1}
  https: {dtype: bool}
"""


def string_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.where(rng.random(n) < 0.4, "phish", "legit")
    return pd.DataFrame(
        {
            "url": [f"http://h{i}.example/" for i in range(n)],
            "tld": rng.choice(["com", "net", "org", "ru"], n),
            "agent": rng.choice(["curl", "firefox", "chrome"], n),
            "length": rng.integers(5, 300, n),
            "score": rng.random(n).round(3),
            "https": rng.choice(["TRUE", "false", "true", "0"], n),
            "label": label,
        }
    )


def test_string_labels_and_string_features(tmp_path, make_cfg):
    (tmp_path / "cfg" / "schema").mkdir(parents=True)
    schema_path = tmp_path / "cfg" / "schema" / "phish-strings.yaml"
    schema_path.write_text(STRING_SCHEMA)
    schema = load_schema(schema_path)
    cfg = make_cfg()
    run = RunContext.create(cfg, run_id="test__strings")
    frame = string_frame(300, seed=9).astype(object)
    frame.loc[10, "tld"] = "xyz"  # outside allowed
    frame.loc[11, "length"] = "long"  # not a number
    frame.loc[12, "score"] = 1.5  # above max
    frame.loc[13, "https"] = "maybe"  # not a boolean
    frame.loc[14, "agent"] = None  # nullable str: kept
    train, test = split(frame)
    rec = validate(cfg, run, make_ingest(tmp_path, train, test), schema=schema)

    assert rec.passed and rec.rows_invalid == 4
    out = pd.concat([pd.read_parquet(rec.train_uri), pd.read_parquet(rec.test_uri)])
    assert list(out.columns) == ["tld", "agent", "length", "score", "https", "label"]
    assert pd.api.types.is_string_dtype(out["tld"]) and pd.api.types.is_string_dtype(out["label"])
    assert set(out["label"]) == {"phish", "legit"}
    assert out["length"].dtype == "int64" and out["score"].dtype == "float64"
    assert out["https"].dtype == bool
    assert out["agent"].isna().sum() == 1
    assert "xyz" not in set(out["tld"])
    invalid = pd.read_csv(rec.invalid_uri)
    tt = invalid[invalid["split"] != "new_batch"]
    assert set(tt["column"]) == {"tld", "length", "score", "https"}

    # A label outside the schema's labels fails the data set and names the value.
    bad = string_frame(100, seed=10)
    bad.loc[[1, 2], "label"] = "spam"
    result = validate_frame(bad, schema, cfg.validation, source="bad.csv")
    assert not result.passed
    assert "'spam' x2" in result.check("target_labels").details
    one_class = string_frame(100, seed=11).assign(label="legit")
    result = validate_frame(one_class, schema, cfg.validation, source="one.csv")
    assert "single class ('legit'" in result.check("target_classes").details


# --------------------------------------------------------------------------- pure core, CLI use


def test_validate_frame_reads_a_csv_like_the_cli(tmp_path, cfg, sample_csv):
    schema = load_schema(cfg.schema_path)
    frame = read_table(sample_csv)
    result = validate_frame(frame, schema, cfg.validation, source=str(sample_csv))
    assert result.passed and result.rows_checked == 1500 and result.rows_invalid == 0
    assert {c.name for c in result.checks} >= ALL_CHECKS
    assert result.invalid.empty and list(result.invalid.columns) == [
        "split",
        "row",
        "column",
        "value",
        "reason",
    ]

    text = sample_csv.read_text().splitlines()
    header, rows = text[0], text[1:]
    rows[4] = "x" + rows[4]  # first field becomes e.g. "x-1"
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join([header] + rows) + "\n")
    result = validate_frame(read_table(broken), schema, cfg.validation, source=str(broken))
    assert result.passed and result.rows_invalid == 1
    assert result.invalid.iloc[0]["row"] == 4 and result.invalid.iloc[0]["column"] == schema.features[0]


def test_unlabelled_frame_allowed_when_target_not_required(cfg):
    schema = load_schema(cfg.schema_path)
    frame = make_sample(60, seed=12).drop(columns=["Result"])
    assert not validate_frame(frame, schema, cfg.validation).passed
    result = validate_frame(frame, schema, cfg.validation, require_target=False)
    assert result.passed and "Result" not in result.clean.columns


def test_write_report_into_a_directory_for_the_cli(tmp_path, cfg):
    from netsec_tasks.validate import write_report

    schema = load_schema(cfg.schema_path)
    frame = make_sample(80, seed=13).astype(object)
    frame.loc[2, "SFH"] = "zzz"
    result = validate_frame(frame, schema, cfg.validation, source="upload.csv")
    report_path = write_report(result, tmp_path / "out")
    assert report_path == tmp_path / "out" / "validation_report.yaml"
    report = yaml.safe_load(report_path.read_text())
    assert report["passed"] is True
    assert {c["name"] for c in report["sections"]["data"]["checks"]} >= ALL_CHECKS
    invalid = pd.read_csv(tmp_path / "out" / "invalid.csv")
    assert invalid[["row", "column"]].values.tolist() == [[2, "SFH"]]
    assert result.check("uncoercible_values").get("status") == "warn"
