"""Step 3, drift: new batch vs the Production model's training data, per-column tests.

The question is "has the data moved enough that the Production model may be stale?". Each
feature gets the test that suits it:

- discrete columns (categorical, or few distinct values such as the UCI ternary indicators):
  chi-square on the 2 x k contingency table, with categories too sparse for the chi-square
  approximation pooled; effect size = Jensen-Shannon distance (base 2, 0..1). KS is never used
  on them: with three values its statistic is dominated by ties.
- continuous columns: two-sample Kolmogorov-Smirnov; effect size = Wasserstein distance divided
  by the reference IQR (std when the IQR is 0), i.e. "how far the mass moved, in spreads".

p-values are corrected for testing many columns (holm by default). A column drifts only when its
adjusted p-value is below ``alpha`` *and* its effect reaches ``min_effect``: with tens of
thousands of rows every negligible difference is significant, and a model does not go stale over
a negligible difference. The data set drifts when more than ``drift_share`` of the columns do.

``detect_drift`` is the pure core; ``check_drift`` is the pipeline step (reference from the
Production model's ``netsec.reference_uri``); ``drift_between_files`` backs ``netsec drift``.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from netsec_tasks.config import DriftConfig, PipelineConfig
from netsec_tasks.errors import DataError, SourceUnavailable, ValidationFailed
from netsec_tasks.records import DriftRecord, RunContext, ValidationRecord
from netsec_tasks.catalog import RunCatalog
from netsec_tasks.schema import ColumnSpec, DatasetSchema, load_schema
from netsec_tasks.storage import Storage, atomic_write, is_s3
from netsec_tasks.table_io import read_table

Correction = Literal["bonferroni", "holm", "fdr_bh", "none"]
NULL_CATEGORY = "<null>"
# Cochran's rule: the chi-square approximation needs expected counts of about 5 or more.
MIN_EXPECTED = 5.0
HIST_BINS = 20
_LOCAL_SCHEMES = ("file://",)


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

    @property
    def tested(self) -> bool:
        return self.test != "none"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("statistic", "p_value", "p_adjusted", "effect", "null_share_reference",
                  "null_share_current"):
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
    target: dict[str, Any] | None = None   # label shares, info only

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

    def reason(self) -> str:
        k, n = len(self.drifted_columns), self.columns_tested
        if not n:
            return "no columns could be tested"
        listed = ", ".join(self.drifted_columns[:8]) + (" ..." if k > 8 else "")
        if self.dataset_drift:
            return (f"data-set drift: {k} of {n} columns drifted ({self.drift_share:.0%} > "
                    f"{self.drift_share_threshold:.0%}): {listed}")
        tail = f": {listed}" if k else ""
        return (f"no data-set drift: {k} of {n} columns drifted ({self.drift_share:.0%} <= "
                f"{self.drift_share_threshold:.0%}){tail}")

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
            "columns": [c.to_dict() for c in self.columns],
        }


def _round(x: float | None, digits: int = 6) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if not np.isfinite(x) else float(f"{x:.{digits}g}")


# --------------------------------------------------------------------------- statistics

def adjust_pvalues(p_values: Any, method: Correction = "holm") -> np.ndarray:
    """Family-wise (bonferroni, holm) or false-discovery (fdr_bh) adjusted p-values."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0 or method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method == "fdr_bh":
        adj = ranked * m / np.arange(1, m + 1)
        adj = np.minimum.accumulate(adj[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}: use bonferroni, holm, fdr_bh or none")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


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
    from scipy.stats import chi2

    table = np.vstack([ref_counts, cur_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    table, pooled = _pool_sparse(table)
    if table.shape[1] < 2 or min(table.sum(axis=1)) == 0:
        return 0.0, 1.0, 0, pooled
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return stat, float(chi2.sf(stat, dof)), dof, pooled


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2: 0 = identical, 1 = disjoint."""
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


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
            c = np.bincount(codes[len(ref):], minlength=size)
            keep = (r + c) > 0
            return list(np.arange(size)[keep] + lo), r[keep], c[keep]
    cats, inverse = np.unique(both, return_inverse=True)
    k = len(cats)
    return (list(cats), np.bincount(inverse[: len(ref)], minlength=k),
            np.bincount(inverse[len(ref):], minlength=k))


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
    return ColumnDrift(
        column=name, kind="discrete", test="chi_square", statistic=stat, p_value=p,
        effect=jensen_shannon(r_counts, c_counts), effect_name="jensen_shannon",
        n_reference=int(r_counts.sum()), n_current=int(c_counts.sum()), dof=dof, note=note,
        labels=labels, reference_share=list(r_counts / r_counts.sum()),
        current_share=list(c_counts / c_counts.sum()))


def _test_continuous(name: str, ref: pd.Series, cur: pd.Series) -> ColumnDrift:
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
        column=name, kind="continuous", test="ks", statistic=float(ks.statistic),
        p_value=float(ks.pvalue), effect=float(effect), effect_name="wasserstein_iqr",
        n_reference=len(r), n_current=len(c), labels=[f"{e:.4g}" for e in edges],
        reference_share=list(r_hist / max(r_hist.sum(), 1)),
        current_share=list(c_hist / max(c_hist.sum(), 1)))


def _is_discrete(spec: ColumnSpec | None, ref: pd.Series, cur: pd.Series, max_values: int) -> bool:
    """Schema says so, or the data has few distinct values (never KS on a ternary column)."""
    if spec is not None and spec.is_discrete(max_values):
        return True
    both = pd.concat([ref.dropna(), cur.dropna()], ignore_index=True)
    if not pd.api.types.is_numeric_dtype(both) and pd.to_numeric(both, errors="coerce").isna().any():
        return True  # text that is not numbers is categorical whatever the schema says
    return both.nunique() <= max_values


def _test_column(name: str, spec: ColumnSpec | None, reference: pd.DataFrame,
                 current: pd.DataFrame, dcfg: DriftConfig) -> ColumnDrift:
    in_ref, in_cur = name in reference.columns, name in current.columns
    if not (in_ref and in_cur):
        where = "reference" if not in_ref else "current data"
        # A feature the reference never had (or the batch lost) is a change of the data itself.
        return ColumnDrift(column=name, kind="missing", test="presence", statistic=1.0, p_value=0.0,
                           effect=1.0, effect_name="presence", n_reference=len(reference) if in_ref else 0,
                           n_current=len(current) if in_cur else 0, note=f"column absent from the {where}")
    ref, cur = reference[name], current[name]
    r_nulls, c_nulls = int(ref.isna().sum()), int(cur.isna().sum())
    r_valid, c_valid = len(ref) - r_nulls, len(cur) - c_nulls
    if r_valid == 0 or c_valid == 0:
        result = ColumnDrift(column=name, kind="discrete", test="none", statistic=float("nan"),
                             p_value=1.0, effect=0.0, effect_name="none",
                             n_reference=r_valid, n_current=c_valid,
                             note="no values to compare in one of the samples")
    elif _is_discrete(spec, ref, cur, dcfg.max_discrete_values):
        result = _test_discrete(name, ref, cur)
    else:
        result = _test_continuous(name, ref, cur)
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
    pos = _label(schema.target.positive)
    change = None
    if pos in labels:
        i = labels.index(pos)
        change = _round(float(c_share[i] - r_share[i]))
    return {
        "column": col,
        "positive_label": pos,
        "reference": {k: _round(float(v)) for k, v in zip(labels, r_share)},
        "current": {k: _round(float(v)) for k, v in zip(labels, c_share)},
        "positive_share_change": change,
    }


def detect_drift(reference: pd.DataFrame, current: pd.DataFrame, schema: DatasetSchema,
                 dcfg: DriftConfig) -> DriftResult:
    """Test every schema feature, correct the p-values, decide per column and for the data set."""
    columns = [_test_column(name, spec, reference, current, dcfg)
               for name, spec in schema.columns.items()]
    tested = [c for c in columns if c.tested]
    adjusted = adjust_pvalues([c.p_value for c in tested], dcfg.correction)
    for col, p_adj in zip(tested, adjusted):
        col.p_adjusted = float(p_adj)
        col.drifted = bool(p_adj < dcfg.alpha and col.effect >= dcfg.min_effect)
    for col in columns:
        if not col.tested:
            col.p_adjusted = 1.0
    return DriftResult(columns=columns, alpha=dcfg.alpha, correction=dcfg.correction,
                       min_effect=dcfg.min_effect, drift_share_threshold=dcfg.drift_share,
                       n_reference=len(reference), n_current=len(current),
                       target=_target_shift(reference, current, schema))


# --------------------------------------------------------------------------- reports

def render_yaml(result: DriftResult | None, *, extra: dict[str, Any] | None = None) -> str:
    """The YAML report: the generation time, ``extra`` and every column's test."""
    doc: dict[str, Any] = {"generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    doc.update(extra or {})
    if result is not None:
        doc.update(result.to_dict())
    return yaml.safe_dump(_plain(doc), sort_keys=False, allow_unicode=True, width=120)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1.5rem;
 color:#1d2330;background:#f6f7f9;max-width:1200px}
h1{font-size:1.4rem;margin:0 0 .8rem} h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.summary{border-radius:8px;padding:1rem 1.2rem;background:#fff;border-left:6px solid #2e8540;
 box-shadow:0 1px 3px rgba(0,0,0,.08)}
.summary.drift{border-left-color:#c62828} .summary.none{border-left-color:#8a8f98}
.verdict{font-size:1.15rem;font-weight:600;margin-bottom:.4rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.6rem 0 0}
dt{color:#5b6270} dd{margin:0}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 3px rgba(0,0,0,.08)}
th,td{padding:.3rem .5rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:middle;
 font-size:.9rem} th{background:#eef0f3;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap} td.nw{white-space:nowrap}
tr.drifted td{background:#fdecea} tr.drifted td:first-child{border-left:4px solid #c62828}
.tag{display:inline-block;padding:0 .45rem;border-radius:4px;font-size:.8rem;font-weight:600}
.tag.yes{background:#c62828;color:#fff} .tag.no{background:#e3e6ea;color:#3a404c}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;
 vertical-align:middle;border-radius:2px}
.note{color:#5b6270;font-size:.8rem}
svg text{font-size:9px;fill:#5b6270}
"""
_REF_COLOUR, _CUR_COLOUR = "#5b7db1", "#e8833a"


def _bars_svg(col: ColumnDrift, width: int = 220, height: int = 60) -> str:
    """Inline SVG: reference vs current shares side by side (categories or histogram bins)."""
    if not col.reference_share:
        return '<span class="note">no distribution</span>'
    ref, cur = np.asarray(col.reference_share), np.asarray(col.current_share)
    k = len(ref)
    top = max(float(ref.max()), float(cur.max()), 1e-9)
    plot_h, base = height - 16, height - 14
    slot = width / k
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="distribution of {html.escape(col.column)}">']
    for i in range(k):
        bar_w = max(slot / 2 - 1, 0.8) if col.kind == "discrete" else slot / 2
        for j, (share, colour) in enumerate(((ref[i], _REF_COLOUR), (cur[i], _CUR_COLOUR))):
            h = plot_h * share / top
            x = i * slot + j * bar_w + (0.5 if col.kind == "discrete" else 0)
            parts.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                         f'fill="{colour}"><title>{html.escape(_bar_label(col, i))}: '
                         f'{"reference" if j == 0 else "current"} {share:.1%}</title></rect>')
    parts.append(f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" stroke="#b8bec7"/>')
    if col.kind == "discrete":
        for i, lbl in enumerate(col.labels):
            if k <= 12:
                parts.append(f'<text x="{i * slot + slot / 2:.1f}" y="{height - 3}" text-anchor="middle">'
                             f'{html.escape(lbl[:10])}</text>')
    else:
        parts.append(f'<text x="0" y="{height - 3}">{html.escape(col.labels[0])}</text>')
        parts.append(f'<text x="{width}" y="{height - 3}" text-anchor="end">{html.escape(col.labels[-1])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bar_label(col: ColumnDrift, i: int) -> str:
    if col.kind == "discrete":
        return col.labels[i]
    return f"[{col.labels[i]}, {col.labels[i + 1]})"


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return format(x, spec)


def render_html(result: DriftResult | None, *, reference: str | None, current: str,
                reason: str, title: str = "netsec drift report",
                excluded: dict[str, dict] | None = None) -> str:
    """A self-contained page: inline CSS and SVG only, no scripts, fonts or remote assets."""
    e = html.escape
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if result is None:
        cls, verdict = "none", "No comparison"
    elif result.dataset_drift:
        cls, verdict = "drift", "Data-set drift detected"
    else:
        cls, verdict = "", "No data-set drift"
    out = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
           '<meta name="viewport" content="width=device-width,initial-scale=1">',
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{e(title)}</h1>", f'<section class="summary {cls}"><div class="verdict">{e(verdict)}</div>',
           f"<div>{e(reason)}</div><dl>",
           f"<dt>Reference</dt><dd>{e(reference or 'none')}</dd><dt>Current</dt><dd>{e(current)}</dd>"]
    if result is not None:
        out += [
            f"<dt>Rows</dt><dd>reference {result.n_reference:,} · current {result.n_current:,}</dd>",
            f"<dt>Drifted columns</dt><dd>{len(result.drifted_columns)} of {result.columns_tested} "
            f"({result.drift_share:.1%}; data-set drift above {result.drift_share_threshold:.0%})</dd>",
            f"<dt>Rule</dt><dd>adjusted p &lt; {result.alpha:g} ({e(result.correction)}) and effect "
            f"&ge; {result.min_effect:g}</dd>",
        ]
        if result.target:
            t = result.target
            shares = " · ".join(f"{e(str(k))}: {t['reference'].get(k, 0):.1%} → {t['current'].get(k, 0):.1%}"
                                for k in t["current"] | t["reference"])
            change = t.get("positive_share_change")
            out.append(f"<dt>Target {e(t['column'])} (info)</dt><dd>{shares}"
                       + (f"; threat share change {change:+.1%}" if change is not None else "") + "</dd>")
    out.append(f"<dt>Generated</dt><dd>{now}</dd></dl></section>")
    if result is not None and result.columns:
        out += ["<h2>Columns</h2>",
                f'<p class="legend">Distribution:<span style="background:{_REF_COLOUR}"></span>reference'
                f'<span style="background:{_CUR_COLOUR}"></span>current</p>',
                "<table><thead><tr><th>Column</th><th>Type</th><th>Test</th><th>Statistic</th>"
                "<th>p</th><th>Adjusted p</th><th>Effect</th><th>Drifted</th><th>Distribution</th>"
                "</tr></thead><tbody>"]
        order = sorted(result.columns, key=lambda c: (not c.drifted, -(c.effect or 0)))
        for c in order:
            tag = '<span class="tag yes">drift</span>' if c.drifted else '<span class="tag no">no</span>'
            note = f'<div class="note">{e(c.note)}</div>' if c.note else ""
            out.append(
                f'<tr class="{"drifted" if c.drifted else ""}"><td><strong>{e(c.column)}</strong>{note}</td>'
                f'<td>{e(c.kind)}</td><td class="nw">{e(c.test)}{f" (dof {c.dof})" if c.dof else ""}</td>'
                f'<td class="num">{_fmt(c.statistic)}</td><td class="num">{_fmt(c.p_value)}</td>'
                f'<td class="num">{_fmt(c.p_adjusted)}</td>'
                f'<td class="num">{_fmt(c.effect)}<div class="note">{e(c.effect_name)}</div></td>'
                f"<td>{tag}</td><td>{_bars_svg(c)}</td></tr>")
        out.append("</tbody></table>")
    if excluded:
        out += _excluded_html(excluded)
    out.append("</body></html>")
    return "\n".join(out)


def _excluded_html(excluded: dict[str, dict]) -> list[str]:
    """The rows left out of the comparison, per file, with the reasons and the first few."""
    e = html.escape
    out = ["<h2>Excluded rows</h2>",
           '<p class="note">Rows that break the data set\'s input contract are not compared; '
           "row numbers are 0-based positions in the file or the prediction log.</p>"]
    for what, info in excluded.items():
        n, k = info.get("rows_checked", 0), info.get("rows_excluded", 0)
        out.append(f"<h3>{e(what)}: {k:,} of {n:,} rows excluded</h3>")
        if not k:
            continue
        out.append("<table><thead><tr><th>Reason</th><th>Rows</th></tr></thead><tbody>")
        out += [f'<tr><td>{e(r)}</td><td class="num">{c:,}</td></tr>'
                for r, c in info.get("reasons", {}).items()]
        out.append("</tbody></table>")
        if info.get("examples"):
            out.append('<table><thead><tr><th>Row</th><th>Column</th><th>Value</th><th>Reason</th>'
                       "</tr></thead><tbody>")
            out += [f'<tr><td class="num">{x["row"]}</td><td>{e(x["column"])}</td>'
                    f'<td>{e(x["value"])}</td><td>{e(x["reason"])}</td></tr>'
                    for x in info["examples"]]
            out.append("</tbody></table>")
    return out


# --------------------------------------------------------------------------- loading

def _is_local(uri: str) -> bool:
    """A plain path or file:// URI; anything else with a scheme (runs:/, models:/, s3://,
    mlflow-artifacts:/) goes through MLflow. One-letter schemes are Windows drives."""
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", uri)
    return scheme is None or len(scheme.group(1)) == 1 or uri.startswith(_LOCAL_SCHEMES)


def _read_local(path: str | Path, what: str) -> pd.DataFrame:
    """A file, a glob, or a directory holding the data (train.parquet preferred), or serving's
    prediction log (its directory or ``.jsonl`` files: the served features, one row each)."""
    from netsec_tasks.prediction_log import is_prediction_log, read_prediction_log

    path = str(path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    p = Path(path)
    if is_prediction_log(p):
        try:
            return read_prediction_log(p, outputs=False)
        except DataError as exc:
            raise DataError(f"{what}: {exc}", source=None) from None
    if p.is_dir():
        preferred = sorted(p.rglob("train.parquet"))
        files = preferred or sorted(p.rglob("*.parquet")) or sorted(p.rglob("*.csv"))
        if not files:
            raise DataError(f"{what}: directory holds no Parquet or CSV file", source=path)
        return pd.concat([_read_local(f, what) for f in files], ignore_index=True)
    if p.is_file() and p.suffix.lower() in (".parquet", ".pq"):
        try:
            return pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError(f"{what}: cannot read Parquet: {exc}", source=path) from None
    try:
        return read_table(path)
    except DataError as exc:
        raise DataError(f"{what}: {exc}", source=None) from None


def load_reference(uri: str, *, tracking_uri: str | None = None,
                   storage: Storage | None = None) -> pd.DataFrame:
    """Reference data from a local path, a ``file://`` or ``s3://`` URI in storage, or an MLflow
    artifact URI (``runs:/...``: models registered before the storage hand-off)."""
    if is_s3(uri) and storage is not None:
        return storage.read_frame(uri)
    if _is_local(uri):
        return _read_local(uri, "reference data")
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    tmp = tempfile.mkdtemp(prefix="netsec-reference-")
    try:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp,
                                                        tracking_uri=tracking_uri)
        except MlflowException as exc:
            raise DataError(f"cannot download the Production model's reference data: {exc}; "
                            f"check the model version tag netsec.reference_uri", source=uri) from None
        except (OSError, ConnectionError) as exc:
            raise SourceUnavailable(f"{uri}: cannot reach the artifact store ({tracking_uri}): {exc}") from None
        return _read_local(local, f"reference data {uri}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- pipeline step

def _report_texts(result: DriftResult | None, *, reference: str | None, current: str,
                  reason: str, extra: dict[str, Any],
                  excluded: dict[str, dict] | None = None) -> tuple[str, str]:
    """(YAML, HTML) of one comparison; ``excluded``: rows left out, per input, with reasons."""
    doc_extra = {"reference_uri": reference, "current_uri": current,
                 **({"reason": reason} if result is None else {}), **extra}
    return (render_yaml(result, extra=doc_extra),
            render_html(result, reference=reference, current=current, reason=reason,
                        excluded=excluded))


def _write_reports(catalog: RunCatalog, result: DriftResult | None, **kw: Any) -> tuple[str, str]:
    yaml_text, html_text = _report_texts(result, **kw)
    return catalog.save_text("drift_report", yaml_text), catalog.save_text("drift_html", html_text)


def _write_local_reports(out_dir: Path, result: DriftResult | None, **kw: Any) -> tuple[Path, Path]:
    yaml_text, html_text = _report_texts(result, **kw)
    return atomic_write(out_dir / "drift_report.yaml", yaml_text), atomic_write(
        out_dir / "drift_report.html", html_text)


def _record(result: DriftResult | None, *, reference: str | None, current: str, reason: str,
            paths: tuple[Any, Any], has_reference: bool) -> DriftRecord:
    return DriftRecord(
        drift_detected=bool(result is not None and result.dataset_drift),
        has_reference=has_reference, reference_uri=reference, current_uri=current,
        drift_share=float(result.drift_share) if result else 0.0,
        drifted_columns=result.drifted_columns if result else [],
        columns_tested=result.columns_tested if result else 0,
        report_uri=str(paths[0]), html_uri=str(paths[1]), reason=reason)


def check_drift(cfg: PipelineConfig, run: RunContext, validation: ValidationRecord, *,
                reference_uri: str | None, schema: DatasetSchema | None = None) -> DriftRecord:
    """Compare the validated new batch with the Production model's training data."""
    schema = schema or load_schema(cfg.schema_path)
    catalog = RunCatalog.of(cfg, run)
    current_uri = validation.new_batch_uri
    extra = {"run_id": run.run_id}
    if reference_uri is None:
        reason = "no production model: nothing to compare against (first run)"
        paths = _write_reports(catalog, None, reference=None, current=current_uri, reason=reason, extra=extra)
        return _record(None, reference=None, current=current_uri, reason=reason, paths=paths,
                       has_reference=False)
    current = catalog.load_frame(current_uri)
    if current.empty:
        reason = "new batch is empty: no new rows to compare"
        paths = _write_reports(catalog, None, reference=reference_uri, current=current_uri, reason=reason,
                               extra=extra)
        return _record(None, reference=reference_uri, current=current_uri, reason=reason, paths=paths,
                       has_reference=True)
    reference = load_reference(reference_uri, tracking_uri=cfg.registry.tracking_uri,
                               storage=catalog.storage)
    result = detect_drift(reference, current, schema, cfg.drift)
    reason = result.reason()
    paths = _write_reports(catalog, result, reference=reference_uri, current=current_uri, reason=reason,
                           extra=extra)
    return _record(result, reference=reference_uri, current=current_uri, reason=reason, paths=paths,
                   has_reference=True)


# Checks that say something about the rows, not about whether two files can be compared: for
# drift they are reported (the excluded rows), never a reason to refuse.
_ROW_LEVEL_CHECKS = {"invalid_share", "column_null_share", "min_rows", "not_empty",
                     "target_classes", "target_labels"}
MAX_EXCLUDED_EXAMPLES = 20


def checked_rows(raw: pd.DataFrame, schema: DatasetSchema, cfg: PipelineConfig, *, source: str,
                 what: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows of ``raw`` that pass the input contract (``validate_frame``), and a summary of
    the excluded ones: how many, how many per reason, the first few problems (row = 0-based
    position in the file or in the prediction log). Raises ValidationFailed when the frame
    cannot be compared at all."""
    from netsec_tasks.validate import validate_frame

    checked = validate_frame(raw, schema, cfg.validation, source=source, split=what,
                             role="batch", require_target=False)
    fatal = [c for c in checked.failures if c.name not in _ROW_LEVEL_CHECKS]
    if fatal:
        raise ValidationFailed(f"{what} file cannot be compared: "
                               + "; ".join(c.details for c in fatal), source=source)
    invalid = checked.invalid
    per_reason = (invalid.drop_duplicates(["row", "reason"])["reason"].value_counts()
                  if len(invalid) else pd.Series(dtype=int))
    summary = {
        "rows_checked": int(checked.rows_checked),
        "rows_excluded": int(checked.rows_invalid),
        "reasons": {str(k): int(v) for k, v in per_reason.items()},
        "examples": [{"row": int(r.row), "column": str(r.column), "value": str(r.value),
                      "reason": str(r.reason)}
                     for r in invalid.head(MAX_EXCLUDED_EXAMPLES).itertuples(index=False)],
    }
    if checked.rows_checked and checked.clean.empty:
        raise ValidationFailed(f"{what} file: all {checked.rows_checked} rows break the input "
                               "contract, nothing left to compare: "
                               + "; ".join(f"{k} ({v} rows)" for k, v in summary["reasons"].items()),
                               source=source)
    return checked.clean, summary


def drift_between_files(ref_path: str | os.PathLike, cur_path: str | os.PathLike, cfg: PipelineConfig,
                        out_dir: str | os.PathLike, *, schema: DatasetSchema | None = None) -> DriftRecord:
    """``netsec drift REF CUR``: validate both files against the schema, then compare them.

    Rows that break the input contract are left out of the comparison (a broken row says
    nothing about the distribution) and reported, with their reasons, under ``excluded`` in the
    YAML and in the HTML report; however many there are, the rest is still compared. A file
    that cannot be compared at all (a missing feature column, an unknown column, no valid row
    left) raises ValidationFailed.
    """
    schema = schema or load_schema(cfg.schema_path)
    frames, excluded = {}, {}
    for what, path in (("reference", ref_path), ("current", cur_path)):
        frames[what], excluded[what] = checked_rows(_read_local(path, f"{what} file"), schema, cfg,
                                                    source=str(path), what=what)
    result = detect_drift(frames["reference"], frames["current"], schema, cfg.drift)
    reason = result.reason()
    paths = _write_local_reports(Path(out_dir), result, reference=str(ref_path),
                                 current=str(cur_path), reason=reason,
                                 extra={"excluded": excluded}, excluded=excluded)
    return _record(result, reference=str(ref_path), current=str(cur_path), reason=reason,
                   paths=paths, has_reference=True)
