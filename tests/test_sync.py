"""Sync step: the registered model and the manifest into storage (moto's S3 server and file://)."""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

# Reuse the registry tests' MLflow helpers (one template store per session).
from test_registry import empty_mlflow_db, registry_cfg, splits, train_and_register  # noqa: F401

from netsec_tasks.catalog import RunCatalog
from netsec_tasks.errors import SourceUnavailable
from netsec_tasks.records import RunContext, safe_name
from netsec_tasks.sync import MANIFEST, is_synced, sync

RUN_ID = "scheduled__2026-01-01T02:00:00+00:00"


def with_artifacts(cfg) -> RunContext:
    """A run whose steps left a few artifacts in storage, as they do."""
    run = RunContext.create(cfg, run_id=RUN_ID, trigger="test")
    catalog = RunCatalog.of(cfg, run)
    catalog.save_text("validation_report", "passed: true\n")
    catalog.save_text("drift_html", "<html>drift</html>")
    catalog.save_bytes("preprocessor", b"skops bytes")
    return run


def s3_cfg(make_cfg, s3_server, bucket, **extra):
    return make_cfg(
        **{"storage.uri": f"s3://{bucket}/netsec", "storage.endpoint_url": s3_server.endpoint_url, **extra}
    )


def objects(client, bucket, prefix) -> dict[str, dict]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def test_s3_manifest_lists_the_run_and_is_written_once(make_cfg, s3_server, s3_bucket):
    cfg = s3_cfg(make_cfg, s3_server, s3_bucket)
    run = with_artifacts(cfg)
    client = s3_server.client()
    prefix = f"netsec/runs/{safe_name(RUN_ID)}/"
    assert not is_synced(cfg, run)
    first = sync(cfg, run)
    assert first.destination == f"s3://{s3_bucket}/{prefix}".rstrip("/")
    stored = objects(client, s3_bucket, prefix)
    expected = {
        "validate/validation_report.yaml",
        "drift/drift_report.html",
        "transform/preprocessor.skops",
        MANIFEST,
    }
    assert {k[len(prefix) :] for k in stored} == expected
    assert (first.objects, first.uploaded, first.skipped) == (4, 1, 0)
    assert first.bytes == sum(o["Size"] for o in stored.values())
    assert is_synced(cfg, run)

    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key=prefix + MANIFEST)["Body"].read())
    assert manifest["run_id"] == RUN_ID and manifest["model"] is None
    assert {f["key"]: f["size"] for f in manifest["files"]} == {
        k[len(prefix) :]: o["Size"] for k, o in stored.items() if not k.endswith(MANIFEST)
    }

    again = sync(cfg, run)
    assert (again.uploaded, again.skipped) == (0, 1)


def test_the_registered_model_goes_beside_its_run(registry_cfg, splits, s3_server, s3_bucket):
    cfg = registry_cfg(**{"storage.uri": f"s3://{s3_bucket}", "storage.endpoint_url": s3_server.endpoint_url})
    run, _, reg = train_and_register(cfg, "synced", splits, depth=2)
    rec = sync(cfg, run, register=reg)
    client = s3_server.client()
    prefix = f"runs/{safe_name(run.run_id)}/"
    keys = {k[len(prefix) :] for k in objects(client, s3_bucket, prefix)}
    assert {"model/MLmodel", "model/model.skops", "register/register.json", MANIFEST} <= keys
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key=prefix + MANIFEST)["Body"].read())
    assert manifest["model"] == {"name": reg.model_name, "version": reg.version}
    model_file = next(f for f in manifest["files"] if f["key"] == "model/model.skops")
    body = client.get_object(Bucket=s3_bucket, Key=prefix + "model/model.skops")["Body"].read()
    assert model_file["sha256"] == hashlib.sha256(body).hexdigest()
    assert rec.objects == len(keys)
    # A retry (e.g. Airflow's, after a failure at the manifest) sends nothing again.
    again = sync(cfg, run, register=reg)
    assert again.uploaded == 0 and again.skipped == rec.uploaded


def test_file_storage_sync(make_cfg, tmp_path):
    root = tmp_path / "store"
    cfg = make_cfg(**{"storage.uri": root.as_uri()})
    run = with_artifacts(cfg)
    first = sync(cfg, run)
    dest = root / "runs" / safe_name(RUN_ID)
    assert first.destination == f"file://{dest}"
    assert json.loads((dest / MANIFEST).read_text())["run_id"] == RUN_ID
    assert not [p for p in dest.rglob("*") if ".tmp" in p.name]


def test_missing_bucket_names_the_bucket(make_cfg, s3_server):
    cfg = s3_cfg(make_cfg, s3_server, "no-such-bucket-netsec")
    with pytest.raises(SourceUnavailable, match="no-such-bucket-netsec") as err:
        with_artifacts(cfg)
    assert s3_server.endpoint_url in str(err.value)


@pytest.fixture()
def moto_auth(s3_server):
    """Make the moto server check credentials for the duration of one test."""
    url = f"{s3_server.endpoint_url}/moto-api/reset-auth"
    requests.post(url, data=b"0", timeout=10).raise_for_status()
    try:
        yield
    finally:
        requests.post(url, data=b"inf", timeout=10).raise_for_status()


def test_wrong_credentials_are_reported(make_cfg, s3_server, s3_bucket, monkeypatch, moto_auth):
    from netsec_tasks.storage import S3Credentials, use_s3_credentials

    use_s3_credentials(S3Credentials(access_key="AKIAWRONGWRONGWRONG1", secret_key="wrong-secret"))
    try:
        cfg = s3_cfg(make_cfg, s3_server, s3_bucket)
        with pytest.raises(SourceUnavailable, match="credentials") as err:
            with_artifacts(cfg)
    finally:
        use_s3_credentials(None)
    assert s3_bucket in str(err.value) and s3_server.endpoint_url in str(err.value)
