"""Drift statistics: per-column two-sample tests, effect sizes and the data-set decision.

Each feature gets the test that suits it:

- discrete columns (categorical, or few distinct values such as the UCI ternary indicators):
  Pearson chi-square on the 2 x k contingency table (``scipy.stats.chi2_contingency``), with
  categories too sparse for the chi-square approximation pooled first; effect size =
  Jensen-Shannon distance, base 2, 0..1 (``scipy.spatial.distance.jensenshannon``). KS is never
  used on them: with three values its statistic is dominated by ties.
- continuous columns: two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``); effect size =
  Wasserstein distance (``scipy.stats.wasserstein_distance``) divided by the reference IQR (std
  when the IQR is 0), i.e. "how far the mass moved, in spreads".

p-values are corrected for testing many columns (``statsmodels``' ``multipletests``; holm by
default). A column drifts only when its adjusted p-value is below ``alpha`` *and* its effect
reaches ``min_effect``: with tens of thousands of rows every negligible difference is
significant, and a model does not go stale over a negligible difference. The data set drifts
when more than ``drift_share`` of the columns do. Which test a column gets: the schema says it is
discrete (categorical, or an ``allowed`` list of at most ``drift.max_discrete_values`` values), or
the data has at most that many distinct values, or its values are text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from netsec_tasks.config import DriftConfig
from netsec_tasks.dataset_schema import ColumnSpec, DatasetSchema

Correction = Literal["bonferroni", "holm", "fdr_bh", "none"]
NULL_CATEGORY = "<null>"
# Cochran's rule: the chi-square approximation needs expected counts of about 5 or more.
MIN_EXPECTED = 5.0
HIST_BINS = 20


# --------------------------------------------------------------------------- results


@dataclass
class ColumnDrift:
    column: str
    kind: Literal["discrete", "continuous", "missing"]
    test: Literal["chi_square", "ks", "presence", "none"]
    statistic: float
    p_value: float
    effect: float
    effect_name: str
    n_reference: int
    n_current: int
    p_adjusted: float = 1.0
    drifted: bool = False
    dof: int | None = None
    note: str = ""
    null_share_reference: float = 0.0
    null_share_current: float = 0.0
    # Distribution for the report: category labels or histogram bin edges, and shares.
    labels: list[str] = field(default_factory=list)
    reference_share: list[float] = field(default_factory=list)
    current_share: list[float] = field(default_factory=list)
    # Discrete columns: categories only the current data has, and ones it no longer has.
    new_categories: list[str] = field(default_factory=list)
    vanished_categories: list[str] = field(default_factory=list)

    @property
    def tested(self) -> bool:
        return self.test != "none"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in (
            "statistic",
            "p_value",
            "p_adjusted",
            "effect",
            "null_share_reference",
            "null_share_current",
        ):
            d[k] = _round(d[k])
        d["reference_share"] = [_round(x) for x in self.reference_share]
        d["current_share"] = [_round(x) for x in self.current_share]
        return d


@dataclass
class DriftResult:
    columns: list[ColumnDrift]
    alpha: float
    correction: str
    min_effect: float
    drift_share_threshold: float
    n_reference: int
    n_current: int
    target: dict[str, Any] | None = None  # label shares, info only

    @property
    def tested(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.tested]

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def columns_tested(self) -> int:
        return len(self.tested)

    @property
    def drift_share(self) -> float:
        return len(self.drifted_columns) / self.columns_tested if self.columns_tested else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.columns_tested > 0 and self.drift_share > self.drift_share_threshold

    def column(self, name: str) -> ColumnDrift:
        return next(c for c in self.columns if c.column == name)

    def by_effect(self) -> list[ColumnDrift]:
        """Drifted columns first, each group by effect size, largest first (the report order;
        effects of different tests are on different scales, the drift decision is not)."""

        def effect(c: ColumnDrift) -> float:
            return float(c.effect) if c.effect is not None and np.isfinite(c.effect) else 0.0

        return sorted(self.columns, key=lambda c: (not c.drifted, -effect(c)))

    def reason(self) -> str:
        k, n = len(self.drifted_columns), self.columns_tested
        if not n:
            return "no columns could be tested"
        listed = ", ".join(self.drifted_columns[:8]) + (" ..." if k > 8 else "")
        if self.dataset_drift:
            return (
                f"data-set drift: {k} of {n} columns drifted ({self.drift_share:.0%} > "
                f"{self.drift_share_threshold:.0%}): {listed}"
            )
        tail = f": {listed}" if k else ""
        return (
            f"no data-set drift: {k} of {n} columns drifted ({self.drift_share:.0%} <= "
            f"{self.drift_share_threshold:.0%}){tail}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_drift": self.dataset_drift,
            "reason": self.reason(),
            "drift_share": _round(self.drift_share),
            "drift_share_threshold": self.drift_share_threshold,
            "columns_tested": self.columns_tested,
            "drifted_columns": self.drifted_columns,
            "alpha": self.alpha,
            "correction": self.correction,
            "min_effect": self.min_effect,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "target": self.target,
            "columns": [c.to_dict() for c in self.by_effect()],
        }


def _round(x: float | None, digits: int = 6) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if not np.isfinite(x) else float(f"{x:.{digits}g}")


# --------------------------------------------------------------------------- statistics


def adjust_pvalues(p_values: Any, method: Correction = "holm") -> np.ndarray:
    """Family-wise (bonferroni, holm) or false-discovery (fdr_bh) adjusted p-values."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    if p.size == 0 or method == "none":
        return p.copy()
    if method not in ("bonferroni", "holm", "fdr_bh"):
        raise ValueError(f"unknown correction {method!r}: use bonferroni, holm, fdr_bh or none")
    return multipletests(p, method=method)[1]


def _pool_sparse(table: np.ndarray) -> tuple[np.ndarray, int]:
    """Pool categories whose expected count is below MIN_EXPECTED in either sample.

    Rare categories make the chi-square approximation anti-conservative (false alarms on a
    handful of rows); pooling keeps their mass in the test without letting them dominate it.
    Returns the pooled 2 x k table and how many categories were pooled.
    """
    n = table.sum()
    expected_min = table.sum(axis=1).min() * table.sum(axis=0) / n
    sparse = expected_min < MIN_EXPECTED
    if sparse.sum() == 0:
        return table, 0
    pooled = table[:, sparse].sum(axis=1, keepdims=True)
    dense = table[:, ~sparse]
    if dense.shape[1] and table.sum(axis=1).min() * pooled.sum() / n < MIN_EXPECTED:
        # Still too sparse on its own: fold the pool into the smallest dense category.
        j = int(np.argmin(dense.sum(axis=0)))
        dense = dense.copy()
        dense[:, j] += pooled[:, 0]
        return dense, int(sparse.sum())
    return np.hstack([dense, pooled]), int(sparse.sum())


def chi_square_test(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, int, int]:
    """Pearson chi-square on the 2 x k table (no Yates correction). -> stat, p, dof, pooled."""
    from scipy.stats import chi2_contingency

    table = np.vstack([ref_counts, cur_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    table, pooled = _pool_sparse(table)
    if table.shape[1] < 2 or min(table.sum(axis=1)) == 0:
        return 0.0, 1.0, 0, pooled
    result = chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), int(result.dof), pooled


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2: 0 = identical, 1 = disjoint."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(np.asarray(p, float), np.asarray(q, float), base=2))


def _scale(reference: np.ndarray, current: np.ndarray) -> float:
    """Spread used to make the Wasserstein distance unit-free: IQR, else std, else 1."""
    q75, q25 = np.percentile(reference, [75, 25])
    for s in (q75 - q25, np.std(reference), np.std(np.concatenate([reference, current]))):
        if s > 0 and np.isfinite(s):
            return float(s)
    return 1.0


def _split_nulls(ser: pd.Series) -> tuple[np.ndarray, int, bool]:
    """(non-null values, null count, numeric?) without per-element Python work when numeric."""
    if pd.api.types.is_numeric_dtype(ser) and not pd.api.types.is_bool_dtype(ser):
        arr = ser.to_numpy(dtype=float, na_value=np.nan)
        null = np.isnan(arr)
        return arr[~null], int(null.sum()), True
    null = ser.isna().to_numpy()
    values = ser[~null]
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all() and not pd.api.types.is_bool_dtype(values):
        return numbers.to_numpy(float), int(null.sum()), True
    return values.to_numpy(object), int(null.sum()), False


def _text_keys(values: np.ndarray) -> np.ndarray:
    return np.array([_label(v) for v in values], dtype=object)


def _category_counts(ref: np.ndarray, cur: np.ndarray) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Categories of the union and per-sample counts; O(n) for small integer codes."""
    both = np.concatenate([ref, cur])
    if both.dtype.kind == "f" and both.size:
        lo, hi = both.min(), both.max()
        if hi - lo <= 10_000 and np.all(both == np.round(both)):
            codes = (both - lo).astype(np.int64)
            size = int(hi - lo) + 1
            r = np.bincount(codes[: len(ref)], minlength=size)
            c = np.bincount(codes[len(ref) :], minlength=size)
            keep = (r + c) > 0
            return list(np.arange(size)[keep] + lo), r[keep], c[keep]
    cats, inverse = np.unique(both, return_inverse=True)
    k = len(cats)
    return (
        list(cats),
        np.bincount(inverse[: len(ref)], minlength=k),
        np.bincount(inverse[len(ref) :], minlength=k),
    )


def _discrete_keys(ref: pd.Series, cur: pd.Series) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Both samples on a common key type (numbers when both are numeric-like, else text)."""
    r, r_null, r_num = _split_nulls(ref)
    c, c_null, c_num = _split_nulls(cur)
    if not (r_num and c_num):
        r, c = _text_keys(r), _text_keys(c)
    return r, c, r_null, c_null


def _label(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, np.generic):
        return str(v.item())
    return str(v)


def _test_discrete(name: str, ref: pd.Series, cur: pd.Series) -> ColumnDrift:
    r_keys, c_keys, r_null, c_null = _discrete_keys(ref, cur)
    cats, r_counts, c_counts = _category_counts(r_keys, c_keys)
    labels = [_label(c) for c in cats]
    if r_null or c_null:
        # A change in how often a value is missing is a change in the data too.
        r_counts, c_counts = np.append(r_counts, r_null), np.append(c_counts, c_null)
        labels.append(NULL_CATEGORY)
    stat, p, dof, pooled = chi_square_test(r_counts, c_counts)
    note = f"{pooled} sparse categories pooled" if pooled else ""
    new = [lbl for lbl, r, c in zip(labels, r_counts, c_counts) if r == 0 and c > 0]
    vanished = [lbl for lbl, r, c in zip(labels, r_counts, c_counts) if r > 0 and c == 0]
    return ColumnDrift(
        column=name,
        kind="discrete",
        test="chi_square",
        statistic=stat,
        p_value=p,
        effect=jensen_shannon(r_counts, c_counts),
        effect_name="jensen_shannon",
        n_reference=int(r_counts.sum()),
        n_current=int(c_counts.sum()),
        dof=dof,
        note=note,
        labels=labels,
        reference_share=list(r_counts / r_counts.sum()),
        current_share=list(c_counts / c_counts.sum()),
        new_categories=new,
        vanished_categories=vanished,
    )


def continuous_test(name: str, ref: pd.Series, cur: pd.Series) -> ColumnDrift:
    """Drift of numeric column ``name``: the two-sample Kolmogorov-Smirnov test of ``ref``
    against ``cur`` (non-numeric and non-finite values left out), the Wasserstein distance
    scaled by the pooled IQR as the effect size, and both samples' histograms for the report."""
    from scipy.stats import ks_2samp, wasserstein_distance

    r = pd.to_numeric(ref, errors="coerce").dropna().to_numpy(float)
    c = pd.to_numeric(cur, errors="coerce").dropna().to_numpy(float)
    r, c = r[np.isfinite(r)], c[np.isfinite(c)]
    # The exact KS distribution is slow for big samples and the asymptotic one is accurate there.
    method = "exact" if len(r) * len(c) <= 10_000 else "asymp"
    ks = ks_2samp(r, c, method=method)
    effect = wasserstein_distance(r, c) / _scale(r, c)
    lo, hi = np.percentile(np.concatenate([r, c]), [0.5, 99.5])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    r_hist = np.histogram(np.clip(r, lo, hi), edges)[0]
    c_hist = np.histogram(np.clip(c, lo, hi), edges)[0]
    return ColumnDrift(
        column=name,
        kind="continuous",
        test="ks",
        statistic=float(ks.statistic),
        p_value=float(ks.pvalue),
        effect=float(effect),
        effect_name="wasserstein_iqr",
        n_reference=len(r),
        n_current=len(c),
        labels=[f"{e:.4g}" for e in edges],
        reference_share=list(r_hist / max(r_hist.sum(), 1)),
        current_share=list(c_hist / max(c_hist.sum(), 1)),
    )


def _is_discrete(spec: ColumnSpec | None, ref: pd.Series, cur: pd.Series, max_values: int) -> bool:
    """Schema says so, or the data has few distinct values (never KS on a ternary column)."""
    if spec is not None and spec.is_discrete(max_values):
        return True
    both = pd.concat([ref.dropna(), cur.dropna()], ignore_index=True)
    if not pd.api.types.is_numeric_dtype(both) and pd.to_numeric(both, errors="coerce").isna().any():
        return True  # text that is not numbers is categorical whatever the schema says
    return both.nunique() <= max_values


def column_drift(
    name: str, spec: ColumnSpec | None, reference: pd.DataFrame, current: pd.DataFrame, dcfg: DriftConfig
) -> ColumnDrift:
    """One feature's test (before the correction for testing many): ``reference`` and
    ``current`` are frames, or anything indexable by column name that has ``columns``."""
    in_ref, in_cur = name in reference.columns, name in current.columns
    if not (in_ref and in_cur):
        where = "reference" if not in_ref else "current data"
        # A feature the reference never had (or the batch lost) is a change of the data itself.
        return ColumnDrift(
            column=name,
            kind="missing",
            test="presence",
            statistic=1.0,
            p_value=0.0,
            effect=1.0,
            effect_name="presence",
            n_reference=len(reference) if in_ref else 0,
            n_current=len(current) if in_cur else 0,
            note=f"column absent from the {where}",
        )
    ref, cur = reference[name], current[name]
    r_nulls, c_nulls = int(ref.isna().sum()), int(cur.isna().sum())
    r_valid, c_valid = len(ref) - r_nulls, len(cur) - c_nulls
    if r_valid == 0 or c_valid == 0:
        result = ColumnDrift(
            column=name,
            kind="discrete",
            test="none",
            statistic=float("nan"),
            p_value=1.0,
            effect=0.0,
            effect_name="none",
            n_reference=r_valid,
            n_current=c_valid,
            note="no values to compare in one of the samples",
        )
    elif _is_discrete(spec, ref, cur, dcfg.max_discrete_values):
        result = _test_discrete(name, ref, cur)
    else:
        result = continuous_test(name, ref, cur)
    result.null_share_reference = r_nulls / len(ref) if len(ref) else 0.0
    result.null_share_current = c_nulls / len(cur) if len(cur) else 0.0
    return result


def _target_shift(reference: pd.DataFrame, current: pd.DataFrame, schema: DatasetSchema) -> dict | None:
    col = schema.target.column
    if col not in reference.columns or col not in current.columns:
        return None
    r_keys, c_keys, _, _ = _discrete_keys(reference[col], current[col])
    if not len(r_keys) or not len(c_keys):
        return None
    cats, r_counts, c_counts = _category_counts(r_keys, c_keys)
    labels = [_label(c) for c in cats]
    r_share, c_share = r_counts / r_counts.sum(), c_counts / c_counts.sum()
    pos = _label(schema.positive_label)
    # The threat class may be several raw labels (or every label but the benign ones).
    threat = np.asarray(schema.is_threat(pd.Series(list(cats), dtype=object)), dtype=bool)
    change = _round(float(c_share[threat].sum() - r_share[threat].sum()))
    return {
        "column": col,
        "positive_label": pos,
        "reference": {k: _round(float(v)) for k, v in zip(labels, r_share)},
        "current": {k: _round(float(v)) for k, v in zip(labels, c_share)},
        "positive_share_change": change,
    }


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: DatasetSchema,
    dcfg: DriftConfig,
    *,
    columns: list[ColumnDrift] | None = None,
) -> DriftResult:
    """Test every schema feature, correct the p-values, decide per column and for the data set.

    ``columns``: the features' :func:`column_drift` results, in schema order, when they were
    computed elsewhere (one task per column on Dask workers); else they are computed here."""
    if columns is None:
        columns = [
            column_drift(name, spec, reference, current, dcfg) for name, spec in schema.columns.items()
        ]
    tested = [c for c in columns if c.tested]
    adjusted = adjust_pvalues([c.p_value for c in tested], dcfg.correction)
    for col, p_adj in zip(tested, adjusted):
        col.p_adjusted = float(p_adj)
        col.drifted = bool(p_adj < dcfg.alpha and col.effect >= dcfg.min_effect)
    for col in columns:
        if not col.tested:
            col.p_adjusted = 1.0
    return DriftResult(
        columns=columns,
        alpha=dcfg.alpha,
        correction=dcfg.correction,
        min_effect=dcfg.min_effect,
        drift_share_threshold=dcfg.drift_share,
        n_reference=len(reference),
        n_current=len(current),
        target=_target_shift(reference, current, schema),
    )
