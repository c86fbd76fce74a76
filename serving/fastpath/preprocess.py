"""The fast path's preprocessing: the Pipeline's own fitted steps, with the identity shortcut for
rows without NaN where a step only fills gaps (see :mod:`serving.fastpath`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.fastpath.base import NotCompilable, Transform


def clean_step(step: Any) -> Transform:
    """One fitted transformer, for rows *without* NaN -> a function on the float matrix.

    Imputers are the identity there (they only fill gaps); any other transformer is called itself.
    """
    from sklearn.impute import KNNImputer, SimpleImputer
    from sklearn.pipeline import Pipeline

    if step == "passthrough" or step is None:
        return lambda x: x
    if isinstance(step, Pipeline):
        parts = [clean_step(s) for _, s in step.steps]

        def chain(x: np.ndarray) -> np.ndarray:
            for part in parts:
                x = part(x)
            return x

        return chain
    if isinstance(step, KNNImputer):
        if step.add_indicator:
            raise NotCompilable("KNNImputer(add_indicator=True)")
        # Without missing values KNNImputer only drops the columns that were empty in training.
        if getattr(step, "keep_empty_features", False):
            return lambda x: x
        return _column_subset(np.flatnonzero(step._valid_mask), step._valid_mask.size)
    if isinstance(step, SimpleImputer):
        if step.add_indicator:
            raise NotCompilable("SimpleImputer(add_indicator=True)")
        if getattr(step, "keep_empty_features", False):
            return lambda x: x
        import pandas as pd

        stats = np.asarray(step.statistics_)  # strings for most_frequent on text columns
        return _column_subset(np.flatnonzero(~pd.isna(stats)), stats.size)
    if hasattr(step, "feature_names_in_"):
        # Fitted on a DataFrame: calling it on a bare matrix would warn on every request.
        raise NotCompilable(f"{type(step).__name__} fitted on named columns")
    if not hasattr(step, "transform"):
        raise NotCompilable(type(step).__name__)
    return step.transform


def _column_subset(keep: np.ndarray, width: int) -> Transform:
    if keep.size == width:
        return lambda x: x
    return lambda x: x[:, keep]


def clean_preprocess(pre: Any, features: list[str]) -> Transform:
    """The fitted ``preprocess`` step, for float rows without NaN."""
    from sklearn.compose import ColumnTransformer

    if not isinstance(pre, ColumnTransformer):
        return clean_step(pre)
    if getattr(pre, "sparse_output_", False):
        raise NotCompilable("sparse ColumnTransformer output")
    position = {name: i for i, name in enumerate(features)}
    blocks: list[tuple[np.ndarray, Transform]] = []
    for _name, trans, cols in pre.transformers_:
        if trans == "drop":
            continue
        idx = _column_indices(cols, position, len(features))
        if idx.size == 0:
            continue
        blocks.append((idx, clean_step(trans)))
    if len(blocks) == 1 and np.array_equal(blocks[0][0], np.arange(len(features))):
        # One block over every column in order (the netsec numeric preprocessor): no column
        # gather, which cost more than the rest of a one-row preprocessing.
        return blocks[0][1]

    def transform(x: np.ndarray) -> np.ndarray:
        parts = [fn(x[:, idx]) for idx, fn in blocks]
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    return transform


def _column_indices(cols: Any, position: dict[str, int], width: int) -> np.ndarray:
    if isinstance(cols, slice):
        return np.arange(width)[cols]
    cols = list(np.atleast_1d(cols))
    if cols and isinstance(cols[0], (bool, np.bool_)):
        return np.flatnonzero(cols)
    if cols and isinstance(cols[0], str):
        try:
            return np.array([position[c] for c in cols], dtype=np.intp)
        except KeyError as exc:
            raise NotCompilable(f"column {exc} is not a model feature") from None
    return np.asarray(cols, dtype=np.intp)


class Preprocess:
    """The Pipeline's steps before the estimator, on a float matrix or a DataFrame.

    ``clean`` (rows without NaN) is None when a step is not known to be the identity on them;
    then every row goes through the fitted steps themselves.
    """

    def __init__(self, steps: Any, features: list[str], clean: Transform | None):
        self.steps = steps  # the fitted Pipeline slice before the estimator
        self.features = list(features)
        self.clean = clean

    @property
    def kind(self) -> str:
        return "identity on rows without NaN, fitted steps otherwise" if self.clean else "fitted steps"

    def fitted(self, x: Any) -> np.ndarray:
        import pandas as pd

        frame = x if isinstance(x, pd.DataFrame) else pd.DataFrame(x, columns=self.features)
        return np.asarray(self.steps.transform(frame))

    def __call__(self, x: Any) -> np.ndarray:
        if self.clean is None or not isinstance(x, np.ndarray):
            return self.fitted(x)
        missing = np.isnan(x).any(axis=1)
        if not missing.any():
            return self.clean(x)
        if missing.all():
            return self.fitted(x)
        clean, filled = self.clean(x[~missing]), self.fitted(x[missing])
        z = np.empty((len(x), clean.shape[1]), dtype=np.result_type(clean, filled))
        z[~missing] = clean
        z[missing] = filled
        return z
