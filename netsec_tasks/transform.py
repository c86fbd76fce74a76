"""Step 4, transformation: the preprocessing ColumnTransformer (first stage of the model).

Numeric features are imputed with a KNN imputer (neighbours vote with the row's other features,
which suits correlated indicator columns better than a column mean); categorical features get the
most frequent value and a one-hot encoding that ignores unseen categories at serving time. The
preprocessor is fitted on the validated TRAINING split only, so nothing about the test rows leaks
into imputation. Scaling is not done here: only the logistic-regression candidate needs it and it
carries its own scaler (see :mod:`netsec_tasks.candidates`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import DataError
from netsec_tasks.records import RunContext, TransformRecord, ValidationRecord
from netsec_tasks.schema import DatasetSchema, load_schema
from netsec_tasks.catalog import RunCatalog

log = logging.getLogger("netsec.transform")

KNN_NEIGHBORS = 5


def build_preprocessor(schema: DatasetSchema) -> ColumnTransformer:
    """Unfitted ColumnTransformer for the schema's features; outputs a dense float array."""
    parts = []
    if schema.numeric_features:
        # keep_empty_features: an all-missing column stays (as 0) so the output width never
        # depends on the batch.
        parts.append(("numeric", KNNImputer(n_neighbors=KNN_NEIGHBORS, keep_empty_features=True),
                      schema.numeric_features))
    if schema.categorical_features:
        parts.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]), schema.categorical_features))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0,
                             verbose_feature_names_out=False)


def feature_frame(frame: pd.DataFrame, schema: DatasetSchema, source: str = "") -> pd.DataFrame:
    """Exactly the schema's feature columns, in schema order (the model's input contract)."""
    missing = [c for c in schema.features if c not in frame.columns]
    if missing:
        raise DataError(f"missing feature columns {missing}; the schema '{schema.name}' needs them",
                        source=source or None, columns=missing)
    return frame[schema.features]


def threat_target(frame: pd.DataFrame, schema: DatasetSchema, source: str = "") -> np.ndarray:
    """y = 1 for a threat label (the schema's label mapping, ``schema.is_threat``), 0 otherwise."""
    col = schema.target.column
    if col not in frame.columns:
        raise DataError(f"missing target column '{col}'", source=source or None, columns=[col])
    labels = frame[col]
    if labels.isna().any():
        rows = [int(i) for i in np.flatnonzero(labels.isna().to_numpy())[:10]]
        raise DataError(f"target column '{col}' has missing labels", source=source or None,
                        columns=[col], rows=rows)
    return np.asarray(schema.is_threat(labels), dtype=np.int64)


def features_and_target(frame: pd.DataFrame, schema: DatasetSchema,
               source: str = "") -> tuple[pd.DataFrame, np.ndarray]:
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
    """Fit the preprocessor on the validated training split and save it with skops."""
    schema = load_schema(cfg.schema_path)
    catalog = RunCatalog.of(cfg, run)
    X_train, _ = features_and_target(catalog.load_frame(validation.train_uri), schema, validation.train_uri)
    if X_train.empty:
        raise DataError("training split has no rows", source=validation.train_uri)
    preprocessor = build_preprocessor(schema).fit(X_train)
    uri = catalog.save_bytes("preprocessor", preprocessor_bytes(preprocessor))
    missing = int(X_train.isna().to_numpy().sum())
    record = TransformRecord(
        preprocessor_uri=uri,
        numeric_features=schema.numeric_features,
        categorical_features=schema.categorical_features,
        features_out=len(preprocessor.get_feature_names_out()),
        missing_values_imputed=missing,
        fitted_on_rows=len(X_train),
    )
    log.info("preprocessor fitted on %d training rows: %d features in, %d out, %d missing values "
             "imputed -> %s", len(X_train), len(schema.features), record.features_out, missing, uri)
    return record
