"""An evaluation in MLflow: a run linked to the model version's logged model (metrics, the
reports as artifacts) and the headline figures as tags on the version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.sinks import (
    MLFLOW_TAG_CHARS,
    json_text,
    mlflow_key,
    mlflow_value,
)
from netsec_tasks.tracking import TAG_PREFIX


def track_evaluation(cfg: PipelineConfig, mv, doc: dict[str, Any], out: Path) -> str:
    """A run linked to the model version (metrics on its logged model), reports as artifacts,
    and the headline figures as tags on the version. Returns the run id."""
    import mlflow

    from netsec_tasks.outages import mlflow_errors
    from netsec_tasks.tracking import configure_mlflow, logged_model_id, mlflow_client

    name, version = mv.name, str(mv.version)
    with mlflow_errors(cfg, f"log the evaluation of {name} v{version}"):
        exp_id = configure_mlflow(cfg)
        client = mlflow_client(cfg)
        metrics = {f"eval_{k}": float(v) for k, v in doc["metrics"].items()}
        point = doc["operating_point"]
        for key in ("threshold", "fpr", "fpr_low", "fpr_high", "precision_at_rate", "alerts_per_10k_benign"):
            if point.get(key) is not None:
                metrics[f"eval_{key}"] = float(point[key])
        metrics.update({f"eval_all_rows_{k}": float(v) for k, v in doc.get("metrics_all_rows", {}).items()})
        for label, entry in (doc.get("per_label") or {}).items():
            metrics[mlflow_key(label, prefix="eval_recall.")] = float(entry["recall"])
        if mlflow.active_run() is not None:  # a run left open by an earlier failure here
            mlflow.end_run(status="FAILED")
        tags = {
            "netsec.role": "evaluation",
            "netsec.model_name": name,
            "netsec.model_version": version,
            "netsec.evaluated_file": mlflow_value(doc["file"], limit=MLFLOW_TAG_CHARS),
            "netsec.dataset": doc["data_set"],
        }
        run_name = mlflow_value(f"evaluate {Path(doc['file']).name} - {name} v{version}", limit=250)
        with mlflow.start_run(experiment_id=exp_id, tags=tags, run_name=run_name) as run:
            mlflow.log_params(
                {
                    "file": mlflow_value(doc["file"], limit=500),
                    "file_sha256": doc["file_sha256"] or "",
                    "model_uri": doc["model"]["uri"],
                    "rows_scored": doc["rows"]["scored"],
                    "rows_excluded": doc["rows"]["excluded"],
                    "rows_trained_on": doc["rows"].get("trained_on"),
                }
            )
            # model_id links the metrics (and the run) to the logged model behind the version.
            mlflow.log_metrics(metrics, model_id=logged_model_id(mv))
            mlflow.log_artifacts(str(out), artifact_path="evaluation")
        run_id = run.info.run_id
        summary = {
            "run_id": run_id,
            "file": doc["file"],
            "rows": doc["rows"]["scored"],
            **{k: round(v, 4) for k, v in doc["metrics"].items()},
        }
        client.set_model_version_tag(name, version, TAG_PREFIX + "evaluation_run_id", run_id)
        client.set_model_version_tag(
            name, version, TAG_PREFIX + "evaluation", mlflow_value(json_text(summary), limit=5000)
        )
    return run_id
