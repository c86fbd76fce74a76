"""The data set's schema: ``config/schema/<dataset>.yaml`` (the HTTP API's models are
:mod:`serving.http_models`).

A new data set is a new schema file, not new code (worked example: ``docs/new-dataset.md``).
A schema lists the feature columns with their dtype (``int``, ``float``, ``str``, ``bool``),
allowed values or a ``min``/``max`` range, nullability and encoding; the columns to ignore
(identifiers, raw URLs); the data set's operating point (``decision``: the false-positive
budget, the expected threat rate and the objective, :class:`DecisionSpec`); the identifier columns (``id_columns``: accepted and echoed back by every
scoring door, like the ignored columns and the target); and the target column with its label
mapping (:class:`TargetSpec`: which raw labels are the threat class; the model itself is always
binary, threat or benign). ``file_columns`` names the columns of a header-less file in file
order. ``rename`` maps a file's column name to the schema's (``rename: {status: label}``),
at every door that reads rows (CSV and Parquet files, JSON records, MongoDB documents): files may
use any names, including those of the scoring outputs (:data:`RESERVED_COLUMNS`), which the
schema's own names may not take. ``version`` is the schema's own version (free text, e.g. ``"2"`` or a date), shown by
serving's ``/model`` and recorded on the model version (``netsec.schema_version``) so a model can
be matched with the contract it was trained under.

Encoding: a ``categorical`` column (default for ``str`` and ``bool``) is one-hot encoded after
imputing its most frequent value, and an unseen category scores as all zeros; a ``numeric``
column (default for ``int`` and ``float``) is KNN-imputed and used as a number
(:func:`netsec_tasks.preprocessing.build_preprocessor`). Drift testing (``netsec_tasks.drift.stats``)
treats a column as discrete (chi-square) when it is categorical, when it has an ``allowed`` list
of at most ``drift.max_discrete_values`` values, when the compared data hold at most that many
distinct values, or when its values are text; otherwise continuous (Kolmogorov-Smirnov).
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
RESERVED_COLUMNS = (
    "predicted_label",
    "is_threat",
    "threat_probability",
    "imputed_cells",
    "status",
    "reason",
    "model_version",
    "prediction_id",
)
# The column the scoring doors add when asked for reasons (explain=K, netsec_tasks.explain).
REASONS_COLUMN = "reasons"


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
    def _range(self) -> ColumnSpec:
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


THREAT_NAME = "threat"
BENIGN_NAME = "benign"

# How a model's operating point is chosen (netsec_tasks.operating_point); the pipeline config's
# ``decision`` section overrides any of these keys.
Objective = Literal["recall_at_budget", "f1"]


class DecisionSpec(BaseModel):
    """The data set's operating point: where it is deployed decides how many false alerts its
    analysts can take and how rare threats are there, so these live with the data set.

    - ``max_false_positive_rate``: the budget, the share of benign rows that may raise an alert
      (0.01: 100 false alerts per 10,000 benign rows).
    - ``expected_threat_rate``: the share of threats in deployed traffic (the base rate), for
      the precision and alert load reported at that rate; test splits are far richer in threats.
    - ``objective``: ``recall_at_budget`` (candidates are selected, and the threshold chosen, for
      the highest recall whose false-positive rate is within the budget) or ``f1`` (the rule
      before the budget existed: selection by ``training.metric`` at P(threat) > 0.5).
    - ``min_recall``: with ``recall_at_budget``, no model whose test recall at its operating
      point is below this is promoted (``registry.min_score`` is the floor of ``f1``).
    """

    model_config = ConfigDict(extra="forbid")

    max_false_positive_rate: float = Field(0.01, gt=0, lt=1)
    expected_threat_rate: float = Field(0.01, gt=0, lt=1)
    objective: Objective = "recall_at_budget"
    min_recall: float = Field(0.5, ge=0, le=1)


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return list(value) if isinstance(value, (list, tuple)) else [value]


class TargetSpec(BaseModel):
    """The label column and which of its labels are the threat class.

    The model is always binary (``is_threat`` 0/1); the raw label may be binary or multi-class.
    Exactly one of two forms says which labels are threats:

    - ``positive``: the threat labels (one value or a list). The benign side must be listed too,
      in ``labels`` (every label: threat and benign) or in ``negative``. A label seen in the data
      that is not listed is an error naming it.
    - ``negative`` alone: "everything but": the benign labels; every other label is a threat
      by definition (a multi-class intrusion set: ``negative: [normal]``). ``labels`` is then
      optional: the attack types known when the schema was written, so the validation report
      can point out new ones (they are still threats).
    """

    model_config = ConfigDict(extra="forbid")

    column: str
    dtype: Dtype = "int"
    positive: Any = Field(None, description="the threat label(s), e.g. -1, 'phishing' or a list")
    negative: Any = Field(None, description="the benign label(s); alone: every other label is a threat")
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def _mapping(self) -> TargetSpec:
        pos, neg, labels = _as_list(self.positive), _as_list(self.negative), self.labels
        for what, values in (("positive", pos), ("negative", neg), ("labels", labels)):
            if values is not None and not values:
                raise ValueError(f"target.{what} must not be empty")
            if values is not None:
                keys = [label_key(v) for v in values]
                dup = sorted({str(v) for v, k in zip(values, keys) if keys.count(k) > 1})
                if dup:
                    raise ValueError(f"target.{what} lists {dup} more than once")
        if pos is None and neg is None:
            raise ValueError(
                "target needs positive (the threat labels) or negative (the benign "
                "labels: every other label is then a threat)"
            )
        if pos is not None and neg is not None:
            both = [v for v in pos if label_key(v) in {label_key(n) for n in neg}]
            if both:
                raise ValueError(f"target labels {both} are in both positive and negative")
        if labels is not None:
            known = {label_key(v) for v in labels}
            for what, values in (("positive", pos), ("negative", neg)):
                missing = [v for v in values or [] if label_key(v) not in known]
                if missing:
                    shown = repr(missing[0]) if len(missing) == 1 else str(missing)
                    raise ValueError(
                        f"target.{what} {shown} {'is' if len(missing) == 1 else 'are'} not in labels {labels}"
                    )
        if pos is not None:
            benign = self.benign_labels
            if not benign:
                raise ValueError(
                    f"target.positive {self.positive!r} names the threat labels but no label is "
                    "benign: list every label in target.labels (threat and benign), or the benign "
                    "ones in target.negative; for 'every label but normal is a threat' write "
                    "negative: [normal] instead of positive"
                )
        return self

    @property
    def everything_but(self) -> bool:
        """True in the "everything but ``negative``" form: unlisted labels are threats."""
        return self.positive is None

    @property
    def threat_labels(self) -> list[Any] | None:
        """The listed threat labels; None in the "everything but" form (any other label)."""
        return _as_list(self.positive)

    @property
    def benign_labels(self) -> list[Any]:
        """The benign labels: ``negative``, else ``labels`` minus ``positive``."""
        neg = _as_list(self.negative)
        if neg is not None:
            return neg
        threats = {label_key(v) for v in _as_list(self.positive) or []}
        return [v for v in self.labels or [] if label_key(v) not in threats]

    @property
    def vocabulary(self) -> list[Any] | None:
        """Every label the schema accepts; None when any label is accepted ("everything but")."""
        if self.everything_but:
            return None
        out = list(self.labels) if self.labels is not None else []
        keys = {label_key(v) for v in out}
        for v in [*(self.threat_labels or []), *self.benign_labels]:
            if label_key(v) not in keys:
                out.append(v)
                keys.add(label_key(v))
        return out

    @property
    def known_labels(self) -> list[Any]:
        """The labels the schema names (``labels``, ``positive``, ``negative``)."""
        out: list[Any] = []
        for v in [*(self.labels or []), *(self.threat_labels or []), *self.benign_labels]:
            if label_key(v) not in {label_key(x) for x in out}:
                out.append(v)
        return out

    @property
    def threat_label(self) -> Any:
        """What a threat prediction is called (``predicted_label``): the threat label when there
        is exactly one, else ``"threat"``."""
        threats = self.threat_labels
        return threats[0] if threats is not None and len(threats) == 1 else THREAT_NAME

    @property
    def benign_label(self) -> Any:
        """What a benign prediction is called: the benign label when there is exactly one, else
        ``"benign"``."""
        benign = self.benign_labels
        return benign[0] if len(benign) == 1 else BENIGN_NAME

    def mapping(self) -> dict[str, list[Any] | None]:
        """The label mapping as data (recorded on the model version): ``{"positive": [...]}`` or
        ``{"negative": [...]}`` (everything but), plus ``labels`` when listed."""
        out: dict[str, list[Any] | None] = (
            {"negative": self.benign_labels}
            if self.everything_but
            else {"positive": self.threat_labels, "negative": self.benign_labels}
        )
        if self.labels is not None:
            out["labels"] = list(self.labels)
        return out


def label_key(value: Any) -> str:
    """Comparison key of a label: ``-1``, ``-1.0`` and ``"-1"`` are the same label."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)) and float(value).is_integer():
        return str(int(value))
    if hasattr(value, "item") and not isinstance(value, str):
        return label_key(value.item())
    return str(value).strip()


class DatasetSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str | None = None
    description: str | None = None
    target: TargetSpec
    columns: dict[str, ColumnSpec]
    ignore: list[str] = []
    id_columns: list[str] = []
    # The column names of a header-less file, in file order (e.g. the KDD/NSL-KDD files).
    file_columns: list[str] | None = None
    # A file's column name -> this schema's name for it (applied at every door that reads rows).
    rename: dict[str, str] = {}
    # The operating point's defaults for this data set (DecisionSpec); config `decision` overrides.
    decision: DecisionSpec = DecisionSpec()

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        # `version: 2` and `version: "2"` mean the same; a float such as 1.10 would lose its zero.
        if isinstance(v, (bool, float)):
            raise ValueError('version must be text or an integer (quote it: "1.10")')
        return str(v) if isinstance(v, int) else v

    @model_validator(mode="after")
    def _target_not_feature(self) -> DatasetSchema:
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
        reserved = [
            c
            for c in [*self.columns, *self.ignore, *self.id_columns, self.target.column]
            if c in RESERVED_COLUMNS or c == REASONS_COLUMN
        ]
        if reserved:
            first = reserved[0]
            raise ValueError(
                f"{reserved}: reserved for the scoring outputs "
                f"({', '.join((*RESERVED_COLUMNS, REASONS_COLUMN))}). "
                f"Give the column another name in this schema and map the files' name to it "
                f"with rename (e.g. rename: {{{first}: source_{first}}}, then use source_{first} "
                "here); the files keep their names"
            )
        known = {*self.columns, *self.ignore, *self.id_columns, self.target.column}
        for old, new in self.rename.items():
            if new not in known:
                raise ValueError(
                    f"rename maps {old!r} to {new!r}, which is not a feature, the target, "
                    "ignore or id_columns; add it to one of those"
                )
            if old in known:
                raise ValueError(
                    f"rename maps {old!r}, which is itself a column of this schema; rename maps "
                    "a file's name to a schema name that differs from it"
                )
        targets = list(self.rename.values())
        dup = sorted({c for c in targets if targets.count(c) > 1})
        if dup:
            raise ValueError(f"rename maps several file names to {dup}; map one name to each column")
        both = sorted(set(self.ignore) & set(self.id_columns))
        if both:
            raise ValueError(f"{both} are in both ignore and id_columns; list each column once")
        if self.file_columns is not None:
            names = self.file_columns
            dup = sorted({c for c in names if names.count(c) > 1})
            if dup:
                raise ValueError(f"file_columns lists {dup} more than once")
            known = {*self.columns, *self.ignore, *self.id_columns, self.target.column}
            unknown = [c for c in names if c not in known]
            if unknown:
                raise ValueError(
                    f"file_columns names {unknown}, which are not features, the "
                    "target, ignore or id_columns; add them to one of those"
                )
            missing = [c for c in self.columns if c not in names]
            if missing:
                raise ValueError(f"file_columns must list every feature; missing {missing}")
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
        """What a benign prediction is called (see :attr:`TargetSpec.benign_label`)."""
        return self.target.benign_label

    @property
    def positive_label(self) -> Any:
        """What a threat prediction is called (see :attr:`TargetSpec.threat_label`)."""
        return self.target.threat_label

    @property
    def class_names(self) -> tuple[str, str]:
        """(benign, threat) as plots and reports name them: ``("benign (1)", "threat (-1)")``,
        ``("benign (normal)", "threat")``."""

        def name(kind: str, label: Any) -> str:
            return kind if str(label) == kind else f"{kind} ({label})"

        return name("benign", self.negative_label), name("threat", self.positive_label)

    def is_threat(self, labels) -> Any:
        """Which labels are the threat class: the binary model's target (1 = threat).

        ``labels``: a Series (returns a boolean Series on the same index), an array or list
        (returns a boolean array), or one label (returns a bool). Labels compare by value across
        types (``-1``, ``-1.0`` and ``"-1"`` are the same label). In the "everything but" form
        every label not in ``negative`` is a threat; otherwise a label is a threat when it is in
        ``positive`` (unlisted labels are refused at the doors, see
        :meth:`netsec_tasks.contract.Contract.check_labels`).
        """
        import numpy as np
        import pandas as pd

        scalar = not isinstance(labels, (pd.Series, pd.Index, np.ndarray, list, tuple))
        series = (
            labels
            if isinstance(labels, pd.Series)
            else pd.Series([labels] if scalar else list(labels), dtype=object)
        )
        keys = label_keys(series)
        t = self.target
        if t.everything_but:
            out = ~keys.isin([label_key(v) for v in t.benign_labels]) & series.notna()
        else:
            out = keys.isin([label_key(v) for v in t.threat_labels or []])  # listed unless everything_but
        if scalar:
            return bool(out.iloc[0])
        return out if isinstance(labels, pd.Series) else out.to_numpy(dtype=bool)

    def unlisted_labels(self, labels) -> list[Any]:
        """Distinct non-null labels of ``labels`` that the schema does not list (always empty in
        the "everything but" form, where any other label is a threat), in order of appearance."""
        import pandas as pd

        vocab = self.target.vocabulary
        if vocab is None:
            return []
        series = labels if isinstance(labels, pd.Series) else pd.Series(list(labels), dtype=object)
        series = series[series.notna()]
        keys = label_keys(series)
        known = {label_key(v) for v in vocab}
        seen: dict[str, Any] = {}
        for key, value in zip(keys, series):
            if key not in known and key not in seen:
                seen[key] = value
        return list(seen.values())

    def read_options(self, *, labelled: bool = False, echo: bool = False) -> dict[str, Any]:
        """Keyword arguments of :func:`netsec_tasks.table_io.read_csv` (and ``load_table``,
        ``read_table``, ``iter_table_chunks``) for this data set's files: the features (a first
        line naming them all is a header row), the ``str`` features read as text (``007`` stays
        ``007`` at every door, as a JSON ``"007"`` does), ``rename``, and with ``file_columns``
        the layouts a header-less file may have (:meth:`file_layouts`). ``labelled``: the door
        needs the target (training, validate, evaluate, push-data), so layouts without it are
        not offered. ``echo``: the passthrough columns are read exactly as written, to be echoed
        back (the scoring doors)."""
        out: dict[str, Any] = {
            "required": self.features,
            "str_columns": [c for c, spec in self.columns.items() if spec.dtype == "str"],
        }
        if echo:
            out["text_columns"] = self.passthrough
        if self.rename:
            out["rename"] = dict(self.rename)
        if self.file_columns:
            out["names"] = list(self.file_columns)
            out["layouts"] = self.file_layouts(labelled=labelled)
        return out

    def file_layouts(self, *, labelled: bool = False) -> list[Any]:
        """The column layouts a header-less file may have, preferred first: all of
        ``file_columns``; without the ignored and id columns; and (unless ``labelled``) without
        the target, and without both. A file's field count picks one; a count two layouts share
        goes to the first whose target column holds known labels in most of the first lines (a
        labelled file without its trailing ``difficulty`` column keeps its label; a file without
        the label keeps its ``difficulty``), and the reader notes the other."""
        from netsec_tasks.table_io import Layout

        cols = list(self.file_columns or [])
        extra = [c for c in cols if c in set(self.ignore) | set(self.id_columns)]
        target = self.target.column

        def without(drop: list[str]) -> tuple[str, ...]:
            return tuple(c for c in cols if c not in drop)

        candidates = [(f"all {len(cols)} file_columns", tuple(cols))]
        if extra:
            candidates.append((f"without {', '.join(extra)}", without(extra)))
        if not labelled and target in cols:
            candidates.append((f"without {target}", without([target])))
            if extra:
                candidates.append((f"without {target}, {', '.join(extra)}", without([target, *extra])))
        known = frozenset(label_key(v) for v in self.target.known_labels)
        seen: set[tuple[str, ...]] = set()
        out = []
        for label, columns in candidates:
            if columns not in seen:
                seen.add(columns)
                probe = (target, known) if target in columns and known else None
                out.append(Layout(label, columns, probe))
        return out


def label_keys(series) -> Any:
    """The comparison key (:func:`label_key`) of every label of a Series; None where null. Computed
    once per distinct label (``pd.factorize``), not per row."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    keys = np.array([label_key(u) for u in uniques] + [None], dtype=object)  # code -1 (null) -> None
    return pd.Series(keys[codes], index=series.index, dtype=object)


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
