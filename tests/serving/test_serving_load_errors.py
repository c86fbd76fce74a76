"""A model version that cannot be loaded: /ready names the version, its run and the artifact
(``models:/<name>/<version> (run ...)``), never the temporary download directory."""

from __future__ import annotations

import pytest
from serving_helpers import DETAILS, fit, register


@pytest.mark.parametrize("damage", ["garbage", "pickle"])
def test_ready_names_the_version_that_failed_to_load(tmp_path, make_client, damage):
    import time

    import yaml
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pipe, frame = fit("decision_tree")
    version = register(uri, pipe, frame, artifact_root=tmp_path / "artifacts")
    client = MlflowClient(uri, registry_uri=uri)
    mv = client.get_model_version("netsec-phishing", version)
    (model_file,) = (tmp_path / "artifacts").rglob("model.skops")
    model_dir = model_file.parent
    if damage == "garbage":
        (model_dir / "model.skops").write_bytes(b"not a zip file")
        expected = "artifact model.skops cannot be loaded (BadZipFile"
    else:
        conf = yaml.safe_load((model_dir / "MLmodel").read_text())
        conf["flavors"]["sklearn"]["serialization_format"] = "cloudpickle"
        (model_dir / "MLmodel").write_text(yaml.safe_dump(conf))
        expected = "serialization format 'cloudpickle' refused"

    app = make_client(uri, ready=False, retry_interval_seconds=0.5)
    deadline = time.monotonic() + 60
    ready = app.get("/ready", headers=DETAILS)
    while ready.json().get("detail") in (None, "loading") and time.monotonic() < deadline:
        time.sleep(0.2)
        ready = app.get("/ready", headers=DETAILS)
    detail = ready.json()["detail"]
    assert ready.status_code == 503
    assert f"models:/netsec-phishing/{version} (run {mv.run_id})" in detail, detail
    assert expected in detail, detail
    assert "netsec-serving-" not in detail and "/tmp/" not in detail, detail
