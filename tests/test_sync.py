"""Sync step against moto's S3 server and a local directory: idempotence, multipart, manifest, errors."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import requests

from netsec_tasks.errors import SourceUnavailable
from netsec_tasks.records import RunContext, safe_name
from netsec_tasks.sync import MANIFEST, sync

# Reuse the registry tests' MLflow helpers (one template store per session).
from test_registry import empty_mlflow_db, registry_cfg, splits, train_and_register  # noqa: F401

MB = 1024 * 1024


@pytest.fixture()
def run(make_cfg):
    """A run directory with a few small files in sub-folders, like the steps leave behind."""
    cfg = make_cfg()
    run = RunContext.create(cfg, run_id="scheduled__2026-01-01T02:00:00+00:00", trigger="test")
    (run.step_dir("validate") / "report.yaml").write_text("passed: true\n")
    (run.step_dir("train") / "metrics.json").write_text(json.dumps({"f1": 0.9}))
    (run.step_dir("drift") / "drift.html").write_text("<html>drift</html>")
    (run.step_dir("train") / "half-written.parquet.tmp").write_bytes(b"partial")  # never synced
    return run


def s3_cfg(make_cfg, s3_server, bucket, **extra):
    return make_cfg(**{"storage.uri": f"s3://{bucket}/netsec/runs",
                       "storage.endpoint_url": s3_server.endpoint_url,
                       "storage.multipart_threshold_mb": 5, "storage.retries": 1, **extra})


def objects(client, bucket, prefix) -> dict[str, dict]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def test_s3_sync_uploads_everything_once_and_large_files_multipart(make_cfg, s3_server, s3_bucket, run):
    big = run.step_dir("ingest") / "snapshot.parquet"
    big.write_bytes(os.urandom(6 * MB))  # above the 5 MB threshold -> 2 parts
    cfg = s3_cfg(make_cfg, s3_server, s3_bucket)
    client = s3_server.client()

    first = sync(cfg, run)  # builds its own client from cfg.storage
    prefix = f"netsec/runs/{safe_name(run.run_id)}/"
    assert first.destination == f"s3://{s3_bucket}/{prefix}".rstrip("/")
    stored = objects(client, s3_bucket, prefix)
    expected = {"validate/report.yaml", "train/metrics.json", "drift/drift.html",
                "ingest/snapshot.parquet", MANIFEST}
    assert {k[len(prefix):] for k in stored} == expected
    assert (first.objects, first.uploaded, first.skipped) == (5, 5, 0)
    assert first.bytes == sum(o["Size"] for o in stored.values())

    head = client.head_object(Bucket=s3_bucket, Key=prefix + "ingest/snapshot.parquet")
    assert head["ETag"].strip('"').endswith("-2"), head["ETag"]
    assert head["Metadata"]["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()

    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key=prefix + MANIFEST)["Body"].read())
    assert manifest["run_id"] == run.run_id and manifest["model"] is None
    listed = {f["key"]: f for f in manifest["files"]}
    assert set(listed) == expected - {MANIFEST}
    for key, entry in listed.items():
        body = client.get_object(Bucket=s3_bucket, Key=prefix + key)["Body"].read()
        assert entry["size"] == len(body) and entry["sha256"] == hashlib.sha256(body).hexdigest()

    # Same run again (the client the DAG would pass from S3Hook): nothing to send.
    second = sync(cfg, run, s3_client=client)
    assert (second.objects, second.uploaded, second.skipped) == (5, 0, 5)

    # One changed file: it and the manifest go again, the rest (incl. the multipart one) stay.
    (run.path / "train" / "metrics.json").write_text(json.dumps({"f1": 0.95}))
    third = sync(cfg, run, s3_client=client)
    assert (third.uploaded, third.skipped) == (2, 3)
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key=prefix + MANIFEST)["Body"].read())
    entry = next(f for f in manifest["files"] if f["key"] == "train/metrics.json")
    assert entry["sha256"] == hashlib.sha256((run.path / "train" / "metrics.json").read_bytes()).hexdigest()


def test_s3_sync_includes_the_registered_model(registry_cfg, splits, s3_server, s3_bucket):
    cfg = registry_cfg(**{"storage.uri": f"s3://{s3_bucket}/runs",
                          "storage.endpoint_url": s3_server.endpoint_url})
    run, _, reg = train_and_register(cfg, "synced", splits, depth=2)
    rec = sync(cfg, run, register=reg, s3_client=s3_server.client())
    prefix = f"runs/{safe_name(run.run_id)}/"
    keys = {k[len(prefix):] for k in objects(s3_server.client(), s3_bucket, prefix)}
    assert {"model/MLmodel", "model/model.skops", "register/register.json", MANIFEST} <= keys
    manifest = json.loads(s3_server.client().get_object(
        Bucket=s3_bucket, Key=prefix + MANIFEST)["Body"].read())
    assert manifest["model"] == {"name": reg.model_name, "version": reg.version}
    assert rec.uploaded == rec.objects == len(keys)


def test_missing_bucket_names_the_bucket(make_cfg, s3_server, run):
    cfg = s3_cfg(make_cfg, s3_server, "no-such-bucket-netsec")
    with pytest.raises(SourceUnavailable, match="no-such-bucket-netsec") as err:
        sync(cfg, run)
    assert s3_server.endpoint_url in str(err.value) and "does not exist" in str(err.value)


@pytest.fixture()
def moto_auth(s3_server):
    """Make the moto server check credentials for the duration of one test."""
    url = f"{s3_server.endpoint_url}/moto-api/reset-auth"
    requests.post(url, data=b"0", timeout=10).raise_for_status()
    try:
        yield
    finally:
        requests.post(url, data=b"inf", timeout=10).raise_for_status()


def test_wrong_credentials_are_reported(make_cfg, s3_server, s3_bucket, run, monkeypatch, moto_auth):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    cfg = s3_cfg(make_cfg, s3_server, s3_bucket)
    with pytest.raises(SourceUnavailable, match="credentials") as err:
        sync(cfg, run)
    assert s3_bucket in str(err.value) and s3_server.endpoint_url in str(err.value)


def test_unreachable_endpoint_is_reported_after_retries(make_cfg, run):
    from netsec_testing import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    cfg = make_cfg(**{"storage.uri": "s3://netsec/runs", "storage.endpoint_url": endpoint,
                      "storage.retries": 1})
    with pytest.raises(SourceUnavailable, match="cannot reach S3 endpoint") as err:
        sync(cfg, run)
    assert endpoint in str(err.value) and "2 attempts" in str(err.value)


def test_file_sync_copies_atomically_and_skips_unchanged(make_cfg, run, tmp_path):
    root = tmp_path / "store"
    cfg = make_cfg(**{"storage.uri": root.as_uri()})
    first = sync(cfg, run)
    dest = root / safe_name(run.run_id)
    assert first.destination == dest.as_uri()
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == sorted(["validate/report.yaml", "train/metrics.json", "drift/drift.html", MANIFEST])
    assert (first.uploaded, first.skipped) == (4, 0)
    manifest = json.loads((dest / MANIFEST).read_text())
    for entry in manifest["files"]:
        data = (dest / entry["key"]).read_bytes()
        assert data == (run.path / entry["key"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()

    again = sync(cfg, run)
    assert (again.uploaded, again.skipped) == (0, 4)
    (run.path / "drift" / "drift.html").write_text("<html>changed</html>")
    third = sync(cfg, run)
    assert (third.uploaded, third.skipped) == (2, 2)
    assert (dest / "drift" / "drift.html").read_text() == "<html>changed</html>"
    assert not [p for p in dest.rglob("*") if ".tmp" in p.name]


def test_file_sync_into_unwritable_place_is_reported(make_cfg, run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = make_cfg(**{"storage.uri": (blocker / "store").as_uri()})
    with pytest.raises(SourceUnavailable, match="cannot write"):
        sync(cfg, run)
