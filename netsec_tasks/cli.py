"""The ``netsec`` command.

    netsec run [--source file|mongo] [--source-path P] [--force-retrain]   all steps, in process
    netsec reconcile                      end stale runs, decide left-over model versions
    netsec rollback [--to VERSION]        Production back to an earlier version (alias + tags)
    netsec promote --challenger [--reason R]   the challenger (registry.shadow) becomes Production
    netsec reject --challenger [--reason R]    the challenger's shadow ends; Production stays
    netsec push-data CSV                  load a CSV into the Mongo collection (idempotent)
    netsec validate FILE                  schema + data-quality checks, report and quarantine
    netsec drift REF CUR                  drift report between two files
    netsec predict CSV [--out OUT] [--invalid refuse|flag]   predictions of the Production model
    netsec evaluate FILE [--model models:/NAME/VERSION] [--out DIR]   metrics on a labelled file
    netsec make-sample [--rows N] [--dataset D] [--missing 0.02]   a deterministic synthetic data set
    netsec fetch-dataset [--out P]        the real UCI data from OpenML (needs internet)
    netsec serve                          the FastAPI serving service (added by the serving package)
    netsec config [--describe]            the effective configuration (file + env), with each key's doc

Global options (``--config``, ``--set KEY=VALUE``, ``-v``) go before or after the command.
Errors in the input or the environment print one line naming the problem and exit non-zero
(2 bad input/config, 3 service unavailable, 143 SIGTERM), with no traceback. Exit 1: ``validate``
failed, or ``drift --fail-on-drift`` found drift. Exit 4 (:data:`NOT_JUDGED`): ``drift`` or
``evaluate`` left out more than ``validation.max_invalid_share`` of a file's rows as breaking the
input contract, so its figures describe the rows left, not the file: the first line says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netsec_tasks.errors import ConfigError, NetsecError, Terminated

# The command-line option behind a config key (for messages that blame the value's origin).
_OPTION_OF = {
    "source.kind": "--source",
    "source.path": "--source-path",
    "source.mongo.uri": "--uri",
    "source.mongo.collection": "--collection",
}

# The exit code of a comparison or evaluation that ran but cannot be judged (see the docstring).
NOT_JUDGED = 4


def _cfg(args: argparse.Namespace, **overrides: Any):
    from netsec_tasks.config import load_config

    dotted = {k: v for k, v in overrides.items() if v is not None}
    origins = {k: f"{_OPTION_OF.get(k, k)} {v}" for k, v in dotted.items()}
    for item in [*(getattr(args, "set", None) or []), *(getattr(args, "set_after", None) or [])]:
        key, sep, value = item.partition("=")
        if not sep:
            raise NetsecError(f"--set takes KEY=VALUE, got {item!r}")
        import yaml

        try:
            dotted[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"--set {item}: the value is not valid YAML ({exc.__class__.__name__})"
            ) from None
        origins[key.strip()] = f"--set {item}"
    return load_config(
        getattr(args, "config_after", None) or args.config, overrides=dotted, override_origins=origins
    )


def _output_file(path: str | Path) -> Path:
    """An output file's path with its folder created; one clear error when it cannot be."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetsecError(
            f"cannot create the folder of the output file {path}: {exc.strerror or exc}"
        ) from None
    if path.is_dir():
        raise NetsecError(f"the output file {path} is a folder; give a file name")
    return path


def _output_dir(path: str | Path) -> Path:
    """An output folder, created; one clear error when it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetsecError(f"cannot create the output folder {path}: {exc.strerror or exc}") from None
    return path


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_run(args: argparse.Namespace) -> int:
    from netsec_tasks.pipeline import run_pipeline

    cfg = _cfg(args, **{"source.kind": args.source, "source.path": args.source_path})
    result = run_pipeline(cfg, run_id=args.run_id, force_retrain=args.force_retrain, trigger="cli")
    summary = result.summary()
    _print(summary)
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


def cmd_reconcile(args: argparse.Namespace) -> int:
    from netsec_tasks.reconcile import reconcile

    record = reconcile(_cfg(args))
    _print(record.to_xcom())
    print(f"reconciled: {record.summary()}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from netsec_tasks.registry import rollback

    record = rollback(_cfg(args), to_version=args.to, reason=args.reason or "")
    _print(record.to_xcom())
    print(
        f"{record.model_name}: Production is v{record.to_version} again (was v{record.from_version}); "
        f"tagged rolled_back: {', '.join('v' + v for v in record.rolled_back)}. Serving follows "
        "at its next registry poll."
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from netsec_tasks.registry import promote_challenger

    record = promote_challenger(_cfg(args), reason=args.reason or "", expected=args.version)
    _print(record.to_xcom())
    print(
        f"{record.model_name}: challenger v{record.version} is Production (was "
        f"v{record.production_before}); no challenger now. Serving follows at its next registry poll."
    )
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    from netsec_tasks.registry import retire_challenger

    record = retire_challenger(_cfg(args), reason=args.reason, expected=args.version)
    _print(record.to_xcom())
    print(
        f"{record.model_name}: challenger v{record.version} rejected ({record.reason}); Production "
        f"stays v{record.production_after}. Serving drops it at its next registry poll."
    )
    return 0


def cmd_push_data(args: argparse.Namespace) -> int:
    from netsec_tasks.sources.mongo import push_data

    cfg = _cfg(args, **{"source.mongo.uri": args.uri, "source.mongo.collection": args.collection})
    result = push_data(args.csv, cfg, batch_size=args.batch_size, load_id=args.load_id)
    data = result.model_dump() if hasattr(result, "model_dump") else vars(result)
    _print(data)
    return 0


def _reader_notes(notes: Sequence[str]) -> None:
    """What the CSV reader did that the user should know (a dropped trailing delimiter...)."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.table_io import load_table
    from netsec_tasks.validate import validate_frame, write_report

    cfg = _cfg(args)
    schema = load_schema(args.schema or cfg.schema_path)
    table = load_table(args.file, **schema.read_options(labelled=True))
    _reader_notes(table.notes)
    result = validate_frame(table.frame, schema, cfg.validation, source=str(args.file))
    out = _output_dir(args.out or Path(cfg.workdir) / "validate")
    report = write_report(result, out, where=table.where)
    print(
        f"{'PASSED' if result.passed else 'FAILED'}: {len(result.clean)} valid rows, "
        f"{result.rows_invalid} quarantined; report: {report}"
    )
    for check in result.checks:
        if check.get("status") != "pass":
            print(f"  [{check.get('status')}] {check.get('name')}: {check.get('details', '')}")
    return 0 if result.passed else 1


def cmd_drift(args: argparse.Namespace) -> int:
    from netsec_tasks.drift import drift_between_files

    cfg = _cfg(args)
    out = _output_dir(args.out or Path(cfg.workdir) / "drift")
    record = drift_between_files(args.reference, args.current, cfg, out)
    figures = f"{record.drift_share:.0%} of {record.columns_tested} columns drifted" + (
        f" ({', '.join(record.drifted_columns)})" if record.drifted_columns else ""
    )
    if not record.judged:
        print(f"drift NOT JUDGED: {record.not_judged}")
        print(f"(on the {record.current_rows} current rows left: {figures})")
    else:
        print(f"drift {'DETECTED' if record.drift_detected else 'not detected'}: {figures}")
    print(f"report: {record.report_uri}\nhtml:   {record.html_uri}")
    if not record.judged:
        return NOT_JUDGED
    return 1 if record.drift_detected and args.fail_on_drift else 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Score a file with the Production model, through the data set's input contract: the same
    rules and output columns as serving's /predict/csv (netsec_tasks.contract)."""
    import numpy as np

    from netsec_tasks.contract import Contract, scored_frame
    from netsec_tasks.operating_point import decide, model_threshold, threat_probability
    from netsec_tasks.registry import load_production_model
    from netsec_tasks.sinks import write_csv
    from netsec_tasks.table_io import load_table

    cfg = _cfg(args)
    contract = Contract.from_config(cfg)
    source = str(args.csv)
    options = contract.schema.read_options(echo=True)  # header-less files: the file_columns
    out_path = _output_file(args.out) if args.out else None
    table = load_table(args.csv, **options)
    _reader_notes(table.notes)
    frame = table.frame
    contract.check_columns(frame, source=source)
    check = contract.check_rows(frame)
    if check.n_invalid and args.invalid == "refuse":
        raise check.refusal(table.where, source=source)
    model, version = load_production_model(cfg)
    threshold = model_threshold(model)
    if not threshold.recorded:
        print(
            f"warning: {cfg.registry.model_name} v{version} has no decision threshold (registered "
            "before operating points): decided at the 0.5 rule",
            file=sys.stderr,
        )
    rows = np.flatnonzero(check.valid)
    if len(rows):
        x = contract.model_input(check, rows)[contract.features]
        proba = threat_probability(model, x)
    else:
        proba = np.zeros(0)
    # The model's operating point, by the one rule every door uses (serving too).
    is_threat = decide(proba, threshold)
    schema = contract.schema
    labels = [schema.positive_label if t else schema.negative_label for t in is_threat.tolist()]
    out = scored_frame(
        frame, check, is_threat=is_threat, probability=proba, labels=labels, model_version=str(version)
    )
    imputed = int(np.count_nonzero(check.null_cells[check.valid]))
    summary = (
        f"{len(rows)} rows scored, {int(is_threat.sum())} threats, {imputed} with imputed "
        f"cells, {check.n_invalid} invalid (status=invalid, not scored); "
        f"model {cfg.registry.model_name} v{version} at threshold {threshold.describe()}"
    )
    if args.explain:
        summary += "; " + _add_reasons(
            out, model, contract.features, x if len(rows) else None, rows, args.explain
        )
    if out_path is not None:
        from netsec_tasks.storage import atomic_path

        # Nothing half-written: a temp file beside the target, renamed when complete.
        with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
            write_csv(out, fh)
        print(f"{summary}; written to {out_path}")
    else:
        write_csv(out, sys.stdout.buffer)
        print(summary, file=sys.stderr)
    return 0


def _non_negative_int(text: str) -> int:
    """A whole number >= 0 (argparse turns the ValueError into "invalid non-negative int
    value", exit 2)."""
    k = int(text)
    if k < 0:
        raise ValueError(text)
    return k


_non_negative_int.__name__ = "non-negative int"


def _add_reasons(out, model, features: list[str], x, rows, k: int) -> str:
    """Put each scored row's ``k`` strongest reasons in ``out``'s ``reasons`` column (text, as
    serving's CSV answer; empty for invalid rows); the summary's words about them. The
    explainer's additivity is checked first on the scored rows (netsec_tasks.explain)."""
    import numpy as np

    from netsec_tasks.dataset_schema import REASONS_COLUMN
    from netsec_tasks.explain import reasons_text, verified_explainer

    cells = np.full(len(out), "", dtype=object)
    if x is None:
        out[REASONS_COLUMN] = cells
        return "no row to explain"
    explainer, status = verified_explainer(
        model, features, x, threat_column=list(model.classes_).index(1), rows_source="the scored rows"
    )
    if explainer is None:
        out[REASONS_COLUMN] = cells
        return f"no reasons for this version ({status})"
    cells[rows] = [reasons_text(r) for r in explainer.reasons(x, k)]
    out[REASONS_COLUMN] = cells
    return f"reasons: {k} per row, contributions in {explainer.unit} (base value {explainer.base_value:.4g})"


def cmd_monitor(args: argparse.Namespace) -> int:
    """The netsec_monitoring DAG's steps in process: verdicts into training data, then the
    monitoring run and its commit, then ``decide_challenger`` (registry.shadow). Only the DAG
    emits the retraining request (an Airflow asset event); this command says whether it would."""
    from netsec_tasks.feedback import feedback_to_training
    from netsec_tasks.monitoring import commit, monitor
    from netsec_tasks.monitoring.step import log_and_verdicts
    from netsec_tasks.records import new_run_id

    cfg = _cfg(args)
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


def cmd_make_sample(args: argparse.Namespace) -> int:
    from netsec_tasks.storage import atomic_path

    dataset = args.dataset or _cfg(args).dataset
    if dataset == "intrusion_demo":
        from netsec_tasks.intrusion_sample import make_intrusion_sample

        if args.shift:
            raise NetsecError(
                "--shift applies to the phishing sample; for intrusion_demo use "
                "--holdout (the harder test file)"
            )
        if args.missing:
            raise NetsecError("--missing applies to the phishing sample")
        frame = make_intrusion_sample(args.rows, seed=args.seed, holdout=args.holdout)
        header = args.header  # its schema lists file_columns: header-less like the real files
        float_format = None
        out = args.out or "data/intrusion_demo_sample.csv"
    elif dataset == "phishing":
        from netsec_tasks.sample import make_sample

        if args.holdout:
            raise NetsecError("--holdout applies to the intrusion_demo sample")
        try:
            frame = make_sample(args.rows, seed=args.seed, shift=args.shift, missing=args.missing)
        except ValueError as exc:
            raise ConfigError(f"make-sample: {exc}") from None
        header = True
        out = args.out or "data/phishing_sample.csv"
        # A column with gaps is float (NaN) but holds whole numbers: write "1", not "1.0".
        float_format = "%g"
    else:
        raise NetsecError(
            f"no synthetic sample for data set {dataset!r}; samples exist for phishing and intrusion_demo"
        )
    with atomic_path(_output_file(out)) as tmp:
        frame.to_csv(tmp, index=False, header=header, float_format=float_format)
    print(f"{len(frame)} rows written to {out}" + ("" if header else " (no header row)"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a labelled file with the Production model (or --model) and write the reports."""
    from netsec_tasks.file_evaluation import evaluate_file

    cfg = _cfg(args)
    out = _output_dir(args.out) if args.out else None
    rec = evaluate_file(
        cfg, args.file, model_uri=args.model, out_dir=out, invalid=args.invalid, track=not args.no_mlflow
    )
    m = rec.metrics
    for warning in rec.warnings:  # before any figure
        print(f"WARNING: {warning}")
    print(
        f"{rec.model_name} v{rec.model_version} on {rec.source}: {rec.rows_scored} rows scored"
        + (f", {rec.rows_excluded} left out" if rec.rows_excluded else "")
        + (f", {rec.rows_trained_on} of them rows it was trained on" if rec.rows_trained_on else "")
    )
    unseen = " (rows it never saw)" if rec.rows_trained_on else ""
    print(f"threat class{unseen}: " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))
    if rec.rows_trained_on:
        print("all rows:     " + "  ".join(f"{k} {v:.4f}" for k, v in rec.metrics_all_rows.items()))
    (tn, fp), (fn, tp) = rec.confusion_matrix
    print(f"confusion matrix (truth x predicted, benign/threat): TN {tn}  FP {fp}  FN {fn}  TP {tp}")
    if rec.operating_point:
        from netsec_tasks.operating_point import OperatingPoint, pct

        op = rec.operating_point
        fields = {k: v for k, v in op.items() if k in OperatingPoint.__dataclass_fields__}
        print(
            f"operating point: {OperatingPoint(**fields).summary()}"
            + (f"; OVER the budget of {pct(op['budget'])}" if op.get("over_budget") else "")
        )
        print("other budgets (on these rows): budget  threshold  FPR  recall  precision at the expected rate")
        for row in rec.budget_table:
            prec = pct(row["precision_at_rate"]) if row["precision_at_rate"] is not None else "n/a"
            print(
                f"  {pct(row['budget']):>6}  {row['threshold']:.4f}  {pct(row['fpr']):>6}  "
                f"{row['recall']:.3f}  {prec}"
            )
    if rec.per_label:
        print("per label (recall = share put in the right class):")
        for label, v in sorted(rec.per_label.items(), key=lambda kv: kv[1]["recall"]):
            new = "  (not in the training data)" if v.get("in_training") is False else ""
            print(
                f"  {label:<24} {'threat' if v['threat'] else 'benign':<7} {v['rows']:>7} rows  "
                f"recall {v['recall']:.3f}{new}"
            )
    _print_reasons(rec.reasons)
    print(f"report: {rec.report_uri}\nhtml:   {rec.html_uri}")
    if rec.mlflow_run_id:
        print(f"MLflow run: {rec.mlflow_run_id} (linked to {rec.model_name} v{rec.model_version})")
    return 0 if rec.judged else NOT_JUDGED


def _print_reasons(reasons: dict) -> None:
    """``netsec evaluate``'s reasons lines: the columns that matter most overall, and those
    most often among the false positives' 3 strongest reasons towards threat."""
    if not reasons:
        return
    if not reasons.get("available"):
        print(f"reasons: {reasons.get('why')}")
        return
    print(
        f"columns that matter most (mean |contribution|, {reasons['unit']}; {reasons['rows']}): "
        + ", ".join(f"{r['column']} {r['overall']:.3g}" for r in reasons["importance"])
    )
    fp = reasons["false_positives"]
    if not fp["top_reasons"]:
        print(f"false positives at the operating point ({fp['operating_point']}): none to explain")
        return
    print(
        f"false positives at the operating point ({fp['operating_point']}; {fp['explained']} of "
        f"{fp['rows']} explained), columns most often among their 3 strongest reasons: "
        + ", ".join(f"{r['column']} {r['rows']}/{fp['explained']}" for r in fp["top_reasons"])
    )


def cmd_fetch_dataset(args: argparse.Namespace) -> int:
    from netsec_tasks.datasets import fetch_dataset

    path = fetch_dataset(_output_file(args.out), data_id=args.data_id)
    print(f"written to {path}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    import yaml

    data = json.loads(cfg.model_dump_json())
    if args.describe:
        print("\n".join(_described(type(cfg), data)))
    else:
        print(yaml.safe_dump(data, sort_keys=False))
    return 0


def _described(model: Any, data: dict, indent: str = "") -> list[str]:
    """``data`` (the values of config model ``model``) as YAML lines, each key preceded by its
    description as comment lines: the field's ``description``, or a section's docstring. The
    same YAML as ``netsec config`` prints, only annotated."""
    import inspect
    import textwrap

    import yaml
    from pydantic import BaseModel

    lines: list[str] = []
    for name, value in data.items():
        field = model.model_fields[name]
        sub = field.annotation
        section = isinstance(sub, type) and issubclass(sub, BaseModel)
        doc = field.description or (inspect.cleandoc(sub.__doc__ or "") if section else "")
        if section and lines:
            lines.append("")
        lines += [f"{indent}# {t}" for t in textwrap.wrap(" ".join(doc.split()), 98 - len(indent))]
        if section:
            lines.append(f"{indent}{name}:")
            lines += _described(sub, value, indent + "  ")
        elif isinstance(value, list):  # flow style, as in config/pipeline.yaml
            lines.append(
                f"{indent}{name}: " + yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
            )
        else:
            lines.append(
                indent + yaml.safe_dump({name: value}, default_flow_style=False, width=1 << 20).rstrip()
            )
    return lines


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netsec", description="Network-threat detection MLOps pipeline.")
    _global_options(p, after=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, after=True)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    r = add("run", help="run all steps in process (the quick path without Airflow)")
    r.add_argument("--source", choices=["file", "mongo"])
    r.add_argument("--source-path", help="CSV/Parquet path or glob for the file source")
    r.add_argument("--force-retrain", action="store_true")
    r.add_argument("--run-id")
    r.set_defaults(func=cmd_run)

    rc = add(
        "reconcile",
        help="end stale MLflow runs and decide model versions that earlier "
        "(failed or killed) runs left without a decision",
    )
    rc.set_defaults(func=cmd_reconcile)

    rb = add(
        "rollback",
        help="move Production (the registry alias) back to an earlier version "
        "and mark the newer ones rolled_back, so nothing promotes them again",
    )
    rb.add_argument("--to", help="version to restore (default: the one the current Production replaced)")
    rb.add_argument("--reason", help="kept on the rolled-back versions (netsec.rollback_reason)")
    rb.set_defaults(func=cmd_rollback)

    pm = add(
        "promote",
        help="make the challenger (registry.shadow: the version scored in shadow) Production now",
    )
    pm.add_argument(
        "--challenger", action="store_true", required=True, help="promote the challenger (the only form)"
    )
    pm.add_argument("--version", help="refuse unless this version is the challenger")
    pm.add_argument("--reason", help="kept on the version (netsec.shadow_reason)")
    pm.set_defaults(func=cmd_promote)

    rj = add("reject", help="end the challenger's shadow without promoting it; Production stays")
    rj.add_argument(
        "--challenger", action="store_true", required=True, help="reject the challenger (the only form)"
    )
    rj.add_argument("--version", help="refuse unless this version is the challenger")
    rj.add_argument(
        "--reason",
        default="rejected by an operator (netsec reject --challenger)",
        help="kept on the version (netsec.shadow_reason)",
    )
    rj.set_defaults(func=cmd_reject)

    pd_ = add("push-data", help="load a CSV into the Mongo collection, idempotently")
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
    pd_.set_defaults(func=cmd_push_data)

    v = add("validate", help="validate a CSV/Parquet file against the schema")
    v.add_argument("file")
    v.add_argument("--schema", help="schema YAML (default: the configured data set's)")
    v.add_argument("--out", help="directory for the report and invalid rows")
    v.set_defaults(func=cmd_validate)

    d = add("drift", help="drift report between a reference and a current file")
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
    d.set_defaults(func=cmd_drift)

    pr = add("predict", help="predict a CSV with the Production model")
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
        type=_non_negative_int,
        default=0,
        metavar="K",
        help="add a 'reasons' column: each scored row's K strongest reasons, "
        "'column=value (+contribution)' (in the model's unit, log-odds or probability: see "
        "the summary line)",
    )
    pr.set_defaults(func=cmd_predict)

    mo = add(
        "monitor",
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
    mo.set_defaults(func=cmd_monitor)

    ev = add(
        "evaluate",
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
    ev.set_defaults(func=cmd_evaluate)

    ms = add("make-sample", help="write a deterministic synthetic data set")
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
    ms.set_defaults(func=cmd_make_sample)

    fd = add("fetch-dataset", help="download the UCI phishing data from OpenML")
    fd.add_argument("--out", default="data/phishing_websites.csv")
    fd.add_argument("--data-id", type=int, default=4534)
    fd.set_defaults(func=cmd_fetch_dataset)

    c = add("config", help="print the effective configuration")
    c.add_argument(
        "--describe", action="store_true", help="precede each key with its description (YAML comments)"
    )
    c.set_defaults(func=cmd_config)
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


if __name__ == "__main__":
    sys.exit(main())
