/* tickcast dashboard: a small canvas line chart, and the loop polling /dashboard/data. */
"use strict";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600]
  .map((s) => s * 1000);

// A 1-2-5 step that cuts `span` into about `n` parts.
function niceStep(span, n) {
  if (!(span > 0)) return 1;
  const raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / mag;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

function ticks(lo, hi, step) {
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9 && out.length < 50; v += step) out.push(v);
  return out;
}

// [lo, hi] of the finite values within [xmin, xmax], padded; null when there are none.
function extent(series, xmin, xmax, zero) {
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const [x, y] of s.points) {
    if (x >= xmin && x <= xmax && Number.isFinite(y)) { lo = Math.min(lo, y); hi = Math.max(hi, y); }
  }
  if (lo === Infinity) return null;
  if (zero) lo = Math.min(lo, 0);
  if (lo === hi) { const pad = Math.abs(lo) * 0.01 || 1; lo -= pad; hi += pad; }
  const m = (hi - lo) * 0.06;
  return [zero && lo >= 0 ? lo : lo - m, hi + m];
}

function fmtNum(v, step) {
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
  const d = Math.max(0, Math.min(6, -Math.floor(Math.log10(step || 1))));
  return v.toFixed(a >= 1e4 ? Math.min(d, 1) : d);
}

function fmtTime(ms, withSeconds) {
  const d = new Date(ms), p = (n) => String(n).padStart(2, "0");
  return p(d.getHours()) + ":" + p(d.getMinutes()) + (withSeconds ? ":" + p(d.getSeconds()) : "");
}

// Draw line series [{label, color, points: [[ms, y], ...]}] on a canvas.
// opts: {xmin, xmax, markers: [ms], zero: y axis includes 0, empty: text when nothing to draw}
function drawChart(canvas, series, opts) {
  const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = "11px system-ui, sans-serif";
  const L = 64, R = 10, T = 20, B = 20, pw = w - L - R, ph = h - T - B;
  const xmin = opts.xmin, xmax = Math.max(opts.xmax, opts.xmin + 1);
  const ext = extent(series, xmin, xmax, opts.zero);
  if (!ext || pw < 20 || ph < 20) {
    g.fillStyle = "#64748b"; g.textAlign = "center";
    g.fillText(opts.empty || "no data in this range", w / 2, h / 2);
    return;
  }
  const [ylo, yhi] = ext;
  const X = (x) => L + ((x - xmin) / (xmax - xmin)) * pw;
  const Y = (y) => T + ph - ((y - ylo) / (yhi - ylo)) * ph;
  g.strokeStyle = "#e2e8f0"; g.fillStyle = "#475569"; g.lineWidth = 1;
  const ystep = niceStep(yhi - ylo, 5);
  g.textAlign = "right"; g.textBaseline = "middle";
  for (const v of ticks(ylo, yhi, ystep)) {
    const y = Math.round(Y(v)) + 0.5;
    g.beginPath(); g.moveTo(L, y); g.lineTo(L + pw, y); g.stroke();
    g.fillText(fmtNum(v, ystep), L - 4, y);
  }
  const span = xmax - xmin, xstep = TIME_STEPS.find((s) => span / s <= 8) || 43200000;
  g.textAlign = "center"; g.textBaseline = "top";
  for (const t of ticks(xmin, xmax, xstep)) {
    const x = Math.round(X(t)) + 0.5;
    g.beginPath(); g.moveTo(x, T); g.lineTo(x, T + ph); g.stroke();
    g.fillText(fmtTime(t, xstep < 60000), x, T + ph + 4);
  }
  g.save(); g.beginPath(); g.rect(L, T, pw, ph); g.clip();
  g.strokeStyle = "#f59e0b"; g.setLineDash([4, 3]);
  for (const m of opts.markers || []) { const x = X(m); g.beginPath(); g.moveTo(x, T); g.lineTo(x, T + ph); g.stroke(); }
  g.setLineDash([]); g.lineWidth = 1.5;
  series.forEach((s, i) => {
    g.strokeStyle = s.color || COLORS[i % COLORS.length];
    g.beginPath();
    let pen = false;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(y)) { pen = false; continue; }
      if (pen) g.lineTo(X(x), Y(y)); else g.moveTo(X(x), Y(y));
      pen = true;
    }
    g.stroke();
  });
  g.restore();
  let lx = L;  // legend: label and newest value
  g.textAlign = "left"; g.textBaseline = "middle";
  series.forEach((s, i) => {
    const last = s.points.length ? s.points[s.points.length - 1][1] : null;
    const text = s.label + (last === null ? "" : " " + fmtNum(last, ystep / 10));
    g.fillStyle = s.color || COLORS[i % COLORS.length]; g.fillRect(lx, 6, 10, 3);
    g.fillStyle = "#0f172a"; g.fillText(text, lx + 14, 8);
    lx += g.measureText(text).width + 28;
  });
}

/* ---- the page ---- */
const POLL_MS = 5000;
const state = {symbol: null, minutes: 60, data: null, fresh: {}, timer: null};
const $ = (id) => document.getElementById(id);

function line(label, points, color) { return {label, points: points || [], color}; }

// A link only for http(s) urls; everything else (javascript:, data:, ...) stays plain text.
function safeUrl(url) { return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null; }

// Headlines (untrusted text): built with textContent, never innerHTML.
function renderHeadlines(items) {
  const rows = (items || []).map((h) => {
    const tr = document.createElement("tr");
    const time = document.createElement("td"), score = document.createElement("td");
    const source = document.createElement("td"), title = document.createElement("td");
    time.textContent = fmtTime(h.ts_ms, false);
    const v = h.sentiment;
    score.textContent = v === null || v === undefined ? "–" : (v > 0 ? "+" : "") + v.toFixed(2);
    score.className = "score " + (!(v > 0) && !(v < 0) ? "zero" : v > 0 ? "pos" : "neg");
    source.textContent = h.source;
    const href = safeUrl(h.url);
    if (href) {
      const a = document.createElement("a");
      a.href = href; a.rel = "noopener noreferrer nofollow"; a.target = "_blank"; a.textContent = h.title;
      title.append(a);
    } else {
      title.textContent = h.title;
    }
    tr.append(time, score, source, title);
    return tr;
  });
  $("headlines").replaceChildren(...rows);
  $("n-news").textContent = rows.length ? "" : "no news yet";
}

function render() {
  const d = state.data;
  if (!d) return;
  const s = d.series, r = d.range, now = d.generated_at_ms, wallMin = r.wall_from_ms;
  const horizonMs = (d.horizon_seconds || 0) * 1000;
  drawChart($("c-price"), [line(d.symbol, s.price)], {xmin: r.from_ms, xmax: r.to_ms});
  drawChart($("c-news"), [line("sentiment", s.news_sentiment, COLORS[3])],
    {xmin: r.from_ms, xmax: r.to_ms, zero: true, empty: "no news yet"});
  renderHeadlines(d.headlines);
  drawChart($("c-pred"), [line("predicted", s.predicted, COLORS[1]), line("realised", s.realised, COLORS[0])],
    {xmin: r.from_ms, xmax: r.to_ms + horizonMs});
  drawChart($("c-mae"), [line(d.online_models.join(",") || "online", s.mae_online),
    line("persistence", s.mae_persistence), line("mean_last_10", s.mae_mean_last_10),
    line("production", s.mae_production)],
    {xmin: r.from_ms, xmax: r.to_ms, markers: d.drift.map((e) => e.ts_ms), zero: true});
  $("n-mae").textContent = d.drift.length ? "dashed: drift events" : "";
  drawChart($("c-served"), [line("served", s.served, COLORS[2])],
    {xmin: r.from_ms, xmax: r.to_ms, zero: true, empty: "no auto rows (online learning off?)"});
  const fresh = Object.keys(state.fresh).map((k) => line(k, state.fresh[k]));
  drawChart($("c-fresh"), fresh, {xmin: wallMin, xmax: now, zero: true, empty: "collecting…"});
  $("n-fresh").textContent = Object.entries(d.freshness_seconds)
    .map(([k, v]) => k + ": " + (v === null ? "no features" : v.toFixed(1) + " s")).join("   ");
  drawChart($("c-tput"), [line(d.symbol, s.throughput)], {xmin: r.from_ms, xmax: r.to_ms, zero: true});
  drawChart($("c-dead"), [line("dead letters", s.dead_letters, COLORS[1]),
    line("late trades", s.late_trades, COLORS[4])], {xmin: wallMin, xmax: now, zero: true});
  $("n-dead").textContent = d.drift.length
    ? "drift events (" + d.symbol + "):\n" + d.drift.slice(0, 5).map((e) =>
      new Date(e.ts_ms).toISOString() + "  " + e.detector + "  " + e.detail).join("\n")
    : "no drift events in this range";
  drawChart($("c-ingest"), [line("reconnects", s.ingest_reconnects, COLORS[1]),
    line("filled", s.ingest_filled, COLORS[2]), line("unfilled", s.ingest_unfilled, COLORS[4])],
  {xmin: wallMin, xmax: now, zero: true, empty: d.ingest_stats ? "no data" : "no ingest_stats table"});
}

function status(text, err) { const e = $("status"); e.textContent = text; e.className = err ? "err" : ""; }

function remember(d) {  // freshness is a point in time: the page keeps its own history
  const keep = d.generated_at_ms - d.minutes * 60000;
  for (const [k, v] of Object.entries(d.freshness_seconds)) {
    const pts = (state.fresh[k] = state.fresh[k] || []);
    if (v !== null && (!pts.length || pts[pts.length - 1][0] < d.generated_at_ms)) pts.push([d.generated_at_ms, v]);
    while (pts.length && (pts[0][0] < keep || pts.length > 5000)) pts.shift();
  }
}

async function poll() {
  clearTimeout(state.timer);
  const q = "minutes=" + state.minutes + (state.symbol ? "&symbol=" + encodeURIComponent(state.symbol) : "");
  try {
    // TICKCAST_API_TOKEN: open the page as /dashboard#token=... (a fragment never reaches the server)
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    const headers = token ? {Authorization: "Bearer " + token} : {};
    const resp = await fetch((document.body.dataset.endpoint || "/dashboard/data") + "?" + q,
                             {cache: "no-store", headers});
    const body = await resp.json();
    if (resp.status === 404) state.symbol = null;  // e.g. ?symbol= of a symbol not served: the default
    if (!resp.ok) throw new Error(body.error ? body.error.code + ": " + body.error.message : "HTTP " + resp.status);
    if (!state.symbol || $("symbol").options.length === 0) {
      $("symbol").replaceChildren(...body.symbols.map((s) => new Option(s, s)));
      state.symbol = body.symbol;
      $("symbol").value = body.symbol;
    }
    if (body.symbol === state.symbol && body.minutes === state.minutes) {
      state.data = body;
      remember(body);
      render();
      status("updated " + fmtTime(body.generated_at_ms, true) + " · newest candle " +
        fmtTime(body.range.to_ms, true));
    }
  } catch (e) {
    status("not updated: " + e.message, true);
  }
  state.timer = setTimeout(poll, POLL_MS);
}

if (typeof document !== "undefined") {
  const params = new URLSearchParams(location.search);
  state.symbol = params.get("symbol");
  const m = parseInt(params.get("minutes") || "60", 10);
  state.minutes = [15, 60, 360, 1440].includes(m) ? m : 60;
  $("minutes").value = String(state.minutes);
  $("symbol").addEventListener("change", (e) => { state.symbol = e.target.value; poll(); });
  $("minutes").addEventListener("change", (e) => { state.minutes = parseInt(e.target.value, 10); poll(); });
  window.addEventListener("resize", render);
  poll();
} else if (typeof module !== "undefined") {
  module.exports = {niceStep, ticks, extent, fmtNum, fmtTime, safeUrl};
}
