"""Step 7, sync: upload the run's artifacts and model to s3:// (boto3) or file://.

Layout: ``<storage.uri>/<safe run id>/`` holds every file of the run directory, the registered
model version's files under ``model/``, and ``manifest.json`` (key, size, sha256 of every file).

- Idempotent: an object already there with the same size and MD5 ETag (single-part) or the same
  ``sha256`` metadata (multipart ETags are not MD5s) is skipped, so a retry only sends what is
  missing and the record reports uploaded vs skipped.
- Complete-or-marked-incomplete: the manifest is written last and removed first whenever files
  must be (re)sent, so a manifest always describes a finished upload.
- Retried: botocore's own retries (``storage.retries``) plus a loop for connection failures;
  files above ``storage.multipart_threshold_mb`` go multipart.
- file:// copies go to a temp name and are renamed, so no half-copied file is ever visible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import SourceUnavailable
from netsec_tasks.records import RegisterRecord, RunContext, SyncRecord, safe_name
from netsec_tasks.storage import MB, StorageTarget, parse_storage_uri, s3_client as make_s3_client

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MODEL_DIR = "model"
T = TypeVar("T")
# Error codes meaning "these credentials may not do this", as S3 and MinIO spell them (HEAD
# requests carry no body, so there the code is just the HTTP status).
_AUTH_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
               "ExpiredToken", "InvalidClientTokenId", "AllAccessDisabled"}
_MISSING_BUCKET_CODES = {"404", "NoSuchBucket"}


@dataclass(frozen=True)
class LocalFile:
    key: str          # relative to the run's destination, '/'-separated
    path: Path
    size: int
    sha256: str
    md5: str


def _describe_file(key: str, path: Path) -> LocalFile:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            sha.update(block)
            md5.update(block)
            size += len(block)
    return LocalFile(key, path, size, sha.hexdigest(), md5.hexdigest())


def _walk(root: Path, prefix: str = "") -> list[tuple[str, Path]]:
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        out.append(((prefix + "/" + rel) if prefix else rel, path))
    return out


def _run_files(run: RunContext) -> list[tuple[str, Path]]:
    """Every file of the run directory, minus in-flight temp files and the reserved names."""
    files = []
    for key, path in _walk(run.path):
        if path.name.endswith(".tmp") or ".tmp-" in path.name:
            continue  # an atomic write still in progress elsewhere; never a finished artifact
        if key == MANIFEST or key.split("/", 1)[0] == MODEL_DIR:
            log.warning("not syncing %s: '%s' and '%s/' are reserved for the manifest and the "
                        "registered model", path, MANIFEST, MODEL_DIR)
            continue
        files.append((key, path))
    return files


def _model_files(cfg: PipelineConfig, register: RegisterRecord | None, tmp: Path) -> list[tuple[str, Path]]:
    """The registered version's artifacts, downloaded from MLflow into ``tmp``."""
    if register is None or not register.version:
        return []
    import mlflow.artifacts

    from netsec_tasks.registry import mlflow_errors
    from netsec_tasks.tracking import mlflow_client

    uri = f"models:/{register.model_name}/{register.version}"
    dst = tmp / MODEL_DIR
    dst.mkdir(parents=True, exist_ok=True)
    with mlflow_errors(cfg, f"download {uri} for sync"):
        mlflow_client(cfg)
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    return _walk(dst, MODEL_DIR)


def _manifest(run: RunContext, register: RegisterRecord | None, files: list[LocalFile],
              tmp: Path) -> LocalFile:
    """Deterministic content (no timestamps), so an unchanged run re-syncs as all-skipped."""
    body = {
        "run_id": run.run_id,
        "model": ({"name": register.model_name, "version": register.version}
                  if register is not None and register.version else None),
        "files": [{"key": f.key, "size": f.size, "sha256": f.sha256}
                  for f in sorted(files, key=lambda f: f.key)],
    }
    path = tmp / MANIFEST
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return _describe_file(MANIFEST, path)


def sync(cfg: PipelineConfig, run: RunContext, *, register: RegisterRecord | None = None,
         s3_client: Any | None = None) -> SyncRecord:
    """Upload the run directory (+ the registered model) and a manifest; skip what is there.

    ``s3_client``: a ready boto3 S3 client (the DAG passes the one from Airflow's S3Hook so the
    connection's credentials apply); without it one is built from ``cfg.storage``.
    """
    target = parse_storage_uri(cfg.storage.uri).child(safe_name(run.run_id))
    with tempfile.TemporaryDirectory(prefix="netsec-sync-") as tmp:
        tmp_path = Path(tmp)
        entries = _run_files(run) + _model_files(cfg, register, tmp_path)
        files = [_describe_file(key, path) for key, path in entries]
        manifest = _manifest(run, register, files, tmp_path)
        if target.scheme == "s3":
            uploaded, skipped = _S3Sync(cfg, target, s3_client).run(files, manifest)
        else:
            uploaded, skipped = _file_sync(target, files, manifest)
    total = files + [manifest]
    record = SyncRecord(destination=target.uri, objects=len(total), bytes=sum(f.size for f in total),
                        uploaded=uploaded, skipped=skipped)
    log.info("synced %s: %d objects, %d uploaded, %d already there", record.destination,
             record.objects, uploaded, skipped)
    return record


# --------------------------------------------------------------------------- file://


def _same_local(dst: Path, f: LocalFile) -> bool:
    if not dst.is_file() or dst.stat().st_size != f.size:
        return False
    return _describe_file(f.key, dst).sha256 == f.sha256


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _file_sync(target: StorageTarget, files: list[LocalFile], manifest: LocalFile) -> tuple[int, int]:
    root = target.path
    try:
        todo = [f for f in files if not _same_local(root / f.key, f)]
        manifest_ok = _same_local(root / MANIFEST, manifest)
        if todo:
            (root / MANIFEST).unlink(missing_ok=True)  # incomplete until the new one lands
            manifest_ok = False
        for f in todo:
            _copy_atomic(f.path, root / f.key)
        if not manifest_ok:
            _copy_atomic(manifest.path, root / MANIFEST)
    except OSError as exc:
        raise SourceUnavailable(
            f"cannot write to {target.uri}: {exc}. Check storage.uri and that the directory is "
            "writable (and mounted, in a container).") from exc
    uploaded = len(todo) + (0 if manifest_ok else 1)
    return uploaded, len(files) + 1 - uploaded


# --------------------------------------------------------------------------- s3://


class _S3Sync:
    """One sync to one bucket/prefix; keeps the client, endpoint and retry budget together."""

    def __init__(self, cfg: PipelineConfig, target: StorageTarget, client: Any | None):
        self.cfg = cfg
        self.target = target
        self.bucket = target.bucket
        self.client = client if client is not None else make_s3_client(cfg)
        self.endpoint = getattr(self.client.meta, "endpoint_url", None) or "AWS S3"
        self.retries = cfg.storage.retries

    # -- error handling -------------------------------------------------------------------

    def _unavailable(self, exc: Exception, action: str) -> SourceUnavailable:
        from botocore.exceptions import ClientError, NoCredentialsError

        where = f"bucket '{self.bucket}' at {self.endpoint}"
        if isinstance(exc, NoCredentialsError):
            return SourceUnavailable(
                f"no S3 credentials found for {where} (while trying to {action}): set AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY (or the Airflow connection the DAG uses)")
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_BUCKET_CODES:
                return SourceUnavailable(
                    f"S3 bucket '{self.bucket}' does not exist at {self.endpoint}: create it, or fix "
                    "storage.uri (s3://<bucket>/<prefix>) / storage.endpoint_url")
            if code in _AUTH_CODES:
                return SourceUnavailable(
                    f"S3 refused the credentials for {where} while trying to {action} ({code}): check the access "
                    "key and secret (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the Airflow "
                    "connection), that they belong to this endpoint, and that they may write the bucket")
            return SourceUnavailable(f"S3 error for {where} while trying to {action}: {code} {exc}")
        return SourceUnavailable(
            f"cannot reach S3 endpoint {self.endpoint} (bucket '{self.bucket}') to {action} after "
            f"{self.retries + 1} attempts: {exc}. Check storage.endpoint_url / storage.region and "
            "that the server is running.")

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with a retry loop for connection failures on top of botocore's retries."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError,
                                         ConnectTimeoutError, EndpointConnectionError,
                                         ReadTimeoutError)

        transient = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError,
                     ReadTimeoutError)
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except transient as exc:
                if attempt == self.retries:
                    raise self._unavailable(exc, action) from exc
                delay = min(0.5 * 2 ** attempt, 10.0)
                log.warning("S3 %s failed (%s); retry %d/%d in %.1fs", action, exc, attempt + 1,
                            self.retries, delay)
                time.sleep(delay)
            except (ClientError, BotoCoreError) as exc:
                raise self._unavailable(exc, action) from exc
            except S3UploadFailedError as exc:
                cause = exc.__cause__ or exc.__context__
                raise self._unavailable(cause if isinstance(cause, Exception) else exc, action) from exc
        raise AssertionError("unreachable")

    # -- steps ----------------------------------------------------------------------------

    def check_bucket(self) -> None:
        self._call("check the bucket", lambda: self.client.head_bucket(Bucket=self.bucket))

    def existing(self) -> dict[str, tuple[int, str]]:
        """key -> (size, ETag without quotes) of everything under the run's prefix."""
        out: dict[str, tuple[int, str]] = {}
        token = None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": self.target.prefix + "/"}
            if token:
                kw["ContinuationToken"] = token
            page = self._call("list objects", lambda: self.client.list_objects_v2(**kw))
            for obj in page.get("Contents", []):
                out[obj["Key"]] = (int(obj["Size"]), obj["ETag"].strip('"'))
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def is_present(self, f: LocalFile, existing: dict[str, tuple[int, str]]) -> bool:
        key = self.target.key(f.key)
        if key not in existing:
            return False
        size, etag = existing[key]
        if size != f.size:
            return False
        if etag == f.md5:
            return True
        # Multipart ETag (md5-of-md5s + "-N"): compare the sha256 we stored as metadata.
        head = self._call(f"read {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        return head.get("Metadata", {}).get("sha256") == f.sha256

    def upload(self, f: LocalFile) -> None:
        from boto3.s3.transfer import TransferConfig

        threshold = self.cfg.storage.multipart_threshold_mb * MB
        config = TransferConfig(multipart_threshold=threshold, multipart_chunksize=threshold,
                                max_concurrency=4)
        extra = {"Metadata": {"sha256": f.sha256},
                 "ContentType": mimetypes.guess_type(f.key)[0] or "application/octet-stream"}
        key = self.target.key(f.key)
        self._call(f"upload {key}", lambda: self.client.upload_file(
            str(f.path), self.bucket, key, ExtraArgs=extra, Config=config))

    def run(self, files: list[LocalFile], manifest: LocalFile) -> tuple[int, int]:
        self.check_bucket()
        existing = self.existing()
        todo = [f for f in files if not self.is_present(f, existing)]
        manifest_key = self.target.key(MANIFEST)
        manifest_ok = self.is_present(manifest, existing)
        if todo and manifest_key in existing:
            # The old manifest would claim completeness while objects are being replaced.
            self._call("remove stale manifest",
                       lambda: self.client.delete_object(Bucket=self.bucket, Key=manifest_key))
            manifest_ok = False
        for f in todo:
            self.upload(f)
        if not manifest_ok:
            self.upload(manifest)
        uploaded = len(todo) + (0 if manifest_ok else 1)
        return uploaded, len(files) + 1 - uploaded
