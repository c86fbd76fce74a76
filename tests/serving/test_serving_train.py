"""POST /train: the control plane's own key, the bounds of a triggered run, the Airflow 3 REST
contract, and clear errors when Airflow is down or refuses."""

from __future__ import annotations

import threading

import pytest
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from serving_helpers import free_port, wait_for_port

KEY = "train-key"
SCORING_KEY = "scoring-key"


@pytest.fixture()
def client(registered, make_client):
    """A serving app with /train enabled (a control key), sending that key unless told otherwise."""

    def _make(**kw):
        kw.setdefault("control_key", KEY)
        c = make_client(registered.tracking_uri, **kw)
        if kw["control_key"]:
            c.headers["X-API-Key"] = kw["control_key"]
        return c

    return _make


def test_train_is_off_without_a_control_key_and_the_scoring_key_never_opens_it(client, registered):
    c = client(control_key=None, api_key=SCORING_KEY, airflow_url="http://127.0.0.1:9")
    resp = c.post("/train", json={"force_retrain": True}, headers={"X-API-Key": SCORING_KEY})
    assert resp.status_code == 403
    detail = resp.json()["detail"]
    assert "off" in detail and "NETSEC_SERVING_CONTROL_KEY" in detail and "X-API-Key" in detail
    # Inference stays open without a scoring key.
    rows = registered.frame.drop(columns=["Result"]).head(3).to_dict(orient="records")
    assert client(control_key=None).post("/predict", json={"records": rows}).status_code == 200
    # An empty key (compose passes an unset variable as "") is no key.
    assert client(control_key="", airflow_url="http://127.0.0.1:9").post("/train").status_code == 403
    # With both keys set, a client that may score may not train; the control key may do both.
    both = client(api_key=SCORING_KEY, airflow_url="http://127.0.0.1:9")
    refused = both.post("/train", headers={"X-API-Key": SCORING_KEY})
    assert refused.status_code == 403 and "control-plane key" in refused.json()["detail"]
    assert both.post("/train", headers={"X-API-Key": "wrong"}).status_code == 401
    assert both.post("/train", headers={"X-API-Key": ""}).status_code == 401
    assert (
        both.post("/predict", json={"records": rows}, headers={"X-API-Key": SCORING_KEY}).status_code == 200
    )


def test_train_params_are_bounded_before_anything_reaches_airflow(client):
    """A triggered run may not lower the promotion bar or point the source anywhere: each
    refusal is a 422 naming the param, its value and the bound (Airflow is never called)."""
    from netsec_tasks.config import load_config

    cfg = load_config()
    c = client(airflow_url="http://127.0.0.1:9")  # nothing listens: a 503 would mean "forwarded"
    for body, words in (
        ({"promotion_margin": -1}, ["promotion_margin", "greater than or equal to 0"]),
        ({"min_score": 0}, ["min_score 0", f"registry.min_score {cfg.registry.min_score:g}"]),
        ({"source_path": "/etc/passwd"}, ["source_path '/etc/passwd'", "source.path_roots"]),
        ({"source_path": f"{cfg.source.path_roots[0]}/../../etc/passwd"}, ["'..' segment"]),
        ({"source_path": "data/x.csv"}, ["not an absolute path"]),
        ({"n_iter": 0}, ["training.n_iter"]),
        ({"candidates": ["svm"]}, ["training.candidates"]),
        ({"note": "x"}, ["note", "Extra inputs are not permitted"]),
    ):
        resp = c.post("/train", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert all(w in resp.json()["detail"] for w in words), (body, resp.json())
    # Within bounds it is forwarded (and Airflow, not listening here, is a 503).
    ok = {"promotion_margin": 0.02, "min_score": 0.9, "source_path": f"{cfg.source.path_roots[0]}/x.csv"}
    assert c.post("/train", json=ok).status_code == 503


def test_the_control_key_must_differ_from_the_scoring_key(tmp_path):
    from netsec_tasks.errors import ConfigError
    from serving.settings import Settings

    with pytest.raises(ConfigError, match="NETSEC_SERVING_CONTROL_KEY equals NETSEC_SERVING_API_KEY"):
        Settings(api_key="same", control_key="same", log_dir=str(tmp_path)).check_train_settings()


def test_serving_refuses_to_start_with_the_default_airflow_password(tmp_path):
    """/train enabled against a remote Airflow with the password 'admin': no app, and `netsec
    serve` exits 2 naming the setting. Local defaults, a real password or /train off: it starts."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from netsec_tasks.errors import ConfigError
    from serving.app import create_app
    from serving.settings import Settings

    remote = dict(
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
        log_dir=str(tmp_path / "p"),
        airflow_url="http://airflow-apiserver:8080",
    )
    with pytest.raises(ConfigError, match="NETSEC_SERVING_AIRFLOW_PASSWORD is Airflow's default"):
        create_app(Settings(control_key=KEY, **remote))
    Settings(control_key=KEY, airflow_password="s3cret-pw", **remote).check_train_settings()
    Settings(**remote).check_train_settings()  # /train off: nothing to protect
    Settings(control_key=KEY, **{**remote, "airflow_url": "http://localhost:8080"}).check_train_settings()

    env = {
        **os.environ,
        "NETSEC_SERVING_CONTROL_KEY": KEY,
        "NETSEC_SERVING_AIRFLOW_URL": "http://airflow.example.org:8080",
        "NETSEC_SERVING_MLFLOW_TRACKING_URI": remote["mlflow_tracking_uri"],
        "NETSEC_HOME": str(tmp_path),
    }
    env.pop("NETSEC_SERVING_AIRFLOW_PASSWORD", None)
    netsec = Path(sys.executable).parent / "netsec"
    proc = subprocess.run(
        [str(netsec), "serve", "--port", "9"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "NETSEC_SERVING_AIRFLOW_PASSWORD" in proc.stderr and "Traceback" not in proc.stderr


def test_train_without_airflow_configured_is_503(client):
    resp = client().post("/train")
    assert resp.status_code == 503 and "NETSEC_SERVING_AIRFLOW_URL" in resp.json()["detail"]


def test_train_with_airflow_unreachable_is_503(client):
    port = free_port()
    resp = client(airflow_url=f"http://127.0.0.1:{port}").post("/train", json={"force_retrain": True})
    assert resp.status_code == 503
    assert "unreachable" in resp.json()["detail"] and str(port) in resp.json()["detail"]


def test_train_bad_bodies(client):
    c = client(airflow_url="http://127.0.0.1:9")
    assert c.post("/train", content=b"force", headers={"Content-Type": "text/plain"}).status_code == 415
    assert c.post("/train", content=b"{bad", headers={"Content-Type": "application/json"}).status_code == 422
    resp = c.post("/train", json={"force_retrain": "maybe"})
    assert resp.status_code == 422 and resp.json()["column"] == "force_retrain"


class FakeAirflow:
    """A stand-in for the Airflow 3.3 api-server that parses requests with Airflow's own
    request models (LoginBody, TriggerDAGRunPostBody), so the client is checked against the
    real contract without starting Airflow's scheduler, database and DAG processor."""

    def __init__(self, known_dag: str = "netsec_training", password: str = "pw"):
        from airflow.api_fastapi.auth.managers.simple.datamodels.login import LoginBody
        from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody

        self.calls: list[dict] = []
        app = FastAPI()

        @app.post("/auth/token", status_code=201)
        async def token(request: Request):
            body = LoginBody.model_validate_json(await request.body())
            if body.password != password:
                raise HTTPException(401, "Invalid credentials")
            return {"access_token": "jwt-for-" + body.username}

        @app.post("/api/v2/dags/{dag_id}/dagRuns")
        async def trigger(dag_id: str, request: Request, authorization: str = Header("")):
            if not authorization.startswith("Bearer jwt-for-"):
                raise HTTPException(401, "Not authenticated")
            raw = await request.json()
            body = TriggerDAGRunPostBody.model_validate(raw)  # 'logical_date' is required
            self.calls.append(raw)
            if dag_id != known_dag:
                return JSONResponse({"detail": f"Dag with dag_id: '{dag_id}' not found"}, 404)
            return {
                "dag_run_id": "manual__2026-01-01T00:00:00+00:00",
                "dag_id": dag_id,
                "state": "queued",
                "conf": body.conf,
                "logical_date": None,
            }

        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.mark.airflow
def test_train_triggers_dag_run(client):
    pytest.importorskip("airflow")
    with FakeAirflow() as airflow:
        c = client(
            airflow_url=f"http://127.0.0.1:{airflow.port}", airflow_username="admin", airflow_password="pw"
        )
        resp = c.post("/train", json={"force_retrain": True, "promotion_margin": 0.01})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["dag_id"] == "netsec_training" and body["dag_run_id"].startswith("manual__")
        assert airflow.calls == [
            {"logical_date": None, "conf": {"force_retrain": True, "promotion_margin": 0.01}}
        ]
        assert c.post("/train").json()["conf"] == {"force_retrain": False}

        wrong_pw = client(airflow_url=f"http://127.0.0.1:{airflow.port}", airflow_password="nope")
        resp = wrong_pw.post("/train")
        assert resp.status_code == 502 and "401" in resp.json()["detail"]

        wrong_dag = client(
            airflow_url=f"http://127.0.0.1:{airflow.port}", airflow_password="pw", airflow_dag_id="nope"
        )
        resp = wrong_dag.post("/train")
        assert resp.status_code == 502 and "not found" in resp.json()["detail"]
