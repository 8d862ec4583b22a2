// streamrec live page: a shop whose clicks go through POST /events (Kafka → worker → Redis) and
// an operations view fed by GET /ops/summary. No framework, no build step, no third-party code.
// Everything shown is put in the page as text nodes (never innerHTML), so nothing is interpreted.
"use strict";

const PAGE_SIZE = 24;
const RECOMMEND_K = 10;
const POLL_MS = 25;         // wait between two /recommend polls after a click
const MAX_POLLS = 80;       // bounded: ~2-4 s, then the click is reported as not visible yet
const OPS_EVERY_MS = 1500;
const KEY_STORE = "streamrec.apiKey";
const SESSION_STORE = "streamrec.session";

const state = {
  session: sessionStorage.getItem(SESSION_STORE) || newSessionId(),
  clicks: [],
  offset: 0,
  total: 0,
  visible: [],               // session_items_used of the latest /recommend
  known: new Map(),          // item id -> catalogue entry (category, popularity)
  clickChain: Promise.resolve(),
  opsTimer: null,
};

// ---------------------------------------------------------------- small helpers
const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  const id = "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  sessionStorage.setItem(SESSION_STORE, id);
  return id;
}

const fmt = (n, digits = 0) => (n === null || n === undefined ? "–" :
  Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const ms = (n) => (n === null || n === undefined ? "–" : `${fmt(n, n < 10 ? 1 : 0)} ms`);
const pct = (n) => (n === null || n === undefined ? "–" : `${fmt(n * 100, 1)} %`);

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = "GET", body, auth = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  const key = sessionStorage.getItem(KEY_STORE);
  if (auth && key) headers["X-API-Key"] = key;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) showKeyForm(data.detail);
  if (!response.ok) throw new ApiError(response.status, `${path}: ${response.status} ${data.detail || response.statusText}`);
  return data;
}

function showError(box, error) {
  box.textContent = error ? String(error.message || error) : "";
  box.classList.toggle("hidden", !error);
}

// ---------------------------------------------------------------- API key
function showKeyForm(detail) {
  if (detail) $("key-message").textContent = `${detail}. The key stays in this tab only (sessionStorage).`;
  $("key-form").classList.remove("hidden");
  $("key-input").focus();
}

function setupKeyForm() {
  $("key-button").addEventListener("click", () => $("key-form").classList.toggle("hidden"));
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    $("key-input").value = "";
    $("key-form").classList.add("hidden");
    showError($("error"), null);
    if (!$("view-ops").classList.contains("hidden")) show("ops");  // polls again, now with the key
  });
  $("key-clear").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); $("key-input").value = ""; });
}

// ---------------------------------------------------------------- shop: catalogue
function categoryHue(category) {
  return category === null || category === undefined ? 210 : (category * 47) % 360;
}

function itemCard(item, { score, onPick }) {
  const swatch = el("div", { class: "swatch" }, item.category === null || item.category === undefined ? "◇" : `C${item.category}`);
  swatch.style.background = `linear-gradient(135deg, hsl(${categoryHue(item.category)} 70% 62%), hsl(${(categoryHue(item.category) + 40) % 360} 65% 45%))`;
  const lines = [
    el("div", { class: "title" }, `Item ${item.item_id}`),
    el("div", { class: "meta" }, item.category === null || item.category === undefined ? "no category" : `category ${item.category}`),
  ];
  if (item.popularity !== undefined) lines.push(el("div", { class: "meta" }, `#${fmt(item.rank)} · ${fmt(item.popularity)} clicks`));
  if (score !== undefined) lines.push(el("div", { class: "score" }, `score ${fmt(score, 3)}`));
  return el("button", { class: "card", "data-item-id": item.item_id, onclick: () => onPick(item.item_id) },
    swatch, el("div", { class: "card-body" }, ...lines));
}

async function loadCatalogue() {
  try {
    const page = await api(`/items?limit=${PAGE_SIZE}&offset=${state.offset}`);
    state.total = page.total;
    for (const item of page.items) state.known.set(item.item_id, item);
    $("grid").replaceChildren(...page.items.map((item) => itemCard(item, { onPick: click })));
    const last = Math.min(state.offset + page.items.length, page.total);
    $("page-info").textContent = `${fmt(state.offset + 1)}–${fmt(last)} of ${fmt(page.total)} items`;
    $("prev").disabled = state.offset === 0;
    $("next").disabled = last >= page.total;
  } catch (error) {
    showError($("error"), error);
  }
}

// ---------------------------------------------------------------- shop: clicks and recommendations
function recommend() {
  return api("/recommend", { method: "POST", body: { session_id: state.session, k: RECOMMEND_K, exclude_seen: true } });
}

function click(itemId) {
  // One click at a time, in order: each one's visibility is measured on its own.
  state.clickChain = state.clickChain.then(() => sendClick(itemId)).catch((error) => showError($("error"), error));
  return state.clickChain;
}

async function sendClick(itemId) {
  showError($("error"), null);
  const alreadyLatest = state.visible.length > 0 && state.visible[state.visible.length - 1] === itemId;
  const started = performance.now();
  await api("/events", { method: "POST", auth: true,
    body: { session_id: state.session, item_id: itemId, ts: Date.now() / 1000, event_type: "click" } });
  const acked = performance.now();
  state.clicks.push(itemId);
  renderClicks();

  // The click is visible to the recommender once /recommend (which reads the session's streaming
  // features, without any items from us) answers from the stream with this item as the latest.
  let rec = null;
  let polls = 0;
  let seen = false;
  while (polls < MAX_POLLS) {
    rec = await recommend();
    polls += 1;
    const used = rec.session_items_used;
    seen = rec.stage === "stream" && used[used.length - 1] === itemId;
    if (seen || alreadyLatest) break;
    await sleep(POLL_MS);
  }
  const elapsed = performance.now() - started;
  const box = $("visibility");
  box.className = "visibility " + (seen ? "ok" : "warn");
  if (alreadyLatest) {
    box.textContent = `Item ${itemId} was already the latest item of the session: a repeat click does not change what the recommender sees.`;
    box.removeAttribute("data-visible-ms");
  } else if (seen) {
    box.textContent = `Click on item ${itemId} visible to the recommender after ${ms(elapsed)} ` +
      `(POST /events acknowledged in ${ms(acked - started)}, ${polls} /recommend poll${polls === 1 ? "" : "s"}).`;
    box.setAttribute("data-visible-ms", elapsed.toFixed(1));
  } else {
    box.textContent = `Click on item ${itemId} not yet visible after ${polls} polls (${ms(elapsed)}).`;
    box.removeAttribute("data-visible-ms");
  }
  await renderRecommendation(rec);
  box.setAttribute("data-item-id", itemId);  // last: the click's whole outcome is on the page (tests wait for it)
}

async function renderRecommendation(rec) {
  state.visible = rec.session_items_used;
  const unknown = rec.items.map((r) => r.item_id).filter((id) => !state.known.has(id));
  if (unknown.length) {
    try {
      const page = await api(`/items?${unknown.map((id) => `ids=${id}`).join("&")}`);
      for (const item of page.items) state.known.set(item.item_id, item);
    } catch (error) { /* the cards still show id and score */ }
  }
  const stage = $("stage");
  stage.textContent = rec.stage;
  stage.className = `badge stage-${rec.stage.split("_")[0]}`;
  const degraded = $("degraded");
  degraded.textContent = rec.degraded ? `degraded: ${rec.degraded_reasons.join("; ") || "yes"}` : "";
  degraded.classList.toggle("hidden", !rec.degraded);
  $("recs").replaceChildren(...rec.items.map((r) => el("li", {},
    itemCard({ ...(state.known.get(r.item_id) || {}), item_id: r.item_id }, { score: r.score, onPick: click }))));
  $("model-version").textContent = rec.model_version;
  $("served-version").textContent = rec.model_version;  // the arm the routing policy picked for this answer
  $("served-policy").textContent = rec.policy;
  $("served-propensity").textContent = rec.propensity < 1 ? `(picked with p = ${fmt(rec.propensity, 2)})` : "";
  $("served-by").setAttribute("data-version", rec.model_version);
  $("index-version").textContent = rec.index_version;
  $("used").textContent = String(rec.session_items_used.length);
  renderTimings(rec.timings_ms);
}

function renderTimings(timings) {
  const total = timings.total || Math.max(...Object.values(timings), 0.001);
  const rows = Object.entries(timings).map(([step, value]) => {
    const bar = el("div", { class: "bar" + (step === "total" ? " total" : "") });
    bar.style.width = `${Math.max(1, Math.min(100, (100 * value) / total))}%`;
    return el("div", { class: "timing" }, el("span", { class: "step" }, step), el("div", { class: "track" }, bar),
      el("span", { class: "num" }, fmt(value, 2)));
  });
  $("timings").replaceChildren(...rows);
}

function renderClicks() {
  $("clicks").replaceChildren(...(state.clicks.length
    ? state.clicks.map((id) => el("span", { class: "chip" }, String(id)))
    : [el("span", { class: "muted" }, "none yet")]));
}

async function startSession(id) {
  state.session = id;
  state.clicks = [];
  state.visible = [];
  $("session-id").textContent = id;
  $("visibility").className = "visibility muted";
  $("visibility").textContent = "No click yet: these are the popular items.";
  renderClicks();
  try { await renderRecommendation(await recommend()); } catch (error) { showError($("error"), error); }
}

// ---------------------------------------------------------------- operations view
// A line chart of one or more series sharing a y axis from 0 to their max, stretched to its box.
// Each series: { values (null = no data), color, label }. Returns the chart and its legend.
function chart(series, { height = 44, unit = "" } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 300;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "chart");
  svg.style.height = `${height}px`;
  const numbers = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const top = Math.max(...numbers, 0) || 1;
  for (const { values, color } of series) {
    const step = width / Math.max(values.length - 1, 1);
    let points = [];
    const flush = () => {  // a gap (null) ends one line; the next value starts another
      if (points.length > 1) {
        const line = document.createElementNS(ns, "polyline");
        line.setAttribute("points", points.join(" "));
        line.setAttribute("fill", "none");
        line.setAttribute("stroke", color);
        line.setAttribute("stroke-width", "2");
        line.setAttribute("vector-effect", "non-scaling-stroke");
        svg.append(line);
      }
      points = [];
    };
    values.forEach((v, i) => {
      if (v === null || v === undefined) flush();
      else points.push(`${(i * step).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`);
    });
    flush();
  }
  const legend = el("div", { class: "legend" }, ...series.filter((s) => s.label).map((s) => {
    const swatch = el("span", { class: "key" });
    swatch.style.background = s.color;
    return el("span", {}, swatch, s.label);
  }), el("span", { class: "max" }, numbers.length ? `max ${fmt(top, top < 10 ? 2 : 0)}${unit}` : "no data yet"));
  return el("div", { class: "chart-box" }, svg, legend);
}

function tile(id, value, sub, series) {
  const node = $(id);
  node.querySelector(".value").textContent = value;
  node.querySelector(".sub").textContent = sub;
  const spark = node.querySelector(".spark");
  if (spark && series) spark.replaceChildren(chart(series));
}

function dot(name, up) {
  const status = up === null || up === undefined ? "unknown" : up ? "up" : "down";
  return el("div", { class: `dep dep-${status}`, "data-dependency": name }, el("span", { class: "dot" }), `${name}: ${status}`);
}

async function refreshOps() {
  try {
    const ops = await api("/ops/summary?window_s=10", { auth: true });
    showError($("ops-error"), null);
    const s = ops.series;
    const col = (name) => s.map((p) => p[name]);
    const w = ops.worker;
    tile("tile-events", fmt(ops.api.events_per_s, 1), `API accepted; worker applied ${fmt(w.events_per_s, 1)}/s`,
      [{ values: col("api_events_per_s"), color: "#3b82f6" }]);
    const byTopic = Object.entries(w.consumer_lag_by_topic).map(([t, n]) => `${t}: ${fmt(n)}`).join(" · ");
    tile("tile-lag", w.consumer_lag === null ? "–" : fmt(w.consumer_lag), w.reachable ? (byTopic || "not exported by the worker")
      : "worker metrics unreachable", [{ values: col("consumer_lag"), color: "#8b5cf6" }]);
    tile("tile-freshness", `${ms(w.freshness_p50_ms)} / ${ms(w.freshness_p99_ms)}`, "Kafka timestamp → features in Redis",
      [{ values: col("freshness_p99_ms"), color: "#10b981" }]);
    tile("tile-latency", `${ms(ops.api.recommend_p50_ms)} / ${ms(ops.api.recommend_p99_ms)}`,
      `${fmt(ops.api.recommend_per_s, 1)} req/s · ${fmt(ops.api.recommend_total)} answered`,
      [{ values: col("recommend_p99_ms"), color: "#f59e0b" }]);
    const stages = Object.entries(ops.api.stage_share).map(([k, v]) => `${k} ${pct(v)}`).join(" · ");
    tile("tile-degraded", pct(ops.api.degraded_share), stages || "no answers in the window",
      [{ values: col("degraded_share"), color: "#ef4444" }]);
    $("chart-throughput").replaceChildren(chart([
      { values: col("api_events_per_s"), color: "#3b82f6", label: "events/s accepted by the API" },
      { values: col("worker_events_per_s"), color: "#8b5cf6", label: "events/s applied by the worker" },
    ], { height: 120, unit: "/s" }));
    $("chart-latency").replaceChildren(chart([
      { values: col("recommend_p99_ms"), color: "#f59e0b", label: "/recommend p99" },
      { values: col("freshness_p99_ms"), color: "#10b981", label: "freshness p99" },
    ], { height: 120, unit: " ms" }));
    $("series-span").textContent = s.length > 1 ? fmt(s[s.length - 1].at - s[0].at) : "–";
    tile("tile-dlq", w.dead_lettered_total === null ? "–" : fmt(w.dead_lettered_total),
      `${fmt(w.dead_lettered_per_s, 2)}/s now · duplicates skipped ${fmt(w.duplicate_total)}`);
    tile("tile-totals", fmt(ops.api.events_accepted_total), `worker applied ${fmt(w.applied_total)} · Kafka refused ${fmt(ops.api.events_unavailable_total)}`);
    $("events-total").setAttribute("data-value", String(ops.api.events_accepted_total));
    $("health").replaceChildren(dot("redis", ops.dependencies.redis), dot("kafka", ops.dependencies.kafka),
      dot("worker metrics", w.reachable));
    renderOnline(ops.online);
    renderLearning(ops.learning);
    $("ops-window").textContent = ops.window_s === null ? "–" : fmt(ops.window_s, 1);
    $("ops-updated").textContent = `updated ${new Date(ops.at * 1000).toLocaleTimeString()}`;
  } catch (error) {
    showError($("ops-error"), error);
    if (error.status === 401) { clearInterval(state.opsTimer); state.opsTimer = null; }  // until a key is given
  }
}

// The routing in force and each model version's live figures (GET /ops/summary's `online`).
function renderOnline(online) {
  $("online-policy").textContent = online ? online.policy : "–";
  $("online-experiment").textContent = online ? online.experiment : "–";
  const rows = online && online.arms.length ? online.arms.map((arm) => {
    const interval = arm.ctr_low === null ? "" : ` [${pct(arm.ctr_low)} – ${pct(arm.ctr_high)}]`;
    return el("tr", { class: arm.shadow ? "shadow" : arm.champion ? "champion" : "", "data-version": arm.version },
      el("td", {}, el("code", {}, arm.version)), el("td", {}, arm.shadow ? "0 % (logged)" : pct(arm.share)),
      el("td", {}, fmt(arm.impressions)), el("td", {}, fmt(arm.clicked)), el("td", {}, pct(arm.ctr) + interval));
  }) : [el("tr", { class: "empty" }, el("td", { colspan: 5 }, "no model loaded"))];
  $("online-arms").querySelector("tbody").replaceChildren(...rows);
}

// Continual learning's latest check (GET /ops/summary's `learning`): drift against the champion's window.
function renderLearning(learning) {
  $("learn-at").textContent = learning ? new Date(learning.at * 1000).toLocaleTimeString() : "–";
  $("learn-champion").textContent = learning && learning.champion ? learning.champion : "–";
  $("learn-summary").textContent = !learning ? "streamrec learn has not run yet"
    : `${fmt(learning.new_clicks)} new clicks, ${fmt(learning.new_items)} new items; triggers: `
      + (learning.triggers.length ? learning.triggers.join(", ") : "none")
      + (learning.version ? ` → ${learning.version} ${learning.promoted ? "promoted" : "rejected"} (${learning.gate})` : "");
  const rows = learning && learning.drift.length ? learning.drift.map((s) =>
    el("tr", { class: s.fired ? "fired" : "", title: s.responds_to, "data-statistic": s.name },
      el("td", {}, s.name), el("td", {}, fmt(s.value, 4)), el("td", {}, fmt(s.threshold, 4)),
      el("td", {}, s.fired ? "yes" : "no")))
    : [el("tr", { class: "empty" }, el("td", { colspan: 4 }, "no drift check yet"))];
  $("learn-drift").querySelector("tbody").replaceChildren(...rows);
}

// ---------------------------------------------------------------- views
function show(view) {
  for (const name of ["shop", "ops"]) {
    $(`view-${name}`).classList.toggle("hidden", name !== view);
    $(`tab-${name}`).classList.toggle("active", name === view);
    $(`tab-${name}`).setAttribute("aria-selected", String(name === view));
  }
  clearInterval(state.opsTimer);
  state.opsTimer = null;
  if (view === "ops") {   // poll only while somebody looks
    refreshOps();
    state.opsTimer = setInterval(refreshOps, OPS_EVERY_MS);
  }
  history.replaceState(null, "", view === "ops" ? "#ops" : location.pathname);
}

document.addEventListener("DOMContentLoaded", () => {
  setupKeyForm();
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => show(tab.dataset.view));
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); loadCatalogue(); });
  $("next").addEventListener("click", () => { state.offset += PAGE_SIZE; loadCatalogue(); });
  $("new-session").addEventListener("click", () => startSession(newSessionId()));
  loadCatalogue();
  startSession(state.session);
  show(location.hash === "#ops" ? "ops" : "shop");
});
