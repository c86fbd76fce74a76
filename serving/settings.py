"""Serving settings: environment variables ``NETSEC_SERVING_<FIELD>`` (plus ``MLFLOW_TRACKING_URI``).

Examples: ``NETSEC_SERVING_MODEL_NAME=netsec-phishing`` (default: the pipeline config's
``registry.model_name``, which is ``netsec-<dataset>`` unless set, so ``NETSEC_DATASET=x`` serves
``netsec-x`` with the ``x`` schema), ``NETSEC_SERVING_API_KEY=s3cret`` (scoring),
``NETSEC_SERVING_CONTROL_KEY=an0ther`` (``/train``; see ``serving/access.py``),
``NETSEC_SERVING_CORS_ORIGINS='["http://localhost:3000"]'`` (browser apps on other origins that
may call the service; none by default),
``NETSEC_SERVING_MONGO_URI=mongodb://mongo:27017/netsec`` (prediction log and analysts' verdicts
in MongoDB instead of the local JSONL files), ``NETSEC_SERVING_AIRFLOW_URL=http://airflow-apiserver:8080``.

The embedded defaults mirror the pipeline's (``config/pipeline.yaml``): the MLflow store is
``sqlite:///<NETSEC_HOME or .netsec>/mlflow.db`` and the prediction log lives beside it, so
``netsec run`` followed by ``netsec serve`` works with no configuration at all.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def netsec_home() -> Path:
    """The work directory shared with the pipeline (``NETSEC_HOME``, else ``./.netsec``)."""
    return Path(os.environ.get("NETSEC_HOME") or ".netsec").expanduser().resolve()


DEFAULT_AIRFLOW_PASSWORD = "admin"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NETSEC_SERVING_", extra="ignore", populate_by_name=True)

    # --- model registry -------------------------------------------------------------------
    # MLFLOW_TRACKING_URI is what every MLflow tool reads, so it is honoured without the prefix.
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "NETSEC_SERVING_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI", "mlflow_tracking_uri"
        ),
    )
    # None: the pipeline config's registry.model_name (netsec-<dataset> unless set there), so
    # serving answers with the model of the data set whose schema checks its inputs.
    model_name: str | None = None
    model_alias: str = "production"
    # Fall back to the (deprecated) stage when no version carries the alias.
    model_stage: str = "Production"
    # The challenger (registry.challenger_alias; issue 25): when a version holds this alias it is
    # loaded beside Production and scores every logged row in shadow, off the request path; its
    # decisions go to the prediction log and /metrics, never into a response. "" = never load one.
    challenger_alias: str = "challenger"
    poll_interval_seconds: float = Field(30.0, gt=0)
    # How often to retry while no model could be loaded yet (registry down at start-up).
    retry_interval_seconds: float = Field(5.0, gt=0)
    # MLflow refuses to deserialize any model (skops included) unless told the registry is
    # trusted; the serving container only loads models our own pipeline registered.
    trust_registry: bool = True

    # --- input contract -------------------------------------------------------------------
    # The data-set schema requests are checked against. Default: the pipeline config's data set
    # (NETSEC_CONFIG, else ./config/pipeline.yaml; NETSEC_DATASET picks another schema), with
    # its validation.max_row_null_share.
    schema_path: str | None = None

    # --- HTTP -----------------------------------------------------------------------------
    # The scoring key: when set, /predict* and /feedback require the header X-API-Key with this
    # value (or the control key). Unset (or empty), they stay open.
    api_key: SecretStr | None = None
    # The control-plane key: POST /train (and any route that changes the registry) requires it,
    # and only it. Unset, those routes are off (403). Must differ from api_key.
    control_key: SecretStr | None = None
    # Origins (scheme://host[:port]) of browser apps allowed to call the service across
    # origins (CORS, and the cross-site write check). Empty: none; "*" is refused.
    cors_origins: Annotated[list[str], NoDecode] = []
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_rows: int = Field(100_000, ge=1)
    # Threads that run inference, so the event loop keeps accepting requests.
    inference_threads: int = Field(2, ge=1, le=64)
    # Threads one large batch is split across (tree ensembles; 0 = one per CPU).
    batch_threads: int = Field(0, ge=0, le=64, validate_default=True)

    # --- prediction log -------------------------------------------------------------------
    # Where the log and the verdicts live is one setting, the pipeline config's (monitoring
    # reads them there): each of the four below left unset takes it from config/pipeline.yaml
    # (NETSEC_CONFIG; NETSEC_MONITORING__..., NETSEC_SOURCE__MONGO__DATABASE override it for
    # both). The URI is this service's own (its credentials); set, the log goes to MongoDB.
    mongo_uri: str | None = None
    mongo_database: str | None = Field(
        None, description="default: the database the URI names, else the config's source.mongo.database"
    )
    mongo_collection: str | None = Field(
        None, description="default: the config's monitoring.predictions_collection"
    )
    log_dir: str | None = Field(
        None, description="default: the config's monitoring.log_dir; the log is <log dir>/<model>/"
    )
    log_enabled: bool = True
    log_batch_rows: int = Field(1000, ge=1)
    log_flush_seconds: float = Field(2.0, gt=0)
    # Requests waiting to be written; beyond it new ones are dropped and counted.
    log_queue_requests: int = Field(10_000, ge=1)

    # --- analysts' verdicts (POST /feedback) ---------------------------------------------
    # Stored beside the prediction log, keyed by the served model like it: this collection of
    # the log's MongoDB database (a model_name field), or <log dir>/<model>/feedback.jsonl.
    feedback_collection: str | None = Field(
        None, description="default: the config's monitoring.feedback_collection"
    )
    max_feedback_items: int = Field(10_000, ge=1)

    # --- Airflow (POST /train, only with control_key) ----------------------------------------
    airflow_url: str | None = None  # e.g. http://airflow-apiserver:8080
    airflow_username: str = "admin"
    # The default is only good for an Airflow on this machine: with /train enabled and an
    # Airflow elsewhere, serving refuses to start with it (check_train_settings).
    airflow_password: SecretStr = SecretStr(DEFAULT_AIRFLOW_PASSWORD)
    airflow_dag_id: str = "netsec_training"
    airflow_timeout_seconds: float = Field(10.0, gt=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, v):
        # Accept "a,b" as well as the JSON list pydantic-settings expects for list fields.
        if isinstance(v, str):
            if v.strip().startswith("["):
                import json

                return json.loads(v)
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        from urllib.parse import urlsplit

        for origin in v:
            parts = urlsplit(origin)
            if origin == "*" or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"{origin!r} is not an origin: list each browser app's origin as "
                    "scheme://host[:port] (e.g. https://soc.example.org); '*' would let every "
                    "web page write into the prediction log"
                )
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"{origin!r}: an origin has no path; write {parts.scheme}://{parts.netloc}")
        return [o.rstrip("/") for o in v]

    @field_validator("api_key", "control_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, v):
        # docker compose passes an unset variable as "" (NETSEC_SERVING_API_KEY: ${...:-}).
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        return v

    @property
    def train_enabled(self) -> bool:
        """POST /train is on only with a control key (it starts a DAG run as the Airflow user)."""
        return self.control_key is not None

    def check_train_settings(self) -> None:
        """Refuse a set-up where the scoring key would also open the control plane (both keys
        equal), or where anyone who learns Airflow's default password could drive it: /train
        enabled (a control key is set) against an Airflow that is not on this machine
        (``airflow_url``'s host is not loopback) with ``airflow_password`` still ``admin``.

        Raises ConfigError naming the settings to change."""
        from urllib.parse import urlsplit

        from netsec_tasks.errors import ConfigError

        if (
            self.control_key is not None
            and self.api_key is not None
            and self.control_key.get_secret_value() == self.api_key.get_secret_value()
        ):
            raise ConfigError(
                "NETSEC_SERVING_CONTROL_KEY equals NETSEC_SERVING_API_KEY: every client allowed to "
                "score could also start training; give the control plane a key of its own"
            )
        if not self.train_enabled or not self.airflow_url:
            return
        host = (urlsplit(self.airflow_url).hostname or "").lower()
        if host in LOOPBACK_HOSTS or host.startswith("127."):
            return
        if self.airflow_password.get_secret_value() == DEFAULT_AIRFLOW_PASSWORD:
            raise ConfigError(
                f"POST /train is enabled (NETSEC_SERVING_CONTROL_KEY is set) against the Airflow at "
                f"{self.airflow_url}, but NETSEC_SERVING_AIRFLOW_PASSWORD is Airflow's default "
                f"'{DEFAULT_AIRFLOW_PASSWORD}': set it to that Airflow user's real password, or "
                "unset NETSEC_SERVING_CONTROL_KEY to turn /train off"
            )

    @model_validator(mode="after")
    def _from_pipeline_config(self) -> Settings:
        """Unset shared keys take the pipeline config's value: the model (registry.model_name)
        and the prediction log's and verdicts' place (monitoring.*, source.mongo.database), so
        serving writes where monitoring reads."""
        shared = (self.model_name, self.mongo_database, self.mongo_collection, self.log_dir)
        if None in shared or self.feedback_collection is None:
            from netsec_tasks.config import load_config

            cfg = load_config()
            if self.model_name is None:
                self.model_name = cfg.registry.model_name
            if self.mongo_database is None and not _uri_database(self.mongo_uri):
                self.mongo_database = cfg.source.mongo.database
            if self.mongo_collection is None:
                self.mongo_collection = cfg.monitoring.predictions_collection
            if self.feedback_collection is None:
                self.feedback_collection = cfg.monitoring.feedback_collection
            if self.log_dir is None:
                self.log_dir = cfg.monitoring.log_dir
        return self

    @field_validator("batch_threads")
    @classmethod
    def _per_cpu(cls, v: int) -> int:
        return v or (os.cpu_count() or 1)

    @cached_property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{netsec_home() / 'mlflow.db'}"

    @cached_property
    def log_path(self) -> Path:
        assert self.log_dir  # derived from the pipeline config when not set
        return Path(self.log_dir).expanduser()

    @cached_property
    def feedback_file(self) -> Path:
        """The served model's verdict file: ``<log dir>/<model>/feedback.jsonl``, where the
        monitoring step of that model reads it."""
        from netsec_tasks.feedback import verdict_file

        assert self.model_name  # derived from the pipeline config when not set
        return verdict_file(self.log_path, self.model_name)


def _uri_database(uri: str | None) -> str | None:
    """The database a MongoDB URI names (``mongodb://host/<db>``), if any."""
    # Not pymongo's parse_uri: for mongodb+srv it resolves DNS, and settings load offline.
    rest = (uri or "").split("://", 1)[-1].split("?", 1)[0]
    return (rest.split("/", 1)[1] or None) if "/" in rest else None


def get_settings() -> Settings:
    return Settings()


def load_contract(settings: Settings):
    """The input contract this service applies: the configured data set's schema and null
    limit (see ``netsec_tasks.contract``). Raises ConfigError naming a missing or bad file."""
    from netsec_tasks.config import load_config
    from netsec_tasks.contract import Contract
    from netsec_tasks.dataset_schema import load_schema

    cfg = load_config()
    schema = load_schema(settings.schema_path or cfg.schema_path)
    return Contract(schema, max_row_null_share=cfg.validation.max_row_null_share)
