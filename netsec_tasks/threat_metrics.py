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

from netsec_tasks.sinks import plot_text
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
    """Threat-class metrics of decisions ``y_pred`` (and ranking/calibration metrics of P(threat)
    ``scores``) against ``y_true``: ``{"metrics": {...}, "confusion_matrix": [[TN, FP], [FN, TP]]}``."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
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
    # How well P(threat) is calibrated (mean squared error of the probability; lower is better).
    if len(y_true) and np.all((scores >= 0) & (scores <= 1)):
        out["brier"] = float(skm.brier_score_loss(y_true, scores, pos_label=1))
    cm = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
    return {"metrics": out, "confusion_matrix": cm.astype(int).tolist()}


def evaluate(
    model: Any, X, y_true: np.ndarray, threshold: float
) -> tuple[dict[str, float], list[list[int]], np.ndarray, np.ndarray]:
    """The one evaluation of the test split: metrics, confusion matrix, predictions, threat scores.

    ``model``: anything with ``predict_proba`` (the refit estimator on preprocessed rows, or a
    registered model on raw rows); the predictions are :func:`netsec_tasks.operating_point.decide`
    at ``threshold``, the model's operating point."""
    from netsec_tasks.operating_point import decide

    scores = threat_scores(model, X)
    y_pred = decide(scores, threshold)
    result = evaluate_predictions(y_true, y_pred, scores)
    return result["metrics"], result["confusion_matrix"], y_pred, np.asarray(scores)


def save_plots(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray,
    out_dir: str | Path,
    *,
    labels: tuple[str, str] = ("benign", "threat"),
    title: str = "",
    threshold: float | None = None,
) -> list[str]:
    """Confusion matrix, ROC and precision-recall curves as PNG files, and a reliability diagram
    (``sklearn.calibration.CalibrationDisplay``, its Brier score in the legend); returns their
    paths. ``threshold``: the operating point (the model's threshold, at which ``y_pred`` was
    decided), marked on both curves."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display in Airflow workers or CI
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y_true = np.asarray(y_true).astype(int)
    paths: list[str] = []
    labels = (plot_text(labels[0]), plot_text(labels[1]))  # class names come from the schema
    title = plot_text(title)

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
        y_hat = np.asarray(y_pred).astype(int)
        tp, fp = int(((y_true == 1) & (y_hat == 1)).sum()), int(((y_true == 0) & (y_hat == 1)).sum())
        fpr, recall = fp / int((y_true == 0).sum()), tp / int((y_true == 1).sum())
        mark = f"threshold {threshold:.3g}" if threshold is not None else None

        fig, ax = plt.subplots(figsize=(4.5, 4))
        skm.RocCurveDisplay.from_predictions(y_true, scores, pos_label=1, ax=ax, name=labels[1])
        if mark:
            ax.plot(
                [fpr], [recall], "o", color="#c62828", label=f"{mark}: FPR {fpr:.2%}, recall {recall:.3f}"
            )
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"ROC {title}".strip())
        _save(fig, "roc_curve.png")

        fig, ax = plt.subplots(figsize=(4.5, 4))
        skm.PrecisionRecallDisplay.from_predictions(y_true, scores, pos_label=1, ax=ax, name=labels[1])
        if mark and tp + fp:
            precision = tp / (tp + fp)
            ax.plot([recall], [precision], "o", color="#c62828", label=f"{mark}: precision {precision:.3f}")
            ax.legend(loc="lower left", fontsize=8)
        ax.set_title(f"Precision-recall {title}".strip())
        _save(fig, "pr_curve.png")

        from sklearn.calibration import CalibrationDisplay

        fig, ax = plt.subplots(figsize=(4.5, 4))
        brier = skm.brier_score_loss(y_true, np.clip(scores, 0, 1), pos_label=1)
        CalibrationDisplay.from_predictions(
            y_true, np.clip(scores, 0, 1), n_bins=10, strategy="quantile", ax=ax, name=f"Brier {brier:.4f}"
        )
        ax.set_title(f"Reliability {title}".strip())
        _save(fig, "reliability.png")
    return paths
