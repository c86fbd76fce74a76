"""Drift reports: the YAML record and a self-contained HTML page (inline CSS and SVG only, built
with :mod:`netsec_tasks.html_report`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from netsec_tasks.drift.stats import ColumnDrift, DriftResult
from netsec_tasks.html_report import (
    FIRST_COLOUR,
    SECOND_COLOUR,
    escape,
    generated_now,
    legend,
    number,
    page,
    paired_histogram,
    svg_open,
)
from netsec_tasks.sinks import yaml_text


def render_yaml(result: DriftResult | None, *, extra: dict[str, Any] | None = None) -> str:
    """The YAML report: the generation time, ``extra`` and every column's test."""
    doc: dict[str, Any] = {"generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    doc.update(extra or {})
    if result is not None:
        doc.update(result.to_dict())
    return yaml_text(doc)


TOP_K = 8  # categories drawn per discrete column; the rest are pooled as "other"
_LABEL_CHARS = 18  # longer category names are shortened (the full name is in the tooltip)


def top_categories(col: ColumnDrift, k: int = TOP_K) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """The ``k`` categories with the largest share in either sample, most common first, plus
    an "other (n)" row pooling the rest: (labels, reference shares, current shares, pooled)."""
    ref, cur = np.asarray(col.reference_share, float), np.asarray(col.current_share, float)
    order = np.argsort(-np.maximum(ref, cur), kind="stable")
    if len(order) <= k + 1:  # pooling a single category would hide it for nothing
        return [col.labels[i] for i in order], ref[order], cur[order], 0
    top, rest = order[:k], order[k:]
    labels = [col.labels[i] for i in top] + [f"other ({len(rest)})"]
    return (labels, np.append(ref[top], ref[rest].sum()), np.append(cur[top], cur[rest].sum()), len(rest))


def _short(text: str, limit: int = _LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _category_svg(col: ColumnDrift, width: int = 300) -> str:
    """Horizontal bars, one row per category (top-k + "other"): the name on the left, the
    reference and current share as two bars, the shares as text. Rows never overlap, however
    many categories the column has."""
    e = escape
    labels, ref, cur, _ = top_categories(col)
    new, vanished = set(col.new_categories), set(col.vanished_categories)
    row_h, label_w, text_w = 16, 112, 74
    bar_w = width - label_w - text_w
    top = max(float(ref.max(initial=0)), float(cur.max(initial=0)), 1e-9)
    height = row_h * len(labels) + 2
    parts = [svg_open(width, height, f"categories of {col.column}")]
    for i, (lbl, r, c) in enumerate(zip(labels, ref, cur)):
        y = i * row_h + 1
        mark = " (new)" if lbl in new else " (vanished)" if lbl in vanished else ""
        weight = ' font-weight="700"' if mark else ""
        parts.append(
            f'<text x="{label_w - 4}" y="{y + 11}" text-anchor="end"{weight}>'
            f"<title>{e(lbl + mark)}</title>{e(_short(lbl))}</text>"
        )
        for j, (share, colour) in enumerate(((r, FIRST_COLOUR), (c, SECOND_COLOUR))):
            w = bar_w * share / top
            parts.append(
                f'<rect x="{label_w}" y="{y + 1 + j * 7}" width="{max(w, 0.0):.1f}" '
                f'height="6" fill="{colour}"><title>{e(lbl)}: '
                f"{'reference' if j == 0 else 'current'} {share:.1%}</title></rect>"
            )
        parts.append(f'<text x="{width}" y="{y + 11}" text-anchor="end">{r:.0%} → {c:.0%}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bars_svg(col: ColumnDrift, width: int = 300, height: int = 60) -> str:
    """Inline SVG: reference vs current (categories as rows, or a histogram's bins)."""
    if not col.reference_share:
        return '<span class="note">no distribution</span>'
    if col.kind == "discrete":
        return _category_svg(col, width)
    return paired_histogram(
        col.labels,
        col.reference_share,
        col.current_share,
        width=width,
        height=height,
        label=f"distribution of {col.column}",
    )


def _category_changes(col: ColumnDrift, limit: int = 6) -> str:
    """One line per kind of change: categories new in the current data, and vanished ones."""
    e = escape
    out = []
    for what, cats, shares in (
        ("new", col.new_categories, col.current_share),
        ("vanished", col.vanished_categories, col.reference_share),
    ):
        if not cats:
            continue
        share = {lbl: s for lbl, s in zip(col.labels, shares)}
        shown = ", ".join(f"{e(c)} ({share.get(c, 0):.1%})" for c in cats[:limit])
        more = f" (+{len(cats) - limit} more)" if len(cats) > limit else ""
        out.append(f'<div class="cat {what}"><strong>{what}:</strong> {shown}{more}</div>')
    return "".join(out)


def render_html(
    result: DriftResult | None,
    *,
    reference: str | None,
    current: str,
    reason: str,
    title: str = "netsec drift report",
    excluded: dict[str, dict] | None = None,
    not_judged: str | None = None,
) -> str:
    """A self-contained page: inline CSS and SVG only, no scripts, fonts or remote assets.
    ``not_judged``: why the comparison gives no verdict (too many rows excluded); it is then the
    headline, before any figure."""
    e = escape
    now = generated_now()
    if not_judged:
        cls, verdict = "drift", "Not judged: too many rows break the input contract"
    elif result is None:
        cls, verdict = "none", "No comparison"
    elif result.dataset_drift:
        cls, verdict = "drift", "Data-set drift detected"
    else:
        cls, verdict = "", "No data-set drift"
    out = [
        f'<section class="summary {cls}"><div class="verdict">{e(verdict)}</div>',
        f"<div>{e(reason)}</div><dl>",
        f"<dt>Reference</dt><dd>{e(reference or 'none')}</dd><dt>Current</dt><dd>{e(current)}</dd>",
    ]
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
            shares = " · ".join(
                f"{e(str(k))}: {t['reference'].get(k, 0):.1%} → {t['current'].get(k, 0):.1%}"
                for k in t["current"] | t["reference"]
            )
            change = t.get("positive_share_change")
            out.append(
                f"<dt>Target {e(t['column'])} (info)</dt><dd>{shares}"
                + (f"; threat share change {change:+.1%}" if change is not None else "")
                + "</dd>"
            )
    if result is not None:
        changed = [c for c in result.columns if c.new_categories or c.vanished_categories]
        if changed:
            out.append(
                "<dt>Categories</dt><dd>"
                + "; ".join(
                    f"{e(c.column)}: "
                    + ", ".join(
                        (
                            [
                                f"{len(c.new_categories)} new ({e(', '.join(c.new_categories[:3]))}"
                                + (" ..." if len(c.new_categories) > 3 else "")
                                + ")"
                            ]
                            if c.new_categories
                            else []
                        )
                        + ([f"{len(c.vanished_categories)} vanished"] if c.vanished_categories else [])
                    )
                    for c in changed
                )
                + "</dd>"
            )
    out.append(f"<dt>Generated</dt><dd>{now}</dd></dl></section>")
    if result is not None and result.columns:
        out += [
            "<h2>Columns</h2>",
            legend("Distribution"),
            f'<p class="note">Drifted columns first, then every column by effect size, largest first. Categorical columns show '
            f'their {TOP_K} most common categories and pool the rest as "other"; categories '
            "only the current data has are marked new, those it lost vanished.</p>",
            "<table><thead><tr><th>Column</th><th>Type</th><th>Test</th><th>Statistic</th>"
            "<th>p</th><th>Adjusted p</th><th>Effect</th><th>Drifted</th><th>Distribution</th>"
            "</tr></thead><tbody>",
        ]
        order = result.by_effect()
        for c in order:
            tag = '<span class="tag yes">drift</span>' if c.drifted else '<span class="tag no">no</span>'
            note = (f'<div class="note">{e(c.note)}</div>' if c.note else "") + _category_changes(c)
            out.append(
                f'<tr class="{"drifted" if c.drifted else ""}"><td><strong>{e(c.column)}</strong>{note}</td>'
                f'<td>{e(c.kind)}</td><td class="nw">{e(c.test)}{f" (dof {c.dof})" if c.dof else ""}</td>'
                f'<td class="num">{number(c.statistic)}</td><td class="num">{number(c.p_value)}</td>'
                f'<td class="num">{number(c.p_adjusted)}</td>'
                f'<td class="num">{number(c.effect)}<div class="note">{e(c.effect_name)}</div></td>'
                f"<td>{tag}</td><td>{_bars_svg(c)}</td></tr>"
            )
        out.append("</tbody></table>")
    if excluded:
        out += _excluded_html(excluded)
    return page(title, out)


def _excluded_html(excluded: dict[str, dict]) -> list[str]:
    """The rows left out of the comparison, per file, with the reasons and the first few."""
    e = escape
    out = [
        "<h2>Excluded rows</h2>",
        '<p class="note">Rows that break the data set\'s input contract are not compared; '
        "row numbers are 0-based positions in the file or the prediction log.</p>",
    ]
    for what, info in excluded.items():
        n, k = info.get("rows_checked", 0), info.get("rows_excluded", 0)
        out.append(f"<h3>{e(what)}: {k:,} of {n:,} rows excluded</h3>")
        if not k:
            continue
        out.append("<table><thead><tr><th>Reason</th><th>Rows</th></tr></thead><tbody>")
        out += [
            f'<tr><td>{e(r)}</td><td class="num">{c:,}</td></tr>' for r, c in info.get("reasons", {}).items()
        ]
        out.append("</tbody></table>")
        if info.get("examples"):
            out.append(
                "<table><thead><tr><th>Row</th><th>Column</th><th>Value</th><th>Reason</th>"
                "</tr></thead><tbody>"
            )
            out += [
                f'<tr><td class="num">{x["row"]}</td><td>{e(x["column"])}</td>'
                f"<td>{e(x['value'])}</td><td>{e(x['reason'])}</td></tr>"
                for x in info["examples"]
            ]
            out.append("</tbody></table>")
    return out
