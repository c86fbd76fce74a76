"""Step 3, drift: calibrated tests (quiet on random halves, firing on real shifts), reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from netsec_tasks.config import DriftConfig
from netsec_tasks.dataset_schema import DatasetSchema, load_schema
from netsec_tasks.drift import (
    adjust_pvalues,
    check_drift,
    chi_square_test,
    detect_drift,
    drift_between_files,
    jensen_shannon,
    load_reference,
)
from netsec_tasks.errors import DataError, ValidationFailed
from netsec_tasks.records import RunContext, ValidationRecord
from netsec_tasks.sample import FEATURE_NAMES, make_sample
from netsec_tasks.storage import file_uri_to_path

SEEDS = range(100)


@pytest.fixture(scope="module")
def schema() -> DatasetSchema:
    from netsec_tasks.config import PACKAGE_CONFIG_DIR

    return load_schema(PACKAGE_CONFIG_DIR / "schema" / "phishing.yaml")


@pytest.fixture(scope="module")
def dcfg() -> DriftConfig:
    return DriftConfig()


@pytest.fixture(scope="module")
def uci(uci_csv) -> pd.DataFrame:
    return pd.read_csv(uci_csv)


def halves(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    idx = np.random.default_rng(seed).permutation(len(frame))
    cut = len(frame) // 2
    return frame.iloc[idx[:cut]], frame.iloc[idx[cut:]]


# --------------------------------------------------------------------------- statistics


def test_pvalue_corrections_match_textbook_values():
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(adjust_pvalues(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    # Holm: sorted p times (m, m-1, ...), running max, back in input order.
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    # Benjamini-Hochberg: sorted p times m/rank, running min from the top.
    np.testing.assert_allclose(adjust_pvalues(p, "fdr_bh"), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(adjust_pvalues(p, "none"), p)
    assert adjust_pvalues([0.9, 0.8], "bonferroni").max() == 1.0
    assert adjust_pvalues([], "holm").size == 0


def test_chi_square_and_js_agree_with_scipy():
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    ref, cur = np.array([120, 40, 340]), np.array([90, 70, 300])
    stat, p, dof, pooled = chi_square_test(ref, cur)
    expected = chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert (stat, p, dof, pooled) == pytest.approx((expected.statistic, expected.pvalue, 2, 0))
    assert jensen_shannon(ref, cur) == pytest.approx(jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2))
    assert jensen_shannon(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)


def test_sparse_categories_are_pooled_not_allowed_to_dominate():
    from scipy.stats import chi2_contingency, fisher_exact

    # Four rows of a brand-new category: the chi-square approximation (expected counts of 2)
    # calls this significant, the exact test does not. Pooling keeps it quiet.
    ref, cur = np.array([5000, 0]), np.array([5000, 4])
    assert chi2_contingency(np.vstack([ref, cur]), correction=False).pvalue < 0.05
    assert fisher_exact(np.vstack([ref, cur])).pvalue > 0.05
    stat, p, dof, pooled = chi_square_test(ref, cur)
    assert pooled == 1 and p == 1.0

    # Rare categories are pooled together while the frequent ones are still tested.
    ref, cur = np.array([500, 480, 3, 0, 4]), np.array([510, 470, 2, 3, 1])
    stat, p, dof, pooled = chi_square_test(ref, cur)
    assert pooled == 3 and dof == 2
    pooled_table = np.array([[500, 480, 7], [510, 470, 6]])
    assert p == pytest.approx(chi2_contingency(pooled_table, correction=False).pvalue)
    # A pool still too thin on its own is folded into the smallest frequent category.
    stat, p, dof, pooled = chi_square_test(np.array([500, 480, 1, 0]), np.array([510, 470, 0, 3]))
    assert pooled == 2 and dof == 1
    folded = np.array([[500, 481], [510, 473]])
    assert p == pytest.approx(chi2_contingency(folded, correction=False).pvalue)


# --------------------------------------------------------------------------- calibration


def _false_alarms(frames, schema, dcfg):
    alarms, raw_hits, tested = 0, 0, 0
    for ref, cur in frames:
        result = detect_drift(ref, cur, schema, dcfg)
        alarms += result.dataset_drift
        raw_hits += sum(c.p_value < dcfg.alpha for c in result.tested)
        tested += result.columns_tested
    return alarms / len(SEEDS), raw_hits / tested


def test_quiet_on_random_halves_of_the_uci_file(uci, schema, dcfg):
    rate, raw = _false_alarms((halves(uci, s) for s in SEEDS), schema, dcfg)
    assert rate <= 0.05
    # The uncorrected per-column tests are calibrated: about alpha of them fire by chance, not more.
    assert raw <= dcfg.alpha + 0.02


def test_quiet_on_random_halves_of_the_synthetic_sample(schema, dcfg):
    rate, raw = _false_alarms((halves(make_sample(3000, seed=s), s) for s in SEEDS), schema, dcfg)
    assert rate <= 0.05
    assert raw <= dcfg.alpha + 0.02


def test_quiet_on_independent_samples_of_the_same_distribution(schema, dcfg):
    frames = ((make_sample(1500, seed=s), make_sample(1500, seed=10_000 + s)) for s in SEEDS)
    rate, raw = _false_alarms(frames, schema, dcfg)
    assert rate <= 0.05
    assert raw <= dcfg.alpha + 0.02


def test_fires_on_a_shifted_synthetic_copy(schema, dcfg):
    shifted = set(FEATURE_NAMES[:10])  # make_sample shifts the first 10 columns
    detected, false_columns, other_tests = 0, 0, 0
    for s in SEEDS:
        ref = make_sample(1500, seed=s)
        cur = make_sample(1500, seed=10_000 + s, shift=0.4)
        result = detect_drift(ref, cur, schema, dcfg)
        detected += result.dataset_drift
        false_columns += len(set(result.drifted_columns) - shifted)
        other_tests += result.columns_tested - len(shifted)
    assert detected / len(SEEDS) >= 0.95
    # Drift is attributed to the columns that moved, not smeared over the unshifted ones.
    assert false_columns / other_tests <= 0.01


def test_fires_on_uci_rows_with_a_changed_class_mix(uci, schema, dcfg):
    detected = 0
    for s in SEEDS:
        ref, pool = halves(uci, s)
        threat = (pool["Result"] == -1).to_numpy()
        # 85% phishing instead of 44%: the phishing-indicative columns move with it.
        weights = np.where(threat, 0.85 / threat.mean(), 0.15 / (~threat).mean())
        cur = pool.sample(n=3000, replace=True, weights=weights, random_state=s)
        result = detect_drift(ref, cur, schema, dcfg)
        detected += result.dataset_drift
        assert result.target["positive_share_change"] > 0.3
    assert detected / len(SEEDS) >= 0.95


def test_large_samples_need_an_effect_not_only_significance(schema):
    # 200k rows each: a 1-point change in one column's mix is "significant" but negligible.
    rng = np.random.default_rng(0)
    n = 200_000
    ref = make_sample(2000, seed=1).sample(n, replace=True, random_state=1)
    cur = ref.copy()
    flip = rng.random(n) < 0.02
    cur.loc[flip, "Favicon"] = -cur.loc[flip, "Favicon"].to_numpy()
    strict = detect_drift(ref, cur, schema, DriftConfig(min_effect=0.0))
    assert "Favicon" in strict.drifted_columns
    assert "Favicon" not in detect_drift(ref, cur, schema, DriftConfig()).drifted_columns


# --------------------------------------------------------------------------- test choice

MIXED_SCHEMA = DatasetSchema.model_validate(
    {
        "name": "mixed",
        "target": {"column": "y", "dtype": "int", "positive": 1, "labels": [0, 1]},
        "columns": {
            "latency_ms": {"dtype": "float"},
            "ternary_int": {"dtype": "int"},  # no allowed list: discrete by its values
            "ternary_float": {"dtype": "float"},  # -1.0/0.0/1.0 stored as float
            "proto": {"dtype": "str"},
        },
    }
)


def mixed_frame(n: int, seed: int, *, latency_shift: float = 0.0, new_proto: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    proto = rng.choice(["tcp", "udp", "icmp"], n, p=[0.6, 0.3, 0.1]).astype(object)
    proto[rng.random(n) < new_proto] = "quic"
    return pd.DataFrame(
        {
            "latency_ms": rng.lognormal(3.0 + latency_shift, 0.5, n),
            "ternary_int": rng.choice([-1, 0, 1], n),
            "ternary_float": rng.choice([-1.0, 0.0, 1.0], n),
            "proto": proto,
            "y": rng.integers(0, 2, n),
        }
    )


def test_continuous_columns_use_ks_and_ternary_columns_chi_square(dcfg):
    same = detect_drift(mixed_frame(800, 1), mixed_frame(800, 2), MIXED_SCHEMA, dcfg)
    latency = same.column("latency_ms")
    assert (latency.kind, latency.test, latency.effect_name) == ("continuous", "ks", "wasserstein_iqr")
    for name in ("ternary_int", "ternary_float", "proto"):
        col = same.column(name)
        assert (col.kind, col.test, col.effect_name) == ("discrete", "chi_square", "jensen_shannon"), name
    assert same.column("ternary_float").labels == ["-1", "0", "1"]
    assert not same.drifted_columns

    moved = detect_drift(
        mixed_frame(800, 1), mixed_frame(800, 3, latency_shift=0.3, new_proto=0.15), MIXED_SCHEMA, dcfg
    )
    assert set(moved.drifted_columns) == {"latency_ms", "proto"}
    assert moved.dataset_drift  # 2 of 4 columns
    assert "quic" in moved.column("proto").labels
    assert len(moved.column("latency_ms").labels) == len(moved.column("latency_ms").reference_share) + 1


def test_a_column_missing_from_the_reference_counts_as_drift(schema, dcfg):
    ref = make_sample(500, seed=1).drop(columns=["Iframe"])
    result = detect_drift(ref, make_sample(500, seed=2), schema, dcfg)
    col = result.column("Iframe")
    assert col.test == "presence" and col.drifted and "reference" in col.note


def test_null_share_change_is_part_of_a_discrete_test(schema, dcfg):
    ref = make_sample(2000, seed=1).astype({"SFH": "float64"})
    cur = make_sample(2000, seed=2).astype({"SFH": "float64"})
    cur.loc[cur.index[:600], "SFH"] = np.nan
    col = detect_drift(ref, cur, schema, dcfg).column("SFH")
    assert col.drifted and col.labels[-1] == "<null>"
    assert col.null_share_current == pytest.approx(0.3)


# --------------------------------------------------------------------------- pipeline step


@pytest.fixture()
def cfg(make_cfg):
    return make_cfg()


def validation_record(tmp_path, batch: pd.DataFrame) -> ValidationRecord:
    path = tmp_path / "new_batch.parquet"
    batch.to_parquet(path, index=False)
    return ValidationRecord(
        passed=True,
        report_uri="r.yaml",
        train_uri=str(path),
        test_uri=str(path),
        new_batch_uri=str(path),
        rows_checked=len(batch),
        rows_invalid=0,
        invalid_share=0.0,
        train_rows=len(batch),
        test_rows=0,
        dataset_digest="x",
        train_row_hashes_uri=str(tmp_path / "hashes.parquet"),
    )


def assert_self_contained(page: str) -> None:
    lowered = page.lower()
    for forbidden in ("<script", "<link", "http://", "https://", "@import", "url("):
        assert forbidden not in lowered, forbidden


def test_first_run_has_no_reference(tmp_path, cfg):
    run = RunContext.create(cfg, run_id="test__first")
    rec = check_drift(cfg, run, validation_record(tmp_path, make_sample(100, seed=1)), reference_uri=None)
    assert rec.has_reference is False and rec.drift_detected is False
    assert "no production model" in rec.reason
    assert rec.columns_tested == 0
    assert_self_contained(open(file_uri_to_path(rec.html_uri)).read())


def test_check_drift_writes_yaml_and_html(tmp_path, cfg):
    run = RunContext.create(cfg, run_id="test__drift")
    ref_path = tmp_path / "reference" / "train.parquet"
    ref_path.parent.mkdir()
    make_sample(2000, seed=1).to_parquet(ref_path, index=False)
    batch = make_sample(1500, seed=2, shift=0.5)
    rec = check_drift(cfg, run, validation_record(tmp_path, batch), reference_uri=f"file://{ref_path}")

    assert rec.has_reference and rec.drift_detected
    assert rec.columns_tested == 30
    assert set(rec.drifted_columns) <= set(FEATURE_NAMES[:10]) and len(rec.drifted_columns) >= 7
    assert rec.drift_share == pytest.approx(len(rec.drifted_columns) / 30)
    assert rec.reason.startswith("data-set drift")

    report = yaml.safe_load(open(file_uri_to_path(rec.report_uri)))
    assert report["dataset_drift"] is True and report["correction"] == "holm"
    assert report["drifted_columns"] == rec.drifted_columns
    first = report["columns"][0]
    for key in ("test", "statistic", "p_value", "p_adjusted", "effect", "drifted"):
        assert key in first
    assert report["target"]["column"] == "Result"

    page = open(file_uri_to_path(rec.html_uri)).read()
    assert_self_contained(page)
    assert "Data-set drift detected" in page and page.count("<svg") == 30
    for name in rec.drifted_columns:
        assert f'<tr class="drifted"><td><strong>{name}</strong>' in page
    undrifted = next(c for c in FEATURE_NAMES if c not in rec.drifted_columns)
    assert f'<tr class=""><td><strong>{undrifted}</strong>' in page

    # The reference may also be the directory holding it (train.parquet preferred).
    again = check_drift(cfg, run, validation_record(tmp_path, batch), reference_uri=str(ref_path.parent))
    assert again.drifted_columns == rec.drifted_columns


def test_check_drift_reads_an_mlflow_artifact_reference(tmp_path, make_cfg, mlflow_uri):
    import mlflow

    cfg = make_cfg(**{"registry.tracking_uri": mlflow_uri})
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    make_sample(1500, seed=1).to_parquet(ref_dir / "train.parquet", index=False)
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    exp = client.create_experiment("drift-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    client.log_artifact(run_id, str(ref_dir / "train.parquet"), artifact_path="reference")
    client.set_terminated(run_id)

    run = RunContext.create(cfg, run_id="test__mlflow")
    batch = make_sample(1500, seed=3)
    rec = check_drift(
        cfg, run, validation_record(tmp_path, batch), reference_uri=f"runs:/{run_id}/reference/train.parquet"
    )
    assert rec.has_reference and not rec.drift_detected
    assert rec.reason.startswith("no data-set drift")
    assert len(load_reference(f"runs:/{run_id}/reference", tracking_uri=mlflow_uri)) == 1500
    with pytest.raises(DataError, match="netsec.reference_uri"):
        load_reference(f"runs:/{run_id}/nothing/here.parquet", tracking_uri=mlflow_uri)


def test_empty_new_batch_is_no_drift(tmp_path, cfg):
    run = RunContext.create(cfg, run_id="test__empty")
    ref = tmp_path / "ref.parquet"
    make_sample(100, seed=1).to_parquet(ref, index=False)
    rec = check_drift(
        cfg, run, validation_record(tmp_path, make_sample(10, seed=1).iloc[0:0]), reference_uri=str(ref)
    )
    assert rec.has_reference and not rec.drift_detected and "empty" in rec.reason


def test_missing_reference_file_names_it(tmp_path, cfg):
    run = RunContext.create(cfg, run_id="test__missing")
    with pytest.raises(DataError, match="nope.parquet"):
        check_drift(
            cfg,
            run,
            validation_record(tmp_path, make_sample(50, seed=1)),
            reference_uri=str(tmp_path / "nope.parquet"),
        )


def test_drift_between_files(tmp_path, cfg, uci_csv):
    cur = tmp_path / "current.csv"
    make_sample(2000, seed=5, shift=0.5).drop(columns=["Result"]).to_csv(cur, index=False)
    rec = drift_between_files(uci_csv, cur, cfg, tmp_path / "out")
    assert rec.drift_detected and (tmp_path / "out" / "drift_report.html").is_file()
    assert set(rec.drifted_columns) <= set(FEATURE_NAMES[:10])

    quiet = tmp_path / "quiet.csv"
    make_sample(2000, seed=6).to_csv(quiet, index=False)
    assert not drift_between_files(uci_csv, quiet, cfg, tmp_path / "out2").drift_detected

    broken = tmp_path / "broken.csv"
    make_sample(50, seed=7).drop(columns=["SFH"]).to_csv(broken, index=False)
    with pytest.raises(ValidationFailed, match="SFH"):
        drift_between_files(uci_csv, broken, cfg, tmp_path / "out3")


@pytest.mark.parametrize("column, value, broken", [("Favicon", 0, 1470), ("SSLfinal_State", 7, 100)])
def test_a_comparison_of_too_few_valid_rows_is_not_judged(tmp_path, cfg, capsys, column, value, broken):
    """An upstream encoding change breaks the contract for most rows: the rows left are compared,
    but the verdict, the exit code and the report's headline say it cannot be judged, first."""
    from netsec_tasks.cli import NOT_JUDGED, main

    reference = tmp_path / "reference.csv"
    make_sample(1500, seed=8).to_csv(reference, index=False)
    current = make_sample(1500, seed=9)
    current.loc[: broken - 1, column] = value
    path = tmp_path / "current.csv"
    current.to_csv(path, index=False)
    rec = drift_between_files(reference, path, cfg, tmp_path / "out")
    assert not rec.judged and not rec.drift_detected
    assert f"{broken:,} of 1,500 current rows" in rec.not_judged and "max_invalid_share=5%" in rec.not_judged
    page = (tmp_path / "out" / "drift_report.html").read_text()
    headline = page.index("Not judged")
    assert "No data-set drift" not in page and headline < page.index("Drifted columns")
    report = (tmp_path / "out" / "drift_report.yaml").read_text()
    assert report.index("verdict: not judged") < report.index("drift_share")

    code = main(
        [
            "drift",
            str(reference),
            str(path),
            "--out",
            str(tmp_path / "cli"),
            "--set",
            f"workdir={cfg.workdir}",
        ]
    )
    first = capsys.readouterr().out.splitlines()[0]
    assert code == NOT_JUDGED == 4
    assert first.startswith(f"drift NOT JUDGED: {broken:,} of 1,500 current rows") and column in first
    # Under the share, the same change is reported and the verdict stands.
    few = make_sample(1500, seed=9)
    few.loc[:9, column] = value
    few.to_csv(path, index=False)
    assert drift_between_files(reference, path, cfg, tmp_path / "out2").judged
