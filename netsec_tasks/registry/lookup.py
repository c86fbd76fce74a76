"""Which version is Production, and loading a version: the registry's read side.

The Production model is the version holding alias ``cfg.registry.alias`` *and* stage "Production"
(stages are deprecated since MLflow 2.9 but still work in 3.x; they are kept so clients that read
``models:/<name>/Production`` keep working). A version is looked up by alias first and by stage
only as a fallback, so the alias is the source of truth. The pipeline, reconcile, evaluate,
monitoring and serving all use :func:`find_production_version`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.errors import NetsecError, RegistryError, first_line
from netsec_tasks.outages import is_unreachable, mlflow_errors
from netsec_tasks.registry.comparable import check_comparable
from netsec_tasks.tracking import TAG_PREFIX, mlflow_client, version_label

log = logging.getLogger(__name__)

PRODUCTION_STAGE = "Production"


@dataclass(frozen=True)
class ProductionModel:
    """The current Production version and what serving/drift need to know about it."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    stage: str | None = None

    @property
    def model_uri(self) -> str:
        """A URI pinned to this version (an alias may move between lookup and load)."""
        return f"models:/{self.name}/{self.version}"

    @property
    def reference_uri(self) -> str | None:
        """The training split: the drift reference (storage URI; runs:/ for older versions)."""
        return self.tags.get(TAG_PREFIX + "train_uri") or self.tags.get(TAG_PREFIX + "reference_uri")


def find_production_version(client, name: str, alias: str, stage: str = PRODUCTION_STAGE):
    """The ModelVersion of ``name`` holding ``alias``, else the newest one in ``stage``, else None.

    The one "which version is Production" lookup: the pipeline and serving both use it.
    """
    mv = find_alias_version(client, name, alias)
    if mv is not None:
        return mv
    in_stage = [mv for mv in all_versions(client, name) if mv.current_stage == stage]
    return max(in_stage, key=lambda mv: int(mv.version)) if in_stage else None


def production_version(client, cfg: PipelineConfig):
    """:func:`find_production_version` of the configured model (``registry.model_name`` and
    ``registry.alias``): its ModelVersion, or None."""
    return find_production_version(client, cfg.registry.model_name, cfg.registry.alias)


def find_alias_version(client, name: str, alias: str):
    """The ModelVersion of ``name`` holding ``alias``, or None (no such model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (registered.aliases or {}).get(alias)
    return client.get_model_version(name, str(version)) if version is not None else None


def challenger_version(client, cfg: PipelineConfig):
    """The challenger: the ModelVersion holding ``registry.challenger_alias`` (a candidate that
    passed the promotion gate with ``registry.shadow`` on and is scored in shadow beside
    Production), or None."""
    return find_alias_version(client, cfg.registry.model_name, cfg.registry.challenger_alias)


def all_versions(client, name: str, *, tags: dict[str, str] | None = None) -> list:
    """Every ModelVersion of registered model ``name`` (all pages), optionally only those whose
    tags equal ``tags`` (keys and values are quoted for MLflow's filter syntax)."""
    flt = f"name = '{_quoted(name)}'" + "".join(
        f" and tags.`{key}` = '{_quoted(value)}'" for key, value in (tags or {}).items()
    )
    out, token = [], None
    while True:
        page = client.search_model_versions(flt, max_results=200, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


def get_production(cfg: PipelineConfig) -> ProductionModel | None:
    """The current Production model (alias, falling back to stage), or None when there is none."""
    with mlflow_errors(cfg, f"look up the Production version of {cfg.registry.model_name!r}"):
        client = mlflow_client(cfg)
        mv = production_version(client, cfg)
        if mv is None:
            return None
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(client.get_run(mv.run_id).data.metrics)
            except Exception as exc:  # a deleted source run must not hide the Production model
                log.warning(
                    "source run %s of %s v%s unreadable: %s", mv.run_id, mv.name, mv.version, first_line(exc)
                )
        return ProductionModel(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            source=mv.source,
            tags=dict(mv.tags or {}),
            metrics=metrics,
            aliases=tuple(mv.aliases or ()),
            stage=mv.current_stage,
        )


def production_reference(cfg: PipelineConfig) -> tuple[str | None, str | None]:
    """(URI of the current Production model's training data, its version); (None, None) when
    there is no Production model.

    Raises ConfigError when that model is another data set's (other features, target or label
    mapping, see :func:`check_comparable`): the run stops before drift and training instead of
    comparing two data sets and failing at registration."""
    prod = get_production(cfg)
    if prod is None:
        return None, None
    check_comparable(cfg, prod, load_schema(cfg.schema_path))
    return prod.reference_uri, prod.version


def production_reference_uri(cfg: PipelineConfig) -> str | None:
    """URI of the training data of the current Production model; None when there is none
    (:func:`production_reference` without the version)."""
    return production_reference(cfg)[0]


def load_production_model(cfg: PipelineConfig) -> tuple[Any, str]:
    """(sklearn Pipeline, version) of the Production model.

    The version is resolved first (alias, then stage) and the model loaded by that exact version,
    so the returned version is always the one that was loaded even if the alias moves meanwhile.
    Raises RegistryError when there is no Production model.
    """
    prod = get_production(cfg)
    if prod is None:
        raise RegistryError(
            f"no Production model: registered model {cfg.registry.model_name!r} has no alias "
            f"{cfg.registry.alias!r} and no version in stage {PRODUCTION_STAGE!r} at "
            f"{cfg.registry.tracking_uri}; run the training pipeline first"
        )
    return load_version(cfg, prod.name, prod.version, prod.run_id), prod.version


def load_version(cfg: PipelineConfig, name: str, version: str, run_id: str | None = None) -> Any:
    """Load one version with the sklearn flavour, after checking it is skops with allowed types
    only (the trusted-type list is read from the model's own MLmodel file). Errors name
    ``models:/<name>/<version>``, its run and the artifact, never a temporary path.

    Raises RegistryError when it cannot be loaded, SourceUnavailable when the store is down."""
    from netsec_tasks.tracking import load_verified_model

    label = version_label(name, version, run_id)
    with mlflow_errors(cfg, f"load {label}"):
        mlflow_client(cfg)
        try:
            return load_verified_model(f"models:/{name}/{version}", cfg.registry.tracking_uri, label=label)
        except NetsecError:
            raise
        except Exception as exc:
            if is_unreachable(exc):
                raise
            raise RegistryError(f"{label} cannot be loaded: {first_line(exc)}") from exc
