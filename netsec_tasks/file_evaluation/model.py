"""The model an evaluation scores: the version a ``models:/`` URI or the configured Production
alias names, and what it was trained on (its raw labels, its training rows)."""

from __future__ import annotations

import logging
import re

from netsec_tasks.config import PipelineConfig
from netsec_tasks.contract import show
from netsec_tasks.errors import ConfigError, NetsecError, RegistryError
from netsec_tasks.tracking import TAG_PREFIX

log = logging.getLogger("netsec.evaluate")

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))$")


def resolve_model(cfg: PipelineConfig, model_uri: str | None):
    """The MLflow ModelVersion to evaluate: ``model_uri`` (``models:/<name>/<version>`` or
    ``models:/<name>@<alias>``), else the configured model's Production version.
    Raises ConfigError (a malformed URI), RegistryError (no such version, no Production)."""
    from mlflow.exceptions import MlflowException

    from netsec_tasks.outages import mlflow_errors
    from netsec_tasks.registry import find_production_version
    from netsec_tasks.tracking import mlflow_client

    what = model_uri or f"the Production version of {cfg.registry.model_name!r}"
    with mlflow_errors(cfg, f"look up {what}"):
        client = mlflow_client(cfg)
        if model_uri is None:
            mv = find_production_version(client, cfg.registry.model_name, cfg.registry.alias)
            if mv is None:
                raise RegistryError(
                    f"no Production model: registered model {cfg.registry.model_name!r} has no "
                    f"alias {cfg.registry.alias!r} at {cfg.registry.tracking_uri}; train the "
                    f"'{cfg.dataset}' data set first (netsec run) or pass --model "
                    "models:/<name>/<version>"
                )
            return mv
        m = _MODEL_URI.match(model_uri.strip())
        if not m:
            raise ConfigError(
                f"--model {model_uri!r}: expected models:/<name>/<version> or models:/<name>@<alias>"
            )
        try:
            if m["version"]:
                return client.get_model_version(m["name"], m["version"])
            return client.get_model_version_by_alias(m["name"], m["alias"])
        except MlflowException as exc:
            if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RegistryError(
                    f"{model_uri}: no such model version at {cfg.registry.tracking_uri}"
                ) from None
            raise


def training_labels(cfg: PipelineConfig, tags: dict[str, str], target: str) -> set[str] | None:
    """The raw labels of the model's training split (its ``netsec.train_uri``), as text; None
    when it cannot be read (then "in training" is left out of the report)."""
    from netsec_tasks.storage import storage_for

    uri = tags.get(TAG_PREFIX + "train_uri")
    if not uri:
        return None
    try:
        frame = storage_for(cfg).read_frame(uri, columns=[target])
    except (NetsecError, KeyError, OSError, ValueError) as exc:
        log.info("training labels of the model unreadable (%s): per-label 'in_training' left out", exc)
        return None
    return {show(v) for v in frame[target].dropna().unique()}


def trained_on_mask(cfg: PipelineConfig, name: str, version: str, tags: dict[str, str], x, target, schema):
    """Mask of the scored rows (features ``x``, raw labels ``target``) identical to a row the
    version was trained on, from its recorded training-row hashes; None without them."""
    from netsec_tasks.registry import production_rows_in

    rows = x.reset_index(drop=True).copy()
    rows[schema.target.column] = target.reset_index(drop=True).to_numpy()
    return production_rows_in(cfg, version, tags, rows, schema)
