"""Features against well-known implementations (`ta`) and independent pandas code."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
import ta

from tickcast.features import FEATURE_NAMES, FeatureState, compute_features, feature_set_version
from tickcast.schema import Candle

W = 10_000_000


def make_candles(n: int = 600, seed: int = 3, symbol: str = "X/USD") -> list[Candle]:
    """A random walk with runs of empty candles and flat stretches."""
    rng = np.random.default_rng(seed)
    out: list[Candle] = []
    close = 100.0
    for i in range(n):
        empty = (i % 97) in range(40, 46)  # a run of empty windows
        flat = (i % 53) in range(10, 14)  # trades but no price change
        if empty:
            out.append(Candle(symbol, i * W, (i + 1) * W, close, close, close, close, 0.0, close, 0, 0.0, 0.0))
            continue
        o = close
        if not flat:
            close = close * math.exp(rng.normal(0, 0.002))
        hi, lo = max(o, close) * 1.0005, min(o, close) * 0.9995
        buy, sell = rng.exponential(1.0), rng.exponential(1.0)
        vwap = (o + close) / 2
        out.append(Candle(symbol, i * W, (i + 1) * W, o, hi, lo, close, buy + sell, vwap,
                          int(rng.integers(1, 30)), buy, sell))
    return out


def frame(rows: list) -> pd.DataFrame:  # type: ignore[type-arg]
    return pd.DataFrame([{**r.values, "ts": r.ts_us, "close": r.close} for r in rows])


def close_enough(got: pd.Series, want: pd.Series, start: int) -> None:
    g, w = got.to_numpy()[start:], want.to_numpy()[start:]
    assert np.isfinite(g).all() and np.isfinite(w).all()
    np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    return make_candles()


@pytest.fixture(scope="module")
def feats(candles: list[Candle]) -> pd.DataFrame:
    return frame(compute_features(candles, 10))


def test_indicators_match_ta(candles: list[Candle], feats: pd.DataFrame) -> None:
    close = pd.Series([c.close for c in candles])
    warm = 100
    close_enough(feats["ema_12"], ta.trend.EMAIndicator(close, 12).ema_indicator(), warm)
    close_enough(feats["ema_26"], ta.trend.EMAIndicator(close, 26).ema_indicator(), warm)
    macd = ta.trend.MACD(close, window_slow=26, window_fast=12, window_sign=9)
    close_enough(feats["macd"], macd.macd(), warm)
    close_enough(feats["macd_signal"], macd.macd_signal(), warm)
    close_enough(feats["macd_hist"], macd.macd_diff(), warm)
    close_enough(feats["rsi_14"], ta.momentum.RSIIndicator(close, 14).rsi(), warm)


def test_warm_up_is_nan_then_finite(feats: pd.DataFrame) -> None:
    assert math.isnan(feats["ema_26"][24]) and math.isfinite(feats["ema_26"][25])
    assert math.isnan(feats["macd_signal"][32]) and math.isfinite(feats["macd_signal"][33])
    assert math.isnan(feats["rsi_14"][12]) and math.isfinite(feats["rsi_14"][13])
    assert math.isnan(feats["ret_30"][29]) and math.isfinite(feats["ret_30"][30])
    after = feats.iloc[40:][list(FEATURE_NAMES)].to_numpy()
    assert np.isfinite(after).all()  # empty runs and flat prices included


def test_rolling_features_match_pandas(candles: list[Candle], feats: pd.DataFrame) -> None:
    df = pd.DataFrame([{"close": c.close, "vwap": c.vwap, "volume": c.volume, "buy": c.buy_volume,
                        "sell": c.sell_volume, "trades": c.trades} for c in candles])
    lc = np.log(df["close"])
    for k in (1, 3, 6, 30):
        close_enough(feats[f"ret_{k}"], lc - lc.shift(k), 40)
    r1 = lc.diff()
    close_enough(feats["rv_30"], np.sqrt((r1**2).rolling(30).sum()), 40)
    pv = (df["vwap"] * df["volume"]).rolling(30).sum()
    vol = df["volume"].rolling(30).sum()
    close_enough(feats["vwap_dist_30"], np.log(df["close"] / (pv / vol)), 40)
    for k in (1, 6, 30):
        b, s = df["buy"].rolling(k).sum(), df["sell"].rolling(k).sum()
        want = ((b - s) / (b + s)).where(b + s > 0, 0.0)
        close_enough(feats[f"ofi_{k}"], want, 40)
    close_enough(feats["volume_6"], np.log1p(df["volume"].rolling(6).sum()), 40)
    close_enough(feats["trades_6"], df["trades"].rolling(6).sum().astype(float), 40)


def test_stream_equals_batch_and_pickles_mid_stream(candles: list[Candle]) -> None:
    batch = compute_features(candles, 10)
    st = FeatureState(10)
    first = [st.update(c) for c in candles[:250]]
    st2 = pickle.loads(pickle.dumps(st))
    rest_a = [st.update(c) for c in candles[250:]]
    rest_b = [st2.update(c) for c in candles[250:]]
    def key(rows: list) -> list:  # type: ignore[type-arg]
        return [(r.ts_us, r.close, [(k, v if v == v else "nan") for k, v in r.values.items()]) for r in rows]
    assert key(rest_a) == key(rest_b)
    assert key(first + rest_a) == key(batch)


def test_no_look_ahead(candles: list[Candle]) -> None:
    """Changing candles after i never changes the features at or before i."""
    base = compute_features(candles, 10)
    i = 300
    changed = candles[: i + 1] + make_candles(len(candles) - i - 1, seed=99)
    for j, c in enumerate(changed[i + 1 :], start=i + 1):  # keep timestamps consistent
        changed[j] = Candle(c.symbol, j * W, (j + 1) * W, c.open, c.high, c.low, c.close, c.volume, c.vwap,
                            c.trades, c.buy_volume, c.sell_volume)
    other = compute_features(changed, 10)
    for a, b in zip(base[: i + 1], other[: i + 1], strict=True):
        assert a.ts_us == b.ts_us
        assert [v if v == v else None for v in a.values.values()] == [v if v == v else None for v in b.values.values()]
    assert base[i + 1].values != other[i + 1].values


def test_row_time_and_version() -> None:
    cs = make_candles(5)
    rows = compute_features(cs, 10)
    assert [r.ts_us for r in rows] == [c.window_end_us for c in cs]
    assert rows[0].feature_set_version == feature_set_version(10) == "fs1-w10s"
    assert tuple(rows[0].values) == FEATURE_NAMES
