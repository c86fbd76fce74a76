"""Training proper: tune every candidate, choose the winner and its threshold, refit it on the
whole training split (in process, or on the Dask workers), and evaluate it once on the test
split. Returns a :class:`~netsec_tasks.train.outcome.Trained`; tracking is the caller's.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from netsec_tasks.catalog import RunCatalog
from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.errors import DataError
from netsec_tasks.fitting import fit_final
from netsec_tasks.operating_point import decision_policy, with_threshold
from netsec_tasks.preprocessing import compute_limits, load_preprocessor
from netsec_tasks.records import RunContext, TransformRecord, ValidationRecord
from netsec_tasks.storage import scratch_dir
from netsec_tasks.threat_metrics import evaluate, save_plots
from netsec_tasks.train.data import LoadedSplit, search_data
from netsec_tasks.train.outcome import Trained
from netsec_tasks.train.search import Progress, choose_operating_point, selection_metric, tune_all

log = logging.getLogger("netsec.train")


def train_and_evaluate(
    cfg: PipelineConfig,
    run: RunContext,
    schema: DatasetSchema,
    validation: ValidationRecord,
    transform: TransformRecord,
    on_result=None,
):
    from netsec_tasks.engine import engine_for

    start = time.perf_counter()
    catalog = RunCatalog.of(cfg, run)
    engine = engine_for(cfg)
    # With the Dask engine the splits stay in storage: the search reads its sample of the
    # training split, the refit and the test evaluation run on the workers (netsec_tasks.refit).
    scaled = engine.client is not None
    if scaled:
        from netsec_tasks.stored_split import StoredSplit

        train_split: Any = StoredSplit(
            cfg, engine, schema, validation.train_uri, what="train: index the training split"
        )
    else:
        train_split = LoadedSplit(catalog, validation.train_uri, schema)
    if len(np.unique(train_split.y)) < 2:
        raise DataError(
            f"the training split has only one class; both threat and benign rows are "
            f"needed (label mapping: {schema.target.mapping()})",
            source=validation.train_uri,
        )
    preprocessor = load_preprocessor(
        catalog.storage.read_bytes(transform.preprocessor_uri), transform.preprocessor_uri
    )
    data = search_data(cfg, schema, train_split)
    policy = decision_policy(cfg, schema)
    candidates = tune_all(cfg, data, policy, on_result, engine)  # on the workers with Dask
    skipped: list[str] = []
    choices = candidates
    if scaled:
        from netsec_tasks.refit import eligible

        choices, skipped = eligible(cfg, candidates, train_split)
        for line in skipped:
            log.warning("%s", line)
    winner = max(choices, key=lambda c: c.cv_score)  # first listed wins a tie
    say = Progress(cfg.training.progress)
    choice, oof = choose_operating_point(cfg, winner, data, policy)
    say("operating point of %s: %s (%s)", winner.name, choice.point.summary(), choice.basis)
    say("refitting %s on the %d training rows", winner.name, len(train_split.y))
    refit_start = time.perf_counter()
    # Rows per fit in the search: what a budgeted refit keeps per tree.
    search_rows = data.rows * (cfg.training.cv_folds - 1) // cfg.training.cv_folds if data.sampled else None
    refit_note = None
    if scaled:
        from netsec_tasks.refit import RefitJob, refit

        done = refit(
            RefitJob(cfg, engine, schema, train_split, winner, preprocessor),
            search_rows=search_rows,
            early_stopping_rows=data.early_stopping_rows,
        )
        model, refit_note = done.model, "; ".join([done.note, *skipped])
    else:
        model = fit_final(
            cfg,
            winner,
            preprocessor,
            train_split.X,
            train_split.y,
            search_rows=search_rows,
            early_stopping_rows=data.early_stopping_rows,
        )
    say("refit in %.1f s", time.perf_counter() - refit_start)
    training_seconds = time.perf_counter() - start

    # The one and only look at the test split: imputed once, then scored by the refit model and
    # decided at the operating point chosen above (with Dask: partition by partition on the
    # workers, decided here).
    if scaled:
        from netsec_tasks.refit import score_split
        from netsec_tasks.threat_metrics import evaluate_predictions

        test_split: Any = score_split(cfg, engine, schema, model, validation.test_uri, choice.threshold)
        y_pred, scores = test_split.y_pred, test_split.scores
        scored = evaluate_predictions(test_split.y, y_pred, scores)
        metrics, cm = scored["metrics"], scored["confusion_matrix"]
    else:
        test_split = LoadedSplit(catalog, validation.test_uri, schema)
        with compute_limits():
            test_features = model[:-1].transform(test_split.X)
            metrics, cm, y_pred, scores = evaluate(model[-1], test_features, test_split.y, choice.threshold)
    test_point = policy.point(test_split.y, scores, choice.threshold, decisions=y_pred)
    if policy.objective == "recall_at_budget":
        metrics["recall_at_budget"] = float(test_point.recall or 0.0)
    plot_dir = Path(tempfile.mkdtemp(prefix="netsec-plots-", dir=scratch_dir(cfg)))
    plot_files = save_plots(
        test_split.y,
        y_pred,
        scores,
        plot_dir,
        labels=schema.class_names,
        title=f"- {winner.name}",
        threshold=choice.threshold,
    )
    plots = [catalog.save_file("plots", path, Path(path).name) for path in plot_files]
    Progress(cfg.training.progress)(
        "winner %s (cv %s %.4f); test at the operating point: %s; %s; trained in %.1f s",
        winner.name,
        selection_metric(cfg, policy),
        winner.cv_score,
        test_point.summary(),
        ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
        training_seconds,
    )
    from sklearn.metrics import brier_score_loss

    return Trained(
        # The registered artifact: the Pipeline wrapped so that its own predict() applies the
        # threshold (FixedThresholdClassifier, no refit).
        model=with_threshold(model, choice.threshold),
        policy=policy,
        choice=choice,
        test_point=test_point,
        oof_brier=float(brier_score_loss(data.y, oof, pos_label=1)),
        train=train_split,
        test=test_split,
        candidates=candidates,
        winner=winner,
        metrics=metrics,
        cm=cm,
        plots=plots,
        plot_dir=plot_dir,
        training_seconds=training_seconds,
        search_rows=data.rows,
        refit=refit_note,
        engine=engine.name,
    )
