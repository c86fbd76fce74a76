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

import logging
import time

from sklearn.compose import ColumnTransformer

from netsec_tasks.catalog import RunCatalog
from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema, load_schema
from netsec_tasks.errors import DataError
from netsec_tasks.preprocessing import (
    features_and_target,
    fit_preprocessor,
    fit_preprocessor_on,
    imputer_sample,
    preprocessor_bytes,
)
from netsec_tasks.records import RunContext, TransformRecord, ValidationRecord
from netsec_tasks.sampling import IMPUTER_SALT, bounded_sample

log = logging.getLogger("netsec.transform")


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
