"""The pipeline's hold-out evaluation (``evaluation.holdout_path``): the version just registered,
evaluated on that file after training, with the reports saved in the run's storage."""

from __future__ import annotations

from pathlib import Path

from netsec_tasks.config import PipelineConfig
from netsec_tasks.file_evaluation.evaluate import evaluate_file
from netsec_tasks.records import EvaluationRecord


def evaluate_holdout(cfg: PipelineConfig, run, register) -> EvaluationRecord | None:
    """Evaluate the version ``register`` (a RegisterRecord) just registered on
    ``evaluation.holdout_path``, when configured; the reports go to the run's ``evaluate/``
    folder in storage (and to MLflow, on the version). None when off or nothing was registered."""
    import shutil
    import tempfile

    from netsec_tasks.catalog import RunCatalog
    from netsec_tasks.storage import is_s3, scratch_dir

    path = cfg.evaluation.holdout_path
    if not path or not register.version:
        return None
    catalog = RunCatalog.of(cfg, run)
    tmp = Path(tempfile.mkdtemp(prefix="netsec-evaluate-", dir=scratch_dir(cfg)))
    try:
        local = path
        if is_s3(path):
            local = str(catalog.storage.download(path, tmp / Path(path).name))
        rec = evaluate_file(
            cfg, local, model_uri=f"models:/{register.model_name}/{register.version}", out_dir=tmp / "report"
        )
        uris = {}
        for f in sorted((tmp / "report").rglob("*")):
            if f.is_file():
                rel = f.relative_to(tmp / "report").as_posix()
                uris[rel] = catalog.save_file("evaluation", str(f), rel)
        rec = rec.model_copy(
            update={
                "source": path,
                "report_uri": uris["evaluation_report.yaml"],
                "html_uri": uris["evaluation_report.html"],
                "plots": [u for k, u in uris.items() if k.startswith("plots/")],
            }
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    catalog.storage.write_text(
        catalog.run.step_uri("evaluate", "evaluation.json"), rec.model_dump_json(indent=2)
    )
    return rec
