// The fedforge dashboard page: listens to /api/events (server-sent events) and redraws.
// Every value from the run goes into the page as text (textContent), never as HTML:
// participant ids and failure reasons come from participants.
"use strict";

const state = { rounds: [], view: null, charts: {}, metric: null, chosen: false };
const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function num(v) {
  if (typeof v !== "number") return v === null || v === undefined ? "–" : String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

function bytes(v) {
  if (typeof v !== "number") return "–";
  for (const [unit, size] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
    if (v >= size) return `${Number((v / size).toPrecision(3))} ${unit}`;
  }
  return `${v} B`;
}

function seconds(v) {
  if (typeof v !== "number") return "–";
  if (v < 1) return `${(v * 1000).toFixed(0)} ms`;
  if (v < 120) return `${v.toFixed(1)} s`;
  return `${Math.floor(v / 60)} min ${Math.round(v % 60)} s`;
}

function ago(t) {
  if (typeof t !== "number" || !t) return "–";
  const s = Math.max(0, Date.now() / 1000 - t);
  return s < 2 ? "now" : `${seconds(s)} ago`;
}

// --- rounds table ------------------------------------------------------------------------

const FIRST = ["round", "sampled", "aggregated", "failed", "rejected", "train_loss"];
const LAST = ["epsilon", "secagg_excluded", "bytes_down", "bytes_up", "compression_up",
  "fit_time_s", "eval_time_s", "round_time_s"];
const LABELS = { aggregated: "answered", failed: "dropped", compression_up: "compression up",
  round_time_s: "round time s", secagg_excluded: "secagg excluded" };

function roundColumns(rounds) {
  const seen = new Set();
  for (const r of rounds) for (const k of Object.keys(r)) seen.add(k);
  // a metric column holds numbers; a confusion matrix (rows of counts) is drawn elsewhere
  const evals = [...seen]
    .filter((k) => /^(central|federated)_/.test(k))
    .filter((k) => rounds.some((r) => typeof r[k] === "number"))
    .sort();
  return [...FIRST, ...evals, ...LAST].filter((k) => seen.has(k));
}

function cell(key, value) {
  if (key === "failed" || key === "rejected") {
    const ids = Object.keys(value || {});
    const td = el("td", ids.length, { "data-key": key, "data-value": ids.length });
    if (ids.length) td.title = ids.map((i) => `${i}: ${value[i]}`).join("\n");
    return td;
  }
  const text = key.startsWith("bytes") ? bytes(value) : num(value);
  const td = el("td", text, { "data-key": key });
  if (value !== undefined) td.setAttribute("data-value", typeof value === "number" ? String(value) : value);
  return td;
}

function drawRounds() {
  const cols = roundColumns(state.rounds);
  const head = $("rounds-head");
  head.replaceChildren(...cols.map((c) => el("th", LABELS[c] || c.replaceAll("_", " "))));
  const rows = state.rounds.slice().reverse().map((r) => {
    const tr = el("tr", null, { "data-round": r.round });
    if (r.skipped) tr.title = r.skipped;
    tr.append(...cols.map((c) => cell(c, r[c])));
    return tr;
  });
  $("rounds-body").replaceChildren(...rows);
}

// --- charts (uPlot) ----------------------------------------------------------------------

const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#718096"];

function chart(id, title, keys, extra) {
  const box = $(id);
  if (typeof uPlot === "undefined") { $("chart-note").hidden = false; return; }
  const present = keys.filter((k) => state.rounds.some((r) => typeof r[k] === "number"));
  const lines = present.map((k) => state.rounds.map((r) => (typeof r[k] === "number" ? r[k] : null)));
  const data = [state.rounds.map((r) => r.round), ...lines];
  const names = [...present];
  if (extra) { names.push(extra.label); data.push(state.rounds.map(() => extra.value)); }
  if (!present.length) { box.replaceChildren(); delete state.charts[id]; return; }
  const sig = title + "|" + names.join(",");
  const old = state.charts[id];
  const width = Math.max(240, box.clientWidth || 400);
  if (old && old.sig === sig) { old.plot.setData(data); old.plot.setSize({ width, height: 220 }); return; }
  box.replaceChildren();
  const series = [{ label: "round" }, ...names.map((n, i) => ({
    label: n.replaceAll("_", " "), stroke: COLORS[i % COLORS.length], width: 2,
    dash: extra && n === extra.label ? [6, 4] : undefined, points: { show: state.rounds.length < 60 },
  }))];
  const opts = { title, width, height: 220, series, scales: { x: { time: false } },
    axes: [{ label: "round", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }, {}],
    legend: { live: true } };
  state.charts[id] = { sig, plot: new uPlot(opts, data, box) };
}

function metricChoices(view) {
  const sel = $("metric");
  const names = view.metrics.names;
  if (!state.chosen) state.metric = view.metrics.default;
  const have = [...sel.options].map((o) => o.value).join(",");
  if (have !== names.join(",")) {
    sel.replaceChildren(...names.map((n) => el("option", n, { value: n })));
  }
  sel.value = state.metric || "";
  sel.hidden = names.length === 0;
}

function drawCharts(view) {
  chart("chart-loss", "loss", ["train_loss", "central_loss", "federated_loss"]);
  const m = state.metric;
  if (m) chart("chart-metric", m, [`central_${m}`, `federated_${m}`]);
  const p = view.privacy;
  chart("chart-epsilon", "epsilon spent", p.enabled ? ["epsilon"] : [],
    p.budget ? { label: "budget", value: p.budget } : null);
  chart("chart-survivors", "participants per round", ["sampled", "aggregated"]);
}

// --- cards -------------------------------------------------------------------------------

function drawHeader(view) {
  const run = view.run, prog = view.progress;
  $("run-name").textContent = run.name || "fedforge";
  const badge = $("run-state");
  badge.textContent = prog.state;
  badge.className = "badge " + (/finished/.test(prog.state) ? "finished"
    : /(stopped|not running)/.test(prog.state) ? "problem" : "running");
  $("run-mode").textContent = run.mode + (run.server ? ` (server ${run.server})` : "");
  $("run-dir").textContent = run.dir;
  document.title = `${run.name || "fedforge"}: round ${prog.round} – fedforge`;
}

function drawProgress(view) {
  const p = view.progress;
  $("round").textContent = p.round;
  $("rounds").textContent = p.rounds ?? "?";
  $("bar-fill").style.width = p.rounds ? `${Math.min(100, (100 * p.round) / p.rounds)}%` : "0";
  $("mean-round").textContent = seconds(p.mean_round_s);
  const last = state.rounds[state.rounds.length - 1];
  $("last-round").textContent = last ? seconds(last.round_time_s) : "–";
  $("eta").textContent = /finished/.test(p.state) ? "done" : seconds(p.eta_s);
}

function drawPrivacy(view) {
  const p = view.privacy, body = $("privacy-body");
  if (!p.enabled) { body.replaceChildren(el("span", "off: no differential privacy in this run")); return; }
  const parts = [el("div", `ε spent ${num(p.epsilon)}` + (p.budget ? ` of budget ${num(p.budget)}` : " (no budget)")
    + (p.delta ? ` at δ = ${p.delta}` : ""), { id: "epsilon" })];
  if (p.budget && typeof p.epsilon === "number") {
    const meter = el("div", null, { class: "meter" });
    const fill = el("div"); fill.style.width = `${Math.min(100, (100 * p.epsilon) / p.budget)}%`;
    meter.append(fill); parts.push(meter);
  }
  if (p.noise_multiplier !== null && p.noise_multiplier !== undefined) parts.push(el("div", `noise multiplier ${p.noise_multiplier}`));
  body.replaceChildren(...parts);
}

function drawProtection(view) {
  const s = view.secagg, c = view.compression;
  const last = state.rounds[state.rounds.length - 1] || {};
  const facts = [
    ["secure aggregation", s.enabled ? `on (${s.graph || "graph"}, threshold ${s.threshold ?? "auto"})` : "off"],
    ["survivors last round", last.round ? `${last.aggregated} of ${last.sampled}` : "–"],
  ];
  if (s.enabled) facts.push(["aborted rounds", s.aborted_rounds]);
  facts.push(["compression", c.enabled ? `on: up ${c.uplink.join(" → ") || "none"}, down ${c.downlink.join(" → ") || "float32"}` : "off"]);
  facts.push(["uplink ratio", typeof c.ratio_up === "number" ? `${num(c.ratio_up)} ×` : "–"]);
  $("protection-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
}

function drawParticipants(view) {
  const p = view.participants;
  const conn = p.connected === null ? "" : `, ${p.connected} connected`;
  $("participants-count").textContent = `${p.total} seen${conn}` + (p.rows.length < p.total ? `, ${p.rows.length} shown` : "");
  const dash = (v) => (v === null || v === undefined ? "–" : v);
  const rows = p.rows.map((r) => {
    const tr = el("tr", null, { "data-participant": r.id, "data-status": r.status, class: r.status });
    tr.append(el("td", r.id), el("td", r.status),
      el("td", r.connected === null ? "–" : r.connected ? "yes" : "no"),
      el("td", p.per_round_ids ? r.sampled : "–"), el("td", p.per_round_ids ? r.answered : "–"),
      el("td", r.dropped), el("td", r.rejected), el("td", dash(r.last_round)),
      el("td", r.reason, { class: "reason" }), el("td", bytes(r.bytes_down)), el("td", bytes(r.bytes_up)),
      el("td", ago(r.last_seen)));
    return tr;
  });
  $("participants-body").replaceChildren(...rows);
}

function draw() {
  const view = state.view;
  if (!view) return;
  drawHeader(view);
  drawProgress(view);
  metricChoices(view);
  drawPrivacy(view);
  drawProtection(view);
  drawParticipants(view);
  drawRounds();
  drawCharts(view);
  $("config-text").textContent = view.config_text || "(no config.yaml yet)";
}

function apply(msg) {
  state.rounds = state.rounds.slice(0, msg.rounds_from).concat(msg.rounds);
  state.view = msg.view;
  document.body.dataset.version = msg.version;
  document.body.dataset.rounds = state.rounds.length;
  draw();
}

function connect() {
  const link = $("link");
  const source = new EventSource("api/events");
  source.addEventListener("state", (e) => { apply(JSON.parse(e.data)); link.textContent = "live"; });
  source.onopen = () => { link.textContent = "live"; };
  source.onerror = () => { link.textContent = "reconnecting…"; };
}

$("metric").addEventListener("change", (e) => { state.metric = e.target.value; state.chosen = true; draw(); });
window.addEventListener("resize", () => { state.charts = {}; for (const id of ["chart-loss", "chart-metric", "chart-epsilon", "chart-survivors"]) $(id).replaceChildren(); draw(); });
connect();
