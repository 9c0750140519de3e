"""The built-in dashboard (api/dashboard.py) on real parts, no mocks.

Data goes through the real pipeline: a simulated replay file, parsed by the Kraken
parser, driven through ``tickcast.pipeline.run_batch`` (the feature flow's per-symbol
core, with the online model learning), and written by the feature flow's own offline
sink into an embedded Parquet lake. The API then reads that lake through chdb, and
every series is checked against a direct SQL query on the store (and the batch
output). A missing lake answers 200 with empty series; a ClickHouse server that does
not answer is a 503.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from api import create_app
from api.dashboard import HEADLINES, MAX_POINTS, NEWS_SENTIMENT, SERIES
from tickcast.config import Settings
from tickcast.news.features import NEWS_FEATURE_NAMES
from tickcast.pipeline import StepOutput, SymbolPipeline, run_batch
from tickcast.schema import DriftEvent, Trade
from tickcast.stores.offline import open_offline
from tickcast.stores.tables import TABLES, Column, Table

WINDOW = 10
HORIZON = 60
NOW_US = time.time_ns() // 1000
START_US = (NOW_US - 30 * 60_000_000) // 1_000_000 * 1_000_000  # 30 min ago: the data looks live


def settings_for(tmp: Path, redis_url: str, **extra: str) -> Settings:
    env = {"TICKCAST_DATA_DIR": str(tmp), "TICKCAST_REDIS_URL": redis_url,
           "TICKCAST_SYMBOLS": "BTC/USD,ETH/USD", "TICKCAST_MODEL_STORE": f"file://{tmp / 'models'}"}
    env.update(extra)
    return Settings.from_env(env)


def write_outputs(lake: Path, *outs: StepOutput) -> None:
    """Through the feature flow's own offline sink (what the Bytewax flow writes with)."""
    from dataflows.sinks import OfflineSink

    part = OfflineSink(f"chdb://{lake}").build_part("offline", "offline", None)
    part.write_batch(list(outs))
    part.close()


def replay_trades(path: Path, n: int, seed: int) -> list[Trade]:
    from tickcast.kraken import parse_message
    from tickcast.sim import SimParams, write_replay

    write_replay(path, n, ["BTC/USD", "ETH/USD"], seed=seed, start_us=START_US, params=SimParams(rate=5.0))
    trades: list[Trade] = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            trades.extend(parse_message(line, "replay", 0)[0])
    return trades


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """~20 minutes of two symbols in a lake, plus dead letters stamped now: a garbage
    line from the parser and a late trade from the pipeline."""
    from tickcast.kraken import parse_message

    tmp = tmp_path_factory.mktemp("dash")
    lake = tmp / "offline"
    trades = replay_trades(tmp / "sim.jsonl", 12_000, seed=7)
    out = run_batch(trades, WINDOW, 0.0, horizon_seconds=HORIZON, online_model="linear", snapshot_every=10**9)
    assert out.predictions and out.metrics
    extra = StepOutput()
    extra.dead_letters.extend(parse_message(b"{not json", "replay:test", NOW_US, "1")[1])
    btc = [t for t in trades if t.symbol == "BTC/USD"]
    pipe = SymbolPipeline("BTC/USD", WINDOW, 0)
    pipe.on_trades(btc[:200], NOW_US)
    late = pipe.on_trades([btc[0]], NOW_US)  # its window was emitted: a late trade
    assert len(late.dead_letters) == 1 and late.dead_letters[0].reason.startswith("late trade")
    extra.extend(late)
    if not out.drift_events:  # ADWIN may not fire in 20 minutes: one real row of the table then
        btc_ts = [f.ts_us for f in out.features if f.symbol == "BTC/USD"]
        out.drift_events.append(DriftEvent("BTC/USD", btc_ts[-5], "river-linear-online", "ADWIN(abs residual bps)",
                                           "drift #1 (test)"))
    write_outputs(lake, out, extra)
    news = news_items()
    publish_news_items(lake, news)
    return {"tmp": tmp, "lake": lake, "out": out, "news": news,
            "store": open_offline(f"chdb://{lake}", read_only=True)}


HOSTILE = "<img src=x onerror=alert(1)>"


def news_items() -> list[Any]:
    """More BTC items than the page lists (one hostile title, one javascript: url), an
    ETH-only item, a BTC+ETH item, and a BTC item two hours before the range."""
    from tickcast.news.items import NewsItem

    def item(k: int, at_us: int, symbols: tuple[str, ...], sent: float, title: str, url: str) -> NewsItem:
        return NewsItem(f"n{k}", at_us - 1_000_000, at_us, "sim", title, "", url, symbols,
                        (sent,) * len(symbols), "lexicon")

    items = [item(k, START_US + k * 60_000_000, ("BTC/USD",), round(math.sin(k), 3), f"Bitcoin story {k}",
                  f"https://example.org/{k}") for k in range(1, 19)]
    items[-1] = item(18, START_US + 18 * 60_000_000, ("BTC/USD",), -0.5, HOSTILE, "javascript:alert(1)")
    items += [item(30, START_US + 90_000_000, ("ETH/USD",), 0.9, "Ether only", "https://example.org/eth"),
              item(31, START_US + 19 * 60_000_000, ("BTC/USD", "ETH/USD"), 0.25, "Both coins", "http://x.test/b"),
              item(32, START_US - 2 * 3_600_000_000, ("BTC/USD",), 0.7, "Old news", "https://example.org/old")]
    return items


def publish_news_items(lake: Path, items: list[Any]) -> None:
    """Through the news flow's own hand-over point (``news`` + ``news_features``)."""
    from tickcast.news.publish import publish_news

    store = open_offline(f"chdb://{lake}")
    publish_news(items, store)
    store.close()


@pytest.fixture
def app(world: dict[str, Any], valkey_url: str) -> Any:
    a = create_app({"settings": settings_for(world["tmp"], valkey_url)})
    a.config["TICKCAST_DASHBOARD_CACHE_SECONDS"] = 0
    return a


def sql(world: dict[str, Any], q: str, **params: Any) -> list[list[Any]]:
    return [list(r) for r in world["store"].query(q, params).result_rows]


def get_data(app: Any, query: str = "symbol=BTC/USD&minutes=60") -> dict[str, Any]:
    r = app.test_client().get("/dashboard/data?" + query)
    assert r.status_code == 200, r.json
    return r.json  # type: ignore[no-any-return]


def test_page_is_self_contained_and_polls_the_data(app: Any) -> None:
    c = app.test_client()
    page = c.get("/dashboard")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/dashboard/data" in html and '<script src="/dashboard/app.js">' in html
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    js = c.get("/dashboard/app.js")
    assert js.status_code == 200 and js.mimetype == "text/javascript"
    text = js.get_data(as_text=True)
    assert "/dashboard/data" in text and "setTimeout(poll" in text
    for body in (html, text):  # offline machines: nothing fetched from elsewhere
        assert "http://" not in body and "https://" not in body and "//cdn" not in body
        assert "@import" not in body
    doc = c.get("/openapi.json").json
    assert {"/dashboard", "/dashboard/data", "/dashboard/app.js"} <= set(doc["paths"])
    assert "/predict" in doc["paths"]  # the existing routes stay declared


def test_series_equal_what_the_store_and_the_batch_say(app: Any, world: dict[str, Any]) -> None:
    d = get_data(app)
    s = d["series"]
    assert set(s) == set(SERIES) and d["symbol"] == "BTC/USD" and d["symbols"] == ["BTC/USD", "ETH/USD"]
    generated = datetime.fromisoformat(d["generated_at"].replace("Z", "+00:00"))
    assert abs(generated.timestamp() * 1000 - d["generated_at_ms"]) < 1
    out: StepOutput = world["out"]

    # (a) price: every candle of the hour, exactly (not downsampled at 10-s candles)
    assert s["price"] == sql(world, "SELECT toUnixTimestamp64Milli(window_end), close FROM candles "
                                    "WHERE symbol = 'BTC/USD' ORDER BY window_end")
    btc = [c for c in out.candles if c.symbol == "BTC/USD"]
    assert s["price"] == [[c.window_end_us // 1000, c.close] for c in btc]
    assert d["range"]["to_ms"] == btc[-1].window_end_us // 1000
    assert d["range"]["from_ms"] == d["range"]["to_ms"] - 60 * 60_000

    # (b) predictions at ts + horizon, and the realised close there
    preds = [p for p in out.predictions if p.symbol == "BTC/USD" and p.model_kind.startswith("online")]
    assert len(preds) > 50
    assert s["predicted"] == [[(p.ts_us + HORIZON * 1_000_000) // 1000, p.predicted_price] for p in preds]
    realised = sql(world, "SELECT toUnixTimestamp64Milli(f.ts), f.close FROM predictions AS p "
                          "INNER JOIN features AS f ON f.symbol = p.symbol "
                          "AND f.ts = p.ts + toIntervalSecond(p.horizon_seconds) "
                          "WHERE p.symbol = 'BTC/USD' AND p.model_kind LIKE 'online:%' ORDER BY f.ts")
    assert len(realised) > 50 and s["realised"] == realised
    assert s["predicted"][-1][0] == d["range"]["to_ms"] + HORIZON * 1000  # the newest is not matured yet

    # (c) rolling MAE of the online model and both baselines
    assert d["online_models"] == ["river-linear"]
    for key, name in (("mae_online", "river-linear"), ("mae_persistence", "persistence"),
                      ("mae_mean_last_10", "mean_last_10")):
        want = sql(world, "SELECT toUnixTimestamp64Milli(ts), mae_recent FROM model_metrics "
                          "WHERE symbol = 'BTC/USD' AND model_name = {m:String} AND isFinite(mae_recent) "
                          "ORDER BY ts", m=name)
        assert len(want) >= 5 and s[key] == want, key  # a row per model every 12 labels

    # which model /predict?model=auto served (the scoreboard's auto rows): 0 persistence, 1 online, 2 production
    codes = {"persistence": 0, "online": 1, "production": 2}
    auto = [p for p in out.predictions if p.symbol == "BTC/USD" and p.model_version == "auto"
            and p.ts_us // 1000 > d["range"]["from_ms"]]
    assert len(auto) > 50
    assert s["served"] == [[p.ts_us // 1000, codes[p.model_kind.split(":")[1]]] for p in auto]

    # (d) throughput per minute (trades / covered seconds) and freshness of every symbol
    per_min: dict[int, list[int]] = defaultdict(list)
    for c in btc:
        per_min[c.window_start_us // 60_000_000 * 60_000].append(c.trades)
    assert [t for t, _ in s["throughput"]] == sorted(per_min)
    for (t, v) in s["throughput"]:
        assert v == pytest.approx(sum(per_min[t]) / (len(per_min[t]) * WINDOW))
    newest_feature = max(f.ts_us for f in out.features if f.symbol == "BTC/USD") // 1000
    assert d["freshness_seconds"]["BTC/USD"] == pytest.approx((d["generated_at_ms"] - newest_feature) / 1000, abs=0.01)
    assert set(d["freshness_seconds"]) == {"BTC/USD", "ETH/USD"} and d["freshness_seconds"]["ETH/USD"] > 60

    # (e) dead letters and late trades per minute (wall clock, empty minutes are 0), drift
    assert sum(v for _, v in s["late_trades"]) == 1 and sum(v for _, v in s["dead_letters"]) == 1
    assert len(s["dead_letters"]) == 61 and s["dead_letters"][-1][0] <= d["generated_at_ms"]
    drift = sql(world, "SELECT toUnixTimestamp64Milli(ts), model_version, detector, detail FROM drift_events "
                       "WHERE symbol = 'BTC/USD' ORDER BY ts DESC LIMIT 20")
    assert [[e["ts_ms"], e["model_version"], e["detector"], e["detail"]] for e in d["drift"]] == drift
    assert sum(v for _, v in s["drift_events"]) == len(drift)

    # (g) news: the decayed sentiment of news_features, and the newest headlines of the symbol
    assert NEWS_SENTIMENT in NEWS_FEATURE_NAMES
    lo, hi = d["range"]["from_ms"], d["range"]["to_ms"]
    want = sql(world, f"SELECT toUnixTimestamp64Milli(ts), {NEWS_SENTIMENT} FROM news_features "
                      "WHERE symbol = 'BTC/USD' AND toUnixTimestamp64Milli(ts) > {lo:Int64} "
                      "AND toUnixTimestamp64Milli(ts) <= {hi:Int64} ORDER BY ts", lo=lo, hi=hi)
    assert len(want) == 19 and s["news_sentiment"] == want  # 18 BTC items + the shared one, not the old one
    heads = sql(world, "SELECT toUnixTimestamp64Milli(available_at), title, source, url, sentiment FROM news "
                       "WHERE has(splitByChar(',', symbols), 'BTC/USD') AND toUnixTimestamp64Milli(available_at) "
                       "> {lo:Int64} AND toUnixTimestamp64Milli(available_at) <= {hi:Int64} "
                       "ORDER BY available_at DESC LIMIT {n:UInt32}", lo=lo, hi=hi, n=HEADLINES)
    assert len(heads) == HEADLINES == len(d["headlines"])
    assert [[h["ts_ms"], h["title"], h["source"], h["url"], h["sentiment"]] for h in d["headlines"]] == heads
    assert [h["title"] for h in d["headlines"][:2]] == ["Both coins", HOSTILE]  # newest first
    assert "Ether only" not in {h["title"] for h in d["headlines"]}
    # the hostile title arrives as the same text in JSON; the page inserts it with textContent
    assert d["headlines"][1]["url"] == "javascript:alert(1)" and d["headlines"][1]["sentiment"] == -0.5
    eth = get_data(app, "symbol=ETH/USD")
    assert [h["title"] for h in eth["headlines"]] == ["Both coins", "Ether only"]

    # (f) ingest_stats: an empty series while the table does not exist, never an error
    if "ingest_stats" not in TABLES:
        assert d["ingest_stats"] is False
        assert s["ingest_reconnects"] == s["ingest_filled"] == s["ingest_unfilled"] == []


def test_the_other_symbol_and_shorter_or_longer_ranges(app: Any, world: dict[str, Any]) -> None:
    eth = get_data(app, "symbol=ETH/USD")["series"]["price"]
    assert eth == sql(world, "SELECT toUnixTimestamp64Milli(window_end), close FROM candles "
                             "WHERE symbol = 'ETH/USD' ORDER BY window_end")
    d = get_data(app, "symbol=BTC/USD&minutes=5")
    full = get_data(app)["series"]["price"]
    assert d["series"]["price"] == full[-30:]  # five minutes of 10-s candles
    assert all(t > d["range"]["from_ms"] for t, _ in d["series"]["predicted"])
    day = get_data(app, "minutes=1440")  # downsampled: the last candle of each 2-minute bucket
    pts = day["series"]["price"]
    assert day["symbol"] == "BTC/USD" and day["range"]["step_seconds"] == 120
    assert 0 < len(pts) <= MAX_POINTS and pts[-1] == full[-1]
    real = {t: v for t, v in full}
    assert all(real[t] == v for t, v in pts)
    assert [t // 120_000 for t, _ in pts] == sorted({t // 120_000 for t in real})


@pytest.mark.parametrize(("query", "status", "code"), [
    ("symbol=btc-usd", 400, "bad_request"), ("symbol=", 400, "bad_request"),
    ("symbol=BTC/USD&minutes=0", 400, "bad_request"), ("minutes=1441", 400, "bad_request"),
    ("minutes=abc", 400, "bad_request"), ("minutes=-5", 400, "bad_request"), ("minutes=1.5", 400, "bad_request"),
    ("minutes=", 400, "bad_request"), ("symbol=DOGE/EUR", 404, "unknown_symbol"),
])
def test_bad_requests(app: Any, query: str, status: int, code: str) -> None:
    r = app.test_client().get("/dashboard/data?" + query)
    assert r.status_code == status and r.json["error"]["code"] == code and r.json["error"]["message"]


def test_updates_live_while_the_pipeline_writes(tmp_path: Path, valkey_url: str) -> None:
    """The API reads the lake while a writer keeps adding parts (as the flow does)."""
    lake = tmp_path / "offline"
    trades = replay_trades(tmp_path / "sim.jsonl", 2_000, seed=3)
    btc = [t for t in trades if t.symbol == "BTC/USD"]
    pipe = SymbolPipeline("BTC/USD", WINDOW, 0, horizon_seconds=HORIZON, online_model="linear")
    before = pipe.on_trades(btc[: len(btc) // 2])
    write_outputs(lake, before)
    app = create_app({"settings": settings_for(tmp_path, valkey_url)})
    app.config["TICKCAST_DASHBOARD_CACHE_SECONDS"] = 0
    first = get_data(app)["series"]["price"]
    assert first
    assert first == [[c.window_end_us // 1000, c.close] for c in before.candles]
    after = pipe.on_trades(btc[len(btc) // 2:])
    after.extend(pipe.on_eof())
    write_outputs(lake, after)
    second = get_data(app)["series"]["price"]
    assert len(second) > len(first) and second[: len(first)] == first
    assert second[len(first):] == [[c.window_end_us // 1000, c.close] for c in after.candles]
    assert second[-1][1] == btc[-1].price


def test_answers_are_cached_briefly(app: Any) -> None:
    app.config["TICKCAST_DASHBOARD_CACHE_SECONDS"] = 60
    c = app.test_client()
    a = c.get("/dashboard/data?symbol=ETH/USD&minutes=30").json
    b = c.get("/dashboard/data?symbol=ETH/USD&minutes=30").json
    assert a["generated_at"] == b["generated_at"]


def test_empty_lake_is_200_with_empty_series(tmp_path: Path, valkey_url: str) -> None:
    """Decision: a lake nothing has been written to yet (directory absent) is an empty
    store, not a failure: 200, every series empty, freshness null."""
    c = create_app({"settings": settings_for(tmp_path / "fresh", valkey_url)}).test_client()
    r = c.get("/dashboard/data")
    d: Any = r.json
    assert r.status_code == 200, d
    assert d["symbol"] == "BTC/USD" and d["freshness_seconds"] == {"BTC/USD": None, "ETH/USD": None}
    for name in ("price", "predicted", "realised", "mae_online", "throughput", "news_sentiment"):
        assert d["series"][name] == [], name
    assert d["headlines"] == []
    # per-minute counts over wall-clock time: every minute present, all zero
    for name in ("dead_letters", "ingest_reconnects"):
        assert all(v == 0 for _, v in d["series"][name]), name
    assert not (tmp_path / "fresh" / "offline").exists()  # read-only: the API created nothing


def test_unreachable_clickhouse_is_503(tmp_path: Path, valkey_url: str) -> None:
    from tests.helpers import free_port

    s = settings_for(tmp_path, valkey_url, TICKCAST_CLICKHOUSE_URL=f"http://default:pw@127.0.0.1:{free_port()}/db")
    c = create_app({"settings": s}).test_client()
    t0 = time.monotonic()
    for _ in range(2):  # the second answer comes from the retry back-off, as fast
        r = c.get("/dashboard/data?symbol=BTC/USD")
        body: Any = r.json
        assert (r.status_code, body["error"]["code"]) == (503, "store_unavailable")
        assert "pw" not in body["error"]["message"]  # the password is redacted
    assert time.monotonic() - t0 < 5
    assert c.get("/dashboard").status_code == 200  # the page itself still loads and shows the error


def test_ingest_stats_when_the_table_exists(tmp_path: Path, valkey_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table another change adds (declared here as it is specified): its reconnects and
    filled gaps per minute are served once tickcast.stores.tables.TABLES defines it."""
    if "ingest_stats" not in TABLES:
        ts = "DateTime64(6, 'UTC')"
        cols = [Column("source", "String", pa.string()), Column("session", "String", pa.string()),
                Column("ts", ts, pa.timestamp("us", tz="UTC")), Column("interval_seconds", "Float64", pa.float64())]
        cols += [Column(n, "UInt64", pa.uint64()) for n in
                 ("connects", "reconnects", "gaps", "filled", "unfilled", "duplicates", "malformed")]
        monkeypatch.setitem(TABLES, "ingest_stats", Table("ingest_stats", tuple(cols), ("source", "session", "ts")))
    lake = tmp_path / "offline"
    store = open_offline(f"chdb://{lake}")
    minute = NOW_US // 60_000_000 * 60_000_000
    rows = [(minute - 120_000_000 + 5_000_000, 1, 2), (minute - 120_000_000 + 35_000_000, 2, 0),
            (minute - 60_000_000 + 1_000_000, 0, 7)]
    n = len(rows)
    store.insert("ingest_stats", pa.table({
        "source": ["kraken"] * n, "session": ["s1"] * n,
        "ts": pa.array([r[0] for r in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "interval_seconds": [30.0] * n, "connects": pa.array([0] * n, pa.uint64()),
        "reconnects": pa.array([r[1] for r in rows], pa.uint64()),
        "gaps": pa.array([r[2] for r in rows], pa.uint64()), "filled": pa.array([r[2] for r in rows], pa.uint64()),
        "unfilled": pa.array([0] * n, pa.uint64()), "duplicates": pa.array([0] * n, pa.uint64()),
        "malformed": pa.array([0] * n, pa.uint64())}))
    store.close()
    app = create_app({"settings": settings_for(tmp_path, valkey_url)})
    d = get_data(app, "minutes=10")
    assert d["ingest_stats"] is True
    got = {t: v for t, v in d["series"]["ingest_reconnects"] if v}
    assert got == {(minute - 120_000_000) // 1000: 3.0}
    assert {t: v for t, v in d["series"]["ingest_filled"] if v} == {
        (minute - 120_000_000) // 1000: 2.0, (minute - 60_000_000) // 1000: 7.0}
    assert len(d["series"]["ingest_unfilled"]) == 11


NODE = shutil.which("node") or ("/usr/bin/node" if Path("/usr/bin/node").exists() else None)


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_page_script_parses_and_its_chart_helpers_work(app: Any, tmp_path: Path) -> None:
    js = tmp_path / "app.js"
    js.write_bytes(app.test_client().get("/dashboard/app.js").get_data())
    assert NODE is not None
    r = subprocess.run([NODE, "--check", str(js)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    probe = (f"const m = require({str(js)!r});"
             "const out = {step: m.niceStep(95, 5), ticks: m.ticks(0, 100, 20), ext: m.extent("
             "[{points: [[1, 5], [2, NaN], [3, 7], [99, 1000]]}], 0, 10, false), none: m.extent([], 0, 1),"
             "num: m.fmtNum(60123.456, 0.1), urls: ['https://a.b/c', 'HTTP://x', 'javascript:alert(1)', "
             "'data:text/html,x', ' https://a', '//evil', null].map(m.safeUrl)};"
             "console.log(JSON.stringify(out));")
    r = subprocess.run([NODE, "-e", probe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    import json

    got = json.loads(r.stdout)
    assert got["step"] == 20 and got["ticks"] == [0, 20, 40, 60, 80, 100] and got["none"] is None
    lo, hi = got["ext"]
    assert lo < 5 and 7 < hi < 8 and got["num"] == "60123.5"
    assert got["urls"] == ["https://a.b/c", "HTTP://x", None, None, None, None, None]
    assert not math.isnan(lo)
