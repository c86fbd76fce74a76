"""The whole configuration, :class:`PipelineConfig`: its sections, the names derived from the
data set, and validation of a data tree (``{workdir}``/``{config_dir}`` expanded; a bad key
blamed on where its value came from), also behind :meth:`PipelineConfig.with_overrides`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from netsec_tasks.config.data_sections import DriftConfig, SourceConfig, SplitConfig, ValidationConfig
from netsec_tasks.config.decision_sections import DecisionConfig, EvaluationConfig, ShadowConfig
from netsec_tasks.config.schedule_sections import DagConfig, MonitoringConfig
from netsec_tasks.config.section import Section
from netsec_tasks.config.service_sections import DaskConfig, RegistryConfig, StorageConfig, model_name_for
from netsec_tasks.config.training_sections import TrainingConfig, TransformConfig
from netsec_tasks.errors import ConfigError

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "config"


class PipelineConfig(Section):
    dataset: str = "phishing"
    workdir: str = ".netsec"
    source: SourceConfig = SourceConfig()
    split: SplitConfig = SplitConfig()
    validation: ValidationConfig = ValidationConfig()
    drift: DriftConfig = DriftConfig()
    transform: TransformConfig = TransformConfig()
    training: TrainingConfig = TrainingConfig()
    registry: RegistryConfig = RegistryConfig()
    decision: DecisionConfig = DecisionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    storage: StorageConfig = StorageConfig()
    dask: DaskConfig = DaskConfig()
    dag: DagConfig = DagConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    shadow: ShadowConfig = ShadowConfig()
    config_dir: str = Field(
        str(PACKAGE_CONFIG_DIR),
        exclude=True,
        description="Where this config was loaded from (set by load_config, not by the file).",
    )

    @model_validator(mode="after")
    def _no_empty_candidates(self) -> PipelineConfig:
        if not self.training.candidates:
            raise ValueError("training.candidates must list at least one model")
        return self

    @model_validator(mode="after")
    def _derived_model_name(self) -> PipelineConfig:
        # Remember that the name was derived, so a later change of data set derives it again.
        if not self.registry.model_name:
            self.registry.model_name = model_name_for(self.dataset)
            self.registry._derived = True
        # The same for the data set's source collection: one per data set unless set.
        if not self.source.mongo.collection:
            self.source.mongo.collection = self.dataset
            self.source.mongo._derived = True
        return self

    @property
    def model_name_derived(self) -> bool:
        """True when ``registry.model_name`` was not set and is ``netsec-<dataset>``."""
        return self.registry._derived

    @property
    def workdir_path(self) -> Path:
        return Path(self.workdir)

    @property
    def schema_path(self) -> Path:
        return Path(self.config_dir) / "schema" / f"{self.dataset}.yaml"

    def with_overrides(self, overrides: dict[str, Any]) -> PipelineConfig:
        """A copy with dotted-key overrides (``{"source.kind": "mongo"}``), validated again."""
        data = _dump(self)
        for dotted, value in overrides.items():
            set_dotted(data, dotted.split("."), value, origin=dotted)
        return validate_config(data, origin_of={k: f"override {k}={v!r}" for k, v in overrides.items()})


def set_dotted(data: dict, keys: list[str], value: Any, origin: str) -> None:
    node = data
    for key in keys[:-1]:
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin}: '{key}' is a value, not a section")
        node = nxt
    node[keys[-1]] = value


def validate_config(data: dict, origin_of: dict[str, str], source: str = "config") -> PipelineConfig:
    """Validate; a bad key is blamed on where its value came from: the file ``source``, or the
    override in ``origin_of`` (an environment variable, ``--set``, a command-line option)."""
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        from_file = False
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            origin = next((origin_of[k] for k in _prefixes(key) if k in origin_of), None)
            from_file = from_file or origin is None
            where = f" (from {origin})" if origin else ""
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}'{where}")
            else:
                problems.append(f"'{key}'{where}: {err['msg']} (got {err.get('input')!r})")
        prefix = f"{source}: " if from_file else ""
        raise ConfigError(f"{prefix}invalid configuration: " + "; ".join(problems)) from None
    return _expand(cfg)


def _prefixes(key: str) -> list[str]:
    """``a.b.c`` -> ``a.b.c``, ``a.b``, ``a``: an override of a section blames its keys too."""
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _expand(cfg: PipelineConfig) -> PipelineConfig:
    """Resolve the work dir and expand {workdir}/{config_dir} in every string value."""
    workdir = Path(os.path.expanduser(cfg.workdir))
    if not workdir.is_absolute():
        workdir = (Path.cwd() / workdir).resolve()
    subst = {"workdir": str(workdir), "config_dir": cfg.config_dir}

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            for k, s in subst.items():
                v = v.replace("{" + k + "}", s)
            return v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    data = walk(_dump(cfg))
    data["workdir"] = str(workdir)
    return PipelineConfig.model_validate(data)


def _dump(cfg: PipelineConfig) -> dict:
    """The config as data to validate again: a derived model name is left out (derived again,
    from the data set then in force)."""
    data = cfg.model_dump(mode="python")
    data["config_dir"] = cfg.config_dir
    if cfg.model_name_derived:
        data["registry"]["model_name"] = None
    if cfg.source.mongo._derived:
        data["source"]["mongo"]["collection"] = None
    return data
