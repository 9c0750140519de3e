"""Candles against an independent pandas reference, Kraken's own 1-minute OHLC, and
the windowing contract (empty windows, lateness, late trades)."""

from __future__ import annotations

import csv
import json
import math
import pickle
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from tickcast.candles import SymbolWindower, build_candles
from tickcast.schema import Candle, Trade

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def need_shared(sub: str) -> Path:
    p = SHARED / sub
    if not p.exists():
        pytest.skip(f"{p} is absent (real-data tests need ../shared/data beside the repo)")
    return p


def load_csv_trades(path: Path) -> list[Trade]:
    """Independent loader of the normalised CSV schema (not the project's parser)."""
    out = []
    with path.open() as f:
        for i, r in enumerate(csv.DictReader(f)):
            us = int((Decimal(r["ts_unix"]) * 1_000_000).to_integral_value())
            tid = int(r["trade_id"]) if r["trade_id"] else i + 1
            side = r["side"] or ("buy" if i % 2 else "sell")
            out.append(Trade(r["symbol"], tid, us, float(r["price"]), float(r["qty"]), side, r["ord_type"]))
    out.sort(key=lambda t: t.ts_us)  # the reference counts every trade, so feed them in time order
    return out


def reference_candles(trades: list[Trade], window_seconds: int) -> pd.DataFrame:
    """Plain pandas resampling, written separately from tickcast.candles."""
    w = window_seconds * 1_000_000
    df = pd.DataFrame(
        {"symbol": [t.symbol for t in trades], "ts": [t.ts_us for t in trades],
         "price": [t.price for t in trades], "qty": [t.qty for t in trades],
         "buy": [t.qty if t.side == "buy" else 0.0 for t in trades],
         "sell": [t.qty if t.side == "sell" else 0.0 for t in trades]}
    )
    df["start"] = (df["ts"] // w) * w
    df["pq"] = df["price"] * df["qty"]
    frames = []
    for sym, g in df.groupby("symbol", sort=True):
        a = g.groupby("start").agg(open=("price", "first"), high=("price", "max"), low=("price", "min"),
                                   close=("price", "last"), volume=("qty", "sum"), pq=("pq", "sum"),
                                   trades=("price", "size"), buy_volume=("buy", "sum"),
                                   sell_volume=("sell", "sum"))
        grid = range(int(a.index.min()), int(a.index.max()) + w, w)
        a = a.reindex(grid)
        a["trades"] = a["trades"].fillna(0).astype(int)
        for c in ("volume", "pq", "buy_volume", "sell_volume"):
            a[c] = a[c].fillna(0.0)
        a["close"] = a["close"].ffill()
        for c in ("open", "high", "low"):
            a[c] = a[c].fillna(a["close"])
        a["vwap"] = (a["pq"] / a["volume"]).where(a["volume"] > 0, a["close"])
        a["symbol"] = sym
        frames.append(a.rename_axis("window_start").reset_index())
    return pd.concat(frames, ignore_index=True)


def as_frame(candles: list[Candle]) -> pd.DataFrame:
    return pd.DataFrame([{
        "symbol": c.symbol, "window_start": c.window_start_us, "open": c.open, "high": c.high,
        "low": c.low, "close": c.close, "volume": c.volume, "vwap": c.vwap, "trades": c.trades,
        "buy_volume": c.buy_volume, "sell_volume": c.sell_volume, "window_end": c.window_end_us,
    } for c in candles]).sort_values(["symbol", "window_start"], ignore_index=True)


def assert_candles_equal(ours: list[Candle], trades: list[Trade], window_seconds: int) -> None:
    got = as_frame(ours)
    ref = reference_candles(trades, window_seconds).sort_values(["symbol", "window_start"], ignore_index=True)
    assert len(got) == len(ref)
    assert (got["window_end"] - got["window_start"] == window_seconds * 1_000_000).all()
    assert list(got["symbol"]) == list(ref["symbol"])
    assert list(got["window_start"]) == list(ref["window_start"])
    assert list(got["trades"]) == list(ref["trades"])
    for col in ("open", "high", "low", "close", "volume", "vwap", "buy_volume", "sell_volume"):
        for a, b in zip(got[col], ref[col], strict=True):
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12), (col, a, b)


SHARED_TRADE_FILES = [
    "kraken_BTCUSD_2019-07-01_0000-0100_trades.csv",
    "kraken_ETHUSD_2022-03-20_rest_trades.csv",
    "kraken_BTCUSDT_2025-11-10_rest_trades.csv",
    "kraken_v2_BTCUSD_ETHUSD_2026-07-07_ws_trades.csv",
    "coinbase_BTCUSD_ETHUSD_2026-07-07_ws_matches.csv",
]


@pytest.mark.parametrize("name", SHARED_TRADE_FILES)
@pytest.mark.parametrize("window_seconds", [1, 10, 60])
def test_candles_equal_reference_on_real_trades(name: str, window_seconds: int) -> None:
    trades = load_csv_trades(need_shared("trades") / name)
    candles, late = build_candles(trades, window_seconds)
    assert late == []
    assert_candles_equal(candles, trades, window_seconds)
    assert sum(c.trades for c in candles) == len(trades)


@pytest.mark.parametrize("window_seconds", [1, 10, 60])
def test_candles_equal_reference_on_simulated_trades(window_seconds: int) -> None:
    from tickcast.sim import MarketSimulator

    sim = MarketSimulator(["BTC/USD", "ETH/USD"], seed=7, start_us=1_767_225_600_000_000)
    trades = sim.next_trades(20_000)
    candles, late = build_candles(trades, window_seconds)
    assert late == []
    assert_candles_equal(candles, trades, window_seconds)


def test_one_minute_candles_equal_krakens_own_ohlc() -> None:
    """Golden: candles rebuilt from Kraken's REST trades == Kraken's 1-minute OHLC."""
    from tickcast.kraken import parse_rest_trades

    rest = need_shared("kraken_rest")
    trades, _ = parse_rest_trades(json.loads((rest / "trades_XBTUSDT_2025-11-10.json").read_text()), "BTC/USDT")
    ohlc = json.loads((rest / "ohlc_1m_XBTUSDT_2025-11-10.json").read_text())["result"]
    rows = {int(r[0]) * 1_000_000: r for r in next(v for k, v in ohlc.items() if k != "last")}
    candles, late = build_candles(trades, 60)
    assert late == []
    first_trade_minute = trades[0].ts_us - trades[0].ts_us % 60_000_000
    complete = [c for c in candles if c.window_start_us > first_trade_minute]  # first minute is partial
    assert sum(1 for c in complete if c.trades) == 273  # the minutes with trades (README of the data)
    for c in complete:  # empty minutes too: Kraken repeats the previous close with zero volume
        r = rows[c.window_start_us]
        assert (c.open, c.high, c.low, c.close) == tuple(float(x) for x in r[1:5]), c
        assert math.isclose(c.volume, float(r[6]), rel_tol=1e-9, abs_tol=1e-12), c
        assert c.trades == int(r[7]), c


def trade(ts_s: float, price: float, tid: int, side: str = "buy", qty: float = 1.0) -> Trade:
    return Trade("X/USD", tid, int(ts_s * 1_000_000), price, qty, side)


def test_empty_windows_carry_previous_close() -> None:
    candles, _ = build_candles([trade(1, 100, 1), trade(35, 90, 2)], 10)
    assert [(c.window_start_us // 1_000_000, c.trades, c.close, c.volume) for c in candles] == [
        (0, 1, 100.0, 1.0), (10, 0, 100.0, 0.0), (20, 0, 100.0, 0.0), (30, 1, 90.0, 1.0)]
    empty = candles[1]
    assert empty.open == empty.high == empty.low == empty.vwap == 100.0


def test_lateness_accepts_then_records_late_trades() -> None:
    w = SymbolWindower("X/USD", 10_000_000, lateness_us=3_000_000)
    c1, late1 = w.push([trade(1, 100, 1), trade(11, 101, 2)])
    assert c1 == [] and late1 == []  # watermark 8 s: window [0,10) still open
    c2, late2 = w.push([trade(9, 99, 3)])  # out of order but within lateness: counted
    assert c2 == [] and late2 == []
    c3, _ = w.push([trade(14, 102, 4)])  # watermark 11 s closes [0,10)
    assert len(c3) == 1 and c3[0].trades == 2 and c3[0].close == 99.0
    c4, late4 = w.push([trade(5, 98, 5)])  # its window was emitted: late, returned, not dropped
    assert c4 == [] and [t.trade_id for t in late4] == [5]


def test_watermark_advance_emits_empty_candles_and_flush_closes_all() -> None:
    w = SymbolWindower("X/USD", 10_000_000)
    w.push([trade(1, 100, 1)])
    assert [c.window_start_us for c in w.close_until(40_000_000)] == [0, 10_000_000, 20_000_000, 30_000_000]
    w.push([trade(45, 101, 2)])
    assert [c.close for c in w.flush()] == [101.0]
    assert w.flush() == []


def test_windower_state_pickles_mid_window() -> None:
    trades = [trade(i * 0.7, 100 + i % 5, i + 1, "sell" if i % 3 else "buy") for i in range(200)]
    a = SymbolWindower("X/USD", 10_000_000, 1_000_000)
    first = a.push(trades[:77])[0]
    b = pickle.loads(pickle.dumps(a))
    rest_a = a.push(trades[77:])[0] + a.flush()
    rest_b = b.push(trades[77:])[0] + b.flush()
    assert first and rest_a
    assert rest_a == rest_b
