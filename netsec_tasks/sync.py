"""Step 7, sync: put what is not in storage yet there, the registered model and the manifest.

Every step already writes its artifacts to ``<storage>/runs/<run id>/``, so this step only adds

- ``model/``: the registered model version's files (MLmodel, the skops model, requirements),
  downloaded from the MLflow registry, so Production has a copy beside the run that made it;
- ``manifest.json``, written **last**: every object of the run with its size, and the model's
  files with their sha256. Its presence proves the sync finished; reconciliation re-runs the
  sync of any run that has a registered model but no manifest.

Idempotent: a model file already in storage with the same size and sha256 is not sent again,
and an unchanged manifest is not rewritten, so a retry only sends what is missing. Retries are
the storage layer's bounded ones (``storage.max_attempts``) and Airflow's task retries; this step
adds none of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

from netsec_tasks.catalog import RunCatalog
from netsec_tasks.config import PipelineConfig
from netsec_tasks.records import RegisterRecord, RunContext, SyncRecord
from netsec_tasks.storage import scratch_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MODEL_DIR = "model"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_model(cfg: PipelineConfig, register: RegisterRecord, dst: Path) -> list[Path]:
    """The registered version's files, from the MLflow registry into ``dst``."""
    import mlflow.artifacts

    from netsec_tasks.outages import mlflow_errors
    from netsec_tasks.tracking import mlflow_client

    uri = f"models:/{register.model_name}/{register.version}"
    with mlflow_errors(cfg, f"download {uri} for sync"):
        mlflow_client(cfg)
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    return sorted(p for p in dst.rglob("*") if p.is_file())


def sync(cfg: PipelineConfig, run: RunContext, *, register: RegisterRecord | None = None) -> SyncRecord:
    """Upload the registered model (if any) under the run, then the manifest (last)."""
    catalog = RunCatalog.of(cfg, run)
    storage = catalog.storage
    model_files: list[dict] = []
    uploaded = skipped = 0
    if register is not None and register.version:
        with tempfile.TemporaryDirectory(prefix="netsec-sync-", dir=scratch_dir(cfg)) as tmp:
            root = Path(tmp)
            for path in _download_model(cfg, register, root):
                rel = path.relative_to(root).as_posix()
                data = path.read_bytes()
                entry = {"key": f"{MODEL_DIR}/{rel}", "size": len(data), "sha256": _sha256(data)}
                target = catalog.uri("model") + "/" + rel
                if (
                    storage.exists(target)
                    and storage.size(target) == entry["size"]
                    and _sha256(storage.read_bytes(target)) == entry["sha256"]
                ):
                    skipped += 1
                else:
                    storage.upload(path, target)
                    uploaded += 1
                model_files.append(entry)
    manifest_uri = catalog.uri("manifest")
    base = run.storage_uri.rstrip("/") + "/"
    hashed = {f["key"]: f for f in model_files}
    objects = [o for o in storage.list(run.storage_uri) if o.uri != manifest_uri]
    files = [hashed.get(o.uri[len(base) :], {"key": o.uri[len(base) :], "size": o.size}) for o in objects]
    body = (
        json.dumps(
            {
                "run_id": run.run_id,
                "model": (
                    {"name": register.model_name, "version": register.version}
                    if register is not None and register.version
                    else None
                ),
                "files": sorted(files, key=lambda f: f["key"]),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    if storage.exists(manifest_uri) and storage.read_text(manifest_uri) == body:
        skipped += 1
    else:
        storage.write_text(manifest_uri, body)
        uploaded += 1
    record = SyncRecord(
        destination=run.storage_uri,
        objects=len(files) + 1,
        bytes=sum(f["size"] for f in files) + len(body.encode()),
        uploaded=uploaded,
        skipped=skipped,
    )
    log.info(
        "synced %s: %d objects in storage, %d uploaded now, %d already there",
        record.destination,
        record.objects,
        uploaded,
        skipped,
    )
    return record


def is_synced(cfg: PipelineConfig, run: RunContext) -> bool:
    """True when the run's manifest is in storage (its sync finished)."""
    return RunCatalog.of(cfg, run).exists("manifest")
