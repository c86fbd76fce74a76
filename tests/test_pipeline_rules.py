"""The branch rule shared by `netsec run` and the DAG."""

from netsec_tasks.pipeline import decide_retrain
from netsec_tasks.records import DriftRecord


def drift(**kw):
    base = dict(drift_detected=False, has_reference=True, current_uri="x", drift_share=0.0,
                drifted_columns=[], columns_tested=30, reason="r")
    base.update(kw)
    return DriftRecord(**base)


def test_no_production_model_means_retrain():
    retrain, reason = decide_retrain(drift(has_reference=False), force_retrain=False)
    assert retrain and reason == "no production model"


def test_drift_means_retrain_and_names_columns():
    retrain, reason = decide_retrain(
        drift(drift_detected=True, drift_share=0.4, drifted_columns=["SFH", "Iframe"]), force_retrain=False)
    assert retrain and "SFH" in reason and "40%" in reason


def test_no_drift_means_skip_unless_forced():
    assert decide_retrain(drift(drift_share=0.03), force_retrain=False)[0] is False
    retrain, reason = decide_retrain(drift(drift_share=0.03), force_retrain=True)
    assert retrain and reason.startswith("forced")
