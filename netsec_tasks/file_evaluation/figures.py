"""The figures of an evaluation beside the headline metrics: metrics in report order, recall per
raw label, and the plots (the threat-class plots and the per-label recall bars)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.sinks import (
    plot_text,
)

METRIC_ORDER = ("f1", "precision", "recall", "roc_auc", "pr_auc", "accuracy")


def ordered_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in METRIC_ORDER if k in metrics}


def per_label_recall(
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


def evaluation_plots(y, pred, proba, per_label, out: Path, schema, threshold: float) -> list[str]:
    from netsec_tasks.threat_metrics import save_plots

    paths = save_plots(
        y, pred, proba, out, labels=schema.class_names, title="- evaluation", threshold=threshold
    )
    if per_label:
        paths.append(per_label_plot(per_label, out / "per_label_recall.png"))
    return paths


def per_label_plot(per_label: dict[str, dict[str, Any]], path: Path) -> str:
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
