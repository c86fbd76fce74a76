"""Storage: where every task reads its inputs and writes its outputs (``file://`` or ``s3://``).

Tasks of one pipeline run may execute on different machines (Celery workers), so they hand data
to each other through storage, never through a local disk: every artifact has a URI under
``storage.uri`` (``file:///abs/dir`` by default, ``s3://bucket[/prefix]`` in compose, MinIO via
``storage.endpoint_url``). This module is the one I/O layer over **pyarrow.fs**
(``LocalFileSystem``/``S3FileSystem``; s3fs cannot be installed beside the botocore that Airflow's
Amazon provider pins):

- :func:`storage_for` gives the :class:`Storage` of a config; its methods take full URIs.
- Writes are atomic: a reader sees the old object or the whole new one, never half of it. Locally
  that is a temp file in the target directory and a rename; on S3 the object is spooled to a
  local temp file first and sent with one upload, so a failure part-way leaves nothing behind.
- Errors name the URI: a missing object is a :class:`DataError`; an unreachable endpoint,
  refused credentials or an unwritable directory are :class:`SourceUnavailable` (exit 3).
- Every S3 call has a bounded budget (``storage.connect_timeout_seconds``,
  ``storage.request_timeout_seconds``, ``storage.max_attempts``): an outage fails the step within
  that budget, and Airflow's task retries are the long-term retry.

:func:`atomic_path` / :func:`atomic_write` (from :mod:`netsec_tasks.atomic_files`, re-exported
here) are the one temp-file-then-rename helper for local files (reports written for a user, the
CLI's outputs, state files under a work dir).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from netsec_tasks.atomic_files import atomic_path, atomic_write, is_temp_name
from netsec_tasks.errors import ConfigError, DataError, SourceUnavailable

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from netsec_tasks.config import PipelineConfig


def scratch_dir(cfg: PipelineConfig) -> Path:
    """``<workdir>/tmp``: this process's private scratch space (never a hand-off between tasks)."""
    path = Path(cfg.workdir) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- URIs


def file_uri_to_path(uri: str) -> Path:
    """Path of a ``file://`` URI; a plain path is returned unchanged."""
    if not uri.startswith("file://"):
        return Path(uri)
    rest = uri[len("file://") :]
    # file://localhost/x is /x; file:///x is /x; anything else is a path the user meant literally.
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    return Path(unquote(rest))


def path_to_uri(path: str | os.PathLike) -> str:
    """``file:///abs/path`` of a local path (kept readable: no percent-encoding of ':' or '+')."""
    return "file://" + str(Path(path).expanduser().resolve())


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def is_local(uri: str) -> bool:
    """A ``file://`` URI or a plain path (``C:`` style drive letters count as paths)."""
    if uri.startswith("file://"):
        return True
    scheme = urlparse(uri).scheme
    return scheme == "" or len(scheme) == 1


def join_uri(base: str, *parts: str) -> str:
    """``base`` with ``parts`` appended, single slashes, no trailing slash."""
    segs = [p.strip("/") for p in parts if p and p.strip("/")]
    return "/".join([base.rstrip("/")] + segs) if segs else base.rstrip("/")


def _s3_path(uri: str) -> str:
    """``bucket/key`` (pyarrow's S3 path form) of ``s3://bucket/key``."""
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise ConfigError(f"{uri!r}: no bucket name (expected s3://bucket/prefix)")
    return (parsed.netloc + "/" + parsed.path.strip("/")).rstrip("/")


def validate_root(uri: str) -> str:
    """``storage.uri`` must be ``s3://bucket[/prefix]`` or ``file://...``; returns it normalised."""
    if is_s3(uri):
        _s3_path(uri)
        return uri.rstrip("/")
    if uri.startswith("file://"):
        return path_to_uri(file_uri_to_path(uri))
    raise ConfigError(f"storage.uri {uri!r}: must start with s3:// or file://")


# --------------------------------------------------------------------------- S3 credentials


@dataclass(frozen=True)
class S3Credentials:
    """Credentials and endpoint for S3, e.g. from Airflow's ``netsec_s3`` connection.

    Without them the AWS SDK's default chain applies (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    profile, instance role), so nothing secret has to live in the pipeline config.
    """

    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    endpoint_url: str | None = None
    region: str | None = None


_CREDENTIALS: S3Credentials | None = None
_CACHE: dict[tuple, Storage] = {}
_LOCK = threading.Lock()


def use_s3_credentials(credentials: S3Credentials | None) -> None:
    """Process-wide S3 credentials for every later :func:`storage_for` (the DAG sets them from the
    ``netsec_s3`` connection before a task runs its step)."""
    global _CREDENTIALS
    with _LOCK:
        _CREDENTIALS = credentials
        _CACHE.clear()


def current_s3_credentials() -> S3Credentials | None:
    """The credentials :func:`use_s3_credentials` set in this process (None: the SDK's chain)."""
    with _LOCK:
        return _CREDENTIALS


# --------------------------------------------------------------------------- Storage


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int


class Storage:
    """Reads and writes artifacts by URI under one root (``file://`` or ``s3://``).

    Any ``file://`` URI or plain path is read from the local disk; any ``s3://`` URI goes through
    this storage's S3 client (one endpoint and credential set per process).
    """

    def __init__(
        self,
        root: str,
        *,
        s3: pafs.S3FileSystem | None = None,
        endpoint: str | None = None,
        scratch: str | os.PathLike | None = None,
    ):
        self.root = validate_root(root)
        self._s3 = s3
        self.endpoint = endpoint or "AWS S3"
        self.scratch = Path(scratch) if scratch else Path(tempfile.gettempdir())

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    # -- locations ----------------------------------------------------------------------

    def uri(self, *parts: str) -> str:
        """A URI under the root: ``storage.uri("runs", run, "ingest", "train.parquet")``."""
        return join_uri(self.root, *parts)

    def _fs(self, uri: str) -> tuple[pafs.FileSystem, str]:
        import pyarrow.fs as pafs

        if is_s3(uri):
            if self._s3 is None:
                raise ConfigError(
                    f"{uri}: this storage ({self.root}) has no S3 client; set "
                    "storage.uri to an s3:// URI to read or write S3 objects"
                )
            return self._s3, _s3_path(uri)
        if is_local(uri):
            return pafs.LocalFileSystem(), str(file_uri_to_path(uri).expanduser().resolve())
        raise DataError(f"unsupported URI scheme (expected file:// or s3://): {uri}")

    @contextlib.contextmanager
    def _errors(self, action: str, uri: str) -> Iterator[None]:
        """Translate filesystem errors into errors that name the URI and what to check."""
        try:
            yield
        except (DataError, SourceUnavailable, ConfigError):
            raise
        except FileNotFoundError:
            raise DataError(
                f"not found (while trying to {action}): did the step that writes it "
                "finish, and do all tasks use the same storage.uri?",
                source=uri,
            ) from None
        except (OSError, ValueError) as exc:
            if is_s3(uri):
                raise SourceUnavailable(
                    f"S3 storage at {self.endpoint} failed to {action} {uri}: {_first_line(exc)}. "
                    "Check storage.endpoint_url, the bucket and the credentials (AWS_ACCESS_KEY_ID"
                    "/AWS_SECRET_ACCESS_KEY or the Airflow connection netsec_s3)."
                ) from None
            raise SourceUnavailable(
                f"cannot {action} {uri}: {_first_line(exc)}. Check storage.uri "
                "and that the directory is writable (and mounted, in a "
                "container)."
            ) from None

    # -- queries ------------------------------------------------------------------------

    def exists(self, uri: str) -> bool:
        """True for an object at ``uri``, or a partitioned data set there (its manifest,
        :mod:`netsec_tasks.partitions`)."""
        if self.is_file(uri):
            return True
        return _is_dataset_name(uri) and self.exists(join_uri(uri, DATASET_MANIFEST))

    def is_file(self, uri: str) -> bool:
        """True for an object (not a partitioned data set) at ``uri``."""
        import pyarrow.fs as pafs

        fs, path = self._fs(uri)
        with self._errors("look up", uri):
            return fs.get_file_info(path).type == pafs.FileType.File

    def size(self, uri: str) -> int:
        import pyarrow.fs as pafs

        fs, path = self._fs(uri)
        with self._errors("look up", uri):
            info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise DataError("not found", source=uri)
        return int(info.size)

    def list(self, uri: str) -> list[ObjectInfo]:
        """Every object under the "directory" ``uri`` (recursive), sorted by URI; [] if none."""
        import pyarrow.fs as pafs

        fs, path = self._fs(uri)
        base = uri.rstrip("/")
        with self._errors("list", uri):
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        out = []
        for info in infos:
            if info.type != pafs.FileType.File or is_temp_name(info.base_name):
                continue
            rel = info.path[len(path) :].lstrip("/")
            out.append(ObjectInfo(f"{base}/{rel}", int(info.size)))
        return sorted(out, key=lambda o: o.uri)

    # -- reading ------------------------------------------------------------------------

    @contextlib.contextmanager
    def open_input(self, uri: str) -> Iterator[pa.NativeFile]:
        """A seekable binary reader (what Parquet needs)."""
        fs, path = self._fs(uri)
        with self._errors("read", uri):
            f = fs.open_input_file(path)
        try:
            with self._errors("read", uri):
                yield f
        finally:
            f.close()

    def read_bytes(self, uri: str) -> bytes:
        with self.open_input(uri) as f, self._errors("read", uri):
            return f.read()

    def read_text(self, uri: str, encoding: str = "utf-8") -> str:
        return self.read_bytes(uri).decode(encoding)

    def read_frame(
        self, uri: str, columns: builtins.list[str] | None = None
    ) -> pd.DataFrame:  # builtins: Storage.list shadows list here
        """A Parquet (or ``.csv``) object as a DataFrame; DataError names a damaged file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if uri.lower().endswith(".csv"):
            from netsec_tasks.table_io import read_csv_bytes

            return read_csv_bytes(self.read_bytes(uri), source=uri)
        if _is_dataset_name(uri) and not self.is_file(uri) and self.exists(uri):
            return read_dataset(self, uri, columns=columns)  # a partitioned data set, whole
        with self.open_input(uri) as f:
            try:
                frame = pq.read_table(f, columns=columns).to_pandas()
            except (OSError, ValueError) as exc:
                raise DataError(f"cannot read Parquet: {_first_line(exc)}", source=uri) from None
        # The Arrow table is gone, but Arrow's allocator keeps its pages: a 1M-row split left
        # ~300 MB of the process's RSS unused (measured); hand them back.
        pa.default_memory_pool().release_unused()
        return frame

    @contextlib.contextmanager
    def parquet_file(self, uri: str) -> Iterator[pq.ParquetFile]:
        """A ``pyarrow.parquet.ParquetFile`` to stream row groups / batches from."""
        import pyarrow.parquet as pq

        with self.open_input(uri) as f:
            try:
                pf = pq.ParquetFile(f)
            except (OSError, ValueError) as exc:
                raise DataError(f"cannot read Parquet: {_first_line(exc)}", source=uri) from None
            yield pf

    def download(self, uri: str, path: str | os.PathLike) -> Path:
        """Copy ``uri`` to the local file ``path`` (atomically)."""
        with (
            self.open_input(uri) as src,
            atomic_path(path) as tmp,
            open(tmp, "wb") as dst,
            self._errors("download", uri),
        ):
            while block := src.read(1 << 20):
                dst.write(block)
        return Path(path)

    # -- writing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def open_output(self, uri: str) -> Iterator[IO[bytes]]:
        """A binary writer whose object appears at ``uri`` only when the block succeeds."""
        if is_s3(uri):
            self.scratch.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.scratch, prefix=".upload-", suffix=".tmp") as tmp:
                yield tmp
                tmp.flush()
                self.upload(tmp.name, uri)
            return
        path = file_uri_to_path(uri)
        with self._errors("write", uri), atomic_path(path) as part, open(part, "wb") as f:
            yield f

    def write_bytes(self, uri: str, data: bytes) -> str:
        with self.open_output(uri) as f:
            f.write(data)
        return uri

    def write_text(self, uri: str, text: str, encoding: str = "utf-8") -> str:
        return self.write_bytes(uri, text.encode(encoding))

    def write_frame(self, uri: str, frame: pd.DataFrame) -> str:
        """A DataFrame as Parquet (no index)."""
        with self.open_output(uri) as f:
            frame.to_parquet(f, index=False)
        return uri

    @contextlib.contextmanager
    def parquet_writer(self, uri: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        """A streaming ``ParquetWriter`` whose file appears at ``uri`` only on success."""
        import pyarrow.parquet as pq

        with self.open_output(uri) as f, pq.ParquetWriter(f, schema) as writer:
            yield writer

    def upload(self, path: str | os.PathLike, uri: str) -> str:
        """Copy the local file ``path`` to ``uri`` (one object; atomic)."""
        if not is_s3(uri):
            with self._errors("write", uri), atomic_path(file_uri_to_path(uri)) as tmp:
                import shutil

                shutil.copyfile(path, tmp)
            return uri
        fs, key = self._fs(uri)
        with self._errors("upload to", uri), open(path, "rb") as src, fs.open_output_stream(key) as dst:
            while block := src.read(8 << 20):
                dst.write(block)
        return uri

    def delete(self, uri: str) -> None:
        """Remove one object; a missing one is fine."""
        fs, path = self._fs(uri)
        with self._errors("delete", uri), contextlib.suppress(FileNotFoundError):
            fs.delete_file(path)


# --------------------------------------------------------------------------- data sets, read
# The reading side of a partitioned data set (layout: netsec_tasks.partitions, which also has the
# writer and the counted loads). Storage.read_frame reads either layout, so this lives here,
# below the partitions module that builds on it.

# A partitioned data set keeps its .parquet name (a directory of parts and this manifest).
DATASET_MANIFEST = "_manifest.json"
DATASET_FORMAT = "netsec-dataset-v1"
# Prefix of a partitioned data set's digest: never equal to a single file's digest.
DIGEST_SCHEME = "netsec-partitions-v1"


@dataclass(frozen=True)
class Partition:
    """One Parquet object of a data set: its URI, position, rows and the rows before it."""

    uri: str
    index: int
    rows: int
    offset: int
    digest: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A data set in storage: one Parquet object (``partitioned=False``, one partition) or a
    partitioned data set (its manifest's partitions, in row order)."""

    uri: str
    rows: int
    partitions: tuple[Partition, ...]
    partitioned: bool
    columns: tuple[str, ...] = ()
    digest: str | None = None

    def __len__(self) -> int:
        return len(self.partitions)


def manifest_uri(uri: str) -> str:
    return join_uri(uri, DATASET_MANIFEST)


def partitions_digest(digests: list[str]) -> str:
    """The digest of a partitioned data set: sha256 over its partitions' digests, in order."""
    h = hashlib.sha256(DIGEST_SCHEME.encode())
    for d in digests:
        h.update(b"\n" + d.encode())
    return h.hexdigest()


def open_dataset(storage: Storage, uri: str) -> Dataset:
    """The data set at ``uri``, in either layout. DataError when there is neither a Parquet
    object nor a manifest there (names the URI), or the manifest is not ours."""
    if storage.is_file(uri):
        with storage.parquet_file(uri) as pf:
            rows = int(pf.metadata.num_rows)
            columns = tuple(pf.schema_arrow.names)
        return Dataset(uri, rows, (Partition(uri, 0, rows, 0),), False, columns)
    where = manifest_uri(uri)
    if not storage.exists(where):
        raise DataError(
            "not found: neither a Parquet object nor a partitioned data set (_manifest.json); "
            "did the step that writes it finish, and do all tasks use the same storage.uri?",
            source=uri,
        )
    try:
        doc = json.loads(storage.read_text(where))
        if doc.get("format") != DATASET_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {DATASET_FORMAT!r}")
        return describe_partitions(uri, list(doc["partitions"]), list(doc.get("columns") or ()))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"unreadable data set manifest: {exc}", source=where) from None


def read_dataset(storage: Storage, uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The whole data set in one frame (only for data sets known to be small, or the local
    engine's refit, which holds the training split in one process by design)."""
    import pandas as pd
    import pyarrow as pa

    data = open_dataset(storage, uri)
    if not data.partitioned:
        return storage.read_frame(uri, columns=columns)
    # Said in the log so that a step holding a large data set in one process shows which one
    # (tests/test_dask_engine.py checks that no step does, with the Dask engine).
    log.info(
        "reading %s whole: %d rows from %d partitions into one frame", uri, data.rows, len(data.partitions)
    )
    tables = []
    for part in data.partitions:
        with storage.open_input(part.uri) as f:
            import pyarrow.parquet as pq

            tables.append(pq.read_table(f, columns=columns))
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas() if tables else pd.DataFrame()
    del tables
    pa.default_memory_pool().release_unused()
    return frame


def describe_partitions(uri: str, parts: list[dict[str, Any]], columns: list[str]) -> Dataset:
    digests = [p.get("digest") for p in parts]
    digest = partitions_digest(digests) if parts and all(d is not None for d in digests) else None  # type: ignore[arg-type]
    out, offset = [], 0
    for i, p in enumerate(parts):
        out.append(Partition(join_uri(uri, p["name"]), i, int(p["rows"]), offset, p.get("digest")))
        offset += int(p["rows"])
    return Dataset(uri, offset, tuple(out), True, tuple(columns), digest)


def _is_dataset_name(uri: str) -> bool:
    return uri.lower().rstrip("/").endswith((".parquet", ".pq"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _s3_filesystem(cfg: PipelineConfig, creds: S3Credentials | None) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    st = cfg.storage
    endpoint = (creds.endpoint_url if creds and creds.endpoint_url else None) or st.endpoint_url
    kwargs: dict[str, Any] = {
        "region": (creds.region if creds and creds.region else None) or st.region,
        "connect_timeout": st.connect_timeout_seconds,
        "request_timeout": st.request_timeout_seconds,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=st.max_attempts),
    }
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "https"
        # MinIO and moto serve buckets by path; virtual-host style needs DNS per bucket.
        kwargs["force_virtual_addressing"] = False
    if creds and creds.access_key:
        kwargs.update(
            access_key=creds.access_key, secret_key=creds.secret_key, session_token=creds.session_token
        )
    return pafs.S3FileSystem(**kwargs), endpoint or "AWS S3"


def storage_for(cfg: PipelineConfig) -> Storage:
    """The :class:`Storage` of ``cfg.storage`` (cached per root, endpoint and credentials)."""
    root = validate_root(cfg.storage.uri)
    st = cfg.storage
    key = (
        root,
        st.endpoint_url,
        st.region,
        st.connect_timeout_seconds,
        st.request_timeout_seconds,
        st.max_attempts,
        _CREDENTIALS,
    )
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        s3, endpoint = (None, None)
        if is_s3(root) or _CREDENTIALS is not None or st.endpoint_url:
            s3, endpoint = _s3_filesystem(cfg, _CREDENTIALS)
        storage = Storage(root, s3=s3, endpoint=endpoint, scratch=scratch_dir(cfg))
        _CACHE[key] = storage
        return storage


__all__ = [
    "ObjectInfo",
    "S3Credentials",
    "Storage",
    "current_s3_credentials",
    "atomic_path",
    "atomic_write",
    "file_uri_to_path",
    "is_local",
    "is_s3",
    "is_temp_name",
    "join_uri",
    "path_to_uri",
    "scratch_dir",
    "storage_for",
    "use_s3_credentials",
    "validate_root",
]
