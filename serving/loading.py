"""Loading a model version from the MLflow registry: which version, download and verification,
signature, the rows its fast path is verified on, and the assembled :class:`LoadedModel`.

One place each:

- :func:`resolve_production_version`: the "which version is Production" lookup, and
  :func:`resolve_challenger_version`: which version is the challenger (issue 25);
- :func:`download_verified`: download, check (sklearn flavour, skops only, trusted types within
  netsec's allow-list) and deserialize;
- :func:`feature_schema`: feature names and MLflow types from tags / signature;
- :func:`test_split`: the registered model's own test split (``netsec.test_uri`` in storage:
  the rows the fast path must agree on), and :func:`verification_rows`: those rows plus copies
  with cells set to NaN;
- :func:`load_version`: all of the above into one immutable :class:`LoadedModel`, with the fast
  path from :mod:`serving.fastpath` when it agrees with the Pipeline.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from netsec_tasks.candidates import single_threaded
from netsec_tasks.errors import DataError, RegistryError, SourceUnavailable
from netsec_tasks.tracking import version_label
from serving.model import NUMERIC_TYPES, LoadedModel, tag_value

log = logging.getLogger("netsec.serving")

# One load at a time per process: the download sets MLflow's global URIs.
_LOAD_LOCK = threading.Lock()
# Verification rows: up to this many test rows, plus up to this many copies holding NaN.
VERIFY_ROWS = 2000
VERIFY_NAN_ROWS = 1000
TEST_ARTIFACT = "data/test.parquet"  # where runs before the storage hand-off logged it


def configure_mlflow_client(settings) -> None:
    """Fail fast instead of MLflow's default minutes of retries: the poll loop retries anyway."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    # The service runs offline; MLflow's telemetry thread also edits os.environ while request
    # threads read it (seen as KeyError '_MLFLOW_TELEMETRY_SESSION_ID' elsewhere in the stack).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if settings.trust_registry:
        # MLflow 3.17 gates every sklearn deserialization (skops too) behind this flag.
        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"


# --- which version ------------------------------------------------------------------------------


def resolve_production_version(settings):
    """(client, ModelVersion) of the Production version: the one lookup,
    :func:`netsec_tasks.registry.find_production_version` (alias, else newest in the stage).

    Raises SourceUnavailable (registry unreachable) / RegistryError (no such version).
    """
    from mlflow import MlflowClient

    from netsec_tasks.registry import find_production_version

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    with _registry_errors(settings):
        mv = find_production_version(client, settings.model_name, settings.model_alias, settings.model_stage)
    if mv is None:
        raise RegistryError(
            f"registered model '{settings.model_name}' has no version with alias "
            f"'{settings.model_alias}' or stage '{settings.model_stage}' at "
            f"{settings.tracking_uri}; run the training pipeline first"
        )
    return client, mv


def resolve_challenger_version(settings, client):
    """The ModelVersion holding ``settings.challenger_alias`` (the challenger scored in shadow),
    or None (no alias configured, or no version holds it). Raises as
    :func:`resolve_production_version`."""
    from netsec_tasks.registry import find_alias_version

    if not settings.challenger_alias:
        return None
    with _registry_errors(settings):
        return find_alias_version(client, settings.model_name, settings.challenger_alias)


@contextmanager
def _registry_errors(settings):
    """MLflow's errors as ours: RegistryError for a refusal, SourceUnavailable for an outage."""
    from mlflow.exceptions import MlflowException

    from netsec_tasks.outages import is_unreachable

    try:
        yield
    except Exception as exc:
        # By exception type along the chain (MLflow wraps the requests error it gave up on,
        # a 5xx included: its retries end in requests' RetryError), as the pipeline decides it.
        if isinstance(exc, MlflowException) and not is_unreachable(exc):
            raise RegistryError(f"MLflow registry at {settings.tracking_uri}: {exc.message}") from None
        raise SourceUnavailable(
            f"MLflow registry at {settings.tracking_uri} is unreachable: "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from None


# --- download and verification ------------------------------------------------------------------


def download_verified(settings, model_uri: str, label: str | None = None) -> tuple[Any, Any]:
    """(sklearn Pipeline, MLflow ``Model`` metadata) of ``model_uri``, after checking the model
    directory (skops only, trusted types within the allow-list) and before deserializing it.
    Errors name ``label`` (default ``model_uri``) and the artifact, never the temp directory."""
    import mlflow
    import mlflow.artifacts
    from mlflow.models import Model

    from netsec_tasks.tracking import load_model_dir

    with _LOAD_LOCK, tempfile.TemporaryDirectory(prefix="netsec-serving-") as tmp:
        # models:/ (and MLflow 3's models:/m-<id> sources) resolve through the *global* registry
        # URI, whatever tracking_uri= says: point it at our registry for the download.
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(settings.tracking_uri)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=tmp, tracking_uri=settings.tracking_uri
        )
        pipeline = load_model_dir(local, label or model_uri)  # verifies first
        meta = Model.load(os.path.join(local, "MLmodel"))
    return pipeline, meta


def feature_schema(tags: dict, meta, pipeline) -> tuple[list[str], list[str]]:
    """(feature names, MLflow type names): the netsec.features tag, else the signature, else the
    Pipeline's fitted names. Types are "double" where the signature does not say."""
    sig_types: dict[str, str] = {}
    if meta.signature is not None and meta.signature.inputs is not None:
        for col in meta.signature.inputs.inputs:
            if getattr(col, "name", None):
                sig_types[col.name] = str(getattr(col.type, "name", col.type)).lower()
    if tags.get("netsec.features"):
        features = list(json.loads(tags["netsec.features"]))
    elif sig_types:
        features = list(sig_types)
    elif hasattr(pipeline, "feature_names_in_"):
        features = [str(c) for c in pipeline.feature_names_in_]
    else:
        raise RegistryError(
            "the model version has no netsec.features tag, no signature and no "
            "feature names: cannot validate requests against it"
        )
    return features, [sig_types.get(f, "double") for f in features]


def run_metrics(client, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        data = client.get_run(run_id).data.metrics
    except Exception:  # metrics are informative; a deleted run must not block serving
        return {}
    return {k: float(v) for k, v in sorted(data.items()) if k.startswith("test_") or k == "cv_score"}


# --- the rows a fast path must agree on ---------------------------------------------------------


def test_split(settings, mv):
    """(DataFrame, where it came from): the registered model's own validated test split.

    The Parquet at the version's ``netsec.test_uri`` tag, read through the pipeline's storage
    (``storage.uri``, ``storage.endpoint_url``, S3 credentials from the environment); for versions
    registered before that tag, the copy their run logged as ``data/test.parquet``. Raises
    DataError when neither can be read.
    """
    uri = (mv.tags or {}).get("netsec.test_uri")
    if uri:
        from netsec_tasks.config import load_config
        from netsec_tasks.errors import NetsecError
        from netsec_tasks.storage import storage_for

        try:
            return storage_for(load_config()).read_frame(uri), uri
        except NetsecError as exc:
            raise DataError(f"netsec.test_uri {uri} cannot be read: {exc}") from None
    return _logged_test_split(settings, mv)


def _logged_test_split(settings, mv):
    import mlflow.artifacts
    import pandas as pd

    if not mv.run_id:
        raise DataError("the model version has no netsec.test_uri tag and no source run")
    with tempfile.TemporaryDirectory(prefix="netsec-test-split-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id,
                artifact_path=TEST_ARTIFACT,
                dst_path=tmp,
                tracking_uri=settings.tracking_uri,
            )
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataError(
                f"the version has no netsec.test_uri tag and run {mv.run_id} has no "
                f"readable {TEST_ARTIFACT}: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None
    return frame, f"run {mv.run_id} {TEST_ARTIFACT}"


def verification_rows(frame, features, feature_types, *, seed: int = 0):
    """Up to :data:`VERIFY_ROWS` rows of ``frame`` and up to :data:`VERIFY_NAN_ROWS` copies with
    numeric cells set to NaN (1 to half of the numeric columns each; every numeric column is
    blanked in some row). A float matrix for numeric models, else a DataFrame.
    """
    features, feature_types = list(features), list(feature_types)
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise DataError(f"the test split lacks the model's feature columns {missing[:5]}")
    rng = np.random.default_rng(seed)
    rows = frame[features]
    if len(rows) > VERIFY_ROWS:
        rows = rows.iloc[np.sort(rng.choice(len(rows), VERIFY_ROWS, replace=False))]
    rows = rows.reset_index(drop=True)
    if rows.empty:
        raise DataError("the test split has no rows")
    numeric = [i for i, t in enumerate(feature_types) if t in NUMERIC_TYPES]
    copies = rows.iloc[rng.choice(len(rows), min(VERIFY_NAN_ROWS, len(rows)), replace=False)].copy()
    if numeric:
        cells = np.zeros(copies.shape, dtype=bool)
        for r in range(len(copies)):
            k = int(rng.integers(1, max(1, len(numeric) // 2) + 1))
            cols = {numeric[r % len(numeric)], *rng.choice(numeric, k - 1, replace=False).tolist()}
            cells[r, sorted(cols)] = True
        for j in numeric:
            col = copies.columns[j]
            copies[col] = copies[col].astype(np.float64).mask(cells[:, j])
    import pandas as pd

    both = pd.concat([rows, copies], ignore_index=True)
    if len(numeric) == len(features):
        return both.to_numpy(dtype=np.float64)
    return both


# --- the whole load -----------------------------------------------------------------------------


def load_version(settings, client, mv) -> LoadedModel:
    """Download, verify, deserialize and prepare (n_jobs=1, fast path, warm-up) one version."""
    configure_mlflow_client(settings)
    uri = f"models:/{mv.name}/{mv.version}"
    pipeline, meta = download_verified(settings, uri, version_label(mv.name, mv.version, mv.run_id))
    single_threaded(pipeline)  # joblib start-up costs more than a one-row prediction
    tags = dict(mv.tags or {})
    features, types = feature_schema(tags, meta, pipeline)
    classes = list(getattr(pipeline, "classes_", [0, 1]))
    if 1 not in classes:
        raise RegistryError(
            f"{uri}: the model's classes are {classes}; the netsec convention is "
            "is_threat 0/1 (retrain with the current pipeline)"
        )
    from netsec_tasks.operating_point import model_threshold
    from serving.fastpath import estimator_name

    try:
        threshold = model_threshold(pipeline)
    except ValueError as exc:
        raise RegistryError(f"{uri}: {exc}") from None
    if not threshold.recorded:
        log.warning(
            "model %s v%s has no decision threshold (registered before operating points): it is "
            "served at the 0.5 rule its own predict() applies; retrain to decide at a "
            "false-positive budget",
            mv.name,
            mv.version,
        )
    model = LoadedModel(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        pipeline=pipeline,
        features=tuple(features),
        feature_types=tuple(types),
        target=tags.get("netsec.target"),
        positive_label=tag_value(tags.get("netsec.positive_label", "1")),
        negative_label=tag_value(tags.get("netsec.negative_label", "0")),
        metrics=run_metrics(client, mv.run_id),
        dataset_digest=tags.get("netsec.dataset_digest"),
        tags=tags,
        model_class=estimator_name(pipeline),
        inference_path="scikit-learn",
        loaded_at=dt.datetime.now(dt.UTC),
        threat_column=classes.index(1),
        threshold=threshold,
    )
    return with_fast_path(model, settings, mv)


def with_fast_path(model: LoadedModel, settings, mv) -> LoadedModel:
    """``model`` with a fast path verified on its test split, or with why it has none."""
    from serving.fastpath import fast_path_for

    try:
        frame, source = test_split(settings, mv)
        rows = verification_rows(frame, model.features, model.feature_types)
    except DataError as exc:
        why = f"scikit-learn (no test split to verify a fast path on: {exc})"
        log.warning("model %s v%s: %s", model.name, model.version, why)
        return replace(model, inference_path=why)
    fast, why = fast_path_for(
        model.pipeline,
        list(model.features),
        rows,
        threat_column=model.threat_column,
        threshold=model.threshold.value,
        batch_threads=settings.batch_threads,
        rows_source=source,
    )
    model = replace(model, fast=fast, inference_path=why)
    model.predict(rows[:1])  # warm-up: first-call allocations happen here, not in a request
    log.info("model %s v%s (%s) ready; inference path: %s", model.name, model.version, model.model_class, why)
    return model
