"""The report kit (netsec_tasks.html_report) and the three reports built with it (drift, evaluate,
monitoring): text from the data is never markup in them. Pure functions, no servers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from netsec_tasks.html_report import escape, number, page

REPO = Path(__file__).resolve().parent.parent
# Text an attacker controls: a label, a column or file name, a reason quoting a value.
HOSTILE = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>"


def assert_inert(html: str) -> None:
    """No markup the hostile text could have brought, and the text itself shown, escaped."""
    lowered = html.lower()
    assert "<script" not in lowered and "<img src=x" not in lowered
    assert escape(HOSTILE) in html


def test_escape_number_and_page():
    assert escape(HOSTILE) == (
        "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;&lt;img src=x onerror=alert(2)&gt;"
    )
    assert escape(-1) == "-1" and escape(None) == "None"
    assert [number(v) for v in (None, math.nan, math.inf, "x")] == ["–"] * 4
    assert number(0.12345) == "0.123" and number(0.5, ".1%") == "50.0%" and number("2", ".1f") == "2.0"
    doc = page(HOSTILE, ["<p>body</p>"])
    assert doc.startswith("<!DOCTYPE html>") and doc.endswith("</body></html>") and "<p>body</p>" in doc
    assert_inert(doc)


def test_drift_report_escapes_column_names_categories_and_reasons():
    from netsec_tasks.config import load_config
    from netsec_tasks.dataset_schema import DatasetSchema
    from netsec_tasks.drift.report import render_html
    from netsec_tasks.drift.stats import detect_drift

    cfg = load_config(REPO / "config" / "pipeline.yaml", environ={})
    schema = DatasetSchema.model_validate(
        {
            "name": "t",
            "target": {"column": "y", "negative": [0]},
            "columns": {HOSTILE: {"dtype": "str"}, "bytes": {"dtype": "float"}},
        }
    )
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({HOSTILE: rng.choice(["a", "b"], 300), "bytes": rng.normal(0, 1, 300)})
    cur = pd.DataFrame({HOSTILE: rng.choice(["a", HOSTILE], 300), "bytes": rng.normal(1, 1, 300)})
    result = detect_drift(ref, cur, schema, cfg.drift)
    assert HOSTILE in result.column(HOSTILE).new_categories
    excluded = {
        HOSTILE: {
            "rows_checked": 3,
            "rows_excluded": 1,
            "reasons": {HOSTILE: 1},
            "examples": [{"row": 0, "column": HOSTILE, "value": HOSTILE, "reason": HOSTILE}],
        }
    }
    html = render_html(result, reference=HOSTILE, current=HOSTILE, reason=HOSTILE, excluded=excluded)
    assert_inert(html)
    assert html.count("<svg") == 2  # one chart per column, nothing else draws one


def test_evaluation_report_escapes_labels_file_and_plot_names(tmp_path):
    from netsec_tasks.file_evaluation import render_html

    plot = tmp_path / f"{HOSTILE.replace('/', '_')}.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n")
    doc = {
        "file": f"/data/{HOSTILE}.csv",
        "data_set": HOSTILE,
        "schema_version": HOSTILE,
        "label_mapping": {"positive": [HOSTILE]},
        "generated_at": "2025-01-01T00:00:00+00:00",
        "warnings": [HOSTILE],
        "model": {
            "name": HOSTILE,
            "version": "1",
            "uri": HOSTILE,
            "metric": HOSTILE,
            "test_split_score": 0.9,
        },
        "rows": {"read": 3, "scored": 2, "excluded_because": {HOSTILE: 1}, "trained_on": None},
        "metrics": {"f1": 0.5},
        "confusion_matrix": {"rows_truth_cols_predicted": [[1, 0], [0, 1]]},
        "per_label": {HOSTILE: {"rows": 1, "threat": True, "detected": 1, "recall": 1.0}},
    }
    html = render_html(doc, [str(plot)])
    assert_inert(html)
    assert "data:image/png;base64," in html


def test_monitoring_report_escapes_model_reasons_columns_and_verdicts():
    from netsec_tasks.monitoring.report import render_html

    doc = {
        "model_name": HOSTILE,
        "model_version": HOSTILE,
        "trigger": True,
        "trigger_reason": HOSTILE,
        "run_id": HOSTILE,
        "log": HOSTILE,
        "traffic": {"rows": 1, "requests": 1, "by_version": {HOSTILE: 1}},
        "drift": {
            "reason": HOSTILE,
            "drifted_columns": [HOSTILE],
            "excluded": {"rows_excluded": 1, "reasons": {HOSTILE: 1}},
        },
        "contract_violations": {"surge": True, "reason": HOSTILE},
        "live": {"decision": HOSTILE, "f1": 0.5},
        "feedback": {
            "reason": HOSTILE,
            "conflict_examples": [
                {
                    "prediction_id": HOSTILE,
                    "label": HOSTILE,
                    "training_labels": [HOSTILE],
                    "identical_rows": 1,
                }
            ],
            "changed_after_append": 1,
            "changed_examples": [HOSTILE],
        },
    }
    history = [{"at": HOSTILE, "drift_share": 0.1, "live_f1": 0.5}, {"at": HOSTILE, "drift_share": 0.3}]
    html = render_html(doc, history, drift_page=HOSTILE)
    assert_inert(html)
