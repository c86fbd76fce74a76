"""Drift reports: the YAML record and a self-contained HTML page (inline CSS and SVG only)."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import numpy as np
import yaml

from netsec_tasks.drift.stats import ColumnDrift, DriftResult
from netsec_tasks.plain import plain


def render_yaml(result: DriftResult | None, *, extra: dict[str, Any] | None = None) -> str:
    """The YAML report: the generation time, ``extra`` and every column's test."""
    doc: dict[str, Any] = {"generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    doc.update(extra or {})
    if result is not None:
        doc.update(result.to_dict())
    return yaml.safe_dump(plain(doc), sort_keys=False, allow_unicode=True, width=120)


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
.cat{font-size:.8rem;margin-top:.15rem} .cat.new strong{color:#c62828} .cat.vanished strong{color:#5b6270}
svg text{font-size:10px;fill:#3a404c}
"""
_REF_COLOUR, _CUR_COLOUR = "#5b7db1", "#e8833a"


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
    e = html.escape
    labels, ref, cur, _ = top_categories(col)
    new, vanished = set(col.new_categories), set(col.vanished_categories)
    row_h, label_w, text_w = 16, 112, 74
    bar_w = width - label_w - text_w
    top = max(float(ref.max(initial=0)), float(cur.max(initial=0)), 1e-9)
    height = row_h * len(labels) + 2
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="categories of {e(col.column)}">'
    ]
    for i, (lbl, r, c) in enumerate(zip(labels, ref, cur)):
        y = i * row_h + 1
        mark = " (new)" if lbl in new else " (vanished)" if lbl in vanished else ""
        weight = ' font-weight="700"' if mark else ""
        parts.append(
            f'<text x="{label_w - 4}" y="{y + 11}" text-anchor="end"{weight}>'
            f"<title>{e(lbl + mark)}</title>{e(_short(lbl))}</text>"
        )
        for j, (share, colour) in enumerate(((r, _REF_COLOUR), (c, _CUR_COLOUR))):
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
    ref, cur = np.asarray(col.reference_share), np.asarray(col.current_share)
    k = len(ref)
    top = max(float(ref.max()), float(cur.max()), 1e-9)
    plot_h, base = height - 16, height - 14
    slot = width / k
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="distribution of {html.escape(col.column)}">'
    ]
    for i in range(k):
        bar_w = slot / 2
        for j, (share, colour) in enumerate(((ref[i], _REF_COLOUR), (cur[i], _CUR_COLOUR))):
            h = plot_h * share / top
            x = i * slot + j * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{html.escape(_bar_label(col, i))}: '
                f"{'reference' if j == 0 else 'current'} {share:.1%}</title></rect>"
            )
    parts.append(f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" stroke="#b8bec7"/>')
    parts.append(f'<text x="0" y="{height - 3}">{html.escape(col.labels[0])}</text>')
    parts.append(f'<text x="{width}" y="{height - 3}" text-anchor="end">{html.escape(col.labels[-1])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _category_changes(col: ColumnDrift, limit: int = 6) -> str:
    """One line per kind of change: categories new in the current data, and vanished ones."""
    e = html.escape
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


def _bar_label(col: ColumnDrift, i: int) -> str:
    if col.kind == "discrete":
        return col.labels[i]
    return f"[{col.labels[i]}, {col.labels[i + 1]})"


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return format(x, spec)


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
    e = html.escape
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not_judged:
        cls, verdict = "drift", "Not judged: too many rows break the input contract"
    elif result is None:
        cls, verdict = "none", "No comparison"
    elif result.dataset_drift:
        cls, verdict = "drift", "Data-set drift detected"
    else:
        cls, verdict = "", "No data-set drift"
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
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
            f'<p class="legend">Distribution:<span style="background:{_REF_COLOUR}"></span>reference'
            f'<span style="background:{_CUR_COLOUR}"></span>current</p>',
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
                f'<td class="num">{_fmt(c.statistic)}</td><td class="num">{_fmt(c.p_value)}</td>'
                f'<td class="num">{_fmt(c.p_adjusted)}</td>'
                f'<td class="num">{_fmt(c.effect)}<div class="note">{e(c.effect_name)}</div></td>'
                f"<td>{tag}</td><td>{_bars_svg(c)}</td></tr>"
            )
        out.append("</tbody></table>")
    if excluded:
        out += _excluded_html(excluded)
    out.append("</body></html>")
    return "\n".join(out)


def _excluded_html(excluded: dict[str, dict]) -> list[str]:
    """The rows left out of the comparison, per file, with the reasons and the first few."""
    e = html.escape
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
