"""Reasons in aggregate, for the reports: which columns the model leans on (global importance),
what fools it (the reasons behind its false positives), and why its alert rate moved between two
sets of rows (mean contributions on served traffic against the test split).

All of them are plain summaries of :class:`netsec_tasks.explain.Contributions` computed by the
one explainer every door uses; the reports (``netsec evaluate``, the monitoring report) only lay
them out. Explaining costs TreeSHAP time per row (about 1 ms for boosted models, up to 0.2 s for
a fully grown 300-tree forest), so reports explain a bounded, seeded sample of their rows
(:func:`explain_sample`) and say how many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from netsec_tasks.explain.explainer import Contributions, Explainer

# Rows a report explains at most (a seeded sample of its rows): ~1 s for boosted models, a few
# minutes for a 300-tree forest of fully grown trees on 2 cores.
REPORT_ROWS = 1000


@dataclass(frozen=True)
class Explained:
    """Contributions of a sample of a report's rows: ``rows`` are their positions in the
    report's rows, ``of`` how many rows there were."""

    contributions: Contributions
    rows: np.ndarray
    of: int

    @property
    def sampled(self) -> bool:
        return len(self.rows) < self.of

    def describe(self) -> str:
        c = self.contributions
        n = (
            f"{len(self.rows):,} of {self.of:,} rows (a seeded sample)"
            if self.sampled
            else f"{self.of:,} rows"
        )
        return f"mean contributions over {n}, in {c.unit}"


def explain_sample(
    explainer: Explainer,
    x: Any,
    *,
    max_rows: int = REPORT_ROWS,
    seed: int = 0,
    keep: np.ndarray | None = None,
) -> Explained:
    """Contributions of up to ``max_rows`` rows of ``x`` (all when there are fewer), chosen by a
    seeded draw; ``keep`` (bool mask) marks rows drawn first (e.g. the false positives, so a
    report about them does not depend on how few the sample caught)."""
    frame = explainer.frame(x)
    n = len(frame)
    rng = np.random.default_rng(seed)
    if n <= max_rows:
        rows = np.arange(n)
    else:
        first = np.flatnonzero(keep) if keep is not None else np.zeros(0, dtype=np.intp)
        first = rng.permutation(first)[:max_rows]
        rest = np.setdiff1d(np.arange(n), first)
        more = rng.choice(rest, max_rows - len(first), replace=False)
        rows = np.sort(np.concatenate([first, more]).astype(np.intp))
    return Explained(explainer.contributions(frame.iloc[rows]), rows, n)


def global_importance(
    explained: Explained, groups: dict[str, np.ndarray] | None = None, *, top: int | None = None
) -> pd.DataFrame:
    """Mean |contribution| per schema column over the explained rows (column ``overall``) and over
    each group's rows (``groups``: name -> bool mask over the report's rows, e.g. per raw
    label), most important first; ``top``: keep that many columns."""
    values = np.abs(explained.contributions.values)
    table = pd.DataFrame({"overall": values.mean(axis=0)}, index=list(explained.contributions.features))
    for name, mask in (groups or {}).items():
        inside = np.asarray(mask, dtype=bool)[explained.rows]
        table[name] = values[inside].mean(axis=0) if inside.any() else np.nan
    table = table.sort_values("overall", ascending=False)
    table.index.name = "column"
    return table.head(top) if top else table


def top_reasons(explained: Explained, mask: np.ndarray, *, k: int = 3, top: int | None = 10) -> pd.DataFrame:
    """The reasons behind a set of rows (``mask`` over the report's rows; e.g. the false
    positives at the operating point): per column, in how many of those rows it is among the
    ``k`` strongest contributions towards threat, and its mean contribution over them; most
    frequent first. Empty when no explained row is in the set."""
    inside = np.asarray(mask, dtype=bool)[explained.rows]
    values = explained.contributions.values[inside]
    features = list(explained.contributions.features)
    if not len(values):
        return pd.DataFrame(columns=["rows", "share", "mean_contribution"]).rename_axis("column")
    towards = np.where(values > 0, values, 0.0)
    k = min(k, len(features))
    best = np.argpartition(-towards, k - 1, axis=1)[:, :k]
    counts = np.zeros(len(features), dtype=np.int64)
    for row, cols in zip(towards, best):
        for j in cols:
            if row[j] > 0:
                counts[j] += 1
    table = pd.DataFrame(
        {
            "rows": counts,
            "share": counts / len(values),
            "mean_contribution": values.mean(axis=0),
        },
        index=features,
    )
    table = table[table["rows"] > 0].sort_values(["rows", "mean_contribution"], ascending=False)
    table.index.name = "column"
    return table.head(top) if top else table


def contribution_shift(reference: Explained, current: Explained, *, top: int | None = 10) -> pd.DataFrame:
    """Why the alert rate moved: the mean contribution of each column on ``reference`` rows (the
    test split) and on ``current`` rows (served traffic), and the change (positive: the column
    now pushes rows further towards an alert), largest change first. The changes of all
    columns add up to the change of the mean margin (additivity)."""
    if reference.contributions.unit != current.contributions.unit:
        raise ValueError("contributions in different units cannot be compared")
    ref = reference.contributions.values.mean(axis=0)
    cur = current.contributions.values.mean(axis=0)
    table = pd.DataFrame(
        {"reference": ref, "current": cur, "change": cur - ref},
        index=list(current.contributions.features),
    )
    table = table.iloc[np.argsort(-np.abs(table["change"].to_numpy()), kind="stable")]
    table.index.name = "column"
    return table.head(top) if top else table
