// The dashboard's front end: one ES module, no build step. Every value is put in the page
// with textContent (never innerHTML), since site names, columns and values come from sites.

const $ = (sel) => document.querySelector(sel);
const pages = ["sites", "datasets", "workbench", "jobs", "training", "audit"];
let session = null;      // /api/session: sites, trainers, strategies, operators, aggregates
let datasets = [];       // /api/datasets (per site)
let pageTimer = null;   // the refresh timer of the page shown (Sites, Jobs)
let chart = null;
let events = null;

// ---- helpers -------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function badge(text, kind = text) { return el("span", { class: `badge ${kind}`, text }); }

function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  for (const [unit, size] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) if (n >= size) return `${(n / size).toFixed(1)} ${unit}`;
  return `${n} B`;
}
function fmtSecs(s) { return s === null || s === undefined ? "—" : s < 1 ? `${(s * 1e3).toFixed(1)} ms` : `${s.toFixed(2)} s`; }
function fmtRows(n) { return n === null || n === undefined ? "—" : n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e4 ? `${Math.round(n / 1e3)}k` : `${Math.round(n)}`; }
// 12 significant digits: 207484.65999999997 shows as 207484.66, integers as they are
function fmtValue(v) { return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(12))); }
function fmtNum(v, digits = 4) { return v === null || v === undefined ? "—" : Number(v).toFixed(digits); }

class Unauthorized extends Error {}

async function api(path, { method = "GET", body } = {}) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { showLogin(); throw new Unauthorized("log in first"); }
  let doc;
  try { doc = await response.json(); } catch { doc = { message: `${response.status} ${response.statusText}` }; }
  if (!response.ok) {
    const message = doc.message || doc.detail || response.statusText;
    const error = new Error(doc.error ? `${doc.error}: ${message}` : message);
    error.doc = doc;
    throw error;
  }
  return doc;
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

// ---- login and routing ----------------------------------------------------------------
function showLogin(message) {
  session = null;
  $("#nav").hidden = true;
  for (const p of pages) $(`#page-${p}`).hidden = true;
  $("#page-login").hidden = false;
  if (message) { $("#login-error").textContent = message; $("#login-error").hidden = false; }
}

async function login(token) {
  const response = await fetch("/api/login", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
  });
  if (!response.ok) { showLogin(response.status === 401 ? "Wrong token (401)." : `Login failed (${response.status}).`); return false; }
  return true;
}

async function start() {
  try { session = await api("/api/session"); } catch (e) { if (e instanceof Unauthorized) return; throw e; }
  $("#page-login").hidden = true;
  $("#login-error").hidden = true;
  $("#nav").hidden = false;
  await route();
}

async function route() {
  if (!session) return;
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1];
  const page = pages.includes(name) ? name : "sites";
  for (const p of pages) $(`#page-${p}`).hidden = p !== page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  clearInterval(pageTimer);
  await loaders[page]();
}

// ---- Sites --------------------------------------------------------------------------------
async function loadSites() {
  await renderSites();
  pageTimer = setInterval(() => renderSites().catch(() => clearInterval(pageTimer)), 5000);
}

async function renderSites() {
  const sites = await api("/api/sites");
  fill($("#sites-table tbody"), sites.map((s) => el("tr", { "data-site": s.site, "data-status": s.up ? "up" : "down" },
    el("td", { text: s.site }),
    el("td", {}, badge(s.up ? "up" : "down")),
    el("td", { text: s.up ? `${s.latency_ms.toFixed(1)} ms` : "—" }),
    el("td", { text: s.version ?? "—" }),
    el("td", { text: s.up ? s.platforms.join(", ") : "—" }),
    el("td", { text: s.datasets ?? "—" }),
    el("td", { class: "location", text: s.location ?? "—" }),
    el("td", { class: "hint", text: s.error ?? "" }))));
}

// ---- Datasets -------------------------------------------------------------------------------
async function loadDatasets() {
  datasets = await api("/api/datasets");
  fill($("#datasets-table tbody"), datasets.map((d) => {
    const p = d.policy;
    const budget = d.budget ? `${d.budget.spent.toFixed(2)} spent, ${d.budget.left.toFixed(2)} left of ${d.budget.epsilon.toFixed(2)}` : "—";
    return el("tr", { "data-site": d.site, "data-dataset": d.name },
      el("td", { text: d.site + (d.stale ? " (down: last known)" : "") }),
      el("td", { text: d.name }),
      el("td", { text: p.egress }),
      el("td", { text: p.min_group_size ?? "—" }),
      el("td", { class: "rows", text: d.rows === null ? "not published" : String(d.rows) }),
      el("td", { class: "budget", text: budget }),
      el("td", { text: (p.trainers || []).join(", ") || "—" }),
      el("td", { class: "schema", text: d.schema.map((f) => `${f.name}: ${f.type}`).join(", ") }),
      el("td", { class: "policy", text: policyDetails(p) }));
  }));
}

// the rest of a policy, as the site published it (the table shows egress, group size, trainers)
function policyDetails(policy) {
  const shown = new Set(["egress", "min_group_size", "trainers", "epsilon_budget", "epsilon_spent"]);
  return Object.entries(policy)
    .filter(([k, v]) => !shown.has(k) && v !== null && !(typeof v === "object" && !Object.keys(v).length))
    .map(([k, v]) => `${k}=${Array.isArray(v) ? (k === "udfs" ? `${v.length} approved` : v.join(", ")) : typeof v === "object" ? JSON.stringify(v) : v}`)
    .join("; ") || "—";
}

async function ensureDatasets() { if (!datasets.length) datasets = await api("/api/datasets"); }
function datasetNames() { return [...new Set(datasets.map((d) => d.name))].sort(); }
function columnsOf(name) { const d = datasets.find((x) => x.name === name); return d ? d.schema : []; }

// ---- Workbench: pipeline builder -----------------------------------------------------------
function options(select, values, { keep = true, blank = null } = {}) {
  const old = select.value;
  select.replaceChildren(...(blank !== null ? [el("option", { value: "", text: blank })] : []),
    ...values.map((v) => el("option", { value: v, text: v })));
  if (keep && values.includes(old)) select.value = old;
}

function builderColumns() {
  const left = columnsOf($("#b-dataset").value).map((f) => f.name);
  const join = $("#b-join").value;
  const right = join ? columnsOf(join).map((f) => f.name) : [];
  return [...new Set([...left, ...right])];
}

function addFilter(column = "", op = ">", value = "") {
  const cols = el("select", { class: "f-column" });
  options(cols, builderColumns());
  if (column) cols.value = column;
  const ops = el("select", { class: "f-op" });
  options(ops, session.operators);
  ops.value = op;
  const input = el("input", { class: "f-value", value, placeholder: "value" });
  const remove = el("button", { type: "button", text: "×" });
  const row = el("div", { class: "row filter" }, cols, ops, input, remove);
  remove.onclick = () => { row.remove(); updateCode(); };
  for (const x of [cols, ops, input]) x.onchange = updateCode;
  $("#b-filters").append(row);
  updateCode();
}

function addAggregate(name = "", fn = "count", column = "*") {
  const fns = el("select", { class: "a-fn" });
  options(fns, session.aggregates);
  fns.value = fn;
  const cols = el("select", { class: "a-column" });
  options(cols, ["*", ...builderColumns()]);
  cols.value = column;
  const nameInput = el("input", { class: "a-name", value: name || `agg${$("#b-aggs").children.length + 1}`, placeholder: "name" });
  const remove = el("button", { type: "button", text: "×" });
  const row = el("div", { class: "row aggregate" }, nameInput, el("span", { text: "=" }), fns, cols, remove);
  remove.onclick = () => { row.remove(); updateCode(); };
  for (const x of [fns, cols, nameInput]) x.onchange = updateCode;
  $("#b-aggs").append(row);
  updateCode();
}

function refreshBuilderColumns() {
  const cols = builderColumns();
  for (const s of document.querySelectorAll("#b-filters .f-column")) options(s, cols);
  for (const s of document.querySelectorAll("#b-aggs .a-column")) options(s, ["*", ...cols]);
  const left = columnsOf($("#b-dataset").value).map((f) => f.name);
  const join = $("#b-join").value;
  const shared = join ? left.filter((c) => columnsOf(join).some((f) => f.name === c)) : [];
  options($("#b-join-on"), shared);
  const checked = new Set([...document.querySelectorAll("#b-group input:checked")].map((i) => i.value));
  $("#b-group").replaceChildren(...cols.map((c) => {
    const box = el("input", { type: "checkbox", value: c, checked: checked.has(c) });
    box.onchange = updateCode;
    return el("label", { class: "group-col" }, box, ` ${c}`);
  }));
  updateCode();
}

function parseValue(text) {
  const t = text.trim();
  return t !== "" && !Number.isNaN(Number(t)) ? Number(t) : t;
}

function pipelineSpec() {
  const join = $("#b-join").value;
  const limit = $("#b-limit").value;
  return {
    dataset: $("#b-dataset").value,
    filters: [...document.querySelectorAll("#b-filters .filter")].map((r) => ({
      column: r.querySelector(".f-column").value, op: r.querySelector(".f-op").value,
      value: parseValue(r.querySelector(".f-value").value),
    })),
    join: join ? { dataset: join, on: $("#b-join-on").value, scope: $("#b-join-scope").value } : null,
    group_by: [...document.querySelectorAll("#b-group input:checked")].map((i) => i.value),
    aggregates: [...document.querySelectorAll("#b-aggs .aggregate")].map((r) => ({
      name: r.querySelector(".a-name").value, fn: r.querySelector(".a-fn").value, column: r.querySelector(".a-column").value,
    })),
    limit: limit ? Number(limit) : null,
    allow_partial: $("#b-partial").checked,
  };
}

let codeSeq = 0;
async function updateCode() {
  const seq = ++codeSeq;
  try {
    const { python } = await api("/api/pipeline/code", { method: "POST", body: { pipeline: pipelineSpec() } });
    if (seq === codeSeq) $("#b-code").textContent = python;
  } catch (e) {
    if (seq === codeSeq && !(e instanceof Unauthorized)) $("#b-code").textContent = `# ${e.message}`;
  }
}

async function loadWorkbench() {
  await ensureDatasets();
  const names = datasetNames();
  options($("#b-dataset"), names);
  options($("#b-join"), names, { blank: "(no join)" });
  $("#sql-tables").textContent = names.join(", ");
  refreshBuilderColumns();
}

async function runQuery(body) {
  $("#result").hidden = false;
  $("#result-error").hidden = true;
  $("#result-ok").hidden = true;
  $("#result").dataset.state = "running";
  try {
    const r = await api("/api/query", { method: "POST", body });
    showResult(r);
    $("#result").dataset.state = "ok";
  } catch (e) {
    if (e instanceof Unauthorized) return;
    $("#result-error").textContent = e.message;
    $("#result-error").hidden = false;
    $("#result").dataset.state = "error";
  }
}

function showResult(r) {
  $("#result-ok").hidden = false;
  $("#result-meta").textContent = `${r.row_count} rows${r.truncated ? " (first 500 shown)" : ""} · ${fmtSecs(r.seconds)} · ${fmtBytes(r.bytes_moved)} moved from ${r.transfers.length} site fragment(s)` + (r.missing.length ? ` · missing sites: ${r.missing.join(", ")}` : "");
  $("#result-notes").textContent = r.notes.join(" ");
  $("#result-table thead").replaceChildren(el("tr", {}, ...r.columns.map((c) => el("th", { text: c.name, title: c.type }))));
  fill($("#result-table tbody"), r.rows.map((row) => el("tr", {}, ...row.map((v) => el("td", { text: v === null ? "null" : typeof v === "number" ? fmtValue(v) : v })))));
  $("#plan-text").textContent = r.plan_text;
  drawPlan($("#plan-graph"), r.plan);
}

// ---- the placed plan as a graph (SVG, inputs below their consumer) ------------------
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function hue(name) { let h = 0; for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) % 360; return h; }

function drawPlan(target, plan) {
  target.replaceChildren();
  if (!plan) return;
  const W = 300, H = 78, GX = 24, GY = 46;
  const children = new Map(plan.nodes.map((n) => [n.id, []]));
  for (const e of plan.edges) children.get(e.target).push(e);
  const pos = new Map();
  let leaf = 0;
  const place = (id, depth) => {
    const kids = children.get(id);
    for (const e of kids) place(e.source, depth + 1);
    const x = kids.length ? kids.reduce((s, e) => s + pos.get(e.source).x, 0) / kids.length : leaf++;
    pos.set(id, { x, depth });
  };
  place(0, 0);
  const depth = Math.max(...[...pos.values()].map((p) => p.depth));
  const px = (p) => 10 + p.x * (W + GX), py = (p) => 10 + p.depth * (H + GY);
  target.setAttribute("width", 20 + Math.max(leaf, 1) * (W + GX));
  target.setAttribute("height", 20 + (depth + 1) * (H + GY));
  for (const e of plan.edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    const x1 = px(a) + W / 2, y1 = py(a), x2 = px(b) + W / 2, y2 = py(b) + H;
    target.append(svg("line", { x1, y1, x2, y2, stroke: e.moved ? "#b42318" : "#8a94a6", "stroke-width": e.moved ? 2 : 1, "stroke-dasharray": e.moved ? "5 4" : "" }));
    if (e.moved) target.append(svg("text", { x: (x1 + x2) / 2 + 6, y: (y1 + y2) / 2, fill: "#b42318", class: "edge-bytes" }, `${fmtBytes(e.est_bytes)} est`));
  }
  for (const n of plan.nodes) {
    const p = pos.get(n.id);
    const g = svg("g", { class: "plan-node", "data-platform": n.platform, "data-site": n.site ?? "", transform: `translate(${px(p)},${py(p)})` });
    const color = n.site ? `hsl(${hue(n.site)},60%,92%)` : "#eef1f6";
    g.append(svg("rect", { width: W, height: H, rx: 6, fill: color, stroke: "#8a94a6" }));
    const label = n.label.length > 46 ? n.label.slice(0, 45) + "…" : n.label;
    g.append(svg("title", {}, n.label + (n.sql ? `\nsql: ${n.sql}` : "")));
    g.append(svg("text", { x: 8, y: 16, "font-weight": 600 }, label));
    g.append(svg("text", { x: 8, y: 33, class: "where" }, `${n.platform}${n.site ? "  @ site " + n.site : "  @ coordinator"}`));
    g.append(svg("text", { x: 8, y: 50, class: "rows" }, `rows: est ${fmtRows(n.est_rows)} / actual ${n.actual_rows ?? "—"}`));
    g.append(svg("text", { x: 8, y: 67, class: "time" }, `time: est ${fmtSecs(n.est_cost_s)} / actual ${n.actual_s === null ? "— (in stage)" : fmtSecs(n.actual_s)}`));
    target.append(g);
  }
}

// ---- Jobs ------------------------------------------------------------------------------
async function loadJobs() {
  await renderJobs();
  pageTimer = setInterval(() => renderJobs().catch(() => clearInterval(pageTimer)), 2000);
}

async function renderJobs() {
  const jobs = await api("/api/jobs");
  fill($("#jobs-table tbody"), jobs.map((j) => el("tr", { "data-job": j.id, "data-kind": j.kind, "data-status": j.status },
    el("td", { text: j.id }), el("td", { text: j.kind }), el("td", { text: j.title }),
    el("td", {}, badge(j.status)), el("td", { text: fmtSecs(j.seconds) }),
    el("td", { text: j.rows ?? "—" }), el("td", { class: "bytes", text: fmtBytes(j.bytes) }),
    el("td", { class: "error", text: j.error ?? "" }))));
}

// ---- Training ----------------------------------------------------------------------------
function trainingColumns() {
  const cols = columnsOf($("#t-dataset").value);
  const numeric = cols.filter((f) => /int|float|double|decimal|bool/.test(f.type)).map((f) => f.name);
  const checked = new Set([...document.querySelectorAll("#t-features input:checked")].map((i) => i.value));
  $("#t-features").replaceChildren(...numeric.map((c) => el("label", { class: "feature" },
    el("input", { type: "checkbox", value: c, checked: checked.has(c) }), ` ${c}`)));
  options($("#t-label"), numeric);
}

async function loadTraining() {
  await ensureDatasets();
  const trainable = [...new Set(datasets.filter((d) => (d.policy.trainers || []).length).map((d) => d.name))].sort();
  options($("#t-dataset"), trainable.length ? trainable : datasetNames());
  options($("#t-trainer"), session.trainers);
  options($("#t-strategy"), session.strategies);
  trainingColumns();
  await loadRuns();
}

async function loadRuns() {
  const runs = await api("/api/training");
  $("#t-runs").replaceChildren(...runs.map((r) => {
    const a = el("a", { href: "#/training", text: `${r.id}: ${r.spec.trainer} on ${r.spec.dataset}, ${r.rounds.length}/${r.spec.rounds} rounds` });
    a.onclick = () => watch(r);
    return el("li", {}, a, " ", badge(r.status));
  }));
}

function watch(run) {
  if (events) events.close();
  $("#t-live").hidden = false;
  $("#t-live").dataset.run = run.id;
  const how = [run.spec.strategy, run.spec.secure_aggregation ? "secure aggregation" : null,
    run.spec.privacy ? `${run.spec.privacy.mode} DP` : null].filter(Boolean).join(", ");
  $("#t-title").textContent = `${run.id}: ${run.spec.trainer} (${how}) on ${run.spec.dataset}`;
  $("#t-status").textContent = "running …";
  $("#t-status").dataset.status = "running";
  $("#rounds-table tbody").replaceChildren();
  if (chart) chart.destroy();
  chart = new window.Chart($("#train-chart"), {
    type: "line",
    data: { labels: [], datasets: [
      { label: "loss", data: [], yAxisID: "loss", borderColor: "#b42318", tension: 0.2 },
      { label: "accuracy", data: [], yAxisID: "accuracy", borderColor: "#2457c5", tension: 0.2 },
    ] },
    options: {
      animation: false, maintainAspectRatio: false,
      scales: { loss: { position: "left", title: { display: true, text: "loss" } },
                accuracy: { position: "right", min: 0, max: 1, title: { display: true, text: "accuracy" } } },
    },
  });
  window.dalangChart = chart;  // for the browser tests
  const seen = new Set();
  events = new EventSource(`/api/training/${run.id}/events`);
  events.addEventListener("round", (message) => {
    const r = JSON.parse(message.data);
    if (seen.has(r.round)) return;
    seen.add(r.round);
    chart.data.labels.push(r.round);
    chart.data.datasets[0].data.push(r.metrics.loss ?? null);
    chart.data.datasets[1].data.push(r.metrics.accuracy ?? null);
    chart.update();
    $("#rounds-table tbody").append(el("tr", { "data-round": r.round },
      el("td", { text: r.round }), el("td", { class: "sites", text: r.sites.join(", ") }),
      el("td", { text: r.dropped.join(", ") || "—" }), el("td", { text: r.refused.join(", ") || "—" }),
      el("td", { class: "loss", text: fmtNum(r.metrics.loss) }), el("td", { class: "accuracy", text: fmtNum(r.metrics.accuracy) }),
      el("td", { text: r.epsilon === null ? "—" : fmtNum(r.epsilon, 3) }), el("td", { text: fmtSecs(r.seconds) })));
    $("#t-status").textContent = `round ${r.round} of ${run.spec.rounds} done`;
  });
  events.addEventListener("done", (message) => {
    const d = JSON.parse(message.data);
    $("#t-status").textContent = d.status === "ok" ? `finished: ${seen.size} rounds (run ${d.run_id})` : `failed: ${d.error}`;
    $("#t-status").dataset.status = d.status;
    events.close();
    loadRuns().catch(() => {});
  });
}

async function startTraining(event) {
  event.preventDefault();
  $("#t-error").hidden = true;
  const body = {
    dataset: $("#t-dataset").value,
    features: [...document.querySelectorAll("#t-features input:checked")].map((i) => i.value),
    label: $("#t-label").value, trainer: $("#t-trainer").value, strategy: $("#t-strategy").value,
    rounds: Number($("#t-rounds").value), lr: Number($("#t-lr").value),
    secure_aggregation: $("#t-secure").checked,
    privacy: $("#t-dp").value ? {
      mode: $("#t-dp").value, noise_multiplier: Number($("#t-noise").value),
      clip: Number($("#t-clip").value), delta: Number($("#t-delta").value),
    } : null,
  };
  try { watch(await api("/api/training", { method: "POST", body })); } catch (e) {
    if (e instanceof Unauthorized) return;
    $("#t-error").textContent = e.message;
    $("#t-error").hidden = false;
  }
}

// ---- Audit -----------------------------------------------------------------------------
async function loadAudit() {
  const logs = await api("/api/audit");
  const refusedOnly = $("#audit-refused").checked;
  $("#audit-sites").replaceChildren(...logs.map((log) => {
    const box = el("div", { class: "audit-site", "data-site": log.site }, el("h3", { text: log.site }));
    if (log.error) { box.append(el("p", { class: "error", text: log.error })); return box; }
    const v = log.verify, c = log.checked_here;
    box.dataset.chain = v.ok && c.ok ? "ok" : "tampered";
    box.append(el("p", { class: "chain" },
      badge(v.ok ? "chain intact" : "chain broken", v.ok ? "ok" : "tampered"),
      ` site checked ${v.entries} entries${v.ok ? "" : `: ${v.problem}${v.line ? ` (line ${v.line})` : ""}`}; `,
      badge(c.ok ? "hashes match" : "hash mismatch", c.ok ? "ok" : "tampered"),
      ` ${c.entries} shared entries re-checked here · the site shares ${log.share === "all" ? "every entry" : "the entries of this coordinator's token"} (${log.total})`));
    const rows = log.entries.filter((e) => !refusedOnly || e.status === "refused").reverse();
    const table = el("table", { class: "audit" }, el("thead", {}, el("tr", {},
      ...["#", "time", "who", "action", "status", "dataset(s)", "rows", "bytes", "ε", "reason"].map((h) => el("th", { text: h })))));
    table.append(el("tbody", {}, ...rows.map((e) => el("tr", { "data-seq": e.seq, "data-status": e.status, "data-action": e.action },
      el("td", { text: e.seq }), el("td", { text: new Date(e.time * 1000).toLocaleTimeString() }),
      el("td", { text: e.who }), el("td", { text: e.action }), el("td", {}, badge(e.status)),
      el("td", { text: e.dataset ?? (e.datasets || []).join(", ") }), el("td", { text: e.rows ?? "" }),
      el("td", { text: e.bytes ?? "" }), el("td", { text: e.epsilon ? e.epsilon : "" }),
      el("td", { class: "reason", text: e.reason ?? "" })))));
    box.append(table);
    return box;
  }));
}

const loaders = { sites: loadSites, datasets: loadDatasets, workbench: loadWorkbench, jobs: loadJobs, training: loadTraining, audit: loadAudit };

// ---- wiring -------------------------------------------------------------------------------
$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (await login($("#login-token").value)) await start();
});
$("#logout").onclick = async () => { await fetch("/api/logout", { method: "POST" }); showLogin(); };
const refreshers = { ...loaders, sites: renderSites, jobs: renderJobs };
for (const b of document.querySelectorAll("[data-refresh]")) b.onclick = () => refreshers[b.dataset.refresh]();
for (const t of document.querySelectorAll(".tab")) t.onclick = () => {
  for (const x of document.querySelectorAll(".tab")) x.classList.toggle("active", x === t);
  $("#tab-builder").hidden = t.dataset.tab !== "builder";
  $("#tab-sql").hidden = t.dataset.tab !== "sql";
};
$("#b-dataset").onchange = refreshBuilderColumns;
$("#b-join").onchange = refreshBuilderColumns;
$("#b-join-on").onchange = updateCode;
$("#b-join-scope").onchange = updateCode;
$("#b-limit").onchange = updateCode;
$("#b-partial").onchange = updateCode;
$("#b-add-filter").onclick = () => addFilter();
$("#b-add-agg").onclick = () => addAggregate();
$("#run-pipeline").onclick = () => runQuery({ pipeline: pipelineSpec() });
$("#run-sql").onclick = () => runQuery({ sql: $("#sql").value, allow_partial: $("#sql-partial").checked });
$("#t-dataset").onchange = trainingColumns;
$("#train-form").addEventListener("submit", startTraining);
$("#audit-refused").onchange = loadAudit;
window.addEventListener("hashchange", route);

// a token in the URL's fragment (never sent to the server) logs in once, then is removed
const fromUrl = location.hash.match(/[#&]token=([^&]+)/);
if (fromUrl) {
  history.replaceState(null, "", location.pathname + "#/sites");
  if (await login(decodeURIComponent(fromUrl[1]))) await start();
} else {
  await start();
}
