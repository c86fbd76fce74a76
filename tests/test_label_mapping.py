"""The schema's label mapping (which raw labels are the threat class), header-less files, the
derived model name, and the drift report's categorical columns: pure functions, no servers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from netsec_tasks.config import load_config, model_name_for
from netsec_tasks.contract import Contract, ContractError
from netsec_tasks.dataset_schema import DatasetSchema, load_schema
from netsec_tasks.errors import ConfigError, DataError
from netsec_tasks.intrusion_sample import (
    FILE_COLUMNS,
    KNOWN_ATTACKS,
    NOVEL_ATTACKS,
    make_intrusion_sample,
    write_intrusion_sample,
)
from netsec_tasks.table_io import read_csv, read_csv_bytes, read_table
from netsec_tasks.validate import render_report, validate_frame
from netsec_testing import REPO

INTRUSION = load_schema(REPO / "config" / "schema" / "intrusion_demo.yaml")
PHISHING = load_schema(REPO / "config" / "schema" / "phishing.yaml")


def schema_with(target: dict) -> DatasetSchema:
    return DatasetSchema.model_validate(
        {
            "name": "t",
            "target": {"column": "label", "dtype": "str", **target},
            "columns": {"x": {"dtype": "float"}},
        }
    )


def frame_with(labels: list) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(len(labels), dtype=float), "label": labels})


@pytest.fixture()
def vcfg():
    return load_config(REPO / "config" / "pipeline.yaml", environ={}).validation


# --------------------------------------------------------------------------- the mapping


def test_uci_mapping_is_unchanged():
    t = PHISHING.target
    assert t.positive == -1 and t.labels == [-1, 1] and not t.everything_but
    assert (PHISHING.positive_label, PHISHING.negative_label) == (-1, 1)
    labels = pd.Series([-1, 1, 1, -1], name="Result")
    assert PHISHING.is_threat(labels).tolist() == [True, False, False, True]
    # Typed as floats (a column with nulls) or as text (read as passthrough), the same labels.
    assert PHISHING.is_threat(pd.Series([-1.0, 1.0])).tolist() == [True, False]
    assert PHISHING.is_threat(np.array(["-1", "1"], dtype=object)).tolist() == [True, False]
    assert PHISHING.is_threat(-1) is True and PHISHING.is_threat(1) is False
    assert PHISHING.unlisted_labels([1, -1, 0, 0, 2]) == [0, 2]


def test_everything_but_form_makes_every_other_label_a_threat():
    t = INTRUSION.target
    assert t.everything_but and t.benign_labels == ["normal"] and t.vocabulary is None
    labels = pd.Series(["normal", "neptune", "never-seen-attack", None])
    assert INTRUSION.is_threat(labels).tolist() == [False, True, True, False]
    assert INTRUSION.unlisted_labels(labels) == []  # threats by definition, never "unlisted"
    assert (INTRUSION.positive_label, INTRUSION.negative_label) == ("threat", "normal")


def test_positive_list_with_labels_and_with_negative():
    listed = schema_with({"positive": ["neptune", "smurf"], "labels": ["normal", "neptune", "smurf"]})
    assert listed.target.benign_labels == ["normal"]
    assert listed.is_threat(pd.Series(["smurf", "normal", "neptune"])).tolist() == [True, False, True]
    assert listed.unlisted_labels(["satan", "normal", "back", "satan"]) == ["satan", "back"]
    both = schema_with({"positive": ["neptune", "smurf"], "negative": ["normal", "ok"]})
    assert both.target.vocabulary == ["neptune", "smurf", "normal", "ok"]
    assert (both.positive_label, both.negative_label) == ("threat", "benign")
    single = schema_with({"positive": "phish", "labels": ["phish", "legit"]})
    assert (single.positive_label, single.negative_label) == ("phish", "legit")


@pytest.mark.parametrize(
    "target, needle",
    [
        ({"positive": "neptune"}, "no label is benign"),  # the trap
        ({"positive": ["a", "b"], "labels": ["a", "b"]}, "no label is benign"),
        ({"positive": ["neptune", "satan"], "labels": ["normal", "neptune"]}, "'satan' is not in labels"),
        ({"negative": ["normal"], "labels": ["neptune"]}, "target.negative 'normal' is not in labels"),
        ({"positive": ["a"], "negative": ["a", "b"]}, "in both positive and negative"),
        ({}, "target needs positive"),
        ({"negative": []}, "must not be empty"),
        ({"positive": ["a", "a"], "negative": ["b"]}, "more than once"),
    ],
)
def test_mapping_errors_name_the_problem(tmp_path, target, needle):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "target": {"column": "label", "dtype": "str", **target},
                "columns": {"x": {"dtype": "float"}},
            }
        )
    )
    with pytest.raises(ConfigError, match="invalid schema") as err:
        load_schema(path)
    assert needle in str(err.value)


# --------------------------------------------------------------------------- the doors


def test_unlisted_labels_fail_validation_naming_them(vcfg):
    schema = schema_with({"positive": ["neptune", "smurf"], "labels": ["normal", "neptune", "smurf"]})
    labels = ["normal"] * 40 + ["neptune"] * 30 + ["satan"] * 3 + ["back"] * 1
    result = validate_frame(frame_with(labels), schema, vcfg, source="kdd.csv")
    check = result.check("target_labels")
    assert check.status == "fail" and not result.passed
    assert "'satan' x3" in check.details and "'back' x1" in check.details
    assert "negative" in check.details  # says how to write "everything but"
    quarantined = result.invalid[result.invalid["column"] == "label"]
    assert sorted(quarantined["value"].unique()) == ["back", "satan"]
    # The contract's own check (what evaluate uses) names them the same way.
    err = Contract(schema).check_labels(pd.Series(labels)).error(source="kdd.csv")
    assert isinstance(err, ContractError) and "'satan' x3" in str(err) and "kdd.csv" in str(err)


def test_validation_report_counts_rows_per_label_and_new_threat_labels(vcfg):
    frame = make_intrusion_sample(600, seed=3, holdout=True)
    result = validate_frame(frame, INTRUSION, vcfg, source="holdout.csv")
    assert result.passed, result.failure_message()
    counts = frame["label"].value_counts()
    assert {k: v["rows"] for k, v in result.labels.items()} == counts.to_dict()
    assert all(v["threat"] == (k != "normal") for k, v in result.labels.items())
    check = result.check("target_labels")
    assert check.status == "warn" and check.count == int(counts[NOVEL_ATTACKS].sum())
    assert all(a in check.details for a in NOVEL_ATTACKS)
    report = yaml.safe_load(render_report(result))
    assert report["sections"]["data"]["labels"]["normal"] == {"rows": int(counts["normal"]), "threat": False}
    assert "threat" in result.check("target_classes").details


def test_only_threat_labels_is_a_single_class_for_the_binary_model(vcfg):
    frame = frame_with(["neptune"] * 30 + ["smurf"] * 30)
    result = validate_frame(frame, schema_with({"negative": ["normal"]}), vcfg, source="x")
    check = result.check("target_classes")
    assert check.status == "fail" and "threat labels only" in check.details


# --------------------------------------------------------------------------- files


def test_intrusion_sample_is_deterministic_headerless_and_valid(tmp_path, vcfg):
    a = make_intrusion_sample(400, seed=5)
    pd.testing.assert_frame_equal(a, make_intrusion_sample(400, seed=5))
    assert list(a.columns) == FILE_COLUMNS == INTRUSION.file_columns
    assert set(a["label"]) <= {"normal", *KNOWN_ATTACKS}
    holdout = make_intrusion_sample(2000, seed=5, holdout=True)
    assert set(NOVEL_ATTACKS) <= set(holdout["label"])
    path = write_intrusion_sample(tmp_path / "train.csv", 400, seed=5)
    first = path.read_text().splitlines()[0]
    assert "protocol_type" not in first  # no header row
    back = read_table(path, **INTRUSION.read_options())
    pd.testing.assert_frame_equal(back[INTRUSION.features], a[INTRUSION.features], check_dtype=False)
    assert validate_frame(back, INTRUSION, vcfg, source=str(path)).passed


def test_headerless_reading_variants():
    opts = INTRUSION.read_options()
    frame = make_intrusion_sample(5, seed=1)
    with_header = frame.to_csv(index=False).encode()
    without = frame.to_csv(index=False, header=False).encode()
    unlabelled = frame.drop(columns=["label"]).to_csv(index=False, header=False).encode()
    assert list(read_csv_bytes(with_header, **opts).columns) == FILE_COLUMNS  # a header still works
    assert list(read_csv_bytes(without, **opts).columns) == FILE_COLUMNS
    assert len(read_csv_bytes(without, **opts)) == 5  # no row lost
    no_label = read_csv_bytes(unlabelled, **opts)
    assert "label" not in no_label.columns and len(no_label.columns) == len(FILE_COLUMNS) - 1
    assert (read_csv(without, **opts).where(0), read_csv(with_header, **opts).where(0)) == (
        "line 1",
        "line 2",
    )
    short = frame.iloc[:, :5].to_csv(index=False, header=False).encode()
    with pytest.raises(
        DataError, match=r"line 1 has 5 fields.*16 \(all 16 file_columns\); 15 \(without difficulty\)"
    ):
        read_csv_bytes(short, source="short.csv", **opts)


def test_headerless_layouts_are_chosen_by_field_count_and_the_label_is_never_shifted():
    """NSL-KDD's test files come with the label but without the trailing difficulty column:
    that layout keeps the label in its column; a count no layout allows names the layouts."""
    frame = make_intrusion_sample(6, seed=2)
    no_difficulty = frame.drop(columns=["difficulty"]).to_csv(index=False, header=False).encode()
    for labelled in (True, False):
        table = read_csv(no_difficulty, "KDDTest.txt", **INTRUSION.read_options(labelled=labelled))
        assert list(table.frame.columns) == [c for c in FILE_COLUMNS if c != "difficulty"]
        assert table.frame["label"].tolist() == frame["label"].tolist()
    scoring = read_csv(no_difficulty, "KDDTest.txt", **INTRUSION.read_options())
    assert any("without label" in n and "header row" in n for n in scoring.notes)
    features_only = frame[INTRUSION.features].to_csv(index=False, header=False).encode()
    assert list(read_csv(features_only, **INTRUSION.read_options()).frame.columns) == INTRUSION.features
    with pytest.raises(DataError, match=r"16 \(all 16 file_columns\); 15 \(without difficulty\)\. Add"):
        read_csv(features_only, **INTRUSION.read_options(labelled=True))
    ragged = no_difficulty.replace(b"\n", b",x\n", 1)  # line 1 has 16 fields, the rest 15
    with pytest.raises(DataError, match=r"line 2 has 15 fields, line 1 has 16"):
        read_csv(ragged, **INTRUSION.read_options())


def test_file_columns_must_name_known_columns():
    base = {
        "name": "t",
        "target": {"column": "y", "negative": [0]},
        "columns": {"a": {"dtype": "int"}, "b": {"dtype": "int"}},
    }
    with pytest.raises(ValueError, match="not features, the target"):
        DatasetSchema.model_validate({**base, "file_columns": ["a", "b", "y", "zzz"]})
    with pytest.raises(ValueError, match=r"every feature; missing \['b'\]"):
        DatasetSchema.model_validate({**base, "file_columns": ["a", "y"]})


# --------------------------------------------------------------------------- model name


def test_model_name_derives_from_the_data_set_unless_set():
    cfg = load_config(REPO / "config" / "pipeline.yaml", environ={})
    assert cfg.registry.model_name == model_name_for("phishing") == "netsec-phishing"
    other = load_config(REPO / "config" / "pipeline.yaml", environ={"NETSEC_DATASET": "intrusion_demo"})
    assert other.registry.model_name == "netsec-intrusion_demo"
    # A per-run override of the data set derives the name again; an explicit name stays.
    assert cfg.with_overrides({"dataset": "intrusion_demo"}).registry.model_name == "netsec-intrusion_demo"
    named = load_config(
        REPO / "config" / "pipeline.yaml",
        environ={"NETSEC_REGISTRY__MODEL_NAME": "mine", "NETSEC_DATASET": "intrusion_demo"},
    )
    assert named.registry.model_name == "mine"
    assert named.with_overrides({"dataset": "phishing"}).registry.model_name == "mine"


def test_serving_derives_its_model_name_the_same_way(monkeypatch):
    from serving.settings import Settings

    assert Settings().model_name == "netsec-phishing"
    monkeypatch.setenv("NETSEC_DATASET", "intrusion_demo")
    assert Settings().model_name == "netsec-intrusion_demo"
    monkeypatch.setenv("NETSEC_SERVING_MODEL_NAME", "explicit")
    assert Settings().model_name == "explicit"


# --------------------------------------------------------------------------- drift report


def test_drift_report_pools_many_categories_and_calls_out_new_and_vanished_ones():
    from netsec_tasks.drift.report import TOP_K, render_html, top_categories
    from netsec_tasks.drift.stats import detect_drift

    cfg = load_config(REPO / "config" / "pipeline.yaml", environ={})
    schema = DatasetSchema.model_validate(
        {
            "name": "t",
            "target": {"column": "y", "negative": [0]},
            "columns": {"service": {"dtype": "str"}, "bytes": {"dtype": "float"}},
        }
    )
    rng = np.random.default_rng(0)
    services = [f"svc_{i:02d}" for i in range(66)]
    ref = pd.DataFrame({"service": rng.choice(services[:60], 3000), "bytes": rng.normal(0, 1, 3000)})
    cur = pd.DataFrame({"service": rng.choice(services[5:], 3000), "bytes": rng.normal(0, 1, 3000)})
    result = detect_drift(ref, cur, schema, cfg.drift)
    col = result.column("service")
    assert col.new_categories == services[60:]
    assert col.vanished_categories == services[:5]
    labels, r, c, pooled = top_categories(col)
    assert len(labels) == TOP_K + 1 and labels[-1] == f"other ({pooled})" and pooled == 66 - TOP_K
    assert r.sum() == pytest.approx(1.0) and c.sum() == pytest.approx(1.0)
    page = render_html(result, reference="ref", current="cur", reason=result.reason())
    assert "svc_60" in page and "<strong>new:</strong>" in page and "<strong>vanished:</strong>" in page
    assert "6 new" in page and "5 vanished" in page
    # Drifted columns first, then by effect; the YAML lists columns in that order too.
    assert [c.column for c in result.by_effect()][0] == "service"
    assert page.index("<strong>service</strong>") < page.index("<strong>bytes</strong>")
