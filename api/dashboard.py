"""A built-in dashboard served by the API, for the embedded mode where there is no Grafana.

* ``GET /dashboard`` — one self-contained HTML page (no CDN, no external resources:
  it works offline). Its script, ``GET /dashboard/app.js``, holds a small canvas
  line-chart helper and polls ``/dashboard/data`` every few seconds.
* ``GET /dashboard/data?symbol=BTC/USD&minutes=60`` — the series of the page, each a
  list of ``[unix_ms, value]``: candle close; online predictions (plotted at
  ``ts + horizon``) against the realised close there; rolling MAE (``mae_recent``) of
  the online model and of the persistence and mean-of-last-10 baselines; throughput
  (trades/s); dead letters and late trades per minute; drift events; reconnects and
  filled gaps per minute from ``ingest_stats`` (empty while that table does not exist);
  plus the feature freshness of every symbol and ``generated_at``.

Time ranges. Market-time series (price, predictions, MAE, throughput, drift) cover the
``minutes`` before the symbol's newest candle — which *is* now for a live source, and
the end of the data for a replay, so a recorded session shows up too. Wall-clock series
(dead letters, ingest stats: stamped when received) cover the ``minutes`` before now;
freshness is measured against now. Long ranges are downsampled to at most
:data:`MAX_POINTS` points (the last value of each bucket, at its own time); the default
hour of 10-s candles is not downsampled at all.

The offline store is opened read-only on the first request, once per process and URL
(the embedded Parquet lake is read while the flow writes it). An embedded lake nothing
has been written to yet answers 200 with empty series; a ClickHouse server that does
not answer is a 503 JSON error, like every other store of the API (CONTRACT §7).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

log = logging.getLogger("tickcast.api.dashboard")
dashboard = Blueprint("dashboard", __name__)

SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$")
DEFAULT_MINUTES, MAX_MINUTES = 60, 1440
MAX_POINTS = 720  # per series, after downsampling
ROW_LIMIT = 2000  # hard LIMIT of every query
DRIFT_LIST = 20  # newest drift events listed with their details
CACHE_SECONDS = 2.0  # identical requests within this share one answer (several tabs, reloads)
RETRY_SECONDS = 5.0  # after a failed open, answer 503 at once for this long
BASELINES = ("persistence", "mean_last_10")
LATE = "late trade%"  # reason prefix of late trades (tickcast.pipeline.late_dead_letter)
INGEST_SERIES = {"ingest_reconnects": "reconnects", "ingest_filled": "filled", "ingest_unfilled": "unfilled"}
SERIES = ("price", "predicted", "realised", "mae_online", "mae_persistence", "mae_mean_last_10",
          "mae_production", "served", "throughput", "dead_letters", "late_trades", "drift_events", *INGEST_SERIES)


def _fail(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


# -- the offline store: one per process and URL, opened on first use --------------------

class _Opened:
    def __init__(self, store: Any) -> None:
        self.pid = os.getpid()
        self.store = store
        self.lock = threading.Lock()  # one dashboard query at a time: bounded work per process
        self.cache: dict[tuple[Any, str, int], tuple[float, dict[str, Any]]] = {}  # under lock


_opened: dict[str, _Opened] = {}
_failed: dict[str, tuple[float, str]] = {}
_guard = threading.Lock()


def _store(url: str) -> _Opened:
    from tickcast.stores.errors import StoreUnavailable
    from tickcast.stores.offline import open_offline

    with _guard:
        got = _opened.get(url)
        if got is not None and got.pid == os.getpid():  # a forked worker opens its own
            return got
        failed = _failed.get(url)
        if failed is not None and time.monotonic() - failed[0] < RETRY_SECONDS:
            raise StoreUnavailable(failed[1])
        try:
            got = _Opened(open_offline(url, read_only=True))
        except StoreUnavailable as e:
            _failed[url] = (time.monotonic(), str(e))
            raise
        _failed.pop(url, None)
        _opened[url] = got
        return got


def _ms(t: str) -> str:
    return f"toUnixTimestamp64Milli({t})"


def _epoch_ms(t: Any) -> int:
    """An aware datetime from the store -> whole ms since the epoch (truncated, like
    ``toUnixTimestamp64Milli``)."""
    from datetime import UTC, datetime, timedelta

    return int((t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1))


def _dt(param: str) -> str:
    return f"fromUnixTimestamp64Milli({{{param}:Int64}}, 'UTC')"


def _points(rows: list[tuple[Any, ...]], col: int = 1, scale: float = 1.0) -> list[list[Any]]:
    """Rows ``(t_ms, v, …)`` newest first (ORDER BY t DESC LIMIT n) -> ``[[t_ms, v]]``
    oldest first, without non-finite values (JSON has no NaN)."""
    out = []
    for r in reversed(rows):
        v = r[col]
        if v is not None and math.isfinite(v):
            out.append([int(r[0]), float(v) * scale])
    return out


def _filled(points: list[list[Any]], lo: int, hi: int, bucket: int) -> list[list[Any]]:
    """Counts per bucket, with the empty buckets meeting ``(lo, hi]`` as 0 (no false slopes)."""
    have = {t: v for t, v in points}
    return [[t, have.get(t, 0.0)] for t in range(lo // bucket * bucket, hi + 1, bucket)][-ROW_LIMIT:]


def build(store: Any, settings: Any, symbol: str, minutes: int) -> dict[str, Any]:
    """The payload of ``/dashboard/data`` (parameters bound server-side, never formatted)."""
    from tickcast.schema import us_to_iso
    from tickcast.stores.tables import TABLES

    limit_s = float(getattr(settings, "dashboard_query_seconds", 10.0))

    def q(sql: str, **params: Any) -> list[tuple[Any, ...]]:
        # every query is cut off by the engine (TIMEOUT_EXCEEDED -> a 503), never a stuck worker
        sql += f" SETTINGS max_execution_time = {limit_s:g}"
        return [tuple(r) for r in store.query(sql, params).result_rows]

    now_us = time.time_ns() // 1000
    now_ms = now_us // 1000
    span_ms = minutes * 60_000
    window_ms = settings.window_seconds * 1000
    step_ms = window_ms * max(1, math.ceil(span_ms / (MAX_POINTS * window_ms)))
    bucket_ms = 60_000 * max(1, math.ceil(step_ms / 60_000))  # per-minute rates
    per_minute = 60_000 / bucket_ms

    # the store's "newest" path reads only the newest partitions: no query here grows with history
    newest = store.newest("candles", symbol)
    to_ms = _epoch_ms(newest["window_end"]) if newest else now_ms
    from_ms = to_ms - span_ms
    wall_from_ms = now_ms - span_ms
    # Every market-time query also bounds a time column of the table's key (window_start,
    # ts), which a deduplicating view can filter before deduplication (so old parts and
    # row groups are skipped); the bound is redundant with the real condition.
    slack_ms = max(86_400_000, 2 * settings.horizon_seconds * 1000)  # > any candle or horizon
    p = {"symbol": symbol, "from_ms": from_ms, "to_ms": to_ms, "step_ms": step_ms, "limit": ROW_LIMIT,
         "key_from_ms": from_ms - slack_ms}
    def between(col: str) -> str:  # (from, to]
        return f"{col} > {_dt('from_ms')} AND {col} <= {_dt('to_ms')}"

    candle_keys = f"window_start > {_dt('key_from_ms')} AND window_start < {_dt('to_ms')}"

    series: dict[str, list[list[Any]]] = {name: [] for name in SERIES}
    series["price"] = _points(q(
        f"SELECT {_ms('max(window_end)')} AS t, argMax(close, window_end) FROM candles "
        f"WHERE symbol = {{symbol:String}} AND {candle_keys} AND {between('window_end')} "
        f"GROUP BY intDiv({_ms('window_end')}, {{step_ms:Int64}}) ORDER BY t DESC LIMIT {{limit:UInt32}}", **p))
    # a prediction made at ts is for ts + horizon: plotted there, up to horizon past the newest candle
    series["predicted"] = _points(q(
        f"SELECT {_ms('max(x)')} AS t, argMax(predicted_price, (x, model_version)) FROM ("
        f"SELECT ts + toIntervalSecond(horizon_seconds) AS x, predicted_price, model_version FROM predictions "
        f"WHERE symbol = {{symbol:String}} AND ts > {_dt('key_from_ms')} AND ts <= {_dt('to_ms')} "
        f"AND model_kind LIKE 'online:%') "
        f"WHERE x > {_dt('from_ms')} "
        f"GROUP BY intDiv({_ms('x')}, {{step_ms:Int64}}) ORDER BY t DESC LIMIT {{limit:UInt32}}", **p))
    series["realised"] = _points(q(
        f"SELECT {_ms('max(f.ts)')} AS t, argMax(f.close, f.ts) FROM ("
        f"SELECT DISTINCT ts + toIntervalSecond(horizon_seconds) AS x FROM predictions "
        f"WHERE symbol = {{symbol:String}} AND ts > {_dt('key_from_ms')} AND ts <= {_dt('to_ms')} "
        f"AND model_kind LIKE 'online:%') AS p "
        f"INNER JOIN ("
        f"SELECT ts, close FROM features WHERE symbol = {{symbol:String}} AND {between('ts')}) AS f "
        f"ON f.ts = p.x GROUP BY intDiv({_ms('f.ts')}, {{step_ms:Int64}}) ORDER BY t DESC LIMIT {{limit:UInt32}}",
        **p))
    mae = q(f"SELECT {_ms('max(ts)')} AS t, argMax(mae_recent, ts), model_name FROM model_metrics "
            f"WHERE symbol = {{symbol:String}} AND {between('ts')} AND isFinite(mae_recent) "
            f"GROUP BY model_name, intDiv({_ms('ts')}, {{step_ms:Int64}}) "
            f"ORDER BY t DESC, model_name LIMIT {{limit:UInt32}} BY model_name", **p)
    online_names = sorted({r[2] for r in mae} - set(BASELINES) - {"production"})
    for name in (*BASELINES, "production"):
        series["mae_" + name] = _points([r for r in mae if r[2] == name])
    series["mae_online"] = _points([r for r in mae if r[2] not in (*BASELINES, "production")])
    # what /predict?model=auto served (tickcast.scoreboard's "auto" rows): 0 persistence, 1 online, 2 production
    served = q(f"SELECT {_ms('max(ts)')} AS t, argMax(model_kind, ts) FROM predictions "
               f"WHERE symbol = {{symbol:String}} AND model_version = 'auto' AND {between('ts')} "
               f"GROUP BY intDiv({_ms('ts')}, {{step_ms:Int64}}) ORDER BY t DESC LIMIT {{limit:UInt32}}", **p)
    codes = {"auto:persistence": 0, "auto:online": 1, "auto:production": 2}
    series["served"] = _points([(t, codes.get(k, -1)) for t, k in served if k in codes])
    series["throughput"] = _points(q(
        f"SELECT intDiv({_ms('window_start')}, {{bucket_ms:Int64}}) * {{bucket_ms:Int64}} AS t, "
        f"sum(trades) * 1000 / sum({_ms('window_end')} - {_ms('window_start')}) FROM candles "
        f"WHERE symbol = {{symbol:String}} AND {candle_keys} AND {between('window_end')} "
        f"GROUP BY t ORDER BY t DESC LIMIT {{limit:UInt32}}", **p, bucket_ms=bucket_ms))
    drift_counts = _points(q(
        f"SELECT intDiv({_ms('ts')}, {{bucket_ms:Int64}}) * {{bucket_ms:Int64}} AS t, count() FROM drift_events "
        f"WHERE symbol = {{symbol:String}} AND {between('ts')} GROUP BY t ORDER BY t DESC LIMIT {{limit:UInt32}}",
        **p, bucket_ms=bucket_ms), scale=per_minute)
    series["drift_events"] = _filled(drift_counts, from_ms, to_ms, bucket_ms)
    drift = [{"ts_ms": int(t), "model_version": mv, "detector": det, "detail": detail}
             for t, mv, det, detail in q(
                 f"SELECT {_ms('ts')} AS t, model_version, detector, detail FROM drift_events "
                 f"WHERE symbol = {{symbol:String}} AND {between('ts')} ORDER BY ts DESC LIMIT {{n:UInt32}}",
                 **p, n=DRIFT_LIST)]

    wall = {"from_ms": wall_from_ms, "to_ms": now_ms, "bucket_ms": bucket_ms, "limit": ROW_LIMIT}
    dead = q(f"SELECT intDiv({_ms('received_at')}, {{bucket_ms:Int64}}) * {{bucket_ms:Int64}} AS t, "
             f"countIf(reason NOT LIKE {{late:String}}), countIf(reason LIKE {{late:String}}) FROM dead_letters "
             f"WHERE {between('received_at')} GROUP BY t ORDER BY t DESC LIMIT {{limit:UInt32}}", **wall, late=LATE)
    series["dead_letters"] = _filled(_points(dead, 1, per_minute), wall_from_ms, now_ms, bucket_ms)
    series["late_trades"] = _filled(_points(dead, 2, per_minute), wall_from_ms, now_ms, bucket_ms)

    # ingest_stats is optional (added by the ingestion work): only when the table is defined,
    # only the columns it has, and a failing query (e.g. a server whose schema predates it)
    # leaves these series empty rather than failing the page.
    ingest = TABLES.get("ingest_stats")
    cols = {k: c for k, c in INGEST_SERIES.items() if ingest is not None and c in ingest.names}
    ingest_ok = bool(cols) and ingest is not None and "ts" in ingest.names
    if ingest_ok:
        sums = ", ".join(f"sum(`{c}`)" for c in cols.values())
        try:
            rows = q(f"SELECT intDiv({_ms('ts')}, {{bucket_ms:Int64}}) * {{bucket_ms:Int64}} AS t, {sums} "
                     f"FROM ingest_stats WHERE {between('ts')} GROUP BY t ORDER BY t DESC LIMIT {{limit:UInt32}}",
                     **wall)
        except Exception as e:  # an optional panel degrades, it never fails the page
            log.warning("dashboard: ingest_stats not readable: %s", e)
            ingest_ok = False
        else:
            for i, key in enumerate(cols, start=1):
                series[key] = _filled(_points(rows, i, per_minute), wall_from_ms, now_ms, bucket_ms)

    fresh: dict[str, float | None] = dict.fromkeys(settings.symbols)
    for sym in fresh:
        row = store.newest("features", sym)
        if row is not None:
            fresh[sym] = round(max(0.0, (now_ms - _epoch_ms(row["ts"])) / 1000), 3)

    return {
        "symbol": symbol, "symbols": list(settings.symbols), "minutes": minutes,
        "horizon_seconds": settings.horizon_seconds,
        "generated_at": us_to_iso(now_us), "generated_at_ms": now_ms,
        "range": {"from_ms": from_ms, "to_ms": to_ms, "step_seconds": step_ms / 1000,
                  "wall_from_ms": wall_from_ms, "wall_to_ms": now_ms, "bucket_seconds": bucket_ms / 1000},
        "online_models": online_names, "ingest_stats": ingest_ok,
        "freshness_seconds": fresh, "drift": drift, "series": series,
    }


# -- routes ---------------------------------------------------------------------------

@dashboard.get("/dashboard")
def page() -> Response:
    resp = Response(PAGE, mimetype="text/html")
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@dashboard.get("/dashboard/app.js")
def script() -> Response:
    resp = Response(APP_JS, mimetype="text/javascript")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@dashboard.get("/dashboard/data")
def data() -> Any:
    from tickcast.stores.errors import StoreError, StoreUnavailable, redact

    settings = current_app.extensions["tickcast"]["settings"]
    symbol = request.args.get("symbol", settings.symbols[0])
    raw_minutes = request.args.get("minutes", str(DEFAULT_MINUTES))
    if not SYMBOL_RE.fullmatch(symbol):  # match() with "$" would accept "BTC/USD\n"
        return _fail(400, "bad_request", f"symbol must look like BTC/USD (Kraken v2); got {symbol[:40]!r}")
    if not re.fullmatch(r"[0-9]{1,5}", raw_minutes) or not 1 <= int(raw_minutes) <= MAX_MINUTES:
        return _fail(400, "bad_request", f"minutes must be a whole number from 1 to {MAX_MINUTES}; "
                     f"got {raw_minutes[:40]!r}")
    if symbol not in settings.symbols:
        return _fail(404, "unknown_symbol", f"{symbol} is not served here; symbols: {', '.join(settings.symbols)}")
    minutes = int(raw_minutes)
    url = settings.offline_url
    ttl = float(current_app.config.get("TICKCAST_DASHBOARD_CACHE_SECONDS", CACHE_SECONDS))
    key = (settings, symbol, minutes)
    try:
        opened = _store(url)
        with opened.lock:
            hit = opened.cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < ttl:
                payload = hit[1]
            else:
                payload = build(opened.store, settings, symbol, minutes)
                now = time.monotonic()
                for k in [k for k, (t, _) in opened.cache.items() if now - t >= ttl]:
                    del opened.cache[k]  # bounded: only answers younger than the TTL are kept
                if ttl > 0:
                    opened.cache[key] = (now, payload)
    except StoreUnavailable as e:
        return _fail(503, "store_unavailable", f"offline store: {redact(str(e))}")
    except StoreError as e:
        return _fail(503, "store_error", f"offline store: {redact(str(e))}")
    except Exception as e:  # a query the store refused (e.g. tables not created yet, time limit): a 503
        log.exception("dashboard query failed on %s", redact(url))
        first = (str(e).strip().splitlines() or [""])[0]
        return _fail(503, "offline_store_error", f"the offline store could not answer ({type(e).__name__}): "
                     f"{redact(first)[:300]}")
    resp = jsonify(payload)
    resp.headers["Cache-Control"] = "no-store"
    return resp


# -- the OpenAPI declarations of these routes (merged into api.OPENAPI) ----------------

_ERRORS = {s: {"$ref": "#/components/responses/Error"} for s in ("400", "401", "404", "503")}
_SERIES_SCHEMA = {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                             "items": {"type": "number"}}}
OPENAPI_PATHS: dict[str, Any] = {
    "/dashboard": {"get": {"summary": "Built-in dashboard (self-contained HTML; polls /dashboard/data)",
                           "responses": {"200": {"description": "the page", "content": {
                               "text/html": {"schema": {"type": "string"}}}}}}},
    "/dashboard/app.js": {"get": {"summary": "The dashboard's script (chart helper and polling)",
                                  "responses": {"200": {"description": "JavaScript", "content": {
                                      "text/javascript": {"schema": {"type": "string"}}}}}}},
    "/dashboard/data": {"get": {
        "summary": "The dashboard's series, each a list of [unix_ms, value]",
        "parameters": [
            {"name": "symbol", "in": "query", "required": False,
             "schema": {"type": "string", "pattern": SYMBOL_RE.pattern}, "example": "BTC/USD",
             "description": "default: the first configured symbol"},
            {"name": "minutes", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_MINUTES, "default": DEFAULT_MINUTES},
             "description": "the range: market-time series end at the symbol's newest candle, "
                            "wall-clock series (dead letters, ingest stats) at now"},
        ],
        "responses": {
            "200": {"description": "series", "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["symbol", "symbols", "minutes", "generated_at", "range", "freshness_seconds",
                             "drift", "series"],
                "properties": {
                    "symbol": {"type": "string"}, "symbols": {"type": "array", "items": {"type": "string"}},
                    "minutes": {"type": "integer"}, "horizon_seconds": {"type": "integer"},
                    "generated_at": {"type": "string", "format": "date-time"},
                    "generated_at_ms": {"type": "integer"}, "range": {"type": "object"},
                    "online_models": {"type": "array", "items": {"type": "string"}},
                    "ingest_stats": {"type": "boolean"},
                    "freshness_seconds": {"type": "object", "additionalProperties": {
                        "type": "number", "nullable": True}},
                    "drift": {"type": "array", "items": {"type": "object"}},
                    "series": {"type": "object", "required": list(SERIES),
                               "additionalProperties": _SERIES_SCHEMA},
                }}}}},
            **_ERRORS,
        }}},
}


# -- the page ---------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tickcast dashboard</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 0; background: #f1f5f9; color: #0f172a; }
header { display: flex; flex-wrap: wrap; gap: 1em; align-items: center; padding: .6em 1em;
         background: #0f172a; color: #f8fafc; }
header b { font-size: 16px; }
select { font: inherit; }
#status { margin-left: auto; font-size: 13px; color: #cbd5e1; }
#status.err { color: #fca5a5; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 12px; padding: 12px; }
section { background: #fff; border: 1px solid #e2e8f0; border-radius: 6px; padding: 8px 10px; }
h2 { font-size: 14px; margin: 0 0 4px; }
.note { font-size: 12px; color: #475569; margin: 2px 0 0; min-height: 1em; white-space: pre-line; }
canvas { display: block; width: 100%; height: 220px; }
</style>
</head>
<body data-endpoint="/dashboard/data">
<header>
  <b>tickcast</b>
  <label>symbol <select id="symbol"></select></label>
  <label>range <select id="minutes">
    <option value="15">15 min</option><option value="60" selected>1 h</option>
    <option value="360">6 h</option><option value="1440">24 h</option>
  </select></label>
  <span id="status">loading&hellip;</span>
</header>
<main>
  <section><h2>Price (candle close)</h2><canvas id="c-price"></canvas><p class="note" id="n-price"></p></section>
  <section><h2>Prediction vs realised price at t + horizon</h2><canvas id="c-pred"></canvas>
    <p class="note" id="n-pred"></p></section>
  <section><h2>Rolling MAE: online model vs baselines</h2><canvas id="c-mae"></canvas>
    <p class="note" id="n-mae"></p></section>
  <section><h2>Served by model=auto: 0 persistence, 1 online, 2 production</h2><canvas id="c-served"></canvas>
    <p class="note" id="n-served"></p></section>
  <section><h2>Feature freshness (s since the newest row)</h2><canvas id="c-fresh"></canvas>
    <p class="note" id="n-fresh"></p></section>
  <section><h2>Throughput (trades/s)</h2><canvas id="c-tput"></canvas><p class="note" id="n-tput"></p></section>
  <section><h2>Dead letters and late trades per minute; drift events</h2><canvas id="c-dead"></canvas>
    <p class="note" id="n-dead"></p></section>
  <section><h2>Ingestion: reconnects and gaps per minute</h2><canvas id="c-ingest"></canvas>
    <p class="note" id="n-ingest"></p></section>
</main>
<script src="/dashboard/app.js"></script>
</body>
</html>
"""

APP_JS = r"""/* tickcast dashboard: a small canvas line chart, and the loop polling /dashboard/data. */
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

function render() {
  const d = state.data;
  if (!d) return;
  const s = d.series, r = d.range, now = d.generated_at_ms, wallMin = r.wall_from_ms;
  const horizonMs = (d.horizon_seconds || 0) * 1000;
  drawChart($("c-price"), [line(d.symbol, s.price)], {xmin: r.from_ms, xmax: r.to_ms});
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
  module.exports = {niceStep, ticks, extent, fmtNum, fmtTime};
}
"""
