"""Every writer of text that came from data, fed hostile text through its sink's encoder
(netsec_tasks.sinks): nothing breaks, nothing runs, nothing escapes its folder.

:data:`WRITERS` enumerates the project's writers, one entry per (writer, sink); each takes one
hostile text (tests/hostile_inputs.HOSTILE_TEXTS), writes it the way the project does, and
returns what was written for its sink's check. A new writer of data text belongs in this list.
Not here: the page's download (JavaScript, ``serving/static/app.js``, the same neutralising
rule, exercised by tests/serving/test_serving_browser.py)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hostile_inputs import HOSTILE_TEXTS, runs_as_formula

from netsec_tasks import sinks
from netsec_tasks.dataset_schema import load_schema

HOSTILE_IDS = [repr(t[:16]) for t in HOSTILE_TEXTS]
SCHEMA = """
name: hostile
target: {column: label, dtype: str, negative: [normal]}
id_columns: [id]
columns:
  s: {dtype: str}
  n: {dtype: int}
"""


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "hostile.yaml"
    path.write_text(SCHEMA)
    return load_schema(path)


@pytest.fixture(scope="module")
def mlflow_client(tmp_path_factory):
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'm.db'}")
    experiment = client.create_experiment("sinks", artifact_location=str(root / "artifacts"))
    return client, experiment


# --------------------------------------------------------------------------- writers


def _scored_csv(text, tmp, schema):
    """netsec predict --out and /predict/csv?format=csv: the scored rows."""
    from netsec_tasks.contract import Contract, scored_frame

    contract = Contract(schema)
    # The contract's cells hold valid text (the JSON door refuses a lone surrogate, the CSV
    # reader decodes strictly: pandas' text dtype cannot hold one); an echoed id may be anything.
    valid = sinks.text(text)
    frame = pd.DataFrame({"id": [text, "ok"], "s": [valid, "a"], "n": [valid, 2]}, dtype=object)
    check = contract.check_rows(frame)
    out = scored_frame(
        frame,
        check,
        is_threat=np.zeros(int(check.valid.sum()), dtype=int),
        probability=np.zeros(int(check.valid.sum())),
        labels=["normal"] * int(check.valid.sum()),
        model_version="1",
    )
    buf = io.BytesIO()
    sinks.write_csv(out, buf)
    return buf.getvalue()


def _invalid_csv(text, tmp, schema):
    """validate's quarantine (invalid.csv): the value and the reason quoting it."""
    from netsec_tasks.config import ValidationConfig
    from netsec_tasks.validate import validate_frame, write_report

    cell = sinks.text(text)  # data cells are valid text (see _scored_csv); the file name may not be
    frame = pd.DataFrame({"s": ["a", "b"], "n": [cell, "1"], "label": ["normal", cell or "x"]})
    result = validate_frame(frame, schema, ValidationConfig(min_rows=1), source=text)
    write_report(result, tmp / "report", where=lambda r: f"line {r + 2}")
    return (tmp / "report" / "invalid.csv").read_bytes()


def _validation_yaml(text, tmp, schema):
    from netsec_tasks.config import ValidationConfig
    from netsec_tasks.validate import render_report, validate_frame

    cell = sinks.text(text)
    frame = pd.DataFrame({"s": [cell, "b"], "n": [1, 2], "label": [cell or "x", "normal"], cell or "e": 1})
    return render_report(validate_frame(frame, schema, ValidationConfig(min_rows=1), source=text))


def _drift(text, schema):
    from netsec_tasks.config import DriftConfig
    from netsec_tasks.drift.stats import detect_drift

    ref = pd.DataFrame({"s": ["a", "b"] * 30, "n": [1, 2] * 30})
    cur = pd.DataFrame({"s": [sinks.text(text), "b"] * 30, "n": [1, 2] * 30})
    return detect_drift(ref, cur, schema, DriftConfig())


def _drift_yaml(text, tmp, schema):
    from netsec_tasks.drift.report import render_yaml

    return render_yaml(_drift(text, schema), extra={"reference": text, "current": text})


def _drift_html(text, tmp, schema):
    from netsec_tasks.drift.report import render_html

    return render_html(_drift(text, schema), reference=text, current=text, reason=text, title=text)


def _evaluation_doc(text):
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "file": f"/data/{text}.csv",
        "data_set": text,
        "schema_version": text,
        "model": {"name": text, "version": "1", "uri": f"models:/{text}/1", "metric": "f1"},
        "label_mapping": {"negative": [text]},
        "rows": {"read": 2, "scored": 2, "excluded": 0, "excluded_because": {text: 1}},
        "metrics": {"f1": 0.5},
        "confusion_matrix": {"rows_truth_cols_predicted": [[1, 0], [0, 1]]},
        "per_label": {text: {"rows": 1, "threat": True, "detected": 1, "recall": 1.0, "in_training": False}},
    }


def _evaluation_yaml(text, tmp, schema):
    return sinks.yaml_text(_evaluation_doc(text))  # evaluate_file's writer


def _evaluation_html(text, tmp, schema):
    from netsec_tasks.file_evaluation import render_html

    return render_html(_evaluation_doc(text), [])


def _evaluation_plots(text, tmp, schema):
    """evaluate's PNGs: the per-label recall plot (labels from data) and the class names."""
    from netsec_tasks.file_evaluation.figures import per_label_plot
    from netsec_tasks.threat_metrics import save_plots

    paths = [per_label_plot(_evaluation_doc(text)["per_label"], tmp / "per_label.png")]
    paths += save_plots([0, 1, 1], [0, 1, 0], [0.1, 0.9, 0.4], tmp, labels=(text, text + "!"), title=text)
    return b"".join(Path(p).read_bytes()[:8] for p in paths)


def _monitoring_yaml(text, tmp, schema):
    from netsec_tasks.monitoring.report import render_yaml

    return render_yaml({"trigger_reason": text, "log": text, "drift": {"reason": text}})


def _monitoring_html(text, tmp, schema):
    from netsec_tasks.monitoring.report import render_html

    doc = {"trigger_reason": text, "run_id": text, "log": text, "model_name": text, "drift": {"reason": text}}
    return render_html(doc, [{"at": text, "trigger": True}])


def _reasons_csv(text, tmp, schema):
    """/predict/csv?explain=K and netsec predict --explain: the ``reasons`` cell quotes the
    column's name and the row's value, both from data."""
    from netsec_tasks.explain import reasons_text

    valid = sinks.text(text)
    reason = {"column": valid, "value": valid, "contribution": 0.5, "imputed": False, "imputed_value": None}
    imputed = {**reason, "imputed": True, "imputed_value": valid}
    buf = io.BytesIO()
    sinks.write_csv(
        pd.DataFrame({"reasons": [reasons_text([reason, imputed]), reasons_text([imputed])]}), buf
    )
    return buf.getvalue()


def _challenger_html(text, tmp, schema):
    """decide_challenger's page: the disagreeing rows' feature values come from served traffic."""
    from netsec_tasks.monitoring.report import render_challenger_html

    side = {"alert_rate": 0.1, "alerts": 1, "over_budget": True}
    row = {"prediction_id": text, "time": text, "production": 1, "challenger": 0, "features": {text: text}}
    doc = {"model_name": text, "action": "wait", "reason": text, "run_id": text, "live_fpr": text}
    doc |= {"production": side, "challenger": side, "listed_disagreements": [row], "since": text}
    return render_challenger_html(doc)


def _api_json(text, tmp, schema):
    """/predict and /predict/csv's JSON answers (the echoed columns hold the caller's text)."""
    return sinks.json_bytes({"predictions": [{"id": text, "threat_probability": float("nan")}]})


def _prediction_log_jsonl(text, tmp, schema):
    from serving.prediction_writer import JsonlSink, LogEntry

    entry = LogEntry(
        time=dt.datetime.now(dt.UTC),
        model_name=text,
        model_version="1",
        features=("n",),
        inputs=np.array([[1.0]]),
        is_threat=np.array([1]),
        probability=np.array([0.9]),
        labels=[text],
        route="/predict",
        request_id="r1",
    )
    return b"".join(line for _, line in JsonlSink(tmp, text or "model").convert(entry))


def _verdict_log_json(text, tmp, schema):
    """The feedback store's and the Airflow listener's JSON lines, and state files."""
    return sinks.json_text({"prediction_id": text, "note": text, "at": dt.datetime.now(dt.UTC)}).encode()


def _bson_documents(text, tmp, schema):
    """push-data's documents, and the prediction log's MongoDB sink."""
    import bson

    from netsec_tasks.sources.mongo import frame_documents

    name = sinks.text(text) or "empty"  # a header is valid text (the reader decodes strictly)
    frame = pd.DataFrame({name: [text], "$where": [2**70], "a.b": [1], "n": [np.nan]}, dtype=object)
    docs = frame_documents(frame, {"n"}) + [sinks.bson_document({"labels": [text], text or "x": {"k": text}})]
    return b"".join(bson.encode(d) for d in docs)


def _mlflow(text, tmp, schema, client):
    """evaluate's run: per-label metric names, the file as a param and tag, the run name."""
    from mlflow.entities import Metric, Param, RunTag

    client, experiment = client
    run = client.create_run(experiment, run_name=sinks.mlflow_value(f"evaluate {text}", limit=250))
    key = sinks.mlflow_key(text, prefix="eval_recall.")
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(key, 0.5, 0, 0)],
        params=[Param("file", sinks.mlflow_value(text * 30, limit=500))],
        tags=[RunTag("netsec.evaluated_file", sinks.mlflow_value(text * 40, limit=sinks.MLFLOW_TAG_CHARS))],
    )
    got = client.get_run(run.info.run_id).data
    assert list(got.metrics) == [key]
    return key.encode()


def _prometheus(text, tmp, schema):
    """serving's request counter: the method label is a client's text."""
    from prometheus_client import generate_latest

    from serving.metrics import HTTP_METHODS, Metrics

    metrics = Metrics("netsec-test")
    metrics.requests.labels("/predict", sinks.prom_label(text, allowed=HTTP_METHODS), "200").inc()
    metrics.requests.labels("/predict", sinks.prom_label(text), "200").inc()
    return generate_latest(metrics.registry)


def _file_names(text, tmp, schema):
    """Run folders (run ids), the evaluate folder (model and file names), state keys."""
    from netsec_tasks.records import safe_name

    names = [safe_name(text), sinks.file_name(text, unique=True), sinks.file_name(f"{text}.csv", unique=True)]
    for name in names:
        (tmp / name).mkdir(exist_ok=True)  # never a path outside tmp, never "." or ".."
        assert (tmp / name).resolve().parent == tmp.resolve()
    return "\n".join(names).encode()


# (writer, sink, function). The sink names the check.
WRITERS = [
    ("scored rows (netsec predict, /predict/csv)", "csv", _scored_csv),
    ("reasons cell (explain=K)", "csv", _reasons_csv),
    ("quarantine (invalid.csv)", "csv", _invalid_csv),
    ("validation report", "yaml", _validation_yaml),
    ("drift report", "yaml", _drift_yaml),
    ("drift report", "html", _drift_html),
    ("evaluation report", "yaml", _evaluation_yaml),
    ("evaluation report", "html", _evaluation_html),
    ("evaluation plots", "png", _evaluation_plots),
    ("monitoring report", "yaml", _monitoring_yaml),
    ("monitoring report", "html", _monitoring_html),
    ("challenger report", "html", _challenger_html),
    ("API answers", "json", _api_json),
    ("prediction log (JSONL)", "jsonl", _prediction_log_jsonl),
    ("verdicts, listener, state", "json", _verdict_log_json),
    ("push-data, prediction log (MongoDB)", "bson", _bson_documents),
    ("evaluation run (MLflow)", "mlflow", _mlflow),
    ("request counter (Prometheus)", "prometheus", _prometheus),
    ("run, evaluate and state folders", "file names", _file_names),
]


# --------------------------------------------------------------------------- checks


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]


def _strings(doc):
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for k, v in doc.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _strings(v)


def _check(sink: str, out, text: str) -> None:
    data = out if isinstance(out, bytes) else out.encode("utf-8")  # valid UTF-8, or this raises
    if sink not in ("png", "bson"):
        data.decode("utf-8")
    if sink == "csv":
        for row in csv.reader(io.StringIO(data.decode("utf-8"))):
            for cell in row:
                assert not runs_as_formula(cell), cell
    elif sink == "yaml":
        doc = yaml.safe_load(data)
        assert isinstance(doc, dict)
        if text.strip() and len(text) <= 80:  # the text comes back as data, not as structure
            assert any(sinks.text(text).strip() in s for s in _strings(doc)), text
    elif sink == "html":
        tags = _Tags()
        tags.feed(data.decode("utf-8"))
        assert "script" not in tags.tags and not any(a.startswith("on") for a in tags.attrs)
    elif sink == "bson":
        import bson

        assert bson.decode_all(data)
    elif sink == "png":
        assert data.count(b"\x89PNG") >= 1
    elif sink in ("json", "jsonl"):
        for line in data.decode("utf-8").splitlines() if sink == "jsonl" else [data.decode("utf-8")]:
            json.loads(line)
    elif sink == "prometheus":
        from prometheus_client.parser import text_string_to_metric_families

        labels = [s.labels for f in text_string_to_metric_families(data.decode()) for s in f.samples]
        assert {lab.get("method") for lab in labels if "method" in lab} & {"other"}
        assert all(len(lab.get("method", "")) <= sinks.PROM_LABEL_CHARS for lab in labels)
    elif sink == "file names":
        for name in data.decode().splitlines():
            assert re.fullmatch(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]{0,99}", name), name


@pytest.mark.parametrize("text", HOSTILE_TEXTS, ids=HOSTILE_IDS)
@pytest.mark.parametrize("writer,sink,write", WRITERS, ids=[f"{w[0]}:{w[1]}" for w in WRITERS])
def test_every_writer_encodes_hostile_text_for_its_sink(
    writer, sink, write, text, tmp_path, schema, mlflow_client
):
    out = write(text, tmp_path, schema, mlflow_client) if sink == "mlflow" else write(text, tmp_path, schema)
    _check(sink, out, text)


def test_encoders_keep_plain_text_as_it_is():
    assert sinks.neutralise("-1") == "-1" and sinks.neutralise("=x") == "'=x"
    assert sinks.file_name("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00_00_00_00_00"
    assert sinks.file_name("..") == "run" and sinks.file_name(".env") == "_env"
    assert sinks.mlflow_key("neptune", prefix="eval_recall.") == "eval_recall.neptune"
    assert sinks.mlflow_key("a/b") != sinks.mlflow_key("a:b")  # changed names stay distinct
    assert sinks.prom_label("PROPFIND", allowed=("GET",)) == "other"
    assert sinks.text("\ud800x") == "\ufffdx"
    assert sinks.bson_value(2**64) == str(2**64) and sinks.bson_key("$where") == "_$where"
