"""Step 4, transformation: the preprocessing ColumnTransformer (first stage of the model).

Numeric features are imputed with a KNN imputer (neighbours vote with the row's other features,
which suits correlated indicator columns better than a column mean); categorical features get the
most frequent value and a one-hot encoding that ignores unseen categories at serving time. The
preprocessor is fitted on the validated TRAINING split only, so nothing about the test rows leaks
into imputation. Scaling is not done here: only the logistic-regression candidate needs it and it
carries its own scaler (see :mod:`netsec_tasks.candidates`).

**The imputer is bounded.** A fitted KNNImputer stores its donor rows and compares every row with
a gap against all of them, so fitted on the whole split its size and its cost per row grow with
the data (217 MB and O(rows with gaps x training rows) at 1M rows). :func:`fit_preprocessor`
gives it a bounded sample of the training split as donors (``transform.imputer_max_rows``,
:mod:`netsec_tasks.sampling`) while the categorical parts still see every row (a rare category
is not lost). The fitted parts are wrapped in sklearn's ``FrozenEstimator``: the
ColumnTransformer is then fitted on one row only, which wires the columns without refitting the
parts and without imputing the whole split (``ColumnTransformer.fit`` transforms what it fits).
All plain sklearn types, so skops loads them without widening the trusted-type list.

Large transforms and fits in a step's own process run inside :func:`compute_limits`: imputation
compares rows in chunks of :data:`WORKING_MEMORY_MB` (sklearn's ``working_memory``, 1 GB by
default, doubled a step's peak memory), and BLAS/OpenMP use one thread (parallelism lives in the
search's worker processes; on a shared 2-core machine a second OpenMP thread made a gradient
boosting refit 20x slower in CPU seconds, measured).
"""

from __future__ import annotations

import contextlib
import logging
import time
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

from netsec_tasks.catalog import RunCatalog
from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema, load_schema
from netsec_tasks.errors import DataError
from netsec_tasks.records import RunContext, TransformRecord, ValidationRecord
from netsec_tasks.sampling import IMPUTER_SALT, bounded_sample
from netsec_tasks.split import lineage_hashes

log = logging.getLogger("netsec.transform")

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


def transform(cfg: PipelineConfig, run: RunContext, validation: ValidationRecord) -> TransformRecord:
    """Fit the preprocessor on the validated training split and save it with skops.

    A partitioned split, or any split with ``training.engine: dask``, is never loaded whole:
    its rows' hashes, labels and category counts come from each partition
    (:class:`netsec_tasks.stored_split.StoredSplit`), then only the imputer's bounded donor
    sample is read; the preprocessor is the same as from the whole frame.
    """
    from netsec_tasks.engine import engine_for
    from netsec_tasks.partitions import is_partitioned

    started = time.perf_counter()
    schema = load_schema(cfg.schema_path)
    catalog = RunCatalog.of(cfg, run)
    engine = engine_for(cfg)
    if engine.client is not None or is_partitioned(catalog.storage, validation.train_uri):
        preprocessor, rows, donors_n, missing = _fit_stored(cfg, engine, schema, validation.train_uri)
    else:
        frame = catalog.load_frame(validation.train_uri)
        X_train, y = features_and_target(frame, schema, validation.train_uri)
        if X_train.empty:
            raise DataError("training split has no rows", source=validation.train_uri)
        donors = imputer_sample(cfg, frame, schema, y)
        preprocessor = fit_preprocessor(schema, X_train, donors)
        rows, donors_n = len(X_train), int(donors.sum())
        missing = int(X_train.isna().to_numpy().sum())
    uri = catalog.save_bytes("preprocessor", preprocessor_bytes(preprocessor))
    record = TransformRecord(
        preprocessor_uri=uri,
        numeric_features=schema.numeric_features,
        categorical_features=schema.categorical_features,
        features_out=len(preprocessor.get_feature_names_out()),
        missing_values_imputed=missing,
        fitted_on_rows=rows,
        imputer_rows=donors_n,
    )
    log.info(
        "preprocessor fitted on %d training rows (the KNN imputer on %d of them, "
        "transform.imputer_max_rows=%s): %d features in, %d out, %d missing values in the "
        "split; %.1f s -> %s",
        rows,
        record.imputer_rows,
        cfg.transform.imputer_max_rows,
        len(schema.features),
        record.features_out,
        missing,
        time.perf_counter() - started,
        uri,
    )
    return record


def _fit_stored(
    cfg: PipelineConfig, engine, schema: DatasetSchema, uri: str
) -> tuple[ColumnTransformer, int, int, int]:
    """(preprocessor, rows, imputer donors, missing cells) of a split left in storage."""
    from netsec_tasks.stored_split import StoredSplit, categorical_frame

    split = StoredSplit(cfg, engine, schema, uri, what="transform: index the training split")
    if not split.rows:
        raise DataError("training split has no rows", source=uri)
    donors = bounded_sample(
        split.row_hashes, split.y, cfg.transform.imputer_max_rows, seed=cfg.training.seed, salt=IMPUTER_SALT
    )
    X = split.take(donors, schema.features, what="transform: collect the imputer's donors")
    categorical = categorical_frame(split.categories, schema.categorical_features, split.dtypes)
    preprocessor = fit_preprocessor_on(schema, X[schema.numeric_features], categorical, X.iloc[:1])
    return preprocessor, split.rows, int(donors.sum()), split.missing
