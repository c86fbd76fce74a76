"""The MLflow runs of a training: the parent run of a pipeline run (found again on a retry), a
nested run per candidate, params (a changed value on a retry goes to a tag), metrics, the
splits as dataset inputs, the model (logged last), and ending every open run on failure.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.operating_point import OperatingPoint
from netsec_tasks.outages import quick_mlflow
from netsec_tasks.records import CandidateResult, ValidationRecord
from netsec_tasks.tracking import END_REASON_TAG, OWNER_TAG, PIPELINE_RUN_TAG, log_pipeline_model
from netsec_tasks.train.outcome import Trained
from netsec_tasks.train.search import selection_metric

log = logging.getLogger("netsec.train")

ROLE_TAG = "netsec.role"
CANDIDATE_TAG = "netsec.candidate"


def find_parent_run(client, experiment_id: str, pipeline_run_id: str):
    """The parent run of this pipeline run from an earlier attempt, if any (oldest first)."""
    quoted = pipeline_run_id.replace("'", "\\'")
    return _oldest_run(
        client, experiment_id, f"tags.`{PIPELINE_RUN_TAG}` = '{quoted}' and tags.`{ROLE_TAG}` = 'pipeline'"
    )


def _find_child_run(client, experiment_id: str, parent_id: str, candidate: str):
    return _oldest_run(
        client,
        experiment_id,
        f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{CANDIDATE_TAG}` = '{candidate}'",
    )


def _oldest_run(client, experiment_id: str, filter_string: str):
    """The oldest MLflow run of the experiment that ``filter_string`` matches, or None."""
    runs = client.search_runs(
        [experiment_id], filter_string=filter_string, order_by=["attributes.start_time ASC"], max_results=1
    )
    return runs[0] if runs else None


def _log_params(params: dict[str, Any]) -> None:
    """Log params; on a reused run a changed value goes to a tag (MLflow params are immutable)."""
    import mlflow

    run = mlflow.active_run()
    assert run is not None  # called inside the training run
    existing = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    fresh = {}
    for key, value in params.items():
        text = str(value)[:6000]
        if key not in existing:
            fresh[key] = text
        elif existing[key] != text:
            log.warning(
                "param %s changed on retry (%s -> %s); recorded as tag netsec.param.%s",
                key,
                existing[key],
                text,
                key,
            )
            mlflow.set_tag(f"netsec.param.{key}", text[:5000])
    if fresh:
        mlflow.log_params(fresh)


def log_candidate_run(client, experiment_id: str, parent_id: str, result: CandidateResult, owner: str) -> str:
    import mlflow

    previous = _find_child_run(client, experiment_id, parent_id, result.name)
    kwargs = {"run_id": previous.info.run_id} if previous else {"run_name": result.name}
    with mlflow.start_run(
        nested=True, tags={CANDIDATE_TAG: result.name, ROLE_TAG: "candidate", OWNER_TAG: owner}, **kwargs
    ) as child:
        _log_params(result.best_params)
        mlflow.log_metrics(
            {"cv_mean": result.cv_score, "cv_std": result.cv_std, "fit_seconds": result.fit_seconds}
        )
        return child.info.run_id


def _log_data(
    cfg: PipelineConfig, schema: DatasetSchema, validation: ValidationRecord, train: Any, test: Any
) -> None:
    """Both splits as MLflow dataset inputs that point at their copy in storage (the data itself
    is stored once, in storage; the registry's ``netsec.train_uri`` tag is the drift reference).
    A split not in memory (the Dask engine) is logged by its URI and digest alone."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.pandas_dataset import from_pandas

    target = schema.target.column
    columns = [*schema.features, target]
    splits = (
        ("train", "training", train, validation.train_uri, validation.dataset_digest[:32]),
        ("test", "testing", test, validation.test_uri, None),
    )
    for part, context, split, uri, digest in splits:
        with warnings.catch_warnings():
            # Schema-inference hints about int columns and source-type guessing: not actionable.
            warnings.simplefilter("ignore", category=UserWarning)
            # MLflow stores at most 36 characters of a dataset digest.
            name = f"{cfg.dataset}-{part}"
            dataset: Any
            if split.frame is None:
                dataset = MetaDataset(resolve_dataset_source(uri), name=name, digest=digest or uri[-32:])  # type: ignore[abstract]
            else:
                dataset = from_pandas(
                    split.frame[columns], source=uri, targets=target, name=name, digest=digest
                )
            mlflow.log_input(dataset, context=context)


def end_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def end_runs_quietly(status: str, reason: str) -> None:
    """End every active MLflow run with ``status`` and tag why; never raises, never waits long.

    A failure handler: the store may be the very thing that failed, so each call gets one short
    attempt (:func:`quick_mlflow`), the first unreachable answer stops the rest, and what could
    not be ended is left to the next run's reconciliation (it ends runs whose owner is gone).
    """
    import mlflow

    reachable = True
    while (active := mlflow.active_run()) is not None:
        run_id = active.info.run_id
        # Once the store proved unreachable, the remaining runs get a 1 s attempt each: ending
        # them only pops MLflow's local run stack, and the next run's reconciliation ends them.
        with quick_mlflow(3 if reachable else 1):
            try:
                if reachable:
                    mlflow.MlflowClient().set_tag(run_id, END_REASON_TAG, reason[:5000])
                mlflow.end_run(status=status)  # pops the run before its request: the loop advances
            except Exception as exc:
                if reachable:
                    log.warning(
                        "could not mark MLflow run %s %s (%s); the next run's reconciliation will end it",
                        run_id,
                        status,
                        end_reason(exc)[:200],
                    )
                reachable = False


def _point_metrics(prefix: str, point: OperatingPoint) -> dict[str, float]:
    """An operating point's figures as MLflow metrics (``test_fpr``, ``test_fpr_high``,
    ``oof_recall_at_op``...; undefined figures left out)."""
    figures = {
        "threshold": point.threshold,
        "fpr": point.fpr,
        "fpr_low": point.fpr_low,
        "fpr_high": point.fpr_high,
        "recall_at_op": point.recall,
        "precision_at_expected_rate": point.precision_at_rate,
        "alerts_per_10k_benign": point.alerts_per_10k_benign,
    }
    return {f"{prefix}_{k}": float(v) for k, v in figures.items() if v is not None}


def log_parent(cfg: PipelineConfig, schema: DatasetSchema, validation: ValidationRecord, out: Trained) -> str:
    """Params, metrics, data, plots and (last) the model into the active parent run."""
    import mlflow

    t = cfg.training
    winner = out.winner
    policy, oof, test = out.policy, out.choice.point, out.test_point
    _log_params(
        {
            "winner": winner.name,
            "metric": selection_metric(cfg, policy),
            "objective": policy.objective,
            "max_false_positive_rate": policy.budget,
            "expected_threat_rate": policy.expected_threat_rate,
            "confidence": policy.confidence,
            "threshold": out.choice.threshold,
            "threshold_basis": out.choice.basis,
            "cv_folds": t.cv_folds,
            "search": t.search,
            "n_iter": t.n_iter,
            "candidates": ",".join(t.candidates),
            "training_seed": t.seed,
            "split_seed": cfg.split.seed,
            "duplicate_aware": cfg.split.duplicate_aware,
            "train_rows": len(out.train.y),
            "test_rows": len(out.test.y),
            "search_rows": out.search_rows,
            "search_max_rows": t.search_max_rows,
            "imputer_max_rows": cfg.transform.imputer_max_rows,
            "engine": out.engine,
            **({"refit": out.refit} if out.refit else {}),
            "target": schema.target.column,
            "positive_label": schema.positive_label,
            "label_mapping": schema.target.mapping(),
            **{f"winner.{k}": v for k, v in winner.best_params.items()},
        }
    )
    mlflow.log_metrics(
        {
            **{f"test_{k}": v for k, v in out.metrics.items()},
            "cv_score": winner.cv_score,
            "cv_std": winner.cv_std,
            "training_seconds": out.training_seconds,
            **_point_metrics("oof", oof),
            **_point_metrics("test", test),
            "oof_brier": out.oof_brier,
        }
    )
    mlflow.log_dict(
        {
            "policy": dataclasses.asdict(policy),
            "threshold": out.choice.threshold,
            "basis": out.choice.basis,
            "out_of_fold": oof.to_dict(),
            "test": test.to_dict(),
        },
        "operating_point.json",
    )
    cm = out.cm
    mlflow.log_dict({"labels": ["benign", "threat"], "rows_truth_cols_pred": cm}, "confusion_matrix.json")
    _log_data(cfg, schema, validation, out.train, out.test)
    mlflow.log_artifacts(str(out.plot_dir), artifact_path="plots")
    # Logged last: a model in the run means everything before it succeeded.
    return log_pipeline_model(out.model, out.train.example(), name="model")
