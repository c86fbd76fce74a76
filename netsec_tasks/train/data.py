"""The training split and the rows the search tunes on: the split loaded in memory, the bounded
search sample with the imputer's donors and the early-stopping rows, and the CV folds.

See :mod:`netsec_tasks.train` for why the sample's imputer is fitted outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.catalog import RunCatalog
from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.errors import DataError
from netsec_tasks.preprocessing import (
    build_preprocessor,
    compute_limits,
    feature_frame,
    fit_preprocessor,
    threat_target,
)
from netsec_tasks.sampling import EARLY_STOPPING_SALT, IMPUTER_SALT, SEARCH_SALT, bounded_sample
from netsec_tasks.split import lineage_hashes

# The most rows held out for early stopping (a bounded, grouped, stratified sample, as the
# search's); the rounds without improvement: netsec_tasks.fitting.EARLY_STOPPING_ROUNDS.
EARLY_STOPPING_MAX_ROWS = 10_000


class LoadedSplit:
    """A validated split: the raw frame (for MLflow), features and the 0/1 threat target.

    What the search needs of a training split (:func:`search_data`) is asked through
    :meth:`lineage`, :meth:`features` and :meth:`preprocessor_outside`, which
    :class:`netsec_tasks.stored_split.StoredSplit` also offers for a split left in storage."""

    def __init__(self, catalog: RunCatalog, uri: str, schema: DatasetSchema):
        self.uri = uri
        self.frame = catalog.load_frame(uri)
        self.X = feature_frame(self.frame, schema, uri)
        self.y = threat_target(self.frame, schema, uri)

    def lineage(self, schema: DatasetSchema) -> np.ndarray:
        return lineage_hashes(self.frame, schema)

    def features(self, mask: np.ndarray) -> pd.DataFrame:
        return self.X if mask.all() else self.X[mask]

    def preprocessor_outside(
        self, schema: DatasetSchema, sample: pd.DataFrame, donors: np.ndarray, outside: np.ndarray
    ):
        return fit_preprocessor(schema, self.X, imputer_rows=donors, rows=outside)

    def example(self, rows: int = 50) -> pd.DataFrame:
        return self.X.head(rows)


def row_groups(X: pd.DataFrame) -> np.ndarray:
    """One group id per distinct feature vector (identical rows share a group)."""
    return pd.util.hash_pandas_object(X, index=False).to_numpy()


@dataclass
class SearchData:
    """What the hyperparameter search fits on.

    ``preprocess`` is the unfitted preprocessor each CV fit clones (``X`` is then the raw feature
    frame), or None when ``X`` is already imputed by an imputer fitted outside the sample.
    ``eval_set``: (X, y) held out of the sample for early stopping, imputed like ``X``; None
    when there is no row to spare (the split fits in the sample). ``groups``: the CV groups
    (identical feature rows), None unless ``split.duplicate_aware``.
    """

    X: Any
    y: np.ndarray
    groups: np.ndarray | None
    cv: Any
    preprocess: Any | None
    eval_set: tuple[np.ndarray, np.ndarray] | None
    rows: int
    description: str
    # Masks over the training split: the sample (all rows when not sampled), the search imputer's
    # donors (None when the imputer is fitted inside each fold) and the early-stopping rows (held
    # out of the refit too; None when there are none).
    sample_rows: np.ndarray | None = None
    imputer_rows: np.ndarray | None = None
    early_stopping_rows: np.ndarray | None = None

    @property
    def sampled(self) -> bool:
        """True when the search ran on a sample (and on rows the imputer already filled)."""
        return self.preprocess is None


def search_data(cfg: PipelineConfig, schema: DatasetSchema, train: Any) -> SearchData:
    """The rows the search tunes on (see the module doc): the whole split when it has at most
    ``training.search_max_rows`` rows, else a bounded, grouped, stratified sample of it, imputed
    by a KNN imputer whose donors are training rows outside the sample. ``train``: a
    :class:`LoadedSplit`, or a :class:`~netsec_tasks.stored_split.StoredSplit` (only the sample, the
    donors and the early-stopping rows are read)."""
    t = cfg.training
    chosen, donors, held = search_masks(cfg, train.lineage(schema), train.y)
    if chosen.all():
        X = train.features(chosen)
        cv, groups = make_cv(cfg, X, train.y)
        return SearchData(
            X=X,
            y=train.y,
            groups=groups,
            cv=cv,
            preprocess=build_preprocessor(schema),
            eval_set=None,
            rows=len(train.y),
            sample_rows=chosen,
            description="the whole training split (the imputer is fitted inside each CV fold)",
        )
    sample = train.features(chosen)
    # Fitted on rows outside the sample only: the categorical parts on all of them, the KNN
    # imputer on its bounded donors. No CV row (training or validation) shaped it.
    preprocess = train.preprocessor_outside(schema, sample, donors, ~chosen)
    with compute_limits():
        X = preprocess.transform(sample)
        eval_set = (
            (preprocess.transform(train.features(held)), train.y[held])
            if held.any() and len(np.unique(train.y[held])) == 2
            else None
        )
    y = train.y[chosen]
    cv, groups = make_cv(cfg, sample, y)
    return SearchData(
        X=X,
        y=y,
        groups=groups,
        cv=cv,
        preprocess=None,
        eval_set=eval_set,
        rows=len(y),
        sample_rows=chosen,
        imputer_rows=donors,
        early_stopping_rows=held if eval_set is not None else None,
        description=(
            f"a sample of {len(y)} of the {len(train.y)} training rows "
            f"(training.search_max_rows={t.search_max_rows}; identical rows together, "
            f"stratified), imputed by a KNN imputer on {int(donors.sum())} rows outside it"
            + (f"; {int(held.sum())} other rows held out for early stopping" if eval_set is not None else "")
        ),
    )


def search_masks(
    cfg: PipelineConfig, hashes: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks over the training split (its rows' lineage hashes and 0/1 target): the search's
    bounded sample; the KNN imputer's donors outside it; rows outside both held out for early
    stopping. When the sample is the whole split, the other two select nothing."""
    t = cfg.training
    chosen = bounded_sample(hashes, y, t.search_max_rows, seed=t.seed, salt=SEARCH_SALT)
    donors = np.zeros_like(chosen)
    held = np.zeros_like(chosen)
    if chosen.all():
        return chosen, donors, held
    outside = ~chosen
    donors[outside] = bounded_sample(
        hashes[outside], y[outside], cfg.transform.imputer_max_rows, seed=t.seed, salt=IMPUTER_SALT
    )
    spare = outside & ~donors
    if spare.any():
        held[spare] = bounded_sample(
            hashes[spare],
            y[spare],
            min(EARLY_STOPPING_MAX_ROWS, int(chosen.sum()) // 4 or 1),
            seed=t.seed,
            salt=EARLY_STOPPING_SALT,
        )
    return chosen, donors, held


def make_cv(cfg: PipelineConfig, X: pd.DataFrame, y: np.ndarray) -> tuple[Any, np.ndarray | None]:
    """The CV splitter and its groups (None unless duplicate-aware)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    folds, seed = cfg.training.cv_folds, cfg.training.seed
    minority = int(min(np.bincount(y, minlength=2)))
    if minority < folds:
        raise DataError(
            f"the training split has only {minority} rows of its smaller class, fewer "
            f"than training.cv_folds={folds}; lower cv_folds or add data"
        )
    if cfg.split.duplicate_aware:
        return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed), row_groups(X)
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed), None
