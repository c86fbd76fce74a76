"""Fetching the real UCI Phishing Websites data from OpenML (``netsec fetch-dataset``).

The download, MD5 check, cache and ARFF parsing are scikit-learn's
:func:`sklearn.datasets.fetch_openml`; what is ours is the conversion to the exact columns and
types of the configured schema (:func:`to_schema_frame`): OpenML 4534 stores every attribute as
nominal ``{-1,1}``-style strings, the schema wants ints, and the target ``Result`` in ``-1/1``
(-1 = phishing), and the errors, which say what to do.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.error import HTTPError, URLError

import pandas as pd

from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.errors import DataError, SourceUnavailable
from netsec_tasks.storage import atomic_path

log = logging.getLogger(__name__)

UCI_PHISHING_ID = 4534


def to_schema_frame(
    frame: pd.DataFrame, schema: DatasetSchema, *, target: str | None = None, source: str = "<openml>"
) -> pd.DataFrame:
    """Exactly the schema's feature columns then the target, with the schema's types.

    Columns are matched by name, then case-insensitively; ``target`` (OpenML's default target
    attribute) is renamed to the schema's target column when the names differ. Values may be
    text (OpenML's nominal ``'-1'``), categories or numbers; missing ones are None or NaN.
    Raises DataError naming the column for a missing column or a value the schema does not allow.
    """
    lookup = {str(c).lower(): c for c in frame.columns}
    if target and target in frame.columns and schema.target.column not in frame.columns:
        frame = frame.rename(columns={target: schema.target.column})
        lookup[schema.target.column.lower()] = schema.target.column
    wanted = schema.features + [schema.target.column]
    resolved = {col: (col if col in frame.columns else lookup.get(col.lower())) for col in wanted}
    missing = [c for c, found in resolved.items() if found is None]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)}; the file has {', '.join(map(str, frame.columns))}",
            source=source,
            columns=missing,
        )
    # Categories (fetch_openml's nominal columns) as plain values, every missing value as None.
    out = pd.DataFrame({col: frame[found].astype(object) for col, found in resolved.items()})
    out = out.where(out.notna(), None)
    specs = dict(schema.columns)
    for col in wanted:
        dtype = specs[col].dtype if col in specs else schema.target.dtype
        allowed = specs[col].allowed if col in specs else schema.target.labels
        out[col] = _convert(out[col], dtype, col, source)
        if allowed is not None:
            bad = sorted(set(out[col].dropna().tolist()) - set(allowed), key=str)
            if bad:
                raise DataError(
                    f"column {col!r} has values {bad[:5]} outside {allowed}", source=source, columns=[col]
                )
    return out


def _convert(values: pd.Series, dtype: str, col: str, source: str) -> pd.Series:
    if dtype == "str":
        return values.astype("string")
    if dtype == "bool":
        mapped = values.map(lambda v: None if v is None else str(v).strip().lower() in ("1", "true", "yes"))
        return mapped.astype("boolean")
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values[numbers.isna() & values.notna()]
    if len(bad):
        raise DataError(
            f"column {col!r} has non-numeric values {sorted(set(bad.astype(str)))[:5]}",
            source=source,
            columns=[col],
        )
    if dtype == "int":
        if (numbers.dropna() % 1 != 0).any():
            raise DataError(
                f"column {col!r} has fractional values, expected integers", source=source, columns=[col]
            )
        return numbers.astype("int64") if not numbers.isna().any() else numbers.astype("Int64")
    return numbers.astype("float64")


# ----------------------------------------------------------------------------- entry point


def default_data_home() -> Path:
    """``$XDG_CACHE_HOME/netsec/openml`` (default ``~/.cache/netsec/openml``): the OpenML cache."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "netsec" / "openml"


def description_url(data_id: int) -> str:
    """The first URL fetch_openml requests for ``data_id`` (OpenML's data description)."""
    # scikit-learn keeps the URL (and the errors fetch_dataset catches) in private modules: it has
    # no public name for them and fetch_openml takes no base URL. Read from there, a test can
    # point fetch_openml at a loopback stub and our messages name the URL it really asked.
    from sklearn.datasets import _openml

    return _openml._DATA_INFO.format(data_id)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # fetch_openml has no timeout parameter; its urlopen calls use the process default, which
    # is "wait forever". Set it for the download only and put back what was there.
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def fetch_dataset(
    dest_csv: str | os.PathLike,
    *,
    data_id: int = UCI_PHISHING_ID,
    timeout: float = 60,
    schema: DatasetSchema | None = None,
    data_home: str | os.PathLike | None = None,
    n_retries: int = 3,
) -> Path:
    """Download OpenML ``data_id``, convert it to the schema, write ``dest_csv`` atomically.

    The download is cached under ``data_home`` (default :func:`default_data_home`) and checked
    against OpenML's MD5. Network failures (after ``n_retries`` tries, ``timeout`` seconds per
    request) raise SourceUnavailable naming the URL; a checksum mismatch, an unknown data id or
    data that does not fit the schema raise DataError. The default schema is the packaged
    phishing one. Nothing is written unless it all succeeds.
    """
    from sklearn.datasets import fetch_openml
    from sklearn.datasets._openml import OpenMLError
    from sklearn.externals._arff import ArffException

    if schema is None:
        from netsec_tasks.config import PACKAGE_CONFIG_DIR
        from netsec_tasks.dataset_schema import load_schema

        schema = load_schema(PACKAGE_CONFIG_DIR / "schema" / "phishing.yaml")
    home = Path(data_home) if data_home is not None else default_data_home()
    url = description_url(data_id)
    try:
        with _socket_timeout(timeout), warnings.catch_warnings():
            # fetch_openml warns on every retry and on a cache it cleans; the errors below say it.
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.filterwarnings("ignore", message="A network error occurred")
            # parser="liac-arff": with pandas 3, sklearn 1.9's pandas parser reads unquoted
            # numeric nominals ({-1,1}, i.e. all of 4534) as int categories and then fails
            # stripping their quotes (scikit-learn issue 34892, fixed by PR 34902).
            bunch = fetch_openml(
                data_id=data_id, as_frame=True, parser="liac-arff", data_home=str(home), n_retries=n_retries
            )
    except HTTPError as exc:
        raise SourceUnavailable(f"GET {exc.url or url} failed: HTTP {exc.code} {exc.reason}") from None
    except (URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceUnavailable(
            f"cannot download OpenML data {data_id} from {url} within {timeout:g} s: {reason}. "
            "Without internet, put the CSV on this machine yourself and set source.path "
            "(or NETSEC_SOURCE__PATH)"
        ) from None
    except OpenMLError as exc:  # HTTP 412: OpenML's "no such data set" and kin
        raise DataError(f"OpenML refused data id {data_id}: {exc}", source=url) from None
    except (ValueError, KeyError, ArffException) as exc:
        # The MD5 check, a target with missing values, an ARFF that does not parse or does not
        # match OpenML's feature list.
        raise DataError(f"OpenML data {data_id} is not usable: {exc}", source=url) from None
    source = bunch.details.get("url") or url
    target = bunch.target_names[0] if bunch.target_names else None
    frame = to_schema_frame(bunch.frame, schema, target=target, source=source)
    dest = Path(dest_csv)
    with atomic_path(dest) as tmp:
        frame.to_csv(tmp, index=False)
    log.info("OpenML %s (%s, %d rows) written to %s", data_id, bunch.details.get("name"), len(frame), dest)
    return dest
