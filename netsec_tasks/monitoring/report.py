"""The monitoring report: a YAML record and a self-contained HTML page (inline CSS and SVG, no
scripts or remote assets, built with :mod:`netsec_tasks.html_report`) with the run's figures and
their trend over past runs."""

from __future__ import annotations

from typing import Any

from netsec_tasks.html_report import escape, generated_now, legend, line_chart, number, page, paired_histogram
from netsec_tasks.sinks import yaml_text

# Monitoring's figures (rates, F1, KS, shares) print with three decimals.
FIG = ".3f"


def render_yaml(doc: dict[str, Any]) -> str:
    return yaml_text(doc)


def _ci(ci: Any) -> str:
    return f"{number(ci[0], FIG)}–{number(ci[1], FIG)}" if ci else "–"


def render_html(doc: dict[str, Any], history: list[dict[str, Any]], *, drift_page: str | None = None) -> str:
    """The page: decision, figures, live metrics, traffic, drift, verdicts, trend."""
    e = escape
    now = generated_now()
    trig = bool(doc.get("trigger"))
    live = doc.get("live") or {}
    traffic = doc.get("traffic") or {}
    drift = doc.get("drift") or {}
    contract = doc.get("contract_violations") or {}
    feedback = doc.get("feedback") or {}
    title = f"netsec monitoring: {doc.get('model_name')} v{doc.get('model_version') or '–'}"
    out = [
        f'<section class="summary {"trigger" if trig else ""}"><div class="verdict">'
        f"{'Retraining requested' if trig else 'No retraining requested'}</div>",
        f"<div>{e(str(doc.get('trigger_reason') or ''))}</div><dl>",
        f"<dt>Run</dt><dd>{e(str(doc.get('run_id')))}</dd>",
        f"<dt>Prediction log</dt><dd>{e(str(doc.get('log')))}</dd>",
        f'<dt>New rows</dt><dd class="kv">{traffic.get("rows", 0):,} in {traffic.get("requests", 0):,} '
        f"requests"
        + (
            f" ({number(traffic.get('rows_per_hour'), '.1f')} per hour)"
            if traffic.get("rows_per_hour")
            else ""
        )
        + "</dd>",
        (
            f"<dt>Contract violations</dt><dd><strong>surge:</strong> {e(str(contract.get('reason')))}</dd>"
            if contract.get("surge")
            else f"<dt>Contract violations</dt><dd>{e(str(contract.get('reason', '')))}</dd>"
        ),
        f"<dt>Traffic drift</dt><dd>{e(str(drift.get('reason', '')))}</dd>",
        f'<dt>Live F1</dt><dd class="kv">{e(str(live.get("decision", "")))}</dd>',
        f'<dt>Live FPR</dt><dd class="kv">{e(str(live.get("fpr_decision", "")))}</dd>',
        (
            f'<dt>Alert rate</dt><dd class="kv">{number(traffic.get("alert_rate"), ".2%")} of served rows '
            f"({_ci(traffic.get('alert_rate_ci'))}); its operating point expects "
            f"{number(traffic.get('expected_alert_rate'), '.2%')} at the expected threat rate: "
            f"<strong>{e(str(traffic.get('alert_rate_vs_expected')))}</strong></dd>"
            if traffic.get("expected_alert_rate") is not None
            else ""
        ),
        f"<dt>Generated</dt><dd>{now}</dd></dl></section>",
    ]

    # Trend over past runs.
    hist = history
    labels = [str(h.get("at", ""))[:16].replace("T", " ") for h in hist]
    marks = [bool(h.get("trigger")) for h in hist]
    out.append('<h2>Trend</h2><div class="trend">')

    def trend(key: str, **kw: Any) -> str:
        """The line chart of figure ``key`` over the past runs, their retraining requests marked."""
        return line_chart([h.get(key) for h in hist], marks=marks, labels=labels, **kw)

    charts = [
        (
            "Traffic drift share (columns drifted)",
            trend(
                "drift_share",
                lo=0,
                hi=1,
                ref=doc.get("drift_share_threshold"),
                ref_label="data-set drift above this",
            ),
        ),
        (
            "Live F1 of the threat class (with its interval)",
            trend(
                "live_f1",
                lo=0,
                hi=1,
                band=[tuple(h.get("live_f1_ci") or (None, None)) for h in hist],
                ref=doc.get("f1_floor"),
                ref_label="F1 floor",
            ),
        ),
        ("Volume (rows per hour)", trend("rows_per_hour", lo=0, fmt=".0f")),
        (
            "Threat rate (Production's predictions)",
            trend(
                "threat_rate", lo=0, hi=1, ref=traffic.get("threat_rate_test"), ref_label="on the test split"
            ),
        ),
        (
            "Live false-positive rate (with its interval)",
            trend(
                "live_fpr",
                lo=0,
                band=[tuple(h.get("live_fpr_ci") or (None, None)) for h in hist],
                ref=doc.get("max_false_positive_rate"),
                ref_label="the false-positive budget",
                fmt=".2%",
            ),
        ),
    ]
    for name, svg in charts:
        out.append(f'<div class="chart"><h3>{e(name)}</h3>{svg}</div>')
    out.append(
        '</div><p class="note">Red points: runs that requested a retraining. Dashed lines: '
        "the drift threshold, the F1 floor, the test split's threat rate, the false-positive budget.</p>"
    )

    # Live metrics.
    out += [
        "<h2>Live metrics (analysts' verdicts)</h2>",
        f'<p class="note">Verdicts on predictions of v{e(str(doc.get("model_version")))} made in '
        f"the last {number(doc.get('window_hours'), 'g')} hours; {live.get('other_versions', 0)} "
        "verdicts on other versions are not counted; "
        f"{live.get('without_logged_prediction', 0)} verdicts of the window have no prediction in "
        f"this model's log and {live.get('malformed_ids', 0)} an id that is not canonical (not "
        "counted). Intervals: Wilson (precision, recall), "
        "bootstrap (F1), Clopper-Pearson (FPR). Analysts mostly triage flagged rows, so recall rests "
        "on fewer verdicts and the FPR leans high.</p>",
        "<table><thead><tr><th>Figure</th><th>Value</th><th>Interval</th><th>From</th></tr></thead><tbody>",
        f'<tr><td>Precision</td><td class="num">{number(live.get("precision"), FIG)}</td><td class="num">'
        f"{_ci(live.get('precision_ci'))}</td><td>TP {live.get('tp', 0)} / predicted threats "
        f"{live.get('tp', 0) + live.get('fp', 0)}</td></tr>",
        f'<tr><td>Recall</td><td class="num">{number(live.get("recall"), FIG)}</td><td class="num">'
        f"{_ci(live.get('recall_ci'))}</td><td>TP {live.get('tp', 0)} / real threats "
        f"{live.get('tp', 0) + live.get('fn', 0)}</td></tr>",
        f'<tr><td>F1</td><td class="num">{number(live.get("f1"), FIG)}</td><td class="num">'
        f"{_ci(live.get('f1_ci'))}</td><td>{live.get('labelled', 0)} verdicts (TN {live.get('tn', 0)}, "
        f"FP {live.get('fp', 0)}, FN {live.get('fn', 0)})</td></tr>",
        f'<tr><td>False-positive rate</td><td class="num">{number(live.get("fpr"), ".2%")}</td>'
        f'<td class="num">{_ci(live.get("fpr_ci"))}</td><td>FP {live.get("fp", 0)} / benign verdicts '
        f"{live.get('fp', 0) + live.get('tn', 0)}; budget "
        f"{number(live.get('max_false_positive_rate'), '.2%')}</td></tr>",
        "</tbody></table>",
    ]

    # Traffic against the test split.
    out.append("<h2>Traffic against the test split</h2><dl>")
    if traffic.get("threat_rate") is not None:
        out.append(
            f'<dt>Threat rate</dt><dd class="kv">{number(traffic.get("threat_rate"), FIG)} '
            f"(test split {number(traffic.get('threat_rate_test'), FIG)}, p {number(traffic.get('threat_rate_p'), '.3g')}"
            f"{', shifted' if traffic.get('threat_rate_shifted') else ''})</dd>"
        )
    score = traffic.get("score")
    if score:
        out.append(
            f'<dt>Threat probability</dt><dd class="kv">mean {number(score["mean"], FIG)} (test '
            f"{number(score['mean_test'], FIG)}), KS {number(score['ks'], FIG)}, p {number(score['p'], '.3g')}, "
            f"Wasserstein {number(score['wasserstein_iqr'], FIG)} IQR"
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
            legend("Threat probability", ("test split", "traffic"))
            + paired_histogram(
                score["edges"],
                score["test_share"],
                score["traffic_share"],
                names=("test split", "traffic"),
                width=380,
                height=90,
            )
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
    return page(title, out)


def render_challenger_html(doc: dict[str, Any]) -> str:
    """The challenger's page (``decide_challenger``, netsec_tasks.monitoring.shadow): the
    decision, both models' alert rates against the budget's ceiling, agreement, verdict figures,
    and the rows where they disagree for analysts to label. ``doc``: a ShadowRecord as JSON."""
    from netsec_tasks.operating_point import pct

    e = escape
    v = doc.get("verdicts") or {}
    action = str(doc.get("action"))
    heading = {
        "promoted": "Challenger promoted",
        "retired": "Challenger retired",
        "promote": "Would promote (dry run)",
        "retire": "Would retire (dry run)",
        "wait": "In shadow",
    }.get(action, "No challenger")
    title = (
        f"netsec challenger: {doc.get('model_name')} v{doc.get('challenger_version') or '–'} "
        f"beside Production v{doc.get('production_version') or '–'}"
    )

    def rate(m: dict[str, Any]) -> str:
        ci = m.get("alert_rate_ci")
        span = f" ({pct(ci[0])}–{pct(ci[1])})" if ci else ""
        over = " <strong>over the budget</strong>" if m.get("over_budget") else ""
        return f"{pct(m.get('alert_rate'))}{span}{over}"

    def live(m: dict[str, Any], key: str) -> str:
        ci = m.get(f"{key}_ci")
        return f"{number(m.get(key), FIG)} ({_ci(ci)})" if m.get(key) is not None else "–"

    prod, chal = doc.get("production") or {}, doc.get("challenger") or {}
    lp, lc = v.get("production") or {}, v.get("challenger") or {}
    rows = [
        ("Alert rate (interval)", rate(prod), rate(chal)),
        ("Alerts", f"{prod.get('alerts', 0):,}", f"{chal.get('alerts', 0):,}"),
        (
            "Alert rate its operating point expects",
            pct(prod.get("expected_alert_rate")),
            pct(chal.get("expected_alert_rate")),
        ),
        ("Live precision", live(lp, "precision"), live(lc, "precision")),
        ("Live recall", live(lp, "recall"), live(lc, "recall")),
        ("Live F1", live(lp, "f1"), live(lc, "f1")),
        ("Live FPR", live(lp, "fpr"), live(lc, "fpr")),
        (
            "Labelled rows it alone got right",
            str(v.get("production_only_right", 0)),
            str(v.get("challenger_only_right", 0)),
        ),
    ]
    out = [
        f'<section class="summary {"trigger" if action in ("retired", "retire") else ""}">'
        f'<div class="verdict">{e(heading)}</div><div>{e(str(doc.get("reason") or ""))}</div><dl>',
        f"<dt>Run</dt><dd>{e(str(doc.get('run_id')))}</dd>",
        f"<dt>Challenger since</dt><dd>{e(str(doc.get('since') or '–'))} ({number(doc.get('hours'), '.1f')} h)</dd>",
        f'<dt>Rows both scored</dt><dd class="kv">{int(doc.get("rows") or 0):,}'
        f" ({int(doc.get('unscored_rows') or 0):,} logged without the challenger's decision)</dd>",
        f'<dt>Agreement</dt><dd class="kv">{pct(doc.get("agreement"))} '
        f"({int(doc.get('disagreements') or 0):,} rows decided differently)</dd>",
        f"<dt>Budget's ceiling</dt><dd>{pct(chal.get('ceiling'))} of rows may alert</dd>",
        f"<dt>Verdicts</dt><dd>{int(v.get('labelled') or 0):,} labelled rows both scored; "
        f"paired test p = {number(v.get('p_value'), '.3g')}</dd>",
        f"<dt>Challenger's live FPR</dt><dd>{e(str(doc.get('live_fpr') or ''))}</dd></dl></section>",
        "<h2>The two models on the same traffic</h2><table><tr><th></th>"
        f"<th>Production v{e(str(doc.get('production_version') or '–'))}</th>"
        f"<th>Challenger v{e(str(doc.get('challenger_version') or '–'))}</th></tr>",
    ]
    out += [f"<tr><td>{e(a)}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows]
    out.append("</table>")
    listed = doc.get("listed_disagreements") or []
    out.append(
        f"<h2>Rows where they disagree ({len(listed)} not yet labelled)</h2>"
        "<p>Label these (POST /feedback with the prediction id, or the serving page): verdicts on "
        "them are what tell the two models apart.</p>"
    )
    if listed:
        names = list((listed[0].get("features") or {}).keys())
        out.append(
            "<table><tr><th>prediction id</th><th>time</th><th>Production</th><th>P</th>"
            "<th>Challenger</th><th>P</th>" + "".join(f"<th>{e(str(n))}</th>" for n in names) + "</tr>"
        )
        for d in listed:
            feats = d.get("features") or {}
            out.append(
                f"<tr><td><code>{e(str(d.get('prediction_id')))}</code></td><td>{e(str(d.get('time')))}</td>"
                f"<td>{'threat' if d.get('production') else 'benign'}</td><td>{number(d.get('production_probability'), FIG)}</td>"
                f"<td>{'threat' if d.get('challenger') else 'benign'}</td><td>{number(d.get('challenger_probability'), FIG)}</td>"
                + "".join(f"<td>{e(str(feats.get(n)))}</td>" for n in names)
                + "</tr>"
            )
        out.append("</table>")
    return page(title, out)
