"""The explainer of one fitted model: per-row contributions per schema column, the K strongest
reasons of each row, and the additivity check that decides whether a version has reasons.

One implementation for every door (serving's ``/predict``, ``/predict/csv`` and page,
``netsec predict``) and every report (``netsec evaluate``, monitoring): they all call
:meth:`Explainer.contributions` or :meth:`Explainer.reasons` on the model the door scores with.
The preprocessing is the Pipeline's own fitted steps (or rows a caller already preprocessed with
them: serving's fast path), never a copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.explain.folding import Folding, NotExplainable, folding_for
from netsec_tasks.explain.methods import Method, method_for

# |base + sum(contributions) - margin| allowed, in the model's unit (log-odds or probability).
# XGBoost sums float32 leaf values (measured error <= 2e-6 on 300 trees); the others are float64
# (measured <= 1e-12).
ADDITIVITY_TOL = 1e-4
# |P(threat) from the margin - P(threat) of the Pipeline| allowed: the margin is the model's.
PROBABILITY_TOL = 1e-6
# Rows the load-time check explains: half without gaps, half with imputed cells. TreeSHAP on a
# fully grown 300-tree forest costs ~0.2 s a row, so the check is bounded in rows, not time.
VERIFY_ROWS = 64


def plain_value(v: Any) -> Any:
    """A cell as plain data: numpy scalars as Python ones, an integral float as an int (a CSV
    column with gaps is read as floats, so -1 arrives as -1.0), NaN/NA as None."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


@dataclass(frozen=True)
class Reason:
    """One reason of one row: a schema column, the value the row had (None when missing), whether
    the model's imputer filled it (and with what), the contribution in the explainer's unit,
    and its direction ("threat": it pushed the row towards an alert; "benign": away)."""

    column: str
    value: Any
    contribution: float
    imputed: bool = False
    imputed_value: Any = None

    @property
    def direction(self) -> str:
        return "threat" if self.contribution > 0 else "benign"

    def as_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "value": self.value,
            "imputed": self.imputed,
            "imputed_value": self.imputed_value,
            "contribution": self.contribution,
            "direction": self.direction,
        }


@dataclass(frozen=True)
class Contributions:
    """Per-row contributions per schema column: ``values`` (n, n_features) in ``unit``; for
    every row ``base + values.sum() = margin`` (the model's output in ``unit``)."""

    features: tuple[str, ...]
    values: np.ndarray
    base: float
    unit: str

    @property
    def margin(self) -> np.ndarray:
        return self.base + self.values.sum(axis=1)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, columns=list(self.features))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str
    rows: int
    max_abs_diff: float


class Explainer:
    """Contributions of a fitted netsec model (a Pipeline, possibly inside a decision wrapper).

    ``features``: the schema's feature columns, in the order the model takes them.
    ``threat_column``: the index of the threat class in ``predict_proba``.
    ``preprocess``: a callable giving, for model input rows, exactly what the Pipeline's own
    fitted steps give, faster (serving's fast path, itself verified against the Pipeline); the
    additivity check then runs through it too. Default: the fitted steps.
    Raises NotExplainable when a step or the estimator has no exact method.
    """

    def __init__(
        self,
        model: Any,
        features: list[str] | tuple[str, ...],
        threat_column: int = 1,
        *,
        preprocess: Callable[[Any], np.ndarray] | None = None,
    ):
        from sklearn.pipeline import Pipeline

        from netsec_tasks.explain.folding import unfrozen
        from netsec_tasks.operating_point import inner_pipeline

        # The registered artifact is the Pipeline inside its threshold wrapper (issue 23); a
        # FrozenEstimator around it (a wrapper fitted on a frozen Pipeline) is the same Pipeline.
        pipeline = unfrozen(inner_pipeline(model))
        self.features = tuple(features)
        self.threat_column = int(threat_column)
        self._preprocess_fn = preprocess
        if isinstance(pipeline, Pipeline) and len(pipeline.steps) > 1:
            self.preprocess, estimator = pipeline[:-1], pipeline.steps[-1][1]
        else:
            self.preprocess = None
            estimator = pipeline.steps[-1][1] if isinstance(pipeline, Pipeline) else pipeline
        self.estimator = estimator
        self.folding: Folding = folding_for(self.preprocess, list(self.features))
        n_in = getattr(estimator, "n_features_in_", None)
        if n_in is not None and int(n_in) != self.folding.n_out:
            raise NotExplainable(
                f"the estimator takes {n_in} columns, the preprocessing gives {self.folding.n_out}"
            )
        self.method: Method = method_for(estimator, self.threat_column)

    @property
    def unit(self) -> str:
        return self.method.unit

    @cached_property
    def base_value(self) -> float:
        """The base value every row's contributions add to (the model's expected margin over
        its training data, as TreeSHAP's covers or the linear model's training mean see it).
        The same for all rows: computed once, on any row."""
        return float(self.method.contributions(np.zeros((1, self.folding.n_out)))[1])

    def describe(self) -> str:
        return f"{self.method.name}, contributions in {self.unit}"

    # --- rows ---------------------------------------------------------------------------------

    def frame(self, x: Any) -> pd.DataFrame:
        """Model input as a DataFrame of the schema features (``x``: one, or a float matrix in
        feature order with NaN where a cell is missing)."""
        if isinstance(x, pd.DataFrame):
            return x[list(self.features)] if list(x.columns) != list(self.features) else x
        return pd.DataFrame(np.asarray(x), columns=list(self.features))

    def preprocessed(self, x: Any) -> np.ndarray:
        """The rows as the estimator sees them, through the Pipeline's own fitted steps (or the
        equivalent ``preprocess`` callable given at construction)."""
        if self._preprocess_fn is not None:
            return np.asarray(self._preprocess_fn(x))
        if self.preprocess is None:
            return np.asarray(self.frame(x), dtype=np.float64)
        return np.asarray(self.preprocess.transform(self.frame(x)))

    # --- contributions ------------------------------------------------------------------------

    def contributions(self, x: Any, z: np.ndarray | None = None) -> Contributions:
        """Contributions of the rows ``x`` per schema column. ``z``: the same rows already
        preprocessed by the model's own steps (serving's fast path), else computed here."""
        if z is None:
            z = self.preprocessed(x)
        values, base = self.method.contributions(z)
        return Contributions(self.features, self.folding.fold(values), float(base), self.unit)

    def reasons(
        self, x: Any, k: int, z: np.ndarray | None = None, contributions: Contributions | None = None
    ) -> list[list[Reason]]:
        """The ``k`` strongest reasons of each row (largest |contribution| first; a column that
        contributed exactly 0 is never a reason), with the row's value of each column."""
        c = contributions if contributions is not None else self.contributions(x, z)
        k = max(0, min(int(k), len(self.features)))
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":  # numeric models: no DataFrame
            cells, missing = x, np.isnan(x)
        else:
            frame = self.frame(x)
            cells, missing = frame.to_numpy(dtype=object), frame.isna().to_numpy()
        filled = self.folding.imputed_values(self.frame(x), missing) if missing.any() else None
        strength = np.abs(c.values)
        if k < len(self.features):
            top = np.argpartition(-strength, k - 1, axis=1)[:, :k] if k else np.zeros((len(cells), 0), int)
        else:
            top = np.tile(np.arange(len(self.features)), (len(cells), 1))
        out: list[list[Reason]] = []
        for i in range(len(cells)):
            cols = sorted(top[i], key=lambda j: (-strength[i, j], j))
            row = []
            for j in cols:
                if strength[i, j] == 0.0:
                    continue
                imputed = bool(missing[i, j])
                row.append(
                    Reason(
                        column=self.features[j],
                        value=plain_value(cells[i, j]),
                        contribution=float(c.values[i, j]),
                        imputed=imputed,
                        imputed_value=plain_value(filled[i, j]) if imputed and filled is not None else None,
                    )
                )
            out.append(row)
        return out

    # --- verification -------------------------------------------------------------------------

    def verify(self, model: Any, rows: Any, *, max_rows: int = VERIFY_ROWS) -> Verdict:
        """Additivity on real rows: for each of up to ``max_rows`` of ``rows`` (half of them
        among rows with missing cells, when there are such rows), ``base + sum(contributions)``
        equals the estimator's margin within :data:`ADDITIVITY_TOL`, and that margin gives the
        ``predict_proba`` of ``model`` (the artifact the doors score with) within
        :data:`PROBABILITY_TOL`."""
        frame = self.frame(rows)
        gaps = frame.isna().any(axis=1).to_numpy()
        half = max_rows // 2
        picks = np.concatenate([np.flatnonzero(~gaps)[:half], np.flatnonzero(gaps)[:half]])
        if len(picks) < max_rows:  # too few of one kind: fill with the other
            rest = np.setdiff1d(np.arange(len(frame)), picks)[: max_rows - len(picks)]
            picks = np.sort(np.concatenate([picks, rest]))
        sample = frame.iloc[picks]
        # Rows in the caller's form (a float matrix for numeric models), so that the check runs
        # through the same preprocessing route as the requests will.
        given = np.asarray(rows)[picks] if isinstance(rows, np.ndarray) else sample
        n = len(sample)
        if not n:
            return Verdict(False, "no rows to verify on", 0, math.inf)
        z = self.preprocessed(given)
        c = self.contributions(given, z)
        margin = self.method.margin(z)
        diff = np.abs(c.margin - margin)
        worst = float(np.nanmax(diff)) if diff.size else 0.0
        if not np.all(diff <= ADDITIVITY_TOL):
            bad = int(np.argmax(np.where(np.isnan(diff), np.inf, diff)))
            return Verdict(
                False,
                f"additivity fails on row {int(picks[bad])}: base + contributions = "
                f"{c.margin[bad]:.6g}, the model's margin is {margin[bad]:.6g} "
                f"(|diff| {diff[bad]:.3g} > {ADDITIVITY_TOL:g} {self.unit})",
                n,
                worst,
            )
        from netsec_tasks.operating_point import threat_probability

        # P(threat) as the doors read it from the artifact (wrapped in its threshold or bare).
        proba = np.asarray(threat_probability(model, sample), dtype=np.float64)
        link = np.abs(self.method.probability(margin) - proba)
        if not np.all(link <= PROBABILITY_TOL):
            bad = int(np.argmax(link))
            return Verdict(
                False,
                f"the margin is not the model's P(threat) on row {int(picks[bad])} "
                f"({self.method.probability(margin)[bad]:.6g} vs {proba[bad]:.6g})",
                n,
                worst,
            )
        return Verdict(
            True, f"max |base + contributions - margin| {worst:.1e} <= {ADDITIVITY_TOL:g}", n, worst
        )


def verified_explainer(
    model: Any,
    features: list[str] | tuple[str, ...],
    rows: Any,
    *,
    threat_column: int = 1,
    rows_source: str = "",
    max_rows: int = VERIFY_ROWS,
    preprocess: Callable[[Any], np.ndarray] | None = None,
) -> tuple[Explainer | None, str]:
    """An explainer whose additivity held on ``rows`` (the version's own test rows), or
    (None, why the version has no reasons). The text says the method, unit and check (and
    names ``rows_source``: keep it out of public answers when it is a storage URI)."""
    import logging

    log = logging.getLogger("netsec.explain")
    try:
        explainer = Explainer(model, features, threat_column, preprocess=preprocess)
    except NotExplainable as exc:
        return None, f"off: {exc}"
    except Exception as exc:  # an unexpected fitted layout: no reasons rather than no model
        log.warning("explainer failed to build: %s: %s", type(exc).__name__, exc)
        return None, f"off: the explainer failed to build ({type(exc).__name__}; the log has the error)"
    try:
        verdict = explainer.verify(model, rows, max_rows=max_rows)
    except Exception as exc:
        log.warning("explainer failed on the verification rows: %s: %s", type(exc).__name__, exc)
        return (
            None,
            f"off: the explainer failed on the verification rows ({type(exc).__name__}; the log has the error)",
        )
    where = f" on {verdict.rows} rows{' of ' + rows_source if rows_source else ''}"
    if not verdict.ok:
        log.warning("reasons off, additivity failed%s: %s", where, verdict.why)
        return None, f"off: additivity failed{where}: {verdict.why} ({explainer.describe()})"
    return explainer, f"exact: {explainer.describe()}; additivity verified{where}: {verdict.why}"


def _text(value: Any) -> str:
    """A value as JSON shows it (``true``, not ``True``; nothing for a missing one), so the text
    is the same whether Python or the page's script writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def reasons_text(reasons: list[Reason] | list[dict[str, Any]] | None) -> str:
    """One row's reasons as one line of text (the CSV ``reasons`` cell):
    ``column=value (+0.412); column=(missing, imputed -1) (-0.05)``; empty for no reasons.
    The page's download writes the same text (serving/static/app.js ``reasonsText``)."""
    if not reasons:
        return ""
    parts = []
    for r in reasons:
        d = r.as_dict() if isinstance(r, Reason) else r
        if d["imputed"]:
            filled = d["imputed_value"]
            value = "(missing, imputed" + ("" if filled is None else f" {_text(filled)}") + ")"
        else:
            value = _text(d["value"])
        parts.append(f"{d['column']}={value} ({d['contribution']:+.4g})")
    return "; ".join(parts)
