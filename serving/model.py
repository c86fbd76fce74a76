"""The served model: loading from the MLflow registry, and the immutable :class:`LoadedModel`.

A request takes ``manager.current`` once and uses only that object, so a hot swap (one reference
assignment) can never give a request half of one version and half of another. Everything a
request needs (feature order, labels, the compiled fast path) is computed at load time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netsec_tasks.errors import RegistryError, SourceUnavailable

log = logging.getLogger("netsec.serving")

# MLflow type names that carry numbers; anything else ("string", "boolean"...) is passed as is.
NUMERIC_TYPES = {"double", "float", "long", "integer"}
# One load at a time per process: the download sets MLflow's global URIs.
_LOAD_LOCK = threading.Lock()
PROBE_ROWS = 400  # > 2 x TreeApplyForest.MIN_ROWS_PER_THREAD: the threaded path is verified too


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    run_id: str | None
    pipeline: Any
    features: tuple[str, ...]
    feature_types: tuple[str, ...]  # MLflow signature types, "double" when unknown
    target: str | None
    positive_label: Any
    negative_label: Any
    metrics: dict[str, float]
    dataset_digest: str | None
    tags: dict[str, str]
    model_class: str
    inference_path: str  # "compiled" or why scikit-learn is used directly
    loaded_at: dt.datetime
    fast: Any = field(default=None, repr=False)
    threat_column: int = 1  # index of class 1 (is_threat) in predict_proba

    @property
    def numeric_only(self) -> bool:
        return all(t in NUMERIC_TYPES for t in self.feature_types)

    def threat_probability(self, x: Any) -> np.ndarray:
        """P(threat) per row. ``x``: a float matrix (numeric models) or a DataFrame."""
        if self.fast is not None and isinstance(x, np.ndarray):
            proba = self.fast.predict_proba(x)
        else:
            proba = self.pipeline.predict_proba(self._frame(x))
        return proba[:, self.threat_column]

    def predict(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """(is_threat 0/1, threat probability). One predict_proba pass; the class is its argmax,
        which is how the pipeline's own ``predict`` decides for every netsec candidate."""
        p = self.threat_probability(x)
        other = 1.0 - p
        # Ties (p == 0.5) go to class 0, as np.argmax over [p0, p1] does in predict().
        return (p > other).astype(np.int8), p

    def label_for(self, is_threat: int) -> Any:
        return self.positive_label if is_threat else self.negative_label

    def _frame(self, x: Any):
        import pandas as pd

        if isinstance(x, pd.DataFrame):
            return x
        return pd.DataFrame(x, columns=list(self.features))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "run_id": self.run_id,
            "model_class": self.model_class, "metrics": self.metrics,
            "dataset_digest": self.dataset_digest,
            "features": [{"name": f, "type": t} for f, t in zip(self.features, self.feature_types)],
            "target": self.target, "positive_label": self.positive_label,
            "negative_label": self.negative_label, "inference_path": self.inference_path,
            "loaded_at": self.loaded_at.isoformat(),
        }


def _tag_value(raw: str | None) -> Any:
    """Labels are stored as JSON when they are numbers ("-1"), else as plain text."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


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


def resolve_production_version(settings):
    """The version with the alias, else the newest in the stage. Raises SourceUnavailable /
    RegistryError."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        try:
            return client, client.get_model_version_by_alias(settings.model_name, settings.model_alias)
        except MlflowException as exc:
            if _is_connection_problem(exc):
                raise
            found = client.get_latest_versions(settings.model_name, stages=[settings.model_stage])
            if found:
                return client, found[0]
            raise RegistryError(
                f"registered model '{settings.model_name}' has no version with alias "
                f"'{settings.model_alias}' or stage '{settings.model_stage}' at "
                f"{settings.tracking_uri}; run the training pipeline first") from None
    except RegistryError:
        raise
    except Exception as exc:
        if isinstance(exc, MlflowException) and not _is_connection_problem(exc):
            raise RegistryError(f"MLflow registry at {settings.tracking_uri}: {exc.message}") from None
        raise SourceUnavailable(
            f"MLflow registry at {settings.tracking_uri} is unreachable: "
            f"{type(exc).__name__}: {str(exc)[:300]}") from None


def _is_connection_problem(exc: Exception) -> bool:
    text = str(exc)
    return any(s in text for s in ("Max retries exceeded", "Connection refused", "ConnectionError",
                                   "timed out", "NewConnectionError", "API request to"))


def load_version(settings, client, mv) -> LoadedModel:
    """Download, deserialize, prepare (n_jobs=1, fast path, warm-up) one model version."""
    import mlflow.sklearn
    from mlflow.models import Model

    from netsec_tasks.tracking import load_model_dir, version_label

    import mlflow

    configure_mlflow_client(settings)
    uri = f"models:/{mv.name}/{mv.version}"
    with _LOAD_LOCK, tempfile.TemporaryDirectory(prefix="netsec-serving-") as tmp:
        import mlflow.artifacts

        # models:/ (and MLflow 3's models:/m-<id> sources) resolve through the *global* registry
        # URI, whatever tracking_uri= says: point it at our registry for the download.
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(settings.tracking_uri)
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp,
                                                    tracking_uri=settings.tracking_uri)
        # skops only, no type outside netsec's allow-list; errors name the version, not `tmp`
        pipeline = load_model_dir(local, version_label(mv.name, mv.version, mv.run_id))
        meta = Model.load(os.path.join(local, "MLmodel"))
        try:
            example = meta.load_input_example(local)
        except Exception:  # an example is optional; the probe rows fall back to a grid
            example = None
    _single_threaded(pipeline)
    tags = dict(mv.tags or {})
    features, types = _feature_schema(tags, meta, pipeline)
    metrics = _run_metrics(client, mv.run_id)
    classes = list(getattr(pipeline, "classes_", [0, 1]))
    if 1 not in classes:
        raise RegistryError(f"{uri}: the model's classes are {classes}; the netsec convention is "
                            "is_threat 0/1 (retrain with the current pipeline)")
    model = LoadedModel(
        name=mv.name, version=str(mv.version), run_id=mv.run_id, pipeline=pipeline,
        features=tuple(features), feature_types=tuple(types),
        target=tags.get("netsec.target"),
        positive_label=_tag_value(tags.get("netsec.positive_label", "1")),
        negative_label=_tag_value(tags.get("netsec.negative_label", "0")),
        metrics=metrics, dataset_digest=tags.get("netsec.dataset_digest"), tags=tags,
        model_class=type(getattr(pipeline, "steps", [[None, pipeline]])[-1][1]).__name__,
        inference_path="scikit-learn", loaded_at=dt.datetime.now(dt.timezone.utc),
        threat_column=classes.index(1),
    )
    return _with_fast_path(model, example, settings.batch_threads)


def _single_threaded(pipeline) -> None:
    """n_jobs=1 everywhere: joblib start-up costs more than a one-row prediction."""
    try:
        params = pipeline.get_params(deep=True)
    except Exception:
        return
    ones = {k: 1 for k, v in params.items() if k.endswith("n_jobs") and v not in (None, 1)}
    if ones:
        pipeline.set_params(**ones)


def _feature_schema(tags: dict, meta, pipeline) -> tuple[list[str], list[str]]:
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
        raise RegistryError("the model version has no netsec.features tag, no signature and no "
                            "feature names: cannot validate requests against it")
    return features, [sig_types.get(f, "double") for f in features]


def _run_metrics(client, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        data = client.get_run(run_id).data.metrics
    except Exception:  # metrics are informative; a deleted run must not block serving
        return {}
    return {k: float(v) for k, v in sorted(data.items()) if k.startswith("test_") or k == "cv_score"}


def _probe_rows(model: LoadedModel, example) -> np.ndarray:
    """Valid rows to verify the fast path: the logged example, and columns shuffled from it."""
    rng = np.random.default_rng(0)
    base = None
    if example is not None:
        try:
            import pandas as pd

            frame = example if isinstance(example, pd.DataFrame) else pd.DataFrame(example)
            base = frame[list(model.features)].to_numpy(dtype=np.float64)
        except Exception:
            base = None
    if base is None or len(base) == 0 or not np.isfinite(base).all():
        base = np.array([[-1.0] * len(model.features), [0.0] * len(model.features),
                         [1.0] * len(model.features)])
    idx = rng.integers(0, len(base), size=(PROBE_ROWS, base.shape[1]))
    return np.take_along_axis(base, idx, axis=0) if len(base) > 1 else np.repeat(base, PROBE_ROWS, 0)


def _with_fast_path(model: LoadedModel, example, batch_threads: int) -> LoadedModel:
    from dataclasses import replace

    from serving.fastpath import compile_pipeline

    if not model.numeric_only:
        return replace(model, inference_path="scikit-learn (non-numeric features)")
    probe = _probe_rows(model, example)
    fast, why = compile_pipeline(model.pipeline, list(model.features), probe,
                                 lambda a: model.pipeline.predict_proba(model._frame(a)),
                                 batch_threads=batch_threads)
    model = replace(model, fast=fast, inference_path=why)
    model.predict(probe[:1])  # warm-up: first-call allocations happen here, not in a request
    log.info("model %s v%s ready; inference path: %s", model.name, model.version, why)
    return model
