"""``netsec evaluate FILE``: score a labelled file with a registered model and report how it did;
also the pipeline's hold-out file (``evaluation.holdout_path``, :func:`evaluate_holdout`).

Intrusion data sets ship a separate, harder test file (other proportions, attack types the
training file never has). The internal test split says how well the model fits its own data;
this says how it does on that file:

1. The file is read like every other door reads one (header-less files by the schema's
   ``file_columns``) and goes through the input contract (:mod:`netsec_tasks.contract`): the
   feature rules, and the label check (a label the schema does not list is refused, naming it).
   Rows that break the contract are refused by default; ``invalid="flag"`` leaves them (and rows
   without a label) out and reports how many and why.
2. The model is the configured data set's Production version, or ``models:/<name>/<version>``
   (or ``models:/<name>@<alias>``). A model trained on other features, another target or another
   label mapping is refused (it is not a model of this data set).
3. Rows the version was trained on. The version records the hashes of its training rows
   (``netsec.train_hashes_uri``); scored rows identical to one of them are counted, and the
   headline figures are those of the rows it never saw, with the figures on every row beside
   them and a warning naming the overlap (a model graded on its own training rows looks better
   than it is). Without recorded hashes the report says the overlap is unknown. When
   ``invalid="flag"`` left out more than ``validation.max_invalid_share`` of the rows, a warning
   says the figures describe the rows left, not the file (``netsec evaluate`` exits 4).
4. The report: the threat class's F1, precision, recall, ROC AUC, PR AUC and accuracy; the
   confusion matrix ``[[TN, FP], [FN, TP]]``; per raw label (when the label is multi-class) the
   rows, whether it is a threat, the rows put in the right class and that share (for an attack
   type: the share detected; for a benign label: the share not flagged), and whether the label
   occurs in the model's training data; the plots. Written as YAML and as one self-contained HTML
   page (inline CSS, images embedded), and logged to MLflow: a run (tag ``netsec.role =
   evaluation``) whose metrics are linked to the model version's logged model, with the reports
   as artifacts; the model version gets the tags ``netsec.evaluation_run_id`` and
   ``netsec.evaluation`` (the headline figures as JSON).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.config import PipelineConfig
from netsec_tasks.contract import Contract, show
from netsec_tasks.errors import ConfigError, DataError, NetsecError, RegistryError
from netsec_tasks.html_report import escape, number, page, png_image
from netsec_tasks.records import EvaluationRecord, sha256_file
from netsec_tasks.sinks import (
    MLFLOW_TAG_CHARS,
    file_name,
    json_text,
    mlflow_key,
    mlflow_value,
    plot_text,
    yaml_text,
)
from netsec_tasks.storage import atomic_write
from netsec_tasks.tracking import TAG_PREFIX

log = logging.getLogger("netsec.evaluate")

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.-]+))$")
METRIC_ORDER = ("f1", "precision", "recall", "roc_auc", "pr_auc", "accuracy")


# --------------------------------------------------------------------------- the model


def resolve_model(cfg: PipelineConfig, model_uri: str | None):
    """The MLflow ModelVersion to evaluate: ``model_uri`` (``models:/<name>/<version>`` or
    ``models:/<name>@<alias>``), else the configured model's Production version.
    Raises ConfigError (a malformed URI), RegistryError (no such version, no Production)."""
    from mlflow.exceptions import MlflowException

    from netsec_tasks.outages import mlflow_errors
    from netsec_tasks.registry import find_production_version
    from netsec_tasks.tracking import mlflow_client

    what = model_uri or f"the Production version of {cfg.registry.model_name!r}"
    with mlflow_errors(cfg, f"look up {what}"):
        client = mlflow_client(cfg)
        if model_uri is None:
            mv = find_production_version(client, cfg.registry.model_name, cfg.registry.alias)
            if mv is None:
                raise RegistryError(
                    f"no Production model: registered model {cfg.registry.model_name!r} has no "
                    f"alias {cfg.registry.alias!r} at {cfg.registry.tracking_uri}; train the "
                    f"'{cfg.dataset}' data set first (netsec run) or pass --model "
                    "models:/<name>/<version>"
                )
            return mv
        m = _MODEL_URI.match(model_uri.strip())
        if not m:
            raise ConfigError(
                f"--model {model_uri!r}: expected models:/<name>/<version> or models:/<name>@<alias>"
            )
        try:
            if m["version"]:
                return client.get_model_version(m["name"], m["version"])
            return client.get_model_version_by_alias(m["name"], m["alias"])
        except MlflowException as exc:
            if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RegistryError(
                    f"{model_uri}: no such model version at {cfg.registry.tracking_uri}"
                ) from None
            raise


def _training_labels(cfg: PipelineConfig, tags: dict[str, str], target: str) -> set[str] | None:
    """The raw labels of the model's training split (its ``netsec.train_uri``), as text; None
    when it cannot be read (then "in training" is left out of the report)."""
    from netsec_tasks.storage import storage_for

    uri = tags.get(TAG_PREFIX + "train_uri")
    if not uri:
        return None
    try:
        frame = storage_for(cfg).read_frame(uri, columns=[target])
    except (NetsecError, KeyError, OSError, ValueError) as exc:
        log.info("training labels of the model unreadable (%s): per-label 'in_training' left out", exc)
        return None
    return {show(v) for v in frame[target].dropna().unique()}


# --------------------------------------------------------------------------- the evaluation


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
    metrics_all = _ordered(evaluate_predictions(y_all, pred_all, proba_all)["metrics"])
    seen_mask = _trained_on(cfg, name, version, tags, x, labels.typed.iloc[rows], schema)
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
    metrics = _ordered(result["metrics"])
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
    trained_on = _training_labels(cfg, tags, target) if multi else None
    per_label = _per_label(raw_labels, y, pred, trained_on) if multi else None

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
    plots = _plots(y, pred, proba, per_label, out / "plots", schema, threshold.value)
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
    report = atomic_write(out / "evaluation_report.yaml", yaml_text(doc))
    page = atomic_write(out / "evaluation_report.html", render_html(doc, plots))
    run_id = _track(cfg, mv, doc, out) if track else None
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
        report_uri=report.resolve().as_uri(),
        html_uri=page.resolve().as_uri(),
        plots=[Path(p).resolve().as_uri() for p in plots],
        mlflow_run_id=run_id,
    )


def _ordered(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in METRIC_ORDER if k in metrics}


def _trained_on(cfg: PipelineConfig, name: str, version: str, tags: dict[str, str], x, target, schema):
    """Mask of the scored rows (features ``x``, raw labels ``target``) identical to a row the
    version was trained on, from its recorded training-row hashes; None without them."""
    from netsec_tasks.registry import production_rows_in

    rows = x.reset_index(drop=True).copy()
    rows[schema.target.column] = target.reset_index(drop=True).to_numpy()
    return production_rows_in(cfg, version, tags, rows, schema)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _per_label(
    raw: np.ndarray, y: np.ndarray, pred: np.ndarray, trained_on: set[str] | None
) -> dict[str, dict[str, Any]]:
    """Per raw label: rows, threat?, rows in the right class, recall (that share), most rows first."""
    out: dict[str, dict[str, Any]] = {}
    series = pd.Series(raw)
    for label, n in series.value_counts(sort=True).items():
        mask = (series == label).to_numpy()
        threat = bool(y[mask][0])
        right = int((pred[mask] == y[mask]).sum())
        entry: dict[str, Any] = {
            "rows": int(n),
            "threat": threat,
            ("detected" if threat else "not_flagged"): right,
            "recall": round(right / int(n), 6),
        }
        if trained_on is not None:
            entry["in_training"] = str(label) in trained_on
        out[str(label)] = entry
    return out


def _plots(y, pred, proba, per_label, out: Path, schema, threshold: float) -> list[str]:
    from netsec_tasks.threat_metrics import save_plots

    paths = save_plots(
        y, pred, proba, out, labels=schema.class_names, title="- evaluation", threshold=threshold
    )
    if per_label:
        paths.append(_per_label_plot(per_label, out / "per_label_recall.png"))
    return paths


def _per_label_plot(per_label: dict[str, dict[str, Any]], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from netsec_tasks.storage import atomic_path

    items = sorted(per_label.items(), key=lambda kv: kv[1]["recall"])
    names = [plot_text(k, limit=24) for k, _ in items]
    values = [v["recall"] for _, v in items]
    colours = ["#c62828" if v["threat"] else "#5b7db1" for _, v in items]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1.2))
    ax.barh(range(len(items)), values, color=colours)
    ax.set_yticks(range(len(items)), names)
    ax.invert_yaxis()  # lowest recall on top: the labels the model misses come first
    ax.set_xlim(0, 1.3)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("recall: share of the label's rows put in the right class")
    for i, (_, v) in enumerate(items):
        ax.text(v["recall"] + 0.01, i, f"{v['recall']:.0%} of {v['rows']:,}", va="center", fontsize=8)
    ax.set_title("Per-label recall (red: threat labels, blue: benign)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return str(path)


# --------------------------------------------------------------------------- MLflow


def _track(cfg: PipelineConfig, mv, doc: dict[str, Any], out: Path) -> str:
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


# --------------------------------------------------------------------------- HTML


def _operating_point_html(doc: dict[str, Any]) -> list[str]:
    """The report's operating-point section: what the model's threshold does on these rows (FPR
    with its interval against the budget, recall, precision at the expected threat rate, false
    alerts per 10,000 benign rows), and the table of other budgets."""
    from netsec_tasks.operating_point import pct

    e = escape
    op = doc.get("operating_point")
    if not op:
        return []
    rule = (
        f"is_threat when P(threat) &ge; {number(op['threshold'], '.4g')}"
        if doc.get("threshold_recorded")
        else "is_threat when P(threat) &gt; 0.5 (the version records no threshold: registered before "
        "operating points)"
    )
    verdict = (
        f'<span class="tag yes">over the budget of {e(pct(op["budget"]))}</span>'
        if op.get("over_budget")
        else f'<span class="tag no">within the budget of {e(pct(op["budget"]))}</span>'
    )
    level = f"{op.get('confidence', 0.95):.0%}"
    out = [
        "<h2>Operating point</h2>",
        f'<p class="note">{rule}; the FPR interval is Clopper-Pearson at {level}; precision is at '
        f"a {e(pct(op['expected_threat_rate']))} threat rate (decision.expected_threat_rate), not the "
        "file's.</p>",
        "<table><thead><tr><th>threshold</th><th>FPR</th><th>FPR interval</th><th>false alerts / benign"
        "</th><th>recall</th><th>precision at the expected rate</th><th>false alerts per 10,000 benign"
        "</th><th>budget</th></tr></thead><tbody><tr>",
        f'<td class="num">{number(op["threshold"], ".4g")}</td><td class="num">{e(pct(op["fpr"]))}</td>',
        f'<td class="num">{e(pct(op["fpr_low"]))} - {e(pct(op["fpr_high"]))}</td>',
        f'<td class="num">{op["fp"]:,} / {op["benign"]:,}</td><td class="num">{number(op["recall"], ".3f")}</td>',
        f'<td class="num">{e(pct(op["precision_at_rate"]))}</td>',
        f'<td class="num">{number(op["alerts_per_10k_benign"], ".1f")}</td><td>{verdict}</td>',
        "</tr></tbody></table>",
    ]
    table = doc.get("budget_table") or []
    if table:
        out += [
            "<h3>Other budgets, on these rows</h3>",
            '<p class="note">The threshold each false-positive budget would need on these rows (the '
            "highest recall with FPR at most the budget; a description of the file, not a choice: "
            "the model's threshold comes from its training rows).</p>",
            "<table><thead><tr><th>budget</th><th>threshold</th><th>FPR</th><th>recall</th>"
            "<th>precision at the expected rate</th></tr></thead><tbody>",
            *(
                f'<tr><td class="num">{e(pct(r["budget"]))}</td><td class="num">{number(r["threshold"], ".4g")}</td>'
                f'<td class="num">{e(pct(r["fpr"]))}</td><td class="num">{number(r["recall"], ".3f")}</td>'
                f'<td class="num">{e(pct(r["precision_at_rate"]))}</td></tr>'
                for r in table
            ),
            "</tbody></table>",
        ]
    return out


def render_html(doc: dict[str, Any], plots: list[str]) -> str:
    """One self-contained page (:mod:`netsec_tasks.html_report`): plots embedded as data URIs."""
    e = escape
    m, rows, model = doc["metrics"], doc["rows"], doc["model"]
    out = [
        *(f'<p class="warning"><strong>Warning:</strong> {e(w)}</p>' for w in doc.get("warnings", [])),
        '<section class="summary info"><dl>',
        f"<dt>File</dt><dd>{e(doc['file'])}</dd>",
        f"<dt>Data set</dt><dd>{e(str(doc['data_set']))} (schema version "
        f"{e(str(doc['schema_version']))})</dd>",
        f"<dt>Model</dt><dd>{e(model['uri'])}"
        + (
            f"; its test split {e(str(model['metric']))} {model['test_split_score']:.4f}"
            if model.get("test_split_score") is not None
            else ""
        )
        + "</dd>",
        f"<dt>Label mapping</dt><dd>{e(json_text(doc['label_mapping']))}</dd>",
        f"<dt>Rows</dt><dd>{rows['scored']:,} scored of {rows['read']:,}"
        + (
            f"; left out: {e(', '.join(f'{v} {k}' for k, v in rows['excluded_because'].items()))}"
            if rows.get("excluded_because")
            else ""
        )
        + "</dd>",
        "<dt>Rows it was trained on</dt><dd>"
        + (
            "unknown (the version records no training-row hashes)"
            if rows.get("trained_on") is None
            else f"{rows['trained_on']:,}; the figures below are on {rows.get('headline', 0):,} rows"
        )
        + "</dd>",
        f"<dt>Generated</dt><dd>{e(doc['generated_at'])}</dd></dl></section>",
        *_operating_point_html(doc),
        "<h2>Threat class</h2><table><thead><tr><th>rows</th>"
        + "".join(f"<th>{e(k)}</th>" for k in m)
        + "</tr></thead><tbody><tr><th>"
        + ("never trained on" if rows.get("trained_on") else "scored")
        + "</th>"
        + "".join(f'<td class="num">{v:.4f}</td>' for v in m.values())
        + "</tr>"
        + (
            "<tr><th>all, trained-on included</th>"
            + "".join(f'<td class="num">{doc["metrics_all_rows"].get(k, float("nan")):.4f}</td>' for k in m)
            + "</tr>"
            if rows.get("trained_on")
            else ""
        )
        + "</tbody></table>",
    ]
    cm = doc["confusion_matrix"]["rows_truth_cols_predicted"]
    out += [
        "<h2>Confusion matrix</h2>",
        "<table><thead><tr><th>truth \\ predicted</th><th>benign</th><th>threat</th></tr></thead><tbody>",
        f'<tr><th>benign</th><td class="num">{cm[0][0]:,}</td><td class="num">{cm[0][1]:,}</td></tr>',
        f'<tr><th>threat</th><td class="num">{cm[1][0]:,}</td><td class="num">{cm[1][1]:,}</td></tr>',
        "</tbody></table>",
    ]
    per_label = doc.get("per_label")
    if per_label:
        has_training = any("in_training" in v for v in per_label.values())
        out += [
            "<h2>Per label</h2>",
            '<p class="note">Recall: the share of a label\'s rows the model puts in the right '
            "class (detected, for a threat label; not flagged, for a benign one). Lowest first."
            + (
                " <em>New</em>: the label does not occur in the model's training data."
                if has_training
                else ""
            )
            + "</p><table><thead><tr><th>Label</th><th>Class</th><th>Rows</th><th>Right</th>"
            "<th>Recall</th><th></th>"
            + ("<th>In training</th>" if has_training else "")
            + "</tr></thead><tbody>",
        ]
        for label, v in sorted(per_label.items(), key=lambda kv: kv[1]["recall"]):
            right = v.get("detected", v.get("not_flagged", 0))
            cls = "threat" if v["threat"] else "benign"
            seen = (
                ""
                if not has_training
                else f"<td>{'yes' if v.get('in_training') else '<strong>new</strong>'}</td>"
            )
            out.append(
                f'<tr class="{"low" if v["recall"] < 0.5 else ""}"><td>{e(label)}</td>'
                f'<td>{cls}</td><td class="num">{v["rows"]:,}</td><td class="num">{right:,}</td>'
                f'<td class="num">{v["recall"]:.1%}</td><td><span class="bar {cls}" '
                f'style="width:{120 * v["recall"]:.0f}px"></span></td>{seen}</tr>'
            )
        out.append("</tbody></table>")
    if plots:
        out.append("<h2>Plots</h2><div>")
        out += [png_image(p, Path(p).stem) for p in plots]
        out.append("</div>")
    name = Path(doc["file"]).name
    return page(
        f"netsec evaluation: {name}",
        out,
        heading=f"Evaluation of {model['name']} v{model['version']} on {name}",
    )


# --------------------------------------------------------------------------- after training


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
