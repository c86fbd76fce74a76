"""The sections about the services the pipeline works with: ``registry`` (the MLflow tracking
server and model registry, and what gets a version promoted), ``storage`` (S3 or a local folder)
and ``dask`` (the cluster of ``training.engine: dask``): addresses, timeouts, retries."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from netsec_tasks.config.section import Section


def model_name_for(dataset: str) -> str:
    """The default registered-model name of a data set: ``netsec-<dataset>``. The one place this
    is derived (the pipeline's ``registry.model_name`` and serving's model name use it)."""
    return f"netsec-{dataset}"


class RegistryConfig(Section):
    tracking_uri: str = "sqlite:///{workdir}/mlflow.db"
    artifact_location: str | None = Field(
        "{workdir}/mlartifacts",
        description="Artifact root for a new experiment on a local tracking store (ignored by a "
        "tracking server).",
    )
    experiment: str = "netsec"
    # "" stands for unset: filled in after validation, so it is always a name once loaded.
    model_name: str = Field(
        "",
        description="The registered model. Unset (null): netsec-<dataset>, one registered model "
        "per data set. Set it to register a data set under another name (serving: "
        "NETSEC_SERVING_MODEL_NAME).",
    )
    _derived: bool = PrivateAttr(False)
    alias: str = "production"
    shadow: bool = Field(
        False,
        description="true: a candidate that passes the promotion gate becomes the challenger "
        "(registry.challenger_alias) instead of Production; serving scores it beside Production "
        "without answering with it, and the netsec_monitoring DAG promotes or retires it on the "
        "traffic (section shadow).",
    )
    challenger_alias: str = Field(
        "challenger",
        description="The alias of the challenger (registry.shadow); never registry.alias.",
    )
    promotion_margin: float = Field(
        0.0,
        ge=-1,
        le=1,
        description=(
            "Promote the new model only if its test score (its recall at its operating point; "
            "training.metric with decision.objective=f1) beats Production's on the same test rows "
            "by more than this."
        ),
    )
    max_label_recall_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Per-label guard (a multi-class raw label, e.g. NSL-KDD attack types): a "
        "candidate whose recall on any threat label with at least registry.min_label_rows "
        "compared test rows is more than this below Production's is not promoted.",
    )
    min_label_rows: int = Field(
        30,
        ge=1,
        description="The per-label guard (registry.max_label_recall_drop) checks only threat "
        "labels with at least this many compared test rows.",
    )
    min_score: float = Field(
        0.8,
        ge=0,
        le=1,
        description=(
            "With decision.objective=f1: never promote a model whose test score "
            "(training.metric) is below this (the budget's floor is decision.min_recall)."
        ),
    )
    # The per-call budget against an MLflow server: one call during an outage fails after at most
    # (max_retries + 1) * request_timeout_seconds plus back-off (~33 s with these values).
    # Airflow's task retries are the long-term retry.
    request_timeout_seconds: int = Field(
        10,
        ge=1,
        le=600,
        description="Timeout of one HTTP request to an MLflow server, in seconds "
        "(MLFLOW_HTTP_REQUEST_TIMEOUT).",
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries of a failed request to an MLflow server "
        "(MLFLOW_HTTP_REQUEST_MAX_RETRIES); Airflow's task retries are the long-term retry.",
    )
    backoff_factor: int = Field(
        1,
        ge=0,
        le=60,
        description="Back-off factor between those retries, in seconds (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR).",
    )

    @field_validator("model_name", mode="before")
    @classmethod
    def _unset_name(cls, v: Any) -> Any:
        return "" if v is None else v  # null in YAML or the environment: derive it

    @model_validator(mode="after")
    def _two_aliases(self) -> RegistryConfig:
        if not self.challenger_alias.strip() or self.challenger_alias == self.alias:
            raise ValueError(
                f"registry.challenger_alias ({self.challenger_alias!r}) must be a name other than "
                f"registry.alias ({self.alias!r}): the challenger never holds Production's alias"
            )
        return self


class StorageConfig(Section):
    uri: str = Field(
        "file://{workdir}/storage",
        description="Root of everything tasks hand to each other and keep across runs: "
        "runs/<run id>/<step>/, snapshots/, state/. s3://bucket[/prefix] (MinIO: "
        "storage.endpoint_url) or file:///dir (embedded).",
    )
    endpoint_url: str | None = None
    region: str = "us-east-1"
    # One S3 outage costs at most about attempts x (connect + request timeout) before the step
    # fails with exit 3; Airflow's task retries are the long-term retry. The request timeout is a
    # stall limit (curl's low-speed limit in the AWS SDK, also on Linux, whatever pyarrow's
    # docstring says): 15 s keeps a frozen server to ~50 s (measured: 30 s gave 100 s,
    # bench/bench_faults.py s3_hung).
    connect_timeout_seconds: float = Field(
        5.0, gt=0, le=300, description="Time to open a connection to S3, in seconds, per attempt."
    )
    request_timeout_seconds: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="How long an S3 request may stall without a byte, in seconds, per attempt; "
        "not a cap on a large upload.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Attempts of one S3 call: an outage fails the step (exit 3) after about "
        "max_attempts x (connect + request timeout).",
    )
    partition_rows: int = Field(
        1_000_000,
        ge=100,
        description="A data set (snapshot, splits, validated splits, new batch) of more rows than "
        "this is a partitioned Parquet data set of partitions this big (netsec_tasks.partitions): "
        "a directory <name>.parquet/ of part-NNNNN.parquet files and a _manifest.json written "
        "last. Up to it, a data set is one Parquet file, as before.",
    )

    @field_validator("uri")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("s3://", "file://")):
            raise ValueError("must start with s3:// or file://")
        return v


class DaskConfig(Section):
    """The Dask cluster of ``training.engine: dask`` (netsec_tasks.engine)."""

    scheduler: str | None = Field(
        None,
        description="tcp://host:8786 of a running scheduler (compose: tcp://dask-scheduler:8786; "
        "any hosted Dask or dask-kubernetes gives one). Unset (null): the task starts a "
        "LocalCluster on loopback with the settings below, for tests and for one large machine.",
    )
    connect_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Budget for reaching the scheduler (and for the workers to show up), in "
        "seconds: exit 3 after it.",
    )
    workers: int = Field(
        2,
        ge=1,
        le=256,
        description="LocalCluster only (a remote cluster's workers are configured where they "
        "run): worker processes, each with one thread, so a worker holds one partition at a time.",
    )
    memory_limit: str = Field(
        "4GiB",
        description="LocalCluster only: memory per worker process; Dask's nanny restarts a worker above it.",
    )

    @field_validator("scheduler")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if "://" not in v:
            raise ValueError("must be a scheduler address such as tcp://dask-scheduler:8786")
        return v
