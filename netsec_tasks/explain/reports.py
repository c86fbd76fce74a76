"""The reasons sections of the reports: what ``netsec evaluate`` and the monitoring report say
about contributions, as a YAML-ready part of the report document and as HTML (the report kit,
:mod:`netsec_tasks.html_report`).

- :func:`evaluation_reasons` / :func:`evaluation_html`: global importance (mean |contribution|
  per column) overall and per raw label, and the top reasons behind the false positives at the
  operating point (the rows the model alerted on that are benign: what fools it).
- :func:`traffic_reasons` / :func:`traffic_html`: mean contributions on served traffic against
  the test split, per column: why the alert rate moved.

Both check the explainer's additivity on the rows they explain first
(:func:`netsec_tasks.explain.verified_explainer`); a version without reasons gets a section that
says why. Rows are sampled to :data:`netsec_tasks.explain.importance.REPORT_ROWS` (seeded), and
the section says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from netsec_tasks.explain.explainer import verified_explainer
from netsec_tasks.explain.importance import (
    REPORT_ROWS,
    contribution_shift,
    explain_sample,
    global_importance,
    top_reasons,
)

TOP_COLUMNS = 10  # columns a section's tables show (the YAML keeps every column)
TOP_LABELS = 6  # raw labels the importance table shows, most rows first (the YAML keeps all)
LABEL = "label "  # prefix of a raw label's importance column


def _records(table, value_names: list[str]) -> list[dict[str, Any]]:
    """One dict per row of ``table`` (index: the column names), each value with its own
    column's type (iterrows would make a count a float beside a float column)."""
    rows = table[value_names].to_dict("records")
    return [
        {"column": str(col), **{k: _round(v) for k, v in row.items()}} for col, row in zip(table.index, rows)
    ]


def _round(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else round(float(v), 6)
    if isinstance(v, np.integer):
        return int(v)
    return v


def evaluation_reasons(
    model: Any,
    features: list[str],
    x: Any,
    labels: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    *,
    operating_point: str,
    threshold: float | None = None,
    seed: int = 0,
    max_rows: int = REPORT_ROWS,
) -> dict[str, Any]:
    """The ``reasons`` part of an evaluation report for the rows ``x`` (model input, n rows),
    their raw ``labels`` (n, text), truth ``y`` and decisions ``pred`` (0/1, n): importance
    overall and per raw label, and the reasons behind ``pred == 1 & y == 0`` (all false
    positives are explained when there are at most ``max_rows``). ``operating_point`` is the
    decision rule as text (the report's heading), ``threshold`` its P(threat) threshold (a number
    in [0, 1], kept beside the text for readers of the YAML)."""
    threat_column = list(getattr(model, "classes_", [0, 1])).index(1)
    explainer, status = verified_explainer(
        model, features, x, threat_column=threat_column, rows_source="the evaluated rows"
    )
    if explainer is None:
        return {"available": False, "why": status}
    fp = (np.asarray(pred) == 1) & (np.asarray(y) == 0)
    explained = explain_sample(explainer, x, max_rows=max_rows, seed=seed, keep=fp)
    labels = np.asarray(labels, dtype=object)
    text = labels.astype(str)
    values, counts = np.unique(text, return_counts=True)
    order = sorted(zip(values.tolist(), counts.tolist()), key=lambda vc: (-vc[1], vc[0]))
    groups = {f"{LABEL}{label}": text == label for label, _n in order}
    threat = {label: bool(np.asarray(y)[text == label].max()) for label, _n in order}
    importance = global_importance(explained, groups)
    fooled = top_reasons(explained, fp, k=3, top=TOP_COLUMNS)
    return {
        "available": True,
        "unit": explainer.unit,
        "method": explainer.method.name,
        "check": status,
        "rows": explained.describe(),
        "labels": [{"label": label, "rows": n, "threat": threat[label]} for label, n in order],
        "importance": _records(importance, list(importance.columns)),
        "false_positives": {
            "operating_point": operating_point,
            "threshold": threshold,
            "rows": int(fp.sum()),
            "explained": int(fp[explained.rows].sum()),
            "top_reasons": _records(fooled, ["rows", "share", "mean_contribution"]),
        },
    }


def traffic_reasons(
    model: Any,
    features: list[str],
    test: Any,
    traffic: Any,
    *,
    seed: int = 0,
    max_rows: int = REPORT_ROWS,
) -> dict[str, Any]:
    """The ``reasons`` part of a monitoring report: mean contributions per column on the model's
    test split (``test``) and on served ``traffic`` (model input rows), and the change."""
    threat_column = list(getattr(model, "classes_", [0, 1])).index(1)
    explainer, status = verified_explainer(
        model, features, test, threat_column=threat_column, rows_source="the test split"
    )
    if explainer is None:
        return {"available": False, "why": status}
    reference = explain_sample(explainer, test, max_rows=max_rows, seed=seed)
    current = explain_sample(explainer, traffic, max_rows=max_rows, seed=seed)
    shift = contribution_shift(reference, current, top=None)
    ref_margin, cur_margin = reference.contributions.margin.mean(), current.contributions.margin.mean()
    return {
        "available": True,
        "unit": explainer.unit,
        "method": explainer.method.name,
        "check": status,
        "test_rows": reference.describe(),
        "traffic_rows": current.describe(),
        "mean_margin": {
            "test": _round(ref_margin),
            "traffic": _round(cur_margin),
            "change": _round(cur_margin - ref_margin),
        },
        "columns": [
            {"column": r["column"], "test": r["reference"], "traffic": r["current"], "change": r["change"]}
            for r in _records(shift, ["reference", "current", "change"])
        ],
    }


# --------------------------------------------------------------------------- HTML


def _section(
    title: str, part: dict[str, Any] | None, body: Callable[[dict[str, Any]], list[str]]
) -> list[str]:
    """A report section's HTML lines: none without ``part``; the ``title`` heading, then a note
    when the part's reasons are not available, else ``body(part)``."""
    from netsec_tasks.html_report import escape

    if not part:
        return []
    heading = f"<h2>{escape(title)}</h2>"
    if not part.get("available"):
        return [heading, f'<p class="note">No reasons: {escape(part.get("why", ""))}</p>']
    return [heading, *body(part)]


def _bar(value: float, scale: float, threat: bool = True) -> str:
    width = 0 if scale <= 0 else 120 * min(abs(value) / scale, 1.0)
    return f'<span class="bar{"" if threat else " benign"}" style="width:{width:.0f}px"></span>'


def evaluation_html(part: dict[str, Any] | None) -> list[str]:
    """The evaluation report's reasons section (empty without a ``reasons`` part)."""
    return _section("Reasons: what the model leans on, and what fools it", part, _evaluation_body)


def _evaluation_body(part: dict[str, Any]) -> list[str]:
    from netsec_tasks.html_report import escape, number

    unit = part["unit"]
    rows = part["importance"][:TOP_COLUMNS]
    labels = [k for k in (rows[0] if rows else {}) if k.startswith(LABEL)]  # most rows first
    shown = labels[:TOP_LABELS]
    threats = {LABEL + str(x["label"]): x["threat"] for x in part.get("labels", [])}
    scale = max((r["overall"] or 0 for r in rows), default=0)
    more = f" ({len(labels) - len(shown)} more labels in the YAML report)" if len(labels) > len(shown) else ""
    out = [
        f'<p class="note">Global importance: the mean |contribution| of each column ({escape(unit)}), '
        f"overall and over the rows of each raw label{escape(more)}; {escape(part['rows'])}. "
        f"{escape(part['check'])}.</p>",
        "<table><thead><tr><th>Column</th><th>overall</th><th></th>"
        + "".join(f"<th>{escape(g[len(LABEL) :])}{' (threat)' if threats.get(g) else ''}</th>" for g in shown)
        + "</tr></thead><tbody>",
    ]
    for r in rows:
        out.append(
            f'<tr><td>{escape(r["column"])}</td><td class="num">{number(r["overall"], ".4g")}</td>'
            f"<td>{_bar(r['overall'] or 0, scale)}</td>"
            + "".join(f'<td class="num">{number(r[g], ".4g")}</td>' for g in shown)
            + "</tr>"
        )
    out.append("</tbody></table>")
    fp = part["false_positives"]
    out.append(
        f"<h3>False positives at the operating point ({escape(fp['operating_point'])})</h3>"
        f'<p class="note">{fp["rows"]:,} benign rows raised an alert; {fp["explained"]:,} explained. '
        "For each column: in how many of them it is among the 3 strongest contributions towards "
        f"threat, and its mean contribution over them ({escape(unit)}).</p>"
    )
    if not fp["top_reasons"]:
        out.append('<p class="note">No false positive to explain.</p>')
        return out
    top = max(r["rows"] for r in fp["top_reasons"])
    out.append(
        "<table><thead><tr><th>Column</th><th>false positives</th><th>share</th><th></th>"
        "<th>mean contribution</th></tr></thead><tbody>"
    )
    for r in fp["top_reasons"]:
        out.append(
            f'<tr><td>{escape(r["column"])}</td><td class="num">{r["rows"]:,}</td>'
            f'<td class="num">{number(r["share"], ".1%")}</td><td>{_bar(r["rows"], top)}</td>'
            f'<td class="num">{number(r["mean_contribution"], "+.4g")}</td></tr>'
        )
    out.append("</tbody></table>")
    return out


def traffic_html(part: dict[str, Any] | None) -> list[str]:
    """The monitoring report's "why alerts rose" section (empty without a ``reasons`` part)."""
    return _section(
        "Why the alert rate moved: mean contributions, traffic against the test split", part, _traffic_body
    )


def _traffic_body(part: dict[str, Any]) -> list[str]:
    from netsec_tasks.html_report import escape, number

    unit, margin = part["unit"], part["mean_margin"]
    rows = part["columns"][:TOP_COLUMNS]
    scale = max((abs(r["change"] or 0) for r in rows), default=0)
    out = [
        f'<p class="note">Per column, its mean contribution ({escape(unit)}) on the test split '
        f"({escape(part['test_rows'])}) and on the new traffic ({escape(part['traffic_rows'])}); "
        "a positive change pushes traffic further towards alerts. The changes of all columns add "
        f"up to the change of the mean margin: {number(margin['test'], '.4g')} -> "
        f"{number(margin['traffic'], '.4g')} ({number(margin['change'], '+.4g')}). Largest changes "
        f"first; method: {escape(part['method'])}.</p>",
        "<table><thead><tr><th>Column</th><th>test split</th><th>traffic</th><th>change</th><th></th>"
        "</tr></thead><tbody>",
    ]
    for r in rows:
        change = r["change"] or 0
        out.append(
            f'<tr><td>{escape(r["column"])}</td><td class="num">{number(r["test"], "+.4g")}</td>'
            f'<td class="num">{number(r["traffic"], "+.4g")}</td>'
            f'<td class="num">{number(r["change"], "+.4g")}</td><td>{_bar(change, scale, change > 0)}</td></tr>'
        )
    out.append("</tbody></table>")
    return out
