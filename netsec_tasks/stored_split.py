"""A validated split left in storage and worked on partition by partition.

The transform and training steps need three things of a training split that can be larger
than a process: per row, its content hash and 0/1 threat label (to draw the bounded, grouped,
stratified samples of :mod:`netsec_tasks.sampling`); the categories of its categorical features
with their counts (what the one-hot encoder and the most-frequent imputer learn); and, for
those samples only, the rows themselves. :class:`StoredSplit` gets each from every partition
(:func:`partition_keys`, :func:`partition_take`; on Dask workers with ``training.engine:
dask``, in turn here otherwise) and keeps only those small results: 9 bytes a row for the keys,
and the sampled rows.

:func:`categorical_frame` turns category counts into a small frame on which
``SimpleImputer(strategy="most_frequent")`` and ``OneHotEncoder`` learn exactly what they would
have learnt from every row: the same categories, the same most frequent value.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from netsec_tasks.partitions import read_partition
from netsec_tasks.split import lineage_hashes
from netsec_tasks.storage import Partition, open_dataset

if TYPE_CHECKING:  # pragma: no cover
    from netsec_tasks.config import PipelineConfig
    from netsec_tasks.dataset_schema import DatasetSchema
    from netsec_tasks.engine import Engine


@dataclass
class PartitionKeys:
    """What one partition tells about its rows without the rows."""

    hashes: np.ndarray  # uint64 lineage hash per row (features + target)
    y: np.ndarray  # int8 0/1 threat target per row
    missing: int  # empty feature cells
    categories: dict[str, dict[Any, int]] = field(default_factory=dict)  # column -> value -> rows
    dtypes: dict[str, str] = field(default_factory=dict)  # categorical column -> its dtype


def partition_keys(cfg: PipelineConfig, schema: DatasetSchema, part: Partition) -> PartitionKeys:
    """Keys of one partition of a validated split (here or on a worker)."""
    from netsec_tasks.preprocessing import features_and_target
    from netsec_tasks.storage import storage_for

    frame = read_partition(storage_for(cfg), part)
    X, y = features_and_target(frame, schema, part.uri)
    categories = {
        c: {k: int(v) for k, v in X[c].value_counts(dropna=True).items()} for c in schema.categorical_features
    }
    return PartitionKeys(
        hashes=lineage_hashes(frame, schema),
        y=y.astype(np.int8),
        missing=int(X.isna().to_numpy().sum()),
        categories=categories,
        dtypes={c: str(X[c].dtype) for c in schema.categorical_features},
    )


def partition_take(
    cfg: PipelineConfig, columns: list[str] | None, job: tuple[Partition, np.ndarray]
) -> pd.DataFrame:
    """The rows at positions ``job[1]`` of partition ``job[0]`` (``columns`` only, if given)."""
    from netsec_tasks.storage import storage_for

    part, positions = job
    frame = read_partition(storage_for(cfg), part, columns=columns)
    return frame.iloc[positions].reset_index(drop=True)


def merge_counts(counts: list[dict[str, dict[Any, int]]]) -> dict[str, dict[Any, int]]:
    out: dict[str, dict[Any, int]] = {}
    for one in counts:
        for column, values in one.items():
            into = out.setdefault(column, {})
            for value, n in values.items():
                into[value] = into.get(value, 0) + n
    return out


def category_counts(frame: pd.DataFrame, columns: list[str]) -> dict[str, dict[Any, int]]:
    return {c: {k: int(v) for k, v in frame[c].value_counts(dropna=True).items()} for c in columns}


def subtract_counts(
    total: dict[str, dict[Any, int]], part: dict[str, dict[Any, int]]
) -> dict[str, dict[Any, int]]:
    """``total`` minus ``part`` (the rows outside a sample), dropping values left with none."""
    out = {}
    for column, values in total.items():
        minus = part.get(column, {})
        out[column] = {k: n - minus.get(k, 0) for k, n in values.items() if n - minus.get(k, 0) > 0}
    return out


def categorical_frame(
    counts: dict[str, dict[Any, int]], columns: list[str], dtypes: dict[str, str]
) -> pd.DataFrame:
    """A frame on which the categorical part learns what it would from the counted rows.

    Each column lists each of its values once, then repeats its most frequent one (the smallest
    among equals, as ``SimpleImputer`` picks) until the frame's length, one more than the
    largest number of values: so that value is strictly the most frequent, and the one-hot
    encoder sees exactly the counted categories. A column with no value stays all null.
    """
    length = max((len(counts.get(c, {})) for c in columns), default=0) + 1
    data = {}
    for c in columns:
        values = counts.get(c, {})
        if not values:
            data[c] = pd.Series([None] * length, dtype=dtypes.get(c, "object"))
            continue
        top = max(values.values())
        mode = min(k for k, n in values.items() if n == top)
        listed = sorted(values)
        data[c] = pd.Series(listed + [mode] * (length - len(listed)), dtype=dtypes.get(c, "object"))
    return pd.DataFrame(data)


class StoredSplit:
    """A validated split in storage, indexed partition by partition (see the module doc).

    ``y``/``row_hashes``: per row, in split order; ``rows``; ``missing``: empty feature cells;
    ``categories``: merged category counts; ``partitions``: the data set's. Offers what the
    search asks of a training split (:func:`netsec_tasks.train.search_data`)."""

    frame = None  # never in memory as a whole

    def __init__(self, cfg: PipelineConfig, engine: Engine, schema: DatasetSchema, uri: str, *, what: str):
        from netsec_tasks.storage import storage_for

        self.cfg, self.engine, self.schema, self.uri = cfg, engine, schema, uri
        self.data = open_dataset(storage_for(cfg), uri)
        keys = engine.map(
            functools.partial(partition_keys, cfg, schema), list(self.data.partitions), what=what
        )
        self.row_hashes = (
            np.concatenate([k.hashes for k in keys]) if keys else np.zeros(0, dtype=np.uint64)
        ).astype(np.uint64)
        self.y = (np.concatenate([k.y for k in keys]) if keys else np.zeros(0, dtype=np.int8)).astype(
            np.int64
        )
        self.missing = sum(k.missing for k in keys)
        self.categories = merge_counts([k.categories for k in keys])
        self.dtypes = keys[0].dtypes if keys else {}
        self.rows = len(self.y)

    @property
    def partitions(self) -> tuple[Partition, ...]:
        return self.data.partitions

    def jobs(self, mask: np.ndarray) -> list[tuple[Partition, np.ndarray]]:
        """(partition, positions in it) of the rows where ``mask`` (over the split) is True,
        for the partitions that hold any."""
        mask = np.asarray(mask, dtype=bool)
        out = []
        for part in self.partitions:
            positions = np.flatnonzero(mask[part.offset : part.offset + part.rows])
            if len(positions):
                out.append((part, positions))
        return out

    def take(
        self, mask: np.ndarray, columns: list[str] | None = None, *, what: str = "collect rows"
    ) -> pd.DataFrame:
        """The rows where ``mask`` (over the split) is True, in split order, as one frame: only
        for bounded samples. Partitions without a selected row are not read."""
        pieces = self.engine.map(
            functools.partial(partition_take, self.cfg, columns), self.jobs(mask), what=what
        )
        if not pieces:
            first = read_partition(_storage(self.cfg), self.partitions[0], columns=columns)
            return first.iloc[:0]
        return pd.concat(pieces, ignore_index=True)

    def lineage(self, schema: DatasetSchema) -> np.ndarray:
        return self.row_hashes

    def features(self, mask: np.ndarray) -> pd.DataFrame:
        return self.take(mask, self.schema.features, what="collect sampled rows")

    def preprocessor_outside(
        self, schema: DatasetSchema, sample: pd.DataFrame, donors: np.ndarray, outside: np.ndarray
    ):
        """The preprocessor fitted on rows outside ``sample`` (the rows where ``outside``): the
        KNN imputer on the ``donors``, the categorical part on the counts of every such row."""
        from netsec_tasks.preprocessing import fit_preprocessor_on

        donor_rows = self.features(donors)
        cats = schema.categorical_features
        counts = subtract_counts(self.categories, category_counts(sample, cats))
        return fit_preprocessor_on(
            schema,
            donor_rows[schema.numeric_features],
            categorical_frame(counts, cats, self.dtypes),
            donor_rows.iloc[:1],
        )

    def example(self, rows: int = 50) -> pd.DataFrame:
        """The first rows' features (an input example for the logged model)."""
        head = np.zeros(self.rows, dtype=bool)
        head[: min(rows, self.rows)] = True
        return self.take(head, self.schema.features, what="input example")


def _storage(cfg: PipelineConfig):
    from netsec_tasks.storage import storage_for

    return storage_for(cfg)
