"""A built-in dashboard served by the API, for the embedded mode where there is no Grafana.

* ``GET /dashboard`` — one self-contained HTML page (no CDN, no external resources:
  it works offline), ``api/static/dashboard.html``. Its script, ``GET /dashboard/app.js``
  (``api/static/dashboard.js``), holds a small canvas line-chart helper and polls
  ``/dashboard/data`` every few seconds.
* ``GET /dashboard/data?symbol=BTC/USD&minutes=60`` — the series of the page, each a
  list of ``[unix_ms, value]``: candle close; online predictions (plotted at
  ``ts + horizon``) against the realised close there; rolling MAE (``mae_recent``) of
  the online model and of the persistence and mean-of-last-10 baselines; throughput
  (trades/s); dead letters and late trades per minute; drift events; reconnects and
  filled gaps per minute from ``ingest_stats`` (empty while that table does not exist);
  the symbol's time-decayed news sentiment (``news_sentiment``: :data:`NEWS_SENTIMENT` of
  ``news_features``); plus ``headlines`` (the newest :data:`HEADLINES` items of ``news``
  mapped to the symbol, newest first, with their scores), the feature freshness of every
  symbol and ``generated_at``. Headline titles, sources and urls are untrusted text: the
  page inserts them as text and links only ``http(s)://`` urls.

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
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from api.errors import ApiError
from api.services import services
from tickcast.schema import is_symbol

log = logging.getLogger("tickcast.api.dashboard")
bp = dashboard = Blueprint("dashboard", __name__)

STATIC = Path(__file__).parent / "static"  # package data (pyproject: [tool.setuptools.package-data])
DEFAULT_MINUTES, MAX_MINUTES = 60, 1440
MAX_POINTS = 720  # per series, after downsampling
ROW_LIMIT = 2000  # hard LIMIT of every query
DRIFT_LIST = 20  # newest drift events listed with their details
CACHE_SECONDS = 2.0  # identical requests within this share one answer (several tabs, reloads)
RETRY_SECONDS = 5.0  # after a failed open, answer 503 at once for this long
BASELINES = ("persistence", "mean_last_10")
LATE = "late trade%"  # reason prefix of late trades (tickcast.pipeline.late_dead_letter)
INGEST_SERIES = {"ingest_reconnects": "reconnects", "ingest_filled": "filled", "ingest_unfilled": "unfilled"}
NEWS_SENTIMENT = "news_sent_decay_30m"  # a column of news_features (tickcast.news.features.NEWS_FEATURE_NAMES)
HEADLINES = 15  # newest news items listed with their scores
SERIES = ("price", "predicted", "realised", "mae_online", "mae_persistence", "mae_mean_last_10",
          "mae_production", "served", "throughput", "dead_letters", "late_trades", "drift_events", *INGEST_SERIES,
          "news_sentiment")


@cache
def static_file(name: str) -> bytes:
    """A file of ``api/static/``, read once per process."""
    return (STATIC / name).read_bytes()


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

    # news (market time, like the price): the decayed sentiment at each item's arrival and the
    # newest headlines mapped to the symbol. Optional: a store whose schema predates the news
    # tables leaves both empty rather than failing the page.
    headlines: list[dict[str, Any]] = []
    try:
        series["news_sentiment"] = _points(q(
            f"SELECT {_ms('max(ts)')} AS t, argMax(`{NEWS_SENTIMENT}`, ts) FROM news_features "
            f"WHERE symbol = {{symbol:String}} AND {between('ts')} "
            f"GROUP BY intDiv({_ms('ts')}, {{step_ms:Int64}}) ORDER BY t DESC LIMIT {{limit:UInt32}}", **p))
        headlines = [{"ts_ms": int(t), "title": title, "source": source, "url": url,
                      "sentiment": float(v) if v is not None and math.isfinite(v) else None}
                     for t, title, source, url, v in q(
                         f"SELECT {_ms('available_at')} AS t, title, source, url, sentiment FROM news "
                         f"WHERE has(splitByChar(',', symbols), {{symbol:String}}) AND {between('available_at')} "
                         f"ORDER BY available_at DESC, id LIMIT {{n:UInt32}}", **p, n=HEADLINES)]
    except Exception as e:  # an optional panel degrades, it never fails the page
        log.warning("dashboard: news tables not readable: %s", e)
        series["news_sentiment"], headlines = [], []

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
        "freshness_seconds": fresh, "drift": drift, "headlines": headlines, "series": series,
    }


# -- routes ---------------------------------------------------------------------------

@dashboard.get("/dashboard")
def page() -> Response:
    resp = Response(static_file("dashboard.html"), mimetype="text/html")
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@dashboard.get("/dashboard/app.js")
def script() -> Response:
    resp = Response(static_file("dashboard.js"), mimetype="text/javascript")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@dashboard.get("/dashboard/data")
def data() -> Any:
    from tickcast.stores.errors import StoreError, StoreUnavailable, redact

    settings = services().settings
    symbol = request.args.get("symbol", settings.symbols[0])
    raw_minutes = request.args.get("minutes", str(DEFAULT_MINUTES))
    if not is_symbol(symbol):
        raise ApiError(400, "bad_request", f"symbol must look like BTC/USD (Kraken v2); got {symbol[:40]!r}")
    if not re.fullmatch(r"[0-9]{1,5}", raw_minutes) or not 1 <= int(raw_minutes) <= MAX_MINUTES:
        raise ApiError(400, "bad_request", f"minutes must be a whole number from 1 to {MAX_MINUTES}; "
                       f"got {raw_minutes[:40]!r}")
    if symbol not in settings.symbols:
        raise ApiError(404, "unknown_symbol", f"{symbol} is not served here; symbols: {', '.join(settings.symbols)}")
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
        raise ApiError(503, "store_unavailable", f"offline store: {redact(str(e))}") from e
    except StoreError as e:
        raise ApiError(503, "store_error", f"offline store: {redact(str(e))}") from e
    except Exception as e:  # a query the store refused (e.g. tables not created yet, time limit): a 503
        log.exception("dashboard query failed on %s", redact(url))
        first = (str(e).strip().splitlines() or [""])[0]
        raise ApiError(503, "offline_store_error", f"the offline store could not answer ({type(e).__name__}): "
                       f"{redact(first)[:300]}") from e
    resp = jsonify(payload)
    resp.headers["Cache-Control"] = "no-store"
    return resp
