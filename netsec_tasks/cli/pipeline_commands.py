"""The commands that run the pipeline and move models: ``run``, ``reconcile``, ``rollback``,
``promote``, ``reject`` and ``monitor``."""

from __future__ import annotations

import argparse
from typing import Any

from netsec_tasks.cli.common import config_from_args, print_json


def cmd_run(args: argparse.Namespace) -> int:
    from netsec_tasks.pipeline import run_pipeline

    cfg = config_from_args(args, **{"source.kind": args.source, "source.path": args.source_path})
    result = run_pipeline(cfg, run_id=args.run_id, force_retrain=args.force_retrain, trigger="cli")
    summary = result.summary()
    print_json(summary)
    print()
    print(f"outcome: {result.outcome.outcome} - {result.outcome.reason}")
    if result.train is not None:
        m = result.train.test_metrics
        print(
            f"winner: {result.train.winner}  test F1 (threat class) {m.get('f1', float('nan')):.4f}"
            f"  ROC AUC {m.get('roc_auc', float('nan')):.4f}"
        )
        if result.train.operating_point:
            from netsec_tasks.operating_point import OperatingPoint

            point = OperatingPoint(**result.train.operating_point)
            print(f"operating point (test split): {point.summary()}")
    if result.register is not None:
        print(
            f"registry: {result.register.model_name} production version = "
            f"{result.register.production_version}"
            + (
                f", challenger (in shadow) = {result.register.challenger_version}"
                if result.register.challenger_version
                else ""
            )
        )
    if result.reconciled is not None and result.reconciled.items:
        print(f"reconciled:    {result.reconciled.summary()}")
    if result.evaluation is not None:
        ev = result.evaluation
        print(
            f"hold-out:      {ev.source}: "
            + "  ".join(f"{k} {v:.4f}" for k, v in ev.metrics.items())
            + f"\n               {ev.html_uri}"
        )
    print(f"run artifacts: {result.run.storage_uri}")
    if result.drift.html_uri:
        print(f"drift report:  {result.drift.html_uri}")
    print(f"MLflow UI:     mlflow ui --backend-store-uri {cfg.registry.tracking_uri} --port 5000")
    return 0


def _reported(record: Any, summary: str) -> int:
    """A registry command's answer (exit 0): its record as JSON (the same fields the DAG's task
    returns), then ``summary``, one line for the operator."""
    print_json(record.to_xcom())
    print(summary)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from netsec_tasks.reconcile import reconcile

    record = reconcile(config_from_args(args))
    return _reported(record, f"reconciled: {record.summary()}")


def cmd_rollback(args: argparse.Namespace) -> int:
    from netsec_tasks.registry import rollback

    record = rollback(config_from_args(args), to_version=args.to, reason=args.reason or "")
    return _reported(
        record,
        f"{record.model_name}: Production is v{record.to_version} again (was v{record.from_version}); "
        f"tagged rolled_back: {', '.join('v' + v for v in record.rolled_back)}. Serving follows "
        "at its next registry poll.",
    )


def cmd_promote(args: argparse.Namespace) -> int:
    from netsec_tasks.registry import promote_challenger

    record = promote_challenger(config_from_args(args), reason=args.reason or "", expected=args.version)
    return _reported(
        record,
        f"{record.model_name}: challenger v{record.version} is Production (was "
        f"v{record.production_before}); no challenger now. Serving follows at its next registry poll.",
    )


def cmd_reject(args: argparse.Namespace) -> int:
    from netsec_tasks.registry import retire_challenger

    record = retire_challenger(config_from_args(args), reason=args.reason, expected=args.version)
    return _reported(
        record,
        f"{record.model_name}: challenger v{record.version} rejected ({record.reason}); Production "
        f"stays v{record.production_after}. Serving drops it at its next registry poll.",
    )


def cmd_monitor(args: argparse.Namespace) -> int:
    """The netsec_monitoring DAG's steps in process: verdicts into training data, then the
    monitoring run and its commit, then ``decide_challenger`` (registry.shadow). Only the DAG
    emits the retraining request (an Airflow asset event); this command says whether it would."""
    from netsec_tasks.feedback import feedback_to_training
    from netsec_tasks.monitoring import commit, monitor
    from netsec_tasks.monitoring.step import log_and_verdicts
    from netsec_tasks.records import new_run_id

    cfg = config_from_args(args)
    reader, store = log_and_verdicts(cfg)
    # A dry run changes neither the training source nor the state: it only reports.
    feedback = None if args.dry_run else feedback_to_training(cfg, store=store, log_reader=reader)
    record = monitor(cfg, args.run_id or new_run_id("monitor"), reader=reader, store=store, feedback=feedback)
    if not args.dry_run:
        commit(cfg, record, requested=False)
    live = record.live
    print(f"traffic: {record.rows_read} new rows; {record.drift_reason}")
    print(f"live:    {live.get('decision')}")
    print(f"verdicts into training data: {feedback.reason if feedback else 'not appended (--dry-run)'}")
    print(
        f"{'WOULD REQUEST' if record.trigger else 'no'} retraining: {record.trigger_reason}"
        + (" (the netsec_monitoring DAG emits the request)" if record.trigger else "")
    )
    print(f"report:  {record.html_uri}")
    from netsec_tasks.monitoring.shadow import decide_challenger

    shadow = decide_challenger(cfg, record.run_id, reader=reader, store=store, apply=not args.dry_run)
    if shadow.action != "none":
        print(
            f"challenger v{shadow.challenger_version}: {shadow.action}"
            + (" (--dry-run: not applied)" if args.dry_run and shadow.action in ("promote", "retire") else "")
            + f": {shadow.reason}"
        )
        print(f"         {shadow.html_uri}")
    return 0
