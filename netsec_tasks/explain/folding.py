"""Folding: the preprocessed columns a model sees, back to the schema columns they came from.

The netsec ``preprocess`` step is a ColumnTransformer: a numeric block (KNNImputer, 1 column in,
1 column out) and a categorical block (SimpleImputer then OneHotEncoder: 1 column in, one column
per category out). A contribution computed on the preprocessed columns is summed back into its
source column, so a reason reads as a schema column with the value the row had. Sums keep
additivity: every preprocessed column belongs to exactly one schema column.

The map is read from the fitted steps' structure, never from feature-name parsing (a column
``a`` and a column ``a_b`` make one-hot names ambiguous):

- ``passthrough``, imputers with ``keep_empty_features`` and one-to-one transformers (scalers:
  scikit-learn's ``OneToOneFeatureMixin``): one output per input, in order;
- imputers without ``keep_empty_features``: the inputs they keep, by name;
- ``OneHotEncoder``: one output per category of each input, less the dropped one, with the
  infrequent categories of an input sharing one output;
- a ``Pipeline`` inside a block: its steps in turn.

Anything else raises :class:`NotExplainable` naming the step, and the version has no reasons.

**Imputed cells.** A cell that was missing is reported as imputed, with the value the block's
own imputer put there (:meth:`Folding.imputed_values`: the fitted imputer is called on the rows
with gaps, so the value is the model's, never re-computed by us).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd


class NotExplainable(Exception):
    """The model holds a step or an estimator the explainer has no exact method for."""


_IMPUTERS = ("SimpleImputer", "KNNImputer", "IterativeImputer")


def unfrozen(step: Any) -> Any:
    """The fitted step inside scikit-learn's ``FrozenEstimator`` (netsec freezes the
    preprocessor's parts: :func:`netsec_tasks.preprocessing.fit_preprocessor`)."""
    while type(step).__name__ == "FrozenEstimator":
        step = step.estimator
    return step


def _is_imputer(step: Any) -> bool:
    return type(unfrozen(step)).__name__ in _IMPUTERS


def _one_to_one(step: Any) -> bool:
    from sklearn.base import OneToOneFeatureMixin

    return isinstance(step, OneToOneFeatureMixin)


def _onehot_counts(enc: Any, n_in: int) -> list[int]:
    """Outputs per input column of a fitted OneHotEncoder (public attributes only)."""
    try:
        infrequent = enc.infrequent_categories_
    except AttributeError:  # infrequent grouping off: the attribute does not exist
        infrequent = [None] * n_in
    drop = getattr(enc, "drop_idx_", None)
    counts = []
    for i, cats in enumerate(enc.categories_):
        n = len(cats)
        if infrequent[i] is not None:
            n -= len(infrequent[i]) - 1  # the infrequent categories share one output
        if drop is not None and drop[i] is not None:
            n -= 1
        counts.append(n)
    if sum(counts) != len(enc.get_feature_names_out()):
        raise NotExplainable("OneHotEncoder: cannot tell which outputs belong to which input")
    return counts


def _step_sources(step: Any, sources: np.ndarray, names: list[str]) -> np.ndarray:
    """The source (schema column index) of each output of one fitted ``step`` whose inputs have
    ``sources`` (and the input names ``names``)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    step = unfrozen(step)
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return sources
    if isinstance(step, Pipeline):
        for _name, inner in step.steps:
            sources = _step_sources(inner, sources, names)
            names = _names_out(inner, names, len(sources))
        return sources
    if isinstance(step, OneHotEncoder):
        return np.repeat(sources, _onehot_counts(step, len(sources)))
    if _is_imputer(step):
        if getattr(step, "add_indicator", False):
            raise NotExplainable(f"{type(step).__name__}(add_indicator=True)")
        if getattr(step, "keep_empty_features", False):
            return sources
        kept = list(step.get_feature_names_out(names))
        return np.array([sources[names.index(k)] for k in kept], dtype=np.intp)
    if _one_to_one(step):
        return sources
    raise NotExplainable(f"{type(step).__name__} in the preprocessing (no known column map)")


def _names_out(step: Any, names: list[str], n_out: int) -> list[str]:
    """The output names of a fitted step given its input ``names`` (placeholders when it has
    none: they only matter to an imputer that drops columns, which names what it keeps)."""
    if isinstance(step, str) or step is None:
        return names
    try:
        return [str(n) for n in step.get_feature_names_out(names)]
    except Exception:  # a step without names, or fitted on other names
        return [f"x{i}" for i in range(n_out)]


def _block_columns(cols: Any, features: list[str]) -> list[int]:
    if isinstance(cols, slice):
        return list(range(len(features))[cols])
    cols = list(np.atleast_1d(cols))
    if cols and isinstance(cols[0], (bool, np.bool_)):
        return [int(i) for i in np.flatnonzero(cols)]
    if cols and isinstance(cols[0], str):
        return [features.index(c) for c in cols]
    return [int(c) for c in cols]


@dataclass(frozen=True)
class _Block:
    columns: list[int]  # schema column indices the block reads
    imputer: Any  # the block's first step when it is an imputer, else None


@dataclass(frozen=True)
class Folding:
    """``sources[j]``: the schema column (index into ``features``) of preprocessed column ``j``."""

    features: tuple[str, ...]
    sources: np.ndarray
    blocks: tuple[_Block, ...] = field(default=())

    @property
    def n_out(self) -> int:
        return len(self.sources)

    @cached_property
    def matrix(self) -> np.ndarray:
        """(n_out, n_features): 1 where preprocessed column j comes from schema column i."""
        m = np.zeros((self.n_out, len(self.features)), dtype=np.float64)
        m[np.arange(self.n_out), self.sources] = 1.0
        return m

    def fold(self, values: np.ndarray) -> np.ndarray:
        """(n, n_out) contributions on preprocessed columns -> (n, n_features), summed per source."""
        return np.asarray(values, dtype=np.float64) @ self.matrix

    def imputed_values(self, frame: pd.DataFrame, missing: np.ndarray) -> np.ndarray:
        """(n, n_features) object array: for each missing cell (``missing``, bool (n, n_features))
        the value the block's fitted imputer puts there; None elsewhere, and where the block has
        no imputer of its own."""
        out = np.full(missing.shape, None, dtype=object)
        rows = np.flatnonzero(missing.any(axis=1))
        if not rows.size:
            return out
        for block in self.blocks:
            cols = np.asarray(block.columns, dtype=np.intp)
            if block.imputer is None or not missing[np.ix_(rows, cols)].any():
                continue
            part = frame.iloc[rows, cols]
            filled = np.asarray(block.imputer.transform(part), dtype=object)
            if filled.shape[1] != len(cols):  # an imputer that dropped an empty column
                continue
            sub = missing[np.ix_(rows, cols)]
            for r, c in zip(*np.nonzero(sub)):
                out[rows[r], cols[c]] = filled[r, c]
        return out


def folding_for(preprocess: Any, features: list[str]) -> Folding:
    """The :class:`Folding` of a fitted preprocessing step (a ColumnTransformer, a Pipeline of
    steps, or None for a model without one) for the schema ``features``.
    Raises NotExplainable."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    features = list(features)
    identity = np.arange(len(features), dtype=np.intp)
    if preprocess is None:
        return Folding(tuple(features), identity)
    steps = [s for _, s in preprocess.steps] if isinstance(preprocess, Pipeline) else [preprocess]
    first, rest = steps[0], steps[1:]
    blocks: list[_Block] = []
    if isinstance(first, ColumnTransformer):
        if getattr(first, "sparse_output_", False):
            raise NotExplainable("sparse ColumnTransformer output")
        parts: dict[str, np.ndarray] = {}
        for name, trans, cols in first.transformers_:
            if isinstance(trans, str) and trans == "drop":
                continue
            idx = _block_columns(cols, features)
            if not idx:
                continue
            parts[name] = _step_sources(trans, identity[idx], [features[i] for i in idx])
            trans = unfrozen(trans)
            head = unfrozen(trans.steps[0][1]) if isinstance(trans, Pipeline) else trans
            blocks.append(_Block(idx, head if _is_imputer(head) else None))
        order = sorted(parts, key=lambda n: first.output_indices_[n].start)
        for name in order:
            span = first.output_indices_[name]
            if span.stop - span.start != len(parts[name]):
                raise NotExplainable(f"ColumnTransformer block {name!r}: outputs do not match")
        sources = np.concatenate([parts[n] for n in order]) if parts else identity[:0]
    else:
        sources = _step_sources(first, identity, features)
        if _is_imputer(first):
            blocks.append(_Block(list(identity), first))
    names = _names_out(first, features, len(sources))
    for step in rest:
        sources = _step_sources(step, sources, names)
        names = _names_out(step, names, len(sources))
    return Folding(tuple(features), np.asarray(sources, dtype=np.intp), tuple(blocks))
