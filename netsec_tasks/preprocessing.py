"""The preprocessing of a data set's features: the ColumnTransformer that is the model's first
stage, how it is fitted (a bounded imputer sample, frozen parts), its bytes, and the features and
threat target of a frame. Used by the transform step (:mod:`netsec_tasks.transform`, which explains
the choices), by training, the Dask engine's stored splits and the registry's scoring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.frozen import FrozenEstimator
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.errors import DataError
from netsec_tasks.sampling import IMPUTER_SALT, bounded_sample
from netsec_tasks.split import lineage_hashes

KNN_NEIGHBORS = 5


# sklearn's working_memory for imputation (MB): the distance chunk between rows with gaps and the
# donors. The 1 GB default added ~0.6 GB to the register step's peak at 100k rows; 64 MB chunks
# imputed no slower than 1 GB ones (measured on 20k rows with 2% gaps, 2000-5000 donors).
WORKING_MEMORY_MB = 64


def build_preprocessor(schema: DatasetSchema) -> ColumnTransformer:
    """Unfitted ColumnTransformer for the schema's features; outputs a dense float array."""
    parts = []
    if schema.numeric_features:
        # keep_empty_features: an all-missing column stays (as 0) so the output width never
        # depends on the batch.
        parts.append(
            (
                "numeric",
                KNNImputer(n_neighbors=KNN_NEIGHBORS, keep_empty_features=True),
                schema.numeric_features,
            )
        )
    if schema.categorical_features:
        parts.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                schema.categorical_features,
            )
        )
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=False)


@contextlib.contextmanager
def compute_limits() -> Iterator[None]:
    """Imputation distances in chunks of WORKING_MEMORY_MB, one BLAS/OpenMP thread (module doc)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), sklearn.config_context(working_memory=WORKING_MEMORY_MB):
        yield


def fit_preprocessor(
    schema: DatasetSchema,
    X: pd.DataFrame,
    imputer_rows: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> ColumnTransformer:
    """The preprocessor for ``X`` (schema features, n rows): the KNN imputer fitted on the rows
    ``imputer_rows``, the other parts on the rows ``rows`` (boolean masks of n; None: every row).

    Every part is fitted on its own and frozen; the ColumnTransformer is then fitted on one row,
    which only records the columns (see the module doc). Nothing is imputed here, whatever n is.
    Raises DataError when there is no row to fit on.
    """
    masks = {"numeric": imputer_rows, "other": rows}
    if X.empty or any(m is not None and not np.any(m) for m in masks.values()):
        raise DataError("cannot fit the preprocessor on no rows")
    # Columns first, then rows: only each part's columns are copied.
    numeric = X[schema.numeric_features] if imputer_rows is None else X[schema.numeric_features][imputer_rows]
    other = X[schema.categorical_features] if rows is None else X[schema.categorical_features][rows]
    return fit_preprocessor_on(schema, numeric, other, X.iloc[:1])


def fit_preprocessor_on(
    schema: DatasetSchema, numeric: pd.DataFrame, categorical: pd.DataFrame, one_row: pd.DataFrame
) -> ColumnTransformer:
    """The preprocessor with its numeric part (the KNN imputer) fitted on ``numeric`` (its donor
    rows) and its categorical part on ``categorical`` (rows, or the frame
    :func:`netsec_tasks.stored_split.categorical_frame` makes from counts), wired on
    ``one_row`` (one row of every feature)."""
    template = build_preprocessor(schema)
    parts = []
    for name, part, columns in template.transformers:
        data = numeric if name == "numeric" else categorical
        parts.append((name, FrozenEstimator(clone(part).fit(data[columns])), columns))
    wired = clone(template).set_params(transformers=parts)
    return wired.fit(one_row)


def imputer_sample(
    cfg: PipelineConfig, frame: pd.DataFrame, schema: DatasetSchema, y: np.ndarray
) -> np.ndarray:
    """The imputer's donors among ``frame``'s rows: a bounded, grouped, stratified sample of at
    most ``transform.imputer_max_rows`` rows (boolean mask)."""
    return bounded_sample(
        lineage_hashes(frame, schema),
        y,
        cfg.transform.imputer_max_rows,
        seed=cfg.training.seed,
        salt=IMPUTER_SALT,
    )


def feature_frame(frame: pd.DataFrame, schema: DatasetSchema, source: str = "") -> pd.DataFrame:
    """Exactly the schema's feature columns, in schema order (the model's input contract)."""
    missing = [c for c in schema.features if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing feature columns {missing}; the schema '{schema.name}' needs them",
            source=source or None,
            columns=missing,
        )
    return frame[schema.features]


def threat_target(frame: pd.DataFrame, schema: DatasetSchema, source: str = "") -> np.ndarray:
    """y = 1 for a threat label (the schema's label mapping, ``schema.is_threat``), 0 otherwise."""
    col = schema.target.column
    if col not in frame.columns:
        raise DataError(f"missing target column '{col}'", source=source or None, columns=[col])
    labels = frame[col]
    if labels.isna().any():
        rows = [int(i) for i in np.flatnonzero(labels.isna().to_numpy())[:10]]
        raise DataError(
            f"target column '{col}' has missing labels", source=source or None, columns=[col], rows=rows
        )
    return np.asarray(schema.is_threat(labels), dtype=np.int64)


def features_and_target(
    frame: pd.DataFrame, schema: DatasetSchema, source: str = ""
) -> tuple[pd.DataFrame, np.ndarray]:
    """Features and 0/1 threat target of a validated split."""
    return feature_frame(frame, schema, source), threat_target(frame, schema, source)


def preprocessor_bytes(preprocessor: ColumnTransformer) -> bytes:
    """The fitted preprocessor serialised with skops (never pickle)."""
    import skops.io

    return skops.io.dumps(preprocessor)


def load_preprocessor(data: bytes, source: str = "preprocessor") -> ColumnTransformer:
    """Load a preprocessor we saved; sklearn's own types are trusted by skops by default."""
    import skops.io

    trusted = skops.io.get_untrusted_types(data=data)
    unexpected = [t for t in trusted if t != "numpy.dtype"]
    if unexpected:
        raise DataError(f"preprocessor file contains unexpected types {unexpected}", source=source)
    return skops.io.loads(data, trusted=trusted)
