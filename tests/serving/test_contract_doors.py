"""The input contract at every door that scores or compares rows: JSON (/predict), CSV
(/predict/csv), the CLI (netsec predict) and drift over served traffic (netsec drift).

For each door: nullable cells are imputed by the model's own Pipeline and counted; a row over
validation.max_row_null_share, or all blank, is refused; each kind of domain violation (outside
``allowed``, not an integer, a non-nullable null) is refused, or flagged under the option;
passthrough columns (ids, ignored columns, the target) come back unchanged; CSV cells a
spreadsheet would run are neutralised.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from serving_helpers import TARGET, records_of, training_frame

from netsec_tasks.contract import OUTPUT_COLUMNS, Contract
from netsec_tasks.dataset_schema import load_schema
from netsec_testing import REPO

# The forest is served through onnxruntime: within ATOL of the Pipeline (serving/fastpath.py).
from serving.fastpath import ATOL

SCHEMA_PATH = REPO / "config" / "schema" / "phishing.yaml"
MODEL = "netsec-phishing"  # the served registered model (the label every traffic series carries)
FORMULAS = ['=HYPERLINK("http://evil.example","x")', "@SUM(1+1)", "+1+cmd", "-2+3", "\tTAB", "\rCR"]
# (name, column, value, words the refusal must contain)
DOMAIN_CASES = [
    ("outside allowed", "having_IP_Address", 5, ["having_IP_Address", "5", "[-1, 1]"]),
    ("not an integer", "URL_Length", 0.5, ["URL_Length", "0.5", "not an integer"]),
    ("negative outside allowed", "Shortining_Service", -7, ["Shortining_Service", "-7", "[-1, 1]"]),
]


def _features(n: int, seed: int) -> pd.DataFrame:
    return training_frame(n, seed=seed).drop(columns=[TARGET])


def _expected_proba(pipeline, frame: pd.DataFrame) -> np.ndarray:
    x = frame[list(load_schema(SCHEMA_PATH).features)].astype("float64")
    return pipeline.predict_proba(x)[:, 1]


def _metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("{", 1)[1].split("}", 1)[0] == want:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _rows_counted(client, outcome: str, route: str) -> float:
    """``netsec_input_rows_total`` of the model's rows with ``outcome`` on ``route``, as
    /metrics says now."""
    metrics = client.get("/metrics").text
    return _metric(metrics, "netsec_input_rows_total", model=MODEL, outcome=outcome, route=route)


def _assert_pipeline_scores(got: list, pipeline, rows: pd.DataFrame) -> None:
    """The served threat probabilities ``got`` are the pipeline's own on ``rows`` (to ATOL)."""
    np.testing.assert_allclose(got, _expected_proba(pipeline, rows), rtol=0, atol=ATOL)


@pytest.fixture()
def client(registered, make_client):
    return make_client(registered.tracking_uri, max_rows=1000)


# --------------------------------------------------------------------------- JSON door


def test_json_nulls_are_imputed_by_the_model_and_counted(client, registered):
    rows = _features(4, seed=40)
    records = records_of(rows)
    records[1]["SFH"] = None
    records[1]["Favicon"] = None
    records[3]["port"] = None
    records[2]["Iframe"] = "__nan__"
    body = json.dumps({"records": records}).replace('"__nan__"', "NaN")  # Python's json reads NaN
    resp = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    got = resp.json()["predictions"]
    assert [p["imputed_cells"] for p in got] == [0, 2, 1, 1]

    frame = rows.astype("float64").reset_index(drop=True)
    frame.loc[1, ["SFH", "Favicon"]] = np.nan
    frame.loc[2, "Iframe"] = np.nan
    frame.loc[3, "port"] = np.nan
    _assert_pipeline_scores([p["threat_probability"] for p in got], registered.pipeline, frame)
    metrics = client.get("/metrics").text
    assert _metric(metrics, "netsec_input_rows_total", model=MODEL, outcome="imputed", route="/predict") == 3
    assert _metric(metrics, "netsec_imputed_cells_total", model=MODEL, route="/predict") == 4
    # Issue 21's key: every series about the model's traffic names the model.
    assert _metric(metrics, "netsec_inference_seconds_count", model=MODEL, rows="2-64") >= 1
    assert _metric(metrics, "netsec_model_loaded", model=MODEL) == 1


@pytest.mark.parametrize("n_null,words", [(16, ["more than 50%", "16/30"]), (30, ["every feature is blank"])])
def test_json_over_null_and_all_blank_rows_are_refused(client, n_null, words):
    records = records_of(_features(3, seed=41))
    for f in list(records[2])[:n_null]:
        records[2][f] = None
    resp = client.post("/predict", json={"records": records})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["row"] == 2 and body["column"] is None
    for w in words:
        assert w in body["detail"], body["detail"]
    assert "records[2]" in body["detail"]
    # 15 of 30 is exactly the limit (50%): imputed, not refused.
    records = records_of(_features(1, seed=41))
    for f in list(records[0])[:15]:
        records[0][f] = None
    ok = client.post("/predict", json={"records": records})
    assert ok.status_code == 200 and ok.json()["predictions"][0]["imputed_cells"] == 15


@pytest.mark.parametrize("name,column,value,words", DOMAIN_CASES, ids=[c[0] for c in DOMAIN_CASES])
def test_json_domain_violations_are_refused_naming_row_column_value(client, name, column, value, words):
    records = records_of(_features(3, seed=42))
    records[1][column] = value
    resp = client.post("/predict", json={"records": records})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert (body["row"], body["column"], body["value"]) == (1, column, str(value))
    assert body["allowed"] and "one of" in body["allowed"]
    for w in words + ["records[1]"]:
        assert w in body["detail"], body["detail"]
    assert _rows_counted(client, "refused", "/predict") == 1


def test_json_non_nullable_null_is_refused(registered, make_client, tmp_path):
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    schema["columns"]["SSLfinal_State"]["nullable"] = False
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(schema))
    client = make_client(registered.tracking_uri, schema_path=str(path))
    records = records_of(_features(2, seed=43))
    records[1]["SSLfinal_State"] = None
    records[0]["Favicon"] = None  # nullable: fine
    body = client.post("/predict", json={"records": records}).json()
    assert (body["row"], body["column"]) == (1, "SSLfinal_State")
    assert "non-nullable" in body["detail"] and "records[1]" in body["detail"]


def test_json_passthrough_columns_are_echoed_unknown_ones_refused(client):
    records = records_of(_features(3, seed=44))
    for i, r in enumerate(records):
        r.update({"id": FORMULAS[i], "url": f"http://site{i}.example/", TARGET: -1, "ingested_at": None})
    got = client.post("/predict", json={"records": records})
    assert got.status_code == 200, got.text
    preds = got.json()["predictions"]
    assert [p["id"] for p in preds] == FORMULAS[:3]  # JSON is not a spreadsheet: as sent
    assert [p["url"] for p in preds] == [r["url"] for r in records]
    assert {p[TARGET] for p in preds} == {-1} and "SFH" not in preds[0]
    echoed = client.post("/predict?echo=true", json={"records": records}).json()["predictions"]
    assert [p["SFH"] for p in echoed] == [r["SFH"] for r in records]

    resp = client.post("/predict", json={"records": [{**records[0], "referrer": "x"}]})
    assert resp.status_code == 422 and resp.json()["column"] == "referrer"
    assert "id_columns" in resp.json()["detail"]
    resp = client.post("/predict", json={"records": [{**records[0], "Unnamed: 0": 0}]})
    assert resp.status_code == 422 and "row index" in resp.json()["detail"]


def test_fast_decode_and_contract_path_agree(registered):
    """The msgspec decoder accepts a subset of what the contract path accepts, with the same
    matrix and null counts; what it declines, the contract path accepts or refuses."""
    from serving.inputs import InputError, fast_json_input, json_input

    contract = Contract(load_schema(SCHEMA_PATH), max_row_null_share=0.5)
    model = SimpleNamespace(features=tuple(registered.features), numeric_only=True)
    base = records_of(_features(5, seed=45))
    rng = np.random.default_rng(0)
    variants = [base, base[:1]]
    for _ in range(60):
        recs = [dict(r) for r in base]
        for r in recs:
            for f in rng.choice(list(r), size=rng.integers(0, 18), replace=False):
                r[f] = rng.choice([None, 5, 0.5, -7, 1, -1, 0, 1.0, True, "1"])
            if rng.random() < 0.3:
                r["id"] = "x"
        variants.append(recs)
    n_fast = 0
    for recs in variants:
        body = json.dumps({"records": recs}).encode()
        fast = fast_json_input(body, contract, model, 1000)
        try:
            slow = json_input(body, contract, model, 1000)
        except InputError:
            assert fast is None, recs
            continue
        if fast is not None:
            n_fast += 1
            np.testing.assert_array_equal(fast.x, slow.x)
            np.testing.assert_array_equal(fast.null_cells, slow.null_cells)
    assert n_fast >= 2  # the fast decode did take the well-formed payloads


# --------------------------------------------------------------------------- CSV door


def _upload(client, frame: pd.DataFrame, query: str = "", accept: str = "application/json"):
    # CRLF: pandas quotes a cell holding a bare CR only when CR is part of the line end.
    data = frame.to_csv(index=False, lineterminator="\r\n").encode()
    return client.post(
        f"/predict/csv{query}", headers={"Accept": accept}, files={"file": ("rows.csv", data, "text/csv")}
    )


def test_csv_blank_cells_are_imputed_and_counted(client, registered):
    rows = _features(5, seed=50).astype(object)
    rows.loc[1, "SFH"] = None
    rows.loc[3, ["port", "Iframe", "Favicon"]] = None
    resp = _upload(client, rows)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [r["imputed_cells"] for r in body["records"]] == [0, 1, 0, 3, 0]
    assert body["n_imputed_rows"] == 2 and body["n_invalid"] == 0
    _assert_pipeline_scores([r["threat_probability"] for r in body["records"]], registered.pipeline, rows)
    assert _rows_counted(client, "imputed", "/predict/csv") == 2


def _bad_rows() -> pd.DataFrame:
    rows = _features(8, seed=51).astype(object)
    rows.insert(0, "id", [f"r{i}" for i in range(8)])
    rows.loc[1, "having_IP_Address"] = 5
    rows.loc[2, "URL_Length"] = 0.5
    rows.loc[3, "Shortining_Service"] = -7
    rows.loc[4, rows.columns[1:17]] = None  # 16 of 30 features null
    rows.loc[5, rows.columns[1:]] = None  # all blank
    return rows


def test_csv_refuses_invalid_rows_by_default_and_flags_them_on_request(client, registered):
    rows = _bad_rows()
    resp = _upload(client, rows)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert (body["row"], body["column"], body["value"]) == (1, "having_IP_Address", "5")
    assert "line 3" in body["detail"]
    assert [(p["row"], p["column"]) for p in body["problems"]] == [
        (1, "having_IP_Address"),
        (2, "URL_Length"),
        (3, "Shortining_Service"),
        (4, "*"),
        (5, "*"),
    ]

    flagged = _upload(client, rows, "?invalid=flag")
    assert flagged.status_code == 200, flagged.text
    out = flagged.json()
    assert out["n_invalid"] == 5
    recs = out["records"]
    assert [r["status"] for r in recs] == ["ok"] + ["invalid"] * 5 + ["ok", "ok"]
    assert "outside allowed values" in recs[1]["reason"] and "not an integer" in recs[2]["reason"]
    assert "-7" in recs[3]["reason"] and "more than 50%" in recs[4]["reason"]
    assert "every feature is blank" in recs[5]["reason"]
    assert all(r["threat_probability"] is None and r["predicted_label"] is None for r in recs[1:6])
    assert [r["id"] for r in recs] == list(rows["id"])
    valid = rows.iloc[[0, 6, 7]]
    _assert_pipeline_scores([recs[i]["threat_probability"] for i in (0, 6, 7)], registered.pipeline, valid)
    assert _rows_counted(client, "refused", "/predict/csv") == 5
    assert _rows_counted(client, "flagged", "/predict/csv") == 5


def test_csv_passthrough_echoed_and_formula_cells_neutralised(client):
    rows = _features(len(FORMULAS), seed=52)
    rows.insert(0, "id", ["007", *FORMULAS[1:]])
    rows["url"] = FORMULAS
    rows[TARGET] = -1
    resp = _upload(client, rows, "?format=csv")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    text = resp.text
    out = pd.read_csv(io.StringIO(text), dtype={"id": str})
    assert list(out.columns) == list(rows.columns) + list(OUTPUT_COLUMNS)
    assert out.loc[0, "id"] == "007"  # ids come back as written
    for cell in out["url"]:
        assert cell[0] == "'", cell  # every formula start is neutralised
    assert list(out["url"].str[1:]) == FORMULAS
    # Negative numbers stay numbers: -1 features and the -1 target are not touched.
    assert (out[TARGET] == -1).all() and (out["having_IP_Address"].isin([-1, 1])).all()
    assert "'-1" not in text
    # JSON has no formulas: the same cells come back exactly as sent.
    assert [r["url"] for r in _upload(client, rows).json()["records"]] == FORMULAS
    bad = rows.assign(referrer=1)
    resp = _upload(client, bad)
    assert resp.status_code == 422 and "referrer" in resp.json()["detail"]
    resp = _upload(client, rows.reset_index())  # a written-out index
    assert resp.status_code == 422 and "row index" in resp.json()["detail"]


# --------------------------------------------------------------------------- CLI door


def _netsec(*args, registered, home: Path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NETSEC_") and k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    }
    env.update({"NETSEC_HOME": str(home), "MLFLOW_TRACKING_URI": registered.tracking_uri})
    return subprocess.run(
        [sys.executable, "-m", "netsec_tasks.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_predict_applies_the_same_contract_and_columns(registered, client, tmp_path):
    rows = _bad_rows()
    rows.loc[0, "SFH"] = None  # imputed
    rows.loc[6, "id"] = FORMULAS[0]
    rows["url"] = "http://x.example/"
    src = tmp_path / "rows.csv"
    rows.to_csv(src, index=False)

    refused = _netsec(
        "predict", str(src), "--out", str(tmp_path / "out.csv"), registered=registered, home=tmp_path
    )
    assert refused.returncode == 2, refused.stderr
    assert "line 3" in refused.stderr and "having_IP_Address" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "out.csv").exists()

    out_path = tmp_path / "out.csv"
    flagged = _netsec(
        "predict", str(src), "--out", str(out_path), "--invalid", "flag", registered=registered, home=tmp_path
    )
    assert flagged.returncode == 0, flagged.stderr
    assert "5 invalid" in flagged.stdout and "1 with imputed" in flagged.stdout
    out = pd.read_csv(out_path, dtype={"id": str})
    assert list(out["status"]) == ["ok"] + ["invalid"] * 5 + ["ok", "ok"]
    assert out.loc[0, "imputed_cells"] == 1 and out.loc[6, "id"] == "'" + FORMULAS[0]
    assert "every feature is blank" in out.loc[5, "reason"]

    # The API answers the same file with the same columns, in the same order, same scores.
    api = _upload(client, rows, "?format=csv&invalid=flag")
    api_out = pd.read_csv(io.StringIO(api.text), dtype={"id": str})
    assert list(api_out.columns) == list(out.columns) == list(rows.columns) + list(OUTPUT_COLUMNS)
    # Only the API's rows are logged, so only they have prediction ids.
    assert out["prediction_id"].isna().all()
    assert api_out["prediction_id"].notna().tolist() == (api_out["status"] == "ok").tolist()
    pd.testing.assert_frame_equal(
        out.drop(columns=["model_version", "prediction_id"]),
        api_out.drop(columns=["model_version", "prediction_id"]),
    )


# --------------------------------------------------------------------------- reasons at every door


def test_every_door_gives_the_same_reasons_for_the_same_row(registered, client, tmp_path):
    """explain=K / --explain K: the library, /predict, /predict/csv (JSON and CSV) and netsec
    predict give each row the same K reasons (the page: test_serving_browser), imputed cells
    say so, and invalid rows have none."""
    from netsec_tasks.explain import Explainer, reasons_text

    rows = _bad_rows().drop(index=[1, 2, 3, 4, 5]).reset_index(drop=True)  # valid rows
    extra = _features(6, seed=52).astype(object)
    extra.insert(0, "id", [f"s{i}" for i in range(6)])
    rows = pd.concat([rows, extra], ignore_index=True)
    rows.loc[1, "SFH"] = None
    rows.loc[4, ["Favicon", "port"]] = None
    rows.loc[6, "id"] = FORMULAS[0]  # echoed; the reasons cell is ours
    features = registered.features
    x = rows[features].astype("float64")
    explainer = Explainer(registered.pipeline, features)
    library = explainer.reasons(x, 3)
    texts = [reasons_text(r) for r in library]
    assert all(len(r) == 3 for r in library)
    every = explainer.reasons(x.iloc[[1, 4]], len(features))
    imputed = sorted(r.column for row in every for r in row if r.imputed)
    assert imputed == ["Favicon", "SFH", "port"]
    assert all(r.value is None and -1 <= r.imputed_value <= 1 for row in every for r in row if r.imputed)

    def same(got: list[dict], want) -> None:
        assert [{k: v for k, v in g.items() if k != "contribution"} for g in got] == [
            {k: v for k, v in w.as_dict().items() if k != "contribution"} for w in want
        ]
        np.testing.assert_allclose(
            [g["contribution"] for g in got], [w.contribution for w in want], atol=1e-9
        )

    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
    api = client.post("/predict?explain=3", json={"records": records})
    assert api.status_code == 200, api.text
    body = api.json()
    assert body["reasons_unit"] == explainer.unit == "probability"
    assert body["reasons_base_value"] == pytest.approx(explainer.base_value)
    for got, want in zip(body["predictions"], library):
        same(got["reasons"], want)

    as_json = _upload(client, rows, "?explain=3").json()
    assert as_json["columns"][-1] == "reasons" and as_json["reasons_unit"] == "probability"
    for got, want in zip(as_json["records"], library):
        same(got["reasons"], want)

    as_csv = _upload(client, rows, "?explain=3&format=csv")
    api_out = pd.read_csv(io.StringIO(as_csv.text), dtype={"id": str}, keep_default_na=False)
    assert list(api_out.columns) == list(rows.columns) + list(OUTPUT_COLUMNS) + ["reasons"]
    assert api_out["reasons"].tolist() == texts

    src = tmp_path / "rows.csv"
    rows.to_csv(src, index=False)
    out_path = tmp_path / "out.csv"
    cli = _netsec(
        "predict", str(src), "--out", str(out_path), "--explain", "3", registered=registered, home=tmp_path
    )
    assert cli.returncode == 0, cli.stderr
    assert "reasons: 3 per row, contributions in probability" in cli.stdout
    out = pd.read_csv(out_path, dtype={"id": str}, keep_default_na=False)
    assert out["reasons"].tolist() == texts
    assert out.loc[6, "id"] == "'" + FORMULAS[0]

    # explain_rows=alerts: reasons for the rows predicted a threat only (what the page asks).
    alerts = client.post("/predict?explain=3&explain_rows=alerts", json={"records": records}).json()
    for got, want in zip(alerts["predictions"], library):
        if got["is_threat"]:
            same(got["reasons"], want)
        else:
            assert got["reasons"] is None
    assert {p["is_threat"] for p in alerts["predictions"]} == {0, 1}

    # Invalid rows (flagged) are not explained; a bad K is refused in one line.
    flagged = _upload(client, _bad_rows(), "?explain=2&invalid=flag").json()
    assert [r["reasons"] is None for r in flagged["records"]] == [
        r["status"] == "invalid" for r in flagged["records"]
    ]
    for bad in ("-1", "x", "1001"):
        refused = client.post(f"/predict?explain={bad}", json={"records": records[:1]})
        assert refused.status_code == 422 and f"explain='{bad}'" in refused.json()["detail"]
    refused = client.post("/predict?explain=2&explain_rows=some", json={"records": records[:1]})
    assert refused.status_code == 422 and "explain_rows='some'" in refused.json()["detail"]
    upload = _upload(client, rows, "?explain=3.5")
    assert upload.status_code == 422 and "whole number from 0 to 1000" in upload.json()["detail"]
    bad = _netsec("predict", str(src), "--explain", "-2", registered=registered, home=tmp_path)
    assert bad.returncode == 2 and "--explain: invalid non-negative int value: '-2'" in bad.stderr


def test_explain_off_leaves_the_answers_as_they_were(client):
    """Without explain (or explain=0) the answers carry no reasons field at all."""
    rows = _features(3, seed=53)
    records = records_of(rows)
    plain = client.post("/predict", json={"records": records}).json()
    zero = client.post("/predict?explain=0", json={"records": records}).json()
    keys = {
        "predicted_label",
        "is_threat",
        "threat_probability",
        "imputed_cells",
        "model_version",
        "prediction_id",
    }
    for body in (plain, zero):
        assert set(body) == {"model_name", "model_version", "predictions"}
        assert all(set(p) == keys for p in body["predictions"])
    strip = [{k: v for k, v in p.items() if k != "prediction_id"} for p in plain["predictions"]]
    assert strip == [{k: v for k, v in p.items() if k != "prediction_id"} for p in zero["predictions"]]
    csv_body = _upload(client, rows).json()
    assert "reasons" not in csv_body["columns"] and not any(k.startswith("reasons") for k in csv_body)
    # Read by hand (a declared parameter costs every request), documented all the same.
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/predict/csv"):
        params = {p["name"]: p for p in paths[path]["post"]["parameters"]}
        assert params["explain"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 1000, "default": 0}
        assert params["explain_rows"]["schema"]["enum"] == ["all", "alerts"]
        assert "echo" in params


# --------------------------------------------------------------------------- traffic drift


def test_traffic_drift_reports_excluded_rows_and_why(registered, tmp_path):
    """Rows in the prediction log that break the contract (written under an older schema, or
    by another writer) are excluded and reported; rows with imputed nulls are compared."""
    import datetime as dt

    from netsec_tasks.config import load_config
    from netsec_tasks.drift import drift_between_files
    from netsec_tasks.prediction_log import prediction_documents

    features = registered.features
    served = _features(300, seed=60).astype("float64").reset_index(drop=True)
    served.loc[0, "SFH"] = np.nan  # imputed when served: kept
    served.loc[1, "having_IP_Address"] = 5  # outside allowed
    served.loc[2, "URL_Length"] = 0.5  # not an integer
    served.loc[3, features[:16]] = np.nan  # over the null share
    served.loc[4, features] = np.nan  # all blank
    served.loc[5:120, "Favicon"] = 7  # many rows: still compared, not refused
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    docs = prediction_documents(
        time=dt.datetime(2026, 11, 29, tzinfo=dt.UTC),
        model_name="netsec-phishing",
        model_version="1",
        route="/predict",
        features=features,
        inputs=served[features].to_numpy(),
        is_threat=np.zeros(len(served), dtype=int),
        probability=np.zeros(len(served)),
        labels=[1] * len(served),
        max_rows=100,
    )
    with open(log_dir / "predictions-2026-11-29.jsonl", "w") as fh:
        for d in docs:
            fh.write(json.dumps({**d, "time": d["time"].isoformat()}) + "\n")
    reference = tmp_path / "train.csv"
    ref = registered.frame.copy()
    ref.insert(0, "id", range(len(ref)))  # an id column: accepted, not compared
    ref.to_csv(reference, index=False)
    cfg = load_config(REPO / "config" / "pipeline.yaml", environ={"NETSEC_HOME": str(tmp_path)})

    record = drift_between_files(reference, log_dir, cfg, tmp_path / "drift")
    report = yaml.safe_load(Path(record.report_uri).read_text())
    current = report["excluded"]["current"]
    assert current["rows_checked"] == 300 and current["rows_excluded"] == 120
    reasons = current["reasons"]
    assert reasons["outside allowed values [-1, 1]"] == 117  # row 1 and rows 5..120
    assert reasons["not an integer"] == 1 and reasons["every feature is blank"] == 1
    assert any(k.startswith("more than 50%") for k in reasons)
    assert [(x["row"], x["column"]) for x in current["examples"][:3]] == [
        (1, "having_IP_Address"),
        (2, "URL_Length"),
        (3, "*"),
    ]
    assert report["excluded"]["reference"]["rows_excluded"] == 0
    assert report["n_current"] == 180  # row 0 (one imputed null) is compared
    html = Path(record.html_uri).read_text()
    assert "Excluded rows" in html and "120 of 300 rows excluded" in html
    assert "every feature is blank" in html


# --------------------------------------------------------------------------- large batches


def _settled_rss(
    proc, client, before: int, logged: int, within: int = 100 * 1024 * 1024, timeout: float = 180.0
) -> int:
    """RSS once the answer is out and the prediction log has written its ``logged`` rows: the
    log holds a request's rows until its writer flushes them (off the request, a few seconds; far
    longer on a loaded machine) and hands their memory back right after (release_memory)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        if _metric(text, "netsec_prediction_log_written_rows_total", model=MODEL) >= logged:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the prediction log did not write {logged} rows in {timeout:.0f} s")
    # Then the trims (the log writer's, the answer's background task) run; give them 20 s.
    deadline = time.monotonic() + 20
    rss = proc.memory_info().rss
    while rss - before >= within and time.monotonic() < deadline:
        time.sleep(0.5)
        rss = proc.memory_info().rss
    return rss


@pytest.mark.slow
def test_large_upload_is_streamed_and_memory_comes_back(registered, uvicorn_server):
    """A 100k-row upload against a real uvicorn process: the CSV answer is streamed, the JSON
    answer does not echo the features, and once answered the server's RSS is back within
    100 MB of where it was before the upload."""
    import httpx
    import psutil
    from serving_helpers import wait_ready_http

    server = uvicorn_server(registered.tracking_uri, max_rows=100_000, max_body_bytes=50 * 1024 * 1024)
    wait_ready_http(server.url)
    proc = psutil.Process(server.proc.pid)
    rows = training_frame(100_000, seed=70)
    rows.insert(0, "id", [f"row-{i}" for i in range(len(rows))])
    data = rows.to_csv(index=False).encode()
    with httpx.Client(base_url=server.url, timeout=300) as c:
        # Warm: the first requests load code paths and pools that stay; measure after them.
        small = rows.head(2000).to_csv(index=False).encode()
        for fmt in ("csv", "json"):
            assert (
                c.post(f"/predict/csv?format={fmt}", files={"file": ("s.csv", small, "text/csv")}).status_code
                == 200
            )
        before = proc.memory_info().rss
        with c.stream(
            "POST", "/predict/csv?format=csv", files={"file": ("big.csv", data, "text/csv")}
        ) as resp:
            assert resp.status_code == 200
            assert "content-length" not in resp.headers  # streamed (chunked)
            chunks = [len(b) for b in resp.iter_bytes()]
        assert len(chunks) > 1 and sum(chunks) > len(data)
        after_csv = _settled_rss(proc, c, before, logged=2 * 2000 + 100_000)
        resp = c.post("/predict/csv", files={"file": ("big.csv", data, "text/csv")})
        assert resp.status_code == 200
        body = resp.json()
        assert body["n_rows"] == 100_000 and body["columns"] == ["id", TARGET, *OUTPUT_COLUMNS]
        after_json = _settled_rss(proc, c, before, logged=2 * 2000 + 2 * 100_000)
    mb = 1024 * 1024
    print(
        f"server RSS: before {before / mb:.0f} MB, after CSV answer {after_csv / mb:.0f} MB, "
        f"after JSON answer {after_json / mb:.0f} MB"
    )
    assert after_csv - before < 100 * mb
    assert after_json - before < 100 * mb


def test_openapi_request_schema_is_the_contract_and_model_names_the_data_set(client):
    doc = client.get("/openapi.json").json()
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    row = body["properties"]["records"]["items"]
    assert row["required"] == load_schema(SCHEMA_PATH).features
    assert row["properties"]["having_IP_Address"] == {"type": ["integer", "null"], "enum": [-1, 1, None]}
    assert {"id", "url", TARGET} <= set(row["properties"]) and row["additionalProperties"] is False
    assert body["properties"]["records"]["maxItems"] == 1000
    info = client.get("/model").json()
    assert info["dataset"] == "phishing" and info["schema_version"] == "1"
