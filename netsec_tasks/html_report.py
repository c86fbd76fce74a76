"""The kit every HTML report is built with: drift (:mod:`netsec_tasks.drift.report`), evaluate
(:mod:`netsec_tasks.file_evaluation`) and monitoring (:mod:`netsec_tasks.monitoring.report`).

One document shell (:func:`page`), one stylesheet (:data:`CSS`), one way to print numbers
(:func:`number`, :func:`finite`), the SVG pieces the reports draw (:func:`svg_open`,
:func:`paired_histogram`, :func:`line_chart`, :func:`legend`) and embedded images
(:func:`png_image`). Pages are self-contained: inline CSS and SVG, images as data URIs, no
scripts, fonts or remote assets.

**Every piece of text that comes from data goes through :func:`escape`**: values, labels,
column and file names, run ids and the reasons that quote them come from files, spreadsheets,
API callers and attackers, and must never become markup. The kit's helpers escape the text they
take themselves; a report escapes what it writes between them with the same function. It is the
one place to change how data text is encoded for HTML.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from netsec_tasks.sinks import html_text

# Colours of the two samples a report compares (reference / current, test split / traffic).
FIRST_COLOUR, SECOND_COLOUR = "#5b7db1", "#e8833a"
_AXIS = "#b8bec7"
_LINE, _BAND, _REF_LINE, _MARK = "#2457c5", "#c9d6f3", "#8a8f98", "#c62828"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1.5rem;
 color:#1d2330;background:#f6f7f9;max-width:1200px}
h1{font-size:1.4rem;margin:0 0 .8rem} h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.summary{border-radius:8px;padding:1rem 1.2rem;background:#fff;border-left:6px solid #2e8540;
 box-shadow:0 1px 3px rgba(0,0,0,.08)}
.summary.drift,.summary.trigger{border-left-color:#c62828} .summary.none{border-left-color:#8a8f98}
.summary.info{border-left-color:#5b7db1}
.verdict{font-size:1.15rem;font-weight:600;margin-bottom:.4rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.6rem 0 0}
dt{color:#5b6270} dd{margin:0}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 3px rgba(0,0,0,.08)}
th,td{padding:.3rem .5rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:middle;
 font-size:.9rem} th{background:#eef0f3;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap} td.nw{white-space:nowrap}
tr.drifted td,tr.low td{background:#fdecea} tr.drifted td:first-child{border-left:4px solid #c62828}
.tag{display:inline-block;padding:0 .45rem;border-radius:4px;font-size:.8rem;font-weight:600}
.tag.yes{background:#c62828;color:#fff} .tag.no{background:#e3e6ea;color:#3a404c}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;
 vertical-align:middle;border-radius:2px}
.note{color:#5b6270;font-size:.8rem}
.warning{background:#fdecea;border-left:6px solid #c62828;padding:.6rem 1rem;border-radius:6px}
.cat{font-size:.8rem;margin-top:.15rem} .cat.new strong{color:#c62828} .cat.vanished strong{color:#5b6270}
.bar{display:inline-block;height:.7rem;background:#c62828;vertical-align:middle}
.bar.benign{background:#5b7db1}
.trend{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:1rem}
.chart{background:#fff;border-radius:8px;padding:.6rem .8rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.chart h3{font-size:.95rem;margin:0 0 .3rem}
.kv{font-variant-numeric:tabular-nums}
img{max-width:100%;background:#fff;margin:.3rem .6rem .3rem 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
svg text{font-size:10px;fill:#3a404c}
"""


# --------------------------------------------------------------------------- text and numbers


def escape(value: Any) -> str:
    """``value`` as HTML text, safe in element content and in quoted attribute values
    (``& < > " '`` escaped). The one encoding of data text for every report (see the module
    docstring); ``str(value)`` first, so labels and numbers of any type can be passed. It is
    the HTML sink's encoder of :mod:`netsec_tasks.sinks` (text made valid UTF-8 first)."""
    return html_text(value)


def finite(x: Any) -> float | None:
    """``x`` as a float; None when it is missing, not a number, NaN or infinite."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def number(x: Any, spec: str = ".3g") -> str:
    """``x`` formatted with ``spec`` (a :func:`format` spec: ``.3g``, ``.4f``, ``.1%``, ``,``);
    an en dash when it is missing or not a finite number."""
    v = finite(x)
    return "–" if v is None else format(v, spec)


def generated_now() -> str:
    """The time a page is generated, as the reports print it: ``2025-01-31 14:05 UTC``."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------- the document


def page(title: str, body: Iterable[str], *, heading: str | None = None) -> str:
    """A whole self-contained document: ``title`` (escaped) in ``<title>`` and as the ``<h1>``
    (``heading`` instead, when given), the kit's stylesheet, then ``body``: HTML fragments the
    report built with this kit, one per line."""
    return "\n".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{escape(heading if heading is not None else title)}</h1>",
            *body,
            "</body></html>",
        ]
    )


def png_image(path: str | Path, alt: str) -> str:
    """An ``<img>`` holding the PNG file ``path`` as a data URI (the page stays one file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def legend(title: str, names: tuple[str, str] = ("reference", "current")) -> str:
    """The key of a two-sample chart: ``title``, then each colour swatch with its name."""
    first, second = names
    return (
        f'<p class="legend">{escape(title)}:<span style="background:{FIRST_COLOUR}"></span>'
        f'{escape(first)}<span style="background:{SECOND_COLOUR}"></span>{escape(second)}</p>'
    )


# --------------------------------------------------------------------------- SVG


def svg_open(width: int, height: int, label: str | None = None) -> str:
    """The opening ``<svg>`` tag of a chart ``width`` x ``height`` pixels; ``label`` (escaped)
    is its accessible name."""
    name = f' aria-label="{escape(label)}"' if label is not None else ""
    return f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"{name}>'


def paired_histogram(
    edges: Sequence[Any],
    first: Sequence[float],
    second: Sequence[float],
    *,
    names: tuple[str, str] = ("reference", "current"),
    width: int = 300,
    height: int = 60,
    label: str | None = None,
) -> str:
    """Two samples' shares per bin side by side (``first`` in :data:`FIRST_COLOUR`, ``second``
    in :data:`SECOND_COLOUR`): ``len(edges) == len(first) + 1``; each bar's tooltip names its bin
    ``[edge, next edge)``, its sample and its share; the outer edges label the axis."""
    k = len(first)
    if not k:
        return ""
    top = max(max(first), max(second), 1e-9)
    plot_h, base = height - 16, height - 14
    slot = width / k
    out = [svg_open(width, height, label)]
    for i in range(k):
        for j, (share, colour) in enumerate(((first[i], FIRST_COLOUR), (second[i], SECOND_COLOUR))):
            h = plot_h * share / top
            out.append(
                f'<rect x="{i * slot + j * slot / 2:.1f}" y="{base - h:.1f}" width="{slot / 2:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>[{escape(edges[i])}, {escape(edges[i + 1])}): '
                f"{escape(names[j])} {share:.1%}</title></rect>"
            )
    out.append(f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" stroke="{_AXIS}"/>')
    out.append(f'<text x="0" y="{height - 3}">{escape(edges[0])}</text>')
    out.append(f'<text x="{width}" y="{height - 3}" text-anchor="end">{escape(edges[-1])}</text>')
    out.append("</svg>")
    return "".join(out)


def line_chart(
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
    """A small line chart of ``values`` (None: no point) over runs, with an optional interval
    ``band`` (lower, upper per point), a dashed reference line at ``ref`` and red ``marks``
    (runs that requested retraining); ``labels`` name the points in their tooltips."""
    pts = [finite(v) for v in values]
    known = [v for v in pts if v is not None]
    extra = [v for pair in (band or []) for v in map(finite, pair) if v is not None]
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
        svg_open(width, height),
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="{_AXIS}"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{format(hi, fmt)}</text>',
        f'<text x="{left - 4}" y="{top + h}" text-anchor="end">{format(lo, fmt)}</text>',
    ]
    if band:
        known_band = [
            (i, lo_b, hi_b)
            for i, b in enumerate(band)
            if (lo_b := finite(b[0])) is not None and (hi_b := finite(b[1])) is not None
        ]
        upper = [(x(i), y(hi_b)) for i, _, hi_b in known_band]
        lower = [(x(i), y(lo_b)) for i, lo_b, _ in known_band]
        if len(upper) > 1:
            poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower[::-1])
            out.append(f'<polygon points="{poly}" fill="{_BAND}" opacity="0.7"/>')
    if ref is not None:
        out.append(
            f'<line x1="{left}" y1="{y(ref):.1f}" x2="{left + w}" y2="{y(ref):.1f}" '
            f'stroke="{_REF_LINE}" stroke-dasharray="4 3"><title>{escape(ref_label)}</title></line>'
        )
    segments: list[list[str]] = [[]]
    for i, v in enumerate(pts):
        if v is None:
            segments.append([])
        else:
            segments[-1].append(f"{x(i):.1f},{y(v):.1f}")
    out += [
        f'<polyline points="{" ".join(s)}" fill="none" stroke="{_LINE}" stroke-width="1.5"/>'
        for s in segments
        if len(s) > 1
    ]
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
            f'fill="{_MARK if marked else _LINE}"><title>{escape(tip)}</title></circle>'
        )
    if labels:
        out.append(f'<text x="{left}" y="{height - 3}">{escape(labels[0][:16])}</text>')
        out.append(
            f'<text x="{left + w}" y="{height - 3}" text-anchor="end">{escape(labels[-1][:16])}</text>'
        )
    out.append("</svg>")
    return "".join(out)
