"""Helpers for the serving tests: train a small pipeline, register it the netsec way, run servers."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

# Paths and loopback helpers are shared with the rest of the suite.
from netsec_testing import (  # noqa: E402,F401
    REPO,
    free_port,
    log_skops_model,
    serving_command,
    stop_process,
    wait_for_port,
)

MODEL_NAME = "netsec-phishing"
TARGET = "Result"
# The control-plane key every test app is given (serving_settings): it opens /model's, /ready's
# and /metrics' details, which anonymous clients do not see.
CONTROL_KEY = "test-control-key"
DETAILS = {"X-API-Key": CONTROL_KEY}


def build_pipeline(kind: str = "random_forest", seed: int = 0):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        AdaBoostClassifier,
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.impute import KNNImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier
    from xgboost import XGBClassifier

    from netsec_tasks.sample import FEATURE_NAMES

    estimators = {
        "random_forest": lambda: RandomForestClassifier(n_estimators=25, random_state=seed, n_jobs=1),
        "extra_trees": lambda: ExtraTreesClassifier(n_estimators=15, random_state=seed, n_jobs=1),
        "decision_tree": lambda: DecisionTreeClassifier(random_state=seed, max_depth=8),
        "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=20, random_state=seed),
        "logistic_regression": lambda: LogisticRegression(max_iter=500),
        "adaboost": lambda: AdaBoostClassifier(
            DecisionTreeClassifier(max_depth=2), n_estimators=10, random_state=seed
        ),
        "xgboost": lambda: XGBClassifier(
            n_estimators=20, max_depth=4, n_jobs=1, random_state=seed, tree_method="hist", verbosity=0
        ),
    }
    numeric = Pipeline([("impute", KNNImputer(n_neighbors=3)), ("scale", StandardScaler())])
    pre = ColumnTransformer([("numeric", numeric, list(FEATURE_NAMES))])
    return Pipeline([("preprocess", pre), ("model", estimators[kind]())])


def training_frame(n_rows: int = 600, seed: int = 3) -> pd.DataFrame:
    from netsec_tasks.sample import make_sample

    return make_sample(n_rows, seed=seed)


def fit(kind: str = "random_forest", seed: int = 0, n_rows: int = 600):
    frame = training_frame(n_rows, seed=seed + 3)
    x = frame.drop(columns=[TARGET])
    y = (frame[TARGET] == -1).astype(int)  # is_threat: -1 (phishing) is the threat
    return build_pipeline(kind, seed).fit(x, y), frame


def register(
    tracking_uri: str,
    pipeline,
    frame: pd.DataFrame,
    *,
    promote: bool = True,
    name: str = MODEL_NAME,
    artifact_root: Path | None = None,
    test_frame: pd.DataFrame | None = None,
    test_split: str | None = "tag",
    threshold: float | None = None,
) -> str:
    """Log with skops, register, tag and (optionally) promote, following the netsec conventions.

    ``threshold``: register the pipeline wrapped with that decision threshold, as training does
    (netsec_tasks.operating_point.with_threshold, tags netsec.threshold and the budget); None: the
    bare Pipeline, as versions registered before operating points are.

    The test split (the rows serving verifies its fast path on: ``test_frame``, else 200 rows the
    model has not seen) is a Parquet file named by the version's ``netsec.test_uri`` tag, as
    ``netsec_tasks.registry`` does (``test_split="tag"``), or the run's ``data/test.parquet`` as
    runs logged it before the storage hand-off (``"artifact"``), or absent (None).
    """
    import mlflow
    from mlflow import MlflowClient

    if threshold is not None:
        from netsec_tasks.operating_point import with_threshold

        pipeline = with_threshold(pipeline, threshold)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    exp_name = "netsec"
    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(exp_name) is None:
        client.create_experiment(
            exp_name, artifact_location=(artifact_root.as_uri() if artifact_root else None)
        )
    mlflow.set_experiment(exp_name)
    x = frame.drop(columns=[TARGET])
    with mlflow.start_run(run_name="test-run") as run:
        mlflow.log_metrics({"test_f1": 0.9, "test_accuracy": 0.91, "cv_score": 0.89})
        info = log_skops_model(pipeline, x, signature_rows=20)
        test = test_frame if test_frame is not None else training_frame(200, seed=77)
        if test_split == "artifact":
            with tempfile.TemporaryDirectory() as tmp:
                test.to_parquet(Path(tmp) / "test.parquet", index=False)
                mlflow.log_artifact(str(Path(tmp) / "test.parquet"), artifact_path="data")
    mv = mlflow.register_model(info.model_uri, name)
    if test_split == "tag":
        where = Path(artifact_root or tempfile.mkdtemp(prefix="netsec-test-")) / "splits"
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"{name}-v{mv.version}-test.parquet"
        test.to_parquet(path, index=False)
        client.set_model_version_tag(name, mv.version, "netsec.test_uri", path.as_uri())
    tags = {
        "netsec.pipeline_run_id": "test-run",
        "netsec.dataset_digest": "sha256:test-" + run.info.run_id[:8],
        "netsec.features": json.dumps(list(x.columns)),
        "netsec.target": TARGET,
        "netsec.positive_label": "-1",
        "netsec.negative_label": "1",
        "netsec.metric": "f1",
        "netsec.test_score": "0.9",
        "netsec.dataset": "phishing",
    }
    if threshold is not None:
        tags.update(
            {
                "netsec.threshold": repr(threshold),
                "netsec.max_false_positive_rate": "0.01",
                "netsec.expected_threat_rate": "0.01",
                "netsec.objective": "recall_at_budget",
            }
        )
    for k, v in tags.items():
        client.set_model_version_tag(name, mv.version, k, v)
    if promote:
        promote_version(tracking_uri, mv.version, name=name)
    return str(mv.version)


def promote_version(tracking_uri: str, version: str, name: str = MODEL_NAME) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    client.set_registered_model_alias(name, "production", version)
    client.transition_model_version_stage(name, version, "Production", archive_existing_versions=True)


@dataclass
class Registered:
    tracking_uri: str
    pipeline: object
    frame: pd.DataFrame
    version: str
    root: Path

    @property
    def features(self) -> list[str]:
        return [c for c in self.frame.columns if c != TARGET]


def serving_settings(tracking_uri: str, tmp: Path, **kw):
    from serving.settings import Settings

    base = dict(
        mlflow_tracking_uri=tracking_uri,
        log_dir=str(tmp / "predictions"),
        poll_interval_seconds=60,
        retry_interval_seconds=0.5,
        log_flush_seconds=0.2,
        inference_threads=1,
        control_key=CONTROL_KEY,
    )
    base.update(kw)
    return Settings(**base)


def wait_ready(client, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = client.get("/ready")
        if last.status_code == 200:
            return
        time.sleep(0.1)
    raise TimeoutError(
        f"/ready never became 200: {last.status_code if last else None} {last.text if last else ''}"
    )


class UvicornServer:
    """``python -m uvicorn serving.app:app`` configured only through the environment."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith("NETSEC_") and k != "MLFLOW_TRACKING_URI"
            },
            **env,
        }
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> UvicornServer:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            serving_command(self.port, "--no-access-log"),
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=60, proc=self.proc)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, 15)
        if getattr(self, "_log", None):
            self._log.close()


def wait_ready_http(url: str, timeout: float = 90.0) -> None:
    with httpx.Client(base_url=url, timeout=5) as c:
        wait_ready(c, timeout)


def records_of(frame: pd.DataFrame) -> list[dict]:
    x = frame.drop(columns=[TARGET], errors="ignore")
    return [
        {k: int(v) if isinstance(v, (np.integer,)) else v for k, v in row.items()}
        for row in x.to_dict(orient="records")
    ]
