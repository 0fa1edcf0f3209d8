/* psgvlm serve: the page. Every plot is drawn by uPlot (static/vendor/uplot); the data
 * come from the JSON API described in docs/serve.md. */
"use strict";

const STAGES = ["W", "N1", "N2", "N3", "R"];
const LEVEL = { W: 4, R: 3, N1: 2, N2: 1, N3: 0 };          // hypnogram rows, top to bottom W R N1 N2 N3
const LEVEL_NAMES = ["N3", "N2", "N1", "R", "W"];
const STACK = ["N3", "N2", "N1", "R", "W"];                  // hypnodensity, bottom to top
const COLOURS = { W: "#f4a259", N1: "#9ad1d4", N2: "#3c8dbc", N3: "#1b3a6b", R: "#d1495b" };
const ROLE_COLOURS = { eeg: "#1d3557", eog: "#2a7a4b", emg: "#7a4b2a", ecg: "#6b2a7a" };
const EVENT_COLOURS = {
  spindle: "rgba(230, 57, 70, 0.25)", kcomplex: "rgba(247, 127, 0, 0.28)",
  slow_wave: "rgba(69, 123, 157, 0.25)", rapid_eye_movement: "rgba(42, 157, 143, 0.28)",
  slow_eye_movement: "rgba(142, 202, 230, 0.35)", chin_tone: "rgba(120, 80, 40, 0.12)",
};
const EVENT_NAMES = {
  spindle: "spindle", kcomplex: "K-complex", slow_wave: "slow wave",
  rapid_eye_movement: "REM", slow_eye_movement: "SEM", chin_tone: "chin tone",
};

const $ = (id) => document.getElementById(id);
const S = {
  rid: null, rec: null, hyp: null, epoch: 0, traces: null, stats: null,
  charts: {}, events: new Map(), explained: new Map(), traceCache: new Map(),
  startSec: null, staged: -1, seq: -1, status: null, busy: false,
  client: sessionStorage.getItem("psgvlm-client") ||
    ("tab-" + Math.random().toString(36).slice(2, 10)),
};
sessionStorage.setItem("psgvlm-client", S.client);

// -- talking to the server -------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}
function detailText(detail) {
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return String(detail);
}
async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    throw new ApiError(response.status, body && body.detail ? detailText(body.detail) : response.statusText);
  }
  return body;
}
function post(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
}
async function runJob(path, body) {
  let job = await post(path, body);
  while (job.status === "running") {
    await new Promise((r) => setTimeout(r, 250));
    job = await api(`/api/jobs/${job.id}`);
  }
  if (job.status === "error") throw new ApiError(500, job.error);
  return job.result;
}
const rec = (path) => `/api/recordings/${encodeURIComponent(S.rid)}${path}`;

let bannerTimer = null;
function banner(message, sticky) {
  const el = $("banner");
  clearTimeout(bannerTimer);
  if (!message) { el.hidden = true; return; }
  el.textContent = message;
  el.hidden = false;
  if (!sticky) bannerTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

// -- time ----------------------------------------------------------------------------------
function pad(n) { return String(n).padStart(2, "0"); }
function hms(seconds) {
  const s = Math.round(seconds);
  return `${Math.floor(s / 3600)}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}
function clock(t, withSeconds) {
  if (S.startSec === null) return hms(t);
  const s = Math.round(S.startSec + t) % 86400;
  const text = `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}`;
  return withSeconds ? `${text}:${pad(s % 60)}` : text;
}

// -- the night -------------------------------------------------------------------------------
function width(el) { return Math.max(300, el.clientWidth || 600); }
function epochAt(x) {
  const onsets = S.hyp.onsets;
  let lo = 0, hi = onsets.length - 1;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (onsets[mid] <= x) lo = mid; else hi = mid - 1; }
  return lo;
}
function markerHook(u) {
  if (!S.hyp) return;
  const x = u.valToPos(S.hyp.onsets[S.epoch] + S.hyp.durations[S.epoch] / 2, "x", true);
  const ctx = u.ctx;
  ctx.save();
  ctx.strokeStyle = "#2b6cb0"; ctx.lineWidth = 2 * devicePixelRatio;
  ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
  ctx.restore();
}
function clickToJump(u) {
  u.over.addEventListener("click", () => {
    if (u.cursor.left == null || u.cursor.left < 0 || !S.hyp) return;
    goto(epochAt(u.posToVal(u.cursor.left, "x")));
  });
}
// Ticks on whole clock units (seconds): 30 s ... 2 h for the night, 1 s ... 1 min for traces.
const NIGHT_TICKS = [30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800];
const TRACE_TICKS = [1, 2, 5, 10, 15, 30, 60, 120];
const timeAxis = {
  values: (u, splits, axis, space, incr) => splits.map((v) => clock(v, incr < 60)), space: 60, incrs: NIGHT_TICKS,
};

function nightData() {
  const h = S.hyp, n = h.onsets.length;
  const end = h.onsets[n - 1] + h.durations[n - 1];
  const x = [...h.onsets, end];
  const level = (names) => [...names.map((s) => (s ? LEVEL[s] : null)), names[n - 1] ? LEVEL[names[n - 1]] : null];
  const reviewed = level(h.stages);
  const reference = h.reference ? level(h.reference) : null;
  const disagree = x.map((_, i) => (i < n && h.reference && h.reference[i] && h.stages[i] && h.reference[i] !== h.stages[i] ? 4.45 : null));
  const edited = x.map(() => null);
  for (const i of h.edited) edited[i] = -0.45;
  const hyp = [x, reviewed, reference || x.map(() => null), disagree, edited];
  const cumulative = [];
  let running = x.map(() => 0);
  for (const stage of STACK) {
    const k = STAGES.indexOf(stage);
    running = running.map((v, i) => {
      const row = h.probabilities && h.probabilities[Math.min(i, n - 1)];
      return row && row[k] !== null && v !== null ? v + row[k] : null;
    });
    cumulative.push(running);
  }
  return { hyp, density: [x, ...cumulative.slice().reverse()] };
}

function buildNightCharts() {
  for (const key of ["hypnogram", "hypnodensity"]) {
    if (S.charts[key]) { S.charts[key].destroy(); delete S.charts[key]; }
  }
  const data = nightData();
  const stepped = uPlot.paths.stepped({ align: 1 });
  const sync = uPlot.sync("night");
  const cursor = { sync: { key: sync.key }, drag: { x: false, y: false }, points: { show: false } };
  const hypEl = $("hypnogram");
  S.charts.hypnogram = new uPlot({
    width: width(hypEl), height: 150, cursor, legend: { show: false },
    scales: { x: { time: false }, y: { range: [-0.6, 4.6] } },
    axes: [timeAxis, { splits: () => [0, 1, 2, 3, 4], values: (u, s) => s.map((v) => LEVEL_NAMES[v]), size: 36 }],
    series: [
      {},
      { label: "reviewed", stroke: "#1d2430", width: 2, paths: stepped, points: { show: false } },
      { label: "reference", stroke: "#f08c00", width: 1.5, dash: [5, 4], paths: stepped, points: { show: false }, show: Boolean(S.hyp.reference) },
      { label: "disagreement", stroke: "#d00000", paths: () => null, points: { show: true, size: 5, fill: "#d00000", stroke: "#d00000" } },
      { label: "corrected", stroke: "#2b6cb0", paths: () => null, points: { show: true, size: 6, fill: "#2b6cb0", stroke: "#2b6cb0" } },
    ],
    hooks: { draw: [markerHook], ready: [clickToJump] },
  }, data.hyp, hypEl);
  const densityEl = $("hypnodensity");
  const top = STACK.slice().reverse();
  S.charts.hypnodensity = new uPlot({
    width: width(densityEl), height: 110, cursor, legend: { show: false },
    scales: { x: { time: false }, y: { range: [0, 1] } },
    axes: [timeAxis, { splits: () => [0, 0.5, 1], size: 36 }],
    series: [{}, ...top.map((stage) => ({
      label: stage, stroke: COLOURS[stage], fill: COLOURS[stage], width: 0, paths: stepped, points: { show: false },
    }))],
    hooks: { draw: [markerHook], ready: [clickToJump] },
  }, data.density, densityEl);
  sync.sub(S.charts.hypnogram); sync.sub(S.charts.hypnodensity);
  $("hyp-legend").innerHTML = '<i style="background:#1d2430"></i>reviewed' +
    (S.hyp.reference ? '<i style="background:#f08c00"></i>reference<i style="background:#d00000"></i>disagreement' : "") +
    '<i style="background:#2b6cb0"></i>corrected';
  $("density-legend").innerHTML = top.map((s) => `<i style="background:${COLOURS[s]}"></i>${s}`).join("");
}
function updateNightCharts() {
  if (!S.charts.hypnogram) { buildNightCharts(); return; }
  const data = nightData();
  S.charts.hypnogram.setData(data.hyp, false);
  S.charts.hypnodensity.setData(data.density, false);
  S.charts.hypnogram.redraw(); S.charts.hypnodensity.redraw();
}

const STAT_ROWS = [
  ["TIB", "time in bed (min)"], ["TST", "total sleep (min)"], ["SE", "efficiency (%)"],
  ["SOL", "sleep onset (min)"], ["WASO", "wake after onset (min)"], ["Lat_REM", "REM latency (min)"],
  ["N1", "N1 (min)"], ["N2", "N2 (min)"], ["N3", "N3 (min)"], ["REM", "REM (min)"],
  ["%N1", "N1 %"], ["%N2", "N2 %"], ["%N3", "N3 %"], ["%REM", "REM %"], ["n_awakenings", "awakenings"],
];
function fmt(v, digits = 1) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }
function renderStats() {
  const st = S.stats;
  if (!st) return;
  const ref = st.reference;
  let html = `<table id="stats-table"><tr><th>statistic</th><th>reviewed</th>${ref ? "<th>reference</th>" : ""}</tr>`;
  for (const [key, label] of STAT_ROWS) {
    const digits = key === "n_awakenings" ? 0 : 1;
    html += `<tr><td>${label}</td><td>${fmt(st.reviewed[key], digits)}</td>${ref ? `<td>${fmt(ref[key], digits)}</td>` : ""}</tr>`;
  }
  html += "</table>";
  if (st.agreement) {
    const a = st.agreement, m = st.model_agreement;
    html += `<div class="agreement" id="agreement">Agreement with the reference on ${a.epochs} epochs: accuracy ${fmt(a.accuracy, 3)}, κ ${fmt(a.kappa, 3)}` +
      (m ? ` (model alone: ${fmt(m.accuracy, 3)}, κ ${fmt(m.kappa, 3)})` : "") + "</div>";
  }
  if (!st.complete) html += '<div class="note">Staging is still running: epochs not staged yet count as unscored.</div>';
  $("stats").innerHTML = html;
}

async function refreshNight() {
  const [hyp, stats] = await Promise.all([api(rec("/hypnogram")), api(rec("/statistics"))]);
  S.hyp = hyp; S.stats = stats; S.seq = hyp.edit_seq;
  updateNightCharts();
  renderStats();
  renderEpochHeader();
}

// -- the epoch -------------------------------------------------------------------------------
function rowCentre(k, n) { return n - k - 0.5; }
function traceData(tr) {
  const n = tr.values.length, len = tr.values[0].length;
  const x = Array.from({ length: len }, (_, i) => tr.start + i * tr.dt);
  const ys = tr.values.map((row, k) => {
    const scale = S.rec.channels[k].scale_uv, c = rowCentre(k, n);
    return row.map((v) => (v === null ? null : c + v / (2 * scale)));
  });
  return [x, ...ys];
}
function drawEpochBackground(u) {
  const tr = S.traces;
  if (!tr) return;
  const ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
  ctx.save();
  ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
  for (const ep of tr.epochs) {
    const x0 = u.valToPos(ep.onset, "x", true), x1 = u.valToPos(ep.onset + ep.duration, "x", true);
    ctx.fillStyle = ep.index === tr.index ? "#fffdf2" : "#f1f2f4";
    ctx.fillRect(x0, top, x1 - x0, height);
    ctx.strokeStyle = "#9aa3ad"; ctx.lineWidth = devicePixelRatio;
    ctx.beginPath(); ctx.moveTo(x0, top); ctx.lineTo(x0, top + height); ctx.stroke();
    ctx.fillStyle = ep.index === tr.index ? "#1d2430" : "#6b7380";
    const ref = ep.reference ? ` · ref ${ep.reference}` : "";
    ctx.fillText(`#${ep.index} ${ep.stage || "?"}${ref}`, x0 + 4 * devicePixelRatio, top + 12 * devicePixelRatio);
  }
  const n = tr.values.length;
  ctx.strokeStyle = "#e3e6ea";
  for (let k = 0; k < n; k++) {  // zero line of each strip
    const y = u.valToPos(rowCentre(k, n), "y", true);
    ctx.beginPath(); ctx.moveTo(u.bbox.left, y); ctx.lineTo(u.bbox.left + u.bbox.width, y); ctx.stroke();
  }
  ctx.restore();
}
function rowBox(u, k, n, t0, t1) {
  const x0 = u.valToPos(t0, "x", true), x1 = u.valToPos(t1, "x", true);
  const y0 = u.valToPos(n - k, "y", true), y1 = u.valToPos(n - k - 1, "y", true);
  return [x0, y0, Math.max(x1 - x0, 2), y1 - y0];
}
function drawMarks(u) {
  const tr = S.traces;
  if (!tr) return;
  const n = tr.values.length, ctx = u.ctx;
  ctx.save();
  ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
  for (const ep of tr.epochs) {
    const cells = S.explained.get(ep.index);
    if (cells) {
      const peak = Math.max(1e-12, ...cells.grid.flat().map((v) => Math.max(v, 0)));
      cells.grid.forEach((row, k) => row.forEach((v, w) => {
        if (v <= 0 || k >= n) return;
        const [x, y, wd, ht] = rowBox(u, k, n, ep.onset + cells.edges[w], ep.onset + cells.edges[w + 1]);
        ctx.fillStyle = `rgba(214, 40, 40, ${(0.35 * v / peak).toFixed(3)})`;
        ctx.fillRect(x, y, wd, ht);
      }));
    }
    for (const ev of S.events.get(ep.index) || []) {
      for (const k of ev.rows) {
        const [x, y, wd, ht] = rowBox(u, k, n, ep.onset + ev.start, ep.onset + ev.end);
        ctx.fillStyle = EVENT_COLOURS[ev.kind] || "rgba(0,0,0,0.15)";
        ctx.fillRect(x, y, wd, ht);
        ctx.strokeStyle = "rgba(0,0,0,0.35)"; ctx.lineWidth = devicePixelRatio;
        ctx.strokeRect(x, y, wd, ht);
        ctx.fillStyle = "#1d2430";
        ctx.fillText(EVENT_NAMES[ev.kind] || ev.kind, x + 2 * devicePixelRatio, y + ht - 3 * devicePixelRatio);
      }
    }
  }
  ctx.restore();
}
function showReadout(u) {
  const i = u.cursor.idx, tr = S.traces;
  if (i == null || !tr) { $("readout").textContent = ""; return; }
  const t = tr.start + i * tr.dt;
  const parts = tr.values.map((row, k) => `${S.rec.channels[k].name} ${row[i] === null ? "–" : row[i].toFixed(1)} µV`);
  $("readout").textContent = `${clock(t, true)} (${hms(t)} from the start) · ${parts.join(" · ")}`;
}
function buildTraceChart() {
  if (S.charts.traces) { S.charts.traces.destroy(); delete S.charts.traces; }
  const channels = S.rec.channels, n = channels.length, el = $("traces");
  const centres = channels.map((_, k) => rowCentre(k, n));
  S.charts.traces = new uPlot({
    width: width(el), height: Math.min(560, Math.max(240, 90 * n)), legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: { x: { time: false }, y: { range: [0, n] } },
    axes: [
      { values: (u, splits) => splits.map((v) => clock(v, true)), space: 80, incrs: TRACE_TICKS },
      { splits: () => centres, values: () => channels.map((c) => `${c.name} ±${c.scale_uv} µV`), size: 150, gap: 4 },
    ],
    series: [{}, ...channels.map((c) => ({
      label: c.name, stroke: ROLE_COLOURS[c.role] || "#1d2430", width: 1, points: { show: false }, spanGaps: false,
    }))],
    hooks: { drawClear: [drawEpochBackground], draw: [drawMarks], setCursor: [showReadout] },
  }, S.traces ? traceData(S.traces) : [[], ...channels.map(() => [])], el);
}

async function loadTraces(index) {
  const key = `${S.rid}/${index}/${S.seq}`;
  if (S.traceCache.has(key)) return S.traceCache.get(key);
  const promise = api(rec(`/epochs/${index}/traces?context=1`));
  S.traceCache.set(key, promise);
  if (S.traceCache.size > 40) S.traceCache.delete(S.traceCache.keys().next().value);
  promise.catch(() => S.traceCache.delete(key));
  return promise;
}
async function showEpoch() {
  const index = S.epoch;
  renderEpochHeader();
  $("model-image").src = rec(`/epochs/${index}/image.png`);
  const explained = S.explained.get(index);
  $("explain-image").hidden = !explained;
  if (explained) $("explain-image").src = explained.image;
  $("explain-text").textContent = explained ? explained.text : "";
  try {
    const tr = await loadTraces(index);
    if (index !== S.epoch) return;
    S.traces = tr;
    if (!S.charts.traces) buildTraceChart();
    S.charts.traces.setData(traceData(tr));
    if (index + 1 < S.rec.epochs) loadTraces(index + 1);  // paging on is instant
  } catch (err) { banner(`Epoch ${index}: ${err.message}`); }
}
function renderEpochHeader() {
  if (!S.hyp || !S.rec) return;
  const i = S.epoch, h = S.hyp;
  $("goto").value = i;
  $("n-epochs").textContent = S.rec.epochs - 1;
  const onset = h.onsets[i], end = onset + h.durations[i];
  $("epoch-time").textContent = `${clock(onset, true)}–${clock(end, true)} (${hms(onset)} from the start)`;
  const stage = h.stages[i], model = h.model[i], ref = h.reference ? h.reference[i] : null;
  const stageEl = $("epoch-stage");
  stageEl.textContent = stage || "–";
  stageEl.className = h.edited.includes(i) ? "corrected" : "";
  stageEl.title = h.edited.includes(i) ? "corrected by hand" : "the model's stage";
  stageEl.classList.toggle("differs", Boolean(ref && stage && ref !== stage));
  $("epoch-model").textContent = model || (S.rec.status === "error" ? "–" : "…");
  $("epoch-ref-wrap").hidden = !h.reference;
  $("epoch-reference").textContent = ref || "–";
  document.querySelectorAll("[data-stage]").forEach((b) => b.classList.toggle("current", b.dataset.stage === stage));
  const row = h.probabilities && h.probabilities[i];
  const threshold = Number($("threshold").value);
  $("probabilities").innerHTML = row && row[0] !== null
    ? STAGES.map((s, k) => `${s} ${row[k].toFixed(2)}`).join(" · ") +
      (h.confidence[i] < threshold ? ' <span class="low">low confidence</span>' : "")
    : "not staged yet";
  history.replaceState(null, "", `#${encodeURIComponent(S.rid)}/${i}`);
  for (const chart of [S.charts.hypnogram, S.charts.hypnodensity]) if (chart) chart.redraw(false);
}
function goto(index) {
  if (!S.rec || !S.rec.opened) return;
  const i = Math.max(0, Math.min(S.rec.epochs - 1, Math.round(Number(index))));
  if (!Number.isFinite(i)) return;
  S.epoch = i;
  showEpoch();
}
function find(test, direction) {
  const n = S.rec.epochs;
  for (let step = 1; step < n; step++) {
    const j = S.epoch + direction * step;
    if (j < 0 || j >= n) break;
    if (test(j)) { goto(j); return; }
  }
  banner(direction > 0 ? "No further epoch of that kind." : "No earlier epoch of that kind.");
}
function nextLow(direction) {
  const threshold = Number($("threshold").value);
  find((j) => S.hyp.confidence && S.hyp.confidence[j] !== null && S.hyp.confidence[j] < threshold, direction);
}
function nextDisagreement(direction) {
  if (!S.hyp.reference) { banner("This recording has no reference hypnogram."); return; }
  find((j) => S.hyp.reference[j] && S.hyp.stages[j] && S.hyp.reference[j] !== S.hyp.stages[j], direction);
}

// -- corrections -------------------------------------------------------------------------------
async function correct(stage) {
  if (!S.hyp) return;
  try {
    await post(rec("/edits"), { epoch: S.epoch, stage, client: S.client });
    S.traceCache.clear();
    await refreshNight();
    showEpoch();
  } catch (err) { banner(`Correction not saved: ${err.message}`, true); }
}
async function undo() {
  try {
    const out = await post(rec("/undo"), { client: S.client });
    if (!out.entry) { banner("Nothing of yours to undo."); return; }
    S.traceCache.clear();
    await refreshNight();
    goto(out.entry.epoch);
  } catch (err) { banner(`Undo: ${err.message}`, true); }
}

// -- asking and explaining ---------------------------------------------------------------------
function addMessage(kind, text, meta) {
  const el = document.createElement("div");
  el.className = `msg ${kind}`;
  el.textContent = text;
  if (meta) { const m = document.createElement("span"); m.className = "meta"; m.textContent = meta; el.appendChild(m); }
  $("messages").appendChild(el);
  $("messages").scrollTop = $("messages").scrollHeight;
  return el;
}
async function ask(question) {
  question = question.trim();
  if (!question || !S.rec || !S.rec.opened) return;
  const index = S.epoch;
  addMessage("question", question, `epoch ${index}`);
  const pending = addMessage("answer pending", "…");
  try {
    const answer = await runJob(rec(`/epochs/${index}/ask`), { question });
    pending.remove();
    const flagged = answer.claims_flagged.length;
    const events = answer.events || [];
    const marked = events.length ? `; ${events.length} event(s) marked on the traces` : "";
    const el = addMessage("answer", answer.text,
      `epoch ${index} · claims checked ${answer.claims_checked}, flagged ${flagged}${marked}`);
    if (flagged) el.classList.add("flagged");
    if (answer.image_url) { const img = document.createElement("img"); img.src = answer.image_url; img.alt = "events marked on the model's image"; el.appendChild(img); }
    S.events.set(index, events);
    if (S.charts.traces) S.charts.traces.redraw(false);
  } catch (err) {
    pending.remove();
    addMessage("error", `Could not answer: ${err.message}`);
  }
}
async function explain() {
  if (!S.rec || !S.rec.opened) return;
  const index = S.epoch, method = $("explain-method").value;
  const button = $("explain");
  button.disabled = true;
  $("explain-text").textContent = `Working out where the model looked (${method})…`;
  try {
    const r = await runJob(rec(`/epochs/${index}/explain`), { method, window_s: 3 });
    const text = `${r.where} (${r.method} for ${r.target}, p = ${r.probability.toFixed(2)})`;
    S.explained.set(index, { grid: r.grid, edges: r.window_edges_s, image: r.image_url, text });
    if (index === S.epoch) {
      $("explain-image").src = r.image_url; $("explain-image").hidden = false;
      $("explain-text").textContent = text;
      if (S.charts.traces) S.charts.traces.redraw(false);
    }
  } catch (err) {
    $("explain-text").textContent = `No explanation: ${err.message}`;
  } finally { button.disabled = false; }
}

// -- recordings and polling ------------------------------------------------------------------
function setStatus(summary) {
  const el = $("status"), bar = $("progress");
  el.classList.toggle("error", summary.status === "error");
  if (summary.status === "error") el.textContent = "error";
  else if (summary.status === "staging" && summary.opened) el.textContent = `staging ${summary.staged}/${summary.epochs} epochs`;
  else if (summary.status === "ready") el.textContent = `${summary.epochs} epochs staged` + (summary.edited ? `, ${summary.edited} corrected` : "");
  else el.textContent = `${summary.status}…`;
  bar.hidden = !(summary.status === "staging" && summary.opened);
  if (!bar.hidden) bar.value = summary.staged / summary.epochs;
  if (summary.error) banner(summary.error, true);
}
async function openRecording(rid, epoch) {
  S.rid = rid; S.rec = null; S.hyp = null; S.traces = null; S.staged = -1; S.seq = -1;
  S.events = new Map(); S.explained = new Map(); S.traceCache = new Map();
  for (const key of Object.keys(S.charts)) { S.charts[key].destroy(); delete S.charts[key]; }
  $("messages").innerHTML = ""; $("stats").innerHTML = ""; banner(null);
  $("recording").value = rid;
  $("export-csv").href = rec("/export.csv");
  $("export-edf").href = rec("/export.edf");
  S.epoch = Number.isFinite(epoch) ? epoch : 0;
  await poll();
}
async function poll() {
  if (!S.rid) return;
  const rid = S.rid;
  let summary;
  try { summary = await api(rec("")); } catch (err) { setStatus({ status: "error", error: err.message }); return; }
  if (rid !== S.rid) return;
  const first = !S.rec || (!S.rec.opened && summary.opened);
  S.rec = summary;
  setStatus(summary);
  for (const id of ["night", "epoch", "chat", "exports"]) $(id).hidden = !summary.opened;  // only the reason
  if (!summary.opened) return;
  if (first) {
    S.startSec = null;
    if (summary.start_time) {
      const m = summary.start_time.match(/T(\d\d):(\d\d):(\d\d(?:\.\d+)?)/);
      if (m) S.startSec = Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]);
    }
    $("threshold").value = $("threshold").value || summary.low_confidence;
    S.epoch = Math.min(S.epoch, summary.epochs - 1);
    await refreshNight();
    buildTraceChart();
    showEpoch();
  } else if (summary.staged !== S.staged || summary.edit_seq !== S.seq) {
    S.traceCache.clear();
    await refreshNight();
    if (summary.edit_seq !== S.seq || summary.staged !== S.staged) showEpoch();
  }
  S.staged = summary.staged; S.seq = summary.edit_seq;
}

async function start() {
  let list;
  try { list = await api("/api/recordings"); } catch (err) { banner(`Cannot reach the server: ${err.message}`, true); return; }
  const select = $("recording");
  for (const r of list) {
    const option = document.createElement("option");
    option.value = r.id; option.textContent = r.name + (r.status === "error" ? " (cannot open)" : "");
    select.appendChild(option);
  }
  const [hashRid, hashEpoch] = decodeURIComponent(location.hash.slice(1)).split("/");
  const chosen = list.find((r) => r.id === hashRid) ? hashRid : list[0].id;
  await openRecording(chosen, hashRid === chosen ? Number(hashEpoch) : 0);
  setInterval(poll, 1500);
}

// -- wiring ------------------------------------------------------------------------------------
$("recording").addEventListener("change", (e) => openRecording(e.target.value, 0));
document.querySelectorAll("[data-go]").forEach((b) => b.addEventListener("click", () => goto(S.epoch + Number(b.dataset.go))));
document.querySelectorAll("[data-stage]").forEach((b) => b.addEventListener("click", () => correct(b.dataset.stage)));
document.querySelectorAll("[data-q]").forEach((b) => b.addEventListener("click", () => ask(b.dataset.q)));
$("undo").addEventListener("click", undo);
$("next-low").addEventListener("click", () => nextLow(1));
$("next-dis").addEventListener("click", () => nextDisagreement(1));
$("explain").addEventListener("click", explain);
$("goto").addEventListener("change", (e) => goto(e.target.value));
$("goto").addEventListener("keydown", (e) => { if (e.key === "Enter") { goto(e.target.value); e.target.blur(); } });
$("threshold").addEventListener("change", renderEpochHeader);
$("ask-form").addEventListener("submit", (e) => { e.preventDefault(); const q = $("question"); ask(q.value); q.value = ""; });
$("help-button").addEventListener("click", () => $("help").showModal());
window.addEventListener("resize", () => {
  for (const [key, chart] of Object.entries(S.charts)) chart.setSize({ width: width($(key)), height: chart.height });
});
const STAGE_KEYS = { w: "W", W: "W", 0: "W", 1: "N1", 2: "N2", 3: "N3", r: "R", R: "R", 5: "R" };
document.addEventListener("keydown", (e) => {
  if (e.target.matches("input, textarea, select")) { if (e.key === "Escape") e.target.blur(); return; }
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey || !S.rec || !S.rec.opened) return;
  const actions = {
    ArrowRight: () => goto(S.epoch + 1), ArrowLeft: () => goto(S.epoch - 1),
    PageDown: () => goto(S.epoch + 10), PageUp: () => goto(S.epoch - 10),
    Home: () => goto(0), End: () => goto(S.rec.epochs - 1),
    l: () => nextLow(1), L: () => nextLow(-1), d: () => nextDisagreement(1), D: () => nextDisagreement(-1),
    u: undo, U: undo, e: explain, E: explain,
    g: () => { $("goto").focus(); $("goto").select(); }, G: () => { $("goto").focus(); $("goto").select(); },
    "/": () => $("question").focus(), "?": () => $("help").showModal(),
  };
  if (e.key in STAGE_KEYS) { e.preventDefault(); correct(STAGE_KEYS[e.key]); return; }
  if (e.key in actions) { e.preventDefault(); actions[e.key](); }
});
start();
