// xastopo page: plain JavaScript, no libraries, nothing fetched from outside. Every /ui/api call carries
// the bearer token typed in the header (kept for this tab only) when the service asks for one.
"use strict";

const $ = (id) => document.getElementById(id);
const api = (path) => "api/" + path;
const TOKEN_KEY = "xastopo-token";

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function fmt(v, d = 4) { return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(d); }
function authHeaders() {
  const t = $("token").value.trim();
  return t ? {"Authorization": "Bearer " + t} : {};
}
function explainHttp(status, body) {
  if (status === 401) return "the service needs an access token: type it in the header (Access token)";
  if (status === 413) return (body && body.error) || "the upload is too large for this service";
  if (body && body.error) return body.error;
  return "the service answered " + status;
}

// ------------------------------------------------------------------------------------ model card
async function loadCard() {
  const box = $("card-body");
  let r;
  try {
    r = await fetch(api("card"), {headers: authHeaders()});
  } catch (e) { box.textContent = "cannot reach the service"; return; }
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    $("auth-status").textContent = r.status === 401 ? "this service needs an access token" : "";
    $("auth-status").className = "error";
    box.textContent = explainHttp(r.status, body);
    return;
  }
  $("auth-status").textContent = $("token").value ? "token accepted" : "";
  $("auth-status").className = "ok";
  $("model-line").textContent = `model ${body.model_name} v${body.model_version} (${body.model_kind})`;
  if (body.measured_suffixes && body.measured_suffixes.length) {
    $("measured-note").textContent = " or a measured spectrum (" + body.measured_suffixes.join(", ") + ")";
  }
  box.className = "";
  box.innerHTML = renderCard(body);
}

function metricsTable(t) {
  if (!t) return "<p class='muted'>no test metrics</p>";
  const row = (name, m) => `<tr><td>${name}</td><td>${fmt(m.precision, 2)}</td><td>${fmt(m.recall, 2)}</td>` +
    `<td>${fmt(m.f1, 2)}</td><td>${m.support ?? "–"}</td></tr>`;
  return `<table><tr><th>test (${t.n} materials)</th><th>precision</th><th>recall</th><th>F1</th><th>n</th></tr>` +
    row("topological", t.topological || {}) + row("trivial", t.trivial || {}) + `</table>` +
    `<p>macro-F1 <b id="card-macro-f1">${fmt(t.macro_f1, 3)}</b>, AUC <b id="card-auc">${fmt(t.auc, 3)}</b></p>`;
}

function calibrationSvg(curve) {
  if (!curve || !curve.length) return "<p class='muted'>no calibration curve in this export</p>";
  const W = 260, H = 220, L = 40, B = 32, T = 10, R = 10;
  const sx = (v) => L + v * (W - L - R), sy = (v) => H - B - v * (H - B - T);
  let s = `<svg id="calibration" width="${W}" height="${H}" role="img" aria-label="calibration on the test set">`;
  s += `<line x1="${sx(0)}" y1="${sy(0)}" x2="${sx(1)}" y2="${sy(1)}" stroke="#aaa" stroke-dasharray="4 3"/>`;
  s += `<line x1="${L}" y1="${sy(0)}" x2="${sx(1)}" y2="${sy(0)}" stroke="#555"/>`;
  s += `<line x1="${L}" y1="${sy(0)}" x2="${L}" y2="${sy(1)}" stroke="#555"/>`;
  for (const v of [0, 0.5, 1]) {
    s += `<text x="${sx(v)}" y="${H - B + 14}" text-anchor="middle">${v}</text>`;
    s += `<text x="${L - 6}" y="${sy(v) + 4}" text-anchor="end">${v}</text>`;
  }
  s += `<text x="${(L + W) / 2}" y="${H - 4}" text-anchor="middle">predicted P(topological)</text>`;
  s += `<text x="12" y="${(T + H - B) / 2}" transform="rotate(-90 12 ${(T + H - B) / 2})" text-anchor="middle">observed</text>`;
  const pts = curve.map((c) => `${sx(c.predicted).toFixed(1)},${sy(c.observed).toFixed(1)}`).join(" ");
  s += `<polyline points="${pts}" fill="none" stroke="#2f5d99" stroke-width="2"/>`;
  for (const c of curve) s += `<circle cx="${sx(c.predicted)}" cy="${sy(c.observed)}" r="3" fill="#2f5d99"/>`;
  return s + "</svg>";
}

function renderCard(c) {
  const card = c.card || {};
  const tr = card.training;
  let h = `<div class="cols"><div>`;
  h += `<p><b id="card-name">${esc(c.model_name)}</b> version <b id="card-version">${esc(c.model_version)}</b>
        (${esc(c.model_kind)}), threshold ${fmt(c.threshold, 3)}; MLflow run <code>${esc(c.mlflow_run_id || "–")}</code>,
        data <code>${esc(c.dataset_hash || "–")}</code>.</p>`;
  if (tr) {
    h += `<p id="card-training">Trained on <b>${tr.materials.toLocaleString("en")}</b> labeled materials
          (${tr.topological.toLocaleString("en")} topological, ${tr.trivial.toLocaleString("en")} trivial), of which
          <b>${tr.with_spectrum}</b> with a spectrum (${tr.with_spectrum_topological} / ${tr.with_spectrum_trivial}).</p>`;
  } else {
    h += `<p class="muted">This export has no model_card.json (an older export): training counts per element below.</p>`;
  }
  h += metricsTable(c.test_metrics);
  h += `<table><tr><th>element</th><th>window (eV)</th><th>training spectra</th></tr>`;
  for (const [el, w] of Object.entries(c.windows || {})) {
    h += `<tr><td>${esc(el)}</td><td>${fmt(w.lo, 1)} – ${fmt(w.hi, 1)}</td><td>${w.n_train}</td></tr>`;
  }
  h += `</table></div><div>`;
  const cal = card.calibration_test || {};
  h += `<p><b>Calibration</b> (test)${cal.ece != null ? `: ECE ${fmt(cal.ece, 3)}, Brier ${fmt(cal.brier, 4)}` : ""}</p>`;
  h += calibrationSvg(cal.curve);
  h += `</div></div>`;
  if (card.limits && card.limits.length) {
    h += `<p><b>Limits</b></p><ul id="card-limits">` + card.limits.map((l) => `<li>${esc(l)}</li>`).join("") + `</ul>`;
  }
  h += `<p class="muted">Explanations: ${esc(c.explain.method)}; ${c.class_means ? "class means available" :
        "no class means in this export (plots show your spectrum only)"}.</p>`;
  return h;
}

// ------------------------------------------------------------------------------------ one material
function listFiles() {
  const ul = $("file-list");
  ul.innerHTML = "";
  for (const f of $("files").files) {
    const li = document.createElement("li");
    li.dataset.name = f.name;
    li.innerHTML = `<span class="file-name">${esc(f.name)}</span> <span class="muted">(${(f.size / 1024).toFixed(1)} kB)</span>` +
      `<span class="file-elements muted"></span><span class="file-error error" role="alert"></span>`;
    ul.appendChild(li);
  }
}

function showFileReports(files) {
  for (const rep of files || []) {
    const li = [...$("file-list").children].find((x) => x.dataset.name === rep.name);
    if (!li) continue;
    li.querySelector(".file-elements").textContent = rep.elements && rep.elements.length ?
      ` — ${rep.elements.join(", ")}${rep.kind ? " (" + rep.kind + ")" : ""}` : "";
    li.querySelector(".file-error").textContent = rep.error ? " " + rep.error : "";
    li.classList.toggle("has-error", !!rep.error);
  }
}

async function analyze(ev) {
  ev.preventDefault();
  $("single-error").textContent = "";
  $("formula-error").textContent = "";
  $("result").hidden = true;
  listFiles();
  const fd = new FormData();
  fd.append("formula", $("formula").value);
  fd.append("material_id", $("material-id").value);
  for (const f of $("files").files) fd.append("files", f, f.name);
  $("analyze").disabled = true;
  $("single-status").textContent = "reading the spectra and running the model…";
  let r, body;
  try {
    r = await fetch(api("analyze"), {method: "POST", body: fd, headers: authHeaders()});
    body = await r.json().catch(() => null);
  } catch (e) {
    $("single-error").textContent = "cannot reach the service";
  } finally {
    $("analyze").disabled = false;
    $("single-status").textContent = "";
  }
  if (!r) return;
  if (!r.ok || !body || !body.ok) {
    if (body && body.files) showFileReports(body.files);
    if (body && body.formula_error) $("formula-error").textContent = body.formula_error;
    const general = body && (body.error || (!body.files && !body.formula_error)) ? explainHttp(r.status, body) : "";
    if (general) $("single-error").textContent = general;
    else if (!(body && (body.formula_error || (body.files || []).some((f) => f.error)))) {
      $("single-error").textContent = explainHttp(r.status, body);
    }
    return;
  }
  showFileReports(body.files);
  showResult(body);
}

function showResult(body) {
  const ex = body.explanation, p = ex.prediction;
  $("probability").textContent = fmt(p.probability_topological);
  $("probability").dataset.value = p.probability_topological;
  $("label").textContent = p.label;
  $("label").className = "big label-" + p.label;
  $("uncertainty").textContent = fmt(p.uncertainty);
  $("uncertainty").dataset.value = p.uncertainty ?? "";
  $("with-spectrum").textContent = p.elements_with_spectrum.join(", ") || "none";
  $("by-type").textContent = p.elements_by_type.join(", ") || "none";
  $("warnings").innerHTML = (p.warnings || []).map((w) => `<li>${esc(w)}</li>`).join("");
  $("method-note").textContent = `Attributions by ${ex.method} against the ${ex.baseline}: with every spectrum at ` +
    `that baseline P(topological) is ${fmt(ex.probability_at_baseline)}; the attributions sum to ` +
    `${fmt(ex.attribution_total)} (P − P at baseline = ${fmt(p.probability_topological - ex.probability_at_baseline)}). ` +
    `Shaded: the ${Math.round(body.top_fraction * 100)} % of energies with the largest effect ` +
    `(red: pushed toward topological, blue: toward trivial).`;
  const box = $("edges");
  box.innerHTML = "";
  for (const e of ex.edges.filter((x) => x.with_spectrum)) {
    const div = document.createElement("div");
    div.className = "edge";
    div.dataset.element = e.element;
    const eff = e.spectrum_effect === null ? "" :
      ` — sending this spectrum moved P(topological) by <b class="spectrum-effect">${e.spectrum_effect >= 0 ? "+" : ""}${fmt(e.spectrum_effect)}</b>`;
    div.innerHTML = `<h3>${esc(e.element)} K edge${eff}</h3>` + edgeSvg(e, (body.class_means || {})[e.element]) +
      `<div class="legend"><span class="swatch" style="background:#111"></span>your spectrum (after preprocessing)` +
      `<span class="swatch" style="background:var(--topo)"></span>topological training mean` +
      `<span class="swatch" style="background:var(--triv)"></span>trivial training mean</div>`;
    box.appendChild(div);
  }
  $("result").hidden = false;
}

function ticks(lo, hi, n) {
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
  const k = [1, 2, 5, 10].find((m) => (hi - lo) / (m * step) <= n) * step;
  const out = [];
  for (let v = Math.ceil(lo / k) * k; v <= hi + 1e-9; v += k) out.push(Number(v.toFixed(6)));
  return out;
}

function edgeSvg(e, means) {
  const W = 700, H = 300, L = 48, R = 12, T = 10, B = 92, AH = 44;  // bottom strip: attributions
  const xs = e.energy, n = xs.length;
  const series = [e.spectrum];
  if (means && means.topological) series.push(means.topological);
  if (means && means.trivial) series.push(means.trivial);
  let ylo = Math.min(...series.flat()), yhi = Math.max(...series.flat());
  const pad = (yhi - ylo) * 0.05 || 0.1; ylo -= pad; yhi += pad;
  const x0 = xs[0], x1 = xs[n - 1];
  const sx = (v) => L + (v - x0) / (x1 - x0) * (W - L - R);
  const sy = (v) => T + (yhi - v) / (yhi - ylo) * (H - T - B);
  const step = (x1 - x0) / (n - 1);
  let s = `<svg class="edge-plot" data-element="${esc(e.element)}" width="${W}" height="${H}" role="img" ` +
          `aria-label="${esc(e.element)} spectrum with attributions">`;
  const top = new Set(e.top_energies.map((v) => v.toFixed(4)));
  let shaded = 0;
  xs.forEach((x, i) => {
    if (!top.has(x.toFixed(4))) return;
    shaded++;
    const col = e.attribution[i] >= 0 ? "var(--topo)" : "var(--triv)";
    s += `<rect class="shade" x="${(sx(x - step / 2)).toFixed(1)}" y="${T}" width="${(sx(x + step / 2) - sx(x - step / 2)).toFixed(1)}" ` +
         `height="${H - T - B}" fill="${col}" opacity="0.18"/>`;
  });
  s += `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#555"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#555"/>`;
  for (const v of ticks(x0, x1, 7)) {
    s += `<line x1="${sx(v)}" y1="${H - B}" x2="${sx(v)}" y2="${H - B + 4}" stroke="#555"/>` +
         `<text x="${sx(v)}" y="${H - B + 16}" text-anchor="middle">${v}</text>`;
  }
  for (const v of ticks(ylo, yhi, 4)) {
    s += `<text x="${L - 6}" y="${sy(v) + 4}" text-anchor="end">${v}</text>`;
  }
  s += `<text x="14" y="${(T + H - B) / 2}" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">µ (edge steps)</text>`;
  const line = (ys, color, dash, cls) => `<polyline class="${cls}" points="` +
    ys.map((y, i) => `${sx(xs[i]).toFixed(1)},${sy(y).toFixed(1)}`).join(" ") +
    `" fill="none" stroke="${color}" stroke-width="${cls === "user" ? 2 : 1.5}"${dash ? ` stroke-dasharray="${dash}"` : ""}/>`;
  if (means && means.topological) s += line(means.topological, "var(--topo)", "5 3", "mean-topological");
  if (means && means.trivial) s += line(means.trivial, "var(--triv)", "5 3", "mean-trivial");
  s += line(e.spectrum, "#111", "", "user");
  // attribution strip
  const amax = Math.max(...e.attribution.map(Math.abs)) || 1;
  const ay0 = H - B + 32 + AH / 2;
  s += `<text x="${L - 6}" y="${ay0 + 4}" text-anchor="end">attr.</text>`;
  s += `<line x1="${L}" y1="${ay0}" x2="${W - R}" y2="${ay0}" stroke="#bbb"/>`;
  xs.forEach((x, i) => {
    const a = e.attribution[i], h = Math.abs(a) / amax * (AH / 2);
    s += `<rect x="${sx(x - step / 2).toFixed(1)}" y="${(a >= 0 ? ay0 - h : ay0).toFixed(1)}" ` +
         `width="${Math.max(sx(x + step / 2) - sx(x - step / 2), 1).toFixed(1)}" height="${h.toFixed(1)}" ` +
         `fill="${a >= 0 ? "var(--topo)" : "var(--triv)"}"/>`;
  });
  s += `<text x="${(L + W) / 2}" y="${H - 2}" text-anchor="middle">energy (eV); max |attribution| ${amax.toExponential(1)} (${shaded} energies shaded)</text>`;
  return s + "</svg>";
}

// ------------------------------------------------------------------------------------ batch
function runBatch(ev) {
  ev.preventDefault();
  const f = $("batch-file").files[0];
  $("batch-error").textContent = "";
  $("batch-download").hidden = true;
  if (!f) { $("batch-error").textContent = "choose a file first"; return; }
  const fd = new FormData();
  fd.append("file", f, f.name);
  const xhr = new XMLHttpRequest();
  const bar = $("batch-progress"), status = $("batch-status");
  bar.hidden = false; bar.value = 0;
  $("batch-run").disabled = true;
  let seen = 0, failed = false;
  const handle = (ev2) => {
    if (ev2.event === "start") status.textContent = `${ev2.total} materials read; predicting…`;
    if (ev2.event === "progress") {
      bar.value = 10 + 90 * ev2.done / Math.max(ev2.total, 1);
      status.textContent = `predicted ${ev2.done} / ${ev2.total} materials`;
    }
    if (ev2.event === "done") {
      bar.value = 100;
      const url = URL.createObjectURL(new Blob([ev2.csv], {type: "text/csv"}));
      const a = $("batch-download");
      a.href = url; a.download = ev2.filename; a.hidden = false;
      a.textContent = `Download predictions CSV (${ev2.rows} materials${ev2.invalid ? `, ${ev2.invalid} invalid` : ""})`;
      status.textContent = `done: ${ev2.rows} materials`;
    }
    if (ev2.event === "error") { failed = true; $("batch-error").textContent = ev2.error; }
  };
  const consume = () => {
    if (xhr.status !== 200) return;
    const text = xhr.responseText;
    let nl;
    while ((nl = text.indexOf("\n", seen)) >= 0) {
      const line = text.slice(seen, nl); seen = nl + 1;
      if (line.trim()) handle(JSON.parse(line));
    }
  };
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) { bar.value = 10 * e.loaded / e.total; status.textContent = `uploading ${Math.round(100 * e.loaded / e.total)} %`; }
  };
  xhr.onprogress = consume;
  xhr.onload = () => {
    $("batch-run").disabled = false;
    if (xhr.status !== 200) {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      $("batch-error").textContent = explainHttp(xhr.status, body);
      bar.hidden = true; status.textContent = "";
      return;
    }
    consume();
    if (failed) bar.hidden = true;
  };
  xhr.onerror = () => { $("batch-run").disabled = false; $("batch-error").textContent = "cannot reach the service"; };
  xhr.open("POST", api("batch"));
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.send(fd);
}

// ------------------------------------------------------------------------------------ wiring
window.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token").addEventListener("change", () => { sessionStorage.setItem(TOKEN_KEY, $("token").value.trim()); loadCard(); });
  $("files").addEventListener("change", listFiles);
  $("single-form").addEventListener("submit", analyze);
  $("batch-form").addEventListener("submit", runBatch);
  loadCard();
});
