"""The fast path is kept only when it agrees with the Pipeline: :func:`verify` on real rows, and
:func:`fast_path_for`, the verified fast path or why there is none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from netsec_tasks.operating_point import LEGACY_THRESHOLD
from serving.fastpath.base import ATOL, NotCompilable
from serving.fastpath.compiled import FastPipeline, compile_pipeline

log = logging.getLogger("netsec.serving")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str  # what disagreed, or the summary of what was checked
    rows: int
    max_abs_diff: float


SINGLE_ROWS = 32  # rows also checked one request at a time (half clean, half with NaN)


def verify(fast: FastPipeline, pipeline: Any, rows: Any, threat_column: int = 1) -> Verdict:
    """Compare ``fast`` with ``pipeline.predict_proba`` on ``rows`` (float matrix or DataFrame),
    and its decisions with the registered model's own ``predict``.

    All rows go through the whole fast path at once (large-batch predictor); their preprocessed
    matrix goes through the small-batch predictor in chunks of its size (imputing a row does not
    depend on the batch, so the costly KNN imputation runs once); :data:`SINGLE_ROWS` rows, with
    and without NaN, go through the whole fast path one at a time. Exact predictors must give
    identical probabilities; the others must stay within :data:`ATOL` on P(threat). Every row
    must get the decision ``pipeline.predict`` gives it (the artifact's FixedThresholdClassifier
    at its threshold, or a bare Pipeline's 0.5 rule), through
    :func:`netsec_tasks.operating_point.decide` at ``fast.threshold``, as serving decides.
    """
    import pandas as pd

    from netsec_tasks.operating_point import decide, inner_pipeline

    is_frame = isinstance(rows, pd.DataFrame)
    # A FixedThresholdClassifier does not expose the names its Pipeline was fitted with.
    named = is_frame or not hasattr(inner_pipeline(pipeline), "feature_names_in_")
    frame = rows if named else pd.DataFrame(rows, columns=fast.preprocess.features)
    expected = np.asarray(pipeline.predict_proba(frame))
    decided = np.asarray(pipeline.predict(frame)).astype(np.int8)
    if not np.array_equal(decide(expected[:, threat_column], fast.threshold), decided):
        bad = int(np.flatnonzero(decide(expected[:, threat_column], fast.threshold) != decided)[0])
        return Verdict(
            False,
            f"row {bad}: threshold {fast.threshold:.6g} decides otherwise than the model's predict()",
            0,
            np.inf,
        )
    n = len(expected)
    take = (lambda idx: rows.iloc[idx]) if is_frame else (lambda idx: rows[idx])
    z = fast.preprocess(rows)
    runs: list[tuple[str, np.ndarray, np.ndarray]] = [
        ("whole batch", fast.from_preprocessed(z), np.arange(n))
    ]
    step = fast.plan.small_max_rows
    if step:
        runs.append(
            (
                f"batches of {step}",
                np.vstack([fast.from_preprocessed(z[i : i + step]) for i in range(0, n, step)]),
                np.arange(n),
            )
        )
    gaps = (frame.isna() if is_frame else pd.DataFrame(np.isnan(rows))).any(axis=1).to_numpy()
    picks = np.concatenate(
        [np.flatnonzero(~gaps)[: SINGLE_ROWS // 2], np.flatnonzero(gaps)[: SINGLE_ROWS // 2]]
    )
    runs.append(
        ("one row at a time", np.vstack([fast.predict_proba(take(slice(i, i + 1))) for i in picks]), picks)
    )
    worst = 0.0
    for label, got, idx in runs:
        ref = expected[idx]
        if got.shape != ref.shape:
            return Verdict(False, f"{label}: shape {got.shape}, the pipeline's is {ref.shape}", n, np.inf)
        diff = np.abs(got[:, threat_column].astype(np.float64) - ref[:, threat_column])
        worst = max(worst, float(diff.max(initial=0.0)))
        if fast.exact:
            if not np.array_equal(got, ref):
                bad = int(idx[np.flatnonzero((got != ref).any(axis=1))[0]])
                return Verdict(False, f"{label}: row {bad} differs (exact predictor)", n, worst)
            continue
        if not np.all(diff <= ATOL):
            bad = int(np.argmax(diff))
            return Verdict(
                False, f"{label}: row {int(idx[bad])} differs by {diff[bad]:.3g} > {ATOL:g}", n, worst
            )
        flipped = decide(got[:, threat_column], fast.threshold) != decided[idx]
        if flipped.any():
            bad = int(idx[np.flatnonzero(flipped)[0]])
            return Verdict(False, f"{label}: row {bad} gets another decision", n, worst)
    return Verdict(True, "exact" if fast.exact else f"max |dp| {worst:.1e} <= {ATOL:g}", n, worst)


def fast_path_for(
    pipeline: Any,
    features: list[str],
    rows: Any,
    *,
    threat_column: int = 1,
    threshold: float = LEGACY_THRESHOLD,
    batch_threads: int = 1,
    rows_source: str = "",
) -> tuple[FastPipeline | None, str]:
    """A verified fast path, or (None, why not). ``pipeline``: the registered model (its
    ``predict`` is the decision the fast path must reproduce at ``threshold``, the model's);
    ``rows``: real rows to verify on (float matrix for numeric models, DataFrame otherwise),
    including rows with NaN."""
    import pandas as pd

    try:
        fast = compile_pipeline(
            pipeline,
            features,
            batch_threads=batch_threads,
            frames=isinstance(rows, pd.DataFrame),
            threshold=threshold,
        )
    except NotCompilable as exc:
        return None, f"scikit-learn ({exc} has no fast path)"
    except Exception as exc:  # a converter or an unexpected fitted layout: keep the safe path
        log.warning("fast path failed to build: %s: %s", type(exc).__name__, exc)
        return None, f"scikit-learn (fast path failed to build: {type(exc).__name__}: {str(exc)[:200]})"
    try:
        verdict = verify(fast, pipeline, rows, threat_column)
    except Exception as exc:
        log.warning("fast path failed on the verification rows: %s: %s", type(exc).__name__, exc)
        return None, f"scikit-learn (fast path failed on verification rows: {type(exc).__name__})"
    where = f" on {verdict.rows} rows{' of ' + rows_source if rows_source else ''}"
    if not verdict.ok:
        log.warning(
            "fast path dropped, it disagreed with the pipeline%s: %s (%s)",
            where,
            verdict.why,
            fast.describe(),
        )
        return None, f"scikit-learn (fast path disagreed{where}: {verdict.why})"
    return fast, f"compiled: {fast.describe()}; verified{where}: {verdict.why}"
