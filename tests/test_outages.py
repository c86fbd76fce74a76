"""Which errors mean "unreachable" (decided by type, one place), the MLflow budget from config,
and model-load errors that name the model version instead of a temp path.

Every error here comes from a real client talking to a real (closed, frozen or broken) endpoint.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from netsec_tasks.errors import RegistryError, SourceUnavailable
from netsec_tasks.outages import is_unreachable, owner_alive, owner_id

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def closed_port():
    from netsec_testing import free_port

    return free_port()  # nothing listens there


def _raised(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever the client raised
        return exc
    raise AssertionError("expected the call to fail")


def test_connection_errors_of_every_client_are_unreachable(closed_port, tmp_path):
    import boto3
    import pymongo
    import requests
    from botocore.config import Config
    from mlflow import MlflowClient

    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    errors = {
        "requests": _raised(lambda: requests.get(f"http://127.0.0.1:{closed_port}/", timeout=2)),
        "mlflow": _raised(lambda: MlflowClient(f"http://127.0.0.1:{closed_port}").search_experiments()),
        "pymongo": _raised(
            lambda: pymongo.MongoClient(
                f"mongodb://127.0.0.1:{closed_port}/", serverSelectionTimeoutMS=300, connectTimeoutMS=300
            ).admin.command("ping")
        ),
        "botocore": _raised(
            lambda: boto3.client(
                "s3",
                endpoint_url=f"http://127.0.0.1:{closed_port}",
                region_name="us-east-1",
                aws_access_key_id="x",
                aws_secret_access_key="x",
                config=Config(retries={"max_attempts": 1}, connect_timeout=1),
            ).list_buckets()
        ),
        "sqlite": _raised(
            lambda: sqlite3.connect(f"file:{tmp_path}/no/such/dir/x.db?mode=rwc", uri=True).execute(
                "select 1"
            )
        ),
    }
    for name, exc in errors.items():
        assert is_unreachable(exc), f"{name}: {type(exc).__name__}: {exc}"


def test_refusals_are_not_unreachable(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    refused = _raised(lambda: client.get_registered_model("no-such-model"))
    assert type(refused).__name__ == "MlflowException"
    assert not is_unreachable(refused)
    assert not is_unreachable(FileNotFoundError(2, "No such file", "/x/y"))
    assert not is_unreachable(ValueError("bad value"))


def test_mlflow_budget_comes_from_config(make_cfg, closed_port):
    from netsec_tasks.registry import get_production

    uri = f"http://127.0.0.1:{closed_port}"
    cfg = make_cfg(
        **{
            "registry.tracking_uri": uri,
            "registry.request_timeout_seconds": 4,
            "registry.max_retries": 1,
            "registry.backoff_factor": 0,
        }
    )
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "7"  # MLflow's default: ~4 min of retries
    with pytest.raises(SourceUnavailable) as err:
        get_production(cfg)
    assert (
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"],
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"],
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"],
    ) == ("4", "1", "0")
    message = str(err.value)
    assert uri in message and "\n" not in message
    assert "2 attempt(s) of at most 4 s" in message and "ConnectionRefusedError" in message


def test_owner_of_a_live_and_a_dead_process():
    assert owner_alive(owner_id()) is True
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = owner_id(proc.pid)
    proc.wait()
    assert owner_alive(owner) is False
    assert owner_alive("another-host|1|123|456") is None
    assert owner_alive(None) is None and owner_alive("garbage") is None


# --------------------------------------------------------------------------- load errors


@pytest.fixture()
def registered_version(make_cfg, tmp_path):
    """A promoted version of a small Pipeline in a fresh SQLite store; (cfg, model dir, run id)."""
    import mlflow
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.sample import make_sample
    from netsec_tasks.storage import file_uri_to_path
    from netsec_tasks.tracking import configure_mlflow, log_pipeline_model, mlflow_client

    cfg = make_cfg(
        **{
            "registry.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "registry.artifact_location": str(tmp_path / "mlartifacts"),
            "registry.model_name": "load-errors",
        }
    )
    schema = load_schema(cfg.schema_path)
    frame = make_sample(300, seed=3)
    y = schema.is_threat(frame[schema.target.column]).astype(int)
    model = Pipeline(
        [
            ("preprocess", ColumnTransformer([("num", "passthrough", schema.features)])),
            ("model", DecisionTreeClassifier(max_depth=2, random_state=0)),
        ]
    )
    model.fit(frame[schema.features], y)
    exp_id = configure_mlflow(cfg)
    with mlflow.start_run(experiment_id=exp_id) as run:
        model_uri = log_pipeline_model(model, frame[schema.features].head(5))
    client = mlflow_client(cfg)
    mv = mlflow.register_model(model_uri, "load-errors")
    client.set_registered_model_alias("load-errors", "production", mv.version)
    location = client.get_logged_model(model_uri.split("/")[-1]).artifact_location
    return cfg, file_uri_to_path(location), run.info.run_id


@pytest.mark.parametrize("damage", ["garbage", "pickle", "untrusted", "missing"])
def test_load_errors_name_the_version_run_and_artifact(registered_version, damage):
    import yaml

    from netsec_tasks.registry import load_production_model

    cfg, model_dir, run_id = registered_version
    mlmodel = model_dir / "MLmodel"
    conf = yaml.safe_load(mlmodel.read_text())
    if damage == "garbage":
        (model_dir / "model.skops").write_bytes(b"not a zip file")
        expected = "artifact model.skops cannot be loaded"
    elif damage == "pickle":
        conf["flavors"]["sklearn"]["serialization_format"] = "cloudpickle"
        mlmodel.write_text(yaml.safe_dump(conf))
        expected = "serialization format 'cloudpickle' refused"
    elif damage == "untrusted":
        conf["flavors"]["sklearn"]["skops_trusted_types"].append("builtins.eval")
        mlmodel.write_text(yaml.safe_dump(conf))
        expected = "builtins.eval"
    else:
        shutil.rmtree(model_dir)
        expected = "artifacts are missing"
    with pytest.raises(RegistryError) as err:
        load_production_model(cfg)
    message = str(err.value)
    assert f"models:/load-errors/1 (run {run_id})" in message, message
    assert expected in message, message
    assert "netsec-model-" not in message and "/tmp/" not in message, message


def test_cli_predict_names_the_broken_version(registered_version, tmp_path):
    from netsec_tasks.sample import make_sample

    cfg, model_dir, run_id = registered_version
    (model_dir / "model.skops").write_bytes(b"PK\x03\x04 broken zip")
    csv = tmp_path / "rows.csv"
    make_sample(5, seed=1).to_csv(csv, index=False)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "netsec_tasks.cli",
            "--config",
            str(REPO / "config" / "pipeline.yaml"),
            "--set",
            f"registry.tracking_uri={cfg.registry.tracking_uri}",
            "--set",
            "registry.model_name=load-errors",
            "predict",
            str(csv),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NETSEC_HOME": cfg.workdir},
    )
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("netsec predict: error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"models:/load-errors/1 (run {run_id}): artifact model.skops cannot be loaded" in errors[0]


def test_a_mongo_server_that_stops_answering_fails_within_the_socket_timeout(make_cfg, tmp_path):
    """Frozen (SIGSTOP) after the connection is up: without socketTimeoutMS pymongo waits for
    its reply for ever; with the configured budget the read fails and counts as unreachable."""
    import signal

    from netsec_tasks.sources.mongo import connect_source
    from netsec_testing import MongoServer

    server = MongoServer(tmp_path / "mongo").start()
    try:
        cfg = make_cfg(
            **{
                "source.mongo.uri": server.uri,
                "source.mongo.socket_timeout_ms": 1500,
                "source.mongo.server_selection_timeout_ms": 1500,
            }
        )
        client = connect_source(cfg.source.mongo)
        collection = client["netsec"]["frozen"]
        collection.insert_one({"x": 1})
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            exc = _raised(lambda: collection.find_one({"x": 1}))
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert type(exc).__name__ in ("NetworkTimeout", "AutoReconnect", "ServerSelectionTimeoutError"), exc
        assert is_unreachable(exc)
        client.close()
    finally:
        server.stop()
