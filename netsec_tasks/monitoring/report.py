"""The monitoring report: a YAML record and a self-contained HTML page (inline CSS and SVG, no
scripts or remote assets) with the run's figures and their trend over past runs."""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

import yaml

from netsec_tasks.drift.report import _CSS as DRIFT_CSS
from netsec_tasks.plain import plain

_CSS = (
    DRIFT_CSS
    + """
.trend{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:1rem}
.chart{background:#fff;border-radius:8px;padding:.6rem .8rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.chart h3{font-size:.95rem;margin:0 0 .3rem} .summary.trigger{border-left-color:#c62828}
.kv{font-variant-numeric:tabular-nums}
"""
)
_LINE, _BAND, _REF, _MARK = "#2457c5", "#c9d6f3", "#8a8f98", "#c62828"


def render_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(plain(doc), sort_keys=False, allow_unicode=True, width=120)


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def line_svg(
    values: list[Any],
    *,
    lo: float | None = None,
    hi: float | None = None,
    band: list[tuple[Any, Any]] | None = None,
    ref: float | None = None,
    ref_label: str = "",
    marks: list[bool] | None = None,
    labels: list[str] | None = None,
    width: int = 360,
    height: int = 110,
    fmt: str = ".2f",
) -> str:
    """A small line chart of ``values`` (None: no point) with an optional interval band, a
    reference line and red marks (runs that requested retraining)."""
    pts = [_num(v) for v in values]
    known = [v for v in pts if v is not None]
    extra = [v for pair in (band or []) for v in map(_num, pair) if v is not None]
    if ref is not None:
        extra.append(ref)
    if not known:
        return '<p class="note">no values yet</p>'
    lo = min(known + extra) if lo is None else lo
    hi = max(known + extra) if hi is None else hi
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    left, right, top, bottom = 34, 6, 6, 16
    w, h = width - left - right, height - top - bottom
    n = len(pts)

    def x(i: int) -> float:
        return left + (w * i / (n - 1) if n > 1 else w / 2)

    def y(v: float) -> float:
        return top + h * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#b8bec7"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{format(hi, fmt)}</text>',
        f'<text x="{left - 4}" y="{top + h}" text-anchor="end">{format(lo, fmt)}</text>',
    ]
    if band:
        known_band = [
            (i, lo_b, hi_b)
            for i, b in enumerate(band)
            if (lo_b := _num(b[0])) is not None and (hi_b := _num(b[1])) is not None
        ]
        upper = [(x(i), y(hi_b)) for i, _, hi_b in known_band]
        lower = [(x(i), y(lo_b)) for i, lo_b, _ in known_band]
        if len(upper) > 1:
            poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower[::-1])
            out.append(f'<polygon points="{poly}" fill="{_BAND}" opacity="0.7"/>')
    if ref is not None:
        out.append(
            f'<line x1="{left}" y1="{y(ref):.1f}" x2="{left + w}" y2="{y(ref):.1f}" '
            f'stroke="{_REF}" stroke-dasharray="4 3"><title>{html.escape(ref_label)}</title></line>'
        )
    segment: list[str] = []
    for i, v in enumerate(pts):
        if v is None:
            if len(segment) > 1:
                out.append(
                    f'<polyline points="{" ".join(segment)}" fill="none" stroke="{_LINE}" stroke-width="1.5"/>'
                )
            segment = []
            continue
        segment.append(f"{x(i):.1f},{y(v):.1f}")
    if len(segment) > 1:
        out.append(
            f'<polyline points="{" ".join(segment)}" fill="none" stroke="{_LINE}" stroke-width="1.5"/>'
        )
    for i, v in enumerate(pts):
        if v is None:
            continue
        marked = bool(marks and marks[i])
        tip = (
            (labels[i] + ": " if labels else "")
            + format(v, fmt)
            + (" (retraining requested)" if marked else "")
        )
        out.append(
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="{3.5 if marked else 2}" '
            f'fill="{_MARK if marked else _LINE}"><title>{html.escape(tip)}</title></circle>'
        )
    if labels:
        out.append(f'<text x="{left}" y="{height - 3}">{html.escape(labels[0][:16])}</text>')
        out.append(
            f'<text x="{left + w}" y="{height - 3}" text-anchor="end">{html.escape(labels[-1][:16])}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _bars(edges: list[str], a: list[float], b: list[float], width: int = 380, height: int = 90) -> str:
    k = len(a)
    if not k:
        return ""
    top = max(max(a), max(b), 1e-9)
    slot, base, plot_h = width / k, height - 14, height - 18
    out = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for i in range(k):
        for j, (share, colour) in enumerate(((a[i], "#5b7db1"), (b[i], "#e8833a"))):
            hh = plot_h * share / top
            out.append(
                f'<rect x="{i * slot + j * slot / 2:.1f}" y="{base - hh:.1f}" width="{slot / 2:.1f}" '
                f'height="{hh:.1f}" fill="{colour}"><title>[{html.escape(edges[i])}, '
                f"{html.escape(edges[i + 1])}): {'test split' if j == 0 else 'traffic'} "
                f"{share:.1%}</title></rect>"
            )
    out.append(
        f'<text x="0" y="{height - 2}">{html.escape(edges[0])}</text>'
        f'<text x="{width}" y="{height - 2}" text-anchor="end">{html.escape(edges[-1])}</text></svg>'
    )
    return "".join(out)


def _fmt(v: Any, spec: str = ".3f") -> str:
    n = _num(v)
    return "–" if n is None else format(n, spec)


def _ci(ci: Any) -> str:
    return f"{_fmt(ci[0])}–{_fmt(ci[1])}" if ci else "–"


def render_html(doc: dict[str, Any], history: list[dict[str, Any]], *, drift_page: str | None = None) -> str:
    """The page: decision, figures, live metrics, traffic, drift, verdicts, trend."""
    e = html.escape
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    trig = bool(doc.get("trigger"))
    live = doc.get("live") or {}
    traffic = doc.get("traffic") or {}
    drift = doc.get("drift") or {}
    contract = doc.get("contract_violations") or {}
    feedback = doc.get("feedback") or {}
    title = f"netsec monitoring: {doc.get('model_name')} v{doc.get('model_version') or '–'}"
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<section class="summary {"trigger" if trig else ""}"><div class="verdict">'
        f"{'Retraining requested' if trig else 'No retraining requested'}</div>",
        f"<div>{e(str(doc.get('trigger_reason') or ''))}</div><dl>",
        f"<dt>Run</dt><dd>{e(str(doc.get('run_id')))}</dd>",
        f"<dt>Prediction log</dt><dd>{e(str(doc.get('log')))}</dd>",
        f'<dt>New rows</dt><dd class="kv">{traffic.get("rows", 0):,} in {traffic.get("requests", 0):,} '
        f"requests"
        + (f" ({_fmt(traffic.get('rows_per_hour'), '.1f')} per hour)" if traffic.get("rows_per_hour") else "")
        + "</dd>",
        (
            f"<dt>Contract violations</dt><dd><strong>surge:</strong> {e(str(contract.get('reason')))}</dd>"
            if contract.get("surge")
            else f"<dt>Contract violations</dt><dd>{e(str(contract.get('reason', '')))}</dd>"
        ),
        f"<dt>Traffic drift</dt><dd>{e(str(drift.get('reason', '')))}</dd>",
        f'<dt>Live F1</dt><dd class="kv">{e(str(live.get("decision", "")))}</dd>',
        f"<dt>Generated</dt><dd>{now}</dd></dl></section>",
    ]

    # Trend over past runs.
    hist = history
    labels = [str(h.get("at", ""))[:16].replace("T", " ") for h in hist]
    marks = [bool(h.get("trigger")) for h in hist]
    out.append('<h2>Trend</h2><div class="trend">')
    charts = [
        (
            "Traffic drift share (columns drifted)",
            line_svg(
                [h.get("drift_share") for h in hist],
                lo=0,
                hi=1,
                marks=marks,
                labels=labels,
                ref=doc.get("drift_share_threshold"),
                ref_label="data-set drift above this",
            ),
        ),
        (
            "Live F1 of the threat class (with its interval)",
            line_svg(
                [h.get("live_f1") for h in hist],
                lo=0,
                hi=1,
                marks=marks,
                labels=labels,
                band=[tuple(h.get("live_f1_ci") or (None, None)) for h in hist],
                ref=doc.get("f1_floor"),
                ref_label="F1 floor",
            ),
        ),
        (
            "Volume (rows per hour)",
            line_svg([h.get("rows_per_hour") for h in hist], lo=0, marks=marks, labels=labels, fmt=".0f"),
        ),
        (
            "Threat rate (Production's predictions)",
            line_svg(
                [h.get("threat_rate") for h in hist],
                lo=0,
                hi=1,
                marks=marks,
                labels=labels,
                ref=traffic.get("threat_rate_test"),
                ref_label="on the test split",
            ),
        ),
    ]
    for name, svg in charts:
        out.append(f'<div class="chart"><h3>{e(name)}</h3>{svg}</div>')
    out.append(
        '</div><p class="note">Red points: runs that requested a retraining. Dashed lines: '
        "the drift threshold, the F1 floor, the test split's threat rate.</p>"
    )

    # Live metrics.
    out += [
        "<h2>Live metrics (analysts' verdicts)</h2>",
        f'<p class="note">Verdicts on predictions of v{e(str(doc.get("model_version")))} made in '
        f"the last {_fmt(doc.get('window_hours'), 'g')} hours; {live.get('other_versions', 0)} "
        "verdicts on other versions are not counted; "
        f"{live.get('without_logged_prediction', 0)} verdicts of the window have no prediction in "
        f"this model's log and {live.get('malformed_ids', 0)} an id that is not canonical (not "
        "counted). Intervals: Wilson (precision, recall), "
        "bootstrap (F1). Analysts mostly triage flagged rows, so recall rests on fewer verdicts.</p>",
        "<table><thead><tr><th>Figure</th><th>Value</th><th>Interval</th><th>From</th></tr></thead><tbody>",
        f'<tr><td>Precision</td><td class="num">{_fmt(live.get("precision"))}</td><td class="num">'
        f"{_ci(live.get('precision_ci'))}</td><td>TP {live.get('tp', 0)} / predicted threats "
        f"{live.get('tp', 0) + live.get('fp', 0)}</td></tr>",
        f'<tr><td>Recall</td><td class="num">{_fmt(live.get("recall"))}</td><td class="num">'
        f"{_ci(live.get('recall_ci'))}</td><td>TP {live.get('tp', 0)} / real threats "
        f"{live.get('tp', 0) + live.get('fn', 0)}</td></tr>",
        f'<tr><td>F1</td><td class="num">{_fmt(live.get("f1"))}</td><td class="num">'
        f"{_ci(live.get('f1_ci'))}</td><td>{live.get('labelled', 0)} verdicts (TN {live.get('tn', 0)}, "
        f"FP {live.get('fp', 0)}, FN {live.get('fn', 0)})</td></tr>",
        "</tbody></table>",
    ]

    # Traffic against the test split.
    out.append("<h2>Traffic against the test split</h2><dl>")
    if traffic.get("threat_rate") is not None:
        out.append(
            f'<dt>Threat rate</dt><dd class="kv">{_fmt(traffic.get("threat_rate"))} '
            f"(test split {_fmt(traffic.get('threat_rate_test'))}, p {_fmt(traffic.get('threat_rate_p'), '.3g')}"
            f"{', shifted' if traffic.get('threat_rate_shifted') else ''})</dd>"
        )
    score = traffic.get("score")
    if score:
        out.append(
            f'<dt>Threat probability</dt><dd class="kv">mean {_fmt(score["mean"])} (test '
            f"{_fmt(score['mean_test'])}), KS {_fmt(score['ks'])}, p {_fmt(score['p'], '.3g')}, "
            f"Wasserstein {_fmt(score['wasserstein_iqr'])} IQR"
            f"{', shifted' if score.get('shifted') else ''}</dd>"
        )
    by_version = traffic.get("by_version") or {}
    if by_version:
        out.append(
            "<dt>Rows by model version</dt><dd>"
            + ", ".join(f"v{e(k)}: {v:,}" for k, v in by_version.items())
            + "</dd>"
        )
    out.append("</dl>")
    if score and score.get("edges"):
        out.append(
            '<p class="legend">Threat probability:<span style="background:#5b7db1"></span>test '
            'split<span style="background:#e8833a"></span>traffic</p>'
            + _bars(score["edges"], score["test_share"], score["traffic_share"])
        )

    # Drift.
    out.append("<h2>Traffic drift</h2>")
    out.append(f"<p>{e(str(drift.get('reason', '')))}</p>")
    if drift.get("drifted_columns"):
        out.append("<p>Drifted columns: " + ", ".join(e(c) for c in drift["drifted_columns"]) + "</p>")
    excluded = drift.get("excluded") or {}
    if excluded.get("rows_excluded"):
        out.append(
            f"<p>{excluded['rows_excluded']:,} of {excluded.get('rows_checked', 0):,} logged "
            "rows break the input contract and were left out:</p><table><thead><tr><th>Reason"
            "</th><th>Rows</th></tr></thead><tbody>"
            + "".join(
                f'<tr><td>{e(r)}</td><td class="num">{c:,}</td></tr>'
                for r, c in (excluded.get("reasons") or {}).items()
            )
            + "</tbody></table>"
        )
    if drift_page:
        out.append(f'<p><a href="{e(drift_page)}">Per-column drift report</a></p>')

    # Verdicts into training data.
    if feedback:
        out += ["<h2>Verdicts as training data</h2>", f"<p>{e(str(feedback.get('reason', '')))}</p>"]
        if feedback.get("conflict_examples"):
            out.append(
                "<p>Verdicts contradicting identical rows of Production's data (label vs the "
                "identical rows' labels):</p><table><thead><tr><th>Prediction</th><th>Verdict"
                "</th><th>Training labels</th><th>Identical rows</th></tr></thead><tbody>"
                + "".join(
                    f"<tr><td>{e(c['prediction_id'])}</td><td>{e(str(c['label']))}</td>"
                    f"<td>{e(', '.join(map(str, c['training_labels'])))}</td>"
                    f'<td class="num">{c["identical_rows"]}</td></tr>'
                    for c in feedback["conflict_examples"]
                )
                + "</tbody></table>"
            )
        if feedback.get("changed_after_append"):
            out.append(
                f"<p>{feedback['changed_after_append']} verdict(s) changed after their row "
                "became training data (not applied): "
                + ", ".join(e(p) for p in feedback.get("changed_examples", []))
                + "</p>"
            )
    out.append("</body></html>")
    return "\n".join(out)
