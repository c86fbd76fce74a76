"""Pipeline configuration: ``config/pipeline.yaml`` plus ``NETSEC_*`` environment overrides.

Lookup of the file: ``$NETSEC_CONFIG`` if set, else ``./config/pipeline.yaml``, else the
``config/pipeline.yaml`` beside this package (a source checkout). Data-set schemas live in
``<config dir>/schema/<dataset>.yaml``.

Overrides: ``NETSEC_<SECTION>__<KEY>=value`` sets ``section.key`` (``__`` separates levels, names
are case-insensitive, the value is parsed as YAML so ``5``, ``true`` and ``[a, b]`` work), e.g.
``NETSEC_SOURCE__KIND=mongo`` or ``NETSEC_TRAINING__CV_FOLDS=3``. ``NETSEC_HOME`` sets the work
directory, ``MLFLOW_TRACKING_URI`` is honoured when ``registry.tracking_uri`` is not overridden.
Every value is validated at start-up; an unknown or invalid key raises :class:`ConfigError`
naming the key (and the environment variable, when it came from one).

Strings may contain ``{workdir}`` and ``{config_dir}``; they are expanded after loading so the
embedded defaults keep all local state under one directory.

Modules: :mod:`.section` (the base model, shared value types), one module a group of sections
(:mod:`.data_sections`, :mod:`.training_sections`, :mod:`.service_sections`,
:mod:`.decision_sections`, :mod:`.schedule_sections`), :mod:`.pipeline_config` (the whole
config and its validation) and :mod:`.loading` (file, environment and overrides:
:func:`load_config`).
"""

from netsec_tasks.config.data_sections import (
    DriftConfig,
    MongoSourceConfig,
    SourceConfig,
    SplitConfig,
    ValidationConfig,
)
from netsec_tasks.config.decision_sections import DecisionConfig, EvaluationConfig, ShadowConfig
from netsec_tasks.config.loading import ENV_PREFIX, find_config_file, load_config
from netsec_tasks.config.pipeline_config import PACKAGE_CONFIG_DIR, PipelineConfig
from netsec_tasks.config.schedule_sections import DagConfig, MonitoringConfig
from netsec_tasks.config.service_sections import DaskConfig, RegistryConfig, StorageConfig, model_name_for
from netsec_tasks.config.training_sections import Candidate, TrainingConfig, TransformConfig

__all__ = [
    "ENV_PREFIX",
    "PACKAGE_CONFIG_DIR",
    "Candidate",
    "DagConfig",
    "DaskConfig",
    "DecisionConfig",
    "DriftConfig",
    "EvaluationConfig",
    "MongoSourceConfig",
    "MonitoringConfig",
    "PipelineConfig",
    "RegistryConfig",
    "ShadowConfig",
    "SourceConfig",
    "SplitConfig",
    "StorageConfig",
    "TrainingConfig",
    "TransformConfig",
    "ValidationConfig",
    "find_config_file",
    "load_config",
    "model_name_for",
]
