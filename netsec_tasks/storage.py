"""Where run artifacts are kept: ``s3://bucket/prefix`` (boto3, MinIO via endpoint_url) or ``file:///dir``.

Small, dependency-free helpers shared by the sync step and anything that reads synced runs back
(the URI parsing lives in one place so ``s3://b`` vs ``s3://b/`` vs ``s3://b/p/`` all mean the same).
boto3 is imported inside functions: the DAG imports this package lazily, but the serving image
should not pay for boto3 unless it actually talks to S3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import ConfigError

MB = 1024 * 1024


@dataclass(frozen=True)
class StorageTarget:
    """A parsed storage URI: ``scheme`` is "s3" (bucket + prefix) or "file" (path)."""

    scheme: str
    bucket: str | None = None
    prefix: str = ""
    path: Path | None = None

    def child(self, *parts: str) -> "StorageTarget":
        """The same target one or more levels down (a run's folder, a sub-folder)."""
        parts = tuple(p.strip("/") for p in parts if p and p.strip("/"))
        if self.scheme == "s3":
            return StorageTarget("s3", self.bucket, join_key(self.prefix, *parts))
        return StorageTarget("file", path=self.path.joinpath(*parts))

    def key(self, relative: str) -> str:
        """The S3 object key of ``relative`` under this target."""
        return join_key(self.prefix, relative)

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return self.path.as_uri()


def join_key(*parts: str) -> str:
    """Join S3 key segments with single slashes (no leading/trailing slash, empty parts dropped)."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def parse_storage_uri(uri: str) -> StorageTarget:
    """``s3://bucket[/prefix]`` or ``file:///abs/dir`` (``file://rel/dir`` is taken as relative)."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise ConfigError(f"storage.uri {uri!r}: no bucket name (expected s3://bucket/prefix)")
        return StorageTarget("s3", bucket=parsed.netloc, prefix=parsed.path.strip("/"))
    if uri.startswith("file://"):
        return StorageTarget("file", path=file_uri_to_path(uri))
    raise ConfigError(f"storage.uri {uri!r}: must start with s3:// or file://")


def file_uri_to_path(uri: str) -> Path:
    """Path of a ``file://`` URI; a plain path is returned unchanged."""
    if not uri.startswith("file://"):
        return Path(uri)
    rest = uri[len("file://"):]
    # file://localhost/x is /x; file:///x is /x; anything else is a path the user meant literally.
    if rest.startswith("localhost/"):
        rest = rest[len("localhost"):]
    return Path(unquote(rest))


def s3_client(cfg: PipelineConfig) -> Any:
    """A boto3 S3 client from the storage config: endpoint (MinIO), region and retry budget.

    Credentials come from boto3's usual chain (environment, profile, instance role), so nothing
    secret lives in the pipeline config.
    """
    import boto3
    from botocore.config import Config

    st = cfg.storage
    config = Config(
        region_name=st.region,
        retries={"max_attempts": st.retries + 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        # MinIO and moto serve buckets by path; virtual-host style needs DNS per bucket.
        s3={"addressing_style": "path"} if st.endpoint_url else None,
    )
    return boto3.client("s3", endpoint_url=st.endpoint_url, config=config)
