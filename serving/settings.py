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
    mongo_uri: str | None = None
    mongo_database: str | None = None  # default: the database named in the URI, else "netsec"
    mongo_collection: str = "predictions"
    log_dir: str | None = None  # default: <NETSEC_HOME>/predictions; the log is <log dir>/<model>/
    log_enabled: bool = True
    log_batch_rows: int = Field(1000, ge=1)
    log_flush_seconds: float = Field(2.0, gt=0)
    # Requests waiting to be written; beyond it new ones are dropped and counted.
    log_queue_requests: int = Field(10_000, ge=1)

    # --- analysts' verdicts (POST /feedback) ---------------------------------------------
    # Stored beside the prediction log, keyed by the served model like it: this collection of
    # the log's MongoDB database (a model_name field), or <log dir>/<model>/feedback.jsonl.
    feedback_collection: str = "feedback"
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
    def _derived_model_name(self) -> Settings:
        if self.model_name is None:
            from netsec_tasks.config import load_config

            self.model_name = load_config().registry.model_name
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
        return Path(self.log_dir).expanduser() if self.log_dir else netsec_home() / "predictions"

    @cached_property
    def feedback_file(self) -> Path:
        """The served model's verdict file: ``<log dir>/<model>/feedback.jsonl``, where the
        monitoring step of that model reads it."""
        from netsec_tasks.feedback import verdict_file

        assert self.model_name  # derived from the pipeline config when not set
        return verdict_file(self.log_path, self.model_name)


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
