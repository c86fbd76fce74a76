"""The branch rule shared by `netsec run` and the DAG, and the run's outcome record."""

import json

import pytest

from netsec_tasks.pipeline import decide_retrain, record_outcome
from netsec_tasks.records import (
    DriftRecord,
    RegisterRecord,
    RunContext,
)
from netsec_testing import ingest_record, train_record, validation_record


def drift(**kw):
    base = dict(
        drift_detected=False,
        has_reference=True,
        current_uri="x",
        drift_share=0.0,
        drift_share_threshold=0.2,
        drifted_columns=[],
        columns_tested=30,
        current_rows=500,
        reason="r",
        reference_version="3",
        html_uri="file:///s/runs/r/check_drift/drift_report.html",
    )
    base.update(kw)
    return DriftRecord(**base)


def sentence(text: str) -> bool:
    return text[:1].isupper() and text.endswith(".") and "_" not in text.split(" ")[0]


def test_no_production_model_means_retrain():
    retrain, reason = decide_retrain(drift(has_reference=False), force_retrain=False)
    assert retrain and reason == "Retrained because there is no Production model yet."


def test_drift_means_retrain_and_names_columns_and_threshold():
    retrain, reason = decide_retrain(
        drift(drift_detected=True, drift_share=0.4, drifted_columns=["SFH", "Iframe"]), force_retrain=False
    )
    assert retrain and sentence(reason)
    assert "SFH, Iframe" in reason and "40%, above the 20% threshold" in reason


def test_no_drift_means_skip_unless_forced():
    skip, reason = decide_retrain(drift(drift_share=1 / 30, drifted_columns=["SFH"]), force_retrain=False)
    assert skip is False and sentence(reason)
    assert reason == (
        "Training skipped because the new batch did not drift: 1 of 30 columns "
        "drifted (3%, not above the 20% threshold): SFH."
    )
    retrain, reason = decide_retrain(drift(drift_share=0.03), force_retrain=True)
    assert retrain and reason.startswith(
        "Retrained because force_retrain was set; the new batch did not drift"
    )


def test_monitoring_request_retrains_and_says_what_the_batch_showed():
    retrain, reason = decide_retrain(
        drift(drift_share=0.0),
        force_retrain=False,
        requested_by_monitoring="traffic data-set drift: 9 of 30 columns (run monitor_1).",
    )
    assert retrain and sentence(reason) and ".." not in reason
    assert reason.startswith(
        "Retrained because monitoring requested it: traffic data-set drift: "
        "9 of 30 columns (run monitor_1). In this run, the new batch did not drift"
    )


@pytest.mark.parametrize("force", [False, True])
def test_an_empty_new_batch_says_so(force):
    retrain, reason = decide_retrain(drift(current_rows=0, columns_tested=0), force_retrain=force)
    assert retrain is force and sentence(reason)
    assert "the new batch is empty" in reason and "drifted" not in reason and "%" not in reason


# --------------------------------------------------------------------------- outcome.json


@pytest.fixture()
def records(make_cfg):
    cfg = make_cfg()
    run = RunContext.create(cfg, run_id="manual__2026-01-01T00:00:00+00:00", trigger="manual")
    ingest = ingest_record(
        run_id=run.run_id,
        rows=11055,
        new_rows=3055,
        documents_read=3055,
        rows_reused=8000,
        train_rows=8840,
        test_rows=2215,
    )
    validation = validation_record(
        rows_checked=11055,
        rows_invalid=5,
        invalid_share=5 / 11055,
        train_rows=8836,
        test_rows=2214,
    )
    train = train_record(
        mlflow_run_id="run123",
        experiment_id="7",
        winner="random_forest",
        cv_score=0.95,
        test_metrics={"f1": 0.91, "roc_auc": 0.97},
        confusion_matrix=[[1, 0], [0, 1]],
        train_rows=8836,
        test_rows=2214,
        training_seconds=1.0,
    )
    return cfg, run, ingest, validation, train


def trained_outcome(records, **register):
    """record_outcome of a run that retrained and registered candidate v4 while v3 (f1 0.93) was
    Production; ``register`` gives the rest of its RegisterRecord (promoted, scores, reason)."""
    cfg, run, ingest, validation, train = records
    base = dict(
        model_name="netsec-phishing",
        version="4",
        previous_production_version="3",
        production_score=0.93,
        production_rows_in_test=0,
    )
    return record_outcome(
        cfg,
        run,
        ingest=ingest,
        validation=validation,
        drift=drift(),
        train=train,
        register=RegisterRecord(**(base | register)),
        branch_reason="Retrained because x.",
    )


def test_kept_production_names_both_versions_each_with_its_own_metrics(records):
    from netsec_tasks.catalog import RunCatalog

    cfg, run, _, _, _ = records
    out = trained_outcome(
        records,
        promoted=False,
        production_version="3",
        new_score=0.91,
        production_metrics={"f1": 0.93, "roc_auc": 0.98},
        reason="The candidate's f1 0.9100 does not beat Production v3's 0.9300 plus the promotion "
        "margin 0.0000 (registry.promotion_margin).",
    )
    assert out.outcome == "kept_production" and out.trigger == "manual" and out.trigger_reason is None
    assert out.production_before.version == "3" == out.production_after
    assert out.production_before.metrics == {"f1": 0.93, "roc_auc": 0.98}
    assert out.production_before.score == 0.93
    assert out.candidate.version == "4" and out.candidate.estimator == "random_forest"
    assert out.candidate.metrics == {"f1": 0.91, "roc_auc": 0.97} and out.candidate.score == 0.91
    assert out.reason.startswith(
        "Production v3 stays; candidate v4 (random_forest) was registered "
        "but not promoted. The candidate's f1 0.9100 does not beat"
    )
    assert out.rows.model_dump() == {
        "documents_read": 3055,
        "new_batch": 3055,
        "snapshot": 11055,
        "train": 8836,
        "test": 2214,
        "quarantined": 5,
        "production_rows_in_test": 0,
    }
    assert (out.mlflow_run_id, out.mlflow_experiment_id) == ("run123", "7")
    assert out.drift_report.endswith("drift_report.html") and out.model_name == "netsec-phishing"
    # outcome.json in the run's storage is the same record.
    saved = json.loads(RunCatalog.of(cfg, run).load_text("outcome"))
    assert saved == out.to_xcom() and "model_version" not in saved


def test_promoted_moves_production_to_the_candidate(records):
    out = trained_outcome(
        records,
        promoted=True,
        production_version="4",
        new_score=0.95,
        production_metrics={"f1": 0.93},
        reason="The candidate's f1 ...",
    )
    assert (out.outcome, out.production_before.version, out.candidate.version, out.production_after) == (
        "promoted",
        "3",
        "4",
        "4",
    )
    assert out.reason.startswith("Candidate v4 (random_forest) is the new Production model.")


def test_skipped_run_keeps_production_and_says_why(records):
    cfg, run, ingest, validation, _ = records
    empty = drift(current_rows=0, columns_tested=0)
    retrain, why = decide_retrain(empty, force_retrain=False)
    out = record_outcome(
        cfg,
        run,
        ingest=ingest.model_copy(update={"new_rows": 0, "documents_read": 0}),
        validation=validation,
        drift=empty,
        branch_reason=why,
    )
    assert not retrain and out.outcome == "skipped_no_drift" and out.candidate is None
    assert out.production_before.version == "3" == out.production_after
    assert out.production_before.metrics == {}  # not evaluated by a run that did not train
    assert out.reason == why + " Production v3 stays." and sentence(out.reason)
    assert (out.rows.documents_read, out.rows.new_batch, out.rows.production_rows_in_test) == (0, 0, None)
