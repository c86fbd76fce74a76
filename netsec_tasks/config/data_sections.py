"""The sections about the data: where it comes from (``source``, with ``source.mongo``), how it
is split, validated and compared for drift."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator

from netsec_tasks.config.section import Section


class MongoSourceConfig(Section):
    uri: str = Field(
        "mongodb://localhost:27017/netsec",
        description="MongoDB URI: the same form as Airflow's netsec_mongo connection "
        "(mongodb://, mongodb+srv://; mongo:// is accepted too).",
    )
    database: str = "netsec"
    collection: str = Field(
        "",
        description="The collection of the data set's training rows. Unset (null): the data set's "
        "name (`dataset`), so two data sets on one MongoDB never share (and mix) training rows; "
        "a value set here wins.",
    )
    _derived: bool = PrivateAttr(False)
    batch_size: int = Field(5000, ge=1, le=100_000)
    server_selection_timeout_ms: int = Field(5000, ge=100)
    connect_timeout_ms: int = Field(
        5000, ge=100, description="Per-call budget for opening a connection, in milliseconds."
    )
    socket_timeout_ms: int = Field(
        30000, ge=100, description="Per-call budget for a reply on an open connection, in milliseconds."
    )
    watermark_field: str | None = Field(
        None,
        description="The field that orders documents for incremental reads: it must increase with "
        "inserts. Unset (null): the document's ObjectId (its insertion time).",
    )
    incremental: bool = Field(
        True,
        description="true: a run reads only documents after the committed watermark and appends "
        "them to the last committed snapshot (in storage). false: every run re-reads the training "
        "window (use when documents are deleted or corrected in place).",
    )

    @field_validator("collection", mode="before")
    @classmethod
    def _unset_collection(cls, v: Any) -> Any:
        return "" if v is None else v  # null in YAML or the environment: derive it

    @field_validator("uri")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v.startswith("mongo://"):
            v = "mongodb://" + v[len("mongo://") :]
        if not v.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb://, mongodb+srv:// or mongo://")
        return v


class SourceConfig(Section):
    # The descriptions of the fields a DAG run can override are its trigger form's help texts
    # (dags/netsec_training.py), so the form and the config say the same thing.
    kind: Literal["file", "mongo"] = Field(
        "file",
        description="Where to ingest from: 'file' (source.path, or the synthetic sample) "
        "or 'mongo' (the MongoDB collection of source.mongo).",
    )
    path: str | None = Field(
        None,
        description="CSV or Parquet path or glob for source.kind=file, as seen by the "
        "worker; not set: the synthetic sample (made on demand).",
    )
    mongo: MongoSourceConfig = MongoSourceConfig()
    path_roots: list[str] = Field(
        default_factory=lambda: ["{workdir}/data"],
        description="Where a run triggered from outside (the DAG's form, serving's POST /train) "
        "may point source.path: absolute folders (or s3://bucket/prefix) the deployment keeps "
        "training data in. The configured source.path itself is not limited.",
    )
    window_days: float | None = Field(
        None,
        gt=0,
        description="Train on the rows of the last N days only (by watermark time). Unset (null): all rows.",
    )
    include_feedback: bool = Field(
        True,
        description="source.kind=file: also train on analysts' verdicts "
        "(<storage>/feedback/training_rows.parquet, written by the netsec_monitoring DAG). "
        "A MongoDB source gets them as documents instead.",
    )


class SplitConfig(Section):
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    duplicate_aware: bool = Field(
        True,
        description="Identical rows never straddle train and test (the UCI phishing file is about "
        "half duplicates).",
    )


class ValidationConfig(Section):
    max_invalid_share: float = Field(
        0.05, ge=0, le=1, description="The run fails when more than this share of rows is quarantined."
    )
    max_row_null_share: float = Field(
        0.5, ge=0, le=1, description="A row with more than this share of null features is quarantined."
    )
    max_column_null_share: float = Field(
        0.2, ge=0, le=1, description="A column with more than this share of nulls fails validation."
    )
    min_rows: int = Field(20, ge=1)


class DriftConfig(Section):
    alpha: float = Field(0.05, gt=0, lt=1)
    correction: Literal["bonferroni", "holm", "fdr_bh", "none"] = "holm"
    drift_share: float = Field(
        0.2, ge=0, le=1, description="Data-set drift when more than this share of columns drifts."
    )
    max_discrete_values: int = Field(
        20,
        ge=2,
        description="A column is tested as discrete (chi-square) when it is categorical, has an "
        "`allowed` list of at most this many values, holds at most this many distinct values in "
        "the compared data, or holds text; otherwise as continuous (Kolmogorov-Smirnov).",
    )
    # With very large samples every tiny difference is "significant", hence a minimum effect.
    min_effect: float = Field(
        0.05,
        ge=0,
        description="A column drifts only with an effect of at least this size, besides a "
        "significant test (Jensen-Shannon distance for discrete, Wasserstein/IQR for continuous).",
    )
    max_rows: int | None = Field(
        1_000_000,
        ge=1000,
        description="The most rows of each side (reference, new batch) a column's test reads from "
        "a data set in storage: beyond it, a uniform sample of this many rows, the same rows for "
        "every column and every run, so memory stays bounded as the data grows (a KS test on 10^6 "
        "rows a side already detects a CDF shift of about 0.002). null: every row.",
    )
