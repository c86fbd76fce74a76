"""Evaluating a labelled file: read it through the input contract, score it with the model,
take out the rows it was trained on, and write the YAML and HTML reports (and log to MLflow).
:func:`evaluate_file` is ``netsec evaluate``."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from netsec_tasks.config import PipelineConfig
from netsec_tasks.contract import Contract, show
from netsec_tasks.errors import ConfigError, DataError
from netsec_tasks.file_evaluation.figures import evaluation_plots, ordered_metrics, per_label_recall
from netsec_tasks.file_evaluation.mlflow_log import track_evaluation
from netsec_tasks.file_evaluation.model import resolve_model, trained_on_mask, training_labels
from netsec_tasks.file_evaluation.report import render_html
from netsec_tasks.records import EvaluationRecord, sha256_file
from netsec_tasks.sinks import (
    file_name,
    yaml_text,
)
from netsec_tasks.storage import atomic_write
from netsec_tasks.tracking import TAG_PREFIX

log = logging.getLogger("netsec.evaluate")


def evaluate_file(
    cfg: PipelineConfig,
    path: str | os.PathLike,
    *,
    model_uri: str | None = None,
    out_dir: str | os.PathLike | None = None,
    invalid: str = "refuse",
    track: bool = True,
) -> EvaluationRecord:
    """Score the labelled file ``path`` and write the reports (see the module docstring).

    ``out_dir``: where ``evaluation_report.yaml``, ``evaluation_report.html`` and ``plots/`` go
    (default ``<workdir>/evaluate/<model>-v<version>-<file name>``, created). ``invalid``:
    ``refuse`` (a row breaking the contract, or without a label, stops with exit 2 naming it)
    or ``flag`` (such rows are left out and counted). ``track``: log to MLflow.
    Raises DataError/ContractError (the file), ConfigError (a model of another data set),
    RegistryError (no model), SourceUnavailable (registry unreachable).
    """
    from netsec_tasks.explain.reports import evaluation_reasons
    from netsec_tasks.operating_point import (
        TABLE_BUDGETS,
        budget_table,
        decide,
        decision_policy,
        model_threshold,
        threat_probability,
    )
    from netsec_tasks.registry import differences, load_version
    from netsec_tasks.table_io import load_table
    from netsec_tasks.threat_metrics import evaluate_predictions

    contract = Contract.from_config(cfg)
    schema = contract.schema
    source = str(path)
    target = schema.target.column
    table = load_table(path, **schema.read_options(labelled=True, echo=True))
    for note in table.notes:
        log.warning("%s: %s", source, note)
    frame = table.frame
    if target not in frame.columns:
        raise DataError(
            f"no label column '{target}': evaluate needs a labelled file (the "
            "schema's target column); to score unlabelled rows use netsec predict",
            source=source,
            columns=[target],
        )
    contract.check_columns(frame, source=source)
    where = table.where
    labels = contract.check_labels(frame[target])
    if labels.refused.any():
        raise labels.error(source=source, where=where)  # unlisted labels: always an error
    check = contract.check_rows(frame)
    excluded: dict[str, int] = {}
    if invalid == "refuse":
        if check.n_invalid:
            raise check.refusal(where, source=source)
        if labels.null.any():
            rows = np.flatnonzero(labels.null)
            raise DataError(
                f"{len(rows)} rows have no label in column '{target}' (first: "
                f"{', '.join(where(int(r)) for r in rows[:5])}); pass --invalid flag "
                "to leave them out",
                source=source,
                columns=[target],
                rows=[int(r) for r in rows[:20]],
            )
    else:
        if check.n_invalid:
            excluded["break the input contract"] = check.n_invalid
        if labels.null.any():
            excluded["no label"] = int((labels.null & check.valid).sum())
    rows = np.flatnonzero(check.valid & labels.usable)
    if not len(rows):
        raise DataError(
            "no row left to evaluate (every row breaks the contract or has no label)", source=source
        )

    mv = resolve_model(cfg, model_uri)
    name, version, tags = mv.name, str(mv.version), dict(mv.tags or {})
    diff = differences(tags, schema)
    if diff:
        raise ConfigError(
            f"models:/{name}/{version} (data set '{tags.get(TAG_PREFIX + 'dataset', '?')}') is not a model "
            f"of the '{schema.name}' data set: "
            + "; ".join(diff)
            + ". Set NETSEC_DATASET to the model's data set, or evaluate a model of this one"
        )
    model = load_version(cfg, name, version)
    x = contract.model_input(check, rows)[contract.features]
    threshold = model_threshold(model)
    proba_all = threat_probability(model, x)
    # At the model's own operating point, by the rule every door uses (serving, netsec predict).
    pred_all = decide(proba_all, threshold).astype(int)
    y_all = labels.is_threat[rows].astype(int)
    metrics_all = ordered_metrics(evaluate_predictions(y_all, pred_all, proba_all)["metrics"])
    seen_mask = trained_on_mask(cfg, name, version, tags, x, labels.typed.iloc[rows], schema)
    warnings = []
    dropped = len(frame) - len(rows)
    if dropped and dropped / len(frame) > cfg.validation.max_invalid_share:
        warnings.append(
            f"not judged: {dropped:,} of {len(frame):,} rows ({dropped / len(frame):.0%}) were left out "
            f"({', '.join(f'{v:,} {k}' for k, v in excluded.items())}), more than "
            f"validation.max_invalid_share={cfg.validation.max_invalid_share:.0%}: the figures describe "
            "the rows left, not the file"
        )
    unseen = np.ones(len(rows), bool) if seen_mask is None else ~seen_mask
    n_seen = None if seen_mask is None else int(seen_mask.sum())
    if n_seen is None:
        warnings.append(
            f"models:/{name}/{version} records no training-row hashes (netsec.train_hashes_uri): "
            "whether it was trained on some of these rows is unknown"
        )
    elif n_seen and unseen.any():
        warnings.append(
            f"{n_seen:,} of {len(rows):,} scored rows ({n_seen / len(rows):.0%}) are rows "
            f"models:/{name}/{version} was trained on: the headline figures are on the "
            f"{int(unseen.sum()):,} rows it never saw"
        )
    elif n_seen:
        unseen = np.ones(len(rows), bool)
        warnings.append(
            f"all {len(rows):,} scored rows are rows models:/{name}/{version} was trained on: the "
            "figures say how it fits its own training data, not how it does on new rows"
        )
    proba, pred, y = proba_all[unseen], pred_all[unseen], y_all[unseen]
    result = evaluate_predictions(y, pred, proba)
    # At the operating point, for the deployment's threat rate (not the file's), and the
    # threshold other budgets would need on these rows.
    policy = decision_policy(cfg, schema)
    point = policy.point(y, proba, threshold, decisions=pred)
    budgets = sorted({*TABLE_BUDGETS, policy.budget})
    budgets_table = budget_table(y, proba, tuple(budgets), expected_threat_rate=policy.expected_threat_rate)
    metrics = ordered_metrics(result["metrics"])
    if n_seen and unseen.sum() < len(rows):
        warnings[-1] += (
            "; on all rows "
            + ", ".join(
                f"{k} {metrics_all[k]:.3f}" for k in ("f1", "precision", "recall") if k in metrics_all
            )
            + " against "
            + ", ".join(f"{k} {metrics[k]:.3f}" for k in ("f1", "precision", "recall") if k in metrics)
            + " on the unseen ones"
        )
    for w in warnings:
        log.warning("evaluate %s: %s", source, w)
    raw_labels = labels.typed.iloc[rows].map(show).to_numpy(dtype=object)[unseen]
    multi = len(set(raw_labels)) > 2 or schema.target.vocabulary is None or len(schema.target.vocabulary) > 2
    trained_on = training_labels(cfg, tags, target) if multi else None
    per_label = per_label_recall(raw_labels, y, pred, trained_on) if multi else None

    stem = file_name(Path(source).name, unique=True)
    out = (
        Path(out_dir)
        if out_dir
        else Path(cfg.workdir) / "evaluate" / f"{file_name(name, unique=True)}-v{file_name(version)}-{stem}"
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder: {exc.strerror}", source=str(out)) from None
    plots = evaluation_plots(y, pred, proba, per_label, out / "plots", schema, threshold.value)
    sha = sha256_file(path) if Path(path).is_file() else None
    doc = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "file": source,
        "file_sha256": sha,
        "data_set": schema.name,
        "schema_version": schema.version,
        "model": {
            "name": name,
            "version": version,
            "uri": f"models:/{name}/{version}",
            "data_set": tags.get(TAG_PREFIX + "dataset"),
            "schema_version": tags.get(TAG_PREFIX + "schema_version") or None,
            "test_split_score": _float(tags.get(TAG_PREFIX + "test_score")),
            "metric": tags.get(TAG_PREFIX + "metric"),
        },
        "label_mapping": schema.target.mapping(),
        "warnings": warnings,
        "rows": {
            "read": len(frame),
            "scored": int(len(rows)),
            "excluded": int(len(frame) - len(rows)),
            **({"excluded_because": excluded} if excluded else {}),
            "trained_on": n_seen,
            "headline": int(unseen.sum()),
        },
        "threshold": threshold.value,
        "threshold_recorded": threshold.recorded,
        # What the threshold does on the headline rows: FPR with its interval, recall, precision
        # at the expected threat rate, false alerts per 10,000 benign rows; and other budgets.
        "operating_point": {
            **point.to_dict(),
            "max_false_positive_rate": _float(tags.get(TAG_PREFIX + "max_false_positive_rate")),
            "over_budget": point.over_budget(policy.budget),
            "budget": policy.budget,
        },
        "budget_table": budgets_table,
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
        "metrics_all_rows": {k: round(v, 6) for k, v in metrics_all.items()},
        "confusion_matrix": {
            "order": ["benign", "threat"],
            "rows_truth_cols_predicted": result["confusion_matrix"],
        },
        **({"per_label": per_label} if per_label is not None else {}),
    }
    # Reasons (issue 24): importance overall and per raw label, and what the false positives at
    # the operating point above had in common, on the headline rows.
    doc["reasons"] = reasons = evaluation_reasons(
        model,
        contract.features,
        x[unseen],
        raw_labels,
        y,
        pred,
        operating_point=f"is_threat when P(threat) >= {threshold.describe()}",
        threshold=threshold.value,
        seed=cfg.training.seed,
    )
    report = atomic_write(out / "evaluation_report.yaml", yaml_text(doc))
    page = atomic_write(out / "evaluation_report.html", render_html(doc, plots))
    run_id = track_evaluation(cfg, mv, doc, out) if track else None
    log.info(
        "evaluated %s v%s on %s: %s",
        name,
        version,
        source,
        ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
    )
    return EvaluationRecord(
        model_name=name,
        model_version=version,
        source=source,
        source_sha256=sha,
        rows_read=len(frame),
        rows_scored=int(len(rows)),
        rows_excluded=int(len(frame) - len(rows)),
        rows_trained_on=n_seen,
        metrics=metrics,
        metrics_all_rows=metrics_all,
        warnings=warnings,
        judged=not any(w.startswith("not judged") for w in warnings),
        confusion_matrix=result["confusion_matrix"],
        per_label=per_label,
        operating_point=doc["operating_point"],
        budget_table=budgets_table,
        reasons=_reasons_summary(reasons),
        report_uri=report.resolve().as_uri(),
        html_uri=page.resolve().as_uri(),
        plots=[Path(p).resolve().as_uri() for p in plots],
        mlflow_run_id=run_id,
    )


def _reasons_summary(part: dict[str, Any], top: int = 5) -> dict[str, Any]:
    """The few figures of the report's ``reasons`` part that ``netsec evaluate`` prints: the
    ``top`` columns by mean |contribution| overall, and those most often behind the false
    positives (see :class:`netsec_tasks.records.EvaluationRecord`)."""
    if not part.get("available"):
        return {"available": False, "why": part.get("why")}
    fp = part["false_positives"]
    return {
        "available": True,
        "unit": part["unit"],
        "rows": part["rows"],
        "importance": [{"column": r["column"], "overall": r["overall"]} for r in part["importance"][:top]],
        "false_positives": {
            "operating_point": fp["operating_point"],
            "rows": fp["rows"],
            "explained": fp["explained"],
            "top_reasons": [
                {"column": r["column"], "rows": r["rows"], "share": r["share"]}
                for r in fp["top_reasons"][:top]
            ],
        },
    }


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None
