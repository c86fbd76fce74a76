"""The run's artifact catalog: one name per artifact, one URI per name (after Kedro's data catalog).

Every step reads its inputs from, and writes its outputs to, ``<storage>/runs/<run id>/<step>/``
through this catalog, so the layout of a run lives here and nowhere else:

=====================  ==========================================  ============================
name                   location under the run                      written by
=====================  ==========================================  ============================
raw_train, raw_test    ingest/train.parquet, ingest/test.parquet   ingest (the split)
new_batch              ingest/new_batch.parquet                    ingest (rows after watermark)
validated_train/test   validate/train.parquet, validate/test...    validate (typed, clean)
validated_new_batch    validate/new_batch.parquet                  validate
train_row_hashes       validate/train_row_hashes.parquet           validate (training lineage)
validation_report      validate/validation_report.yaml             validate
invalid_rows           validate/invalid.csv                        validate (quarantine)
drift_report(_html)    drift/drift_report.yaml / .html             check_drift
branch                 drift/branch.txt                            check_drift (the decision)
preprocessor           transform/preprocessor.skops                transform
plots                  train/plots/                                train
register               register/register.json                      register
evaluation             evaluate/                                   register (evaluation.holdout_path)
model                  model/                                      sync (the registered model)
manifest               manifest.json                               sync (written last)
outcome, summary       outcome.json, summary.json                  record_outcome
=====================  ==========================================  ============================

Records carry the URIs (``file://`` or ``s3://``); :meth:`RunCatalog.load_frame` reads any of
them, so the five places that used to open Parquet files each their own way now share one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsec_tasks.storage import Storage, storage_for

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from netsec_tasks.config import PipelineConfig
    from netsec_tasks.records import Record, RunContext

ARTIFACTS: dict[str, tuple[str, str]] = {
    "raw_train": ("ingest", "train.parquet"),
    "raw_test": ("ingest", "test.parquet"),
    "new_batch": ("ingest", "new_batch.parquet"),
    "validated_train": ("validate", "train.parquet"),
    "validated_test": ("validate", "test.parquet"),
    "validated_new_batch": ("validate", "new_batch.parquet"),
    "train_row_hashes": ("validate", "train_row_hashes.parquet"),
    "validation_report": ("validate", "validation_report.yaml"),
    "invalid_rows": ("validate", "invalid.csv"),
    "drift_report": ("drift", "drift_report.yaml"),
    "drift_html": ("drift", "drift_report.html"),
    "branch": ("drift", "branch.txt"),
    "preprocessor": ("transform", "preprocessor.skops"),
    "plots": ("train", "plots"),
    "register": ("register", "register.json"),
    "evaluation": ("evaluate", ""),
    "model": ("model", ""),
    "manifest": ("", "manifest.json"),
    "outcome": ("", "outcome.json"),
    "summary": ("", "summary.json"),
}


class RunCatalog:
    """The named artifacts of one run, in one storage."""

    def __init__(self, storage: Storage, run: RunContext):
        self.storage = storage
        self.run = run

    @classmethod
    def of(cls, cfg: PipelineConfig, run: RunContext) -> RunCatalog:
        return cls(storage_for(cfg), run)

    def uri(self, name: str) -> str:
        """The URI of artifact ``name`` (KeyError lists the known names)."""
        try:
            step, file = ARTIFACTS[name]
        except KeyError:
            raise KeyError(f"unknown artifact {name!r}; known: {', '.join(ARTIFACTS)}") from None
        return self.run.step_uri(step, file)

    # -- reading: by name or by the URI a record carries -------------------------------------

    def _where(self, name_or_uri: str) -> str:
        return self.uri(name_or_uri) if name_or_uri in ARTIFACTS else name_or_uri

    def load_frame(self, name_or_uri: str, columns: list[str] | None = None) -> pd.DataFrame:
        return self.storage.read_frame(self._where(name_or_uri), columns=columns)

    def load_text(self, name_or_uri: str) -> str:
        return self.storage.read_text(self._where(name_or_uri))

    def exists(self, name_or_uri: str) -> bool:
        return self.storage.exists(self._where(name_or_uri))

    # -- writing: by name ----------------------------------------------------------------------

    def save_frame(self, name: str, frame: pd.DataFrame) -> str:
        return self.storage.write_frame(self.uri(name), frame)

    def save_text(self, name: str, text: str) -> str:
        return self.storage.write_text(self.uri(name), text)

    def save_bytes(self, name: str, data: bytes) -> str:
        return self.storage.write_bytes(self.uri(name), data)

    def save_record(self, name: str, record: Record) -> str:
        return self.save_text(name, record.model_dump_json(indent=2))

    def save_file(self, name: str, path: str, relative: str = "") -> str:
        """Upload a local file to artifact ``name`` (a folder artifact takes ``relative``)."""
        from netsec_tasks.storage import join_uri

        return self.storage.upload(path, join_uri(self.uri(name), relative) if relative else self.uri(name))
