"""MLflow plumbing shared by training and the registry: experiment set-up and model logging.

Models are logged with skops, never pickle. skops refuses to load any type outside its
``trusted`` list, and MLflow stores that list in the model's MLmodel file, so the list we log is
what every later loader (registry, serving) trusts. We compute it from the model itself and then
check it against :data:`ALLOWED_TRUSTED_TYPES`: an unexpected type (a custom class, a new
estimator) fails loudly at logging time instead of being trusted silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import NetsecError, RegistryError

if TYPE_CHECKING:  # mlflow is heavy; import it only where it is used
    import pandas as pd

# Non-sklearn-default types our candidates need (measured with skops.io.get_untrusted_types).
ALLOWED_TRUSTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
    }
)

# Every MLflow tag netsec writes on runs and model versions starts with this.
TAG_PREFIX = "netsec."
PIPELINE_RUN_TAG = TAG_PREFIX + "pipeline_run_id"
# The process that owns a run (netsec_tasks.outages.owner_id), and why a run ended early.
OWNER_TAG = TAG_PREFIX + "owner"
END_REASON_TAG = TAG_PREFIX + "end_reason"
# A model version's decision threshold on P(threat) (netsec_tasks.operating_point); versions
# registered before thresholds existed have none and decide at 0.5.
THRESHOLD_TAG = TAG_PREFIX + "threshold"


def _is_local_store(uri: str) -> bool:
    """A tracking store that writes artifacts where we tell it (SQLite/file), not a server."""
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


def _artifact_location_uri(location: str | None) -> str | None:
    if not location:
        return None
    if "://" in location:
        return location
    path = Path(location).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def mlflow_client(cfg: PipelineConfig):
    """An MlflowClient for the configured store; also points the fluent API (start_run,
    load_model, download_artifacts with ``models:/`` URIs) at the same tracking and registry URI."""
    import mlflow
    from mlflow import MlflowClient

    from netsec_tasks.outages import apply_mlflow_budget

    apply_mlflow_budget(cfg)  # before any request: MLflow reads its HTTP settings per request
    uri = cfg.registry.tracking_uri
    if uri.startswith("sqlite:///"):  # the embedded default: the store lives in the work dir
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def configure_mlflow(cfg: PipelineConfig) -> str:
    """Point MLflow at ``cfg.registry.tracking_uri`` and return the experiment id.

    Creates the experiment (with ``cfg.registry.artifact_location`` on a local store) when it is
    missing, restores it when it was deleted, and tolerates a concurrent task creating it first.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from netsec_tasks.outages import is_unreachable, mlflow_unavailable

    uri = cfg.registry.tracking_uri
    client = mlflow_client(cfg)
    name = cfg.registry.experiment
    try:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            location = (
                _artifact_location_uri(cfg.registry.artifact_location) if _is_local_store(uri) else None
            )
            try:
                exp_id = client.create_experiment(name, artifact_location=location)
            except MlflowException as exc:
                if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc):
                    raise
                exp_id = client.get_experiment_by_name(name).experiment_id  # created concurrently
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp_id)
    except Exception as exc:
        if is_unreachable(exc):  # connection refused, timed out, DNS, SQLite directory gone...
            raise mlflow_unavailable(cfg, f"set up experiment '{name}'", exc) from exc
        if isinstance(exc, MlflowException):
            raise NetsecError(f"MLflow at {uri} refused experiment '{name}': {exc.message}") from exc
        raise
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def trusted_types_for(model: Any) -> list[str]:
    """The minimal skops trusted-type list for ``model``; raises if it needs an unknown type."""
    import skops.io

    needed = sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    unknown = [t for t in needed if t not in ALLOWED_TRUSTED_TYPES]
    if unknown:
        raise NetsecError(
            f"model needs skops types that are not on the allow-list: {unknown}; add them to "
            "netsec_tasks.tracking.ALLOWED_TRUSTED_TYPES only if they are safe to load"
        )
    return needed


def signature_frame(X: pd.DataFrame) -> pd.DataFrame:
    """Numeric features as float64, so the signature admits NaN (the KNN imputer fills it)."""
    import pandas as pd

    out = X.copy()
    for col in out.columns:
        if pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col]):
            out[col] = out[col].astype("float64")
    return out


def pip_requirements_for(trusted_types: list[str]) -> list[str]:
    """Pinned requirements of a logged pipeline, stated rather than inferred.

    MLflow would otherwise infer them by loading the model in a subprocess (~10 s per model).
    """
    from importlib.metadata import PackageNotFoundError, version

    packages = ["scikit-learn", "skops", "numpy", "scipy", "pandas"]
    if any(t.startswith("xgboost.") for t in trusted_types):
        packages.append("xgboost-cpu")
    pins = []
    for name in packages:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            if name == "xgboost-cpu":  # the full "xgboost" wheel installed instead
                pins.append(f"xgboost=={version('xgboost')}")
            else:
                pins.append(name)
    return pins


def log_pipeline_model(
    model: Any,
    X_example: pd.DataFrame,
    name: str = "model",
    *,
    n_example_rows: int = 5,
    signature: Any = None,
) -> str:
    """Log the fitted pipeline into the active MLflow run (skops); return the model URI.

    The signature is inferred from the feature frame and the model's ``predict`` output unless
    given; the input example is the first ``n_example_rows`` rows.
    """
    import mlflow
    from mlflow.models import infer_signature

    frame = signature_frame(X_example)
    if signature is None:
        signature = infer_signature(frame, model.predict(frame))
    trusted = trusted_types_for(model)
    info = mlflow.sklearn.log_model(
        model,
        name=name,
        serialization_format="skops",
        skops_trusted_types=trusted,
        pip_requirements=pip_requirements_for(trusted),
        signature=signature,
        input_example=frame.head(n_example_rows),
    )
    return info.model_uri


def version_label(name: str, version: str | int, run_id: str | None = None) -> str:
    """How errors name a model version: ``models:/<name>/<version> (run <id>)``."""
    return f"models:/{name}/{version}" + (f" (run {run_id})" if run_id else "")


def model_id_in(uri: str | None) -> str | None:
    """The logged-model id in an MLflow 3 ``models:/<model_id>`` URI (what ``log_model`` returns
    and what a version registered from it has as its ``source``, e.g. ``models:/m-1a2b...``);
    None for every other form (``models:/<name>/<version>``, ``models:/<name>@<alias>``,
    ``runs:/...``, a path). The URI forms are MLflow's documented ones; parsing them here keeps
    us off MLflow's private ``_parse_model_id_if_present``, which also calls a registry of its
    own choosing for the ``<name>/<version>`` form."""
    if not uri or not uri.startswith("models:/"):
        return None
    rest = uri[len("models:/") :].strip("/")
    return rest if rest and "/" not in rest and "@" not in rest else None


def logged_model_id(mv) -> str | None:
    """The MLflow 3 logged model behind a model version ``mv`` (``m-...``): its ``model_id``,
    else read from its ``models:/<model_id>`` source (the SQL store leaves ``model_id`` empty);
    None for a version registered from a run or a path."""
    return getattr(mv, "model_id", None) or model_id_in(mv.source)


def verify_model_dir(model_dir: str | Path, *, label: str | None = None) -> list[str]:
    """Refuse to deserialize a model that is not ours to trust; returns its trusted types.

    MLflow reads the skops ``trusted`` list from the model's own MLmodel file, so a crafted or
    foreign model could whitelist anything (and MLflow would load pickle as readily). Before any
    load we check the flavour conf: sklearn flavour, skops format, and no trusted type outside
    :data:`ALLOWED_TRUSTED_TYPES`. Errors (:class:`RegistryError`) name ``label`` (e.g.
    ``models:/netsec-phishing/3 (run ...)``) when given, else the directory.
    """
    _, trusted = _verified_flavor(Path(model_dir), label)
    return trusted


def _verified_flavor(model_dir: Path, label: str | None) -> tuple[dict, list[str]]:
    import yaml

    mlmodel = model_dir / "MLmodel"
    where = f"{label}: MLmodel" if label else str(mlmodel)
    if not mlmodel.is_file():  # MLflow "downloads" an empty directory when the artifacts are gone
        raise RegistryError(
            f"{label or model_dir}: the model's artifacts are missing (no MLmodel "
            "file); the artifact store lost them or the upload never finished"
        )
    try:
        conf = yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        detail = _scrub(f"{type(exc).__name__}: {exc}", model_dir, label)
        raise RegistryError(f"{where}: not a readable MLflow model ({detail})") from None
    flavor = (conf.get("flavors") or {}).get("sklearn") if isinstance(conf, dict) else None
    if not flavor:
        raise RegistryError(f"{where}: no sklearn flavour; netsec serves sklearn Pipelines only")
    fmt = flavor.get("serialization_format")
    if fmt != "skops":
        raise RegistryError(
            f"{where}: serialization format {fmt!r} refused; netsec loads skops "
            "models only (pickle can run arbitrary code)"
        )
    trusted = list(flavor.get("skops_trusted_types") or [])
    extra = sorted(set(trusted) - ALLOWED_TRUSTED_TYPES)
    if extra:
        raise RegistryError(f"{where}: trusts types outside netsec's allow-list: {', '.join(extra)}")
    return flavor, trusted


def _scrub(text: str, model_dir: Path, label: str | None) -> str:
    """An error text with the (temporary) local directory replaced by what it holds."""
    text = " ".join(str(text).split())
    if label:
        for form in {str(model_dir), str(model_dir.resolve())}:
            text = text.replace(form, label)
    return text[:300]


def load_model_dir(model_dir: str | Path, label: str) -> Any:
    """Verify (:func:`verify_model_dir`) and load the sklearn Pipeline of a downloaded model.

    Every error is a :class:`RegistryError` naming ``label`` and the artifact file (e.g.
    ``models:/netsec-phishing/3 (run 1f2e...): artifact model.skops cannot be loaded:
    BadZipFile: File is not a zip file``), never the local directory.
    """
    import mlflow.sklearn

    model_dir = Path(model_dir)
    flavor, _ = _verified_flavor(model_dir, label)
    artifact = flavor.get("pickled_model") or "the model file"
    try:
        return mlflow.sklearn.load_model(str(model_dir))
    except Exception as exc:
        detail = _scrub(f"{type(exc).__name__}: {exc}", model_dir, label)
        raise RegistryError(f"{label}: artifact {artifact} cannot be loaded ({detail})") from exc


def load_verified_model(model_uri: str, tracking_uri: str | None = None, *, label: str | None = None) -> Any:
    """Download ``model_uri`` (``models:/``, ``runs:/``, a path), verify it, load the Pipeline.

    ``label`` (default: ``model_uri``) is what errors call the model, e.g.
    ``models:/netsec-phishing/3 (run 1f2e...)``. Raises :class:`RegistryError` for a model that
    is missing, refused or unreadable; an unreachable store's error propagates as it is (the
    caller maps it to SourceUnavailable, :func:`netsec_tasks.outages.mlflow_errors`).
    """
    import tempfile

    import mlflow.artifacts

    from netsec_tasks.outages import is_unreachable

    label = label or model_uri
    if Path(model_uri).is_dir():
        return load_model_dir(model_uri, label)
    with tempfile.TemporaryDirectory(prefix="netsec-model-") as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=model_uri, dst_path=tmp, tracking_uri=tracking_uri
                )
            )
        except Exception as exc:
            if is_unreachable(exc):
                raise
            detail = _scrub(f"{type(exc).__name__}: {exc}", Path(tmp), label)
            raise RegistryError(f"{label}: the model's artifacts cannot be downloaded ({detail})") from exc
        return load_model_dir(local, label)
