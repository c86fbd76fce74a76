"""The commands that score a file with a model: ``predict`` (with ``--explain``'s reasons) and
``evaluate`` (metrics, operating point, per-label recall, reasons)."""

from __future__ import annotations

import argparse
import sys

from netsec_tasks.cli.common import NOT_JUDGED, config_from_args, output_dir, output_file, reader_notes


def cmd_predict(args: argparse.Namespace) -> int:
    """Score a file with the Production model, through the data set's input contract: the same
    rules and output columns as serving's /predict/csv (netsec_tasks.contract)."""
    import numpy as np

    from netsec_tasks.contract import Contract, scored_frame
    from netsec_tasks.operating_point import decide, model_threshold, threat_probability
    from netsec_tasks.registry import load_production_model
    from netsec_tasks.sinks import write_csv
    from netsec_tasks.table_io import load_table

    cfg = config_from_args(args)
    contract = Contract.from_config(cfg)
    source = str(args.csv)
    options = contract.schema.read_options(echo=True)  # header-less files: the file_columns
    out_path = output_file(args.out) if args.out else None
    table = load_table(args.csv, **options)
    reader_notes(table.notes)
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a labelled file with the Production model (or --model) and write the reports."""
    from netsec_tasks.file_evaluation import evaluate_file

    cfg = config_from_args(args)
    out = output_dir(args.out) if args.out else None
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
