"""Threat-class metrics and plots of a model's predictions on labelled rows (y = 1 is the threat):
the test split in training, the compared rows in promotion, a labelled file in ``netsec evaluate``.

Metrics are computed with ``pos_label=1`` on the 0/1 threat target, so precision/recall/F1 are
those of the threat class whatever its raw label is (``-1`` for UCI phishing). The confusion
matrix is ``[[TN, FP], [FN, TP]]`` with rows = truth, columns = prediction, order (benign, threat).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as skm

from netsec_tasks.storage import atomic_path

SCORERS = {
    # training.metric -> name of the matching test metric
    "f1": "f1",
    "precision": "precision",
    "recall": "recall",
    "roc_auc": "roc_auc",
    "average_precision": "pr_auc",
    "accuracy": "accuracy",
}


def threat_scores(model: Any, X) -> np.ndarray:
    """Probability (or decision score) of the threat class."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(X)[:, 1]
    return model.decision_function(X)


def evaluate_predictions(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, pos_label=1, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, pos_label=1, zero_division=0)),
    }
    # Ranking metrics are undefined with one class in the test split: left out, not made up.
    if both_classes:
        out["roc_auc"] = float(skm.roc_auc_score(y_true, scores))
        out["pr_auc"] = float(skm.average_precision_score(y_true, scores, pos_label=1))
    cm = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
    return {"metrics": out, "confusion_matrix": cm.astype(int).tolist()}


def evaluate(
    model: Any, X, y_true: np.ndarray
) -> tuple[dict[str, float], list[list[int]], np.ndarray, np.ndarray]:
    """The one evaluation of the test split: metrics, confusion matrix, predictions, threat scores."""
    scores = threat_scores(model, X)
    y_pred = model.predict(X)
    result = evaluate_predictions(y_true, y_pred, scores)
    return result["metrics"], result["confusion_matrix"], np.asarray(y_pred), np.asarray(scores)


def save_plots(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray,
    out_dir: str | Path,
    *,
    labels: tuple[str, str] = ("benign", "threat"),
    title: str = "",
) -> list[str]:
    """Confusion matrix, ROC and precision-recall curves as PNG files; returns their paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display in Airflow workers or CI
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y_true = np.asarray(y_true).astype(int)
    paths: list[str] = []

    def _save(fig, name: str) -> None:
        path = out_dir / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(str(path))

    fig, ax = plt.subplots(figsize=(4.5, 4))
    skm.ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=[0, 1], display_labels=list(labels), ax=ax, colorbar=False
    )
    ax.set_title(f"Confusion matrix {title}".strip())
    _save(fig, "confusion_matrix.png")

    if len(np.unique(y_true)) == 2:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        skm.RocCurveDisplay.from_predictions(y_true, scores, pos_label=1, ax=ax, name=labels[1])
        ax.set_title(f"ROC {title}".strip())
        _save(fig, "roc_curve.png")

        fig, ax = plt.subplots(figsize=(4.5, 4))
        skm.PrecisionRecallDisplay.from_predictions(y_true, scores, pos_label=1, ax=ax, name=labels[1])
        ax.set_title(f"Precision-recall {title}".strip())
        _save(fig, "pr_curve.png")
    return paths
