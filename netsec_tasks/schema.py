"""Data-set schema: ``config/schema/<dataset>.yaml``.

A new data set is a new schema file, not new code. A schema lists the feature columns with their
dtype (``int``, ``float``, ``str``, ``bool``), allowed values or a ``min``/``max`` range and
nullability; the columns to ignore (identifiers, raw URLs); and the target column with its threat
label (``positive``), which may be an integer or a string. ``id_columns`` names identifier
columns (a flow id, a row key) that are not features: every door that scores rows accepts them
and echoes them back unchanged, like the ignored columns and the target. ``version`` is the
schema's own version (free text, e.g. ``"2"`` or a date), shown by serving's ``/model`` and
recorded on the model version so a model can be matched with the contract it was trained under.

Feature *kind* drives preprocessing and drift tests: ``str``/``bool`` columns and columns with a
short ``allowed`` list are ``categorical``/``discrete``; the rest are ``continuous``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from netsec_tasks.errors import ConfigError

Dtype = Literal["int", "float", "str", "bool"]
# The columns every scoring door adds to its output (netsec_tasks.contract.OUTPUT_COLUMNS): no
# input column may be called so, or an echoed column would collide with an output.
RESERVED_COLUMNS = ("predicted_label", "is_threat", "threat_probability", "imputed_cells",
                    "status", "reason", "model_version", "prediction_id")


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Dtype = "float"
    allowed: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = True
    # categorical: one-hot encoded; numeric: imputed (KNN) and used as a number.
    # Default: str/bool -> categorical, everything else numeric.
    encoding: Literal["numeric", "categorical"] | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _range(self) -> "ColumnSpec":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        if self.allowed is not None and len(self.allowed) == 0:
            raise ValueError("allowed must not be empty")
        return self

    @property
    def is_categorical(self) -> bool:
        if self.encoding is not None:
            return self.encoding == "categorical"
        return self.dtype in ("str", "bool")

    def is_discrete(self, max_values: int = 20) -> bool:
        """Discrete for drift testing: categorical, or a short list of allowed values."""
        return self.is_categorical or (self.allowed is not None and len(self.allowed) <= max_values)


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str
    dtype: Dtype = "int"
    positive: Any = Field(..., description="the threat label, e.g. -1 or 'phishing'")
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def _positive_in_labels(self) -> "TargetSpec":
        if self.labels is not None:
            if len(self.labels) != 2:
                raise ValueError("target.labels must list exactly two labels (binary task)")
            if self.positive not in self.labels:
                raise ValueError(f"target.positive {self.positive!r} is not in labels {self.labels}")
        return self


class DatasetSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str | None = None
    description: str | None = None
    target: TargetSpec
    columns: dict[str, ColumnSpec]
    ignore: list[str] = []
    id_columns: list[str] = []

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        # `version: 2` and `version: "2"` mean the same; a float such as 1.10 would lose its zero.
        if isinstance(v, bool) or isinstance(v, float):
            raise ValueError("version must be text or an integer (quote it: \"1.10\")")
        return str(v) if isinstance(v, int) else v

    @model_validator(mode="after")
    def _target_not_feature(self) -> "DatasetSchema":
        if self.target.column in self.columns:
            raise ValueError(f"target column {self.target.column!r} must not also be a feature column")
        if not self.columns:
            raise ValueError("columns must list at least one feature")
        for what, names in (("ignore", self.ignore), ("id_columns", self.id_columns)):
            dup = sorted({c for c in names if names.count(c) > 1})
            if dup:
                raise ValueError(f"{what} lists {dup} more than once")
            clash = [c for c in names if c in self.columns or c == self.target.column]
            if clash:
                raise ValueError(f"{what} must not name a feature or the target column: {clash}")
        reserved = [c for c in [*self.columns, *self.ignore, *self.id_columns, self.target.column]
                    if c in RESERVED_COLUMNS]
        if reserved:
            raise ValueError(f"{reserved}: reserved for the scoring outputs "
                             f"({', '.join(RESERVED_COLUMNS)}); rename the column")
        both = sorted(set(self.ignore) & set(self.id_columns))
        if both:
            raise ValueError(f"{both} are in both ignore and id_columns; list each column once")
        return self

    @property
    def features(self) -> list[str]:
        return list(self.columns)

    @property
    def passthrough(self) -> list[str]:
        """Columns that are not features but are accepted and echoed back: ids, ignored, target."""
        return [*self.id_columns, *self.ignore, self.target.column]

    @property
    def categorical_features(self) -> list[str]:
        return [c for c, s in self.columns.items() if s.is_categorical]

    @property
    def numeric_features(self) -> list[str]:
        return [c for c, s in self.columns.items() if not s.is_categorical]

    @property
    def negative_label(self) -> Any:
        if self.target.labels:
            return next(lbl for lbl in self.target.labels if lbl != self.target.positive)
        return None

    def is_threat(self, labels) -> Any:
        """Boolean mask/array: which labels are the threat class (``y == positive``)."""
        return labels == self.target.positive


def load_schema(path: str | Path) -> DatasetSchema:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"schema file not found: {path} (a data set needs config/schema/<dataset>.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return DatasetSchema.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: invalid schema: {problems}") from None
