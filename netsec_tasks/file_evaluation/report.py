"""The evaluation's HTML page: the summary, warnings, metrics, operating point and other budgets,
confusion matrix, per-label recall, reasons and plots, as one self-contained page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netsec_tasks.html_report import escape, number, page, png_image
from netsec_tasks.sinks import (
    json_text,
)


def _operating_point_html(doc: dict[str, Any]) -> list[str]:
    """The report's operating-point section: what the model's threshold does on these rows (FPR
    with its interval against the budget, recall, precision at the expected threat rate, false
    alerts per 10,000 benign rows), and the table of other budgets."""
    from netsec_tasks.operating_point import pct

    e = escape
    op = doc.get("operating_point")
    if not op:
        return []
    rule = (
        f"is_threat when P(threat) &ge; {number(op['threshold'], '.4g')}"
        if doc.get("threshold_recorded")
        else "is_threat when P(threat) &gt; 0.5 (the version records no threshold: registered before "
        "operating points)"
    )
    verdict = (
        f'<span class="tag yes">over the budget of {e(pct(op["budget"]))}</span>'
        if op.get("over_budget")
        else f'<span class="tag no">within the budget of {e(pct(op["budget"]))}</span>'
    )
    level = f"{op.get('confidence', 0.95):.0%}"
    out = [
        "<h2>Operating point</h2>",
        f'<p class="note">{rule}; the FPR interval is Clopper-Pearson at {level}; precision is at '
        f"a {e(pct(op['expected_threat_rate']))} threat rate (decision.expected_threat_rate), not the "
        "file's.</p>",
        "<table><thead><tr><th>threshold</th><th>FPR</th><th>FPR interval</th><th>false alerts / benign"
        "</th><th>recall</th><th>precision at the expected rate</th><th>false alerts per 10,000 benign"
        "</th><th>budget</th></tr></thead><tbody><tr>",
        f'<td class="num">{number(op["threshold"], ".4g")}</td><td class="num">{e(pct(op["fpr"]))}</td>',
        f'<td class="num">{e(pct(op["fpr_low"]))} - {e(pct(op["fpr_high"]))}</td>',
        f'<td class="num">{op["fp"]:,} / {op["benign"]:,}</td><td class="num">{number(op["recall"], ".3f")}</td>',
        f'<td class="num">{e(pct(op["precision_at_rate"]))}</td>',
        f'<td class="num">{number(op["alerts_per_10k_benign"], ".1f")}</td><td>{verdict}</td>',
        "</tr></tbody></table>",
    ]
    table = doc.get("budget_table") or []
    if table:
        out += [
            "<h3>Other budgets, on these rows</h3>",
            '<p class="note">The threshold each false-positive budget would need on these rows (the '
            "highest recall with FPR at most the budget; a description of the file, not a choice: "
            "the model's threshold comes from its training rows).</p>",
            "<table><thead><tr><th>budget</th><th>threshold</th><th>FPR</th><th>recall</th>"
            "<th>precision at the expected rate</th></tr></thead><tbody>",
            *(
                f'<tr><td class="num">{e(pct(r["budget"]))}</td><td class="num">{number(r["threshold"], ".4g")}</td>'
                f'<td class="num">{e(pct(r["fpr"]))}</td><td class="num">{number(r["recall"], ".3f")}</td>'
                f'<td class="num">{e(pct(r["precision_at_rate"]))}</td></tr>'
                for r in table
            ),
            "</tbody></table>",
        ]
    return out


def render_html(doc: dict[str, Any], plots: list[str]) -> str:
    """One self-contained page (:mod:`netsec_tasks.html_report`): plots embedded as data URIs."""
    from netsec_tasks.explain.reports import evaluation_html

    e = escape
    m, rows, model = doc["metrics"], doc["rows"], doc["model"]
    out = [
        *(f'<p class="warning"><strong>Warning:</strong> {e(w)}</p>' for w in doc.get("warnings", [])),
        '<section class="summary info"><dl>',
        f"<dt>File</dt><dd>{e(doc['file'])}</dd>",
        f"<dt>Data set</dt><dd>{e(str(doc['data_set']))} (schema version "
        f"{e(str(doc['schema_version']))})</dd>",
        f"<dt>Model</dt><dd>{e(model['uri'])}"
        + (
            f"; its test split {e(str(model['metric']))} {model['test_split_score']:.4f}"
            if model.get("test_split_score") is not None
            else ""
        )
        + "</dd>",
        f"<dt>Label mapping</dt><dd>{e(json_text(doc['label_mapping']))}</dd>",
        f"<dt>Rows</dt><dd>{rows['scored']:,} scored of {rows['read']:,}"
        + (
            f"; left out: {e(', '.join(f'{v} {k}' for k, v in rows['excluded_because'].items()))}"
            if rows.get("excluded_because")
            else ""
        )
        + "</dd>",
        "<dt>Rows it was trained on</dt><dd>"
        + (
            "unknown (the version records no training-row hashes)"
            if rows.get("trained_on") is None
            else f"{rows['trained_on']:,}; the figures below are on {rows.get('headline', 0):,} rows"
        )
        + "</dd>",
        f"<dt>Generated</dt><dd>{e(doc['generated_at'])}</dd></dl></section>",
        *_operating_point_html(doc),
        "<h2>Threat class</h2><table><thead><tr><th>rows</th>"
        + "".join(f"<th>{e(k)}</th>" for k in m)
        + "</tr></thead><tbody><tr><th>"
        + ("never trained on" if rows.get("trained_on") else "scored")
        + "</th>"
        + "".join(f'<td class="num">{v:.4f}</td>' for v in m.values())
        + "</tr>"
        + (
            "<tr><th>all, trained-on included</th>"
            + "".join(f'<td class="num">{doc["metrics_all_rows"].get(k, float("nan")):.4f}</td>' for k in m)
            + "</tr>"
            if rows.get("trained_on")
            else ""
        )
        + "</tbody></table>",
    ]
    cm = doc["confusion_matrix"]["rows_truth_cols_predicted"]
    out += [
        "<h2>Confusion matrix</h2>",
        "<table><thead><tr><th>truth \\ predicted</th><th>benign</th><th>threat</th></tr></thead><tbody>",
        f'<tr><th>benign</th><td class="num">{cm[0][0]:,}</td><td class="num">{cm[0][1]:,}</td></tr>',
        f'<tr><th>threat</th><td class="num">{cm[1][0]:,}</td><td class="num">{cm[1][1]:,}</td></tr>',
        "</tbody></table>",
    ]
    per_label = doc.get("per_label")
    if per_label:
        has_training = any("in_training" in v for v in per_label.values())
        out += [
            "<h2>Per label</h2>",
            '<p class="note">Recall: the share of a label\'s rows the model puts in the right '
            "class (detected, for a threat label; not flagged, for a benign one). Lowest first."
            + (
                " <em>New</em>: the label does not occur in the model's training data."
                if has_training
                else ""
            )
            + "</p><table><thead><tr><th>Label</th><th>Class</th><th>Rows</th><th>Right</th>"
            "<th>Recall</th><th></th>"
            + ("<th>In training</th>" if has_training else "")
            + "</tr></thead><tbody>",
        ]
        for label, v in sorted(per_label.items(), key=lambda kv: kv[1]["recall"]):
            right = v.get("detected", v.get("not_flagged", 0))
            cls = "threat" if v["threat"] else "benign"
            seen = (
                ""
                if not has_training
                else f"<td>{'yes' if v.get('in_training') else '<strong>new</strong>'}</td>"
            )
            out.append(
                f'<tr class="{"low" if v["recall"] < 0.5 else ""}"><td>{e(label)}</td>'
                f'<td>{cls}</td><td class="num">{v["rows"]:,}</td><td class="num">{right:,}</td>'
                f'<td class="num">{v["recall"]:.1%}</td><td><span class="bar {cls}" '
                f'style="width:{120 * v["recall"]:.0f}px"></span></td>{seen}</tr>'
            )
        out.append("</tbody></table>")
    out += evaluation_html(doc.get("reasons"))
    if plots:
        out.append("<h2>Plots</h2><div>")
        out += [png_image(p, Path(p).stem) for p in plots]
        out.append("</div>")
    name = Path(doc["file"]).name
    return page(
        f"netsec evaluation: {name}",
        out,
        heading=f"Evaluation of {model['name']} v{model['version']} on {name}",
    )
