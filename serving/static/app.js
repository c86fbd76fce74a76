// Upload a CSV to /predict/csv, show the scored rows (threats highlighted), offer a CSV download,
// and let an analyst mark each scored row "threat" or "benign" (POST /feedback with its
// prediction_id); the verdicts feed the monitoring DAG's live metrics and the next training.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const MAX_SHOWN = 2000;  // the download has every row; the table stays responsive
  // The output columns every door adds (netsec_tasks.contract.OUTPUT_COLUMNS).
  const PRED = ["predicted_label", "is_threat", "threat_probability", "imputed_cells", "status",
                "reason", "model_version", "prediction_id"];
  let last = null;
  const verdicts = new Map();  // prediction_id -> "threat" | "benign", as the server stored it

  const keyHeaders = () => {
    const k = $("apikey").value.trim();
    return k ? { "X-API-Key": k } : {};
  };

  // Which version decides: Production answers; a challenger (registry.shadow) only scores the
  // same rows in shadow, and its decisions never reach this page.
  fetch("model").then((r) => r.ok ? r.json() : Promise.reject(r))
    .then((m) => { $("model").textContent = `model ${m.name} v${m.version} decides · ${m.model_class}` +
      (m.metrics.test_f1 !== undefined ? ` · test F1 ${m.metrics.test_f1.toFixed(3)}` : "") +
      (m.challenger ? ` · challenger v${m.challenger.version} (${m.challenger.model_class}) ` +
        "scores in shadow, not shown" : ""); })
    .catch(() => { $("model").textContent = "no model loaded yet"; });

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").className = "status" + (isError ? " error" : "");
  }

  async function score() {
    const file = $("file").files[0];
    if (!file) { setStatus("Choose a CSV file first.", true); return; }
    const body = new FormData();
    body.append("file", file, file.name);
    $("score").disabled = true;
    setStatus(`Scoring ${file.name}…`);
    try {
      // echo=true: the table shows the uploaded columns; invalid=flag: bad rows are listed
      // with their reason instead of failing the whole file.
      const resp = await fetch("predict/csv?echo=true&invalid=flag", { method: "POST", body,
        headers: { Accept: "application/json", ...keyHeaders() } });
      const data = await resp.json().catch(() => ({ detail: resp.statusText }));
      if (!resp.ok) { setStatus(`Error ${resp.status}: ${data.detail}`, true); return; }
      last = data;
      verdicts.clear();
      render();
      setStatus(`Scored ${data.n_rows - data.n_invalid} rows; decided by Production model v${data.model_version}` +
        (data.n_invalid ? `; ${data.n_invalid} invalid rows not scored (see their reason).` : ".") +
        (data.n_imputed_rows ? ` ${data.n_imputed_rows} rows had empty cells, imputed by the model.` : "") +
        (data.notes && data.notes.length ? ` Reading the file: ${data.notes.join("; ")}.` : ""));
    } catch (err) {
      setStatus(`Request failed: ${err}`, true);
    } finally {
      $("score").disabled = false;
    }
  }

  function render() {
    const data = last;
    const inputs = data.columns.filter((c) => !PRED.includes(c));
    const cols = ["#", "verdict", "analyst", "threat_probability", "predicted_label",
                  "imputed_cells", ...(data.n_invalid ? ["reason"] : []), ...inputs];
    const rows = $("onlythreats").checked ? data.records.filter((r) => r.is_threat === 1)
                                          : data.records;
    const table = $("table");
    table.textContent = "";
    const head = table.createTHead().insertRow();
    for (const c of cols) {
      const th = document.createElement("th");
      th.textContent = c === "threat_probability" ? "P(threat)" : c;
      if (["verdict", "threat_probability", "label"].includes(c)) th.className = "pred";
      head.appendChild(th);
    }
    const tbody = table.createTBody();
    rows.slice(0, MAX_SHOWN).forEach((r) => {
      const tr = tbody.insertRow();
      tr.className = r.is_threat === 1 ? "threat" : "benign";
      for (const c of cols) {
        const td = tr.insertCell();
        if (c === "#") td.textContent = data.records.indexOf(r) + 1;
        else if (c === "verdict") {
          td.textContent = r.status === "invalid" ? "invalid" : r.is_threat === 1 ? "THREAT" : "ok";
          if (r.status === "invalid") { td.title = r.reason; tr.className = "invalid"; }
          td.className = "pred verdict";
        }
        else if (c === "analyst") {
          td.className = "analyst";
          if (r.prediction_id) td.append(...["threat", "benign"].map((v) => verdictButton(r, v)));
        }
        else if (c === "threat_probability") { td.textContent = r[c] === null ? "" : r[c].toFixed(3);
                                               td.className = "pred"; }
        else { td.textContent = r[c] === null ? "" : r[c];
               if (c === "predicted_label" || c === "imputed_cells") td.className = "pred"; }
      }
    });
    const shown = Math.min(rows.length, MAX_SHOWN);
    $("summary").innerHTML = "";
    const s = $("summary");
    s.append(`${data.n_rows} rows · `);
    const t = document.createElement("span");
    t.className = "count-threat";
    t.textContent = `${data.n_threats} threats`;
    s.append(t, ` · showing ${shown}`);
    const a = $("download");
    if (a.href.startsWith("blob:")) URL.revokeObjectURL(a.href);
    a.href = URL.createObjectURL(new Blob([toCsv(data)], { type: "text/csv" }));
    $("results").hidden = false;
  }

  // One button of a row's verdict pair; pressed when that verdict stands.
  function verdictButton(r, verdict) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `mark ${verdict}`;
    b.textContent = verdict;
    b.dataset.id = r.prediction_id;
    b.setAttribute("aria-pressed", String(verdicts.get(r.prediction_id) === verdict));
    b.title = `mark this row as ${verdict} (sent to /feedback)`;
    b.addEventListener("click", () => sendVerdict(r.prediction_id, verdict, b,
                                                  last.records.indexOf(r) + 1));
    return b;
  }

  async function sendVerdict(id, verdict, button, rowNumber) {
    const cell = button.parentElement;
    cell.querySelectorAll("button").forEach((x) => { x.disabled = true; });
    try {
      const resp = await fetch("feedback", { method: "POST",
        headers: { "Content-Type": "application/json", ...keyHeaders() },
        body: JSON.stringify([{ prediction_id: id, label: verdict, source: "page" }]) });
      const data = await resp.json().catch(() => ({ detail: resp.statusText }));
      if (!resp.ok) { setStatus(`Verdict not stored: error ${resp.status}: ${data.detail}`, true); return; }
      verdicts.set(id, verdict);
      cell.querySelectorAll("button").forEach((x) => {
        x.setAttribute("aria-pressed", String(x.textContent === verdict)); });
      const n = verdicts.size;
      setStatus(`Verdict "${verdict}" ${data.results[0].status} for row ${rowNumber} (prediction ` +
        `${id}); ${n} row${n > 1 ? "s" : ""} marked on this page.`);
    } catch (err) {
      setStatus(`Verdict not stored: ${err}`, true);
    } finally {
      cell.querySelectorAll("button").forEach((x) => { x.disabled = false; });
    }
  }

  // A text cell starting with = + - @ tab or CR runs as a formula when the file is opened in a
  // spreadsheet (CSV injection): prefix it with ' as the server's CSV writer does. Numbers,
  // including negative ones such as -1, stay numbers.
  const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
  const neutralise = (s) => /^[=+\-@\t\r]/.test(s) && !NUMBER.test(s) ? "'" + s : s;

  function toCsv(data) {
    const esc = (v) => {
      const s = v === null || v === undefined ? "" :
        typeof v === "number" ? String(v) : neutralise(String(v));
      return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    };
    const lines = [data.columns.map(esc).join(",")];
    for (const r of data.records) lines.push(data.columns.map((c) => esc(r[c])).join(","));
    return lines.join("\n") + "\n";
  }

  $("upload").addEventListener("submit", (e) => { e.preventDefault(); score(); });
  $("file").addEventListener("change", score);
  $("onlythreats").addEventListener("change", () => last && render());
})();
