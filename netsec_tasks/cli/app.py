"""The ``netsec`` command line: its parser (global options, every subcommand, the plugins other
packages add) and :func:`main`, which maps errors to one line and an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from netsec_tasks.cli.config_command import cmd_config
from netsec_tasks.cli.data_commands import (
    cmd_drift,
    cmd_fetch_dataset,
    cmd_make_sample,
    cmd_push_data,
    cmd_validate,
)
from netsec_tasks.cli.model_commands import cmd_evaluate, cmd_predict
from netsec_tasks.cli.pipeline_commands import (
    cmd_monitor,
    cmd_promote,
    cmd_reconcile,
    cmd_reject,
    cmd_rollback,
    cmd_run,
)
from netsec_tasks.errors import NetsecError, Terminated


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (argparse turns the ValueError into "invalid non-negative int
    value", exit 2)."""
    k = int(text)
    if k < 0:
        raise ValueError(text)
    return k


non_negative_int.__name__ = "non-negative int"


def _global_options(p: argparse.ArgumentParser, *, after: bool) -> None:
    """--config, --set and -v: on the main parser, and again on every sub-command so they may
    follow it (``netsec run --set training.n_iter=4``). After the command they go to their own
    destinations: a sub-parser's values would otherwise replace the main parser's."""
    suffix = "_after" if after else ""
    default = argparse.SUPPRESS if after else None
    p.add_argument(
        "--config",
        dest="config" + suffix,
        default=default,
        help="pipeline YAML (default: $NETSEC_CONFIG or config/pipeline.yaml)",
    )
    p.add_argument(
        "--set",
        dest="set" + suffix,
        action="append",
        metavar="KEY=VALUE",
        default=default,
        help="override a config key, e.g. --set training.n_iter=4 (repeatable)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        dest="verbose" + suffix,
        action="store_true",
        default=argparse.SUPPRESS if after else False,
        help="debug logging",
    )


def _challenger_options(p: argparse.ArgumentParser, verb: str) -> None:
    """``--challenger`` (required: the only form of ``promote`` and ``reject``) and ``--version``."""
    p.add_argument(
        "--challenger", action="store_true", required=True, help=f"{verb} the challenger (the only form)"
    )
    p.add_argument("--version", help="refuse unless this version is the challenger")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netsec", description="Network-threat detection MLOps pipeline.")
    _global_options(p, after=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, after=True)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    def command(name: str, func: Callable[[argparse.Namespace], int], **kw: Any) -> argparse.ArgumentParser:
        """A subcommand that runs ``func(args)`` (its exit code)."""
        parser = add(name, **kw)
        parser.set_defaults(func=func)
        return parser

    r = command("run", cmd_run, help="run all steps in process (the quick path without Airflow)")
    r.add_argument("--source", choices=["file", "mongo"])
    r.add_argument("--source-path", help="CSV/Parquet path or glob for the file source")
    r.add_argument("--force-retrain", action="store_true")
    r.add_argument("--run-id")

    command(
        "reconcile",
        cmd_reconcile,
        help="end stale MLflow runs and decide model versions that earlier "
        "(failed or killed) runs left without a decision",
    )

    rb = command(
        "rollback",
        cmd_rollback,
        help="move Production (the registry alias) back to an earlier version "
        "and mark the newer ones rolled_back, so nothing promotes them again",
    )
    rb.add_argument("--to", help="version to restore (default: the one the current Production replaced)")
    rb.add_argument("--reason", help="kept on the rolled-back versions (netsec.rollback_reason)")

    pm = command(
        "promote",
        cmd_promote,
        help="make the challenger (registry.shadow: the version scored in shadow) Production now",
    )
    _challenger_options(pm, "promote")
    pm.add_argument("--reason", help="kept on the version (netsec.shadow_reason)")

    rj = command(
        "reject", cmd_reject, help="end the challenger's shadow without promoting it; Production stays"
    )
    _challenger_options(rj, "reject")
    rj.add_argument(
        "--reason",
        default="rejected by an operator (netsec reject --challenger)",
        help="kept on the version (netsec.shadow_reason)",
    )

    pd_ = command("push-data", cmd_push_data, help="load a CSV into the Mongo collection, idempotently")
    pd_.add_argument("csv")
    pd_.add_argument("--uri", help="MongoDB URI (default: source.mongo.uri)")
    pd_.add_argument("--collection")
    pd_.add_argument("--batch-size", type=int)
    pd_.add_argument(
        "--load-id",
        help="idempotency key of this load (default: the file's content "
        "hash); reuse it to push a file that grew, inserting only "
        "its new rows",
    )

    v = command("validate", cmd_validate, help="validate a CSV/Parquet file against the schema")
    v.add_argument("file")
    v.add_argument("--schema", help="schema YAML (default: the configured data set's)")
    v.add_argument("--out", help="directory for the report and invalid rows")

    d = command("drift", cmd_drift, help="drift report between a reference and a current file")
    d.add_argument("reference")
    d.add_argument(
        "current",
        help="a CSV/Parquet file or glob, or serving's prediction log "
        "(its directory or predictions-*.jsonl files)",
    )
    d.add_argument("--out")
    d.add_argument("--fail-on-drift", action="store_true", help="exit 1 when drift is detected")
    d.epilog = (
        "Exit 4 when either file leaves out more than validation.max_invalid_share of its rows as "
        "breaking the input contract: the comparison is then not judged (first line), whatever "
        "the rows left show."
    )

    pr = command("predict", cmd_predict, help="predict a CSV with the Production model")
    pr.add_argument("csv")
    pr.add_argument("--out", help="output CSV (default: stdout)")
    pr.add_argument(
        "--invalid",
        choices=["refuse", "flag"],
        default="refuse",
        help="refuse (default): a row that breaks the data set's contract stops the "
        "run (exit 2) naming its line, column, value and what is allowed; flag: "
        "score the valid rows, write invalid ones unscored with status=invalid "
        "and the reason",
    )
    pr.add_argument(
        "--explain",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="add a 'reasons' column: each scored row's K strongest reasons, "
        "'column=value (+contribution)' (in the model's unit, log-odds or probability: see "
        "the summary line)",
    )

    mo = command(
        "monitor",
        cmd_monitor,
        help="served traffic and verdicts: drift, live F1, report "
        "(the netsec_monitoring DAG's steps, in process)",
    )
    mo.add_argument("--run-id")
    mo.add_argument(
        "--dry-run",
        action="store_true",
        help="report only: append no verdict rows to the training source, do not move the "
        "prediction log's watermark (the next run reads the same rows), and neither promote nor "
        "retire a challenger",
    )

    ev = command(
        "evaluate",
        cmd_evaluate,
        help="score a labelled file with the Production model: metrics, "
        "confusion matrix, per-label recall, plots, YAML + HTML report",
    )
    ev.add_argument("file", help="CSV/Parquet file with the schema's features and target column")
    ev.add_argument(
        "--model",
        help="models:/<name>/<version> or models:/<name>@<alias> "
        "(default: the configured data set's Production model)",
    )
    ev.add_argument(
        "--out", help="folder for the reports (default: <workdir>/evaluate/<model>-v<version>-<file>)"
    )
    ev.add_argument(
        "--invalid",
        choices=["refuse", "flag"],
        default="refuse",
        help="refuse (default): a row that breaks the contract or has no label stops "
        "the run (exit 2) naming it; flag: leave such rows out and count them",
    )
    ev.add_argument(
        "--no-mlflow",
        action="store_true",
        help="do not log the evaluation to MLflow (reports are still written)",
    )

    ms = command("make-sample", cmd_make_sample, help="write a deterministic synthetic data set")
    ms.add_argument("--dataset", help="phishing or intrusion_demo (default: the configured one)")
    ms.add_argument("--rows", type=int, default=5000)
    ms.add_argument("--seed", type=int, default=0)
    ms.add_argument("--shift", type=float, default=0.0, help="0..1, a drifted copy for demos (phishing)")
    ms.add_argument(
        "--missing",
        type=float,
        default=0.0,
        help="phishing: share of feature cells left empty, 0..1 (e.g. 0.02); the other "
        "values are those of the sample without gaps",
    )
    ms.add_argument(
        "--holdout",
        action="store_true",
        help="intrusion_demo: the harder test file (other mix, unseen attack types)",
    )
    ms.add_argument(
        "--header",
        action="store_true",
        help="intrusion_demo: write a header row (its files have none by default)",
    )
    ms.add_argument("--out", help="output CSV (default: data/<dataset>_sample.csv)")

    fd = command("fetch-dataset", cmd_fetch_dataset, help="download the UCI phishing data from OpenML")
    fd.add_argument("--out", default="data/phishing_websites.csv")
    fd.add_argument("--data-id", type=int, default=4534)

    c = command("config", cmd_config, help="print the effective configuration")
    c.add_argument(
        "--describe", action="store_true", help="precede each key with its description (YAML comments)"
    )
    plugin_commands(add)
    return p


def plugin_commands(add: Any) -> list[str]:
    """Add the subcommands other installed packages offer (entry points of group
    ``netsec.commands``, each a function taking ``add(name, **kw) -> argparse parser``); returns
    their names. ``netsec serve`` comes from the serving package this way (``pyproject.toml``),
    so this library never imports the service. A plugin that cannot be imported (its extra is
    not installed) is left out with one line on stderr; the other commands still work."""
    from importlib.metadata import entry_points

    names = []
    for ep in sorted(entry_points(group="netsec.commands"), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:
            print(f"netsec: command {ep.name!r} unavailable ({ep.value}: {exc})", file=sys.stderr)
            continue
        register(add)
        names.append(ep.name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = args.verbose or getattr(args, "verbose_after", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("alembic", "urllib3", "botocore", "matplotlib", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # A LocalCluster's start and close are 30 INFO lines of distributed in this process (the
        # scheduler and nannies live here), the last ones after the run's summary. distributed
        # sets its loggers' levels from dask's config when imported (later, by the engine), so
        # through dask's config; its warnings (a worker killed above its memory limit) still
        # show, netsec.engine logs the progress, and a DASK_LOGGING__DISTRIBUTED set wins.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    # Each retry of an unreachable service is a warning from urllib3; our one error line says
    # what failed and after how many attempts.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    from netsec_tasks.processes import sigterm_raises

    try:
        with sigterm_raises():
            return int(args.func(args) or 0)
    except NetsecError as exc:
        print(f"netsec {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print(f"netsec {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return Terminated.exit_code
    except KeyboardInterrupt:
        return 130
